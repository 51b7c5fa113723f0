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
//! | [`BiasedArc<T>`] | `Arc` API over [`BiasedCount`], with [`Weak`] | 16 bytes (count + weak count); 32 for `str`, `[T]`, `dyn Trait` | as `Rc` | as `Arc` |
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
//! then, the objects of an interpreter. Those operations take no atomic instruction: a clone and
//! a drop cost 1.2–1.4 times `Rc`'s (see the crate README's table).
//!
//! **When it does not:** when the value is created on one thread and cloned and dropped mostly on
//! others (a producer handing every item to consumers). Non-owner operations cost one atomic
//! RMW each, like `Arc`'s, but the last drop on a non-owner thread queues the value for its owner,
//! which drops it at its next safe point ([`BiasedArc::new`], [`merge_pending`], thread exit): a
//! thread that creates values for others and then blocks forever keeps them alive until it
//! calls [`merge_pending`] or exits. The header is the same 16 bytes as `Arc`'s (a 12-byte
//! biased count and a 4-byte weak count).
//!
//! **Loops on the owner thread.** Every `clone` and `drop` first checks that the calling thread
//! owns the count: a load of the thread's id from a thread-local, and a compare. In a loop that
//! clones and drops many values, take the thread's token once with
//! [`biased::with_current_owner`] and count through [`BiasedArc::clone_for`] and
//! [`BiasedArc::drop_for`]: the id then stays in a register instead of a thread-local load per
//! count. The counting is the same; only where the id comes from differs. (Criterion's `peers`
//! group measured 1.24 × `Rc` against 1.38 × for `clone` and `drop`: see the crate README.)
//!
//! ```
//! use ftrt_refcount::{biased, BiasedArc};
//!
//! let node = BiasedArc::new(String::from("leaf"));
//! let copies = biased::with_current_owner(|owner| {
//!     let copies: Vec<_> = (0..100).map(|_| BiasedArc::clone_for(&node, owner)).collect();
//!     let len = copies.len();
//!     for copy in copies {
//!         BiasedArc::drop_for(copy, owner);
//!     }
//!     len
//! });
//! assert_eq!((copies, BiasedArc::strong_count(&node)), (100, 1));
//! ```
//!
//! **`Arc`'s API.** [`BiasedArc`] has `Arc`'s constructors (`new`, `new_cyclic`, `From<T>`,
//! `Default`), `clone`, `Deref`, the comparison, hashing and formatting traits, `strong_count`,
//! `weak_count`, `ptr_eq`, `as_ptr`, `into_raw` / `from_raw`, `increment_strong_count` /
//! `decrement_strong_count`, `get_mut`, `make_mut`, `try_unwrap`, `into_inner`,
//! `unwrap_or_clone`, and [`Weak`] (`downgrade`, `upgrade`, `Weak::new`, counts, `ptr_eq`,
//! `as_ptr`, `into_raw` / `from_raw`). Where a thread that does not own the value cannot read its
//! count exactly, the answers differ from `Arc`'s in documented ways (below, and on each method).
//!
//! **Unsized values.** `BiasedArc<str>`, `BiasedArc<[T]>` and `BiasedArc<dyn Trait>` come from
//! `From<Box<T>>` (any `T: ?Sized`), `From<Vec<T>>`, `From<&[T]>` (`T: Clone`), `From<String>`,
//! `From<&str>`, `FromIterator<T>` and `Default`; their handles are two words, as `Arc`'s are, and
//! everything that does not move the value out works on them ([`Weak`] included, except
//! `Weak::new`, which needs a sized `T` as `std::sync::Weak::new` does). Unsized coercion
//! (`CoerceUnsized`) is unstable, so a `BiasedArc<Concrete>` does not coerce to a
//! `BiasedArc<dyn Trait>` as an `Arc` does: make the trait object from a box instead.
//!
//! ```
//! use ftrt_refcount::BiasedArc;
//!
//! trait Shape: Send + Sync {
//!     fn area(&self) -> f64;
//! }
//! struct Square(f64);
//! impl Shape for Square {
//!     fn area(&self) -> f64 {
//!         self.0 * self.0
//!     }
//! }
//! let shape: BiasedArc<dyn Shape> = BiasedArc::from(Box::new(Square(2.0)) as Box<dyn Shape>);
//! let name: BiasedArc<str> = BiasedArc::from("square");
//! let sides: BiasedArc<[u32]> = (1..=4).collect();
//! assert_eq!((shape.area(), &*name, sides.len()), (4.0, "square", 4));
//! ```
//!
//! The merge queues know an object by the address of its count, and an unsized value cannot be
//! dropped from an address alone: its allocation keeps the handle's wide pointer (then, once
//! the value is dropped, the value's layout) in 16 bytes before the count, so an unsized value
//! has 32 bytes before it where `Arc`'s has 16. Sized values' allocations are unchanged.
//!
//! Not provided, and why:
//! - `make_mut`, `try_unwrap`, `into_inner` and `unwrap_or_clone` for unsized values (`Arc`'s
//!   `make_mut` for them relies on the unstable `CloneToUninit`; the others return the value by
//!   value), and `downcast` of a `BiasedArc<dyn Any>` (a sized value's allocation has no prefix,
//!   so one allocated unsized cannot be handed back as sized).
//! - `new_uninit`, `Arc::new_in` and the other allocator and uninitialised-memory APIs (most are
//!   unstable on `Arc` too).
//!
//! **Uniqueness off the owner thread.** [`BiasedArc::get_mut`] and [`BiasedArc::try_unwrap`]
//! never answer "unique" wrongly, but a thread that does not own the value answers "maybe shared"
//! while the owner lives and still counts the value locally: the owner's local count changes
//! without atomics, so no other thread can read it exactly. A handle *moved* to another thread is
//! therefore not unique there (where `Arc`'s would be) until the owner calls
//! [`BiasedArc::give_up_ownership`] on it (best before sending it), or exits, or calls
//! [`biased::detach_current_thread`]. On the owner thread, and for a value whose owner has given
//! up ownership (which also happens when the owner drops its last local reference or merges a
//! drop queued to it), the answer is exact; `get_mut` and `make_mut` merge the calling thread's
//! queue first there, and answer "maybe shared" while a drop queued to another thread waits for
//! its merge. [`BiasedArc::strong_count`] is, like
//! `Arc::strong_count`, only a snapshot while other threads clone and drop.
//! [`BiasedArc::into_inner`] gives the value to exactly one of the last holders on the owner
//! thread and on a merged count; on another thread while the owner lives, a last drop can only
//! be queued to the owner, whose merge then drops the value and every caller gets `None`.
//!
//! **Weak handles.** A [`Weak`] upgrades while the value lives. The value lives until its count
//! decides its death, which for a last reference dropped on another thread happens at the
//! owner's merge: until then an upgrade still succeeds (an `Arc`'s would fail once the last
//! strong handle is dropped). The owner's clones and drops of a value with weak handles stay
//! plain loads and stores; only its last drop becomes an atomic exchange (see [`biased`]).
//!
//! **Where a value is dropped.** On the thread whose drop (or merge) settles its count: the last
//! holder's thread, or the owner at its next safe point when the last reference was dropped
//! elsewhere, or the dropping thread if the owner has exited. Weak handles do not change that;
//! the memory is freed by whichever comes last, that thread or the last weak handle's drop.
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
//! - `serde`: `Serialize` and `Deserialize` for [`BiasedArc`] and [`Weak`], as serde's `rc`
//!   feature gives `Arc` (a value serializes as itself, sharing is not preserved, and a `Weak`
//!   serializes as an `Option` and deserializes empty).
//!
//! No feature selects or changes a counting strategy. Every strategy is always available, side
//! by side, and no build setting changes what one promises: which strategy a runtime's objects
//! use is the runtime's choice (in ftrt, `ftrt_gil::BuildCount`), not this crate's.

#![warn(missing_docs)]

mod arc;
mod atomic;
pub mod biased;
mod nonatomic;
#[cfg(feature = "serde")]
mod serde_impls;
mod strategy;
mod sync;
mod token;

pub use arc::{BiasedArc, Weak};
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
