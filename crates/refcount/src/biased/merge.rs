//! The merge queue's side of a count: a non-owner's drop of the shared count's last
//! reference queued to the owner (or waited for, while a merge is under way), the owner's merge
//! of what was queued to it, and the decrement that decides whether the caller's reference was
//! the last one (`decref_taking`).

use super::*;

impl BiasedCount {
    /// The step before [`decref_taking`](Self::decref_taking) on the owner: merges what other
    /// threads queued to the calling thread, if it owns this count, since `local` still counts
    /// the references queued back to it, and whether the caller's is the last shows only after
    /// the merge. Merging runs other values' destructors, which may panic: the caller's handle
    /// must then still drop as usual. (Another thread's drop queued between this and the
    /// decision is concurrent with the call, and comes after it: it frees the value.)
    pub(crate) fn merge_queued_to_owner(&self) {
        if self.owned_by_caller() {
            thread::merge_current_if_pending();
        }
    }

    /// [`merge_queued_to_owner`](Self::merge_queued_to_owner), and also where the count has a
    /// drop queued and the caller no longer owns it: the entry may be in the calling thread's
    /// queue (it gave the count up after the drop was queued to it), where this merge settles
    /// it. For uniqueness checks, which a pending entry makes answer "shared".
    pub(crate) fn merge_queued_here(&self) {
        // Relaxed: a hint for whether to merge; the check that follows reads the count exactly.
        if self.owned_by_caller() || self.shared.load(Ordering::Relaxed) & QUEUED != 0 {
            thread::merge_current_if_pending();
        }
    }

    /// Drops a reference, or takes the object when it was the last one: the decrement behind
    /// [`BiasedArc::into_inner`](crate::BiasedArc::into_inner), which promises, as
    /// `Arc::into_inner` does, that exactly one of the racing last holders sees the end. Answers
    /// [`TakeUnique::Free`] or [`TakeUnique::LeftToQueue`] (the caller's was the last reference,
    /// as [`try_take_unique`](Self::try_take_unique) ends it) or [`TakeUnique::Shared`] (other
    /// references live, or may: the caller's is given up).
    ///
    /// What the calling thread can settle, it settles first:
    /// - On the owner, the caller has merged its queue just before
    ///   ([`merge_queued_to_owner`](Self::merge_queued_to_owner)): a drop another thread queued
    ///   before the call then comes first, and this one may be the last. The owner's last local
    ///   reference merges the count, and the end is decided as on a merged
    ///   count (a drop queued after that merge keeps its entry, and its reference, in it).
    /// - On another thread, a count whose owner has retired is merged on the owner's behalf
    ///   first, so the decrement is not queued (the queueing thread would settle the entry itself
    ///   and free the object, answering `Shared`).
    /// - On a merged count, one exchange decides: the caller's reference is the last when the
    ///   count holds only it and, if one is pending, a queue entry's (which is the count's, not a
    ///   holder's). With an entry pending the count ends as a husk, as `try_take_unique` leaves
    ///   it: the entry's merge frees only the memory.
    /// - On another thread while the owner lives and counts locally, nothing can be settled: a
    ///   decrement that finds the shared half at zero is queued as usual, the answer is
    ///   `Shared`, and the owner's merge frees the object if that was the last reference.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref), and as for `try_take_unique` after `Free` or
    /// `LeftToQueue`: the caller's reference is given up in every case, and after those two
    /// the value is the caller's to move out (`release` is not called for it).
    pub(crate) unsafe fn decref_taking(this: NonNull<Self>, release: Release) -> TakeUnique {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        if count.owned_by_caller() {
            let local = count.local.load(Ordering::Relaxed);
            if local != 1 {
                // Other local references live (or the count is immortal): not the last.
                // SAFETY: forwarded from the caller.
                let last = unsafe { Self::decref(this, release) };
                debug_assert!(!last, "an owner's local count above one is not the last");
                return TakeUnique::Shared;
            }
            // The caller's is the owner's last local reference: fold it into `shared`, and
            // decide below with one exchange against the other threads' decrements.
            count.merge_final_local(local);
        } else {
            // Merges a retired owner's count; answers `None` (and changes nothing) otherwise.
            let _ = count.exact_parts();
        }
        // Acquire: pairs with the other threads' released decrements (an end decided here
        // happens after their accesses), and with the merge that published `MERGED`.
        let mut shared = count.shared.load(Ordering::Acquire);
        loop {
            if shared & MERGED == 0 || saturated(shared) {
                // Owned by another live thread (or immortal, or deferred): decrement as usual.
                // SAFETY: forwarded from the caller.
                return if unsafe { Self::decref(this, release) } {
                    TakeUnique::Free
                } else {
                    TakeUnique::Shared
                };
            }
            let last = total_references(0, shared) == 1;
            let (new, taken) = match (last, shared & QUEUED != 0) {
                (false, _) => (shared - ONE, TakeUnique::Shared),
                (true, false) => (MERGED | (shared & WEAK), TakeUnique::Free),
                (true, true) => (HUSK | (shared & WEAK), TakeUnique::LeftToQueue),
            };
            // AcqRel: a release decrement, as any; an end also acquires, as above.
            match count.shared.compare_exchange_weak(
                shared,
                new,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return taken,
                Err(actual) => shared = actual,
            }
        }
    }

