//! Attaching at thread exit: thread-local destructors that attach before or after the thread
//! state goes, the value and the pin kept in the thread state, and threads that exit attached.

use super::*;

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
        "at_exit::a_thread_local_destroyed_after_the_thread_state_can_still_attach",
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
        "at_exit::a_thread_local_destroyed_before_the_thread_state_can_attach",
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
        "at_exit::a_thread_that_exits_attached_gives_up_its_attach_pin_with_its_state",
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
        "at_exit::a_thread_that_exits_attached_leaves_the_world_before_its_later_destructors_attach",
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
        "at_exit::a_thread_that_exits_inside_its_own_stop_of_the_world_attaches_again_at_exit",
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
