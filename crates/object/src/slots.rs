//! Per-type behaviour: what each payload type does for `repr`, `hash`, `==` and traverse, and the
//! type-erased slot functions a [`TypeObject`](crate::TypeObject) stores.
//!
//! A type's behaviour is written once, as a [`Payload`] implementation on the payload it owns
//! (`i64` for `int`, `ListPayload` for `list`, ...); `TypeObject::new::<P>` fills the slots with
//! `P`'s methods behind a cast from the object pointer, as CPython's `tp_repr`, `tp_hash`,
//! `tp_richcompare`, `tp_dealloc` and `tp_traverse` do. Code that handles an object of any type
//! calls through its type's slots instead of matching on its kind.

use std::fmt::{self, Formatter};
use std::ptr::NonNull;

use crossbeam_epoch::Guard;
use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::header::{free_object, header, payload, Header};

/// What a traversal calls once per reference an object holds.
pub(crate) type Visit<'a> = dyn FnMut(Borrowed<'_>) + 'a;

/// The behaviour of the objects whose payload is `Self`.
///
/// The slots run no user code and publish nothing: `Header::section` skips the lock of a local
/// object, and `reclaim::with_read_guard` reads a local container unpinned, both on the grounds
/// that nothing inside a section or a read can hand the object to another thread or change it
/// from this one. Slots that call out (a Python-level `__eq__`, `__hash__` or `__del__`) would
/// have to publish the objects they expose first, and end such reads. Nor may a slot, or a
/// payload's drop, detach the thread: `Header::section` does not even record a section begun
/// while its thread holds the world alone, which is sound only because its body never detaches.
pub(crate) trait Payload: Sized + Send + Sync + 'static {
    /// Writes Python's `repr` of `this`, the object holding this payload. Nested objects are
    /// written through `nested`, which bounds the depth and keeps what it prints alive. A
    /// container copies its items out before its first write: a write can run a writer that
    /// replaces the container's array or table, which the print's guard does not keep (in the
    /// `gil` build it is unprotected, and a replaced array is freed at once).
    fn repr(&self, this: Borrowed<'_>, f: &mut Formatter<'_>, nested: &mut Repr<'_>)
        -> fmt::Result;

    /// The hash of a hashable object (one that may be a dict key); `None` if unhashable.
    fn hash(&self) -> Option<u64> {
        None
    }

    /// `this == other`, where `this` holds this payload. Identity unless the type compares by
    /// value.
    fn eq(&self, this: Borrowed<'_>, other: Borrowed<'_>) -> bool {
        this.ptr() == other.ptr()
    }

    /// Calls `visit` once for every reference the object holds, in order (the collector of
    /// reference cycles will walk the object graph through this).
    ///
    /// # Safety
    /// Nothing changes what the object holds during the call: the caller is inside the object's
    /// critical section, or no other code can reach the object.
    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        let _ = visit;
    }

    /// Drops every reference the object holds that can be dropped (a list's items, a dict's
    /// entries, attributes): how the cycle collector breaks the cycles it frees. Immutable
    /// objects keep theirs (a tuple's items go when the tuple dies). Runs the container's
    /// normal write path, in its critical section.
    ///
    /// # Safety
    /// `this` is the object holding this payload, alive for the call.
    unsafe fn clear(&self, this: &Header, py: Python<'_>) {
        let _ = (this, py);
    }

    /// Whether what the object holds can change after it is made (lists, dicts, attribute
    /// tables): only then does a consistent traversal need the object's critical section.
    /// Immutable and immortal objects are traversed without writing their lock byte.
    const HOLDS_CHANGE: bool = false;

    /// Whether the object may hold references at all (containers, tuples, instances, modules):
    /// publishing an object that holds none ends without a traversal.
    const HOLDS_REFERENCES: bool = false;
}

/// A type's behaviour, type-erased: each slot takes the object's pointer and casts it to the
/// payload its type holds.
pub(crate) struct Slots {
    /// # Safety
    /// The object is alive for the call and of this type; `nested`'s guard protects it if it was
    /// loaded from a container.
    pub(crate) repr: unsafe fn(NonNull<Header>, &mut Formatter<'_>, &mut Repr<'_>) -> fmt::Result,
    /// # Safety
    /// The object is alive for the call and of this type.
    pub(crate) hash: unsafe fn(NonNull<Header>) -> Option<u64>,
    /// # Safety
    /// Both objects are alive for the call; the first is of this type.
    pub(crate) eq: unsafe fn(NonNull<Header>, NonNull<Header>) -> bool,
    /// Drops the payload (releasing the references it holds) and frees the allocation.
    ///
    /// # Safety
    /// As `header::free_object`.
    pub(crate) free: unsafe fn(NonNull<Header>),
    /// # Safety
    /// As [`Payload::traverse`], and the object is alive for the call and of this type.
    pub(crate) traverse: unsafe fn(NonNull<Header>, &mut Visit<'_>),
    /// # Safety
    /// The object is alive for the call and of this type.
    pub(crate) clear: for<'py> unsafe fn(NonNull<Header>, Python<'py>),
    /// [`Payload::HOLDS_CHANGE`].
    pub(crate) holds_change: bool,
    /// [`Payload::HOLDS_REFERENCES`].
    pub(crate) holds_references: bool,
}

impl Slots {
    /// The slots of the type whose objects hold a `P`.
    pub(crate) const fn of<P: Payload>() -> Self {
        Slots {
            repr: repr::<P>,
            hash: hash::<P>,
            eq: eq::<P>,
            free: free_object::<P>,
            traverse: traverse::<P>,
            clear: clear::<P>,
            holds_change: P::HOLDS_CHANGE,
            holds_references: P::HOLDS_REFERENCES,
        }
    }
}

