//! A thread's state over its life: attaching inside thread-local destructors at thread exit, and
//! the quiescent states that attached threads report to hooks.

mod common;

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::thread;

use ftrt_gil::{is_attached, on_quiescent_state, registered_threads, Python};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in a child process to the name of the test whose scenario it runs.
const SCENARIO_VAR: &str = "FTRT_THREAD_STATES_SCENARIO";

/// Runs `scenario` in a child process (the test named `test_name`, re-run with `SCENARIO_VAR`
/// set) and asserts that the child exited successfully: a scenario that fails by aborting the
/// process fails only its test. Under Miri, which cannot start processes, it runs in-process.
fn in_child_process(test_name: &str, scenario: fn()) {
    // `--exact` with a wrong name runs nothing and still succeeds: the harness's line says the
    // test ran.
    in_child_process_printing(test_name, scenario, "1 passed");
}

/// [`in_child_process`], for a scenario that ends the process itself (so the child's harness
/// reports nothing): the child's output must contain `ran`, which the scenario prints.
fn in_child_process_printing(test_name: &str, scenario: fn(), ran: &str) {
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
    assert!(stdout.contains(ran), "the child ran no test:\n{stdout}");
}

/// Set by `AttachesOnDrop` once its attachment did everything an attached thread does.
static ATTACHED_ON_DROP: AtomicBool = AtomicBool::new(false);

/// Attaches when dropped, as dropping an object handle kept in a thread-local does.
struct AttachesOnDrop;

impl Drop for AttachesOnDrop {
    fn drop(&mut self) {
        Python::attach(|py| {
            assert!(is_attached());
            for _ in 0..32 {
                py.check();
            }
            py.allow_threads(|| assert!(!is_attached()));
            assert!(is_attached());
        });
        assert!(!is_attached());
        ATTACHED_ON_DROP.store(true, Ordering::SeqCst);
    }
}

thread_local! {
    static KEPT: Cell<Option<AttachesOnDrop>> = const { Cell::new(None) };
}

#[test]
fn a_thread_local_destroyed_after_the_thread_state_can_still_attach() {
    in_child_process(
        "a_thread_local_destroyed_after_the_thread_state_can_still_attach",
        || {
            let registered_before = registered_threads();
            thread::spawn(|| {
                // Initialised before the thread attaches, so destroyed after its thread state
                // (and after every other thread-local the runtime uses).
                KEPT.set(Some(AttachesOnDrop));
                Python::attach(|py| {
                    for _ in 0..32 {
                        py.check();
                    }
                    py.allow_threads(|| ());
                });
            })
            .join()
            .expect("the thread exits cleanly");
            assert!(ATTACHED_ON_DROP.load(Ordering::SeqCst));
            assert_eq!(
                registered_threads(),
                registered_before,
                "an attachment after the thread state is gone does not register the thread again"
            );
        },
    );
}

#[test]
fn a_thread_local_destroyed_before_the_thread_state_can_attach() {
    in_child_process(
        "a_thread_local_destroyed_before_the_thread_state_can_attach",
        || {
            let registered_before = registered_threads();
            thread::spawn(|| {
                Python::attach(|py| {
                    // Initialised while attached, so destroyed before the thread state.
                    KEPT.set(Some(AttachesOnDrop));
                    py.check();
                });
            })
            .join()
            .expect("the thread exits cleanly");
            assert!(ATTACHED_ON_DROP.load(Ordering::SeqCst));
            assert_eq!(registered_threads(), registered_before);
        },
    );
}

#[test]
fn quiescent_state_hooks_run_at_every_sixteenth_checkpoint_and_at_every_detach() {
    common::hook_runs();
    // The GIL build has no quiescent states: nothing is reclaimed late there.
    let per_quiescent_state = usize::from(!cfg!(feature = "gil"));
    // A fresh thread, so its checkpoint count starts at zero.
    thread::spawn(move || {
        Python::attach(|py| {
            assert_eq!(common::hook_runs(), 0, "attaching is not a quiescent state");
            for _ in 0..15 {
                py.check();
            }
            assert_eq!(common::hook_runs(), 0);
            py.check();
            assert_eq!(
                common::hook_runs(),
                per_quiescent_state,
                "the 16th checkpoint"
            );
            py.allow_threads(|| {
                assert_eq!(common::hook_runs(), 2 * per_quiescent_state, "detaching");
            });
            for _ in 0..16 {
                py.check();
            }
            assert_eq!(
                common::hook_runs(),
                3 * per_quiescent_state,
                "the 32nd checkpoint"
            );
        });
        assert_eq!(
            common::hook_runs(),
            4 * per_quiescent_state,
            "the detach at the end of attach"
        );
    })
    .join()
    .unwrap();
}

thread_local! {
    /// Set to make [`panic_once_when_armed`] panic at its next run on this thread.
    static PANIC_IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

fn panic_once_when_armed() {
    if PANIC_IN_HOOK.replace(false) {
        panic!("a quiescent-state hook panicked");
    }
}

fn register_panic_once_when_armed() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| on_quiescent_state(panic_once_when_armed));
}

