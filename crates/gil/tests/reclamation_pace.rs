//! The pace of reclamation in the thread state: what a thread retired is freed once the epoch
//! lets it, however long another thread held the epoch back; and back-pressure on retirement
//! (`ftrt_gil::reclamation`): a thread that retires while another thread holds the epoch back
//! waits, at a checkpoint and unpinned, until what it retired is freed; for at most the wait
//! limit, once per marker, and never where waiting would hold anything up. Free-threaded
//! builds only: the `gil` build frees at once.
//!
//! Each test holds the epoch back with a thread attached (and so pinned) that makes no
//! checkpoint, the stall the waits are for, and reads the process-wide wait counts; the tests
//! take turns (`serial`). No test asserts how long anything takes: each waits for an event,
//! with a limit far beyond it ([`HANG`], the wait limit too where a wait must end on an event)
//! only to fail instead of hanging. Each test retires on a thread of its own (the harness's, or
//! one it starts), so its markers start afresh: the thread's count of retirements and markers
//! is its own.
#![cfg(not(feature = "gil"))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ftrt_gil::reclamation::{self, Waits, RETIREMENTS_BEFORE_A_WAIT};
use ftrt_gil::Python;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a thread waits for something that must happen before calling it a hang.
const HANG: Duration = Duration::from_secs(30);

/// Retirements a thread makes before a test calls a wait that never came missing.
const MANY_RETIREMENTS: u32 = 100 * RETIREMENTS_BEFORE_A_WAIT;

/// One test at a time: each sets the process-wide limit and reads the process-wide counts, and
/// a thread of one test that holds the epoch would make another's threads wait.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The waits since `before`.
fn waits_since(before: Waits) -> Waits {
    let now = reclamation::waits();
    Waits {
        begun: now.begun - before.begun,
        caught_up: now.caught_up - before.caught_up,
        timed_out: now.timed_out - before.timed_out,
        interrupted: now.interrupted - before.interrupted,
    }
}

/// Retires one function on the epoch, as the object model retires what it removes.
fn retire_one() {
    crossbeam_epoch::pin().defer(|| ());
    ftrt_gil::note_retired();
}

/// Retires a function that panics when it runs on this thread, and does nothing on any other:
/// the epoch runs deferred functions on whichever thread collects, and a panic on another
/// (another test's thread, in a thread-local destructor) could abort the test binary.
fn retire_a_panic() {
    let retirer = thread::current().id();
    crossbeam_epoch::pin().defer(move || {
        if thread::current().id() == retirer {
            panic!("a deferred function panics");
        }
    });
    ftrt_gil::note_retired();
}

/// Retires and checkpoints on an attached thread until `done` says so, or for
/// [`MANY_RETIREMENTS`]; returns whether `done` did.
fn retire_until(py: Python<'_>, done: impl Fn() -> bool) -> bool {
    for _ in 0..MANY_RETIREMENTS {
        retire_one();
        py.check();
        if done() {
            return true;
        }
    }
    false
}

/// Starts a thread that attaches and runs `then` attached, with no checkpoint: pinned all the
/// while, it holds the epoch back. Returns once the thread is pinned.
fn holding_the_epoch<T: Send + 'static>(
    then: impl FnOnce(Python<'_>) -> T + Send + 'static,
) -> JoinHandle<T> {
    let (pinned, holder_pinned) = mpsc::channel();
    let holder = thread::spawn(move || {
        Python::attach(|py| {
            pinned.send(()).unwrap();
            then(py)
        })
    });
    holder_pinned.recv().unwrap();
    holder
}

/// Spins (attached, without a checkpoint) until `done` says so or [`HANG`] has passed.
fn spin_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() && Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// What a thread retired is freed once the epoch lets it, however long another thread held the
/// epoch back meanwhile, and though the thread retires nothing more: it flushes at its repins
/// until its last marker has run. (It flushed at the three repins after it last retired, then
/// only every 256th: a holder that outlasted three repins left the garbage for 4,096
/// checkpoints.)
/// Runs `retire` on this thread while another holds the epoch back ([`holding_the_epoch`]),
/// until `let_go` says so or `retire` has returned.
fn with_the_epoch_held<R>(
    let_go: impl Fn() -> bool + Send + 'static,
    retire: impl FnOnce() -> R,
) -> R {
    let retirer_done = Arc::new(AtomicBool::new(false));
    let holder_done = Arc::clone(&retirer_done);
    let holder =
        holding_the_epoch(move |_py| spin_until(|| let_go() || holder_done.load(Ordering::SeqCst)));
    let retired = retire();
    retirer_done.store(true, Ordering::SeqCst);
    holder.join().unwrap();
    retired
}

