//! ftrt: a free-threaded reference-counting runtime.
//!
//! The umbrella crate re-exports the workspace's crates and names the build variant compiled in.
//! Each crate also stands alone:
//!
//! - [`refcount`] (`ftrt-refcount`): non-atomic, atomic and biased reference counts, immortal
//!   objects, and [`BiasedArc`](refcount::BiasedArc), an `Arc` whose owner thread counts without
//!   atomics.
//! - [`lock`] (`ftrt-lock`): one-byte per-object locks and deadlock-free critical sections.
//! - [`gil`] (`ftrt-gil`): the GIL (a no-op in free-threaded builds), thread states, the
//!   `Python<'py>` attach token, `allow_threads`, and GIL-aware `threading` objects.
//! - [`object`] (`ftrt-object`): the Python-like object model, with lock-free reads of lists
//!   and dicts in the free-threaded builds.
//!
//! The variant is chosen with cargo features, forwarded to `ftrt-gil`, the one crate that decides
//! it (the crates above it follow; `ftrt-refcount` and `ftrt-lock` know nothing of it):
//!
//! | [`BUILD`] | features | reference counting |
//! |---|---|---|
//! | `"gil"` | `gil` | non-atomic, guarded by the GIL |
//! | `"nogil"` | (none) | biased |
//! | `"nogil-atomic-rc"` | `atomic-rc` | atomic |
//!
//! ```
//! assert!(["gil", "nogil", "nogil-atomic-rc"].contains(&ftrt::BUILD));
//! ```

pub use ftrt_gil as gil;
pub use ftrt_lock as lock;
pub use ftrt_object as object;
pub use ftrt_refcount as refcount;

/// The build variant compiled in: `"gil"`, `"nogil"` or `"nogil-atomic-rc"` (`ftrt-gil`'s).
pub use ftrt_gil::BUILD;

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
