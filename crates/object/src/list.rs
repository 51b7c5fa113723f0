//! Lists: mutations inside the list's critical section, `len` and `list[i]` without a lock.
//!
//! The items live in an array published through `crossbeam_epoch::Atomic`; the length is a
//! separate atomic. A reader loads the length, then the array, then the slot, and takes a
//! reference to what it found: the item is alive because the list still holds it or because the
//! writer that removed it retired its reference through the epoch (see `reclaim`). If the slot
//! is empty (a concurrent `pop`, `del_item` or `clear`) or beyond the array (which arrays,
//! never shrinking, rule out while the length is loaded first; checked all the same), the
//! reader falls back to reading under the lock. Growing the array copies the pointers into a
//! new array and retires the old one; readers still on the old array see the same, still-alive
//! items.

use std::fmt::{self, Formatter};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crossbeam_epoch::{Atomic, Guard};
use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::Bound;
use crate::error::{Error, Result};
use crate::header::{allocate, Header, Kind, TypeObject};
use crate::reclaim::{
    guarded, hand_over, owned, replace, retire_array, retire_ref, try_read_unpinned,
    with_read_guard, with_unchanging, write_contents,
};
use crate::refs::{drop_items, try_incref_inline, OwnedRef};
use crate::slots::{Payload, Repr};
use crate::types::{py_type, PyAny, PyTypeInfo};

py_type!(
    /// A mutable sequence: writes in its critical section, `len` and `get_item` without a lock.
    PyList, "list", Kind::List, ListPayload
);

struct Slots(Box<[AtomicPtr<Header>]>);

impl Slots {
    fn with_capacity(capacity: usize) -> Self {
        Slots(
            (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        )
    }
}

pub(crate) struct ListPayload {
    slots: Atomic<Slots>,
    len: AtomicUsize,
}

pub(crate) static LIST_TYPE: TypeObject = TypeObject::new::<ListPayload>("list", Kind::List);

const MIN_CAPACITY: usize = 4;

impl ListPayload {
    fn new(items: Vec<OwnedRef>) -> Self {
        let slots = Slots::with_capacity(items.len().max(MIN_CAPACITY));
        let len = items.len();
        for (slot, item) in slots.0.iter().zip(items) {
            slot.store(item.into_raw().as_ptr(), Ordering::Relaxed);
        }
        ListPayload {
            slots: Atomic::from(owned(slots)),
            len: AtomicUsize::new(len),
        }
    }

    #[inline]
    fn slots<'g>(&'g self, guard: &'g Guard) -> &'g Slots {
        // SAFETY: the array is never null while `self` lives (borrowed for `'g`), and the guard
        // keeps a replaced array alive.
        unsafe { self.slots.load(Ordering::Acquire, guard).deref() }
    }

