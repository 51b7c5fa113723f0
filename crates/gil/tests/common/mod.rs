//! What several of the runtime's test binaries share.

use std::cell::Cell;
use std::sync::Once;

thread_local! {
    /// How many times the counting hook ran on this thread.
    static HOOK_RUNS: Cell<usize> = const { Cell::new(0) };
}

fn count_hook_run() {
    HOOK_RUNS.set(HOOK_RUNS.get() + 1);
}

/// How many times a quiescent-state hook has run on the calling thread: the hook counts its
/// runs per thread, and is registered (once per test binary) by the first call.
#[allow(dead_code)] // not every binary that includes this module counts hooks
pub fn hook_runs() -> usize {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| ftrt_gil::on_quiescent_state(count_hook_run));
    HOOK_RUNS.get()
}
