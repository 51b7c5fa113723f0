//! The atomics, locks and thread-locals the protocols use, switched to loom's model-checked
//! versions under `cfg(loom)` so the same protocol code runs in the loom models.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::Arc;

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicI32, AtomicU32, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::Arc;

/// A mutex with the same `lock()` shape in both worlds (no poisoning).
#[cfg(not(loom))]
pub(crate) struct Mutex<T>(parking_lot::Mutex<T>);
#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Self(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Self(loom::sync::Mutex::new(value));
    }

    #[cfg(not(loom))]
    pub(crate) fn lock(&self) -> parking_lot::MutexGuard<'_, T> {
        self.0.lock()
    }

    #[cfg(loom)]
    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A panic while holding this lock only ever happens in a failed model; propagate it.
        self.0.lock().unwrap()
    }
}

/// A condition variable for [`Mutex`], with the same `wait` shape in both worlds.
#[cfg(not(loom))]
pub(crate) struct Condvar(parking_lot::Condvar);
#[cfg(loom)]
pub(crate) struct Condvar(loom::sync::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        #[cfg(not(loom))]
        return Self(parking_lot::Condvar::new());
        #[cfg(loom)]
        return Self(loom::sync::Condvar::new());
    }

    /// Lets go of the guard's lock until notified (or woken spuriously), and takes it again.
    #[cfg(not(loom))]
    pub(crate) fn wait<'a, T>(
        &self,
        mut guard: parking_lot::MutexGuard<'a, T>,
    ) -> parking_lot::MutexGuard<'a, T> {
        self.0.wait(&mut guard);
        guard
    }

    #[cfg(loom)]
    pub(crate) fn wait<'a, T>(
        &self,
        guard: loom::sync::MutexGuard<'a, T>,
    ) -> loom::sync::MutexGuard<'a, T> {
        self.0.wait(guard).unwrap()
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

/// A hint inside a spin-wait: the processor's pause, or under loom a yield, which loom needs to
/// schedule the thread being waited for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Gives up the core inside a longer wait, for a thread that may have been preempted; under
/// loom, a yield as in [`spin_hint`].
#[inline]
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}
