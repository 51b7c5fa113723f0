//! A Python-like object model that runs under a GIL or free-threaded, from one source.
//!
//! Objects are reference counted with the build's strategy (`ftrt-refcount`): non-atomic under
//! the GIL, biased in the free-threaded build, atomic in the `atomic-rc` ablation. Each object
//! starts with a header of count, a one-byte lock and a type pointer (24 bytes free-threaded,
//! 16 under the GIL; see [`HEADER_SIZE`]).
//!
//! - Types: `None`, `bool`, `int` (64-bit, overflow is an error; −5..=256 preallocated and
//!   immortal), `float`, `str` (hash cached; an interning table whose strings are immortal),
//!   `tuple`, `list`, `dict` (insertion-ordered, `str`/`int` keys), user-defined classes and
//!   their instances, and modules (namespaces of shared variables).
//! - Errors are values ([`Error`]): a bad index, a missing key or attribute, a wrong type or an
//!   unhashable key never panics and never leaves an object half-changed.
//! - Thread safety (free-threaded builds): list and dict mutations run in the object's critical
//!   section (`ftrt_gil::section`: `ftrt-lock`'s, or free under the GIL); `len`, `list[i]`, dict
//!   lookups and attribute reads take no lock, and whatever a writer removes is reclaimed
//!   through `crossbeam-epoch` (see `reclaim`).
//! - References: [`Obj<'py>`] is a counted reference usable while the thread is attached;
//!   [`Shared`] crosses threads; [`Borrowed<'g>`] is an uncounted read that lives no longer than
//!   the container handle it came from and the [`ReadGuard`] it was read under (which keeps
//!   alive whatever writers remove meanwhile), the way to read values every thread shares
//!   without contention.
//! - Accounting: [`stats`] counts live objects per kind, so tests and workloads can check that
//!   everything they made was freed.
//!
//! ```
//! use ftrt_gil::Python;
//! use ftrt_object::{Error, Obj};
//!
//! Python::attach(|py| {
//!     let point = Obj::class(py, "Point").unwrap().instantiate().unwrap();
//!     let x = Obj::intern(py, "x");
//!     point.set_attr(&x, Obj::int(py, 3)).unwrap();
//!
//!     let items = Obj::list(py, [point.get_attr(&x).unwrap(), Obj::float(py, 0.5)]);
//!     items.append(Obj::str(py, "three")).unwrap();
//!     assert_eq!(format!("{items:?}"), r#"[3, 0.5, "three"]"#);
//!     assert_eq!(items.get_item(-1).unwrap().to_str().unwrap(), "three");
//!     assert!(matches!(items.get_item(3), Err(Error::IndexError(_))));
//!
//!     let big = Obj::int(py, i64::MAX);
//!     assert!(matches!(big.add(&Obj::int(py, 1)), Err(Error::OverflowError(_))));
//! });
//! ```

#![warn(missing_docs)]
// The reference-count token is `()` in the free-threaded builds and `GilHeld` under the GIL;
// passing it is the point even where it is a unit.
#![allow(clippy::unit_arg)]

mod dict;
mod display;
mod error;
mod guard;
mod header;
mod list;
mod namespace;
mod reclaim;
mod refs;
mod scalars;
pub mod stats;
mod string;
mod tuple;

pub use error::{Error, Result};
pub use guard::ReadGuard;
pub use header::{Kind, TypeObject, HEADER_SIZE};
pub use refs::{Borrowed, Obj, Shared};
pub use scalars::SMALL_INTS;
pub use string::interned_count;

/// The name of the reference-counting strategy this build uses.
pub fn count_strategy() -> &'static str {
    header::strategy_name()
}

impl<'py> Obj<'py> {
    /// `len()` of a str, tuple, list, dict or module namespace. Lock-free for lists and dicts.
    pub fn len(&self) -> Result<usize> {
        let object = self.ptr();
        match self.kind() {
            Kind::Str => Ok(self.to_str()?.chars().count()),
            // SAFETY: the kind selects the payload; this reference keeps it alive.
            Kind::Tuple => Ok(unsafe { tuple::items(object) }.len()),
            // SAFETY: as above.
            Kind::List => Ok(unsafe { list::len(object) }),
            // SAFETY: as above.
            Kind::Dict => Ok(unsafe { header::payload::<dict::DictPayload>(object) }.len()),
            Kind::Instance | Kind::Module => {
                // SAFETY: this reference keeps the object alive.
                Ok(unsafe { namespace::attrs_of(object) }.map_or(0, |a| a.len()))
            }
            _ => Err(Error::TypeError(format!(
                "object of type '{}' has no len()",
                self.type_name()
            ))),
        }
    }

    /// Whether `len()` is zero.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Python's `==` for numbers and strings (by value), identity for everything else.
    pub fn equals(&self, other: &Obj<'py>) -> bool {
        use Kind::*;
        match (self.kind(), other.kind()) {
            (Int | Bool, Int | Bool) => self.to_i64().ok() == other.to_i64().ok(),
            (Int | Bool | Float, Int | Bool | Float) => self.to_f64().ok() == other.to_f64().ok(),
            (Str, Str) => self.to_str().ok() == other.to_str().ok(),
            _ => self.is(other),
        }
    }
}

#[cfg(all(test, not(any(loom, miri, ftrt_tsan))))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Settles everything the calling thread can settle now: merges its biased-count queue and
/// lets the epoch reclaim what writers retired (detaching briefly, so this thread's own pin does
/// not hold the epoch back). Objects retired while other threads stay pinned are freed once they
/// pass a checkpoint, and objects removed while a [`ReadGuard`] is alive (the calling thread's
/// own included) once it is gone. Tests and workloads call this before comparing live-object
/// counts.
pub fn collect(py: ftrt_gil::Python<'_>) {
    py.merge_pending();
    reclaim::settle_retired();
    py.allow_threads(|| {
        for _ in 0..COLLECT_ROUNDS {
            crossbeam_epoch::pin().flush();
        }
    });
    reclaim::settle_retired();
    py.merge_pending();
}

/// Each flush can advance the global epoch by one step (a retired item needs two) and frees a
/// bounded number of batches, so a backlog takes many rounds; an empty queue makes them cheap.
const COLLECT_ROUNDS: usize = 1024;
