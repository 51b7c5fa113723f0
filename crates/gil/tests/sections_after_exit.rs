//! A thread attached after its exit (a thread-local destructor that attaches: the one fallback of
//! `ftrt_gil`'s thread state) takes the runtime's sections as a registered thread does: if one
//! has to wait for its lock, it waits attached, and lets a stop of the world through while it
//! waits (`ftrt_lock::section::set_stackless_blocking_wait`, which the runtime sets for every
//! thread it registers). A holder may be unable to give the lock up before a stop ends: one that
//! took it through `ftrt_lock`'s thread-local functions and now waits to attach. A waiter that
//! held the stop up would leave the three waiting for each other.
//!
//! Its own file: the scenario stops the world and ends a thread inside a thread-local destructor.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::{Duration, Instant};

use ftrt_gil::{section, stop_the_world, Python};
use ftrt_lock::RawObjectLock;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a step may take before it is called a deadlock.
const HANG: Duration = Duration::from_secs(30);

static LOCK: RawObjectLock = RawObjectLock::new();
static LATE_SECTION_RAN: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
static HOLDER_ATTACHING: AtomicBool = AtomicBool::new(false);

/// Dropped in the thread's exit after the thread state (first used before the state was made):
/// attaches through the fallback and begins a section on `LOCK`.
struct SectionInALateDestructor;

impl Drop for SectionInALateDestructor {
    fn drop(&mut self) {
        Python::attach(|py| {
            assert!(py.thread_id().is_none(), "attached through the fallback");
            section::with(py, &LOCK, || LATE_SECTION_RAN.store(true, SeqCst));
        });
    }
}

thread_local! {
    static LATE: RefCell<Option<SectionInALateDestructor>> = const { RefCell::new(None) };
}

/// Waits until `done`, failing the test after [`HANG`].
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < HANG, "deadlocked waiting for {what}");
        thread::yield_now();
    }
}

#[test]
#[cfg_attr(
    feature = "gil",
    ignore = "the gil build's sections take no lock, so none of them can wait"
)]
fn a_section_begun_after_the_threads_exit_lets_a_stop_through_while_it_waits() {
    // A registered thread that takes the lock through `ftrt_lock` while detached, and attaches
    // once the world is stopped: it waits for the stop to end, holding the lock.
    let (held, holding) = std::sync::mpsc::channel();
    let holder = thread::spawn(move || {
        Python::attach(|_| ());
        ftrt_lock::section::with(&LOCK, || {
            held.send(()).unwrap();
            wait_until("the world to stop", || STOPPED.load(SeqCst));
            HOLDER_ATTACHING.store(true, SeqCst);
            Python::attach(|_| ());
        });
    });
    holding.recv().unwrap();
    // A thread whose exit, after its state is gone, begins a section on the lock: it waits.
    let late = thread::spawn(|| {
        LATE.with(|late| *late.borrow_mut() = Some(SectionInALateDestructor));
        Python::attach(|_| ());
    });
    wait_until("the late section to wait", || LOCK.parked_waiters() == 1);
    let stopper = thread::spawn(|| {
        Python::attach(|py| {
            stop_the_world(py, || {
                STOPPED.store(true, SeqCst);
                wait_until("the holder to attach", || HOLDER_ATTACHING.load(SeqCst));
            })
        })
    });
    wait_until("the stop to run", || stopper.is_finished());
    for thread in [stopper, holder, late] {
        thread.join().unwrap();
    }
    assert!(LATE_SECTION_RAN.load(SeqCst));
    assert!(!LOCK.is_locked());
}
