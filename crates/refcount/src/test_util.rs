//! Values that count their drops and notice use after free.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Counts how many `Tracked` values were dropped.
#[derive(Clone, Default)]
pub(crate) struct Drops(Arc<AtomicUsize>);

impl Drops {
    pub(crate) fn track(&self, id: u64) -> Tracked {
        Tracked {
            id,
            alive: ALIVE,
            drops: self.clone(),
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

const ALIVE: u64 = 0xA11C_E0A1_1CE0_A11C;
const DEAD: u64 = 0xDEAD_DEAD_DEAD_DEAD;

/// A value that panics if it is used or dropped after it was dropped.
pub(crate) struct Tracked {
    pub(crate) id: u64,
    alive: u64,
    drops: Drops,
}

impl Tracked {
    pub(crate) fn check(&self) -> u64 {
        assert_eq!(
            self.alive, ALIVE,
            "value {} used after it was dropped",
            self.id
        );
        self.id
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.check();
        self.alive = DEAD;
        self.drops.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Clone for Tracked {
    /// A new value with the same id, counted by the same `Drops`.
    fn clone(&self) -> Self {
        self.drops.track(self.check())
    }
}
