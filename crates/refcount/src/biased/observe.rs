//! What a count says about its references, and ownership given up: the value (`get`),
//! uniqueness (`is_unique`, `try_take_unique`), husks, and `give_up_ownership`, which folds the
//! owner's half into the shared one.

use super::*;

impl BiasedCount {
    /// The number of references, or `Immortal`.
    ///
    /// Exact on the owner thread, and on any thread once the count is merged, when no other
    /// thread is changing the count at the same time. On a thread that does not own the count,
    /// while the owner lives, it is only an estimate (as `Arc::strong_count` is under concurrent
    /// clones and drops): the owner counts in `local` without telling anyone, so the two halves
    /// read here may come from different moments. Decide uniqueness with
    /// [`is_unique`](Self::is_unique) or [`try_take_unique`](Self::try_take_unique), never with
    /// this.
    #[inline]
    pub fn get(&self) -> RefCountValue {
        // `local` before `shared`: if a merge lands in between, `shared` says `MERGED` and the
        // stale `local` is ignored.
        let local = self.local.load(Ordering::Acquire);
        let shared = self.shared.load(Ordering::Acquire);
        // The mark in `local` is final, so it means immortal whether the count is owned or
        // merged (a merge that folded it in saturated `shared` too).
        if local == IMMORTAL_LOCAL || saturated(shared) {
            return RefCountValue::Immortal;
        }
        if without_weak(shared) == HUSK {
            return RefCountValue::Mortal(0);
        }
        RefCountValue::Mortal(total_references(local, shared).max(0) as usize)
    }

    /// Whether the caller's reference is the only one, counting references still waiting in a
    /// merge queue as dropped.
    ///
    /// `true` is always exact. The answer is `false` ("maybe shared") whenever the calling thread
    /// cannot read the count exactly: when another live thread owns the count (it writes its
    /// local half with plain stores that nothing announces, so no reading of both halves is
    /// exact), or while another thread is half-way through
    /// merging it. A thread that does not own the count gets an exact answer once the count is
    /// merged (the owner called [`give_up_ownership`](Self::give_up_ownership), its local count
    /// reached zero, or it merged a queued drop of the object) or once the owner has retired
    /// (exited, or called [`detach_current_thread`]).
    ///
    /// `true` lets the caller change the value in place; it does not let it free or move the
    /// object, since a queued drop may still point at the count (see [`decref`](Self::decref)):
    /// [`try_take_unique`](Self::try_take_unique) is the way to take the value out.
    ///
    /// The owner here is the calling thread's thread-local convenience, as for
    /// [`give_up_ownership`](Self::give_up_ownership): a count made with
    /// [`new_for`](Self::new_for) and a [`LocalCounts`]' token answers as on a thread that does
    /// not own it ("maybe shared" until it is merged), on every thread. The same holds for
    /// [`is_unique_with_no_queued_drop`](Self::is_unique_with_no_queued_drop) and
    /// [`try_take_unique`](Self::try_take_unique).
    ///
    /// A queued drop's reference still holds the value until its merge: dropping the caller's
    /// reference then leaves the value to that merge. Where the value changed in place may
    /// borrow for less than it did (a handle covariant in the value's type, as `Arc`'s is), ask
    /// [`is_unique_with_no_queued_drop`](Self::is_unique_with_no_queued_drop) instead.
    pub fn is_unique(&self) -> bool {
        self.exact_parts()
            .is_some_and(|(local, shared)| self.is_unique_snapshot(local, shared))
    }

    /// Whether the caller's reference is the only one and no queue entry holds one either: the
    /// drop of the caller's reference then drops the value at once. `false` whenever
    /// [`is_unique`](Self::is_unique) answers `false`, and while a drop queued to an owner waits
    /// for its merge; the owner can merge its own queue first ([`merge_pending`], or
    /// [`LocalCounts::merge_pending`]) to make the answer exact there.
    pub fn is_unique_with_no_queued_drop(&self) -> bool {
        self.exact_parts().is_some_and(|(local, shared)| {
            shared & QUEUED == 0 && self.is_unique_snapshot(local, shared)
        })
    }