/// A hook that panics as `allow_threads` detaches unwinds out of it with the thread still
/// attached, and still pinned, as an attached thread is (its reads rely on the pin).
#[cfg(not(feature = "gil"))]
#[test]
fn a_panicking_quiescent_state_hook_in_allow_threads_leaves_the_thread_attached_and_pinned() {
    register_panic_once_when_armed();
    thread::spawn(|| {
        Python::attach(|py| {
            PANIC_IN_HOOK.set(true);
            let detached =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| py.allow_threads(|| ())));
            PANIC_IN_HOOK.set(false);
            assert!(detached.is_err(), "the hook's panic");
            assert!(is_attached());
            assert!(ftrt_gil::local::attach_pinned(), "attached without its pin");
        })
    })
    .join()
    .unwrap();
}

/// A hook that panics at the detach ending an attachment does not keep the thread attached nor
/// pinned: the panic unwinds out of `attach`, and the thread is detached, unpinned and out of the
/// world, so a stop does not wait for it. (The detach's leave came after the hooks, and a panic
/// skipped it: the thread stayed attached, every later `attach` on it took the re-entrant shortcut,
/// and stops waited for it for ever.)
#[test]
fn a_panicking_quiescent_state_hook_at_the_end_of_an_attach_still_detaches() {
    register_panic_once_when_armed();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let broken = thread::spawn(move || {
        let ended = std::panic::catch_unwind(|| Python::attach(|_| PANIC_IN_HOOK.set(true)));
        PANIC_IN_HOOK.set(false);
        // The GIL build has no quiescent states: its hooks never run.
        assert_eq!(ended.is_err(), !cfg!(feature = "gil"), "the hook's panic");
        ready_tx
            .send((is_attached(), ftrt_gil::local::attach_pinned()))
            .unwrap();
        // Stays alive, detached, while the main thread stops the world.
        done_rx.recv().unwrap();
    });
    let (attached, pinned) = ready_rx.recv().unwrap();
    assert!(!attached, "the attachment ended with the panic");
    // The pin went with the attachment (it stayed, and held reclamation back, before).
    assert!(!pinned, "the attach pin outlived the attachment");
    let stopped = Python::attach(|py| {
        ftrt_gil::try_stop_the_world(py, Some(std::time::Duration::from_secs(10)), || ())
    });
    done_tx.send(()).unwrap();
    broken.join().unwrap();
    assert!(stopped.is_ok(), "a stop waited for the thread: {stopped:?}");
}

/// A thread that unwinds runs no quiescent-state hook at its detaches: one that panicked there
/// would panic inside a drop during unwinding, which aborts the process. Here the hook is armed
/// to panic, and the thread unwinds out of `attach`, then through checkpoints and an
/// `allow_threads` a destructor runs while the thread unwinds: the panic is the closure's,
/// caught, and the thread goes on. A detach with no panic under way runs it. (In a child
/// process: an abort fails only this test.)
#[test]
fn an_unwinding_thread_runs_no_quiescent_state_hook() {
    in_child_process("an_unwinding_thread_runs_no_quiescent_state_hook", || {
        register_panic_once_when_armed();
        let unwound = std::panic::catch_unwind(|| {
            Python::attach(|_| {
                PANIC_IN_HOOK.set(true);
                panic!("the closure's panic");
            })
        });
        let message = unwound.expect_err("the closure panicked");
        assert_eq!(message.downcast_ref(), Some(&"the closure's panic"));
        assert!(!is_attached());

        /// Reaches 16 checkpoints (one of them repins: a quiescent state) and detaches in its
        /// drop, as a destructor that runs long and then blocks does.
        struct QuiescentOnDrop<'py>(Python<'py>);
        impl Drop for QuiescentOnDrop<'_> {
            fn drop(&mut self) {
                for _ in 0..16 {
                    self.0.check();
                }
                self.0.allow_threads(|| ());
            }
        }
        Python::attach(|py| {
            assert!(PANIC_IN_HOOK.get(), "the hook ran as attach unwound");
            let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _quiescent = QuiescentOnDrop(py);
                panic!("the closure's panic");
            }));
            assert!(unwound.is_err());
            assert!(is_attached());
            assert!(
                PANIC_IN_HOOK.get(),
                "the hook ran at a checkpoint or a detach while the thread unwound"
            );
            // A detach with no panic under way runs it (but for the `gil` build, which has
            // no quiescent states).
            let ran =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| py.allow_threads(|| ())));
            PANIC_IN_HOOK.set(false);
            assert_eq!(ran.is_err(), !cfg!(feature = "gil"), "the hook's panic");
        });
    });
}

