//! Sections begun in thread-local destructors that run after the thread-local section stack was
//! torn down: they block the way the thread's other sections did, and see the sections that were
//! still open when the stack went.

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use ftrt_lock::{section, RawObjectLock};

/// Set in a child process to the name of the test whose scenario it runs.
const SCENARIO_VAR: &str = "FTRT_LOCK_THREAD_EXIT_SCENARIO";

/// Runs `scenario` in a child process (the test named `test_name`, re-run with `SCENARIO_VAR`
/// set), for a scenario that ends the process itself: the child must exit successfully and print
/// `ran`. Under Miri, which cannot start processes, the test is ignored.
fn in_child_process_printing(test_name: &str, scenario: fn(), ran: &str) {
    if std::env::var(SCENARIO_VAR).as_deref() == Ok(test_name) {
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
    assert!(
        stdout.contains(ran),
        "the scenario did not finish:\n{stdout}"
    );
}

static HELD: RawObjectLock = RawObjectLock::new();
/// Set by the hook when it runs; the holder of `HELD` lets go once it is set.
static HOOK_RAN: AtomicBool = AtomicBool::new(false);

fn hook(wait: &mut dyn FnMut()) {
    HOOK_RAN.store(true, Ordering::SeqCst);
    wait();
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
        // reverse order of registration).
        WAIT_AT_EXIT.set(Some(WaitsAtExit));
        section::set_blocking_wait(Some(hook));
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

/// What the section at exit prints once it has run.
const NESTED_AT_EXIT: &str = "the section at exit ran";

static EXIT_LOCK: RawObjectLock = RawObjectLock::new();

/// Takes a section on `EXIT_LOCK` when dropped, and says so.
struct NestsAtExit;

impl Drop for NestsAtExit {
    fn drop(&mut self) {
        let depth = section::with(&EXIT_LOCK, section::depth);
        println!("{NESTED_AT_EXIT}: {} open", depth.open);
    }
}

thread_local! {
    static NEST_AT_EXIT: Cell<Option<NestsAtExit>> = const { Cell::new(None) };
}

/// A process that exits inside a section (`std::process::exit` runs the calling thread's
/// thread-local destructors from inside the section) keeps that section on record for the
/// destructors that run after the stack's teardown: one of them taking a section on the same
/// lock suspends it, as a nested section does anywhere else, instead of waiting for ever for its
/// own thread.
#[test]
#[cfg_attr(miri, ignore = "starts a process")]
fn a_section_open_when_the_process_exits_is_seen_by_sections_in_later_destructors() {
    in_child_process_printing(
        "a_section_open_when_the_process_exits_is_seen_by_sections_in_later_destructors",
        || {
            // A hang is the failure: the watchdog ends it.
            thread::spawn(|| {
                thread::sleep(Duration::from_secs(20));
                eprintln!("the exit hung");
                std::process::abort();
            });
            thread::spawn(|| {
                // Set first, so that its destructor runs after the stack's.
                NEST_AT_EXIT.set(Some(NestsAtExit));
                section::with(&EXIT_LOCK, || std::process::exit(0));
            })
            .join()
            .expect("the process exits first");
        },
        // The section on record and the destructor's own.
        &format!("{NESTED_AT_EXIT}: 2 open"),
    );
}
