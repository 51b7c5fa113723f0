//! Lock elision (`set_lock_elision`): a thread alone holds the world from a checkpoint on, its
//! sections take no lock, and a thread that attaches meanwhile waits for the holder's next
//! checkpoint, after which every section locks.
//!
//! Holding the world depends on which other threads are attached: the scenarios here run one at
//! a time (`SERIAL`), in their own test binary.

use std::sync::{Mutex, MutexGuard};
use std::thread;

use ftrt_gil::{section, Python};
use ftrt_lock::RawObjectLock;

/// More checks than the 16 that make one repin, where a thread tries to take the world.
const CHECKS_TO_REPIN: usize = 16;

static SERIAL: Mutex<()> = Mutex::new(());

/// Whether the runtime's sections lock at all: not in the `gil` build, where the GIL serialises
/// them.
const SECTIONS_LOCK: bool = !cfg!(feature = "gil");

/// Runs the scenario alone in this binary, with elision set as given, and restores the default.
fn with_elision(enabled: bool, scenario: impl FnOnce() + Send) {
    let _serial: MutexGuard<'_, ()> = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ftrt_gil::set_lock_elision(enabled);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        thread::scope(|s| s.spawn(scenario).join().unwrap());
    }));
    ftrt_gil::set_lock_elision(false);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn repin(py: Python<'_>) {
    for _ in 0..CHECKS_TO_REPIN {
        py.check();
    }
}

#[test]
fn elision_is_off_by_default() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(!ftrt_gil::lock_elision());
}

#[test]
fn without_elision_a_thread_alone_never_holds_the_world_and_its_sections_lock() {
    with_elision(false, || {
        Python::attach(|py| {
            repin(py);
            assert!(!py.holds_world_alone());
            let lock = RawObjectLock::new();
            section::with(py, &lock, || assert_eq!(lock.is_locked(), SECTIONS_LOCK));
        });
    });
}

/// The free-threaded builds' elision, and the `gil` build, where the token is the GIL and no
/// thread holds the world in this sense.
#[test]
fn a_thread_alone_holds_the_world_from_its_first_repin_and_its_sections_take_no_lock() {
    with_elision(true, || {
        Python::attach(|py| {
            let lock = RawObjectLock::new();
            assert!(!py.holds_world_alone(), "not before a checkpoint");
            repin(py);
            if cfg!(feature = "gil") {
                assert!(!py.holds_world_alone());
                return;
            }
            assert!(py.holds_world_alone());
            section::with(py, &lock, || assert!(!lock.is_locked()));
            section::with2(py, &lock, &lock, || assert!(!lock.is_locked()));
            // Detaching lets go; coming back, the thread locks until its next repin.
            py.allow_threads(|| ());
            assert!(!py.holds_world_alone());
            section::with(py, &lock, || assert!(lock.is_locked()));
            repin(py);
            assert!(py.holds_world_alone());
        });
        // A new attachment starts without the world too.
        Python::attach(|py| assert!(!py.holds_world_alone()));
    });
}

/// A section begun before the hold keeps its lock to its end; one begun inside it takes none.
#[test]
fn a_section_open_when_the_hold_begins_keeps_its_lock() {
    with_elision(true, || {
        Python::attach(|py| {
            let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
            section::with(py, &outer, || {
                repin(py);
                assert_eq!(py.holds_world_alone(), !cfg!(feature = "gil"));
                section::with(py, &inner, || {
                    assert!(!inner.is_locked());
                    assert_eq!(outer.is_locked(), SECTIONS_LOCK);
                });
            });
            assert!(!outer.is_locked());
        });
    });
}

/// What only the free-threaded builds have: threads that wait for a holder.
#[cfg(not(feature = "gil"))]
mod free_threaded {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;

    /// The protocol end to end: the holder is inside a section that took no lock when another
    /// thread asks to attach. That thread waits (it is not attached while the holder runs on) until
    /// the holder's next checkpoint; the holder's section, suspended there, takes its lock for real
    /// when it resumes, and the other thread's section on the same lock excludes it.
    #[test]
    fn a_thread_that_attaches_while_the_world_is_held_waits_for_the_holders_checkpoint() {
        with_elision(true, || {
            let lock = RawObjectLock::new();
            let other_attached = AtomicBool::new(false);
            let other_in_section = AtomicBool::new(false);
            let (asked_send, asked) = mpsc::channel();
            thread::scope(|s| {
                s.spawn(|| {
                    Python::attach(|py| {
                        repin(py);
                        assert!(py.holds_world_alone());
                        section::with(py, &lock, || {
                            assert!(!lock.is_locked());
                            asked_send.send(()).unwrap();
                            // The other thread asks the holder to let go as it waits to attach.
                            while !ftrt_gil::stop_requested() {
                                thread::yield_now();
                            }
                            assert!(
                                !other_attached.load(Ordering::SeqCst),
                                "attached while the world was held"
                            );
                            // The checkpoint that lets go: the section is suspended, the other
                            // thread attaches, and the section resumes with its lock.
                            while !other_attached.load(Ordering::SeqCst) {
                                py.check();
                            }
                            assert!(!py.holds_world_alone());
                            assert!(lock.is_locked(), "the section resumed without its lock");
                            assert!(!other_in_section.load(Ordering::SeqCst));
                        });
                    });
                });
                s.spawn(|| {
                    let asked = asked;
                    asked.recv().unwrap();
                    Python::attach(|py| {
                        other_attached.store(true, Ordering::SeqCst);
                        section::with(py, &lock, || {
                            other_in_section.store(true, Ordering::SeqCst);
                            assert!(lock.is_locked());
                            other_in_section.store(false, Ordering::SeqCst);
                        });
                    });
                });
            });
        });
    }

