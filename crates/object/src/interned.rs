//! The interning table: insert-only, with lookups that write nothing.
//!
//! Interned strings are immortal, so the table never removes an entry, and that makes lock-free
//! lookups simple: an open-addressing array of pointers, each slot written once (from null to a
//! string) under the writers' mutex and read with acquire loads. A lookup touches no cache line
//! that another thread writes unless that thread is inserting, so threads interning the same
//! names scale: a lock-based map (`dashmap`, which the table used before) takes a shard's read
//! lock, an atomic write to a line every looking-up thread shares.
//!
//! A full table is not resized in place: the writer builds one twice the size, publishes it, and
//! *keeps* the old one, since a lookup may still be probing it. Old tables add up to less than
//! the current one, and none is freed while the program runs (the strings in them never are
//! either). A lookup on an old table can miss a string inserted since; it then takes the
//! writers' mutex and looks again in the current table before inserting.

use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::header::{payload, Header};
use crate::scalars::Immortal;
use crate::string::StrPayload;

/// Slots in the first table: a power of two.
const FIRST_CAPACITY: usize = 1024;

/// An open-addressing table of interned strings; a null slot is empty.
struct Table {
    slots: Box<[AtomicPtr<Header>]>,
}

impl Table {
    fn with_capacity(capacity: usize) -> Table {
        debug_assert!(capacity.is_power_of_two());
        Table {
            slots: (0..capacity)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
        }
    }

    /// Where `hash`'s probe sequence starts: the top bits of the hash times an odd constant
    /// (Fibonacci hashing), which depend on every bit of the hash. The string hash's own low bits
    /// depend only on its last 8-byte chunk, so names that end alike (`var10000`, `var10001`,
    /// ...) would otherwise start in one slot and probe in one long cluster.
    fn home(&self, hash: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (hash.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    /// The string whose text is `text`, if this table has it.
    fn find(&self, text: &str, hash: u64) -> Option<NonNull<Header>> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        loop {
            // Acquire: pairs with the release store that filled the slot, so the string it
            // points to is seen whole.
            let string = NonNull::new(self.slots[at].load(Ordering::Acquire))?;
            // SAFETY: slots hold interned strings, which are immortal.
            let held = unsafe { payload::<StrPayload>(string) };
            if held.hash == hash && *held.text == *text {
                return Some(string);
            }
            at = (at + 1) & mask;
        }
    }

    /// Puts `string` in the first empty slot of its probe sequence. Writers only (the mutex);
    /// the table has an empty slot (it is at most half full).
    fn put(&self, string: NonNull<Header>, hash: u64) {
        let mask = self.slots.len() - 1;
        let mut at = self.home(hash);
        while !self.slots[at].load(Ordering::Relaxed).is_null() {
            at = (at + 1) & mask;
        }
        // Release: a lookup that loads the pointer sees the string's payload written.
        self.slots[at].store(string.as_ptr(), Ordering::Release);
    }
}

/// A table the interning table owns (a leaked `Box`, freed when the interning table is
/// dropped): raw, because lookups hold pointers to it while the writer keeps the list.
struct OwnedTable(NonNull<Table>);

// SAFETY: a `Table` is atomics only, so it may be used and freed from any thread.
unsafe impl Send for OwnedTable {}

impl OwnedTable {
    fn new(table: Table) -> OwnedTable {
        OwnedTable(NonNull::from(Box::leak(Box::new(table))))
    }

    fn get(&self) -> &Table {
        // SAFETY: alive until the interning table is dropped, and only read through `&`.
        unsafe { self.0.as_ref() }
    }
}

/// The interning table: see the module docs.
pub(crate) struct InternTable {
    /// The newest table, the last in `writer`'s list.
    current: AtomicPtr<Table>,
    /// How many strings are interned.
    len: AtomicUsize,
    /// Inserts and growth; every table ever made, so none is freed under a lookup.
    writer: Mutex<Vec<OwnedTable>>,
}

impl InternTable {
    pub(crate) fn new() -> InternTable {
        let first = OwnedTable::new(Table::with_capacity(FIRST_CAPACITY));
        InternTable {
            current: AtomicPtr::new(first.0.as_ptr()),
            len: AtomicUsize::new(0),
            writer: Mutex::new(vec![first]),
        }
    }

    /// The interned string whose text is `text`; `make` makes it if there is none yet.
    ///
    /// # Safety
    /// `make` returns an immortal string (a `StrPayload` object, never freed) whose text is
    /// `text` and whose hash is `hash`: lookups read every string in the table as one, without
    /// a reference.
    pub(crate) unsafe fn get_or_insert(
        &self,
        text: &str,
        hash: u64,
        make: impl FnOnce() -> NonNull<Header>,
    ) -> Immortal {
        // SAFETY: `current` always points to a table in `writer`'s list, never freed.
        let current = unsafe { &*self.current.load(Ordering::Acquire) };
        match current.find(text, hash) {
            Some(found) => Immortal(found),
            // SAFETY: the caller's contract for `make`.
            None => unsafe { self.insert(text, hash, make) },
        }
    }

