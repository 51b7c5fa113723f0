//! What happens to objects when threads exit: thread-local storage is torn down in an order the
//! runtime does not choose, and objects still die on the way out.
//!
//! A failure here is a crash (a stack overflow, "thread local panicked on drop"), which would take
//! the whole test run down with it. So each scenario runs in a child process of this test binary
//! (the test re-runs itself with `SCENARIO_VAR` naming the scenario), and the test asserts that
//! the child succeeded. Under Miri, which cannot start processes, the scenarios run in-process,
//! smaller.

use std::cell::RefCell;
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{collect, Bound, Kind, PyInt, PyList, PyStr, Shared};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in a child process to the name of the test whose scenario it runs.
const SCENARIO_VAR: &str = "FTRT_THREAD_EXIT_SCENARIO";

/// Deep enough that freeing it recursively overflows any thread's stack.
const DEPTH: usize = if cfg!(miri) { 300 } else { 200_000 };

/// The stack of the threads that exit holding objects: small, so that a recursive free fails
/// at once instead of after a few hundred thousand frames.
const SMALL_STACK: usize = 256 * 1024;

/// Runs `scenario` in a child process (the test named `test_name`, re-run with `SCENARIO_VAR`
/// set) and asserts that the child exited successfully.
fn in_child_process(test_name: &str, scenario: fn()) {
    if cfg!(miri) || std::env::var(SCENARIO_VAR).as_deref() == Ok(test_name) {
        scenario();
        return;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SCENARIO_VAR, test_name)
        .output()
        .expect("the test binary starts again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the scenario's process failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        stdout,
    );
    // `--exact` with a wrong name runs nothing and still succeeds.
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

/// Live lists and ints, after settling what the calling thread can settle.
fn live_lists_and_ints() -> (isize, isize) {
    Python::attach(|py| {
        collect(py);
        (live_objects(Kind::List), live_objects(Kind::Int))
    })
}

/// A list nested `depth` deep.
fn deep_list(py: Python<'_>, depth: usize) -> Bound<'_, PyList> {
    let mut nested = PyList::empty(py);
    for _ in 0..depth {
        nested = PyList::new(py, [nested]);
    }
    nested
}

#[test]
fn an_owner_that_exits_with_a_deep_list_queued_to_it_frees_the_list_without_recursion() {
    in_child_process(
        "an_owner_that_exits_with_a_deep_list_queued_to_it_frees_the_list_without_recursion",
        || {
            let before = live_lists_and_ints();
            let (hand_over, handed_over) = mpsc::channel::<Shared<PyList>>();
            let (dropped, wait_until_dropped) = mpsc::channel::<()>();
            let owner = thread::Builder::new()
                .stack_size(SMALL_STACK)
                .spawn(move || {
                    Python::attach(|py| {
                        let deep = deep_list(py, DEPTH);
                        // Work of any kind that frees an object, as threads do before they idle.
                        drop(PyList::new(py, [PyInt::new(py, 1_000)]));
                        hand_over.send(deep.unbind()).unwrap();
                    });
                    // Idle (no merge) until the other thread dropped the last reference, which
                    // in the biased build queues the list to this thread: its exit frees it.
                    wait_until_dropped.recv().unwrap();
                })
                .unwrap();
            let dropper = thread::spawn(move || {
                drop(handed_over.recv().unwrap());
                dropped.send(()).unwrap();
            });
            dropper.join().unwrap();
            owner.join().expect("the owner exits cleanly");
            assert_eq!(live_lists_and_ints(), before, "every list was freed once");
        },
    );
}

thread_local! {
    static KEPT: RefCell<Option<Shared<PyList>>> = const { RefCell::new(None) };
}

#[test]
fn a_deep_list_kept_in_a_thread_local_is_freed_without_recursion_at_thread_exit() {
    in_child_process(
        "a_deep_list_kept_in_a_thread_local_is_freed_without_recursion_at_thread_exit",
        || {
            let before = live_lists_and_ints();
            thread::Builder::new()
                .stack_size(SMALL_STACK)
                .spawn(|| {
                    // Touched before the thread attaches, so torn down after the runtime's
                    // thread-locals: its drop is the last thing the thread does.
                    KEPT.with(|kept| kept.borrow_mut().take());
                    Python::attach(|py| {
                        let deep = deep_list(py, DEPTH).unbind();
                        KEPT.with(|kept| *kept.borrow_mut() = Some(deep));
                    });
                })
                .unwrap()
                .join()
                .expect("the thread exits cleanly");
            assert_eq!(live_lists_and_ints(), before, "every list was freed once");
        },
    );
}

#[test]
fn a_shared_kept_in_a_thread_local_initialised_before_attaching_is_freed_at_thread_exit() {
    in_child_process(
        "a_shared_kept_in_a_thread_local_initialised_before_attaching_is_freed_at_thread_exit",
        || {
            let before = live_lists_and_ints();
            thread::spawn(|| {
                // Initialised first, so destroyed after the thread state.
                KEPT.with(|kept| kept.borrow_mut().take());
                Python::attach(|py| {
                    let list = PyList::new(py, [PyInt::new(py, 1_000), PyInt::new(py, 1_001)]);
                    KEPT.with(|kept| *kept.borrow_mut() = Some(list.unbind()));
                });
            })
            .join()
            .expect("the thread exits cleanly");
            assert_eq!(
                live_lists_and_ints(),
                before,
                "the list and its items were freed once"
            );
        },
    );
}

#[test]
fn a_shared_kept_in_a_thread_local_initialised_after_attaching_is_freed_at_thread_exit() {
    in_child_process(
        "a_shared_kept_in_a_thread_local_initialised_after_attaching_is_freed_at_thread_exit",
        || {
            let before = live_lists_and_ints();
            thread::spawn(|| {
                Python::attach(|py| {
                    // Initialised while attached, so destroyed before the thread state.
                    let list = PyList::new(py, [PyInt::new(py, 1_000), PyInt::new(py, 1_001)]);
                    KEPT.with(|kept| *kept.borrow_mut() = Some(list.unbind()));
                });
            })
            .join()
            .expect("the thread exits cleanly");
            assert_eq!(
                live_lists_and_ints(),
                before,
                "the list and its items were freed once"
            );
        },
    );
}

#[test]
fn a_shared_kept_in_a_thread_local_of_a_thread_that_never_attached_is_freed_at_thread_exit() {
    in_child_process(
        "a_shared_kept_in_a_thread_local_of_a_thread_that_never_attached_is_freed_at_thread_exit",
        || {
            let before = live_lists_and_ints();
            let list = Python::attach(|py| {
                PyList::new(py, [PyInt::new(py, 1_000), PyInt::new(py, 1_001)]).unbind()
            });
            thread::spawn(move || {
                // The only reference, dropped during this thread's exit, by a thread that never
                // attached before.
                KEPT.with(|kept| *kept.borrow_mut() = Some(list));
            })
            .join()
            .expect("the thread exits cleanly");
            assert_eq!(
                live_lists_and_ints(),
                before,
                "the list and its items were freed once"
            );
        },
    );
}

/// Runs the closure it was given in its destructor: at thread exit, in the order thread-locals
/// die (the reverse of their first use).
struct AtExit(RefCell<Option<Box<dyn FnOnce()>>>);

impl Drop for AtExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.borrow_mut().take() {
            f();
        }
    }
}

