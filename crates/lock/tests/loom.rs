//! loom models of the lock handoff and of critical-section suspension and resumption. loom's
//! `UnsafeCell` reports any access that is not ordered by the lock, and loom reports a deadlock
//! if a schedule leaves every thread blocked.
//!
//! Run with `cargo xtask test` (or `RUSTFLAGS="--cfg loom" cargo test --release -p ftrt-lock
//! --test loom`).
#![cfg(loom)]

use ftrt_lock::{request_handoff_in_models, section, RawObjectLock};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

struct Guarded {
    lock: RawObjectLock,
    value: UnsafeCell<u32>,
}

// SAFETY: `value` is only touched while `lock` is held.
unsafe impl Sync for Guarded {}
// SAFETY: as above.
unsafe impl Send for Guarded {}

impl Guarded {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lock: RawObjectLock::new(),
            value: UnsafeCell::new(0),
        })
    }
    /// # Safety
    /// The caller holds `lock` (directly or through a critical section).
    unsafe fn bump(&self) {
        // SAFETY: exclusive per the caller; loom checks it.
        self.value.with_mut(|v| unsafe { *v += 1 });
    }
    fn read(&self) -> u32 {
        self.lock.lock();
        // SAFETY: locked.
        let v = self.value.with(|v| unsafe { *v });
        // SAFETY: locked above.
        unsafe { self.lock.unlock() };
        v
    }
}

fn contend(handoff: bool) {
    loom::model(move || {
        let shared = Guarded::new();
        let other = shared.clone();
        let t = thread::spawn(move || {
            request_handoff_in_models(handoff);
            other.lock.lock();
            // SAFETY: locked.
            unsafe { other.bump() };
            // SAFETY: locked above.
            unsafe { other.lock.unlock() };
        });
        shared.lock.lock();
        // SAFETY: locked.
        unsafe { shared.bump() };
        // SAFETY: locked above.
        unsafe { shared.lock.unlock() };
        t.join().unwrap();
        assert_eq!(shared.read(), 2);
        assert!(!shared.lock.is_locked());
    });
}

#[test]
fn contended_lock_released_to_a_woken_waiter() {
    contend(false);
}

#[test]
fn contended_lock_handed_directly_to_a_waiter() {
    contend(true);
}

#[test]
fn nested_sections_in_opposite_orders_suspend_instead_of_deadlocking() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            section::with(&b2.lock, || {
                // SAFETY: inside a section on `b2`.
                unsafe { b2.bump() };
                // SAFETY: inside a section on `a2`.
                section::with(&a2.lock, || unsafe { a2.bump() });
                // Resumed: `b2` is locked again here.
                // SAFETY: inside the (resumed) section on `b2`.
                unsafe { b2.bump() };
            });
        });
        section::with(&a.lock, || {
            // SAFETY: inside a section on `a`.
            unsafe { a.bump() };
            // SAFETY: inside a section on `b`.
            section::with(&b.lock, || unsafe { b.bump() });
            // SAFETY: inside the (resumed) section on `a`.
            unsafe { a.bump() };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (3, 3));
    });
}

#[test]
fn two_object_sections_in_opposite_orders() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            // SAFETY: inside a section on both.
            section::with2(&b2.lock, &a2.lock, || unsafe { (a2.bump(), b2.bump()) });
        });
        // SAFETY: inside a section on both.
        section::with2(&a.lock, &b.lock, || unsafe { (a.bump(), b.bump()) });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (2, 2));
    });
}

/// A thread detaches inside a section on `a`, begins and ends a section on `b`, and then waits
/// for a message that the other thread sends from inside a section on `a`. Ending `b`'s section
/// must not re-lock `a` while detached, or the two threads deadlock.
#[test]
fn a_section_ending_while_detached_does_not_relock_the_section_outside() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (deliver, delivered) = loom::sync::mpsc::channel();
        let a2 = a.clone();
        let t = thread::spawn(move || {
            section::with(&a2.lock, || {
                // SAFETY: inside a section on `a2`.
                unsafe { a2.bump() };
                deliver.send(()).unwrap();
            });
        });
        section::with(&a.lock, || {
            // SAFETY: inside a section on `a`.
            unsafe { a.bump() };
            section::detached(|| {
                // SAFETY: inside a section on `b`.
                section::with(&b.lock, || unsafe { b.bump() });
                delivered.recv().unwrap();
            });
            // SAFETY: inside the section on `a`, resumed when the detach ended.
            unsafe { a.bump() };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (3, 1));
    });
}
