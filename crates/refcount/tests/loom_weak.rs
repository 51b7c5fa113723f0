//! loom models of `Weak`: an upgrade on one thread racing the decisions of the value's death on
//! others (the owner's last drop, a non-owner's queued drop and the owner's merge, the owner's
//! exit, `try_unwrap`). Every model checks that an upgrade never returns a handle to a value that
//! was dropped or is being dropped, and that the value is dropped exactly once.
//!
//! Run with `cargo xtask test` (or `RUSTFLAGS="--cfg loom" cargo test --release -p ftrt-refcount
//! --test loom_weak`).

#[cfg(loom)]
mod loom_common;
// The models, in a folder: a `.rs` file beside this one would be a test target of its own.
#[cfg(loom)]
#[path = "loom_weak/models.rs"]
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
