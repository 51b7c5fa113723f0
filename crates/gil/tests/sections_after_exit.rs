//! A thread attached after its exit (a thread-local destructor that attaches: the one fallback of
//! `ftrt_gil`'s thread state) takes the runtime's sections as a registered thread does: if one
//! has to wait for its lock, it waits in place, attached. Registered threads wait for those locks
//! attached because a holder gives them up where it detaches or parks; a holder that waited for
//! one detached would come back holding it, and could then wait to attach while a stop of the
//! world waits for a registered thread that waits for the lock: a deadlock.
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
static HOLDER_IN_SECTION: AtomicBool = AtomicBool::new(false);
static STOPPED: AtomicBool = AtomicBool::new(false);
static LATE_SECTION_RAN: AtomicBool = AtomicBool::new(false);
static WAITER_ATTACHED: AtomicBool = AtomicBool::new(false);
static WAITER_GO: AtomicBool = AtomicBool::new(false);

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
fn a_section_begun_after_the_threads_exit_waits_for_its_lock_attached() {
    // A registered thread in a section on the lock, at checkpoints until the stop has run.
    let holder = thread::spawn(|| {
        Python::attach(|py| {
            section::with(py, &LOCK, || {
                HOLDER_IN_SECTION.store(true, SeqCst);
                while !STOPPED.load(SeqCst) {
                    py.check();
                }
            });
        });
    });
    wait_until("the holder's section", || HOLDER_IN_SECTION.load(SeqCst));
    // A thread whose exit, after its state is gone, begins a section on the lock: it waits.
    let late = thread::spawn(|| {
        LATE.with(|late| *late.borrow_mut() = Some(SectionInALateDestructor));
        Python::attach(|_| ());
    });
    wait_until("the late section to wait", || LOCK.parked_waiters() == 1);
    // A registered thread, attached, that reaches no checkpoint until it begins its own section
    // on the lock.
    let waiter = thread::spawn(|| {
        Python::attach(|py| {
            WAITER_ATTACHED.store(true, SeqCst);
            while !WAITER_GO.load(SeqCst) {
                std::hint::spin_loop();
            }
            section::with(py, &LOCK, || ());
        });
    });
    wait_until("the waiter to attach", || WAITER_ATTACHED.load(SeqCst));
    let stopper = thread::spawn(|| {
        Python::attach(|py| stop_the_world(py, || STOPPED.store(true, SeqCst)));
    });
    wait_until("the stop to be asked for", ftrt_gil::stop_requested);
    // The holder parks for the stop, which suspends its section: the late section takes the lock
    // (waiting detached, it would take it outside the world and then wait to attach, holding it).
    wait_until("the late section to take the lock", || {
        LATE_SECTION_RAN.load(SeqCst) || (LOCK.is_locked() && LOCK.parked_waiters() == 0)
    });
    // The waiter waits for the lock attached; the stop waits for the waiter.
    WAITER_GO.store(true, SeqCst);
    wait_until("the stop to run", || stopper.is_finished());
    for thread in [stopper, holder, late, waiter] {
        thread.join().unwrap();
    }
    assert!(STOPPED.load(SeqCst));
    assert!(LATE_SECTION_RAN.load(SeqCst));
    assert!(!LOCK.is_locked());
}