    /// Appends under the lock: store the item, then publish the new length.
    fn push(&self, owner: &Header, item: OwnedRef, guard: &Guard) {
        let len = self.len.load(Ordering::Relaxed);
        let mut slots = self.slots(guard);
        if len == slots.0.len() {
            let grown = Slots::with_capacity(len * 2);
            for (new, old) in grown.0.iter().zip(slots.0.iter()) {
                new.store(old.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            // Release: readers that see the new array see the copied pointers.
            let old = self.slots.swap(owned(grown), Ordering::AcqRel, guard);
            // SAFETY: unreachable now; its references moved to the new array.
            unsafe { retire_array(owner, old, guard) };
            slots = self.slots(guard);
        }
        slots.0[len].store(item.into_raw().as_ptr(), Ordering::Release);
        self.len.store(len + 1, Ordering::Release);
    }
}

impl Payload for ListPayload {
    const HOLDS_CHANGE: bool = true;
    const HOLDS_REFERENCES: bool = true;

    fn repr(
        &self,
        this: Borrowed<'_>,
        f: &mut Formatter<'_>,
        nested: &mut Repr<'_>,
    ) -> fmt::Result {
        // Copied out before the first write, under the print's guard, which keeps the items a
        // writer removes meanwhile alive (not, in the `gil` build, an array it replaces).
        let len = self.len.load(Ordering::Acquire);
        let items: Vec<_> = self
            .slots(nested.guard())
            .0
            .iter()
            .take(len)
            .filter_map(|slot| NonNull::new(slot.load(Ordering::Acquire)))
            .collect();
        // SAFETY: loaded from the list (alive for the call) under the print's guard.
        unsafe { nested.sequence(f, this, "[", items.into_iter(), "]") }
    }

    unsafe fn clear(&self, this: &Header, py: Python<'_>) {
        let write = guarded(
            #[inline(always)]
            |guard| {
                let len = self.len.load(Ordering::Relaxed);
                // Shorten first, so readers checking the length stop before the emptied slots.
                self.len.store(0, Ordering::Release);
                for slot in &self.slots(guard).0[..len] {
                    // SAFETY: this closure is the write `write_contents` runs below.
                    let item = NonNull::new(unsafe { replace(slot, ptr::null_mut()) })
                        .expect("slots below the length hold items");
                    // SAFETY: the list owned this reference, which this write, in its
                    // section, has just taken out of it.
                    unsafe { retire_ref(this, OwnedRef::from_raw(item), guard) };
                }
            },
        );
        // SAFETY: `write` writes this list's array alone: it shortens the list, empties each
        // slot and retires its item through `retire_ref`, whose drops run destructors with no
        // user code, no checkpoint, no detach and no section. It calls no slot, reaches no
        // checkpoint, does not detach, begins no section, publishes nothing, and returns nothing.
        unsafe { write_contents(this, py, write) }
    }

    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        let walk = |guard: &Guard| {
            let len = self.len.load(Ordering::Relaxed);
            for slot in &self.slots(guard).0[..len] {
                let item =
                    NonNull::new(slot.load(Ordering::Relaxed)).expect("held below the length");
                // SAFETY: the list holds the item, and nothing changes what it holds during the
                // call (the caller's contract).
                visit(unsafe { Borrowed::new(item) });
            }
        };
        // SAFETY: nothing changes what the list holds during the call (the caller's contract),
        // and the walk retires nothing.
        unsafe { with_unchanging(walk) }
    }
}

impl Drop for ListPayload {
    fn drop(&mut self) {
        // SAFETY: the list is dead: nothing else can reach it, so no guard is needed.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        let slots = self
            .slots
            .swap(crossbeam_epoch::Shared::null(), Ordering::Relaxed, guard);
        // SAFETY: the list owned this array and is dead.
        let slots = unsafe { slots.into_owned() };
        drop_items(|| {
            for slot in slots.0.iter() {
                if let Some(item) = NonNull::new(slot.load(Ordering::Relaxed)) {
                    // SAFETY: the list owned this reference.
                    drop(unsafe { OwnedRef::from_raw(item) });
                }
            }
        });
    }
}

/// Turns a Python-style index (negative counts from the end) into a position below `len`.
#[inline]
pub(crate) fn position(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let index = if index < 0 { index + len } else { index };
    (0..len).contains(&index).then_some(index as usize)
}

fn out_of_range() -> Error {
    Error::IndexError("list index out of range".into())
}

/// Returns `f` unchanged, typed as the argument of `locked` would be (`FnOnce`, over a guard of
/// any lifetime): a closure written outside the `unsafe` block of that call, as
/// `reclaim::guarded` does for the calls it serves, and for the same reason.
#[inline(always)]
fn for_locked<F: FnOnce(&ListPayload, &Guard) -> R, R>(f: F) -> F {
    f
}

impl PyList {
    /// A list of `items`.
    pub fn new<'py, T: PyTypeInfo>(
        py: Python<'py>,
        items: impl IntoIterator<Item = Bound<'py, T>>,
    ) -> Bound<'py, PyList> {
        let items = items.into_iter().map(Bound::into_owned_ref).collect();
        // SAFETY: a fresh list's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe {
            Bound::from_owned(allocate(
                &LIST_TYPE,
                ListPayload::new(items),
                py.new_object_token(),
            ))
        }
    }

    /// An empty list.
    pub fn empty(py: Python<'_>) -> Bound<'_, PyList> {
        PyList::new::<PyAny>(py, [])
    }
}

