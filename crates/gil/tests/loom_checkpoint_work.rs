//! loom models of the checkpoint works' requests (`ftrt_gil::checkpoint_work::Requests`): a
//! request made on one thread while a checkpoint on another runs the works is never lost: the
//! work runs, once, at that checkpoint or the next. The models check every interleaving of the
//! steps (they fail with a request that raises the checkpoint's flag before the work's own); not
//! the orderings: every access to these flags is a read-modify-write, which loom lets read only
//! the latest value, whatever its ordering, so the Release/Acquire pair rests on its comments.

// The models, in a folder: a `.rs` file beside this one would be a test target of its own.
#[cfg(loom)]
#[path = "loom_checkpoint_work/models.rs"]
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