/// Waits that ended so: `begun` is their sum (none under way).
fn ended(caught_up: u64, timed_out: u64, interrupted: u64) -> Waits {
    Waits {
        begun: caught_up + timed_out + interrupted,
        caught_up,
        timed_out,
        interrupted,
    }
}

#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn what_a_thread_retired_is_freed_once_a_holder_lets_the_epoch_go() {
    /// Checkpoints between two repins (`CHECKS_PER_REPIN` in `ftrt-gil`).
    const CHECKS_PER_REPIN: usize = 16;
    static FREED: AtomicBool = AtomicBool::new(false);
    let _serial = serial();
    let release = Arc::new(AtomicBool::new(false));
    let holder_released = Arc::clone(&release);
    let holder =
        holding_the_epoch(move |_py| spin_until(|| holder_released.load(Ordering::SeqCst)));
    Python::attach(|py| {
        crossbeam_epoch::pin().defer(|| FREED.store(true, Ordering::SeqCst));
        ftrt_gil::note_retired();
        // Eight repins with the epoch held: it could not advance twice past the retirement.
        for _ in 0..8 * CHECKS_PER_REPIN {
            py.check();
        }
        assert!(
            !FREED.load(Ordering::SeqCst),
            "freed while a thread held the epoch back"
        );
        release.store(true, Ordering::SeqCst);
        holder.join().unwrap();
        // 32 more (of which at least 6 flush, one in 4 past the fourth), far fewer than the 256
        // between two flushes of a thread with nothing outstanding.
        for _ in 0..32 * CHECKS_PER_REPIN {
            py.check();
            if FREED.load(Ordering::SeqCst) {
                break;
            }
        }
    });
    assert!(
        FREED.load(Ordering::SeqCst),
        "what the thread retired waited for its idle flush"
    );
}

/// What a thread retired just before it detached is freed while it stays detached, by the
/// attached threads' flushes: the detach hands it to the epoch's global queue. (It stayed in the
/// thread's own bag, which only the thread itself hands over, until the thread attached again:
/// an `allow_threads` around a long wait kept it for the whole wait.)
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on two threads")]
fn what_a_thread_retired_before_it_detached_is_freed_while_it_stays_detached() {
    /// Checkpoints the attached thread makes at most: 64 flushes of a thread with nothing
    /// outstanding of its own (one per 256 repins of 16 checkpoints), where three free
    /// anything due.
    const CHECKS: usize = 64 * 256 * 16;
    static FREED: AtomicBool = AtomicBool::new(false);
    let _serial = serial();
    let (detached, retirer_detached) = mpsc::channel();
    let (resume, retirer_resumes) = mpsc::channel::<()>();
    let retirer = thread::spawn(move || {
        Python::attach(|py| {
            crossbeam_epoch::pin().defer(|| FREED.store(true, Ordering::SeqCst));
            ftrt_gil::note_retired();
            py.allow_threads(move || {
                detached.send(()).unwrap();
                retirer_resumes.recv().unwrap();
            });
        });
    });
    retirer_detached.recv().unwrap();
    let freed = Python::attach(|py| {
        for _ in 0..CHECKS {
            py.check();
            if FREED.load(Ordering::SeqCst) {
                return true;
            }
        }
        false
    });
    resume.send(()).unwrap();
    retirer.join().unwrap();
    assert!(
        freed,
        "what the thread retired waited for it to attach again"
    );
}

