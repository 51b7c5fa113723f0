//! std/parking_lot or loom primitives with one shape, so the loom models run the real GIL and
//! the real stop protocol (`world`).

use std::time::Duration;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(not(loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
#[cfg(loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

/// A mutex without poisoning: a panic while holding it only ever happens in a failed model.
pub(crate) struct Mutex<T>(
    #[cfg(not(loom))] parking_lot::Mutex<T>,
    #[cfg(loom)] loom::sync::Mutex<T>,
);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        #[cfg(not(loom))]
        return Self(parking_lot::Mutex::new(value));
        #[cfg(loom)]
        return Self(loom::sync::Mutex::new(value));
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(loom))]
        return self.0.lock();
        #[cfg(loom)]
        return self.0.lock().unwrap();
    }
}

pub(crate) struct Condvar(
    #[cfg(not(loom))] parking_lot::Condvar,
    #[cfg(loom)] loom::sync::Condvar,
);

impl Condvar {
    pub(crate) fn new() -> Self {
        #[cfg(not(loom))]
        return Self(parking_lot::Condvar::new());
        #[cfg(loom)]
        return Self(loom::sync::Condvar::new());
    }

    pub(crate) fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(not(loom))]
        {
            self.0.wait(&mut guard);
            guard
        }
        #[cfg(loom)]
        {
            let _ = &mut guard;
            self.0.wait(guard).unwrap()
        }
    }

    /// Waits up to `timeout`, with `guard` a guard of `mutex`; the flag says whether it ran
    /// out. Under loom, which has no clock, a wait never runs out unless the calling thread asked
    /// for it (`run_out_next_timed_waits`): such a wait releases `mutex`, takes it again (any
    /// schedule of the other threads in between) and says it ran out.
    pub(crate) fn wait_for<'a, T>(
        &self,
        mutex: &'a Mutex<T>,
        mut guard: MutexGuard<'a, T>,
        timeout: Duration,
    ) -> (MutexGuard<'a, T>, bool) {
        #[cfg(not(loom))]
        {
            debug_assert!(
                std::ptr::eq(parking_lot::MutexGuard::mutex(&guard), &mutex.0),
                "a guard of another mutex"
            );
            let timed_out = self.0.wait_for(&mut guard, timeout).timed_out();
            (guard, timed_out)
        }
        #[cfg(loom)]
        {
            if RUN_OUT.with(|left| left.replace(left.get().saturating_sub(1)) > 0) {
                // The timeout went by with no notification for this thread: as in a timed wait
                // that ran out, the lock is let go and held again, the other threads running in
                // between (the yield hands them the time without spending a preemption).
                drop(guard);
                loom::thread::yield_now();
                return (mutex.lock(), true);
            }
            let _ = &mut guard;
            let (guard, result) = self.0.wait_timeout(guard, timeout).unwrap();
            (guard, result.timed_out())
        }
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}

#[cfg(loom)]
loom::thread_local! {
    /// How many of this thread's next timed waits run out: see [`run_out_next_timed_waits`].
    static RUN_OUT: std::cell::Cell<usize> = std::cell::Cell::new(0);
}

/// Under loom only: the calling thread's next `waits` timed waits run out, each after letting
/// its mutex go, so that a model reaches the paths a timeout takes (the GIL's switch interval,
/// a stop's patience).
/// Its later timed waits wait for a notification, as every loom wait does.
#[cfg(loom)]
pub fn run_out_next_timed_waits(waits: usize) {
    RUN_OUT.with(|left| left.set(waits));
}
