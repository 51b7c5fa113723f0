//! Sections begun in thread-local destructors that run after the thread-local section stack was
//! torn down block the way the thread's other sections did.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ftrt_lock::section::{self, SectionWait};
use ftrt_lock::RawObjectLock;

static HELD: RawObjectLock = RawObjectLock::new();
/// A lock nobody holds: a section on it makes the thread's stack.
static ANOTHER: RawObjectLock = RawObjectLock::new();
/// Set by the hook when it runs; the holder of `HELD` lets go once it is set.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

fn hook(wait: &mut SectionWait<'_>) -> Option<section::AfterWait> {
    HOOK_RAN.store(true, Ordering::SeqCst);
    wait.wait();
    None
}

/// Takes a section on `HELD` when dropped.
struct WaitsAtExit;

impl Drop for WaitsAtExit {
    fn drop(&mut self) {
        section::with(&HELD, || ());
    }
}

thread_local! {
    static WAIT_AT_EXIT: Cell<Option<WaitsAtExit>> = const { Cell::new(None) };
}

/// The blocking wait a thread set for its sections ([`section::set_blocking_wait`]) still runs
/// for sections begun in its thread-local destructors after the section stack's own teardown: a
/// runtime's hook (detaching while the section waits) must not be skipped there, where a thread
/// attached at exit would otherwise wait for a lock holding its runtime (the GIL, or a stop of
/// the world held up).
#[test]
fn a_threads_blocking_wait_still_runs_after_its_section_stacks_teardown() {
    assert!(HELD.try_lock());
    let exiting = thread::spawn(|| {
        // Set first, so that its destructor runs after the stack's (destructors run in the
        // reverse order of registration), which the section below makes.
        WAIT_AT_EXIT.set(Some(WaitsAtExit));
        section::set_blocking_wait(Some(hook));
        section::with(&ANOTHER, || ());
    });
    // The destructor's section has to wait for `HELD`, through the hook. Without the hook it
    // waits in place: let it go after a while, so that the test fails instead of hanging.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !HOOK_RAN.load(Ordering::SeqCst) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: locked above, on this thread.
    unsafe { HELD.unlock() };
    exiting.join().expect("the thread exits");
    assert!(
        HOOK_RAN.load(Ordering::SeqCst),
        "the section at exit waited without the thread's hook"
    );
}
