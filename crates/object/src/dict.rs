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

use std::fmt::{self, Formatter};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crossbeam_epoch::{Atomic, Guard};
use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::{hash_object, keys_equal, Bound};
use crate::error::{Error, Result};
use crate::guard::ReadGuard;
use crate::header::{allocate, Header, Kind, TypeObject};
use crate::reclaim::{
    guarded, owned, replace, retire_array, retire_ref, try_read_unpinned, with_read_guard,
    with_unchanging, write_contents,
};
use crate::refs::{drop_items, incref, try_incref_inline, OwnedRef};
use crate::slots::{Payload, Repr};
use crate::types::{py_type, PyAny, PyTypeInfo};

py_type!(
    /// An insertion-ordered mapping with `str`, `int` or `bool` keys: writes in its critical
    /// section, lookups without a lock.
    PyDict, "dict", Kind::Dict, DictPayload
);

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
    ///
    /// Panics, before allocating, where the entries' positions would not fit an index below the
    /// `DUMMY` and `EMPTY` marks (room for more than 2^32 * 2 / 3, about 2.86 billion entries;
    /// a rebuild asks for twice the live entries, so a dict of about 1.43 billion): an index
    /// that wrapped would find the wrong entry.
    fn new(entries: usize) -> Self {
        let indices = (entries * 3 / 2 + 1).next_power_of_two().max(MIN_INDICES);
        assert!(
            indices * 2 / 3 <= DUMMY as usize,
            "a dict table has room for at most {} entries; {entries} asked for",
            (1_usize << 32) * 2 / 3
        );
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
    ///
    /// # Safety
    /// `key` is alive for the call, and the caller loaded `self` under a guard it still holds
    /// (so the keys stored in it are alive).
    unsafe fn find(&self, key: NonNull<Header>, hash: u64) -> Option<(usize, &Entry)> {
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
                    // SAFETY: `stored` was loaded under the caller's guard, so it is alive;
                    // `key` is alive per the contract.
                    if unsafe { keys_equal(stored, key) } {
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
        // Release (key and value): `Debug` reads entries without going through the indices, so
        // these stores publish the objects to it themselves.
        entry.key.store(key.into_raw().as_ptr(), Ordering::Release);
        entry
            .value
            .store(value.into_raw().as_ptr(), Ordering::Release);
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

/// Empties a live entry of `owner`'s table, in its critical section: the value, then the key,
/// each reference retired. `del` and the collector's `clear` both remove entries this way.
///
/// # Safety
/// `entry` is a live entry of the table of the dict that `owner` heads, and the caller is a
/// write in `owner`'s critical section (`write_contents`) running under `guard`.
unsafe fn retire_entry(owner: &Header, entry: &Entry, guard: &Guard) {
    for field in [&entry.value, &entry.key] {
        // SAFETY: a write in `owner`'s section (the contract).
        let held = NonNull::new(unsafe { replace(field, ptr::null_mut()) }).expect("a live entry");
        // SAFETY: the dict owned this reference, and this write, in its section (the
        // contract), has just taken it out.
        unsafe { retire_ref(owner, OwnedRef::from_raw(held), guard) };
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

    fn table<'g>(&'g self, guard: &'g Guard) -> &'g Table {
        // SAFETY: never null while `self` lives (borrowed for `'g`); the guard keeps a replaced
        // table alive.
        unsafe { self.table.load(Ordering::Acquire, guard).deref() }
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// The value for `key`, without a lock: a pointer loaded under `guard`. What keeps the
    /// value alive after the load is the caller's to ensure: a use that ends inside
    /// the guard's pin, the object's lock, or a `ReadGuard`.
    ///
    /// # Safety
    /// `key` is alive for the call.
    pub(crate) unsafe fn lookup(
        &self,
        key: NonNull<Header>,
        hash: u64,
        guard: &Guard,
    ) -> Option<NonNull<Header>> {
        // SAFETY: `key` is alive per the contract; the table was loaded under `guard`.
        let (_, entry) = unsafe { self.table(guard).find(key, hash) }?;
        NonNull::new(entry.value.load(Ordering::Acquire))
    }

    /// Inserts or replaces, in `owner`'s critical section. The key is counted only when a new
    /// entry takes it: a replaced entry keeps the reference it has.
    ///
    /// # Safety
    /// `key` is alive for the call; `owner` heads the dict whose payload this is (its section
    /// and its test for readers guard this table); and `key` and `value` were published
    /// (`Header::before_storing`) where that dict is shared, so that no local object is handed
    /// to another thread.
    pub(crate) unsafe fn insert(
        &self,
        py: Python<'_>,
        owner: &Header,
        hash: u64,
        key: NonNull<Header>,
        value: OwnedRef,
    ) {
        let write = guarded(
            #[inline(always)]
            move |guard| {
                let table = self.table(guard);
                // SAFETY: `key` is alive per the contract; the table was loaded under `guard`.
                if let Some((_, entry)) = unsafe { table.find(key, hash) } {
                    // SAFETY: this closure is the write `write_contents` runs below.
                    let old = unsafe { replace(&entry.value, value.into_raw().as_ptr()) };
                    let old = NonNull::new(old).expect("a found entry holds a value");
                    // SAFETY: the dict `owner` heads (the contract) owned the replaced value,
                    // which this write, in its section, has just taken out of it.
                    unsafe { retire_ref(owner, OwnedRef::from_raw(old), guard) };
                    return;
                }
                let table = if table.is_full() {
                    // SAFETY: `owner` heads this dict (the contract); this closure is the
                    // write `write_contents` runs below, under `guard`.
                    unsafe { self.rebuild(owner, guard) }
                } else {
                    table
                };
                // SAFETY: `key` is alive per the contract; the increment is the entry's reference.
                // The count token is used at once, attached (checked as it is made).
                let key = unsafe {
                    incref(key, py.count_token());
                    OwnedRef::from_raw(key)
                };
                table.append(hash, key, value);
                // A load and a store: writers hold the section (see `replace`).
                let len = self.len.load(Ordering::Relaxed);
                self.len.store(len + 1, Ordering::Release);
            },
        );
        // SAFETY: `write` writes this dict's table alone: it finds the key (`Table::find`, whose
        // `keys_equal` calls only this crate's `eq` slots: no user code), then either replaces
        // the value, retiring the old one through `retire_ref`, or counts the key and appends
        // the entry, after a `rebuild` that retires the old table through `retire_array`. It
        // reaches no checkpoint, does not detach, begins no section, and publishes nothing
        // (`set` published key and value before). What the retirement drops (the replaced value
        // at once, or this thread's expired batches) runs this object model's destructors: no
        // user code, no checkpoint, no detach, no section. It returns nothing.
        unsafe { write_contents(owner, py, write) }
    }

    /// Removes `key`, in `owner`'s critical section. Returns whether it was there.
    ///
    /// # Safety
    /// `key` is alive for the call, and `owner` heads the dict whose payload this is.
    pub(crate) unsafe fn remove(
        &self,
        py: Python<'_>,
        owner: &Header,
        key: NonNull<Header>,
        hash: u64,
    ) -> bool {
        let write = guarded(
            #[inline(always)]
            |guard| {
                let table = self.table(guard);
                // SAFETY: `key` is alive per the contract; the table was loaded under `guard`.
                let Some((slot, entry)) = (unsafe { table.find(key, hash) }) else {
                    return false;
                };
                table.indices[slot].store(DUMMY, Ordering::Release);
                // SAFETY: an entry of the table of `owner`'s dict (the contract), found live;
                // this closure is the write `write_contents` runs below.
                unsafe { retire_entry(owner, entry, guard) };
                let len = self.len.load(Ordering::Relaxed);
                self.len.store(len - 1, Ordering::Release);
                true
            },
        );
        // SAFETY: `write` writes this dict's table alone: it finds the key (`Table::find`: this
        // crate's `eq` slots, no user code), marks its index deleted, and retires the entry's
        // value and key through `retire_ref` (`retire_entry`), whose drops run destructors with
        // no user code, no checkpoint, no detach and no section. It reaches no checkpoint, does
        // not detach, begins no section, publishes nothing, and returns a `bool`.
        unsafe { write_contents(owner, py, write) }
    }

    /// Removes every entry, in `owner`'s critical section: the table is swapped for an empty
    /// one, and the old one retired with its references.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    pub(crate) unsafe fn clear_entries(&self, py: Python<'_>, owner: &Header) {
        let write = guarded(
            #[inline(always)]
            |guard| {
                for entry in self.table(guard).live_entries() {
                    // SAFETY: a live entry of the table of `owner`'s dict (the contract); this
                    // closure is the write `write_contents` runs below.
                    unsafe { retire_entry(owner, entry, guard) };
                }
                let old = self
                    .table
                    .swap(owned(Table::new(0)), Ordering::AcqRel, guard);
                // SAFETY: unreachable now, and it holds no references any more.
                unsafe { retire_array(owner, old, guard) };
                self.len.store(0, Ordering::Release);
            },
        );
        // SAFETY: `write` writes this dict's table alone: it retires every live entry's value and
        // key through `retire_ref` (`retire_entry`), whose drops run destructors with no user
        // code, no checkpoint, no detach and no section, then swaps in an empty table and
        // retires the old one through `retire_array`. It calls no slot, reaches no checkpoint,
        // does not detach, begins no section, publishes nothing, and returns nothing.
        unsafe { write_contents(owner, py, write) }
    }

    /// Moves the live entries, in order, into a table with room to grow, and retires the old one.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload, and the caller is a write in its
    /// critical section (`write_contents`) running under `guard`.
    unsafe fn rebuild<'g>(&'g self, owner: &Header, guard: &'g Guard) -> &'g Table {
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
        unsafe { retire_array(owner, old, guard) };
        self.table(guard)
    }

    /// `self[key] = value`, in `owner`'s critical section; a `TypeError` for an unhashable key.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    pub(crate) unsafe fn set<'py, V: PyTypeInfo>(
        &self,
        owner: &Header,
        key: &Bound<'py, PyAny>,
        value: Bound<'py, V>,
    ) -> Result<()> {
        // SAFETY: `key` keeps the object alive.
        let hash = unsafe { hash_object(key.ptr()) }?;
        owner.before_storing(key.header());
        owner.before_storing(value.header());
        // SAFETY: `key` keeps the object alive.
        unsafe { self.insert(key.py(), owner, hash, key.ptr(), value.into_owned_ref()) };
        Ok(())
    }

    /// A new reference to the value of `key`, without a lock.
    ///
    /// Always inlined: each caller (`get_item`, an instance's or a module's `get_attr`) is a
    /// thin wrapper, and the inliner kept this out of line in the free-threaded builds, where a
    /// call, six saved registers and a result passed through memory were a tenth of
    /// `shared-attribute-keep`'s iteration. The common case (no pin needed, a value the thread
    /// counts inline) runs inline; a read that needs a pin or counts out of line looks up again
    /// in [`get_general`](Self::get_general), out of line, so that the inline part builds no
    /// closure on the stack for it.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    #[inline(always)]
    pub(crate) unsafe fn get<'py>(
        &self,
        owner: &Header,
        key: &Bound<'py, PyAny>,
    ) -> Result<Option<Bound<'py, PyAny>>> {
        // SAFETY: `key` keeps the object alive.
        let hash = unsafe { hash_object(key.ptr()) }?;
        let py = key.py();
        let read = guarded(
            #[inline(always)]
            |guard| {
                // SAFETY: `key` keeps its object alive.
                match unsafe { self.lookup(key.ptr(), hash, guard) } {
                    None => Some(None),
                    Some(value) => {
                        // SAFETY: the value was found under the guard: alive until it is
                        // dropped, so until after the increment. The read's gate
                        // (`try_read_unpinned`) checked that the thread is attached.
                        let counted =
                            unsafe { try_incref_inline(value, py.count_token_unchecked()) };
                        counted.then_some(Some(value))
                    }
                }
            },
        );
        // SAFETY: `read` only reads: it looks the key up (loads, and `keys_equal`, which calls
        // only this crate's `eq` slots: no user code) and counts the value it found with
        // `try_incref_inline`, the count's inline half (the owner's count, an immortal one, or
        // this thread's array for a deferred object), which runs no user code and reaches no
        // checkpoint. It writes nothing, publishes nothing, does not detach, begins or ends no
        // section, drops nothing, and returns the value only if it counted it.
        let fast = unsafe { try_read_unpinned(owner, read) };
        match fast {
            // SAFETY: counted above, for the caller.
            Some(found) => Ok(found.map(|value| unsafe { Bound::from_owned(value) })),
            // SAFETY: `owner` heads this dict (the contract).
            None => Ok(unsafe { self.get_general(owner, key, hash) }),
        }
    }

    /// [`get`](Self::get), every case: a pinned read, and a reference counted out of line.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    #[cold]
    #[inline(never)]
    unsafe fn get_general<'py>(
        &self,
        owner: &Header,
        key: &Bound<'py, PyAny>,
        hash: u64,
    ) -> Option<Bound<'py, PyAny>> {
        let py = key.py();
        let read = guarded(
            #[inline(always)]
            |guard| {
                // SAFETY: as in `get`.
                unsafe { self.lookup(key.ptr(), hash, guard) }
                    .map(|value| unsafe { Bound::from_borrowed(py, value) })
            },
        );
        // SAFETY: `read` only reads: it looks the key up as `get` does (no user code) and counts
        // the value with `Bound::from_borrowed`, an increment whose out-of-line path may note
        // the object as hot and ask for checkpoint work (a mutex and a flag for a later
        // checkpoint, not a checkpoint). It writes nothing, publishes nothing, does not detach,
        // begins or ends no section, drops nothing, and returns the value counted.
        unsafe { with_read_guard(owner, read) }
    }

    /// The value of `key` without a lock and without counting.
    ///
    /// # Safety
    /// The object that holds this payload stays alive for `'g` (the caller borrows a reference to
    /// it for `'g`): while it holds the value, its reference keeps the value alive; once a
    /// writer removes it, the removal is retired and `guard` keeps it alive.
    pub(crate) unsafe fn get_borrowed<'g>(
        &'g self,
        key: &Bound<'_, PyAny>,
        guard: &'g ReadGuard<'_>,
    ) -> Result<Option<Borrowed<'g>>> {
        // SAFETY: `key` keeps the object alive.
        let hash = unsafe { hash_object(key.ptr()) }?;
        // SAFETY: `key` keeps its object alive. The value was found under `guard`, and is
        // alive for `'g` as argued in the contract.
        Ok(unsafe { self.lookup(key.ptr(), hash, guard.epoch()) }
            .map(|value| unsafe { Borrowed::new(value) }))
    }

    /// Removes `key`, in `owner`'s critical section; whether it was there.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    pub(crate) unsafe fn delete(&self, owner: &Header, key: &Bound<'_, PyAny>) -> Result<bool> {
        // SAFETY: `key` keeps the object alive.
        let hash = unsafe { hash_object(key.ptr()) }?;
        // SAFETY: `key` keeps its object alive.
        Ok(unsafe { self.remove(key.py(), owner, key.ptr(), hash) })
    }

    /// The live entries in insertion order, in `owner`'s critical section, as new references.
    ///
    /// # Safety
    /// `owner` heads the object that holds this payload (its section and its test for readers
    /// guard this table).
    pub(crate) unsafe fn items<'py>(
        &self,
        py: Python<'py>,
        owner: &Header,
    ) -> Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        let in_section = || {
            let read = guarded(
                #[inline(always)]
                |guard| {
                    self.table(guard)
                        .live_entries()
                        .map(|entry| {
                            // SAFETY: held by the dict while we hold its lock.
                            unsafe {
                                (
                                    Bound::from_borrowed(
                                        py,
                                        NonNull::new_unchecked(entry.key.load(Ordering::Relaxed)),
                                    ),
                                    Bound::from_borrowed(
                                        py,
                                        NonNull::new_unchecked(entry.value.load(Ordering::Relaxed)),
                                    ),
                                )
                            }
                        })
                        .collect()
                },
            );
            // SAFETY: `read` only reads, inside the dict's section, which it neither begins nor
            // ends: it loads the live entries and counts each key and value with
            // `Bound::from_borrowed` (no user code, no checkpoint: see `get_general`), collecting
            // them into a `Vec`. It writes nothing, publishes nothing, does not detach, drops
            // nothing but on unwinding (references it counted, to objects the dict still holds),
            // and returns counted references only.
            unsafe { with_read_guard(owner, read) }
        };
        // SAFETY: `in_section` reads the entries and counts them (see above): it runs no user
        // code, does not detach, and publishes nothing.
        unsafe { owner.section(py, in_section) }
    }
}