#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_thread_that_retires_while_another_holds_the_epoch_waits_until_what_it_retired_is_freed() {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    // The holder lets the epoch go (ends its attachment) once the retirer waits.
    let caught_up = with_the_epoch_held(
        move || reclamation::waits().begun > before.begun,
        || {
            Python::attach(|py| {
                retire_until(py, || reclamation::waits().caught_up > before.caught_up)
            })
        },
    );
    assert!(
        caught_up,
        "the retirer never waited for the epoch: {:?}",
        waits_since(before)
    );
    // The wait lasted until the holder let the epoch go, so the retirer's marker ran: had the
    // retirer stayed pinned for it, the epoch could not have advanced past it.
    assert_eq!(waits_since(before), ended(1, 0, 0));
}

/// Once a marker has run, the next one is waited for as the first was: the thread held back by
/// a second holder waits again.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn each_marker_is_waited_for_anew() {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    Python::attach(|py| {
        for round in 1..=2 {
            let caught_up = with_the_epoch_held(
                move || reclamation::waits().begun >= before.begun + round,
                || {
                    retire_until(py, || {
                        reclamation::waits().caught_up >= before.caught_up + round
                    })
                },
            );
            assert!(
                caught_up,
                "no wait in round {round}: {:?}",
                waits_since(before)
            );
        }
    });
    assert_eq!(waits_since(before), ended(2, 0, 0));
}

#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_wait_ends_at_the_limit_and_comes_once_per_marker() {
    let _serial = serial();
    reclamation::set_wait_limit(Duration::from_millis(20));
    let before = reclamation::waits();
    // The holder keeps the epoch for the whole run: the one marker outstanding never runs.
    with_the_epoch_held(|| false, || Python::attach(|py| retire_until(py, || false)));
    assert_eq!(waits_since(before), ended(0, 1, 0));
}

#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_zero_limit_turns_the_waits_off() {
    let _serial = serial();
    reclamation::set_wait_limit(Duration::ZERO);
    let before = reclamation::waits();
    with_the_epoch_held(|| false, || Python::attach(|py| retire_until(py, || false)));
    reclamation::set_wait_limit(reclamation::DEFAULT_WAIT_LIMIT);
    assert_eq!(waits_since(before), Waits::default());
}

/// A wait is a checkpoint's, and a checkpoint parks for a stop of the world: the wait gives way
/// to it at once instead of holding the stop up for its limit.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_stop_of_the_world_ends_a_wait() {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    // The holder stops the world once the retirer waits, and reads the counts inside the stop,
    // with the retirer parked.
    let holder = holding_the_epoch(move |py| {
        spin_until(|| reclamation::waits().begun > before.begun);
        ftrt_gil::stop_the_world(py, || waits_since(before))
    });
    let interrupted = Python::attach(|py| {
        retire_until(py, || reclamation::waits().interrupted > before.interrupted)
    });
    let in_the_stop = holder.join().unwrap();
    assert!(
        interrupted,
        "no wait was interrupted: {:?}",
        waits_since(before)
    );
    assert_eq!(in_the_stop, ended(0, 0, 1));
}

/// Asserts that the retirer made no wait [`waits_inside`] `inside`, and one once `after` (which
/// says what ended).
fn waits_only_outside(after: &str, inside: impl FnOnce(Python<'_>, &mut dyn FnMut())) {
    let (inside, waited_outside) = waits_inside(inside);
    assert_eq!(inside, Waits::default());
    assert!(waited_outside, "the retirer never waited, even {after}");
}

/// The retirer makes [`MANY_RETIREMENTS`] inside `inside` (which opens something waiting must
/// not hold up) with the epoch held back, then retires outside until it waits: returns the waits
/// made inside, and whether it waited outside (so the test can fail: without the condition
/// under test, the retirements inside would have made a marker and waited for it).
fn waits_inside(inside: impl FnOnce(Python<'_>, &mut dyn FnMut())) -> (Waits, bool) {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    with_the_epoch_held(
        move || reclamation::waits().begun > before.begun,
        || {
            Python::attach(|py| {
                inside(py, &mut || {
                    retire_until(py, || false);
                });
                let inside_waits = waits_since(before);
                let waited_outside =
                    retire_until(py, || reclamation::waits().caught_up > before.caught_up);
                (inside_waits, waited_outside)
            })
        },
    )
}

/// Waiting with a section's lock held would hold up every thread that waits for the lock.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_thread_with_a_section_active_does_not_wait() {
    static LOCK: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();
    waits_only_outside("outside the section", |py, retire| {
        ftrt_gil::section::with(py, &LOCK, retire)
    });
}

