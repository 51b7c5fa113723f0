//! Lists: mutations inside the list's critical section, `len` and `list[i]` without a lock.
//!
//! The items live in an array published through `crossbeam_epoch::Atomic`; the length is a
//! separate atomic. A reader loads the length, then the array, then the slot, and takes a
//! reference to what it found: the item is alive because the list still holds it or because the
//! writer that removed it retired its reference through the epoch (see `reclaim`). If the slot
//! is empty (a concurrent `pop`) or beyond the array (a concurrent shrink), the reader falls back
//! to reading under the lock. Growing the array copies the pointers into a new array and
//! retires the old one; readers still on the old array see the same, still-alive items.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

use crossbeam_epoch::{Atomic, Guard};
use ftrt_gil::{section, Python};

use crate::error::{Error, Result};
use crate::header::{allocate, payload, Header, Kind, TypeObject};
use crate::reclaim::{owned, retire_array, retire_ref, with_guard};
use crate::refs::{Obj, OwnedRef};

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

    fn slots<'g>(&'g self, guard: &'g Guard) -> &'g Slots {
        // SAFETY: the array is never null while `self` lives (borrowed for `'g`), and the guard
        // keeps a replaced array alive.
        unsafe { self.slots.load(Ordering::Acquire, guard).deref() }
    }

    /// Appends under the lock: store the item, then publish the new length.
    fn push(&self, item: OwnedRef, guard: &Guard) {
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
            unsafe { retire_array(old, guard) };
            slots = self.slots(guard);
        }
        slots.0[len].store(item.into_raw().as_ptr(), Ordering::Release);
        self.len.store(len + 1, Ordering::Release);
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
        for slot in slots.0.iter() {
            if let Some(item) = NonNull::new(slot.load(Ordering::Relaxed)) {
                // SAFETY: the list owned this reference.
                drop(unsafe { OwnedRef::from_raw(item) });
            }
        }
    }
}

/// Turns a Python-style index (negative counts from the end) into a position below `len`.
pub(crate) fn position(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let index = if index < 0 { index + len } else { index };
    (0..len).contains(&index).then_some(index as usize)
}

fn out_of_range() -> Error {
    Error::IndexError("list index out of range".into())
}

impl<'py> Obj<'py> {
    /// A list of `items`.
    pub fn list(py: Python<'py>, items: impl IntoIterator<Item = Obj<'py>>) -> Self {
        let items = items.into_iter().map(Obj::into_owned_ref).collect();
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe {
            Obj::from_owned(allocate(
                &LIST_TYPE,
                ListPayload::new(items),
                py.count_token(),
            ))
        }
    }

    fn as_list(&self) -> Result<&ListPayload> {
        if self.kind() != Kind::List {
            return Err(Error::TypeError(format!(
                "'{}' object is not a list",
                self.type_name()
            )));
        }
        // SAFETY: checked the kind; this reference keeps the list alive.
        Ok(unsafe { payload::<ListPayload>(self.ptr()) })
    }

    /// Appends `item` to a list.
    pub fn append(&self, item: Obj<'py>) -> Result<()> {
        let list = self.as_list()?;
        let item = item.into_owned_ref();
        section::with(self.py(), &self.header().lock, || {
            with_guard(|guard| list.push(item, guard))
        });
        Ok(())
    }

    /// Replaces the item at `index` of a list.
    pub fn set_item(&self, index: i64, value: Obj<'py>) -> Result<()> {
        let list = self.as_list()?;
        let value = value.into_owned_ref();
        section::with(self.py(), &self.header().lock, || {
            with_guard(|guard| {
                let at =
                    position(index, list.len.load(Ordering::Relaxed)).ok_or_else(out_of_range)?;
                let old = list.slots(guard).0[at].swap(value.into_raw().as_ptr(), Ordering::AcqRel);
                let old = NonNull::new(old).expect("slots below the length hold items");
                // SAFETY: the list owned the replaced reference.
                retire_ref(unsafe { OwnedRef::from_raw(old) }, guard);
                Ok(())
            })
        })
    }