impl Payload for DictPayload {
    const HOLDS_CHANGE: bool = true;
    const HOLDS_REFERENCES: bool = true;

    fn repr(
        &self,
        this: Borrowed<'_>,
        f: &mut Formatter<'_>,
        nested: &mut Repr<'_>,
    ) -> fmt::Result {
        self.repr_entries(this, f, nested, "{", "}")
    }

    unsafe fn clear(&self, this: &Header, py: Python<'_>) {
        // SAFETY: `this` heads the object holding this payload (the slot's contract).
        unsafe { self.clear_entries(py, this) };
    }

    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        let walk = |guard: &Guard| {
            for entry in self.table(guard).live_entries() {
                for field in [&entry.key, &entry.value] {
                    let held = NonNull::new(field.load(Ordering::Relaxed)).expect("a live entry");
                    // SAFETY: the table holds the reference, and nothing changes what it holds
                    // during the call (the caller's contract).
                    visit(unsafe { Borrowed::new(held) });
                }
            }
        };
        // SAFETY: nothing changes what the dict holds during the call (the caller's contract),
        // and the walk retires nothing.
        unsafe { with_unchanging(walk) }
    }
}

impl DictPayload {
    /// Writes the entries as `key: value` pairs between `open` and `close` (for dicts, and for
    /// the attributes of instances and modules).
    pub(crate) fn repr_entries(
        &self,
        this: Borrowed<'_>,
        f: &mut Formatter<'_>,
        nested: &mut Repr<'_>,
        open: &str,
        close: &str,
    ) -> fmt::Result {
        // Copied out before the first write, under the print's guard, which keeps the entries a
        // writer removes meanwhile alive (not, in the `gil` build, a table it replaces).
        // Entries are read directly (not through the indices): their stores publish them.
        let entries: Vec<_> = self
            .table(nested.guard())
            .entries
            .iter()
            .filter_map(|entry| {
                let key = NonNull::new(entry.key.load(Ordering::Acquire))?;
                let value = NonNull::new(entry.value.load(Ordering::Acquire))?;
                Some((key, value))
            })
            .collect();
        nested.nested(f, this, open, close, |nested, f| {
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                // SAFETY: loaded from the table (alive for the call) under the print's guard.
                unsafe { nested.object(key, f) }?;
                f.write_str(": ")?;
                // SAFETY: as above.
                unsafe { nested.object(value, f) }?;
            }
            Ok(())
        })
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
        drop_items(|| {
            for entry in table.live_entries() {
                for field in [&entry.key, &entry.value] {
                    if let Some(object) = NonNull::new(field.load(Ordering::Relaxed)) {
                        // SAFETY: the dict owned this reference.
                        drop(unsafe { OwnedRef::from_raw(object) });
                    }
                }
            }
        });
    }
}