/// More keys than [`ftrt_gil::local::MAX_KEYS`]: those first used after the slots ran out
/// answer `None`, as on a thread without a block, instead of panicking (the object model first
/// uses its keys inside writes, which must not unwind half-way); the others keep their values.
#[test]
fn keys_beyond_the_last_slot_answer_none_instead_of_panicking() {
    use ftrt_gil::local::{Key, MAX_KEYS};
    const KEYS: usize = MAX_KEYS + 2;
    static MANY: [Key<Cell<usize>>; KEYS] = [const { Key::new(|| Cell::new(0)) }; KEYS];
    Python::attach(|py| {
        let found: Vec<bool> = MANY
            .iter()
            .enumerate()
            .map(|(i, key)| key.with(py, |value| value.map(|value| value.set(i + 1)).is_some()))
            .collect();
        let with_slots = found.iter().filter(|&&found| found).count();
        assert!(with_slots <= MAX_KEYS, "{with_slots} keys got slots");
        assert!(!found[KEYS - 1], "the last key found a slot");
        for (i, key) in MANY.iter().enumerate().filter(|(i, _)| found[*i]) {
            assert_eq!(key.with(py, |value| value.map(Cell::get)), Some(i + 1));
        }
    });
}

// The thread state as a structure: one block per thread, one id space, one exit sequence.

/// One id space: the runtime's id for a thread is the owner id its objects' biased counts
/// record, and the registry lists the thread under it.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn the_owner_id_of_a_threads_objects_is_its_runtime_thread_id() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::RefCount;

    thread::spawn(|| {
        Python::attach(|py| {
            let id = py.thread_id().expect("an attached thread has an id");
            // SAFETY: used at once, attached.
            let count = <BuildCount as RefCount>::new(unsafe { py.new_object_token() });
            assert_eq!(count.owner_id(), Some(id));
            assert!(ftrt_gil::threads().iter().any(|info| info.id == id));
        });
    })
    .join()
    .unwrap();
}

#[test]
fn runtime_thread_ids_are_never_reused() {
    let ids: Vec<u32> = (0..8)
        .map(|_| {
            thread::spawn(|| Python::attach(|py| py.thread_id().expect("an id")))
                .join()
                .unwrap()
        })
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an id was handed out twice: {ids:?}"
    );
}

/// The exit sequence retires the thread's biased counts (so its objects' counts become exact
/// on other threads) and takes the thread out of the registry, under the same id.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn thread_exit_retires_the_biased_counts_and_leaves_the_registry() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::RefCount;

    let (count, id) = thread::spawn(|| {
        Python::attach(|py| {
            // SAFETY: used at once, attached.
            let token = unsafe { py.new_object_token() };
            let count = Box::new(<BuildCount as RefCount>::new(token));
            (count, py.thread_id().expect("an id"))
        })
    })
    .join()
    .unwrap();
    assert!(!ftrt_gil::threads().iter().any(|info| info.id == id));
    // The owner has retired: this thread may merge on its behalf, and the count is exact.
    assert!(count.is_unique());
    assert_eq!(count.owner_id(), None);
}

/// The object model's sections go on the thread's stack, which the thread state holds and
/// reaches through the token, beside `ftrt-lock`'s thread-local sections: one stack, which
/// `ftrt_lock::section::depth` sees whole, and which a detach suspends whole (and resumes as
/// one stack resumes, innermost first).
#[test]
#[cfg(not(feature = "gil"))]
fn object_sections_share_the_threads_stack_with_ftrt_lock_sections_and_detaching_suspends_all() {
    use ftrt_lock::section::{self as lock_section, SectionDepth};
    use ftrt_lock::RawObjectLock;

    let (user, object) = (RawObjectLock::new(), RawObjectLock::new());
    Python::attach(|py| {
        lock_section::with(&user, || {
            ftrt_gil::section::with(py, &object, || {
                let one_stack = SectionDepth {
                    open: 2,
                    active: 2,
                    elided: 0,
                };
                assert_eq!(lock_section::depth(), one_stack);
                py.allow_threads(|| {
                    assert!(!user.is_locked());
                    assert!(!object.is_locked());
                });
                // The innermost section resumes; the outer one as it becomes innermost.
                assert!(object.is_locked());
                assert!(!user.is_locked());
            });
            assert!(user.is_locked());
        });
    });
}

/// A thread's counting token (`count_token`, its owner id kept in a thread-local) owns its
/// objects while the thread is registered, and nothing once its exit has retired its counts:
/// an object it made, counted in a thread-local destructor after the exit, is counted on the
/// shared side (the retired owner's local count may be merged by any thread by then).
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn the_counting_token_owns_the_threads_objects_until_its_exit_retires_them() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::{Counting, RefCount};

    static AFTER_EXIT: std::sync::Mutex<Option<Counting>> = std::sync::Mutex::new(None);

    struct CountsAtExit(Cell<Option<Box<BuildCount>>>);
    impl Drop for CountsAtExit {
        fn drop(&mut self) {
            let count = self.0.take().expect("made by the thread");
            // SAFETY: used at once, attached.
            let counted = Python::attach(|py| count.incref_counting(unsafe { py.count_token() }));
            *AFTER_EXIT.lock().unwrap() = Some(counted);
        }
    }
    thread_local! {
        static KEPT: CountsAtExit = const { CountsAtExit(Cell::new(None)) };
    }
    in_child_process(
        "the_counting_token_owns_the_threads_objects_until_its_exit_retires_them",
        || {
            thread::spawn(|| {
                // Touched before the thread attaches, so destroyed after its thread state.
                KEPT.with(|_| ());
                Python::attach(|py| {
                    // SAFETY: used at once, attached.
                    let token = unsafe { py.new_object_token() };
                    let count = Box::new(<BuildCount as RefCount>::new(token));
                    assert_eq!(count.owner_id(), py.thread_id());
                    // SAFETY: used at once, attached.
                    let token = unsafe { py.count_token() };
                    assert_eq!(count.incref_counting(token), Counting::Local);
                    KEPT.with(|kept| kept.0.set(Some(count)));
                });
            })
            .join()
            .unwrap();
            assert_eq!(*AFTER_EXIT.lock().unwrap(), Some(Counting::Shared));
        },
    );
}