/// Nor with a section of `ftrt-lock`'s thread-local stack active, which an attached thread may
/// take too.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_thread_with_a_thread_local_section_active_does_not_wait() {
    static LOCK: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();
    waits_only_outside("outside the section", |_py, retire| {
        ftrt_lock::section::with(&LOCK, retire)
    });
}

/// Nor inside a pin of the caller's own, which keeps the thread pinned through any wait: the
/// marker could not run before the limit.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_thread_pinned_by_its_caller_does_not_wait() {
    waits_only_outside("unpinned", |_py, retire| {
        let _pin = crossbeam_epoch::pin();
        retire();
    });
}

/// An open read relies on the thread's pin, which a wait gives up.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_thread_with_a_read_open_does_not_wait() {
    waits_only_outside("with the read closed", |_py, retire| {
        let _read = ftrt_gil::local::OpenRead::new();
        retire();
    });
}

/// Nor while it holds the world alone (lock elision): no other thread is attached then, so only
/// a detached thread could hold the epoch back (one with a read open keeps its pin across the
/// detach), for no telling how long. Once another thread attaches, ending the hold, it waits.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on two threads")]
fn a_thread_holding_the_world_alone_does_not_wait() {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    let (detached, holder_detached) = mpsc::channel();
    let (come_back, holder_comes_back) = mpsc::channel::<()>();
    // Holds the epoch back detached, with a read open, until told to come back; attached again
    // (which ends the retirer's hold) it stays pinned at the same epoch, without a checkpoint,
    // until the retirer waits.
    let holder = thread::spawn(move || {
        Python::attach(|py| {
            let read = ftrt_gil::local::OpenRead::new();
            py.allow_threads(move || {
                detached.send(()).unwrap();
                holder_comes_back.recv().unwrap();
            });
            drop(read);
            spin_until(|| reclamation::waits().begun > before.begun);
        })
    });
    holder_detached.recv().unwrap();
    /// Turns lock elision off again, panics included: the next test expects it off.
    struct ElisionOn;
    impl Drop for ElisionOn {
        fn drop(&mut self) {
            ftrt_gil::set_lock_elision(false);
        }
    }
    ftrt_gil::set_lock_elision(true);
    let elision_on = ElisionOn;
    let (held_alone, inside, waited_outside) = Python::attach(|py| {
        // The hold is taken at a repin.
        for _ in 0..16 {
            py.check();
        }
        let held_alone = py.holds_world_alone();
        retire_until(py, || false);
        let inside = waits_since(before);
        come_back.send(()).unwrap();
        // The holder's attach asks for the hold to end, and it ends at a checkpoint.
        let deadline = Instant::now() + HANG;
        while py.holds_world_alone() && Instant::now() < deadline {
            py.check();
        }
        let waited_outside = retire_until(py, || reclamation::waits().caught_up > before.caught_up);
        (held_alone, inside, waited_outside)
    });
    drop(elision_on);
    holder.join().unwrap();
    assert!(held_alone, "the retirer never held the world alone");
    assert_eq!(inside, Waits::default());
    assert!(
        waited_outside,
        "the retirer never waited, even with the hold ended: {:?}",
        waits_since(before)
    );
}

