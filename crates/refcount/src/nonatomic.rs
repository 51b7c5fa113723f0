//! The `gil` build's count: a plain integer, sound because the GIL serialises every access.

use std::cell::UnsafeCell;
use std::ptr::NonNull;

use crate::{GilHeld, RefCountValue};

const IMMORTAL: u32 = u32::MAX;

/// A reference count with no atomic instructions at all: 4 bytes. Every method takes a
/// [`GilHeld`] token, so it is only reachable from a thread that holds the GIL.
pub struct NonAtomicCount {
    count: UnsafeCell<u32>,
}

// SAFETY: the count is shared between threads, but every access goes through a method that takes
// a `GilHeld` token, whose constructor's contract is that one thread at a time holds the GIL and
// that handing the GIL over synchronises the threads. Accesses are therefore never concurrent.
unsafe impl Sync for NonAtomicCount {}

impl NonAtomicCount {
    /// A count of one.
    #[inline]
    pub fn new(_gil: GilHeld<'_>) -> Self {
        Self {
            count: UnsafeCell::new(1),
        }
    }

    /// A count that never changes and never reaches zero.
    pub const fn immortal() -> Self {
        Self {
            count: UnsafeCell::new(IMMORTAL),
        }
    }

    #[inline(always)]
    fn read(&self, _gil: GilHeld<'_>) -> u32 {
        // SAFETY: the token proves no other thread accesses the count now (see `Sync` above).
        unsafe { *self.count.get() }
    }

    #[inline(always)]
    fn write(&self, _gil: GilHeld<'_>, value: u32) {
        // SAFETY: as in `read`.
        unsafe { *self.count.get() = value }
    }

    /// Adds a reference; a count that reaches `u32::MAX` stays there, immortal.
    #[inline]
    pub fn incref(&self, gil: GilHeld<'_>) {
        let count = self.read(gil);
        if count != IMMORTAL {
            self.write(gil, count + 1);
        }
    }

    /// Drops a reference. Returns `true` when that was the last one: the caller must free the
    /// object.
    #[inline]
    pub fn decref(&self, gil: GilHeld<'_>) -> bool {
        let count = self.read(gil);
        if count == IMMORTAL {
            return false;
        }
        self.write(gil, count - 1);
        count == 1
    }

    /// The number of references, or `Immortal`.
    #[inline]
    pub fn get(&self, gil: GilHeld<'_>) -> RefCountValue {
        match self.read(gil) {
            IMMORTAL => RefCountValue::Immortal,
            count => RefCountValue::Mortal(count as usize),
        }
    }

    /// Whether increments and decrements have stopped counting.
    pub fn is_immortal(&self, gil: GilHeld<'_>) -> bool {
        self.read(gil) == IMMORTAL
    }

    /// Makes the object immortal. Irreversible.
    pub fn make_immortal(&self, gil: GilHeld<'_>) {
        self.write(gil, IMMORTAL);
    }

    /// Like [`decref`](Self::decref), in the shape [`RefCount`](crate::RefCount) uses.
    ///
    /// # Safety
    /// `this` points to a live count.
    #[inline]
    pub unsafe fn decref_raw(this: NonNull<Self>, gil: GilHeld<'_>) -> bool {
        // SAFETY: the caller guarantees the count is alive.
        unsafe { this.as_ref() }.decref(gil)
    }
}

impl std::fmt::Debug for NonAtomicCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Reading needs the GIL, which a formatter cannot prove it holds.
        f.write_str("NonAtomicCount { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gil() -> GilHeld<'static> {
        // SAFETY: each test touches only counts it made itself, on its own thread.
        unsafe { GilHeld::assume_held() }
    }

    #[test]
    fn counts_up_and_down_and_reports_the_last_drop() {
        let count = NonAtomicCount::new(gil());
        count.incref(gil());
        assert_eq!(count.get(gil()), RefCountValue::Mortal(2));
        assert!(!count.decref(gil()));
        assert!(count.decref(gil()));
    }

    #[test]
    fn immortal_counts_never_change() {
        let count = NonAtomicCount::immortal();
        count.incref(gil());
        assert!(!count.decref(gil()));
        assert!(!count.decref(gil()));
        assert_eq!(count.get(gil()), RefCountValue::Immortal);
    }

    #[test]
    fn a_count_that_would_overflow_becomes_immortal() {
        let count = NonAtomicCount {
            count: UnsafeCell::new(IMMORTAL - 1),
        };
        count.incref(gil());
        assert!(count.is_immortal(gil()));
        assert!(!count.decref(gil()));
        assert_eq!(count.get(gil()), RefCountValue::Immortal);
    }

    #[test]
    fn make_immortal_stops_counting() {
        let count = NonAtomicCount::new(gil());
        count.make_immortal(gil());
        assert!(!count.decref(gil()));
        assert!(count.is_immortal(gil()));
    }
}
