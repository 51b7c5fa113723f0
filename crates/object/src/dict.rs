//! Dicts: insertion-ordered hash tables with lock-free lookups.
//!
//! The layout is CPython's compact dict: an `indices` array (open addressing, perturbed probing)
//! pointing into an `entries` array kept in insertion order. Each entry's hash, key and value are
//! atomics, and the table is published through `crossbeam_epoch::Atomic`.
//!
//! - **Lookups** take no lock: probe the indices (acquire), compare hash and key, load the value
//!   and take a reference. Keys and values loaded this way are alive: removed or replaced ones
//!   are retired through the epoch (see `reclaim`), never released under a reader.
//! - **Writes** run in the owning object's critical section. An insert fills the next entry and
//!   then publishes its index (release), so a reader that finds the index sees the entry. A delete
//!   marks the index `DUMMY` and clears the entry. A full table is rebuilt into a new one, which
//!   replaces the old; the old table is retired (its references moved, not released).
//!
//! Keys are `str`, `int` or `bool`; anything else is unhashable (`TypeError`).

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_epoch::{Atomic, Guard};
use ftrt_gil::Python;
use ftrt_lock::{section, RawObjectLock};

use crate::error::{Error, Result};
use crate::header::{allocate, payload, Header, Kind, TypeObject};
use crate::reclaim::{owned, retire_array, retire_ref, with_guard};
use crate::refs::{Borrowed, Obj, OwnedRef};
use crate::string::{key_eq, key_hash};

const EMPTY: u32 = u32::MAX;
const DUMMY: u32 = u32::MAX - 1;
const MIN_INDICES: usize = 8;

struct Entry {
    hash: AtomicU64,
    key: AtomicPtr<Header>,
    value: AtomicPtr<Header>,
}

struct Table {
    indices: Box<[AtomicU32]>,
    entries: Box<[Entry]>,
    /// Entries filled so far, deleted ones included (written under the lock only).
    used: AtomicUsize,
}

impl Table {
    /// A table with room for `entries` entries; at most two thirds of the indices are ever used,
    /// so probing always reaches an `EMPTY` index.
    fn new(entries: usize) -> Self {
        let indices = (entries * 3 / 2 + 1).next_power_of_two().max(MIN_INDICES);
        Table {
            indices: (0..indices).map(|_| AtomicU32::new(EMPTY)).collect(),
            entries: (0..indices * 2 / 3)
                .map(|_| Entry {
                    hash: AtomicU64::new(0),
                    key: AtomicPtr::new(ptr::null_mut()),
                    value: AtomicPtr::new(ptr::null_mut()),
                })
                .collect(),
            used: AtomicUsize::new(0),
        }
    }

    fn probe(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let mask = self.indices.len() - 1;
        let mut slot = hash as usize & mask;
        let mut perturb = hash;
        std::iter::from_fn(move || {
            let current = slot;
            perturb >>= 5;
            slot = (slot
                .wrapping_mul(5)
                .wrapping_add(1)
                .wrapping_add(perturb as usize))
                & mask;
            Some(current)
        })
    }

    /// The index slot and entry holding `key`, if any.
    fn find(&self, key: NonNull<Header>, hash: u64) -> Option<(usize, &Entry)> {
        for slot in self.probe(hash) {
            match self.indices[slot].load(Ordering::Acquire) {
                EMPTY => return None,
                DUMMY => continue,
                ix => {
                    let entry = &self.entries[ix as usize];
                    if entry.hash.load(Ordering::Relaxed) != hash {
                        continue;
                    }
                    let Some(stored) = NonNull::new(entry.key.load(Ordering::Acquire)) else {
                        continue;
                    };
                    if key_eq(stored, key) {
                        return Some((slot, entry));
                    }
                }
            }
        }
        unreachable!("probing is endless and a third of the indices are always empty")
    }

    /// Appends an entry and publishes it (under the lock, with room left).
    fn append(&self, hash: u64, key: OwnedRef, value: OwnedRef) {
        let ix = self.used.load(Ordering::Relaxed);
        let entry = &self.entries[ix];
        entry.hash.store(hash, Ordering::Relaxed);
        entry.key.store(key.into_raw().as_ptr(), Ordering::Relaxed);
        entry
            .value
            .store(value.into_raw().as_ptr(), Ordering::Relaxed);
        let slot = self
            .probe(hash)
            .find(|&slot| self.indices[slot].load(Ordering::Relaxed) == EMPTY)
            .expect("a third of the indices are empty");
        // Release: a reader that finds this index sees the entry's fields.
        self.indices[slot].store(ix as u32, Ordering::Release);
        self.used.store(ix + 1, Ordering::Relaxed);
    }

    fn is_full(&self) -> bool {
        self.used.load(Ordering::Relaxed) == self.entries.len()
    }

    fn live_entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries[..self.used.load(Ordering::Relaxed)]
            .iter()
            .filter(|entry| !entry.value.load(Ordering::Relaxed).is_null())
    }
}