/// A marker that never runs (crossbeam never runs the rest of a bag after a deferred function
/// in it panics) is waited for once, to the limit, and given up for a new one 256 repins after
/// it was deferred, which is waited for as any other.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on two threads")]
fn a_marker_that_never_runs_is_superseded() {
    /// Repins after which an outstanding marker is given up (`REPINS_BEFORE_A_NEW_MARKER` in
    /// `ftrt-gil`), in checkpoints.
    const CHECKS_BEFORE_A_NEW_MARKER: u32 = 256 * 16;
    let _serial = serial();
    let before = reclamation::waits();
    let (lost_marker_waits, caught_up) = thread::spawn(move || {
        Python::attach(|py| {
            // The next repin defers the marker behind this function, in the same bag, and
            // flushes it; with no other thread pinned, the epoch lets a flush soon run the bag.
            retire_a_panic();
            let panicked = (0..CHECKS_BEFORE_A_NEW_MARKER).any(|_| {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| py.check())).is_err()
            });
            assert!(
                panicked,
                "the function deferred before the marker never ran"
            );
            reclamation::set_wait_limit(Duration::from_millis(20));
            for _ in 0..2 * RETIREMENTS_BEFORE_A_WAIT {
                retire_one();
                py.check();
            }
            let lost_marker_waits = waits_since(before);
            reclamation::set_wait_limit(HANG);
            let caught_up = with_the_epoch_held(
                move || reclamation::waits().begun > before.begun + 1,
                || {
                    (0..2 * CHECKS_BEFORE_A_NEW_MARKER).any(|_| {
                        retire_one();
                        py.check();
                        reclamation::waits().caught_up > before.caught_up
                    })
                },
            );
            (lost_marker_waits, caught_up)
        })
    })
    .join()
    .unwrap();
    assert_eq!(lost_marker_waits, ended(0, 1, 0));
    assert!(
        caught_up,
        "no wait for a new marker: {:?}",
        waits_since(before)
    );
    assert_eq!(waits_since(before), ended(1, 1, 0));
}

/// A deferred function that the wait's flush runs may panic: the panic unwinds out of the
/// checkpoint with the thread pinned again and the wait counted, as interrupted.
#[test]
#[cfg_attr(miri, ignore = "spins through thousands of epochs on three threads")]
fn a_panic_inside_a_wait_ends_it_with_the_thread_pinned_again() {
    let _serial = serial();
    reclamation::set_wait_limit(HANG);
    let before = reclamation::waits();
    let (panicked, pinned_after) = with_the_epoch_held(
        move || reclamation::waits().begun > before.begun,
        || {
            Python::attach(|py| {
                // Due only once the holder lets the epoch go, which it does once the retirer
                // waits: the wait's flush runs it.
                retire_a_panic();
                let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    retire_until(py, || false)
                }))
                .is_err();
                (panicked, ftrt_gil::local::attach_pinned())
            })
        },
    );
    assert!(panicked, "the deferred function never ran");
    assert!(pinned_after, "the thread was left unpinned");
    assert_eq!(waits_since(before), ended(0, 0, 1));
}

/// [`reclamation::flush_until_caught_up`] on a thread that is not attached: what was deferred
/// before the call has run when it returns, and with no thread pinned that takes a few flushes,
/// not the limit.
#[test]
fn flushing_until_caught_up_runs_what_was_deferred_before_within_a_few_flushes() {
    static RAN: AtomicBool = AtomicBool::new(false);
    let _serial = serial();
    // Earlier tests may have left a backlog of bags, which takes a flush per 8 bags.
    assert!(reclamation::flush_until_caught_up(1024).is_some());
    crossbeam_epoch::pin().defer(|| RAN.store(true, Ordering::SeqCst));
    let flushes = reclamation::flush_until_caught_up(1024);
    assert!(RAN.load(Ordering::SeqCst), "returned before it ran");
    // Two flushes advance the epoch twice past the marker, more where another thread's pin
    // delays an advance (the previous test's thread may still be exiting, and pins there): far
    // fewer than the limit, which a flush that never stops early would reach.
    assert!(
        flushes.is_some_and(|flushes| flushes <= 16),
        "caught up after {flushes:?} flushes"
    );
}

/// A thread pinned without a quiescent state keeps what was deferred since from running: the
/// call gives up after its limit, and catches up once the thread lets go.
#[test]
fn flushing_until_caught_up_gives_up_while_a_thread_holds_the_epoch_back() {
    static RAN: AtomicBool = AtomicBool::new(false);
    let _serial = serial();
    let (let_go, wait_to_let_go) = mpsc::channel::<()>();
    let holder = holding_the_epoch(move |_py| wait_to_let_go.recv().unwrap());
    crossbeam_epoch::pin().defer(|| RAN.store(true, Ordering::SeqCst));
    assert_eq!(reclamation::flush_until_caught_up(64), None);
    assert!(
        !RAN.load(Ordering::SeqCst),
        "ran while a thread held the epoch back"
    );
    let_go.send(()).unwrap();
    holder.join().unwrap();
    assert!(reclamation::flush_until_caught_up(64).is_some());
    assert!(RAN.load(Ordering::SeqCst));
}
