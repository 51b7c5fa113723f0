//! loom model of the lock-free read protocol of lists, dicts and attributes.
//!
//! The object model's containers publish items in atomic slots; a reader loads a slot and
//! increments the item's count without a lock; a writer swaps the slot and *retires* the old
//! reference, dropping it only after every reader that could have loaded it has finished (in the
//! crate this is `crossbeam-epoch`, which loom cannot run, so the model states the same
//! discipline with a reader-announcement flag and a grace period). The model checks, in every
//! interleaving, that a reader never increments a freed object, never reads a value that was not
//! stored, and that every object is freed exactly once with its count back at zero.
//!
//! The `gil` build's borrowed reads follow a second discipline, modelled at the end: readers and
//! writers take turns on the GIL (a mutex here), a reader may hold a borrowed value across giving
//! the GIL up (`allow_threads`), and a writer defers what it removes while any read guard is alive
//! (`ReadGuard`'s reader count); the last guard to go drops the deferred references.
//!
//! A list's read racing the growth of its array, a pop and a push into the emptied slot
//! (`loom/list_growth.rs`) is modelled in the same terms, with the crate's plain loads, and with
//! the array's size and each item's value written by the writer as plain data, so that a
//! publication without a release is a reported race.
//!
//! Hot shared objects' deferred counts (`hot.rs`) have models of their own
//! (`loom/deferred.rs`): the real stop protocol and the real biased count, with each thread's
//! array a loom `UnsafeCell`, a settle that sums them in a stopped world, and a thread's exit
//! folding its counts in; the object is freed exactly once, never while a thread holds it. So
//! does garbage delivered to its owner thread (`gc/delivery.rs`, `loom/delivery.rs`): freed
//! exactly once, by its owner or by the next collection at the latest.

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
