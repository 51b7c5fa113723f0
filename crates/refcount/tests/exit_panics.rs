//! A destructor that panics while a thread's exit merges its queue. Another thread dropped the
//! last reference to an object this thread owns, so the object waited in this thread's queue,
//! and its destructor runs in the exit's merge, inside a thread-local destructor, where a panic
//! aborts the process. With `std::sync::Arc` the same value's destructor panics in the other
//! thread's `drop`, which can catch it; here no caller is left to catch it, so the exit reports
//! it through the panic hook and goes on.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use ftrt_refcount::BiasedArc;

/// Set to the test's name in the child process that runs its scenario.
const SCENARIO_VAR: &str = "FTRT_EXIT_PANICS_SCENARIO";

/// Runs `scenario` in a child process (the test named `test_name`, re-run with `SCENARIO_VAR`
/// set) and asserts that the child exited successfully: an abort kills the whole process.
fn in_child_process(test_name: &str, scenario: fn()) {
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
    // `--exact` with a wrong name runs nothing and still succeeds.
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}"
    );
}

static DROPPED: AtomicUsize = AtomicUsize::new(0);

/// Counts its drop, then panics.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
        panic!("a destructor panicked");
    }
}

#[test]
fn a_destructor_that_panics_in_the_owners_exit_merge_does_not_abort_the_process() {
    in_child_process(
        "a_destructor_that_panics_in_the_owners_exit_merge_does_not_abort_the_process",
        || {
            let exited = std::thread::spawn(|| {
                let kept = BiasedArc::new(PanicsOnDrop);
                let given = kept.clone();
                // The other thread's drop is the last decrement of the shared half: queued here.
                std::thread::spawn(move || drop(given)).join().unwrap();
                // Not the last reference: the queued one is still counted.
                drop(kept);
            })
            .join();
            assert!(exited.is_ok(), "the thread's own code did not panic");
            assert_eq!(
                DROPPED.load(Ordering::SeqCst),
                1,
                "the value was dropped at the exit"
            );
        },
    );
}

/// A runtime's thread state unwinding with the thread: its owner retires during the unwind, and a
/// registry payload whose destructor panics then must not panic a second time (which aborts).
#[test]
fn an_owner_retired_during_an_unwind_does_not_panic_a_second_time() {
    in_child_process(
        "an_owner_retired_during_an_unwind_does_not_panic_a_second_time",
        || {
            let unwound = std::panic::catch_unwind(|| {
                let _counts = ftrt_refcount::biased::LocalCounts::register_with(|_| {
                    Some(std::sync::Arc::new(PanicsOnDrop))
                });
                panic!("the thread's own panic");
            });
            let message = unwound.expect_err("the thread's panic unwinds");
            assert_eq!(
                message.downcast_ref::<&str>(),
                Some(&"the thread's own panic"),
                "the first panic is the one that unwinds"
            );
        },
    );
}