impl<'py> Bound<'py, PyList> {
    /// Runs `f` in the list's critical section, with a guard to load its array with
    /// (`write_contents`). The closures given to it are marked `#[inline(always)]`: each is
    /// called both inline and on the out-of-line general path, and the inliner otherwise
    /// kept it out of line on the inline one too.
    ///
    /// # Safety
    /// As for `write_contents`, whose closure `f` is in all but name: `f` reads and writes this
    /// list's contents alone; does not detach (no `allow_threads`, no checkpoint, no section
    /// that may have to wait); runs no user code and makes nothing shared; retires what it
    /// removes only through `retire_ref`, `hand_over` and `retire_array`, given this list and
    /// the guard; and lets no pointer it loaded outlive the call uncounted. (Not a safe function
    /// that keeps the obligation itself: `f` is any closure, and nothing in its type can promise
    /// that.)
    unsafe fn locked<R>(&self, f: impl FnOnce(&ListPayload, &Guard) -> R) -> R {
        let list = self.payload();
        let write = guarded(
            #[inline(always)]
            |guard| f(list, guard),
        );
        // SAFETY: `write` hands `f` the payload and the guard and does nothing else, and `f`
        // meets `write_contents`'s contract (the caller's).
        unsafe { write_contents(self.header(), self.py(), write) }
    }

    /// The list's reference to an item about to be stored in it (see `Header::before_storing`).
    #[inline]
    fn store<T: PyTypeInfo>(&self, item: Bound<'py, T>) -> OwnedRef {
        self.header().before_storing(item.header());
        item.into_owned_ref()
    }

    /// `len()`, without a lock.
    #[inline]
    pub fn len(&self) -> usize {
        self.payload().len.load(Ordering::Acquire)
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `item`.
    // Always inlined: in the free-threaded builds the inliner kept it out of line (a call and
    // six saved registers around a store and a section), where the `gil` build inlines it.
    #[inline(always)]
    pub fn append<T: PyTypeInfo>(&self, item: Bound<'py, T>) {
        // Moved into the closure: `OwnedRef`'s drop is inline (see `refs.rs`), so a closure that
        // owns one keeps nothing in memory for its unwinding path (a measured 0.93 -> 1.40 s in
        // `shared-attribute-keep` when such a drop was not inlined).
        let item = self.store(item);
        let write = for_locked(
            #[inline(always)]
            move |list, guard| list.push(self.header(), item, guard),
        );
        // SAFETY: `write` writes this list's array alone: `push` stores the item (published by
        // `store` before) and may grow the array, retiring the old one through `retire_array`.
        // It calls no slot, runs no user code, reaches no checkpoint, does not detach, begins no
        // section, and returns nothing.
        unsafe { self.locked(write) };
    }

    /// `self[index]`, without a lock (negative indices count from the end); `IndexError`
    /// outside.
    #[inline]
    pub fn get_item(&self, index: i64) -> Result<Bound<'py, PyAny>> {
        // The common case (no pin needed, in range, an item the thread counts inline) runs here
        // without a call, and every other case in `get_item_general`, out of line, which reads
        // again: a read with a general path inline kept five registers saved and restored in
        // every call (59.5 instructions a read, the `gil` build's 33.5).
        let py = self.py();
        let list = self.payload();
        let read = guarded(
            #[inline(always)]
            |guard| {
                let at = position(index, list.len.load(Ordering::Acquire))?;
                let item = NonNull::new(list.slots(guard).0.get(at)?.load(Ordering::Acquire))?;
                // SAFETY: loaded under the guard: held by the list or retired after it. The
                // read's gate (`try_read_unpinned`) checked that the thread is attached.
                unsafe { try_incref_inline(item, py.count_token_unchecked()) }.then_some(item)
            },
        );
        // SAFETY: `read` only reads: it loads the length, the array and the slot, and counts the
        // item with `try_incref_inline`, the count's inline half (the owner's count, an immortal
        // one, or this thread's array for a deferred object): no user code, no checkpoint, no
        // detach, no section, no write, no drop, and the item returned only if counted.
        let counted = unsafe { try_read_unpinned(self.header(), read) };
        match counted {
            // SAFETY: counted just above, for the caller.
            Some(item) => Ok(unsafe { Bound::from_owned(item) }),
            None => self.get_item_general(index),
        }
    }