/// After its exit a thread attaches through the one fallback: no id, not registered again.
#[test]
fn a_thread_attached_after_its_exit_has_no_id() {
    in_child_process("a_thread_attached_after_its_exit_has_no_id", || {
        struct Probe;
        impl Drop for Probe {
            fn drop(&mut self) {
                Python::attach(|py| assert_eq!(py.thread_id(), None));
                // Its sections go to `ftrt-lock`'s thread-local stack (or the stand-in for it),
                // and still lock in the free-threaded builds.
                let lock = ftrt_lock::RawObjectLock::new();
                Python::attach(|py| {
                    ftrt_gil::section::with_if(py, Some(&lock), || {
                        assert_eq!(lock.is_locked(), ftrt_gil::BUILD != "gil");
                    });
                });
                assert!(!lock.is_locked());
                ATTACHED_ON_DROP.store(true, Ordering::SeqCst);
            }
        }
        thread_local! {
            static PROBE: Cell<Option<Probe>> = const { Cell::new(None) };
        }
        thread::spawn(|| {
            // Initialised before the thread attaches, so destroyed after its thread state.
            PROBE.set(Some(Probe));
            Python::attach(|py| assert!(py.thread_id().is_some()));
        })
        .join()
        .unwrap();
        assert!(ATTACHED_ON_DROP.load(Ordering::SeqCst));
    });
}

/// A per-thread value kept in the thread state: counts its drops, and checks that it is dropped
/// in the exit sequence, after the block is unreachable (its own key answers `None`) and while
/// the thread can still attach.
struct LocalValue;

static LOCAL_DROPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static LOCAL: ftrt_gil::local::Key<LocalValue> = ftrt_gil::local::Key::new(|| LocalValue);