    /// The holder's own stop of the world is its hold: a detach inside the stop (which would
    /// end the hold) must leave the world stopped, as a stopper's detach does.
    #[test]
    fn the_holders_stop_of_the_world_lasts_through_a_detach_inside_it() {
        with_elision(true, || {
            let other_attached = AtomicBool::new(false);
            let (stopped_send, stopped) = mpsc::channel();
            thread::scope(|s| {
                s.spawn(|| {
                    let stopped = stopped;
                    stopped.recv().unwrap();
                    Python::attach(|_| other_attached.store(true, Ordering::SeqCst));
                });
                Python::attach(|py| {
                    repin(py);
                    assert!(py.holds_world_alone());
                    ftrt_gil::stop_the_world(py, || {
                        stopped_send.send(()).unwrap();
                        py.allow_threads(|| thread::sleep(std::time::Duration::from_millis(50)));
                        assert!(
                            !other_attached.load(Ordering::SeqCst),
                            "another thread attached inside the holder's stop"
                        );
                    });
                });
            });
            assert!(other_attached.load(Ordering::SeqCst));
        });
    }

    /// While another thread is attached, no thread takes the world: both lock. Each thread
    /// repins at least once while the other is attached, and finds itself not alone.
    #[test]
    fn no_thread_holds_the_world_while_another_is_attached() {
        with_elision(true, || {
            let (other_attached, main_attached) = (AtomicBool::new(false), AtomicBool::new(false));
            let other_checked = AtomicBool::new(false);
            let (done, stopped_checking) = (AtomicBool::new(false), AtomicBool::new(false));
            /// Raises its flag when dropped: a failed assertion on either thread unwinds through
            /// it, and the other thread, waiting for the flag, is let go.
            struct RaiseOnDrop<'a>(&'a AtomicBool);
            impl Drop for RaiseOnDrop<'_> {
                fn drop(&mut self) {
                    self.0.store(true, Ordering::SeqCst);
                }
            }
            thread::scope(|s| {
                s.spawn(|| {
                    let _stopped = RaiseOnDrop(&stopped_checking);
                    let _checked = RaiseOnDrop(&other_checked);
                    Python::attach(|py| {
                        other_attached.store(true, Ordering::SeqCst);
                        // No checkpoint before the main thread is attached: this thread cannot
                        // hold the world, so the main thread attaches without waiting.
                        while !main_attached.load(Ordering::SeqCst) {
                            thread::yield_now();
                        }
                        // One repin for certain (the main thread stays attached until it is
                        // signalled): the loop below may see `done` before its first round.
                        repin(py);
                        let alone = py.holds_world_alone();
                        // Signalled before judging, so that a failure does not leave the main
                        // thread waiting.
                        other_checked.store(true, Ordering::SeqCst);
                        assert!(
                            !alone,
                            "the other thread held the world beside an attached one"
                        );
                        while !done.load(Ordering::SeqCst) {
                            py.check();
                            assert!(!py.holds_world_alone());
                        }
                    });
                });
                while !other_attached.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                // The other thread checks until `done`, and waits for `main_attached` first.
                let _done = RaiseOnDrop(&done);
                let _main_attached = RaiseOnDrop(&main_attached);
                Python::attach(|py| {
                    main_attached.store(true, Ordering::SeqCst);
                    repin(py);
                    assert!(!py.holds_world_alone());
                    let lock = RawObjectLock::new();
                    section::with(py, &lock, || assert!(lock.is_locked()));
                    while !other_checked.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                    // Still attached until the other thread has stopped checking: it may have
                    // read `done` just before it was set, and its next checkpoint must not find
                    // it alone.
                    done.store(true, Ordering::SeqCst);
                    while !stopped_checking.load(Ordering::SeqCst) {
                        thread::yield_now();
                    }
                });
            });
        });
    }
}

/// The holder has the world stopped already: its own stop runs at once.
#[test]
fn the_holder_stops_the_world_without_waiting() {
    with_elision(true, || {
        Python::attach(|py| {
            repin(py);
            let held = py.holds_world_alone();
            assert_eq!(held, !cfg!(feature = "gil"));
            assert_eq!(ftrt_gil::stop_the_world(py, || 42), 42);
            assert_eq!(py.holds_world_alone(), held);
        });
    });
}
