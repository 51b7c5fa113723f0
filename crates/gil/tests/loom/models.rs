use std::sync::atomic::{AtomicBool as StdAtomicBool, Ordering as StdOrdering};
use std::time::Duration;

use ftrt_gil::{Gil, Scheduling};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Shared {
    gil: Gil,
    /// Touched only by the GIL's holder.
    data: UnsafeCell<u32>,
    waiter_had_it: AtomicBool,
    /// How many waiters have had the GIL.
    served: AtomicUsize,
}

// SAFETY: `data` is only touched by the thread holding `gil`.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new(scheduling: Scheduling) -> Arc<Self> {
        Self::with_interval(scheduling, Duration::ZERO)
    }

    fn with_interval(scheduling: Scheduling, interval: Duration) -> Arc<Self> {
        let gil = Gil::new();
        gil.set_switch_interval(interval);
        gil.set_scheduling(scheduling);
        Arc::new(Self {
            gil,
            data: UnsafeCell::new(0),
            waiter_had_it: AtomicBool::new(false),
            served: AtomicUsize::new(0),
        })
    }

    /// Takes the GIL as an ordinary waiter, or as a thread back from a blocking call.
    fn take(&self, back_from_blocking: bool) {
        if back_from_blocking {
            self.gil.acquire_after_blocking();
        } else {
            self.gil.acquire();
        }
    }

    /// # Safety
    /// The caller holds the GIL.
    unsafe fn bump(&self) {
        // SAFETY: the GIL serialises this access, which loom checks.
        self.data.with_mut(|d| unsafe { *d += 1 });
    }
}

/// Spawns a waiter that takes the GIL (ordinary, or back from a blocking call), bumps the data,
/// counts itself served, and releases. Its first `run_outs` timed waits run out (see
/// [`INTERVAL`]).
fn spawn_waiter(
    shared: &Arc<Shared>,
    back_from_blocking: bool,
    run_outs: usize,
) -> thread::JoinHandle<()> {
    let shared = shared.clone();
    thread::spawn(move || {
        ftrt_gil::run_out_next_timed_waits(run_outs);
        shared.take(back_from_blocking);
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        shared.served.fetch_add(1, Ordering::Relaxed);
        // SAFETY: held.
        unsafe { shared.gil.release() };
    })
}

/// Joins `waiters`, then reads the data under the GIL: how many bumps every thread made.
fn bumps_after(shared: &Shared, waiters: Vec<thread::JoinHandle<()>>) -> u32 {
    for waiter in waiters {
        waiter.join().unwrap();
    }
    shared.gil.acquire();
    // SAFETY: holding the GIL.
    let bumps = shared.data.with(|d| unsafe { *d });
    // SAFETY: held.
    unsafe { shared.gil.release() };
    bumps
}