impl Drop for LocalValue {
    fn drop(&mut self) {
        assert!(LOCAL.with_current(|value| value.is_none()));
        Python::attach(|py| assert!(LOCAL.with(py, |value| value.is_none())));
        LOCAL_DROPS.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_value_kept_in_the_thread_state_is_made_once_per_thread_and_dropped_at_its_exit() {
    let before = LOCAL_DROPS.load(Ordering::SeqCst);
    let threads: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(|| {
                Python::attach(|py| {
                    let first = LOCAL.with(py, |value| std::ptr::from_ref(value.unwrap()));
                    let again = LOCAL.with(py, |value| std::ptr::from_ref(value.unwrap()));
                    assert_eq!(first, again, "one value per thread");
                });
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(LOCAL_DROPS.load(Ordering::SeqCst), before + 3);
}

/// The attach pin that the object model's lock-free reads lean on instead of pinning: held
/// exactly while the thread is attached in a free-threaded build, given up for the body of
/// `allow_threads` and after the detach, never held in the `gil` build.
#[test]
fn the_attach_pin_is_held_while_attached_and_only_then() {
    use ftrt_gil::local::attach_pinned;
    let free_threaded = !cfg!(feature = "gil");
    thread::spawn(move || {
        assert!(!attach_pinned(), "before the first attach");
        Python::attach(|py| {
            assert_eq!(attach_pinned(), free_threaded);
            py.allow_threads(|| assert!(!attach_pinned(), "inside allow_threads"));
            assert_eq!(attach_pinned(), free_threaded, "after allow_threads");
            for _ in 0..64 {
                py.check();
            }
            assert_eq!(attach_pinned(), free_threaded, "across repins");
        });
        assert!(!attach_pinned(), "after the detach");
    })
    .join()
    .unwrap();
}

/// Aborts the process if the thread still claims its attach pin when this is dropped; prints
/// [`PIN_CHECKED`] otherwise.
struct ChecksTheAttachPinOnDrop;

/// What the check prints when the pin was given up.
const PIN_CHECKED: &str = "no attach pin claimed after the thread state";

impl Drop for ChecksTheAttachPinOnDrop {
    fn drop(&mut self) {
        if ftrt_gil::local::attach_pinned() {
            eprintln!("the attach pin is claimed after the thread state is gone");
            std::process::abort();
        }
        println!("{PIN_CHECKED}");
    }
}

thread_local! {
    static CHECKED_AT_EXIT: Cell<Option<ChecksTheAttachPinOnDrop>> = const { Cell::new(None) };
}

/// A thread that exits while attached (`process::exit` inside `Python::attach` runs its
/// thread-local destructors, the thread state's among them) loses its attach pin with its
/// state: a thread-local destroyed afterwards must not read as pinned, or its lock-free reads
/// would take no pin at all. (The process exits inside the scenario, so the child's test
/// harness reports nothing: the check's own line says it ran.)
#[test]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_thread_that_exits_attached_gives_up_its_attach_pin_with_its_state() {
    in_child_process_printing(
        "a_thread_that_exits_attached_gives_up_its_attach_pin_with_its_state",
        || {
            thread::spawn(|| {
                // Initialised before the thread attaches, so destroyed after its thread state.
                CHECKED_AT_EXIT.set(Some(ChecksTheAttachPinOnDrop));
                Python::attach(|_| std::process::exit(0));
            })
            .join()
            .expect("the process exits first");
        },
        PIN_CHECKED,
    );
}

/// The lock of a critical section its thread elided, and exits inside.
#[cfg(not(feature = "gil"))]
static ELIDED_AT_EXIT: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();

/// What the check prints when the exit left the elided section's lock alone.
#[cfg(not(feature = "gil"))]
const ELIDED_LOCK_UNTOUCHED: &str = "the exit took no lock for the section it elided";

/// Aborts the process if [`ELIDED_AT_EXIT`] is locked when this is dropped; prints
/// [`ELIDED_LOCK_UNTOUCHED`] otherwise.
#[cfg(not(feature = "gil"))]
struct ChecksTheElidedLockOnDrop;

#[cfg(not(feature = "gil"))]
impl Drop for ChecksTheElidedLockOnDrop {
    fn drop(&mut self) {
        if ELIDED_AT_EXIT.is_locked() {
            eprintln!("the exit took the lock of a section that was elided when it began");
            std::process::abort();
        }
        println!("{ELIDED_LOCK_UNTOUCHED}");
    }
}

#[cfg(not(feature = "gil"))]
thread_local! {
    static CHECKED_LOCK_AT_EXIT: Cell<Option<ChecksTheElidedLockOnDrop>> =
        const { Cell::new(None) };
}

/// A thread that exits (`process::exit`) inside a critical section it elided, holding the world
/// alone with lock elision on, leaves that section as it stands. The lock may be gone by then,
/// with a thread-local first used inside the attachment (destroyed before the thread state):
/// the end of the attachment must not take it, as giving up the elision at an ordinary detach
/// takes the locks of the sections then open. (A static lock stands in here, so that taking it
/// shows instead of writing freed memory.)
#[test]
#[cfg(not(feature = "gil"))]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it() {
    in_child_process_printing(
        "a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(|_| (), false),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// As [`a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it`], with the section
/// begun inside the thread's own stop of the world, whose exit leaves the thread attached (the
/// stop lasts): letting go of the claim on the thread's stack with its state must not end the
/// elision by taking the lock.
#[test]
#[cfg(not(feature = "gil"))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_elided_section_in_the_threads_own_stop_takes_no_lock_for_it() {
    in_child_process_printing(
        "an_exit_inside_an_elided_section_in_the_threads_own_stop_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(|_| (), true),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// The scenario of the tests above and below: on a new thread that holds the world alone with
/// lock elision on, runs `before_the_section`, then exits inside a section on
/// [`ELIDED_AT_EXIT`] (begun inside a stop of the world of its own if `in_its_own_stop`), which
/// [`ChecksTheElidedLockOnDrop`] checks after the thread state is gone.
#[cfg(not(feature = "gil"))]
fn exit_inside_a_section_it_elided(before_the_section: fn(Python<'_>), in_its_own_stop: bool) {
    thread::spawn(move || {
        // Initialised before the thread attaches, so destroyed after its thread state.
        CHECKED_LOCK_AT_EXIT.set(Some(ChecksTheElidedLockOnDrop));
        ftrt_gil::set_lock_elision(true);
        Python::attach(|py| {
            for _ in 0..64 {
                py.check();
            }
            before_the_section(py);
            assert!(py.holds_world_alone(), "no other thread is attached");
            let exit_in_the_section =
                || ftrt_gil::section::with(py, &ELIDED_AT_EXIT, || std::process::exit(0));
            if in_its_own_stop {
                ftrt_gil::stop_the_world(py, exit_in_the_section)
            } else {
                exit_in_the_section()
            }
        });
    })
    .join()
    .expect("the process exits first");
}

/// A release that detaches (as a destructor that blocks may), run by the merge at a thread's
/// exit; frees the count.
///
/// # Safety
/// `count` is a boxed count no one else uses.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
unsafe fn release_detaching(count: std::ptr::NonNull<ftrt_refcount::BiasedCount>) {
    Python::attach(|py| py.allow_threads(|| ()));
    // SAFETY: boxed below, and this was its last reference.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
}

/// As [`a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it`], with a drop
/// another thread queued to the exiting one, whose release detaches while the exit merges it:
/// the detach suspends the thread's sections and its end resumes the innermost, which must not
/// be the abandoned one.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_elided_section_whose_merge_detaches_takes_no_lock_for_it() {
    in_child_process_printing(
        "an_exit_inside_an_elided_section_whose_merge_detaches_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(queue_a_drop_whose_release_detaches, false),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// Makes a count owned by `py`'s thread whose last reference is a drop another thread queued
/// to it, with [`release_detaching`]: the merge at the thread's exit runs that release.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn queue_a_drop_whose_release_detaches(py: Python<'_>) {
    queue_a_drop_released_by(py, release_detaching);
}

/// Makes a count owned by `py`'s thread whose last reference is a drop another thread queued
/// to it, with `release` (which frees the boxed count): the merge at the thread's exit runs it.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn queue_a_drop_released_by(py: Python<'_>, release: ftrt_refcount::biased::Release) {
    // SAFETY: used at once, attached.
    let owner = unsafe { py.count_token() };
    let count = Box::new(ftrt_refcount::BiasedCount::new_for(owner));
    count.incref();
    let count = std::ptr::NonNull::from(Box::leak(count));
    let address = count.as_ptr() as usize;
    thread::spawn(move || {
        let count =
            std::ptr::NonNull::new(address as *mut ftrt_refcount::BiasedCount).expect("not null");
        // SAFETY: one of the two references; queued to the owner.
        unsafe { ftrt_refcount::BiasedCount::decref(count, release) };
    })
    .join()
    .expect("the drop is queued");
    // SAFETY: the owner's reference, not the last (the queued one is merged at the exit).
    unsafe { ftrt_refcount::BiasedCount::decref(count, release) };
}

/// The lock of an `ftrt_lock` section its thread exits inside.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
static HELD_AT_EXIT: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();

/// Set where a detach run by the exit found [`HELD_AT_EXIT`] unlocked.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
static HELD_LOCK_GIVEN_UP: AtomicBool = AtomicBool::new(false);

/// What the check prints when the exit left the held section's lock alone.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
const HELD_LOCK_UNTOUCHED: &str = "the exit left the held section's lock alone";

/// A release that detaches, and notes whether [`HELD_AT_EXIT`] was given up meanwhile; frees
/// the count.
///
/// # Safety
/// `count` is a boxed count no one else uses.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
unsafe fn release_detaching_beside_the_held_lock(
    count: std::ptr::NonNull<ftrt_refcount::BiasedCount>,
) {
    Python::attach(|py| {
        py.allow_threads(|| {
            if !HELD_AT_EXIT.is_locked() {
                HELD_LOCK_GIVEN_UP.store(true, Ordering::SeqCst);
            }
        })
    });
    // SAFETY: boxed by `queue_a_drop_released_by`, and this was its last reference.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
}

/// Prints [`HELD_LOCK_UNTOUCHED`] when dropped, unless the lock was given up (then aborts).
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
struct ChecksTheHeldLockOnDrop;

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
impl Drop for ChecksTheHeldLockOnDrop {
    fn drop(&mut self) {
        if HELD_LOCK_GIVEN_UP.load(Ordering::SeqCst) || !HELD_AT_EXIT.is_locked() {
            eprintln!("a detach at the exit gave up the lock of a section the exit left open");
            std::process::abort();
        }
        println!("{HELD_LOCK_UNTOUCHED}");
    }
}

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
thread_local! {
    static CHECKED_HELD_LOCK_AT_EXIT: Cell<Option<ChecksTheHeldLockOnDrop>> =
        const { Cell::new(None) };
}

/// A thread that exits (`process::exit`) attached, inside an `ftrt_lock` section it holds,
/// leaves that section's lock as it stands, held, through whatever the exit still runs: here a
/// release, run by the exit's merge, that detaches, which suspends the thread's sections and
/// would unlock a lock that may be gone with a thread-local (a static one stands in here). The
/// thread's `ftrt_lock` stack is made before its thread state, so that it outlasts the state's
/// exit whatever holds it.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_ftrt_lock_section_leaves_its_lock_alone_through_a_detach_the_exit_runs() {
    in_child_process_printing(
        "an_exit_inside_an_ftrt_lock_section_leaves_its_lock_alone_through_a_detach_the_exit_runs",
        || {
            thread::spawn(|| {
                // Initialised first, so destroyed after everything below.
                CHECKED_HELD_LOCK_AT_EXIT.set(Some(ChecksTheHeldLockOnDrop));
                ftrt_lock::section::with(&ftrt_lock::RawObjectLock::new(), || ());
                Python::attach(|py| {
                    queue_a_drop_released_by(py, release_detaching_beside_the_held_lock);
                    ftrt_lock::section::with(&HELD_AT_EXIT, || std::process::exit(0));
                });
            })
            .join()
            .expect("the process exits first");
        },
        HELD_LOCK_UNTOUCHED,
    );
}

/// Set while [`AttachesAfterAnExitAttached`]'s attachment runs.
static INSIDE_LATE_ATTACH: AtomicBool = AtomicBool::new(false);

/// What the late attachment prints when no stop of the world ran during it.
const LATE_ATTACH_STOPPED: &str = "the late attachment held up a stop of the world";

/// Asks a stop of the world to run from inside the attachment it makes when dropped (as a handle
/// kept in a thread-local does), and waits for what the stop saw.
struct AttachesAfterAnExitAttached {
    go: std::sync::mpsc::Sender<()>,
    seen: std::sync::mpsc::Receiver<bool>,
}

impl Drop for AttachesAfterAnExitAttached {
    fn drop(&mut self) {
        let seen_early = Python::attach(|_| {
            INSIDE_LATE_ATTACH.store(true, Ordering::SeqCst);
            self.go.send(()).expect("the stopper waits");
            // Free-threaded, until the stop is asked for, with no deadline: a late request must
            // still find this attachment. A stop that does not wait for this attachment may
            // come and go between two looks: it has then reported what it saw.
            #[cfg(not(feature = "gil"))]
            let seen_early = loop {
                if ftrt_gil::stop_requested() {
                    break None;
                }
                match self.seen.try_recv() {
                    Ok(inside) => break Some(inside),
                    // The stopper is gone without a word (it failed): nothing will come.
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        break None;
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => thread::yield_now(),
                }
            };
            // Under the GIL: until the stopper waits for it (its attach, before the stop), or
            // has reported: a stop that did not wait (this attachment nested without taking the
            // GIL) reports at once.
            #[cfg(feature = "gil")]
            let seen_early = loop {
                if ftrt_gil::runtime_gil().waiting() > 0 {
                    break None;
                }
                match self.seen.try_recv() {
                    Ok(inside) => break Some(inside),
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => break None,
                    Err(std::sync::mpsc::TryRecvError::Empty) => thread::yield_now(),
                }
            };
            // Long enough for a stop that does not wait for this attachment to run inside it.
            thread::sleep(std::time::Duration::from_millis(50));
            INSIDE_LATE_ATTACH.store(false, Ordering::SeqCst);
            seen_early
        });
        let seen = seen_early.map_or_else(
            || self.seen.recv_timeout(std::time::Duration::from_secs(20)),
            Ok,
        );
        match seen {
            Ok(false) => println!("{LATE_ATTACH_STOPPED}"),
            Ok(true) => {
                eprintln!("a stop of the world ran while an exiting thread was attached");
                std::process::abort();
            }
            Err(e) => {
                eprintln!("the stop did not report: {e}");
                std::process::abort();
            }
        }
    }
}

thread_local! {
    static LATE_ATTACH: Cell<Option<AttachesAfterAnExitAttached>> = const { Cell::new(None) };
}

/// A thread that exits while attached (`process::exit` inside `Python::attach`) ends that
/// attachment with its state: it leaves the world, so that what its later thread-local
/// destructors do attached is seen by the other threads. Left marked attached, the thread
/// attached again in those destructors without entering the world (an attached thread's nested
/// attach), and a stop of the world on another thread ran beside it, its collector walking
/// objects that the exiting thread freed.
#[test]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_thread_that_exits_attached_leaves_the_world_before_its_later_destructors_attach() {
    in_child_process_printing(
        "a_thread_that_exits_attached_leaves_the_world_before_its_later_destructors_attach",
        || {
            let (go, wait_go) = std::sync::mpsc::channel();
            let (seen_tx, seen) = std::sync::mpsc::channel();
            thread::spawn(move || {
                wait_go.recv().expect("the exiting thread asks");
                Python::attach(|py| {
                    let inside =
                        ftrt_gil::stop_the_world(py, || INSIDE_LATE_ATTACH.load(Ordering::SeqCst));
                    seen_tx.send(inside).expect("the exiting thread waits");
                });
            });
            thread::spawn(move || {
                // Initialised before the thread attaches, so destroyed after its thread state.
                LATE_ATTACH.set(Some(AttachesAfterAnExitAttached { go, seen }));
                Python::attach(|_| std::process::exit(0));
            })
            .join()
            .expect("the process exits first");
        },
        LATE_ATTACH_STOPPED,
    );
}

/// What the attachment made at exit prints once it has run.
const ATTACHED_INSIDE_OWN_STOP: &str = "attached at exit, inside the thread's own stop";

/// Attaches when dropped, and says so.
struct AttachesAndPrints;

impl Drop for AttachesAndPrints {
    fn drop(&mut self) {
        Python::attach(|py| py.check());
        println!("{ATTACHED_INSIDE_OWN_STOP}");
    }
}

thread_local! {
    static ATTACH_AT_EXIT: Cell<Option<AttachesAndPrints>> = const { Cell::new(None) };
}

/// A thread that exits inside its own stop of the world stays attached through its exit: the
/// stop never ends (its guard is on a frame that never runs again), so an attachment made by a
/// later thread-local destructor must nest inside it rather than wait for the stop to end.
#[test]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_thread_that_exits_inside_its_own_stop_of_the_world_attaches_again_at_exit() {
    in_child_process_printing(
        "a_thread_that_exits_inside_its_own_stop_of_the_world_attaches_again_at_exit",
        || {
            // A hang is the failure: the watchdog ends it.
            thread::spawn(|| {
                thread::sleep(std::time::Duration::from_secs(20));
                eprintln!("the exit hung");
                std::process::abort();
            });
            thread::spawn(|| {
                // Initialised before the thread attaches, so destroyed after its thread state.
                ATTACH_AT_EXIT.set(Some(AttachesAndPrints));
                Python::attach(|py| ftrt_gil::stop_the_world(py, || std::process::exit(0)));
            })
            .join()
            .expect("the process exits first");
        },
        ATTACHED_INSIDE_OWN_STOP,
    );
}

/// A deferred function that the checkpoint's flush runs may detach and re-attach (anything a
/// program defers on the epoch runs wherever a collection finds it due): the checkpoint holds
/// no borrow of the thread's pin across the flush. (It flushed through that borrow, and the
/// detach's unpin inside the deferred function panicked with the pin already borrowed.)
#[cfg(not(feature = "gil"))]
#[test]
fn a_deferred_function_run_by_a_checkpoints_flush_may_detach() {
    // Alone in its process: another test's thread pinned would hold the epoch back, and one
    // collecting would run the function on its own thread.
    in_child_process(
        "a_deferred_function_run_by_a_checkpoints_flush_may_detach",
        deferred_function_run_by_a_checkpoints_flush_detaches,
    );
}

#[cfg(not(feature = "gil"))]
fn deferred_function_run_by_a_checkpoints_flush_detaches() {
    static RAN: AtomicBool = AtomicBool::new(false);
    Python::attach(|py| {
        crossbeam_epoch::pin().defer(|| {
            Python::attach(|py| py.allow_threads(|| ()));
            RAN.store(true, Ordering::SeqCst);
        });
        // Checkpoints repin, advance the epoch and flush, until the function is due and runs.
        for _ in 0..1_000_000 {
            py.check();
            if RAN.load(Ordering::SeqCst) {
                break;
            }
        }
    });
    assert!(RAN.load(Ordering::SeqCst), "the deferred function ran");
}

/// A thread that waits for the lock of a section on the thread state's stack (an object's
/// section), with no read open, waits unpinned: the wait is a quiescent state, as a detach is,
/// so what other threads retire meanwhile is freed without waiting for it. (It waited pinned,
/// and held back all reclamation until it had the lock: the memory `list-replace-shared`
/// measured.)
#[cfg(not(feature = "gil"))]
#[test]
#[cfg_attr(
    miri,
    ignore = "needs a process of its own: another test's deferred function or pin"
)]
fn a_thread_waiting_for_a_sections_lock_does_not_hold_back_reclamation() {
    // Alone in its process: another test's pinned thread would hold the epoch back.
    in_child_process(
        "a_thread_waiting_for_a_sections_lock_does_not_hold_back_reclamation",
        || {
            assert!(
                freed_while_a_thread_waits_for_a_section(false),
                "what another thread retired waited for the section's waiter to get the lock"
            )
        },
    );
}