/// # Safety
/// As [`Slots::repr`], with `P` the type's payload.
unsafe fn repr<P: Payload>(
    object: NonNull<Header>,
    f: &mut Formatter<'_>,
    nested: &mut Repr<'_>,
) -> fmt::Result {
    // SAFETY: alive for the call and holding a `P`, per the contract.
    let (this, held) = unsafe { (Borrowed::new(object), payload::<P>(object)) };
    held.repr(this, f, nested)
}

/// # Safety
/// As [`Slots::hash`], with `P` the type's payload.
unsafe fn hash<P: Payload>(object: NonNull<Header>) -> Option<u64> {
    // SAFETY: alive for the call and holding a `P`, per the contract.
    unsafe { payload::<P>(object) }.hash()
}

/// # Safety
/// As [`Slots::eq`], with `P` the first object's payload.
unsafe fn eq<P: Payload>(object: NonNull<Header>, other: NonNull<Header>) -> bool {
    // SAFETY: both alive for the call, the first holding a `P`, per the contract.
    let (this, other, held) = unsafe {
        (
            Borrowed::new(object),
            Borrowed::new(other),
            payload::<P>(object),
        )
    };
    held.eq(this, other)
}

/// # Safety
/// As [`Slots::traverse`], with `P` the type's payload.
unsafe fn traverse<P: Payload>(object: NonNull<Header>, visit: &mut Visit<'_>) {
    // SAFETY: alive for the call, holding a `P`, and unchanging, per the contract.
    unsafe { payload::<P>(object).traverse(visit) }
}

/// # Safety
/// As [`Slots::clear`], with `P` the type's payload.
unsafe fn clear<P: Payload>(object: NonNull<Header>, py: Python<'_>) {
    // SAFETY: alive for the call and holding a `P`, per the contract.
    unsafe { payload::<P>(object).clear(header(object), py) }
}

/// Containers nested deeper than this print as `...`: `repr` must not recurse without bound
/// (Python's stops at its recursion limit, 1,000 frames, with a `RecursionError`).
const MAX_DEPTH: usize = 100;

/// The state of one `repr` in progress: the guard every load runs under, and the containers
/// being printed, outermost first (CPython's `Py_ReprEnter`): one met again inside its own print
/// is part of a cycle, and prints as `[...]`.
pub(crate) struct Repr<'g> {
    guard: &'g Guard,
    in_progress: Vec<NonNull<Header>>,
}

impl<'g> Repr<'g> {
    /// A print whose loads run under `guard`.
    ///
    /// # Safety
    /// Until this `Repr` is dropped, every object a writer removes from a container the print
    /// reaches stays alive, whichever thread writes and whatever the print's writer does
    /// meanwhile: through `guard` (a pin, with a read open on the thread), or through a
    /// `ReadGuard` the caller holds (the `gil` build's, whose `epoch` is unprotected). The
    /// `repr` slots load items under `guard` without counting them.
    pub(crate) unsafe fn new(guard: &'g Guard) -> Self {
        Repr {
            guard,
            in_progress: Vec::new(),
        }
    }

    /// The guard to load a container's items with: the objects it loads stay alive until the
    /// print ends (see `display`). The array or table they are loaded from may not, past a write
    /// (see `Payload::repr`).
    pub(crate) fn guard(&self) -> &'g Guard {
        self.guard
    }

    /// Writes `object` through its type's `repr` slot.
    ///
    /// # Safety
    /// `object` is alive for the call: the caller holds a reference to it, or loaded it under
    /// [`Repr::guard`] from a container alive for the call.
    pub(crate) unsafe fn object(
        &mut self,
        object: NonNull<Header>,
        f: &mut Formatter<'_>,
    ) -> fmt::Result {
        // SAFETY: alive per the contract; a type's slot gets objects of its type.
        unsafe { (header(object).ty.slots.repr)(object, f, self) }
    }

    /// Writes the container `this`'s `items` between `open` and `close`, comma-separated (as
    /// [`Repr::nested`]).
    ///
    /// # Safety
    /// Each item is alive for the call, as in [`Repr::object`].
    pub(crate) unsafe fn sequence(
        &mut self,
        f: &mut Formatter<'_>,
        this: Borrowed<'_>,
        open: &str,
        items: impl ExactSizeIterator<Item = NonNull<Header>>,
        close: &str,
    ) -> fmt::Result {
        let one = items.len() == 1;
        self.nested(f, this, open, close, |repr, f| {
            for (i, item) in items.enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                // SAFETY: alive per the contract.
                unsafe { repr.object(item, f) }?;
            }
            // A one-item tuple needs its comma: `(1,)`.
            if one && open == "(" {
                f.write_str(",")?;
            }
            Ok(())
        })
    }

    /// Writes `open`, then the container `this`'s contents (`inside`), then `close`; `open...close`
    /// if `this` is being printed already (a cycle), or past the depth limit.
    pub(crate) fn nested(
        &mut self,
        f: &mut Formatter<'_>,
        this: Borrowed<'_>,
        open: &str,
        close: &str,
        inside: impl FnOnce(&mut Self, &mut Formatter<'_>) -> fmt::Result,
    ) -> fmt::Result {
        let this = this.ptr();
        if self.in_progress.len() >= MAX_DEPTH || self.in_progress.contains(&this) {
            return write!(f, "{open}...{close}");
        }
        f.write_str(open)?;
        self.in_progress.push(this);
        let written = inside(self, f);
        self.in_progress.pop();
        written?;
        f.write_str(close)
    }
}
