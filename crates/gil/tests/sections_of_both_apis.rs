//! A registered thread has one critical-section stack: the runtime's sections
//! (`ftrt_gil::section`) and `ftrt_lock`'s thread-local ones (`ftrt_lock::section`) go on the
//! same stack, so a section that has to wait suspends every section the thread has open, whichever
//! API began it, and the deadlock-freedom `ftrt_lock::section` promises holds across the two.
//!
//! In the `gil` build the runtime's sections take no lock, so nothing here can wait there; the
//! scenarios still run, as specifications of what every build does. (That the two share one
//! stack shows directly in `thread_states.rs`.)

use std::sync::{mpsc, Arc, Barrier};
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