/// A dict's state: used by dict objects and, for attributes and globals, by instances and
/// modules (whose header lock guards it).
pub(crate) struct DictPayload {
    table: Atomic<Table>,
    len: AtomicUsize,
}

pub(crate) static DICT_TYPE: TypeObject = TypeObject::new::<DictPayload>("dict", Kind::Dict);

impl DictPayload {
    pub(crate) fn new() -> Self {
        DictPayload {
            table: Atomic::from(owned(Table::new(0))),
            len: AtomicUsize::new(0),
        }
    }

    fn table<'g>(&self, guard: &'g Guard) -> &'g Table {
        // SAFETY: never null; the guard keeps a replaced table alive.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The value for `key`, without a lock; valid while `guard` pins the thread.
    pub(crate) fn lookup(
        &self,
        key: NonNull<Header>,
        hash: u64,
        guard: &Guard,
    ) -> Option<NonNull<Header>> {
        let (_, entry) = self.table(guard).find(key, hash)?;
        NonNull::new(entry.value.load(Ordering::Acquire))
    }

    /// Inserts or replaces, under `lock`.
    pub(crate) fn insert(&self, lock: &RawObjectLock, hash: u64, key: OwnedRef, value: OwnedRef) {
        section::with(lock, || {
            with_guard(|guard| {
                let table = self.table(guard);
                if let Some((_, entry)) = table.find(key.as_ptr(), hash) {
                    let old = entry
                        .value
                        .swap(value.into_raw().as_ptr(), Ordering::AcqRel);
                    let old = NonNull::new(old).expect("a found entry holds a value");
                    // SAFETY: the dict owned the replaced value.
                    retire_ref(unsafe { OwnedRef::from_raw(old) }, guard);
                    return; // `key` (the caller's extra reference) is dropped: the entry keeps its own.
                }
                let table = if table.is_full() {
                    self.rebuild(guard)
                } else {
                    table
                };
                table.append(hash, key, value);
                self.len.fetch_add(1, Ordering::Release);
            })
        })
    }

    /// Removes `key`, under `lock`. Returns whether it was there.
    pub(crate) fn remove(&self, lock: &RawObjectLock, key: NonNull<Header>, hash: u64) -> bool {
        section::with(lock, || {
            with_guard(|guard| {
                let table = self.table(guard);
                let Some((slot, entry)) = table.find(key, hash) else {
                    return false;
                };
                table.indices[slot].store(DUMMY, Ordering::Release);
                for field in [&entry.value, &entry.key] {
                    let old = NonNull::new(field.swap(ptr::null_mut(), Ordering::AcqRel))
                        .expect("a live entry");
                    // SAFETY: the dict owned this reference.
                    retire_ref(unsafe { OwnedRef::from_raw(old) }, guard);
                }
                self.len.fetch_sub(1, Ordering::Release);
                true
            })
        })
    }

    /// Moves the live entries, in order, into a table with room to grow, and retires the old one.
    fn rebuild<'g>(&self, guard: &'g Guard) -> &'g Table {
        let old = self.table(guard);
        let live = self.len.load(Ordering::Relaxed);
        let fresh = Table::new((live * 2).max(MIN_INDICES));
        for entry in old.live_entries() {
            let hash = entry.hash.load(Ordering::Relaxed);
            // SAFETY: moving the old table's references into the new one; the old table is
            // retired without releasing them.
            let (key, value) = unsafe {
                (
                    OwnedRef::from_raw(NonNull::new_unchecked(entry.key.load(Ordering::Relaxed))),
                    OwnedRef::from_raw(NonNull::new_unchecked(entry.value.load(Ordering::Relaxed))),
                )
            };
            fresh.append(hash, key, value);
        }
        let old = self.table.swap(owned(fresh), Ordering::AcqRel, guard);
        // SAFETY: unreachable now, and its references moved to the new table.
        unsafe { retire_array(old, guard) };
        self.table(guard)
    }

    /// `self[key] = value`, under `lock`; a `TypeError` for an unhashable key.
    pub(crate) fn set<'py>(
        &self,
        lock: &RawObjectLock,
        key: &Obj<'py>,
        value: Obj<'py>,
    ) -> Result<()> {
        let hash = key_hash(key.ptr())?;
        self.insert(
            lock,
            hash,
            key.clone().into_owned_ref(),
            value.into_owned_ref(),
        );
        Ok(())
    }

    /// A new reference to the value of `key`, without a lock.
    pub(crate) fn get<'py>(&self, key: &Obj<'py>) -> Result<Option<Obj<'py>>> {
        let hash = key_hash(key.ptr())?;
        let py = key.py();
        Ok(with_guard(|guard| {
            // SAFETY: found under the guard: alive until it is dropped, so until after the increment.
            self.lookup(key.ptr(), hash, guard)
                .map(|value| unsafe { Obj::from_borrowed(py, value) })
        }))
    }

    /// The value of `key` without a lock and without counting, valid while `guard` pins the thread.
    pub(crate) fn get_borrowed<'g>(
        &self,
        key: &Obj<'_>,
        guard: &'g Guard,
    ) -> Result<Option<Borrowed<'g>>> {
        let hash = key_hash(key.ptr())?;
        // SAFETY: found under `guard`, which keeps it alive for `'g`.
        Ok(self
            .lookup(key.ptr(), hash, guard)
            .map(|value| unsafe { Borrowed::new(value) }))
    }

    /// Removes `key`, under `lock`; whether it was there.
    pub(crate) fn delete(&self, lock: &RawObjectLock, key: &Obj<'_>) -> Result<bool> {
        let hash = key_hash(key.ptr())?;
        Ok(self.remove(lock, key.ptr(), hash))
    }

    /// The live entries in insertion order, under `lock`, as new references.
    pub(crate) fn items<'py>(
        &self,
        py: Python<'py>,
        lock: &RawObjectLock,
    ) -> Vec<(Obj<'py>, Obj<'py>)> {
        section::with(lock, || {
            with_guard(|guard| {
                self.table(guard)
                    .live_entries()
                    .map(|entry| {
                        // SAFETY: held by the dict while we hold its lock.
                        unsafe {
                            (
                                Obj::from_borrowed(
                                    py,
                                    NonNull::new_unchecked(entry.key.load(Ordering::Relaxed)),
                                ),
                                Obj::from_borrowed(
                                    py,
                                    NonNull::new_unchecked(entry.value.load(Ordering::Relaxed)),
                                ),
                            )
                        }
                    })
                    .collect()
            })
        })
    }

    /// The live entries for `Debug`, valid while `guard` pins the thread.
    pub(crate) fn entries_for_display(
        &self,
        guard: &Guard,
    ) -> Vec<(NonNull<Header>, NonNull<Header>)> {
        self.table(guard)
            .entries
            .iter()
            .filter_map(|entry| {
                let key = NonNull::new(entry.key.load(Ordering::Acquire))?;
                let value = NonNull::new(entry.value.load(Ordering::Acquire))?;
                Some((key, value))
            })
            .collect()
    }
}