    /// Whether the value was moved out by [`try_take_unique`](Self::try_take_unique) while a
    /// merge queue still pointed at the object. Release functions check this.
    pub fn is_husk(&self) -> bool {
        without_weak(self.shared.load(Ordering::Acquire)) == HUSK
    }

    /// Gives up the caller's reference if it is the only one, so that the caller may move the
    /// value out. Exact even when other threads' decrements are still queued; answers
    /// [`TakeUnique::Shared`] whenever [`is_unique`](Self::is_unique) would answer `false`.
    ///
    /// # Safety
    /// The caller holds a reference. After `Free` or `LeftToQueue` it must not use the count
    /// again except as those variants describe.
    pub unsafe fn try_take_unique(&self) -> TakeUnique {
        loop {
            let Some((local, shared)) = self.exact_parts() else {
                return TakeUnique::Shared;
            };
            if !self.is_unique_snapshot(local, shared) {
                return TakeUnique::Shared;
            }
            if shared & (QUEUED | WEAK) == 0 {
                // No entry points here, no weak handle exists and no other reference does, so
                // nobody else can reach the object any more.
                return TakeUnique::Free;
            }
            if shared & (WEAK | MERGED) == WEAK {
                // Weak handles may upgrade at any moment, and an upgrade on another thread races
                // only exchanges on `shared`: merge first (only the owner reads an unmerged count
                // exactly), so that the end below is one exchange against theirs.
                self.merge_final_local(local);
                continue;
            }
            // Only the merge of a pending entry and weak upgrades can change the count now
            // (nobody else holds a reference); exactly one exchange wins. If the merge or an
            // upgrade won, look again.
            let (end, taken) = if shared & QUEUED != 0 {
                (HUSK, TakeUnique::LeftToQueue)
            } else {
                (MERGED, TakeUnique::Free)
            };
            if self
                .shared
                .compare_exchange(
                    shared,
                    end | (shared & WEAK),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                return taken;
            }
        }
    }

    /// Gives up the calling thread's ownership of the count, if it owns it: `local` is folded
    /// into `shared` and from now on every thread, this one included, counts atomically. Does
    /// nothing on any other thread.
    ///
    /// After this, every thread can tell exactly whether its reference is the only one
    /// ([`is_unique`](Self::is_unique), [`try_take_unique`](Self::try_take_unique)). An owner
    /// calls it before it hands its last reference to another thread that will want the value
    /// back: otherwise that thread cannot know whether the owner still holds references, and
    /// answers "maybe shared" until the owner retires. The owner's clones and drops of this object
    /// cost one atomic operation each from then on.
    ///
    /// The calling thread is the owner here as its thread-local convenience (the owner that
    /// [`new`](Self::new) records). A count made with [`new_for`](Self::new_for) and a
    /// [`LocalCounts`]' token is another owner's, even on the thread that registered it: give
    /// it up with [`give_up_ownership_for`](Self::give_up_ownership_for).
    pub fn give_up_ownership(&self) {
        self.give_up_ownership_as(thread::current());
    }

    /// [`give_up_ownership`](Self::give_up_ownership), as `owner` (the calling thread's token):
    /// for counts a runtime made with [`new_for`](Self::new_for). Does nothing if `owner` does
    /// not own the count.
    pub fn give_up_ownership_for(&self, owner: Owner<'_>) {
        self.give_up_ownership_as(owner.id());
    }

    pub(super) fn give_up_ownership_as(&self, id: u32) {
        if self.owned_by_id(id) {
            // The owner's own `local`: final, since the owner stops writing it here.
            self.merge_final_local(self.local.load(Ordering::Relaxed));
        }
    }

