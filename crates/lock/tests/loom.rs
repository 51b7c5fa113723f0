//! loom models of the lock handoff and of waiters woken one after another, of critical-section
//! suspension and resumption, of the end of lock elision, of the work a section's blocking wait
//! leaves, and of the threading lock's timed waits and releases from any thread. loom's
//! `UnsafeCell` reports any access that is not ordered by the lock, and loom reports a deadlock
//! if a schedule leaves every thread blocked.
//!
//! Run with `cargo xtask test` (or `RUSTFLAGS="--cfg loom" cargo test --release -p ftrt-lock
//! --test loom`).

// The models, in a folder: a `.rs` file beside this one would be a test target of its own.
#[cfg(loom)]
#[path = "loom/models.rs"]
mod models;

/// Without its cfg this file has no models, and a loom run whose flags went missing would pass
/// by running none: the loom steps of `cargo xtask test` set `FTRT_LOOM_MODELS` to fail here.
#[cfg(not(loom))]
#[test]
fn loom_models_are_compiled_in_when_a_loom_run_expects_them() {
    assert!(
        std::env::var_os("FTRT_LOOM_MODELS").is_none(),
        "FTRT_LOOM_MODELS is set, but the models were compiled out (no --cfg loom)"
    );
}
