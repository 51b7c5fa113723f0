//! loom models of the stop protocol (`ftrt_gil::world`): a stopper never runs while another
//! thread is attached, attaching threads wait for the stop to end, and no schedule deadlocks,
//! also beside `ftrt-refcount`'s parked counts (a reattach waits for merges on its behalf
//! outside the world).
//! Data only attached threads touch is a loom `UnsafeCell`, so a broken exclusion is a reported
//! race, not a lucky pass. loom's condition variables never time out, so most stops wait
//! without patience; the models of a stop whose patience runs out make the stopper's timed
//! waits run out (`run_out_next_timed_waits`), which spends its patience.

// The models, in a folder: a `.rs` file beside this one would be a test target of its own.
#[cfg(loom)]
#[path = "loom_world/models.rs"]
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
