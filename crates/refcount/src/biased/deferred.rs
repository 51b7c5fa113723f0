//! Deferred counts: a count whose references a runtime counts elsewhere (per-thread arrays
//! for a hot shared object) while it is deferred, the path the first halves take for it
//! ([`DeferredPath`], [`CountDeferred`]), and the hand-over of ownership to another thread.

use super::*;

/// Which half of a count's increment and decrement hands a deferred count's tag to the caller
/// (see [`BiasedCount::defer_counting`]), as a [`CountDeferred`] says per count.
///
/// A runtime that counts deferred references in per-thread arrays made on first need takes the
/// inline path on a thread whose array exists, and the out-of-line path before it is made and
/// after it is gone: the inline count then writes to the array with no test for it, and only
/// the out-of-line one has to make it.
///
/// A word, not an enum: a runtime keeps it in a thread-local, and the first halves compare the
/// owner field with it as they find it, with no select in between.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeferredPath(pub(super) u32);

impl DeferredPath {
    /// The first halves ([`BiasedCount::incref_owned`], [`BiasedCount::decref_owned`],
    /// [`BiasedCount::decref_owned_releasing`]) hand the tag over, right after the owner check,
    /// with the loads and compares the owner's path makes anyway.
    pub const INLINE: Self = DeferredPath(DEFERRED_OWNER);
    /// The first halves change nothing and answer as for a count the token does not own; the
    /// unowned halves ([`BiasedCount::incref_unowned`], [`BiasedCount::decref_unowned`]) hand
    /// the tag over instead. (The owner field no header holds.)
    pub const OUT_OF_LINE: Self = DeferredPath(DETACHED);
}

/// What the first halves of a count's increment and decrement do with a deferred count: take
/// the [`path`](Self::path) it says, and on the inline one [`count`](Self::count) the
/// reference where the tag says. Any `FnOnce(u16)` is one that always takes the inline path.
///
/// The first halves call `count` only right after `path` answered [`DeferredPath::INLINE`],
/// with nothing of the caller's in between, and at most once: an implementation may rely on
/// what `path` read still holding in `count`.
pub trait CountDeferred {
    /// The path this count takes. Asked only of a count that is not the token's own and not
    /// marked immortal in its local half, so the common paths never read it.
    fn path(&self) -> DeferredPath;
    /// Counts the reference, on the inline path, where `tag` says.
    fn count(self, tag: u16);
}

impl<F: FnOnce(u16)> CountDeferred for F {
    #[inline(always)]
    fn path(&self) -> DeferredPath {
        DeferredPath::INLINE
    }

    #[inline(always)]
    fn count(self, tag: u16) {
        self(tag)
    }
}

/// A [`CountDeferred`] whose path is chosen up front: `count` on `path`.
pub struct CountOnPath<F> {
    /// The path every count takes.
    pub path: DeferredPath,
    /// What counts a reference on the inline path.
    pub count: F,
}

impl<F: FnOnce(u16)> CountDeferred for CountOnPath<F> {
    #[inline(always)]
    fn path(&self) -> DeferredPath {
        self.path
    }

    #[inline(always)]
    fn count(self, tag: u16) {
        (self.count)(tag)
    }
}

impl BiasedCount {
    /// Stops counting the object here: from now on every increment and decrement, on every
    /// thread, leaves the count unchanged (`incref_counting` answers [`Counting::Ignored`],
    /// `decref_counting` `None`) and no decrement can free the object, until
    /// [`resume_counting`](Self::resume_counting). The caller counts those references elsewhere
    /// meanwhile (per-thread counts for a hot shared object, as CPython 3.14 keeps for types).
    ///
    /// `tag` says where: the halves a runtime calls hand it to their caller for every reference
    /// taken or dropped, on every thread (an index into per-thread arrays, say): the first
    /// halves ([`incref_owned`](Self::incref_owned), [`decref_owned`](Self::decref_owned)) on
    /// the inline [`DeferredPath`], the unowned ones on the other. The count keeps it in
    /// its local half, which no thread counts in any more, and says "deferred" in its owner
    /// field, which no thread's id matches: a thread finds a deferred count with the loads and
    /// compares the owner's path makes anyway.
    ///
    /// The count is merged first, so no thread owns it any more: the former owner's own
    /// references go elsewhere too. Returns `false`, changing nothing, for a count that cannot be
    /// deferred: immortal, already deferred, or with a pending queue entry (whose merge would
    /// change the count while it is deferred).
    ///
    /// # Safety
    /// No other thread reads or writes the count during the call (the object model calls it in
    /// a stopped world), and the caller holds a reference. Every increment and decrement the
    /// count ignores from now on is counted elsewhere, and their net is passed to
    /// `resume_counting`.
    pub unsafe fn defer_counting(&self, tag: u16) -> bool {
        // Relaxed: the caller's exclusive access (a stopped world) orders every other thread's
        // earlier writes before this call.
        let shared = self.shared.load(Ordering::Relaxed);
        if saturated(shared) || shared & QUEUED != 0 {
            return false;
        }
        let total = folded_count(self.local.load(Ordering::Relaxed), shared);
        debug_assert!(total >= 1, "the caller holds a reference");
        if total >= i64::from(SATURATED) {
            return false;
        }
        self.owner.store(DEFERRED_OWNER, Ordering::Relaxed);
        self.local.store(u32::from(tag), Ordering::Relaxed);
        // Saturated, so every path treats it as immortal; the true total stays recoverable
        // below twice the saturation point, well inside the encoding's range.
        // `total + SATURATED` stays below 2^28, the encoding's limit. `WEAK` is kept.
        self.shared.store(
            ((total as i32 + SATURATED) << FLAG_BITS) | MERGED | (shared & WEAK),
            Ordering::Relaxed,
        );
        true
    }

