//! Quiescent states: the hooks that attached threads report to, and waits for a section's
//! lock, which are quiescent.

use super::*;

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
    in_child_process(
        "quiescence::an_unwinding_thread_runs_no_quiescent_state_hook",
        || {
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
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    py.allow_threads(|| ())
                }));
                PANIC_IN_HOOK.set(false);
                assert_eq!(ran.is_err(), !cfg!(feature = "gil"), "the hook's panic");
            });
        },
    );
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
        "quiescence::a_deferred_function_run_by_a_checkpoints_flush_may_detach",
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
        "quiescence::a_thread_waiting_for_a_sections_lock_does_not_hold_back_reclamation",
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
        "quiescence::a_thread_waiting_for_a_sections_lock_with_a_read_open_stays_pinned",
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
