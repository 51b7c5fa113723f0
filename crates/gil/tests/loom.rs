//! loom models of the GIL's drop request and forced switching (gil build only). loom's
//! `UnsafeCell` reports data only the GIL protects being touched by two threads at once; loom
//! reports a deadlock if a schedule leaves every thread blocked.
//!
//! loom has no clock and its condition variables never time out, so most models use a zero
//! switch interval: a waiter raises the drop request as soon as it starts waiting. The interval
//! path is modelled by waiters whose timed waits run out (`run_out_next_timed_waits`, a
//! loom-only hook of `ftrt-gil` that covers every timed wait of the thread that calls it): each
//! lets the GIL's state go and takes it back, and the waiter asks only if the GIL stayed with the
//! holder meanwhile.

// The models, in a folder: a `.rs` file beside this one would be a test target of its own.
#[cfg(all(loom, feature = "gil"))]
#[path = "loom/models.rs"]
mod models;

/// Without its cfg this file has no models, and a loom run whose flags went missing would pass
/// by running none: the loom steps of `cargo xtask test` set `FTRT_LOOM_MODELS` to fail here.
#[cfg(not(all(loom, feature = "gil")))]
#[test]
fn loom_models_are_compiled_in_when_a_loom_run_expects_them() {
    assert!(
        std::env::var_os("FTRT_LOOM_MODELS").is_none(),
        "FTRT_LOOM_MODELS is set, but the models were compiled out (no --cfg loom or no gil feature)"
    );
}
