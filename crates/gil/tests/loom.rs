//! loom models of the GIL's drop request and forced switching (gil build only). loom's
//! `UnsafeCell` reports data only the GIL protects being touched by two threads at once; loom
//! reports a deadlock if a schedule leaves every thread blocked.
//!
//! loom's condition variables never time out, so the models use a zero switch interval: a
//! waiter raises the drop request as soon as it starts waiting.
#![cfg(all(loom, feature = "gil"))]

use std::time::Duration;

use ftrt_gil::{Gil, Scheduling};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Shared {
    gil: Gil,
    /// Touched only by the GIL's holder.
    data: UnsafeCell<u32>,
    waiter_had_it: AtomicBool,
}

// SAFETY: `data` is only touched by the thread holding `gil`.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new(scheduling: Scheduling) -> Arc<Self> {
        let gil = Gil::new();
        gil.set_switch_interval(Duration::ZERO);
        gil.set_scheduling(scheduling);
        Arc::new(Self {
            gil,
            data: UnsafeCell::new(0),
            waiter_had_it: AtomicBool::new(false),
        })
    }

    /// # Safety
    /// The caller holds the GIL.
    unsafe fn bump(&self) {
        // SAFETY: the GIL serialises this access, which loom checks.
        self.data.with_mut(|d| unsafe { *d += 1 });
    }
}

/// The holder polls checkpoints until a waiter's drop request makes it switch; the checkpoint
/// returns only after the waiter has had (and released) the GIL.
fn holder_yields_to_a_waiter(scheduling: Scheduling, waiter_is_back_from_blocking: bool) {
    loom::model(move || {
        let shared = Shared::new(scheduling);
        shared.gil.acquire();
        let waiter = {
            let shared = shared.clone();
            thread::spawn(move || {
                if waiter_is_back_from_blocking {
                    shared.gil.acquire_after_blocking();
                } else {
                    shared.gil.acquire();
                }
                // SAFETY: holding the GIL.
                unsafe { shared.bump() };
                shared.waiter_had_it.store(true, Ordering::Relaxed);
                // SAFETY: held above.
                unsafe { shared.gil.release() };
            })
        };
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        // SAFETY: holding the GIL at every checkpoint.
        while !unsafe { shared.gil.check() } {
            thread::yield_now();
        }
        // Forced switching: the waiter ran before the holder got the GIL back.
        assert!(shared.waiter_had_it.load(Ordering::Relaxed));
        // SAFETY: holding the GIL again.
        unsafe { shared.bump() };
        // SAFETY: held.
        unsafe { shared.gil.release() };
        waiter.join().unwrap();
        shared.gil.acquire();
        // SAFETY: holding the GIL.
        assert_eq!(shared.data.with(|d| unsafe { *d }), 3);
        // SAFETY: held.
        unsafe { shared.gil.release() };
    });
}

#[test]
fn drop_request_and_forced_switch() {
    holder_yields_to_a_waiter(Scheduling::Interval, false);
}

#[test]
fn fair_mode_thread_back_from_blocking_takes_over() {
    holder_yields_to_a_waiter(Scheduling::Fair, true);
}

#[test]
fn two_waiters_and_a_holder_share_the_gil_exactly() {
    loom::model(|| {
        let shared = Shared::new(Scheduling::Interval);
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let shared = shared.clone();
                thread::spawn(move || {
                    shared.gil.acquire();
                    // SAFETY: holding the GIL.
                    unsafe { shared.bump() };
                    // SAFETY: held.
                    unsafe { shared.gil.release() };
                })
            })
            .collect();
        shared.gil.acquire();
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        // SAFETY: holding the GIL.
        unsafe { shared.gil.check() };
        // SAFETY: held.
        unsafe { shared.gil.release() };
        for waiter in waiters {
            waiter.join().unwrap();
        }
        shared.gil.acquire();
        // SAFETY: holding the GIL.
        assert_eq!(shared.data.with(|d| unsafe { *d }), 3);
        // SAFETY: held.
        unsafe { shared.gil.release() };
    });
}