impl Drop for DictPayload {
    fn drop(&mut self) {
        // SAFETY: the owner is dead: nothing else can reach the table.
        let guard = unsafe { crossbeam_epoch::unprotected() };
        let table = self
            .table
            .swap(crossbeam_epoch::Shared::null(), Ordering::Relaxed, guard);
        // SAFETY: the dict owned this table.
        let table = unsafe { table.into_owned() };
        for entry in table.live_entries() {
            for field in [&entry.key, &entry.value] {
                if let Some(object) = NonNull::new(field.load(Ordering::Relaxed)) {
                    // SAFETY: the dict owned this reference.
                    drop(unsafe { OwnedRef::from_raw(object) });
                }
            }
        }
    }
}

fn key_error(key: &Obj<'_>) -> Error {
    Error::KeyError(format!("{key:?}"))
}

impl<'py> Obj<'py> {
    /// An empty dict.
    pub fn dict(py: Python<'py>) -> Self {
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe { Obj::from_owned(allocate(&DICT_TYPE, DictPayload::new(), py.count_token())) }
    }

    fn as_dict(&self) -> Result<&DictPayload> {
        if self.kind() != Kind::Dict {
            return Err(Error::TypeError(format!(
                "'{}' object is not a dict",
                self.type_name()
            )));
        }
        // SAFETY: kind checked; alive.
        Ok(unsafe { payload::<DictPayload>(self.ptr()) })
    }

    /// `self[key] = value` for a dict.
    pub fn dict_set(&self, key: &Obj<'py>, value: Obj<'py>) -> Result<()> {
        self.as_dict()?.set(&self.header().lock, key, value)
    }

    /// `self[key]` for a dict, without a lock; `KeyError` if absent.
    pub fn dict_get(&self, key: &Obj<'py>) -> Result<Obj<'py>> {
        self.as_dict()?.get(key)?.ok_or_else(|| key_error(key))
    }

    /// `self[key]` for a dict, without a lock and without counting: valid while `guard` pins
    /// the thread.
    pub fn dict_get_borrowed<'g>(
        &self,
        key: &Obj<'py>,
        guard: &'g crossbeam_epoch::Guard,
    ) -> Result<Borrowed<'g>> {
        self.as_dict()?
            .get_borrowed(key, guard)?
            .ok_or_else(|| key_error(key))
    }

    /// `del self[key]` for a dict; `KeyError` if absent.
    pub fn dict_del(&self, key: &Obj<'py>) -> Result<()> {
        if self.as_dict()?.delete(&self.header().lock, key)? {
            Ok(())
        } else {
            Err(key_error(key))
        }
    }

    /// Whether a dict has `key`.
    pub fn dict_contains(&self, key: &Obj<'py>) -> Result<bool> {
        let dict = self.as_dict()?;
        with_guard(|guard| dict.get_borrowed(key, guard).map(|found| found.is_some()))
    }

    /// The `(key, value)` pairs of a dict in insertion order (a consistent snapshot).
    pub fn dict_items(&self) -> Result<Vec<(Obj<'py>, Obj<'py>)>> {
        Ok(self.as_dict()?.items(self.py(), &self.header().lock))
    }
}
