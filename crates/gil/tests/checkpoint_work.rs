//! Checkpoint work (`ftrt_gil::CheckpointWork`): each crate registers its own work and asks for
//! it through its handle; a request runs that work once, at the next checkpoint, and no other;
//! a work that panics leaves the rest asked for; the table's end answers `None`. (There was one
//! slot for the whole runtime: a second crate's registration failed, and its requests ran the
//! first crate's work.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use ftrt_gil::{CheckpointWork, Python, MAX_CHECKPOINT_WORKS};

static FIRST_RAN: AtomicUsize = AtomicUsize::new(0);
static SECOND_RAN: AtomicUsize = AtomicUsize::new(0);
static PANICKING_RAN: AtomicUsize = AtomicUsize::new(0);

/// The works every test here uses, registered once, in this order.
struct Works {
    panicking: CheckpointWork,
    first: CheckpointWork,
    second: CheckpointWork,
}

fn works() -> &'static Works {
    static WORKS: OnceLock<Works> = OnceLock::new();
    WORKS.get_or_init(|| {
        let register = |work| CheckpointWork::register(work).expect("a free slot");
        Works {
            panicking: register(|_py| {
                PANICKING_RAN.fetch_add(1, Ordering::Relaxed);
                panic!("a failing checkpoint work");
            }),
            first: register(|_py| {
                FIRST_RAN.fetch_add(1, Ordering::Relaxed);
            }),
            second: register(|_py| {
                SECOND_RAN.fetch_add(1, Ordering::Relaxed);
            }),
        }
    })
}

/// One test at a time: a work runs on whichever thread reaches a checkpoint first.
static SERIAL: Mutex<()> = Mutex::new(());

/// Enough checkpoints for one to look (free-threaded builds look every 16th).
fn checkpoints(py: Python<'_>) {
    for _ in 0..32 {
        py.check();
    }
}

fn ran() -> (usize, usize, usize) {
    (
        PANICKING_RAN.load(Ordering::Relaxed),
        FIRST_RAN.load(Ordering::Relaxed),
        SECOND_RAN.load(Ordering::Relaxed),
    )
}

#[test]
fn each_request_runs_its_own_work_once_at_the_next_checkpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let works = works();
    assert_ne!(works.first, works.second, "two registrations, two works");
    Python::attach(|py| {
        let before = ran();
        works.second.request();
        works.second.request();
        checkpoints(py);
        assert_eq!(
            ran(),
            (before.0, before.1, before.2 + 1),
            "the second work once"
        );
        works.first.request();
        checkpoints(py);
        assert_eq!(
            ran(),
            (before.0, before.1 + 1, before.2 + 1),
            "the first work once"
        );
        checkpoints(py);
        assert_eq!(
            ran(),
            (before.0, before.1 + 1, before.2 + 1),
            "nothing asked for"
        );
    });
}

#[test]
fn a_panicking_work_leaves_the_works_asked_for_after_it_for_the_next_checkpoint() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let works = works();
    Python::attach(|py| {
        let before = ran();
        works.first.request();
        works.second.request();
        works.panicking.request();
        let panicked = std::panic::catch_unwind(|| checkpoints(py));
        assert!(panicked.is_err(), "the panicking work ran at a checkpoint");
        assert_eq!(
            ran(),
            (before.0 + 1, before.1, before.2),
            "only the panicking one"
        );
        checkpoints(py);
        assert_eq!(
            ran(),
            (before.0 + 1, before.1 + 1, before.2 + 1),
            "the other two at the next checkpoint"
        );
    });
}

/// Registering fills every free slot, one work each, then answers `None`; the works registered
/// before still run when asked.
#[test]
fn registering_past_the_last_slot_answers_none_and_leaves_the_others_working() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let works = works();
    let mut filled = 0;
    while CheckpointWork::register(|_py| {}).is_some() {
        filled += 1;
        assert!(filled <= MAX_CHECKPOINT_WORKS, "more works than slots");
    }
    // Only this binary registers works, and only `works()` (three) and this loop do: every
    // other slot was free, so an early `None` is a failure, not a full table.
    assert_eq!(
        filled,
        MAX_CHECKPOINT_WORKS - 3,
        "the table answered None before its last slot"
    );
    Python::attach(|py| {
        let before = ran();
        works.first.request();
        checkpoints(py);
        assert_eq!(ran(), (before.0, before.1 + 1, before.2));
    });
}
