//! A Python-like object model that runs under a GIL or free-threaded, from one source.
//!
//! Objects are reference counted with the build's strategy (`ftrt-refcount`): non-atomic under
//! the GIL, biased in the free-threaded build, atomic in the `atomic-rc` ablation. Each object
//! starts with a header of count, a one-byte lock and a type pointer (24 bytes with biased
//! counts, 16 under the GIL and with atomic counts; see [`HEADER_SIZE`]); objects that can hold
//! references carry the cycle collector's 8-byte head in front of it.
//!
//! - Types: `None`, `bool`, `int` (64-bit, overflow is an error; −5..=256 preallocated and
//!   immortal), `float`, `str` (hash cached; an interning table whose strings are immortal),
//!   `tuple`, `list`, `dict` (insertion-ordered, `str`/`int`/`bool` keys), user-defined classes and
//!   their instances, and modules (namespaces of shared variables).
//! - Errors are values ([`Error`]): a bad index, a missing key or attribute, a wrong type or an
//!   unhashable key never panics and never leaves an object half-changed.
//! - Thread safety (free-threaded builds): list and dict mutations run in the object's critical
//!   section (`ftrt_gil::section`: `ftrt-lock`'s, or free under the GIL); `len`, `list[i]`, dict
//!   lookups and attribute reads take no lock, and whatever a writer removes is reclaimed
//!   through `crossbeam-epoch` (see `reclaim`).
//! - Typed views, as in PyO3: [`Bound<'py, T>`] is a counted reference usable while the thread
//!   is attached, viewed as `T`: [`PyAny`] (any object), or [`PyNone`], [`PyBool`], [`PyInt`],
//!   [`PyFloat`], [`PyStr`], [`PyTuple`], [`PyList`], [`PyDict`], [`PyClass`], [`PyInstance`],
//!   [`PyModule`]. Each type's methods live on its view; every view dereferences to
//!   `Bound<PyAny>`, and [`Bound::downcast`] gives a typed view or a `TypeError`. A view is a
//!   pointer: typing costs nothing at run time.
//! - Per-type behaviour lives in each [`TypeObject`]'s slots (`repr`, `hash`, `eq`, `free`,
//!   `traverse`), as in CPython; [`Bound::referents`] lists what an object holds.
//! - Item access is `get_item` / `set_item` / `del_item` on lists (by index) and dicts (by key);
//!   attributes are `get_attr` / `set_attr` / `del_attr` on instances and modules.
//! - Other references: [`Shared<T>`] crosses threads; [`Borrowed<'g>`] is an uncounted read
//!   that lives no longer than the container handle it came from and the [`ReadGuard`] it was
//!   read under (made from the attach token: `ReadGuard::new(py)`), which keeps alive whatever
//!   writers remove meanwhile: the way to read values every thread shares without contention.
//! - Accounting: [`stats`] counts live objects per kind, so tests and workloads can check that
//!   everything they made was freed.
//!
//! ```
//! use ftrt_gil::Python;
//! use ftrt_object::{Error, PyClass, PyFloat, PyInt, PyList, PyStr};
//!
//! Python::attach(|py| {
//!     let point = PyClass::new(py, "Point").unwrap().instantiate();
//!     let x = PyStr::intern(py, "x");
//!     point.set_attr(&x, PyInt::new(py, 3)).unwrap();
//!
//!     let x_value = point.get_attr(&x).unwrap();
//!     let items = PyList::new(py, [x_value, PyFloat::new(py, 0.5).into_any()]);
//!     items.append(PyStr::new(py, "three"));
//!     assert_eq!(format!("{items:?}"), r#"[3, 0.5, "three"]"#);
//!     let last = items.get_item(-1).unwrap();
//!     assert_eq!(last.downcast::<PyStr>().unwrap().to_str(), "three");
//!     assert!(matches!(items.get_item(3), Err(Error::IndexError(_))));
//!     assert!(matches!(last.downcast::<PyList>(), Err(Error::TypeError(_))));
//!
//!     let big = PyInt::new(py, i64::MAX);
//!     assert!(matches!(big.add(&PyInt::new(py, 1)), Err(Error::OverflowError(_))));
//! });
//! ```

