//! loom models of the biased protocol: non-owner decrement, queueing, the owner's merge and the
//! owner's exit, each racing the others. Every model checks that the value is dropped exactly
//! once, in every interleaving loom explores. The uniqueness models (`get_mut`, `try_unwrap`) also
//! check that a value handed out as unique is never accessed concurrently by another handle.
//!
//! Run with `cargo xtask test` (or `RUSTFLAGS="--cfg loom" cargo test --release -p ftrt-refcount
//! --test loom`).

#[cfg(loom)]
mod loom_common;
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
