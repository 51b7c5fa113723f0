//! Per-object locks for a free-threaded runtime.
//!
//! Without a global interpreter lock, every mutable container (a list, a dict) needs a lock of
//! its own, so the lock must be small and the uncontended path cheap. This crate provides:
//!
//! - [`RawObjectLock`]: a mutex in **one byte**. Uncontended lock and unlock are one
//!   compare-and-swap each; contended threads spin briefly, then park
//!   in `parking_lot_core`'s global parking lot. A waiter that has waited over
//!   [`HANDOFF_AFTER`] (1 ms) is handed the lock directly on the next unlock, as CPython's
//!   `PyMutex` does, so it cannot be starved by threads that keep re-taking the lock.
//! - [`Mutex<T>`]: the same lock with a value and an RAII guard (`lock_api`).
//! - [`RawThreadingLock`]: the same state machine as a lock any thread may release, with waits
//!   that end at a deadline: Python's `threading.Lock`, as CPython builds it on `PyMutex`.
//! - [`section`]: critical sections over one or two objects that cannot deadlock however they
//!   nest (PEP 703's design).
//! - [`spin`]: the spin policy, how long a thread retries before it sleeps (the lock's, and
//!   the one the rest of ftrt uses).
//!
//! ```
//! use ftrt_lock::Mutex;
//! use std::thread;
//!
//! let counter = Mutex::new(0_u64);
//! thread::scope(|s| {
//!     for _ in 0..4 {
//!         s.spawn(|| {
//!             for _ in 0..1000 {
//!                 *counter.lock() += 1;
//!             }
//!         });
//!     }
//! });
//! assert_eq!(*counter.lock(), 4000);
//! assert_eq!(std::mem::size_of::<ftrt_lock::RawObjectLock>(), 1);
//! ```
//!
//! # Features
//!
//! None. A section always locks, whatever else is in the build: this crate knows nothing of a
//! GIL. A runtime that serialises its threads some other way and wants its own sections free
//! decides that itself, where it knows (in ftrt, `ftrt_gil::section`). A runtime that knows, for
//! a while, that no other thread can touch its objects may tell its own
//! [`SectionStack`](section::SectionStack) so, by an `unsafe` call
//! ([`start_eliding`](section::SectionStack::start_eliding)), and skip even the record of a
//! section that the elision outlasts ([`with_on_unrecorded`](section::with_on_unrecorded), also
//! `unsafe`); no other stack changes.

#![warn(missing_docs)]

mod parking;
mod raw;
pub mod section;
pub mod spin;
mod sync;
mod threading_lock;

pub use raw::{RawObjectLock, HANDOFF_AFTER};
pub use threading_lock::{NotLocked, RawThreadingLock, Spin};

#[cfg(loom)]
pub use raw::{handoffs_received_in_models, request_handoff_in_models};

/// A value guarded by a [`RawObjectLock`].
#[cfg(not(loom))]
pub type Mutex<T> = lock_api::Mutex<RawObjectLock, T>;
/// The guard of a [`Mutex`]: the lock is held while it lives.
#[cfg(not(loom))]
pub type MutexGuard<'a, T> = lock_api::MutexGuard<'a, RawObjectLock, T>;

#[cfg(all(test, not(any(loom, miri, ftrt_tsan))))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(all(test, not(loom)))]
mod tests;

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