#![warn(missing_docs)]
// The reference-count token is `()` in the free-threaded builds and `GilHeld` under the GIL;
// passing it is the point even where it is a unit.
#![allow(clippy::unit_arg)]

/// The unit tests that stop the world, or leave a state a stop trips on (a deliberate counting
/// imbalance), take this first: they run one at a time.
#[cfg(test)]
static STOPPING_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// [`STOPPING_TESTS`], taken (whether or not a test that held it panicked).
#[cfg(test)]
fn one_stopping_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    STOPPING_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

mod borrowed;
mod bound;
mod dict;
mod display;
mod error;
pub mod gc;
mod guard;
mod header;
pub mod hot;
mod interned;
mod list;
mod namespace;
mod reclaim;
mod refs;
mod scalars;
mod shared;
mod slots;
pub mod stats;
mod string;
mod tuple;
mod types;
mod unwind;

pub use borrowed::Borrowed;
pub use bound::Bound;
pub use dict::PyDict;
pub use error::{Error, Result};
/// What [`Bound::refcount`] reports: a count, or immortal.
pub use ftrt_refcount::RefCountValue;
pub use guard::ReadGuard;
pub use header::{Kind, TypeObject, HEADER_SIZE};
pub use list::PyList;
pub use namespace::{PyClass, PyInstance, PyModule};
pub use scalars::{PyBool, PyFloat, PyInt, PyNone, SMALL_INTS};
pub use shared::Shared;
pub use string::{interned_count, PyStr};
pub use tuple::PyTuple;
pub use types::{PyAny, PyTypeInfo};

/// The name of the reference-counting strategy this build uses.
pub fn count_strategy() -> &'static str {
    header::strategy_name()
}

#[cfg(all(test, not(any(loom, miri, ftrt_tsan))))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settles everything the calling thread can settle now: merges its biased-count queue and
/// lets the epoch reclaim what writers retired (detaching briefly, so this thread's own pin does
/// not hold the epoch back). Objects retired while other threads stay pinned are freed once they
/// pass a checkpoint, and objects removed while a [`ReadGuard`] is alive (the calling thread's
/// own included) once it is gone. Deferred objects ([`hot`]) the threads have let go of count in
/// their headers again, and die if nothing holds them (stopping the world, if any are
/// deferred). Garbage an automatic collection delivered to a thread that has not taken it yet
/// is freed here too, whether that thread is attached, away (detached or not attached) or gone.
/// Tests and workloads call this before comparing live-object counts.
///
/// A thread's exit (its thread-local destructors) drops what its thread-locals hold and hands
/// what the thread retired to the epoch (dropped by the next attached thread that settles, as
/// this does), so objects of threads that are still exiting may die after this returns.
/// `std::thread::scope` returns before its threads' thread-local destructors run;
/// `JoinHandle::join` waits for them.
pub fn collect(py: ftrt_gil::Python<'_>) {
    ftrt_gil::assert_attached();
    hot::settle_now(py);
    py.merge_pending();
    // Before the epoch's flushes: freeing shared garbage retires what it held.
    gc::free_unclaimed(py);
    reclaim::settle_retired(py);
    py.allow_threads(|| {
        ftrt_gil::reclamation::flush_until_caught_up(MAX_FLUSHES);
    });
    reclaim::settle_retired(py);
    py.merge_pending();
}

/// Flushes that `collect` makes at most, waiting for what was retired to be freed: enough for a
/// backlog (each flush runs up to 8 bags). Where a thread holds the epoch back they all run, in
/// well under a millisecond natively (about two minutes under Miri).
const MAX_FLUSHES: usize = 1024;

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
