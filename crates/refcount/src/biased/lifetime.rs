//! The ends of a count's life that are not counting: a count not alive yet (a value built
//! while weak handles to it exist), weak handles' upgrades, and immortality made later.

use super::*;

impl BiasedCount {
    /// A count that is not alive yet, for a value still being built while weak handles to it
    /// exist ([`BiasedArc::new_cyclic`](crate::BiasedArc::new_cyclic)): it reads as dead, so
    /// [`try_incref`](Self::try_incref) fails, until [`come_alive`](Self::come_alive). Also one of
    /// the owner's safe points, like [`new`](Self::new).
    pub(crate) fn unborn() -> Self {
        thread::merge_current_if_pending();
        Self::from_parts(NO_OWNER, 0, MERGED | WEAK)
    }

    /// Turns an [`unborn`](Self::unborn) count into a count of one, owned by the calling thread's
    /// thread-local owner, with `WEAK` set.
    ///
    /// # Safety
    /// The count is unborn, and this is called once: no reference exists yet, so no other thread
    /// writes the count (upgrades fail on it without writing).
    pub(crate) unsafe fn come_alive(&self) {
        let owner = thread::owner_for_new_object();
        let shared = if owner == NO_OWNER {
            ONE | MERGED | WEAK
        } else {
            self.local.store(1, Ordering::Relaxed);
            WEAK
        };
        self.owner.store(owner, Ordering::Relaxed);
        // Release: an upgrade that finds the count alive (its exchange acquires) then sees the
        // value written before this call, and the owner fields above.
        self.shared.store(shared, Ordering::Release);
    }

    /// Records that weak handles may exist from now on (sets `WEAK`); the caller holds a
    /// reference. Cheap once set: one load.
    pub(crate) fn mark_weak(&self) {
        // Relaxed, both: whoever later decides the object's death does so after this thread's
        // reference is dropped, which comes after this call, so (by coherence) it reads `shared`
        // with the flag, whether this thread set it or saw another thread's setting.
        if self.shared.load(Ordering::Relaxed) & WEAK == 0 {
            self.shared.fetch_or(WEAK, Ordering::Relaxed);
        }
    }

    /// A weak handle's upgrade, as the calling thread's thread-local owner: adds a reference
    /// unless the count is dead (or unborn), and says whether it did. The count must have `WEAK`
    /// set (by [`mark_weak`](Self::mark_weak) before the weak handle was made), and its memory
    /// must be alive.
    ///
    /// On the owner, a count it still owns is alive: with `WEAK` set, every death writes the dead
    /// state after clearing the owner, so the owner's own `local` is exact and at least one.
    /// Elsewhere it is one exchange on `shared`, which the exchange that writes the dead state
    /// races: if the upgrade lands first, that exchange fails and sees the new reference. An
    /// unmerged count with `WEAK` is alive, since its death must first publish `MERGED`.
    pub(crate) fn try_incref(&self) -> bool {
        if self.owned_by_caller() {
            // Zero only after the fast-path death, which `WEAK` rules out; kept as a guard.
            if self.local.load(Ordering::Relaxed) == 0 {
                return false;
            }
            self.incref();
            return true;
        }
        let mut shared = self.shared.load(Ordering::Relaxed);
        loop {
            debug_assert!(
                shared & WEAK != 0,
                "an upgrade on a count without weak handles"
            );
            if saturated(shared) {
                return true;
            }
            if is_dead(shared) {
                return false;
            }
            // Acquire on success: pairs with `come_alive`'s release, so a value built after its
            // weak handles were made is seen built. A count one below saturation becomes
            // immortal here, as with any increment.
            match self.shared.compare_exchange_weak(
                shared,
                shared + ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => shared = actual,
            }
        }
    }

    /// Makes the object immortal, from any thread. Irreversible.
    pub fn make_immortal(&self) {
        // Only the shared half, which any thread may write; every path that could free the object
        // checks it first.
        let mut shared = self.shared.load(Ordering::Relaxed);
        while !saturated(shared) {
            let immortal = (SATURATED << FLAG_BITS) | (shared & FLAG_MASK);
            match self.shared.compare_exchange_weak(
                shared,
                immortal,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => shared = actual,
            }
        }
    }
}