    /// `self[index]`, every case: a pinned read, a reference counted out of line, and the
    /// lock where the read met a slot a concurrent removal emptied; `IndexError` outside.
    #[cold]
    #[inline(never)]
    fn get_item_general(&self, index: i64) -> Result<Bound<'py, PyAny>> {
        let py = self.py();
        let list = self.payload();
        let read = guarded(
            #[inline(always)]
            |guard| {
                let at =
                    position(index, list.len.load(Ordering::Acquire)).ok_or_else(out_of_range)?;
                let item = list
                    .slots(guard)
                    .0
                    .get(at)
                    .and_then(|slot| NonNull::new(slot.load(Ordering::Acquire)));
                // SAFETY: loaded under the guard: held by the list or retired after it.
                Ok(item.map(|item| unsafe { Bound::from_borrowed(py, item) }))
            },
        );
        // SAFETY: `read` only reads: it loads the length, the array and the slot, makes the
        // `IndexError` out of range (an allocation), and counts the item with
        // `Bound::from_borrowed`, an increment whose out-of-line path may note the object as hot
        // and ask for checkpoint work (a mutex and a flag for a later checkpoint, not a
        // checkpoint). No user code, no checkpoint, no detach, no section, no write, no drop,
        // and the item returned counted.
        let fast = unsafe { with_read_guard(self.header(), read) }?;
        match fast {
            Some(item) => Ok(item),
            None => self.get_item_locked(index),
        }
    }

    /// `self[index]` under the lock: a lock-free read met a slot a concurrent removal emptied.
    #[cold]
    fn get_item_locked(&self, index: i64) -> Result<Bound<'py, PyAny>> {
        let py = self.py();
        let read = for_locked(
            #[inline(always)]
            |list, guard| {
                let at =
                    position(index, list.len.load(Ordering::Relaxed)).ok_or_else(out_of_range)?;
                let item = NonNull::new(list.slots(guard).0[at].load(Ordering::Relaxed))
                    .expect("held below the length");
                // SAFETY: the list holds the item while we hold its lock.
                Ok(unsafe { Bound::from_borrowed(py, item) })
            },
        );
        // SAFETY: `read` only reads, under the lock: it loads the length and the slot and counts
        // the item with `Bound::from_borrowed` (no user code, no checkpoint: see
        // `get_item_general`). No detach, no section, no write, nothing retired, no drop, and the
        // item returned counted.
        unsafe { self.locked(read) }
    }

    /// `self[index] = value`; `IndexError` outside, which leaves `value` unstored and, unless
    /// another thread shrinks a shared list meanwhile, as local as it was.
    pub fn set_item<T: PyTypeInfo>(&self, index: i64, value: Bound<'py, T>) -> Result<()> {
        // Storing into a shared list publishes the value, for good: not for a write that fails.
        // The length may still shrink before the section (another thread's removal), and the
        // write then fails with the value published; a local list's length cannot change.
        if self.header().is_shared() && position(index, self.len()).is_none() {
            return Err(out_of_range());
        }
        // Moved in, as in `append`; out of range, the closure drops it, in the section (the
        // contract of `Header::section` allows destructors there).
        let value = self.store(value);
        let write = for_locked(
            #[inline(always)]
            move |list, guard| {
                let at =
                    position(index, list.len.load(Ordering::Relaxed)).ok_or_else(out_of_range)?;
                // SAFETY: this closure is the write `locked` runs below, in the section.
                let old = unsafe { replace(&list.slots(guard).0[at], value.into_raw().as_ptr()) };
                let old = NonNull::new(old).expect("slots below the length hold items");
                // SAFETY: the list owned the replaced reference, which this write, in its
                // section, has just taken out of it.
                unsafe { retire_ref(self.header(), OwnedRef::from_raw(old), guard) };
                Ok(())
            },
        );
        // SAFETY: `write` writes this list's array alone: it stores the value (published by
        // `store` before) in place of the old item, which it retires through `retire_ref`; out
        // of range it drops the value instead. Either drop runs this object model's destructors:
        // no user code, no checkpoint, no detach, no section. It calls no slot, begins no
        // section, and returns no pointer.
        unsafe { self.locked(write) }
    }

    /// `del self[index]`: the items after it move down one; `IndexError` outside.
    pub fn del_item(&self, index: i64) -> Result<()> {
        let write = for_locked(
            #[inline(always)]
            |list, guard| {
                let len = list.len.load(Ordering::Relaxed);
                let at = position(index, len).ok_or_else(out_of_range)?;
                let slots = &list.slots(guard).0[..len];
                let removed = slots[at].load(Ordering::Relaxed);
                // Readers racing with the move may see an item twice or skip one, as with any
                // concurrent change; each pointer they load is alive (held, or retired below).
                for i in at..len - 1 {
                    slots[i].store(slots[i + 1].load(Ordering::Relaxed), Ordering::Release);
                }
                // Shorten first, so readers checking the length stop before the emptied slot.
                list.len.store(len - 1, Ordering::Release);
                slots[len - 1].store(ptr::null_mut(), Ordering::Release);
                let removed = NonNull::new(removed).expect("slots below the length hold items");
                // SAFETY: the list owned the removed reference, which this write, in its
                // section, has just taken out of it.
                unsafe { retire_ref(self.header(), OwnedRef::from_raw(removed), guard) };
                Ok(())
            },
        );
        // SAFETY: `write` writes this list's array alone: it moves the items after `index` down,
        // shortens the list and retires the removed item through `retire_ref`, whose drop runs
        // destructors with no user code, no checkpoint, no detach and no section. It calls no
        // slot, reaches no checkpoint, does not detach, begins no section, publishes nothing,
        // and returns no pointer.
        unsafe { self.locked(write) }
    }

    /// Removes and returns the last item; `IndexError` if empty.
    pub fn pop(&self) -> Result<Bound<'py, PyAny>> {
        let write = for_locked(
            #[inline(always)]
            |list, guard| {
                let len = list.len.load(Ordering::Relaxed);
                let last = len
                    .checked_sub(1)
                    .ok_or_else(|| Error::IndexError("pop from empty list".into()))?;
                // Shorten first, so readers checking the length stop before the emptied slot.
                list.len.store(last, Ordering::Release);
                // SAFETY: this closure is the write `locked` runs below, in the section.
                let item = unsafe { replace(&list.slots(guard).0[last], ptr::null_mut()) };
                let item = NonNull::new(item).expect("slots below the length hold items");
                // The caller gets the list's reference, or a new one while readers may have loaded
                // the item (the list's is then retired for them).
                // SAFETY: the list owned this reference, which this write, in its section, has
                // just taken out of it.
                let popped = unsafe { hand_over(self.header(), OwnedRef::from_raw(item), guard) };
                // SAFETY: a reference of our own to an item the list held.
                Ok(unsafe { Bound::from_owned(popped.into_raw()) })
            },
        );
        // SAFETY: `write` writes this list's array alone: it shortens the list, empties the last
        // slot and takes the item with `hand_over` (the list's reference, or a new one with the
        // list's retired, which may drop this thread's expired batches: destructors with no user
        // code, no checkpoint, no detach and no section). It calls no slot, runs no user code,
        // reaches no checkpoint, does not detach, begins no section, and returns the item as a
        // reference of its own.
        unsafe { self.locked(write) }
    }

    /// The items, as a consistent snapshot of new references.
    pub fn to_vec(&self) -> Vec<Bound<'py, PyAny>> {
        let py = self.py();
        let read = for_locked(
            #[inline(always)]
            |list, guard| {
                let len = list.len.load(Ordering::Relaxed);
                list.slots(guard).0[..len]
                    .iter()
                    .map(|slot| {
                        let item = NonNull::new(slot.load(Ordering::Relaxed))
                            .expect("held below the length");
                        // SAFETY: held by the list while we hold its lock.
                        unsafe { Bound::from_borrowed(py, item) }
                    })
                    .collect()
            },
        );
        // SAFETY: `read` only reads, under the lock: it loads the items and counts each with
        // `Bound::from_borrowed` (no user code, no checkpoint: see `get_item_general`),
        // collecting them into a `Vec`. No detach, no section, no write, nothing retired, no
        // drop but on unwinding (references it counted, to objects the list still holds), and
        // counted references only returned.
        unsafe { self.locked(read) }
    }
}
