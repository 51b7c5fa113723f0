//! A registered thread has one critical-section stack: the runtime's sections
//! (`ftrt_gil::section`) and `ftrt_lock`'s thread-local ones (`ftrt_lock::section`) go on the
//! same stack, so a section that has to wait suspends every section the thread has open, whichever
//! API began it, and the deadlock-freedom `ftrt_lock::section` promises holds across the two.
//!
//! In the `gil` build the runtime's sections take no lock, so nothing here can wait there; the
//! scenarios still run, as specifications of what every build does. (That the two share one
//! stack shows directly in `thread_states.rs`.)

use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::{mpsc, Arc, Barrier, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use ftrt_gil::Python;
use ftrt_lock::RawObjectLock;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a scenario may take before it is called a deadlock.
const HANG: Duration = Duration::from_secs(30);

/// Runs `scenario` on its own threads and fails if it does not finish within `HANG` (the
/// deadlocked threads are left behind).
fn finishes(what: &str, scenario: impl FnOnce() + Send + 'static) {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        scenario();
        done.send(()).unwrap();
    });
    match finished.recv_timeout(HANG) {
        Ok(()) => {}
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: deadlocked"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked"),
    }
}

#[test]
fn a_runtime_section_nested_in_an_ftrt_lock_section_on_the_same_lock_does_not_wait_for_itself() {
    finishes("the runtime's section inside ftrt_lock's", || {
        let lock = RawObjectLock::new();
        Python::attach(|py| {
            ftrt_lock::section::with(&lock, || {
                ftrt_gil::section::with(py, &lock, || {
                    assert!(lock.is_locked() || cfg!(feature = "gil"))
                });
                assert!(lock.is_locked(), "the outer section resumed with its lock");
            });
        });
        assert!(!lock.is_locked());
    });
}

#[test]
fn an_ftrt_lock_section_nested_in_a_runtime_section_on_the_same_lock_does_not_wait_for_itself() {
    finishes("ftrt_lock's section inside the runtime's", || {
        let lock = RawObjectLock::new();
        Python::attach(|py| {
            ftrt_gil::section::with(py, &lock, || {
                ftrt_lock::section::with(&lock, || assert!(lock.is_locked()));
            });
        });
        assert!(!lock.is_locked());
    });
}

/// Each thread holds one lock through `ftrt_lock` and then asks for the other's through the
/// runtime: each wait suspends the waiting thread's outer section, so one of them gets through.
#[test]
fn two_threads_nesting_the_two_apis_on_two_locks_in_opposite_orders_both_finish() {
    finishes("two threads crossing the two APIs", || {
        let locks = Arc::new([RawObjectLock::new(), RawObjectLock::new()]);
        let both_in = Arc::new(Barrier::new(2));
        let cross = |outer: usize| {
            let (locks, both_in) = (locks.clone(), both_in.clone());
            thread::spawn(move || {
                Python::attach(|py| {
                    ftrt_lock::section::with(&locks[outer], || {
                        // Under the GIL attached threads take turns: there the wait detaches,
                        // which suspends the section meanwhile. Elsewhere it keeps its lock.
                        if cfg!(feature = "gil") {
                            py.allow_threads(|| both_in.wait());
                        } else {
                            both_in.wait();
                        }
                        ftrt_gil::section::with(py, &locks[1 - outer], || ());
                    });
                });
            })
        };
        let threads = [cross(0), cross(1)];
        for thread in threads {
            thread.join().unwrap();
        }
    });
}

/// Waits until `done`, yielding.
fn until(done: impl Fn() -> bool) {
    while !done() {
        thread::yield_now();
    }
}

/// Taken by the tests that stop the world, one at a time: each waits for a stop to be asked for,
/// and must not take another test's for its own.
fn one_stopper_at_a_time() -> MutexGuard<'static, ()> {
    static STOPPERS: Mutex<()> = Mutex::new(());
    STOPPERS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A runtime section that waits for a lock whose holder cannot give it up before a stop of the
