//! Reference counting for runtimes that run threads in parallel.
//!
//! A reference count that any thread may change must be updated atomically, and an atomic
//! read-modify-write costs several times a plain increment even when no other thread is looking.
//! CPython avoided the cost with a global interpreter lock; its free-threaded build
//! ([PEP 703](https://peps.python.org/pep-0703/)) instead uses *biased reference counting*
//! (Choi, Shull & Torrellas, PACT 2018): the thread that created an object counts without atomics,
//! and only the other threads pay for them. This crate provides all three strategies behind one
//! interface ([`RefCount`]), and a standalone smart pointer built on the biased one:
//!
//! | type | strategy | header | clone + drop on the creating thread | on other threads |
//! |---|---|---|---|---|
//! | [`NonAtomicCount`] | plain integer, only with a [`GilHeld`] token | 4 bytes | plain add/sub | only under the GIL |
//! | [`AtomicCount`] | one atomic counter | 4 bytes | 2 locked RMWs | 2 locked RMWs |
//! | [`BiasedCount`] | owner-local + shared atomic | 12 bytes | plain load/store | 1 locked RMW + 1 CAS |
//! | [`BiasedArc<T>`] | `Arc` API over [`BiasedCount`] | 12 bytes (+4 padding for 8-aligned `T`) | as `Rc` | as `Arc` |
//!
//! Every strategy supports **immortal** objects (increments and decrements do nothing, the
//! object is never freed, and readers on many threads do not fight over a cache line), and a
//! count that would overflow becomes immortal instead of wrapping.
//!
//! # `BiasedArc<T>`
//!
//! ```
//! use ftrt_refcount::BiasedArc;
//! use std::thread;
//!
//! let config = BiasedArc::new(vec![1, 2, 3]);
//! // Clones on the creating thread are as cheap as `Rc`'s.
//! let local = config.clone();
//! assert_eq!(BiasedArc::strong_count(&config), 2);
//!
//! // Other threads may share it, like an `Arc`; they count atomically.
//! let remote = config.clone();
//! let sum = thread::spawn(move || remote.iter().sum::<i32>()).join().unwrap();
//! assert_eq!(sum, 6);
//!
//! // The reference dropped on the other thread waited in this thread's merge queue;
//! // the count is exact either way.
//! drop(local);
//! assert_eq!(BiasedArc::strong_count(&config), 1);
//! assert_eq!(BiasedArc::try_unwrap(config), Ok(vec![1, 2, 3]));
//! ```
//!
//! **When it beats `Arc`:** when most clones and drops happen on the thread that created the
//! value — trees and graphs built and walked by one thread, values handed to a worker now and
//! then, the objects of an interpreter. Those operations cost what `Rc`'s do.
//!
//! **When it does not:** when the value is created on one thread and cloned and dropped mostly on
//! others (a producer handing every item to consumers). Non-owner operations cost one atomic
//! RMW each, like `Arc`'s, but the last drop on a non-owner thread queues the value for its owner,
//! which drops it at its next safe point ([`BiasedArc::new`], [`merge_pending`], thread exit): a
//! thread that creates values for others and then blocks forever keeps them alive until it
//! calls [`merge_pending`] or exits. The header is also 8 bytes larger than `Arc`'s
//! strong count (there is no weak count: no `Weak`).
//!
//! **Uniqueness off the owner thread.** [`BiasedArc::get_mut`] and [`BiasedArc::try_unwrap`]
//! never answer "unique" wrongly, but a thread that does not own the value answers "maybe shared"
//! while the owner lives and still counts the value locally: the owner's local count changes
//! without atomics, so no other thread can read it exactly. A handle *moved* to another thread is
//! therefore not unique there (where `Arc`'s would be) until the owner calls
//! [`BiasedArc::give_up_ownership`] on it (best before sending it), or exits, or calls
//! [`biased::detach_current_thread`]. On the owner thread, and for a value whose owner has given
//! up ownership (which also happens when the owner drops its last local reference or merges a
//! drop queued to it), the answer is exact. [`BiasedArc::strong_count`] is, like
//! `Arc::strong_count`, only a snapshot while other threads clone and drop.
//!
//! # Threads
//!
//! Each thread that creates a biased object gets an id that is never reused (not the OS thread
//! id or a TLS address, both of which are recycled), registered with a merge queue. When the
//! thread exits it merges its queue and gives up its objects; they stay valid and are freed
//! exactly once by whichever thread drops the last reference.
//!
//! # Features
//!
//! None. Every strategy is always available, side by side, and no build setting changes what
//! one promises: which strategy a runtime's objects use is the runtime's choice (in ftrt,
//! `ftrt_gil::BuildCount`), not this crate's.

#![warn(missing_docs)]

mod arc;
mod atomic;
pub mod biased;
mod nonatomic;
mod strategy;
mod sync;
mod token;

pub use arc::BiasedArc;
pub use atomic::AtomicCount;
pub use biased::{merge_pending, BiasedCount};
pub use nonatomic::NonAtomicCount;
pub use strategy::{Counting, RefCount, RefCountValue, Strategy};
pub use token::GilHeld;

/// Size in bytes of each strategy's count, the part of an object header it takes.
pub const fn header_size(strategy: Strategy) -> usize {
    match strategy {
        Strategy::NonAtomic => std::mem::size_of::<NonAtomicCount>(),
        Strategy::Atomic => std::mem::size_of::<AtomicCount>(),
        Strategy::Biased => std::mem::size_of::<BiasedCount>(),
    }
}

#[cfg(all(test, not(loom)))]
mod test_util;

// The tests run on the allocator the runtime's binaries use; Miri and ThreadSanitizer need the
// system one (they cannot see inside mimalloc's C code).
#[cfg(all(test, not(any(loom, miri, ftrt_tsan))))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