thread_local! {
    static AT_EXIT: AtExit = const { AtExit(RefCell::new(None)) };
}

/// Registers `f` to run at the calling thread's exit. Called before the thread first attaches,
/// it runs after the thread state is gone (the fallback: no cache, no batch, no id).
fn at_exit(f: impl FnOnce() + 'static) {
    AT_EXIT.with(|at_exit| *at_exit.0.borrow_mut() = Some(Box::new(f)));
}

#[test]
fn interning_caches_are_per_thread_state_and_agree_with_the_shared_table_even_after_exit() {
    in_child_process(
        "interning_caches_are_per_thread_state_and_agree_with_the_shared_table_even_after_exit",
        || {
            const TEXT: &str = "interned on every thread";
            let before = ftrt_object::interned_count();
            let (interned_at_exit, interned) = mpsc::channel::<bool>();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let interned_at_exit = interned_at_exit.clone();
                    thread::spawn(move || {
                        at_exit(move || {
                            let same = Python::attach(|py| {
                                let late = PyStr::intern(py, TEXT);
                                late.is(PyStr::intern_in_shared_table(py, TEXT).as_any())
                            });
                            interned_at_exit.send(same).unwrap();
                        });
                        Python::attach(|py| {
                            let first = PyStr::intern(py, TEXT);
                            // The second comes from this thread's cache, in its thread state.
                            let cached = PyStr::intern(py, TEXT);
                            assert!(first.is(cached.as_any()));
                            assert!(first.is(PyStr::intern_in_shared_table(py, TEXT).as_any()));
                        });
                    })
                })
                .collect();
            drop(interned_at_exit);
            for thread in threads {
                thread.join().expect("the thread exits cleanly");
            }
            assert_eq!(interned.iter().filter(|same| *same).count(), 4);
            assert_eq!(
                ftrt_object::interned_count(),
                before + 1,
                "one string for all"
            );
        },
    );
}

