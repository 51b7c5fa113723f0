//! A global interpreter lock, and the thread states every runtime crate above it uses.
//!
//! - [`Gil`]: a real GIL in the `gil` build (switch interval, drop requests, forced switching,
//!   a fair mode against the convoy effect), a zero-sized no-op with the same API otherwise.
//! - [`Python`]: a PyO3-style token proving the thread is attached (and holds the GIL in the
//!   `gil` build). [`Python::attach`] attaches, [`Python::allow_threads`] detaches around blocking
//!   or native work, [`Python::check`] is the eval loop's checkpoint.
//! - [`threading`]: `Lock`, `Event`, `Semaphore` and `Barrier` in the spirit of Python's
//!   `threading` module; each releases the GIL while it blocks.
//!
//! ```
//! use ftrt_gil::{threading::Event, Python};
//! use std::thread;
//!
//! let ready = Event::new();
//! thread::scope(|s| {
//!     s.spawn(|| Python::attach(|py| assert!(ready.wait(py, None))));
//!     // The waiter released the GIL while it blocked, so this thread can attach and set it.
//!     Python::attach(|_py| ready.set());
//! });
//! ```
//!
//! - [`section`]: the critical sections the object model takes, free under the GIL, and free
//!   while a thread holds the world alone ([`set_lock_elision`], off by default).
//! - [`reclamation`]: back-pressure on retirement, in the free-threaded builds: a thread that
//!   retires faster than the epoch frees waits for it now and then, at a checkpoint; and, in
//!   every build, a flush until what the epoch's queue held before it has run.
//! - The thread state: one block per thread holding everything the thread carries (its id and
//!   biased-count merge queue, its section stack, its epoch pin, its [`counters`]); the module
//!   docs of `state` (`crates/gil/src/state.rs`) give the order in which attaching, detaching,
//!   checkpoints and thread exit touch it.
//! - [`BUILD`], [`BuildCount`]: the build variant, which this crate alone decides.
//!
//! # Features
//!
//! The build variant, for the whole runtime: the crates above follow it without features of
//! their own.
//!
//! - `gil`: the real GIL, the non-atomic reference count behind [`Python::count_token`], and
//!   [`section`]s that take no lock.
//! - `atomic-rc`: free-threaded, with atomic reference counts ([`BuildCount`]).
//! - neither: free-threaded, with biased reference counts.
//!
//! `gil` and `atomic-rc` together are a compile error. The build script publishes the variant
//! to the build scripts of dependent crates as `DEP_FTRT_GIL_VARIANT` (`gil`, `nogil` or
//! `nogil-atomic-rc`), for code that must be compiled out rather than branched on.

#![warn(missing_docs)]

mod build_name;
pub mod checkpoint_work;
pub mod gil;
pub mod reclamation;
pub mod section;
mod state;
// The free-threaded builds use only the stop protocol's part.
#[cfg_attr(not(feature = "gil"), allow(dead_code, unused_imports))]
mod sync;
mod thread;
pub mod threading;
mod variant;
pub mod world;

pub use checkpoint_work::{CheckpointWork, MAX_CHECKPOINT_WORKS};
pub use gil::{Gil, RuntimeGil, Scheduling, DEFAULT_SWITCH_INTERVAL};
pub use state::{
    assert_attached, counters, is_attached, local, lock_elision, note_retired, on_quiescent_state,
    registered_threads, set_lock_elision, stop_requested, threads, try_on_quiescent_state,
    ThreadInfo, MAX_QUIESCENT_STATE_HOOKS,
};
#[cfg(loom)]
#[doc(hidden)]
pub use sync::run_out_next_timed_waits;
pub use thread::{runtime_gil, stop_the_world, try_stop_the_world, NotStopped, Python};
pub use variant::{BuildCount, BUILD, BUILD_STRATEGY};

#[cfg(all(test, not(any(loom, miri, ftrt_tsan))))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
