//! A process that exits (`std::process::exit`) inside a section of the thread-local functions:
//! the exit runs the thread's thread-local destructors from inside the section, whose frame never
//! returns, and what they still run on the thread's stack must leave that section's lock alone
//! (it may be gone with a thread-local destroyed before). Runs in a child process of its own.

use std::cell::Cell;
use std::process::Command;
use std::thread;

use ftrt_lock::{section, RawObjectLock};

/// The environment variable that tells the re-run test binary to run the scenario itself.
const SCENARIO_VAR: &str = "FTRT_LOCK_EXIT_SCENARIO";

/// What the check prints when the exit left the lock alone.
const LEFT_ALONE: &str = "a detach at the exit left the open section's lock alone";

/// The lock of the section the process exits inside (a static stands in for one a thread-local
/// owns, so that unlocking it shows instead of writing freed memory).
static HELD_AT_EXIT: RawObjectLock = RawObjectLock::new();

/// Detaches the thread's sections when dropped, as a later destructor may (a runtime's
/// `allow_threads`), and checks that the section open at the exit kept its lock.
struct DetachesAtExit;

impl Drop for DetachesAtExit {
    fn drop(&mut self) {
        let kept = section::detached(|| HELD_AT_EXIT.is_locked());
        if !kept {
            eprintln!("a detach at the exit unlocked the lock of the section the exit left open");
            std::process::abort();
        }
        println!("{LEFT_ALONE}");
    }
}

thread_local! {
    static DETACH_AT_EXIT: Cell<Option<DetachesAtExit>> = const { Cell::new(None) };
}

#[test]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_detach_after_the_stacks_teardown_leaves_a_section_the_exit_left_open_alone() {
    if std::env::var(SCENARIO_VAR).is_ok() {
        thread::spawn(|| {
            // Set first, so that its destructor runs after the stack's own hold goes
            // (destructors run in the reverse order of registration).
            DETACH_AT_EXIT.set(Some(DetachesAtExit));
            section::with(&HELD_AT_EXIT, || std::process::exit(0));
        })
        .join()
        .expect("the process exits first");
        return;
    }
    let output = Command::new(std::env::current_exe().expect("the test binary's path"))
        .args([
            "a_detach_after_the_stacks_teardown_leaves_a_section_the_exit_left_open_alone",
            "--exact",
            "--nocapture",
        ])
        .env(SCENARIO_VAR, "1")
        .output()
        .expect("the test binary starts again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains(LEFT_ALONE),
        "the scenario's process failed ({}):\n{}\n{stdout}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
    );
}