/// The holder polls checkpoints until a waiter's drop request makes it switch; the checkpoint
/// returns only after the waiter has had (and released) the GIL. The waiter's first `run_outs`
/// timed waits run out (see [`INTERVAL`]).
fn holder_yields_to_a_waiter(
    scheduling: Scheduling,
    waiter_is_back_from_blocking: bool,
    interval: Duration,
    run_outs: usize,
) {
    loom::model(move || {
        let shared = Shared::with_interval(scheduling, interval);
        shared.gil.acquire();
        let waiter = {
            let shared = shared.clone();
            thread::spawn(move || {
                ftrt_gil::run_out_next_timed_waits(run_outs);
                shared.take(waiter_is_back_from_blocking);
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
    holder_yields_to_a_waiter(Scheduling::Interval, false, Duration::ZERO, 0);
}

#[test]
fn fair_mode_thread_back_from_blocking_takes_over() {
    holder_yields_to_a_waiter(Scheduling::Fair, true, Duration::ZERO, 0);
}

#[test]
fn two_waiters_and_a_holder_share_the_gil_exactly() {
    loom::model(|| {
        let shared = Shared::new(Scheduling::Interval);
        let waiters: Vec<_> = (0..2).map(|_| spawn_waiter(&shared, false, 0)).collect();
        shared.gil.acquire();
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        // SAFETY: holding the GIL.
        unsafe { shared.gil.check() };
        // SAFETY: held.
        unsafe { shared.gil.release() };
        assert_eq!(bumps_after(&shared, waiters), 3);
    });
}

/// A holder that only ever reaches checkpoints serves every waiter, whatever the order in which
/// they queue. With a zero interval the waiters ask at once and never time out (this model's
/// timed waits never run out), so this checks that a waiter's request stays raised while it
/// waits, even after another thread, the holder itself included, took the GIL ahead of it. A
/// starved waiter leaves the holder polling for ever, which exceeds loom's branch limit.
#[test]
fn with_a_zero_interval_a_holder_that_only_reaches_checkpoints_serves_both_waiters() {
    loom::model(|| {
        let shared = Shared::new(Scheduling::Interval);
        shared.gil.acquire();
        let waiters: Vec<_> = (0..2).map(|_| spawn_waiter(&shared, false, 0)).collect();
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        while shared.served.load(Ordering::Relaxed) < 2 {
            // SAFETY: holding the GIL at every checkpoint.
            unsafe { shared.gil.check() };
            thread::yield_now();
        }
        // SAFETY: held.
        unsafe { shared.gil.release() };
        assert_eq!(bumps_after(&shared, waiters), 3);
    });
}

/// Fair mode with a thread back from blocking and an ordinary waiter: whatever the order, both
/// are served, and the holder that comes back again with priority is too. Under loom a single
/// priority take while an ordinary thread waits gives the ordinary waiters the next turn, so
/// the schedules in which priority waiters stand back for it are explored; a waiter left
/// waiting is a deadlock loom reports.
#[test]
fn in_fair_mode_an_ordinary_turn_serves_every_waiter() {
    loom::model(|| {
        let shared = Shared::new(Scheduling::Fair);
        shared.gil.acquire();
        let waiters: Vec<_> = [false, true]
            .into_iter()
            .map(|back_from_blocking| spawn_waiter(&shared, back_from_blocking, 0))
            .collect();
        // SAFETY: held.
        unsafe { shared.gil.release() };
        shared.gil.acquire_after_blocking();
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        // SAFETY: held.
        unsafe { shared.gil.release() };
        assert_eq!(bumps_after(&shared, waiters), 3);
    });
}

/// A switch interval the models' waiters do not ask at once with. Its length means nothing to
/// loom, which has no clock: a waiter's timed waits run out only when it says so
/// (`run_out_next_timed_waits`, which covers every timed wait of the thread), each after letting
/// the GIL's state go, so that the holder may take, release or switch the GIL meanwhile. Such a
/// wait's timer fires before any notification reaches it, which a real wait can do in any
/// schedule; a notification that would have woken it first is not modelled.
const INTERVAL: Duration = Duration::from_millis(5);

/// A waiter with a non-zero interval whose interval runs out with the GIL in the holder's hands
/// asks (CPython's `take_gil`), and the holder, which only reaches checkpoints, hands the GIL
/// over. A waiter whose interval ran out and asked nothing (or whose request no checkpoint ever
/// saw) leaves the holder polling for ever, which exceeds loom's branch limit. That it does not
/// ask sooner is the next model's.
#[test]
fn a_waiter_asks_once_its_interval_runs_out_and_the_holder_yields() {
    // One interval, then the waiter waits for a notification only.
    holder_yields_to_a_waiter(Scheduling::Interval, false, INTERVAL, 1);
}

/// A request the holder's own retake cleared is asked again. The holder sees the waiter's request
/// but first makes a blocking call (gives the GIL up and takes it back): the waiter may take the
/// GIL meanwhile, or the holder takes it back first, and that take clears the request (a take
/// serves the request that stood). The waiter then asks again after a later interval, and is
/// served. Every timed wait of the waiter runs out, so that it keeps asking for as long as the
/// holder keeps the GIL. A waiter that asked only once leaves the holder polling for ever,
/// which exceeds loom's branch limit. The model must reach both outcomes of the blocking call.
#[test]
fn a_request_cleared_by_the_holders_retake_is_asked_again() {
    // Which outcome of the blocking call the explored schedules reached (across executions).
    static RETOOK_FIRST: StdAtomicBool = StdAtomicBool::new(false);
    static WAITER_WENT_FIRST: StdAtomicBool = StdAtomicBool::new(false);
    loom::model(|| {
        let shared = Shared::with_interval(Scheduling::Interval, INTERVAL);
        shared.gil.acquire();
        let waiter = spawn_waiter(&shared, false, usize::MAX);
        // SAFETY: holding the GIL.
        unsafe { shared.bump() };
        while !shared.gil.drop_requested() {
            thread::yield_now();
        }
        // A blocking call before the next checkpoint.
        // SAFETY: held.
        unsafe { shared.gil.release() };
        shared.gil.acquire_after_blocking();
        // Exact: the waiter counts itself served while it holds the GIL.
        if shared.served.load(Ordering::Relaxed) == 0 {
            RETOOK_FIRST.store(true, StdOrdering::Relaxed);
        } else {
            WAITER_WENT_FIRST.store(true, StdOrdering::Relaxed);
        }
        while shared.served.load(Ordering::Relaxed) == 0 {
            // SAFETY: holding the GIL at every checkpoint.
            unsafe { shared.gil.check() };
            thread::yield_now();
        }
        // SAFETY: held.
        unsafe { shared.gil.release() };
        assert_eq!(bumps_after(&shared, vec![waiter]), 2);
    });
    assert!(
        RETOOK_FIRST.load(StdOrdering::Relaxed),
        "no schedule had the holder take the GIL back (clearing the request) before the waiter"
    );
    assert!(
        WAITER_WENT_FIRST.load(StdOrdering::Relaxed),
        "no schedule had the waiter take the GIL during the holder's blocking call"
    );
}

/// A waiter does not ask before its interval ran out, nor after an interval in which the GIL
/// changed hands. The holder waits until the waiter waits, then gives the GIL up and takes it
/// back (a blocking call): the waiter's one interval runs out before, during or after that, and
/// either takes the GIL or finds it taken back. Whatever the schedule, no request stands at the
/// holder's next checkpoints: one raised before the blocking call was served by the holder's
/// retake, and an interval in which the GIL changed hands raises none. A waiter that asks at
/// once, or whatever happened to the GIL during its interval, fails the checkpoints' assertion.
#[test]
fn a_waiter_does_not_ask_early_nor_after_the_gil_changed_hands() {
    loom::model(|| {
        let shared = Shared::with_interval(Scheduling::Interval, INTERVAL);
        shared.gil.acquire();
        let waiter = spawn_waiter(&shared, false, 1);
        while shared.gil.waiting() == 0 {
            thread::yield_now();
        }
        // SAFETY: held.
        unsafe { shared.gil.release() };
        shared.gil.acquire();
        for _ in 0..2 {
            // SAFETY: holding the GIL at every checkpoint.
            let switched = unsafe { shared.gil.check() };
            assert!(!switched, "a request stood at a checkpoint");
            thread::yield_now();
        }
        // SAFETY: held.
        unsafe { shared.gil.release() };
        assert_eq!(bumps_after(&shared, vec![waiter]), 1);
    });
}
