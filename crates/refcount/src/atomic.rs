//! A plain atomic count, as `Arc` keeps: one locked read-modify-write per operation, from every
//! thread. The `atomic-rc` build uses it to measure what biased counting saves.

use crate::sync::{fence, AtomicU32, Ordering};
use crate::RefCountValue;

/// Counts at or above this are immortal.
const IMMORTAL_MIN: u32 = 1 << 31;
/// Where an immortal count is parked: 2^30 away from the threshold on both sides, so the ±1
/// operations already in flight when an object becomes immortal can never carry it back.
const IMMORTAL: u32 = 3 << 30;

/// An atomic reference count: 4 bytes.
pub struct AtomicCount {
    count: AtomicU32,
}

impl AtomicCount {
    /// A count of one.
    #[inline]
    pub fn new() -> Self {
        Self {
            count: AtomicU32::new(1),
        }
    }

    /// A count that never changes and never reaches zero.
    pub fn immortal() -> Self {
        Self {
            count: AtomicU32::new(IMMORTAL),
        }
    }

    /// Whether increments and decrements have stopped counting.
    #[inline]
    pub fn is_immortal(&self) -> bool {
        self.count.load(Ordering::Relaxed) >= IMMORTAL_MIN
    }

    /// Adds a reference. Immortal counts are only read, so objects every thread shares (None,
    /// small ints) do not bounce a cache line between cores.
    #[inline]
    pub fn incref(&self) {
        if self.is_immortal() {
            return;
        }
        // Relaxed, as in `Arc::clone`: the caller's own reference keeps the object alive.
        let old = self.count.fetch_add(1, Ordering::Relaxed);
        if old + 1 >= IMMORTAL_MIN {
            // 2^31 references: saturate instead of heading for a wrap.
            self.count.store(IMMORTAL, Ordering::Relaxed);
        }
    }

    /// Drops a reference. Returns `true` when that was the last one: the caller must free the
    /// object now.
    #[inline]
    pub fn decref(&self) -> bool {
        if self.is_immortal() {
            return false;
        }
        // Release: whoever frees the object must see this thread's accesses to it.
        let old = self.count.fetch_sub(1, Ordering::Release);
        if old == 1 {
            // Pairs with the other threads' release decrements.
            fence(Ordering::Acquire);
            return true;
        }
        if old >= IMMORTAL_MIN {
            // Became immortal between the check and the subtraction: take it back.
            self.count.fetch_add(1, Ordering::Relaxed);
        }
        false
    }

    /// The number of references, or `Immortal`.
    #[inline]
    pub fn get(&self) -> RefCountValue {
        match self.count.load(Ordering::Acquire) {
            count if count >= IMMORTAL_MIN => RefCountValue::Immortal,
            count => RefCountValue::Mortal(count as usize),
        }
    }

    /// Makes the object immortal. Irreversible.
    pub fn make_immortal(&self) {
        self.count.store(IMMORTAL, Ordering::Relaxed);
    }
}

impl Default for AtomicCount {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for AtomicCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AtomicCount")
            .field("count", &self.get())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_up_and_down_and_reports_the_last_drop() {
        let count = AtomicCount::new();
        count.incref();
        assert_eq!(count.get(), RefCountValue::Mortal(2));
        assert!(!count.decref());
        assert!(count.decref());
    }

    #[test]
    fn immortal_counts_are_only_read() {
        let count = AtomicCount::immortal();
        count.incref();
        assert!(!count.decref());
        assert_eq!(count.count.load(Ordering::Relaxed), IMMORTAL);
        assert_eq!(count.get(), RefCountValue::Immortal);
    }

    #[test]
    fn a_count_that_would_overflow_becomes_immortal() {
        let count = AtomicCount {
            count: AtomicU32::new(IMMORTAL_MIN - 1),
        };
        count.incref();
        assert!(count.is_immortal());
        assert_eq!(count.count.load(Ordering::Relaxed), IMMORTAL);
        assert!(!count.decref());
    }

    #[test]
    fn concurrent_clones_and_drops_balance_exactly() {
        let count = AtomicCount::new();
        let per_thread = if cfg!(miri) { 50 } else { 10_000 };
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        count.incref();
                        assert!(!count.decref());
                    }
                });
            }
        });
        assert_eq!(count.get(), RefCountValue::Mortal(1));
        assert!(count.decref());
    }
}