fn key_error(key: &Bound<'_, PyAny>) -> Error {
    Error::KeyError(format!("{key:?}"))
}

impl PyDict {
    /// An empty dict.
    pub fn new(py: Python<'_>) -> Bound<'_, PyDict> {
        // SAFETY: a fresh dict's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe {
            Bound::from_owned(allocate(
                &DICT_TYPE,
                DictPayload::new(),
                py.new_object_token(),
            ))
        }
    }
}

impl<'py> Bound<'py, PyDict> {
    /// `len()`, without a lock.
    #[inline]
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the dict is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `self[key] = value`; `TypeError` for an unhashable key.
    pub fn set_item<V: PyTypeInfo>(
        &self,
        key: &Bound<'py, PyAny>,
        value: Bound<'py, V>,
    ) -> Result<()> {
        // SAFETY: the header of the dict whose payload this is.
        unsafe { self.payload().set(self.header(), key, value) }
    }

    /// `self[key]`, without a lock; `KeyError` if absent.
    pub fn get_item(&self, key: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
        // SAFETY: the header of the dict whose payload this is.
        unsafe { self.payload().get(self.header(), key) }?.ok_or_else(|| key_error(key))
    }

    /// `self[key]`, without a lock and without counting; `KeyError` if absent. The value lives
    /// as long as both this handle and `guard` are borrowed: the key may be replaced or deleted
    /// meanwhile, on this thread or another, and the old value stays alive until the guard is
    /// gone.
    ///
    /// ```
    /// use ftrt_gil::Python;
    /// use ftrt_object::{PyDict, PyFloat, PyStr, ReadGuard};
    ///
    /// Python::attach(|py| {
    ///     let dict = PyDict::new(py);
    ///     let key = PyStr::intern(py, "k");
    ///     dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
    ///     let guard = ReadGuard::new(py);
    ///     let value = dict.get_item_borrowed(&key, &guard).unwrap();
    ///     dict.del_item(&key).unwrap();
    ///     assert_eq!(value.to_f64(), Ok(2.5));
    /// });
    /// ```
    pub fn get_item_borrowed<'g>(
        &'g self,
        key: &Bound<'py, PyAny>,
        guard: &'g ReadGuard<'_>,
    ) -> Result<Borrowed<'g>> {
        // SAFETY: `self` is borrowed for `'g` and keeps the dict alive.
        unsafe { self.payload().get_borrowed(key, guard) }?.ok_or_else(|| key_error(key))
    }

    /// `del self[key]`; `KeyError` if absent.
    pub fn del_item(&self, key: &Bound<'py, PyAny>) -> Result<()> {
        // SAFETY: the header of the dict whose payload this is.
        if unsafe { self.payload().delete(self.header(), key) }? {
            Ok(())
        } else {
            Err(key_error(key))
        }
    }

    /// `key in self`, without a lock; `TypeError` for an unhashable key.
    pub fn contains(&self, key: &Bound<'py, PyAny>) -> Result<bool> {
        let dict = self.payload();
        // SAFETY: `key` keeps the object alive.
        let hash = unsafe { hash_object(key.ptr()) }?;
        let read = guarded(
            #[inline(always)]
            |guard| {
                // SAFETY: `key` keeps its object alive; only the pointer's presence is used.
                unsafe { dict.lookup(key.ptr(), hash, guard) }.is_some()
            },
        );
        // SAFETY: `read` only looks the key up (loads, and `keys_equal`, which calls only this
        // crate's `eq` slots: no user code) and answers whether it is there: no write, no
        // checkpoint, no detach, no section, no drop, and no pointer returned.
        Ok(unsafe { with_read_guard(self.header(), read) })
    }

    /// The `(key, value)` pairs in insertion order (a consistent snapshot).
    pub fn items(&self) -> Vec<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
        // SAFETY: the header of the dict whose payload this is.
        unsafe { self.payload().items(self.py(), self.header()) }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "a dict table has room for at most 2863311530 entries")]
    fn a_table_whose_positions_would_not_fit_an_index_is_refused_before_it_is_allocated() {
        // 2^33 indices, whose two thirds (5.7 billion entries) pass the `DUMMY` mark.
        let _ = super::Table::new(3_000_000_000);
    }
}