    /// # Safety
    /// As [`get_or_insert`](Self::get_or_insert).
    #[cold]
    unsafe fn insert(
        &self,
        text: &str,
        hash: u64,
        make: impl FnOnce() -> NonNull<Header>,
    ) -> Immortal {
        let mut tables = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let current = tables.last().expect("the first table").get();
        // Another writer may have inserted it, or grown the table, since our lookup.
        if let Some(found) = current.find(text, hash) {
            return Immortal(found);
        }
        let len = self.len.load(Ordering::Relaxed) + 1;
        if len * 2 > current.slots.len() {
            let grown = OwnedTable::new(Table::with_capacity(current.slots.len() * 2));
            for slot in current.slots.iter() {
                if let Some(string) = NonNull::new(slot.load(Ordering::Relaxed)) {
                    // SAFETY: an interned string, immortal.
                    grown
                        .get()
                        .put(string, unsafe { payload::<StrPayload>(string) }.hash);
                }
            }
            // Release: a lookup that loads the new table sees its slots filled.
            self.current.store(grown.0.as_ptr(), Ordering::Release);
            tables.push(grown);
        }
        let string = make();
        tables
            .last()
            .expect("the current table")
            .get()
            .put(string, hash);
        self.len.store(len, Ordering::Relaxed);
        Immortal(string)
    }

    /// How many strings are interned.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

impl Drop for InternTable {
    fn drop(&mut self) {
        // The strings are immortal and stay; the tables go. `&mut self`: no lookup is running.
        let tables = self.writer.get_mut().unwrap_or_else(|e| e.into_inner());
        for table in tables.drain(..) {
            // SAFETY: leaked by `OwnedTable::new`, freed once, here.
            drop(unsafe { Box::from_raw(table.0.as_ptr()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::allocate_immortal;
    use crate::string::{hash_bytes, STR_TYPE};

    fn make(text: &str) -> NonNull<Header> {
        allocate_immortal(&STR_TYPE, StrPayload::new(text))
    }

    /// Texts enough to grow the table: once under Miri (slow), several times otherwise.
    const TEXTS: usize = if cfg!(miri) {
        FIRST_CAPACITY
    } else {
        5 * FIRST_CAPACITY
    };

    #[test]
    fn each_text_is_interned_once_across_growth() {
        let table = InternTable::new();
        let texts: Vec<String> = (0..TEXTS).map(|i| format!("t{i}")).collect();
        let first: Vec<_> = texts
            .iter()
            .map(|t| {
                // SAFETY: `make` makes an immortal string of `t`.
                unsafe { table.get_or_insert(t, hash_bytes(t.as_bytes()), || make(t)) }.0
            })
            .collect();
        assert_eq!(table.len(), texts.len());
        for (text, first) in texts.iter().zip(&first) {
            // SAFETY: `make` is never called (the text is in).
            let again = unsafe {
                table.get_or_insert(text, hash_bytes(text.as_bytes()), || {
                    panic!("{text} was interned twice")
                })
            };
            assert_eq!(again.0, *first);
        }
        assert!(
            table.writer.lock().unwrap().len() > 1,
            "the table never grew"
        );
    }

    /// The longest distance from a string's home slot to where it sits, in the current table.
    fn longest_probe(table: &InternTable) -> usize {
        let tables = table.writer.lock().unwrap();
        let current = tables.last().unwrap().get();
        let len = current.slots.len();
        (0..len)
            .filter_map(|at| {
                let string = NonNull::new(current.slots[at].load(Ordering::Relaxed))?;
                // SAFETY: an interned string, immortal.
                let home = current.home(unsafe { payload::<StrPayload>(string) }.hash);
                Some((at + len - home) % len)
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn names_that_end_alike_do_not_cluster() {
        let table = InternTable::new();
        // 8 bytes each, one hash chunk, all with the same first bytes.
        for i in 0..TEXTS {
            let text = format!("var{:05}", 10_000 + i);
            // SAFETY: `make` makes an immortal string of `text`.
            unsafe { table.get_or_insert(&text, hash_bytes(text.as_bytes()), || make(&text)) };
        }
        let longest = longest_probe(&table);
        assert!(longest < 32, "a probe of {longest} slots for {TEXTS} names");
    }

    #[test]
    fn threads_interning_the_same_texts_get_the_same_strings() {
        let table = InternTable::new();
        let texts: Vec<String> = (0..TEXTS).map(|i| format!("s{i}")).collect();
        let found: Vec<Vec<usize>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..if cfg!(miri) { 2 } else { 4 })
                .map(|_| {
                    s.spawn(|| {
                        texts
                            .iter()
                            .map(|t| {
                                let hash = hash_bytes(t.as_bytes());
                                // SAFETY: `make` makes an immortal string of `t`.
                                let string = unsafe { table.get_or_insert(t, hash, || make(t)) };
                                string.0.as_ptr() as usize
                            })
                            .collect()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(found.windows(2).all(|pair| pair[0] == pair[1]));
        assert_eq!(table.len(), texts.len());
    }
}