    /// Removes and returns the last item of a list.
    pub fn pop(&self) -> Result<Obj<'py>> {
        let list = self.as_list()?;
        let py = self.py();
        section::with(self.py(), &self.header().lock, || {
            with_guard(|guard| {
                let len = list.len.load(Ordering::Relaxed);
                let last = len
                    .checked_sub(1)
                    .ok_or_else(|| Error::IndexError("pop from empty list".into()))?;
                // Shorten first, so readers checking the length stop before the emptied slot.
                list.len.store(last, Ordering::Release);
                let item = list.slots(guard).0[last].swap(ptr::null_mut(), Ordering::AcqRel);
                let item = NonNull::new(item).expect("slots below the length hold items");
                // The caller gets a new reference; the list's own is retired for the readers that
                // may have loaded it.
                // SAFETY: the list's reference keeps it alive until retired.
                let popped = unsafe { Obj::from_borrowed(py, item) };
                // SAFETY: the list owned this reference.
                retire_ref(unsafe { OwnedRef::from_raw(item) }, guard);
                Ok(popped)
            })
        })
    }

    /// The item at `index` of a list or tuple (negative indices count from the end). Lists are
    /// read without a lock.
    pub fn get_item(&self, index: i64) -> Result<Obj<'py>> {
        let py = self.py();
        match self.kind() {
            Kind::Tuple => {
                // SAFETY: kind checked; this reference keeps the tuple alive.
                let items = unsafe { crate::tuple::items(self.ptr()) };
                let at = position(index, items.len())
                    .ok_or_else(|| Error::IndexError("tuple index out of range".into()))?;
                // SAFETY: the tuple holds the item.
                Ok(unsafe { Obj::from_borrowed(py, items[at].as_ptr()) })
            }
            Kind::List => {
                let list = self.as_list()?;
                let fast = with_guard(|guard| {
                    let at = position(index, list.len.load(Ordering::Acquire))
                        .ok_or_else(out_of_range)?;
                    let item = list
                        .slots(guard)
                        .0
                        .get(at)
                        .and_then(|slot| NonNull::new(slot.load(Ordering::Acquire)));
                    // SAFETY: loaded under the guard: held by the list or retired after it.
                    Ok(item.map(|item| unsafe { Obj::from_borrowed(py, item) }))
                })?;
                match fast {
                    Some(item) => Ok(item),
                    None => self.get_item_locked(list, index),
                }
            }
            _ => Err(Error::TypeError(format!(
                "'{}' object is not subscriptable",
                self.type_name()
            ))),
        }
    }

    #[cold]
    fn get_item_locked(&self, list: &ListPayload, index: i64) -> Result<Obj<'py>> {
        let py = self.py();
        section::with(self.py(), &self.header().lock, || {
            with_guard(|guard| {
                let at =
                    position(index, list.len.load(Ordering::Relaxed)).ok_or_else(out_of_range)?;
                let item = NonNull::new(list.slots(guard).0[at].load(Ordering::Relaxed))
                    .expect("held below the length");
                // SAFETY: the list holds the item while we hold its lock.
                Ok(unsafe { Obj::from_borrowed(py, item) })
            })
        })
    }

    /// The items of a list or tuple, as a consistent snapshot.
    pub fn to_vec(&self) -> Result<Vec<Obj<'py>>> {
        let py = self.py();
        if self.kind() == Kind::Tuple {
            // SAFETY: kind checked; alive.
            let items = unsafe { crate::tuple::items(self.ptr()) };
            // SAFETY: the tuple holds each item.
            return Ok(items
                .iter()
                .map(|item| unsafe { Obj::from_borrowed(py, item.as_ptr()) })
                .collect());
        }
        let list = self.as_list()?;
        Ok(section::with(self.py(), &self.header().lock, || {
            with_guard(|guard| {
                let len = list.len.load(Ordering::Relaxed);
                list.slots(guard).0[..len]
                    .iter()
                    .map(|slot| {
                        let item = NonNull::new(slot.load(Ordering::Relaxed))
                            .expect("held below the length");
                        // SAFETY: held by the list while we hold its lock.
                        unsafe { Obj::from_borrowed(py, item) }
                    })
                    .collect()
            })
        }))
    }
}

/// The length of a live list (no lock).
///
/// # Safety
/// `object` is a live list.
pub(crate) unsafe fn len(object: NonNull<Header>) -> usize {
    // SAFETY: per the contract.
    unsafe { payload::<ListPayload>(object) }
        .len
        .load(Ordering::Acquire)
}

/// The items of a list for `Debug`: pointers loaded under `guard`, which stay valid while a
/// `ReadGuard` keeps what writers remove alive.
///
/// # Safety
/// `object` is a list, alive for the call.
pub(crate) unsafe fn items_for_display(
    object: NonNull<Header>,
    guard: &Guard,
) -> Vec<NonNull<Header>> {
    // SAFETY: per the contract.
    let list = unsafe { payload::<ListPayload>(object) };
    let len = list.len.load(Ordering::Acquire);
    list.slots(guard)
        .0
        .iter()
        .take(len)
        .filter_map(|slot| NonNull::new(slot.load(Ordering::Acquire)))
        .collect()
}