#[test]
fn references_a_thread_retired_are_freed_after_it_exits_even_from_its_teardown() {
    in_child_process(
        "references_a_thread_retired_are_freed_after_it_exits_even_from_its_teardown",
        || {
            let before = live_lists_and_ints();
            let (list, late) = Python::attach(|py| {
                let list = PyList::new(py, [PyInt::new(py, 1_000)]).unbind();
                let late = list.clone_ref(py);
                (list, late)
            });
            let replaced = thread::spawn(move || {
                // After the thread state is gone: retired without a batch.
                at_exit(move || {
                    Python::attach(|py| {
                        let late = late.bind(py);
                        for i in 0..3 {
                            late.set_item(0, PyInt::new(py, 3_000 + i)).unwrap();
                        }
                    });
                });
                Python::attach(|py| {
                    let list = list.bind(py);
                    // Fewer than a batch: what the thread retires stays in its batch until a
                    // quiescent state or its exit hands it over.
                    for i in 0..10 {
                        list.set_item(0, PyInt::new(py, 2_000 + i)).unwrap();
                    }
                });
                list
            })
            .join()
            .expect("the thread exits cleanly");
            Python::attach(|py| drop(replaced.into_bound(py)));
            assert_eq!(
                live_lists_and_ints(),
                before,
                "every replaced int was freed"
            );
        },
    );
}

/// A collection run at a thread's exit, after its thread state is gone (attached through the
/// fallback, which holds no epoch pin), frees nothing while it walks the tracked objects. Its
/// traversals used to pin: each pin was then outermost, and an outermost pin runs the epoch's
/// deferred functions, here an exited thread's retired lists, dropped in the middle of the walk,
/// which then read a freed list (a crash in every run).
#[test]
fn a_collection_at_thread_exit_frees_nothing_in_the_middle_of_its_walk() {
    in_child_process(
        "a_collection_at_thread_exit_frees_nothing_in_the_middle_of_its_walk",
        || {
            let before = live_lists_and_ints();
            let outer = Python::attach(|py| PyList::new(py, [PyList::empty(py)]).unbind());
            // Lists retired by a thread that then exits: a partial batch handed to the epoch,
            // whose mailbox is closed, so whichever thread runs it drops it.
            thread::spawn(move || {
                Python::attach(|py| {
                    let outer = outer.bind(py);
                    for i in 0..40 {
                        let inner = PyList::new(py, [PyInt::new(py, 1_000 + i)]);
                        outer.set_item(0, inner).unwrap();
                    }
                });
                drop(outer);
            })
            .join()
            .expect("the thread exits cleanly");
            let collected = thread::spawn(|| {
                let (send, receive) = mpsc::channel();
                at_exit(move || {
                    let collection = Python::attach(ftrt_object::gc::collect);
                    send.send(collection.tracked).unwrap();
                });
                Python::attach(|_| {});
                receive
            })
            .join()
            .expect("the thread exits cleanly");
            assert!(collected.recv().is_ok(), "the collection at exit ran");
            assert_eq!(live_lists_and_ints(), before, "everything was freed once");
        },
    );
}