/// world has run lets the stop through (free-threaded builds): a holder that took the lock
/// through `ftrt_lock`'s functions and then waits to attach, which a stop under way keeps it
/// from, and a waiter that held the stop up would leave the three waiting for each other.
/// Here the holder took the lock before it attached, and attaches once the world is stopped.
#[test]
#[cfg_attr(
    feature = "gil",
    ignore = "the gil build's runtime sections take no lock, and holding the GIL is its stop"
)]
fn a_runtime_section_lets_a_stop_through_while_the_holder_waits_to_attach_holding_its_lock() {
    let _one_stopper = one_stopper_at_a_time();
    finishes(
        "a stop, a holder attaching in it, a section waiting for the holder",
        || {
            let lock: &'static RawObjectLock = Box::leak(Box::new(RawObjectLock::new()));
            let stopped: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let attaching: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let (held, holding) = mpsc::channel();
            let holder = thread::spawn(move || {
                Python::attach(|_| ()); // registered, and detached again
                ftrt_lock::section::with(lock, || {
                    held.send(()).unwrap();
                    until(|| stopped.load(SeqCst));
                    attaching.store(true, SeqCst);
                    // Waits for the stop to end, holding the lock.
                    Python::attach(|_| ());
                });
            });
            holding.recv().unwrap();
            let waiter = thread::spawn(move || {
                Python::attach(|py| ftrt_gil::section::with(py, lock, || ()))
            });
            until(|| lock.parked_waiters() == 1);
            Python::attach(|py| {
                ftrt_gil::stop_the_world(py, || {
                    stopped.store(true, SeqCst);
                    until(|| attaching.load(SeqCst));
                })
            });
            holder.join().unwrap();
            waiter.join().unwrap();
        },
    );
}

/// As above, with a holder that got the lock in the wait of `ftrt_lock`'s thread-local
/// functions, which detaches: it comes back from the wait holding the lock, into the stop.
#[test]
#[cfg_attr(
    feature = "gil",
    ignore = "the gil build's runtime sections take no lock, and holding the GIL is its stop"
)]
fn a_runtime_section_lets_a_stop_through_while_a_detached_waiter_comes_back_with_its_lock() {
    let _one_stopper = one_stopper_at_a_time();
    finishes(
        "a stop, a detached waiter coming back in it, a section waiting for it",
        || {
            let lock: &'static RawObjectLock = Box::leak(Box::new(RawObjectLock::new()));
            let stopped: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            let released: &'static AtomicBool = Box::leak(Box::new(AtomicBool::new(false)));
            // Not a runtime thread: it gives the lock up once the world is stopped.
            lock.lock();
            let holder = thread::spawn(move || {
                Python::attach(|_| ftrt_lock::section::with(lock, || ()));
            });
            until(|| lock.parked_waiters() == 1);
            let waiter = thread::spawn(move || {
                Python::attach(|py| ftrt_gil::section::with(py, lock, || ()))
            });
            until(|| lock.parked_waiters() == 2);
            // The stop lasts until the holder has the lock (and waits to attach, holding it).
            let stopper = thread::spawn(move || {
                Python::attach(|py| {
                    ftrt_gil::stop_the_world(py, || {
                        stopped.store(true, SeqCst);
                        until(|| released.load(SeqCst) && lock.is_locked());
                    })
                })
            });
            until(|| stopped.load(SeqCst));
            // SAFETY: locked above, on this thread. The holder, the one waiter queued (the other
            // lets the stop through), takes it.
            unsafe { lock.unlock() };
            released.store(true, SeqCst);
            stopper.join().unwrap();
            holder.join().unwrap();
            waiter.join().unwrap();
        },
    );
}

/// The runtime claims a registered thread's stack (`ftrt_lock::section::claim_thread_stack`), so
/// no other code on the thread can claim it: the stack's own sections, which elide while the
/// thread holds the world alone, are the runtime's alone.
#[test]
fn a_registered_threads_stack_is_claimed_by_the_runtime() {
    thread::spawn(|| {
        Python::attach(|_| ());
        assert!(ftrt_lock::section::claim_thread_stack().is_none());
    })
    .join()
    .unwrap();
}

/// A thread whose stack some other code claimed cannot attach, and is told why.
#[test]
fn a_thread_whose_stack_is_claimed_elsewhere_is_refused_at_its_first_attach() {
    let refusal = thread::spawn(|| {
        let _claim = ftrt_lock::section::claim_thread_stack().expect("unclaimed");
        Python::attach(|_| ());
    })
    .join()
    .expect_err("the attach panics");
    let message = refusal
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| refusal.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(message.contains("claimed already"), "{message}");
}