/// With a read open, the waiter keeps its pin for the wait: the read may hold what other
/// threads retire meanwhile.
#[cfg(not(feature = "gil"))]
#[test]
#[cfg_attr(
    miri,
    ignore = "needs a process of its own: another test's deferred function or pin"
)]
fn a_thread_waiting_for_a_sections_lock_with_a_read_open_stays_pinned() {
    in_child_process(
        "a_thread_waiting_for_a_sections_lock_with_a_read_open_stays_pinned",
        || {
            assert!(
                !freed_while_a_thread_waits_for_a_section(true),
                "what another thread retired was freed under a waiter's open read"
            )
        },
    );
}

/// Whether a function another thread defers on the epoch runs while a thread (with a read open
/// or not) waits for a section's lock: the other thread checkpoints and flushes for a while
/// (until it runs, or for two seconds with a read open, ten without), then the lock goes.
#[cfg(not(feature = "gil"))]
fn freed_while_a_thread_waits_for_a_section(read_open: bool) -> bool {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use ftrt_lock::RawObjectLock;

    static LOCK: RawObjectLock = RawObjectLock::new();
    static FREED: AtomicBool = AtomicBool::new(false);
    // Held by this thread, which is not attached, for as long as the waiter must wait.
    LOCK.lock();
    let (pinned, waiter_pinned) = mpsc::channel();
    let waiter = thread::spawn(move || {
        Python::attach(|py| {
            let read = read_open.then(ftrt_gil::local::OpenRead::new);
            pinned.send(()).unwrap();
            // The pin given up for the wait is back by the time the body runs.
            ftrt_gil::section::with(py, &LOCK, || assert!(ftrt_gil::local::attach_pinned()));
            drop(read);
        })
    });
    // From here the waiter is pinned, at an epoch no later than the retirement's.
    waiter_pinned.recv().unwrap();
    let patience = Duration::from_secs(if read_open { 2 } else { 10 });
    let freed = thread::spawn(move || {
        Python::attach(|py| {
            crossbeam_epoch::pin().defer(|| FREED.store(true, Ordering::SeqCst));
            let deadline = Instant::now() + patience;
            while !FREED.load(Ordering::SeqCst) && Instant::now() < deadline {
                // Repins at every 16th, and flushes: the epoch advances past every thread that
                // is not pinned at an older one.
                py.check();
                crossbeam_epoch::pin().flush();
            }
            FREED.load(Ordering::SeqCst)
        })
    })
    .join()
    .unwrap();
    // SAFETY: taken by this thread above, and not released since.
    unsafe { LOCK.unlock() };
    waiter.join().unwrap();
    freed
}