    /// The tag [`defer_counting`](Self::defer_counting) gave the count, while it is deferred;
    /// `None` otherwise.
    pub fn deferred_tag(&self) -> Option<u16> {
        // Relaxed: the owner field says deferred from `defer_counting` to `resume_counting`,
        // which write it and the tag only while no other thread counts (a stopped world, whose
        // restart orders them before this thread's later loads), and the tag does not change
        // in between. Another value in the owner field is not acted on.
        if self.owner.load(Ordering::Relaxed) != DEFERRED_OWNER {
            return None;
        }
        Some(deferred_tag(self.local.load(Ordering::Relaxed)))
    }

    /// The references a deferred count holds (those counted before
    /// [`defer_counting`](Self::defer_counting)), without what was counted elsewhere since.
    ///
    /// # Safety
    /// The count was deferred by `defer_counting` and not resumed since.
    pub unsafe fn deferred_total(&self) -> i64 {
        i64::from(count_of(self.shared.load(Ordering::Relaxed))) - i64::from(SATURATED)
    }

    /// Counts here again after [`defer_counting`](Self::defer_counting): the count becomes the
    /// references it held plus `elsewhere`, the net of every increment and decrement counted
    /// elsewhere meanwhile, merged (no thread owns it). Returns whether a reference remains;
    /// `false` means the object is dead and the caller must free it, since no decrement will.
    ///
    /// # Safety
    /// The count was deferred by `defer_counting` and not resumed since; no other thread reads
    /// or writes it during the call (a stopped world); `elsewhere` is exactly the net of the
    /// references counted elsewhere since it was deferred.
    pub unsafe fn resume_counting(&self, elsewhere: i64) -> bool {
        // SAFETY: forwarded from the caller.
        let total = unsafe { self.deferred_total() } + elsewhere;
        assert!(total >= 0, "more references dropped than taken: {total}");
        // `WEAK` is kept; with no reference left this is the dead state weak upgrades fail on.
        let weak = self.shared.load(Ordering::Relaxed) & WEAK;
        let merged = ((total.min(i64::from(SATURATED)) as i32) << FLAG_BITS) | MERGED | weak;
        // Relaxed: as in `defer_counting`; the restart of the world publishes it.
        self.owner.store(NO_OWNER, Ordering::Relaxed);
        self.local.store(0, Ordering::Relaxed);
        self.shared.store(merged, Ordering::Relaxed);
        total != 0
    }

    /// Makes thread `new_owner` the count's owner, and gives up one reference the caller holds,
    /// for a runtime that finds one thread other than the owner counting an object over and
    /// over: from here on that thread counts it without atomics, and the former owner counts on
    /// the shared side. (With two or more such threads, deferring the count serves them better:
    /// [`defer_counting`](Self::defer_counting).)
    ///
    /// The references are only redistributed: `local` becomes 1 and `shared` the rest, less the
    /// reference given up. Returns `false`, changing nothing (the caller keeps its reference),
    /// for a count that has no owner to replace (merged: `MERGED` is never cleared), is immortal
    /// or deferred, has a pending queue entry (which the former owner's merge would settle), is
    /// owned by `new_owner` already, or holds no reference but the caller's (which the caller
    /// then drops as usual).
    ///
    /// # Safety
    /// No other thread reads or writes the count during the call (the object model calls it in a
    /// stopped world, which also orders the change before every thread's next count), and the
    /// caller holds a reference. `new_owner` is a [`LocalCounts::id`] (a retired one is harmless:
    /// its objects are merged by whoever queues to it), never another value: an owner field
    /// holding [`DeferredPath::OUT_OF_LINE`]'s word would read as deferred on that path, and its
    /// `local` be handed over as a tag.
    pub unsafe fn transfer_ownership(&self, new_owner: u32) -> bool {
        debug_assert!(
            new_owner != DETACHED
                && new_owner != DEFERRED_OWNER
                && new_owner != NO_OWNER
                && new_owner != thread::UNASSIGNED,
            "not a thread's id: {new_owner}"
        );
        // Relaxed: the caller's exclusive access orders every other thread's writes before this.
        let owner = self.owner.load(Ordering::Relaxed);
        let shared = self.shared.load(Ordering::Relaxed);
        if owner == NO_OWNER
            || owner == new_owner
            || shared & (MERGED | QUEUED) != 0
            || saturated(shared)
        {
            return false;
        }
        let total = total_references(self.local.load(Ordering::Relaxed), shared);
        debug_assert!(total >= 1, "the caller holds a reference");
        if total < 2 {
            return false;
        }
        // One reference in `local` (an owned count keeps `local >= 1`), the rest in `shared`,
        // less the caller's. The rest may not fit the shared half (a large local count moving
        // over): then nothing changes.
        let rest = total - 2;
        if rest >= i64::from(SATURATED) {
            return false;
        }
        self.owner.store(new_owner, Ordering::Relaxed);
        self.local.store(1, Ordering::Relaxed);
        self.shared.store(
            ((rest as i32) << FLAG_BITS) | (shared & WEAK),
            Ordering::Relaxed,
        );
        true
    }
}