    /// The count as the calling thread can read it exactly, as `(local, shared)` (`local` is
    /// ignored once `shared` says `MERGED`), or `None` when it cannot.
    ///
    /// Exact means that no thread can change the total while the caller keeps its reference,
    /// except to settle a pending queue entry, which only `try_take_unique`'s exchange races:
    /// - On the owner: `local` is this thread's own, so it and one load of `shared` are the
    ///   count at the moment of that load.
    /// - On a merged count: `shared` alone is the count, in one load.
    /// - On a count whose owner has retired: `local` is final, so this thread merges the count
    ///   on the owner's behalf and then reads `shared` alone.
    ///
    /// Otherwise another live thread owns the count and writes `local` with plain stores that
    /// nothing announces. Reading `local` and then `shared` can pair an old `local` with a newer
    /// `shared`: between the two loads the owner clones (`local` + 1) and a third thread drops
    /// the clone (`shared` − 1), and the sum says "unique" while the owner's handle lives. No
    /// re-read helps (`shared` can return to the same value), so there is no exact answer.
    pub(super) fn exact_parts(&self) -> Option<(u32, i32)> {
        if self.owned_by_caller() {
            let local = self.local.load(Ordering::Relaxed);
            // Acquire: pairs with the other threads' released decrements, so that every access
            // they made before dropping their references happens before a `Free` decided here.
            return Some((local, self.shared.load(Ordering::Acquire)));
        }
        // Acquire, as above; also with the merge's release that published `MERGED`.
        let shared = self.shared.load(Ordering::Acquire);
        if shared & MERGED != 0 {
            return Some((0, shared));
        }
        // Relaxed: only a retired owner's id is acted on below, and the registry's lock orders
        // that. A cleared owner without `MERGED` means another thread is between the two steps of
        // a merge: it may hold no reference (the owner's local count just reached zero), so this
        // thread must not publish `MERGED` under it; it answers "maybe shared" instead.
        let owner = self.owner.load(Ordering::Relaxed);
        if owner == NO_OWNER || !thread::has_retired(owner) {
            return None;
        }
        // Relaxed: the registry lookup that found the owner retired synchronised with the
        // retirement, which comes after the owner's last write to `local`.
        let local = self.local.load(Ordering::Relaxed);
        self.merge_final_local(local);
        // Now merged, by this thread or by a merge that raced it (or immortal, which is never
        // unique).
        Some((0, self.shared.load(Ordering::Acquire)))
    }

    /// Merges the count with `local` as the owner's final local count: folds it into `shared` and
    /// publishes `MERGED`, keeping `QUEUED` (the pending entry's own merge settles it later).
    ///
    /// `local` is final when the owner passes it (it stops counting locally here) or when the
    /// owner has retired. The caller holds a reference, so the object outlives this call. Safe to
    /// race the other merges of the same count: only the exchange that first sets `MERGED` folds
    /// `local` in; the others find `MERGED` and leave `local` out. An immortal count stays as
    /// it is.
    pub(super) fn merge_final_local(&self, local: u32) {
        // As in `merge_queued`: cleared before `MERGED` becomes visible, by the owner itself or
        // after the owner retired, so it cannot race the owner's fast path.
        self.owner.store(NO_OWNER, Ordering::Relaxed);
        let mut shared = self.shared.load(Ordering::Relaxed);
        while shared & MERGED == 0 && !saturated(shared) {
            // The pending entry's reference stays in: `QUEUED` is kept, and the entry's merge
            // drops it. A pending entry holds a reference, so a queued count is never zero; the
            // result cannot look like a husk.
            let total = folded_count(local, shared);
            debug_assert!(
                total >= i64::from(shared & QUEUED),
                "a queued count of zero"
            );
            let merged = ((total.min(i64::from(SATURATED)) as i32) << FLAG_BITS)
                | (shared & (QUEUED | WEAK))
                | MERGED;
            // Release: whoever later reads this count merged (and may take the value) must see
            // what the owner did before giving up ownership.
            match self.shared.compare_exchange_weak(
                shared,
                merged,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => shared = actual,
            }
        }
    }

    pub(super) fn is_unique_snapshot(&self, local: u32, shared: i32) -> bool {
        if saturated(shared) || without_weak(shared) == HUSK {
            return false;
        }
        total_references(local, shared) == 1
    }
}