/// A thread that retired references (a full batch, so it has a mailbox) exits while a stop of
/// the world waits for a thread that waits, attached, for that exit. The exit hands its last
/// batch to the epoch and closes its mailbox; it used to attach to drop what the mailbox held,
/// and so waited for the stop: the exit for the stop, the stop for the waiting thread, that
/// thread for the exit (a timeout here). Nothing is lost on the way: after a collection, every
/// int the thread replaced is freed. (Free-threaded builds: under the GIL the waiting thread
/// keeps the stopper from attaching, and nothing is retired through the epoch.)
#[test]
#[cfg(not(ftrt_gil_build))]
fn a_thread_that_retired_references_can_exit_while_a_stop_waits_for_a_thread_that_waits_for_it() {
    use std::time::Duration;

    static EXITED: std::sync::Mutex<Option<mpsc::Sender<()>>> = std::sync::Mutex::new(None);
    /// Sends when dropped: the last thread-local of its thread (the first one it used).
    struct SignalAtExit;
    impl Drop for SignalAtExit {
        fn drop(&mut self) {
            if let Some(exited) = EXITED.lock().unwrap().take() {
                let _ = exited.send(());
            }
        }
    }
    thread_local!(static SIGNAL_AT_EXIT: SignalAtExit = const { SignalAtExit });

    in_child_process(
        "a_thread_that_retired_references_can_exit_while_a_stop_waits_for_a_thread_that_waits_for_it",
        || {
            let before = live_lists_and_ints();
            let list = Python::attach(|py| PyList::new(py, [PyInt::new(py, 1_000)]).unbind());
            let (exited_send, exited) = mpsc::channel();
            *EXITED.lock().unwrap() = Some(exited_send);
            let (go, go_receive) = mpsc::channel::<()>();
            let (ready_send, ready) = mpsc::channel::<()>();
            let exiting = thread::spawn(move || {
                SIGNAL_AT_EXIT.with(|_| ());
                Python::attach(|py| {
                    let list = list.bind(py);
                    // More than a batch of replaced ints, retired (the list is shared): the
                    // first full batch gives the thread its mailbox.
                    for i in 0..100 {
                        list.set_item(0, PyInt::new(py, 2_000 + i)).unwrap();
                    }
                });
                ready_send.send(()).unwrap();
                go_receive.recv().unwrap();
                list
            });
            // Detached before the stop: a thread attaching during it would wait for it.
            ready.recv().unwrap();
            // The stopper attaches first and waits detached for this thread to attach.
            let (stopper_attached_send, stopper_attached) = mpsc::channel::<()>();
            let (attached_send, attached) = mpsc::channel::<()>();
            let exit_seen = thread::scope(|s| {
                let stopper = s.spawn(move || {
                    Python::attach(|py| {
                        stopper_attached_send.send(()).unwrap();
                        py.allow_threads(move || attached.recv().unwrap());
                        ftrt_gil::stop_the_world(py, || {});
                    })
                });
                stopper_attached.recv().unwrap();
                let exit_seen = Python::attach(|_| {
                    attached_send.send(()).unwrap();
                    // The stopper now waits for this attached thread.
                    thread::sleep(Duration::from_millis(20));
                    go.send(()).unwrap();
                    // Waiting attached, without a checkpoint: the stop cannot end before this.
                    exited.recv_timeout(Duration::from_secs(2)).is_ok()
                });
                // Joined by hand: the end of the scope does not wait for the stopper's exit,
                // during which the epoch may hand the exited thread's batches to the orphans
                // after the count below has settled them (one CI run counted 100 ints alive).
                stopper.join().expect("the stopper exits cleanly");
                exit_seen
            });
            let list = exiting.join().expect("the thread exits cleanly");
            assert!(
                exit_seen,
                "the exit waited for the stop that waited for the thread waiting for it"
            );
            Python::attach(|py| drop(list.into_bound(py)));
            assert_eq!(
                live_lists_and_ints(),
                before,
                "every replaced int was freed"
            );
        },
    );
}

/// A reference retired after its thread's exit (no thread state: deferred on its own) that then
/// expires on a thread that is not attached is orphaned, and the orphans are adopted at the
/// next quiescent state of an attached thread, even when nothing else was ever retired in the
/// process (nothing else registered the quiescent-state work). It used to stay alive until an
/// explicit `ftrt_object::collect`.
#[cfg(not(ftrt_gil_build))]
#[test]
fn a_reference_retired_after_exit_and_orphaned_is_freed_at_a_quiescent_state() {
    in_child_process(
        "a_reference_retired_after_exit_and_orphaned_is_freed_at_a_quiescent_state",
        || {
            let ints = || Python::attach(|_| live_objects(Kind::Int));
            let list = Python::attach(|py| PyList::new(py, [PyInt::new(py, 1_000)]).unbind());
            let before = ints();
            let late = Python::attach(|py| list.clone_ref(py));
            thread::spawn(move || {
                // After the thread state is gone: retired without a batch.
                at_exit(move || {
                    Python::attach(|py| late.bind(py).set_item(0, PyInt::new(py, 2_000)).unwrap());
                });
                // A thread state, gone before the `at_exit` closure runs.
                Python::attach(|_| {});
            })
            .join()
            .expect("the thread exits cleanly");
            // The replaced int expires here, detached: orphaned.
            Python::attach(|py| {
                py.allow_threads(|| {
                    assert!(
                        ftrt_gil::reclamation::flush_until_caught_up(1024).is_some(),
                        "the flushes gave up before the exited thread's bag expired"
                    );
                })
            });
            // Quiescent states (every 16th checkpoint, and every detach), no `collect`.
            for _ in 0..64 {
                Python::attach(|py| {
                    for _ in 0..32 {
                        let _ = py.check();
                    }
                });
            }
            assert_eq!(ints(), before, "the replaced int was freed");
            drop(list);
        },
    );
}
