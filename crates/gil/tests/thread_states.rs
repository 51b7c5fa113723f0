//! A thread's state over its life: attaching inside thread-local destructors at thread exit, and
//! the quiescent states that attached threads report to hooks.

mod common;
// The tests, in a folder: a `.rs` file beside this one would be a test target of its own.
#[path = "thread_states/at_exit.rs"]
mod at_exit;
#[cfg(not(feature = "gil"))]
#[path = "thread_states/elided_exit.rs"]
mod elided_exit;
#[path = "thread_states/ids.rs"]
mod ids;
#[path = "thread_states/quiescence.rs"]
mod quiescence;

use std::cell::Cell;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::thread;

use ftrt_gil::{is_attached, on_quiescent_state, registered_threads, Python};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Set in a child process to the name of the test whose scenario it runs.
const SCENARIO_VAR: &str = "FTRT_THREAD_STATES_SCENARIO";

/// Runs `scenario` in a child process (the test named `test_name`, re-run with `SCENARIO_VAR`
/// set) and asserts that the child exited successfully: a scenario that fails by aborting the
/// process fails only its test. Under Miri, which cannot start processes, it runs in-process.
fn in_child_process(test_name: &str, scenario: fn()) {
    // `--exact` with a wrong name runs nothing and still succeeds: the harness's line says the
    // test ran.
    in_child_process_printing(test_name, scenario, "1 passed");
}

/// [`in_child_process`], for a scenario that ends the process itself (so the child's harness
/// reports nothing): the child's output must contain `ran`, which the scenario prints.
fn in_child_process_printing(test_name: &str, scenario: fn(), ran: &str) {
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
    assert!(stdout.contains(ran), "the child ran no test:\n{stdout}");
}

/// Set by `AttachesOnDrop` (and by another scenario's probe) once its attachment did everything an
/// attached thread does.
static ATTACHED_ON_DROP: AtomicBool = AtomicBool::new(false);