    /// The owner's local count reached zero: fold the count into `shared` and give up ownership.
    #[cold]
    pub(super) fn merge_zero_local(&self) -> bool {
        // Acquire: if the shared side is already zero, every other thread's last access to the
        // object happened before its decrement (released), so freeing it now is safe.
        let mut shared = self.shared.load(Ordering::Acquire);
        if shared == 0 {
            return true;
        }
        // No more fast path for this thread: cleared before `MERGED` becomes visible, so no thread
        // can see `MERGED` and still find itself the owner.
        self.owner.store(NO_OWNER, Ordering::Relaxed);
        loop {
            // Keep `QUEUED`: the pending entry still holds its reference.
            let merged = shared | MERGED;
            match self.shared.compare_exchange_weak(
                shared,
                merged,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                // Zero other references and no pending entry: possible here only with `WEAK` set
                // (otherwise that was the fast path above, and a pending entry counts one). The
                // exchange wrote the dead state, against which weak upgrades fail: the object
                // dies here unless an upgrade's increment landed first.
                Ok(_) => return without_weak(merged) == MERGED,
                Err(actual) => shared = actual,
            }
        }
    }

    /// # Safety
    /// As for [`decref`](Self::decref).
    #[inline(never)]
    pub(super) unsafe fn decref_shared(this: NonNull<Self>, release: Release) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { Self::subtract_shared(this, release) }
    }

    /// A decrement in the shared count, on a thread that does not own the count: queues the
    /// reference to the owner when the shared count is zero, and answers whether that was the
    /// last reference. The body of [`decref_shared`](Self::decref_shared), inlined into the rest
    /// of `decref_counting` (already out of line).
    ///
    /// # Safety
    /// As for [`decref`](Self::decref).
    #[inline(always)]
    pub(super) unsafe fn subtract_shared(this: NonNull<Self>, release: Release) -> bool {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        let mut shared = count.shared.load(Ordering::Relaxed);
        let (new, queue) = loop {
            if saturated(shared) {
                return false;
            }
            // Exactly zero, no flags: the owner counts every remaining reference locally. Hand
            // this reference to the owner's queue rather than going negative, so that the owner,
            // not this thread, decides when the object dies.
            let queue = without_weak(shared) == 0;
            let mut new = if queue { QUEUED | shared } else { shared - ONE };
            if saturated(new) {
                // Far below zero: more than 2^27 references counted locally were dropped
                // elsewhere. Saturate rather than risk wrapping.
                new = (SATURATED << FLAG_BITS) | (shared & FLAG_MASK);
            }
            // Release: whoever frees the object must see this thread's accesses to it.
            match count.shared.compare_exchange_weak(
                shared,
                new,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break (new, queue),
                Err(actual) => shared = actual,
            }
        };
        if queue {
            // SAFETY: the queued reference keeps the object alive until the entry is settled.
            unsafe { Self::queue_to_owner(this, release) };
            return false;
        }
        if without_weak(new) == MERGED {
            // Pairs with the other threads' release decrements.
            fence(Ordering::Acquire);
            return true;
        }
        false
    }

    /// # Safety
    /// The caller has just set `QUEUED`, handing over one reference to the entry.
    #[cold]
    pub(super) unsafe fn queue_to_owner(this: NonNull<Self>, release: Release) {
        // SAFETY: the queued reference keeps the count alive.
        let count = unsafe { this.as_ref() };
        let owner = count.owner.load(Ordering::Relaxed);
        let entry = Queued {
            count: this,
            release,
        };
        if owner == NO_OWNER {
            // Not an exited owner: a count without `MERGED` has a cleared owner field only while
            // a merge is between its two steps (the owner giving up ownership or dropping its
            // last local reference, a thread merging for a retired owner, `try_take_unique`),
            // and that merge keeps `QUEUED`. Its `local` is not this thread's to read (nothing
            // orders the owner's last writes before this point), so wait for the merge to
            // publish `MERGED`, and settle the entry against that count, which reads no `local`.
            count.wait_for_merge();
            // SAFETY: the entry holds its reference; the count is merged (acquired from the
            // merge's release exchange) or saturated, and the settle reads no `local` of either.
            unsafe { Self::settle_queued(entry) };
            return;
        }
        if let Err(entry) = thread::queue_for_owner(owner, entry) {
            // The owner has exited (ids are never reused, so its absence is final): nobody will
            // touch `local` again and this thread can merge on its behalf. Or this thread's drop
            // batch holds the owner parked, counted in its queue's `settling`: nobody writes
            // `local` until the batch ends.
            // SAFETY: the entry holds its reference, and went into no queue.
            unsafe { Self::settle_queued(entry) };
        }
    }

    /// Waits until a merge in progress on another thread has published `MERGED` (or the count
    /// has saturated). That thread runs a few instructions between clearing the owner field and
    /// its exchange, so a few pauses usually do; past them, this thread yields its core, in case
    /// the merging thread was preempted in between.
    #[cold]
    pub(super) fn wait_for_merge(&self) {
        let mut spins = 0_u32;
        loop {
            // Acquire: pairs with the merge's release exchange, which published what the owner
            // wrote before it.
            let shared = self.shared.load(Ordering::Acquire);
            if shared & MERGED != 0 || saturated(shared) {
                return;
            }
            spins += 1;
            if spins < 64 {
                spin_hint();
            } else {
                yield_now();
            }
        }
    }

    /// Merges a queued object: folds `local` into `shared`, drops the entry's reference and frees
    /// the object if that was the last one.
    ///
    /// # Safety
    /// `entry` holds the queued reference to a live object, and the caller is the owner, or the
    /// owner has exited, or the owner is parked and the caller is counted in its queue's
    /// `settling` (for an entry the parked queue gave back instead of taking it, or, inside the
    /// caller's drop batch that holds that count, one it never offered the queue), or the count
    /// is merged (`MERGED` published, with a happens-before from the merge) or saturated: then
    /// the settle reads no `local`.
    pub(crate) unsafe fn settle_queued(entry: Queued) {
        // SAFETY: the entry's reference keeps the count alive.
        let count = unsafe { entry.count.as_ref() };
        if count.merge_queued() {
            // SAFETY: the count is settled at zero: no reference and no entry remains, so this is
            // the one call to `release`, as its contract requires.
            unsafe { (entry.release)(entry.count) };
        }
    }

    /// Returns whether the object is now dead.
    pub(super) fn merge_queued(&self) -> bool {
        let local = self.local.load(Ordering::Acquire);
        // Give up ownership before publishing `MERGED`, and touch nothing after the exchange: the
        // moment `MERGED` is visible, the holder of the last reference may free the object
        // (`try_take_unique`). `local` needs no reset, since a merged count ignores it (a merge
        // that found the mark there saturated `shared`). This runs on the owner (merging its
        // queue), after the owner retired, or while it is parked, so the store cannot race the
        // owner's own fast path.
        self.owner.store(NO_OWNER, Ordering::Relaxed);
        let mut shared = self.shared.load(Ordering::Acquire);
        loop {
            if without_weak(shared) == HUSK {
                return true;
            }
            if saturated(shared) {
                return false;
            }
            debug_assert!(shared & QUEUED != 0, "a merge of an object nobody queued");
            // The entry's reference is dropped here: what is left is the total.
            let total = total_references(local, shared);
            debug_assert!(total >= 0, "queued object with no reference for its entry");
            let merged = if total >= i64::from(SATURATED) {
                SATURATED << FLAG_BITS
            } else {
                (total as i32) << FLAG_BITS
            } | MERGED
                | (shared & WEAK);
            match self.shared.compare_exchange_weak(
                shared,
                merged,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return total == 0,
                Err(actual) => shared = actual,
            }
        }
    }
}
