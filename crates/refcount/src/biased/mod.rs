//! Biased reference counting (Choi, Shull & Torrellas, PACT 2018; PEP 703).
//!
//! Most objects are only ever referenced from the thread that created them. The header records
//! that thread (the *owner*); the owner counts in `local` with plain loads and stores, and every
//! other thread counts in `shared` with atomic read-modify-writes. The true count is
//! `local + shared` (less one while a queue entry is pending, see below).
//!
//! `shared` holds the count shifted left by three, and three flags:
//! - `QUEUED`: a non-owner dropped a reference when `shared` was exactly zero. Instead of driving
//!   the shared count negative it handed that reference to the owner's merge queue. The queue
//!   entry counts as a reference until the owner merges it, so the object cannot die under it.
//! - `MERGED`: the owner gave up ownership; `shared` alone is the count and every thread counts
//!   atomically. Set when the owner's local count reaches zero, when the owner merges a queued
//!   object, and when a non-owner queues an object whose owner has exited.
//! - `WEAK`: weak handles may exist ([`BiasedArc::downgrade`](crate::BiasedArc::downgrade)), which
//!   can take a new reference from any thread while the object lives. Sticky. It keeps `shared`
//!   from ever being exactly zero, so the owner's fast-path death (local and shared both zero,
//!   decided by a load and never written) cannot happen: every death is then an exchange that
//!   writes a *dead* state (`MERGED` with a zero count), and an upgrade is an exchange that
//!   fails on it. Objects without weak handles never see the flag and keep the fast path.
//!
//! An object dies when the combined count reaches zero: on the owner when `local` reaches zero
//! and `shared` is zero with no flags, or on any thread when a `MERGED`, unqueued `shared` count
//! reaches zero, or when a merge of a queued object finds the total at zero. (`WEAK` is ignored
//! in these comparisons, except the first, which it rules out.)
//!
//! Immortality has two marks. A shared count whose magnitude reaches `SATURATED` means
//! immortal, and every path that could free the object checks it. So does `IMMORTAL_LOCAL` in
//! `local` (CPython's encoding): a count immortal from its creation ([`BiasedCount::immortal`])
//! holds both, and an owner whose increments reach the mark makes its count immortal by that
//! alone. The halves a runtime calls (`incref_owned`, `decref_owned`) test the mark first
//! (CPython's order): an immortal count costs one load and one compare and no owner check. The
//! whole operations (`incref_counting`, `decref_counting`, which [`BiasedArc`](crate::BiasedArc)
//! uses) test the owner first and run the rest out of line (see `incref_counting`): the owner's
//! increment finds the mark with its overflow check, the decrement with its test for the last
//! reference. Counts never wrap. The mark in `local` is final (the owner's decrements stop at
//! it), and every merge folds `local` into `shared`, where it saturates: a count marked in
//! `local` is immortal on every path. A count made immortal by another thread keeps its `local`
//! (only the owner writes it) and is found in the shared half, one step later.

#[cfg(all(test, not(loom)))]
mod tests;
mod thread;

use std::ptr::NonNull;

use crate::sync::{fence, spin_hint, yield_now, AtomicI32, AtomicU32, Ordering};
use crate::{Counting, RefCountValue};

#[doc(hidden)]
pub use thread::unpark_waiting_for_merges;
pub use thread::{
    detach_current_thread, for_each_registered, merge_pending, with_current_owner, Info,
    LocalCounts, Owner, Release,
};
use thread::{Queued, DEFERRED_OWNER, DETACHED, NO_OWNER};

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
pub struct DeferredPath(u32);

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

const FLAG_BITS: u32 = 3;
const FLAG_MASK: i32 = 0b111;
const QUEUED: i32 = 0b001;
const MERGED: i32 = 0b010;
/// Weak handles may exist: see the module documentation. Every exchange keeps it.
const WEAK: i32 = 0b100;
/// One reference in `shared`'s encoding.
const ONE: i32 = 1 << FLAG_BITS;
/// A shared count at or beyond this magnitude (either sign) means immortal. The encoding holds
/// counts up to ±2^28, so the 2^27 of headroom absorbs every increment already in flight when
/// an object saturates.
const SATURATED: i32 = 1 << 27;
/// `shared` of an object whose value was moved out by `try_take_unique` while a queue entry for
/// it was pending: zero references, queued and merged at once, a state no count reaches otherwise
/// (a pending entry always holds a reference). The merge of that entry frees only the memory.
const HUSK: i32 = QUEUED | MERGED;

/// `local` of an immortal count: reached by [`BiasedCount::immortal`] or by 2^32 − 1 references
/// on the owner, and never left (the owner's decrements stop at it). Reading it proves the count
/// immortal; a count can be immortal without it (see the module documentation).
const IMMORTAL_LOCAL: u32 = u32::MAX;

/// `shared` without the `WEAK` flag: the count and the flags the protocol decides on.
#[inline(always)]
fn without_weak(shared: i32) -> i32 {
    shared & !WEAK
}

/// Whether `shared` says the object is dead for good, or not yet born
/// ([`BiasedCount::unborn`]): merged with a zero count (a husk included). A weak upgrade fails
/// on it.
#[inline]
fn is_dead(shared: i32) -> bool {
    shared & MERGED != 0 && count_of(shared) == 0
}

#[inline]
fn count_of(shared: i32) -> i32 {
    shared >> FLAG_BITS
}

/// The count a merge stores in `shared` (before flags), from one reading of the two halves:
/// `local` (unless `shared` says `MERGED`: a merged count ignores it) plus the shared count.
/// A `local` at the immortal mark comes out at least `SATURATED`, which the callers cap: a
/// merge at the mark saturates.
/// A pending queue entry's reference is still in it.
#[inline]
fn folded_count(local: u32, shared: i32) -> i64 {
    let owned_locally = if shared & MERGED != 0 {
        0
    } else {
        i64::from(local)
    };
    owned_locally + i64::from(count_of(shared))
}

/// The references alive, from one reading of the two halves: [`folded_count`] less the reference a
/// pending queue entry stands for (the dropped reference it carries to the owner). The one
/// place the total is computed: [`BiasedCount::get`], uniqueness and the queued merge use it.
#[inline]
fn total_references(local: u32, shared: i32) -> i64 {
    folded_count(local, shared) - i64::from(shared & QUEUED)
}

/// Whether `shared` holds a count at or beyond [`SATURATED`], either sign: `|count_of(shared)|
/// >= SATURATED`. Tested on every non-owner count (an immortal or deferred object answers yes),
/// so written as one subtraction and one compare instead of a shift, an absolute value and a
/// compare: the words whose count is below saturation are exactly `BELOW_LOW..=BELOW_HIGH`, and
/// the wrapping subtraction maps that range onto `0..=BELOW_HIGH - BELOW_LOW`.
#[inline]
fn saturated(shared: i32) -> bool {
    /// The lowest word with a count above `-SATURATED`: count `-SATURATED + 1`, no flags.
    const BELOW_LOW: i32 = (-SATURATED + 1) << FLAG_BITS;
    /// The highest word with a count below `SATURATED`: count `SATURATED - 1`, every flag.
    const BELOW_HIGH: i32 = (SATURATED << FLAG_BITS) - 1;
    shared.wrapping_sub(BELOW_LOW) as u32 > (BELOW_HIGH - BELOW_LOW) as u32
}

/// What the first half of a decrement did ([`BiasedCount::drop_local`]).
enum LocalDrop {
    /// `local` says immortal, or the count is deferred (the caller was handed its tag): the
    /// decrement is done, and changed nothing.
    Ignored,
    /// The calling thread does not own the count: nothing changed.
    NotOwned,
    /// The owner dropped a local reference; `last`: its last local one.
    Dropped { last: bool },
}

/// A biased reference count: 12 bytes, 4-byte aligned.
///
/// | field  | type  | written by |
/// |--------|-------|------------|
/// | owner  | `u32` | the creating thread (its never-reused id), cleared on merge; `DEFERRED_OWNER` while deferred |
/// | local  | `u32` | the owner only, with plain stores; a deferred count's tag |
/// | shared | `i32` | any thread, atomically: count << 3, `QUEUED`, `MERGED`, `WEAK` |
#[repr(C)]
pub struct BiasedCount {
    owner: AtomicU32,
    local: AtomicU32,
    shared: AtomicI32,
}

/// What [`BiasedCount::try_take_unique`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeUnique {
    /// Other references exist; nothing changed.
    Shared,
    /// The caller held the only reference and no queue entry points at the object: the caller may
    /// move the value out and must free the object itself. (Weak handles of a container that has
    /// them may still point at its memory; with weak handles the count now says dead, so their
    /// upgrades fail. Without them the count may be left as it was, which nothing reads again.)
    Free,
    /// The caller held the only reference but a merge queue still points at the object. The count
    /// is now a husk: the caller may move the value out but must not free the memory; the queue's
    /// merge will call the release function, which must check [`BiasedCount::is_husk`] and then
    /// free only the memory. That merge may run on another thread at any moment from here on
    /// (the owner merging its queue, a thread merging for a parked owner, a thread settling an
    /// exited owner's entry), so the caller must keep the memory alive by means of its own until
    /// it has moved the value out: [`BiasedArc`](crate::BiasedArc) holds a weak reference
    /// across the move, and the release gives up only the strong references' one.
    LeftToQueue,
}

impl BiasedCount {
    /// A count of one, owned by the calling thread's thread-local owner (registered the first
    /// time; see [`LocalCounts`] for runtimes that keep their own). Also one of the owner's safe
    /// points: merges the thread's queue first if other threads have queued objects to it.
    #[inline]
    pub fn new() -> Self {
        thread::merge_current_if_pending();
        Self::owned_by(thread::owner_for_new_object())
    }

    /// A count of one, owned by `owner` (the calling thread). Also one of the owner's safe
    /// points: merges its queue first if other threads have queued objects to it.
    #[inline]
    pub fn new_for(owner: Owner<'_>) -> Self {
        owner.merge_if_pending();
        Self::owned_by(owner.for_new_object())
    }

    #[inline(always)]
    fn owned_by(owner: u32) -> Self {
        if owner == NO_OWNER {
            // A detached thread owns nothing: the object starts merged.
            return Self::from_parts(NO_OWNER, 0, ONE | MERGED);
        }
        Self::from_parts(owner, 1, 0)
    }

    /// A count that never changes and never reaches zero.
    pub fn immortal() -> Self {
        Self::from_parts(NO_OWNER, IMMORTAL_LOCAL, (SATURATED << FLAG_BITS) | MERGED)
    }

    fn from_parts(owner: u32, local: u32, shared: i32) -> Self {
        Self {
            owner: AtomicU32::new(owner),
            local: AtomicU32::new(local),
            shared: AtomicI32::new(shared),
        }
    }

    #[inline(always)]
    fn owned_by_caller(&self) -> bool {
        self.owned_by_id(thread::current())
    }

    #[inline(always)]
    fn owned_by_id(&self, id: u32) -> bool {
        // Relaxed: the field changes from an id to NO_OWNER, by the owner itself or after the
        // owner has retired, and otherwise only while no thread counts (`transfer_ownership`
        // from one id to another, `defer_counting` to DEFERRED_OWNER and `resume_counting`
        // back to NO_OWNER, each in a stopped world whose restart orders it before every later
        // count). The owner always reads its own latest write, and any other thread reads a
        // value that is not its own id whichever write it sees.
        self.owner.load(Ordering::Relaxed) == id
    }

    /// The id of the thread that owns the count ([`LocalCounts::id`]), or `None` once it is
    /// merged (or was created shared, or is deferred). A snapshot for diagnostics and tests: the
    /// owner may give up ownership at any time.
    pub fn owner_id(&self) -> Option<u32> {
        Some(self.owner.load(Ordering::Relaxed))
            .filter(|&id| id != NO_OWNER && id != DEFERRED_OWNER)
    }

    /// Whether increments and decrements have stopped counting. An owner may still count an
    /// object made immortal by another thread locally; that never frees it, since its shared
    /// half stays saturated.
    #[inline]
    pub fn is_immortal(&self) -> bool {
        self.local.load(Ordering::Relaxed) == IMMORTAL_LOCAL || self.shared_saturated()
    }

    /// The shared half's mark of immortality (or of a deferred count): all that a thread that
    /// has found `local` unmarked still needs to look at.
    #[inline]
    fn shared_saturated(&self) -> bool {
        saturated(self.shared.load(Ordering::Relaxed))
    }

    /// Adds a reference, as the calling thread's thread-local owner.
    #[inline]
    pub fn incref(&self) {
        self.incref_for(Owner::current_id(thread::current()));
    }

    /// Adds a reference, as `owner` (the calling thread).
    #[inline]
    pub fn incref_for(&self, owner: Owner<'_>) {
        let _ = self.incref_counting(owner);
    }

    /// Adds a reference, as `owner` (the calling thread), and says where it was counted: by the
    /// owner, in the shared count (an atomic read-modify-write: the traffic a runtime watches to
    /// find hot objects), or nowhere (an immortal or deferred count, see
    /// [`defer_counting`](Self::defer_counting)).
    ///
    /// The owner's increment runs straight through, and everything else (the immortal mark, the
    /// shared count) out of line: [`BiasedArc`](crate::BiasedArc)'s values are rarely immortal,
    /// and a loop of clones and drops on the owner is a few cycles long, so a taken branch or a
    /// second compare on that path shows (see `docs/refcount.md`).
    #[inline]
    pub fn incref_counting(&self, owner: Owner<'_>) -> Counting {
        if self.owned_by_id(owner.id()) {
            // Only the mark wraps to zero: the test is the increment's carry.
            let next = self.local.load(Ordering::Relaxed).wrapping_add(1);
            if next != 0 {
                // A plain store: no other thread writes `local` while the owner owns the
                // object. Reaching the mark makes the count immortal.
                self.local.store(next, Ordering::Relaxed);
                return Counting::Local;
            }
        }
        self.incref_counting_rest(owner)
    }

    /// [`incref_counting`](Self::incref_counting) where the owner's plain increment did not
    /// apply: an immortal count, or a thread that does not own it.
    #[cold]
    #[inline(never)]
    fn incref_counting_rest(&self, owner: Owner<'_>) -> Counting {
        if let Some(counting) = self.incref_first_half(owner, |_| {}) {
            // The mark (the owner's other increments are counted on the fast path).
            counting
        } else if self.shared_saturated() {
            Counting::Ignored
        } else {
            self.add_shared();
            Counting::Shared
        }
    }

    /// The owner's half of [`incref_counting`](Self::incref_counting): answers `true` when the
    /// increment is done, because `owner` owns the count and added the reference, because the
    /// count's `local` says immortal (nothing to add), or because the count is deferred and
    /// `deferred` takes the inline path ([`CountDeferred::path`]): then it hands `deferred` the
    /// count's tag (see [`defer_counting`](Self::defer_counting)), and the caller counts the
    /// reference where the tag says. Else (a deferred count on the out-of-line path among them)
    /// changes nothing and answers `false`, for [`incref_unowned`](Self::incref_unowned).
    ///
    /// The deferred count is told apart right after the owner check, from the owner field it
    /// has just read: a count every thread takes (a hot shared object, deferred by the object
    /// model) then runs as straight as the owner's, with no second look at the object, while the
    /// owner's path and the immortal test stay as they were.
    #[inline(always)]
    pub fn incref_owned(&self, owner: Owner<'_>, deferred: impl CountDeferred) -> bool {
        self.incref_first_half(owner, deferred).is_some()
    }

    /// [`incref_owned`](Self::incref_owned), saying where the reference went: `Local` (the
    /// owner counted it), `Ignored` (immortal, or deferred and handed to `deferred`), or `None`
    /// (not the owner: nothing changed).
    /// The mark is tested first (CPython's order): a runtime's most counted objects are
    /// immortal (None, small ints, interned strings), and those then cost a load and a compare,
    /// and no owner check.
    #[inline(always)]
    fn incref_first_half(
        &self,
        owner: Owner<'_>,
        deferred: impl CountDeferred,
    ) -> Option<Counting> {
        // Relaxed, on every thread: `IMMORTAL_LOCAL` is final, so any thread that reads it may
        // stop counting (its decrement will read it too); a deferred count's tag, read only when
        // the owner field says deferred, is written with it and cleared with it while no other
        // thread counts (a stopped world, whose restart orders both before every later count);
        // and any other value read by a thread that does not own the count is not acted on.
        let local = self.local.load(Ordering::Relaxed);
        if local == IMMORTAL_LOCAL {
            return Some(Counting::Ignored);
        }
        // Relaxed: as in `owned_by_id`.
        let owned_by = self.owner.load(Ordering::Relaxed);
        if owned_by != owner.id() {
            // `DEFERRED_OWNER` on the inline path; no header's value on the other.
            if owned_by == deferred.path().0 {
                deferred.count(deferred_tag(local));
                return Some(Counting::Ignored);
            }
            // Off the owner's and the deferred count's paths: see `not_owned`.
            not_owned();
            return None;
        }
        // Only the mark wraps to zero: on the owner's path the test is the increment's carry.
        let next = local.wrapping_add(1);
        if next == 0 {
            return Some(Counting::Ignored);
        }
        // A plain store: no other thread writes `local` while the owner owns the object.
        // Reaching the mark makes the count immortal.
        self.local.store(next, Ordering::Relaxed);
        Some(Counting::Local)
    }

    /// The other half of [`incref_counting`](Self::incref_counting), for a thread that does not
    /// own the count (after [`incref_owned`](Self::incref_owned) answered `false`): adds a
    /// reference in the shared count ([`Counting::Shared`]), or nowhere for an immortal or
    /// deferred count ([`Counting::Ignored`]), handing a deferred count's tag to `deferred`
    /// (reached only after a first half's `deferred` said [`DeferredPath::OUT_OF_LINE`]). Never
    /// [`Counting::Local`].
    #[inline]
    pub fn incref_unowned(&self, deferred: impl FnOnce(u16)) -> Counting {
        // Deferred counts, and counts made immortal by a thread that does not own them (the
        // first half stopped those immortal from the start): checked inline, one load and no
        // call.
        if self.shared_saturated() {
            self.hand_over_if_deferred(deferred);
            Counting::Ignored
        } else {
            self.incref_shared();
            Counting::Shared
        }
    }

    /// Calls `deferred` with the count's tag if it is deferred: the unowned halves' part of a
    /// deferred count, for a saturated shared half (which every deferred count has).
    #[inline]
    fn hand_over_if_deferred(&self, deferred: impl FnOnce(u16)) {
        // Relaxed: as in `incref_first_half`.
        if self.owner.load(Ordering::Relaxed) == DEFERRED_OWNER {
            deferred(deferred_tag(self.local.load(Ordering::Relaxed)));
        }
    }

    #[inline(never)]
    fn incref_shared(&self) {
        if self.shared_saturated() {
            return;
        }
        self.add_shared();
    }

    /// Adds a reference to the shared count, found below saturation.
    #[inline(always)]
    fn add_shared(&self) {
        // Relaxed, as in `Arc::clone`: the caller already holds a reference, which keeps the
        // object alive; the new reference needs no ordering until it is dropped.
        let old = self.shared.fetch_add(ONE, Ordering::Relaxed);
        if count_of(old) >= SATURATED {
            // Became immortal between the check and the add: take the add back so the count
            // stays far from the encoding's limit.
            self.shared.fetch_sub(ONE, Ordering::Relaxed);
        }
    }

    /// Drops a reference. Returns `true` when that was the last one: the caller must free the
    /// object now.
    ///
    /// # Safety
    /// `this` points to a live count inside the object `release` frees, and the caller gives up
    /// one reference it holds. `release` must be safe to call on `this` from any thread once the
    /// count says the object is dead (the object may be freed later by its owner's merge). The
    /// count stays alive at this address until `release` is called for it (or, after
    /// [`try_take_unique`](Self::try_take_unique)'s `LeftToQueue`, as that variant says): a
    /// non-owner's decrement may leave a queue entry that points here, and the owner sees that
    /// reference as dropped ([`is_unique`](Self::is_unique), [`get`](Self::get)) before it is
    /// merged. So no answer of the count's makes it safe to free or move the object in any
    /// other way.
    #[inline]
    pub unsafe fn decref(this: NonNull<Self>, release: Release) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { Self::decref_for(this, Owner::current_id(thread::current()), release) }
    }

    /// Drops a reference, as `owner` (the calling thread). Returns `true` when that was the last
    /// one: the caller must free the object now. A token that does not own the count, used on
    /// the thread whose own id ([`decref`](Self::decref)'s) does, drops as that id: the
    /// reference is never queued to the calling thread itself.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref).
    #[inline]
    pub unsafe fn decref_for(this: NonNull<Self>, owner: Owner<'_>, release: Release) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { Self::decref_counting(this, owner, release) }.unwrap_or(false)
    }

    /// [`decref_for`](Self::decref_for) that also says whether the count changed: `None` when
    /// it ignored the decrement (an immortal or deferred count), else whether that was the last
    /// reference.
    ///
    /// Like [`incref_counting`](Self::incref_counting), the owner's decrement runs straight
    /// through and the rest out of line, except the owner's last local reference, which an
    /// allocation's last drop takes every time.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref).
    #[inline]
    pub unsafe fn decref_counting(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: Release,
    ) -> Option<bool> {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        if count.owned_by_id(owner.id()) {
            let local = count.local.load(Ordering::Relaxed);
            // One compare for both ends: neither the last local reference (1) nor the mark.
            // (0 breaks invariant 1: it goes the long way, and the count leaks rather than
            // dies.)
            if local.wrapping_sub(2) < IMMORTAL_LOCAL - 2 {
                // A plain store, as in the increment.
                count.local.store(local - 1, Ordering::Relaxed);
                return Some(false);
            }
            if local == 1 {
                count.local.store(0, Ordering::Relaxed);
                return Some(count.dead_without_local());
            }
        }
        // SAFETY: forwarded from the caller.
        unsafe { Self::decref_counting_rest(this, owner, release) }
    }

    /// [`decref_counting`](Self::decref_counting) where the owner's plain decrement did not
    /// apply: an immortal count, or a thread that does not own it.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref).
    #[cold]
    #[inline(never)]
    unsafe fn decref_counting_rest(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: Release,
    ) -> Option<bool> {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        match count.drop_local(owner, |_| {}) {
            LocalDrop::Ignored => None,
            LocalDrop::Dropped { last } => Some(last && count.dead_without_local()),
            LocalDrop::NotOwned => {
                // A token that is not the calling thread's own (another `LocalCounts`',
                // `Owner::detached()`), for a count the calling thread owns through its own id:
                // dropped as that owner. Counted as the token, the reference would be queued to
                // the calling thread itself, at a shared count of zero, and the object would
                // outlive its last reference until the thread's next safe point, past whatever
                // it borrows (`BiasedArc<T>` keeps a `T` that borrows on its thread; see
                // `BiasedArc::drop_for`).
                let caller = thread::current();
                if caller != owner.id() && count.owned_by_id(caller) {
                    // SAFETY: forwarded from the caller; `caller` is the calling thread's id.
                    return unsafe {
                        Self::decref_counting(this, Owner::current_id(caller), release)
                    };
                }
                if count.shared_saturated() {
                    return None;
                }
                // SAFETY: forwarded from the caller.
                Some(unsafe { Self::subtract_shared(this, release) })
            }
        }
    }

    /// The owner's half of [`decref_counting`](Self::decref_counting): drops a reference if
    /// `owner` owns the count, answering whether it was the last, and answers `Some(false)` for
    /// a count whose `local` says immortal, on any thread, and for a deferred count on the
    /// inline path, after handing `deferred` its tag (as [`incref_owned`](Self::incref_owned)
    /// does); `None`, changing nothing, otherwise (then call
    /// [`decref_unowned`](Self::decref_unowned)). The
    /// owner's path never needs the release function: a merge it runs answers `true` instead of
    /// freeing.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref) (its clauses on `release` aside: the owner's path calls
    /// none), when the answer is `Some`: the caller's reference is given up, and on
    /// `Some(true)` the caller must free the object now. `None` changes nothing.
    #[inline(always)]
    pub unsafe fn decref_owned(
        this: NonNull<Self>,
        owner: Owner<'_>,
        deferred: impl CountDeferred,
    ) -> Option<bool> {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        match count.drop_local(owner, deferred) {
            LocalDrop::Ignored => Some(false),
            LocalDrop::Dropped { last } => Some(last && count.dead_without_local()),
            LocalDrop::NotOwned => None,
        }
    }

    /// [`decref_owned`](Self::decref_owned) for a caller that lets the count free the object:
    /// when the owner drops its last local reference, the rest (is the object dead? merge if
    /// not) runs out of line, and frees a dead object there, through `release`. So the inlined
    /// part is as short as the owner's decrement can be, for callers that inline it into every
    /// handle's drop. Answers whether the decrement is done: `owner` owns the count, its `local`
    /// says immortal, or it is deferred and `deferred`, on the inline path, was handed its tag
    /// (`false`: nothing changed; then call [`decref_unowned`](Self::decref_unowned)).
    ///
    /// # Safety
    /// As for [`decref`](Self::decref); the reference is given up only if the answer is `true`.
    #[inline(always)]
    pub unsafe fn decref_owned_releasing(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: Release,
        deferred: impl CountDeferred,
    ) -> bool {
        // SAFETY: the caller holds a reference, so the count is alive.
        match unsafe { this.as_ref() }.drop_local(owner, deferred) {
            LocalDrop::NotOwned => false,
            LocalDrop::Ignored | LocalDrop::Dropped { last: false } => true,
            LocalDrop::Dropped { last: true } => {
                // SAFETY: the caller's reference was the owner's last local one; `release` is
                // forwarded.
                unsafe { Self::last_local_dropped(this, release) };
                true
            }
        }
    }

    /// The first half of every decrement, shared by the owner's halves and the rest of
    /// `decref_counting`: nothing to do for a count whose `local` says immortal, on any thread
    /// (tested first, as in the increment); the owner's decrement of `local`; a deferred count's
    /// tag handed to `deferred`; or nothing changed, on a thread that does not own the count.
    #[inline(always)]
    fn drop_local(&self, owner: Owner<'_>, deferred: impl CountDeferred) -> LocalDrop {
        // Relaxed: as in `incref_first_half`.
        let local = self.local.load(Ordering::Relaxed);
        if local == IMMORTAL_LOCAL {
            return LocalDrop::Ignored;
        }
        // Relaxed: as in `owned_by_id`.
        let owned_by = self.owner.load(Ordering::Relaxed);
        if owned_by != owner.id() {
            // As in `incref_first_half`.
            if owned_by == deferred.path().0 {
                deferred.count(deferred_tag(local));
                return LocalDrop::Ignored;
            }
            // Off the owner's and the deferred count's paths: see `not_owned`.
            not_owned();
            return LocalDrop::NotOwned;
        }
        // `local >= 1` while the object is owned: reaching zero merges and clears the owner.
        debug_assert!(local >= 1, "owned object with a zero local count");
        // A plain store, like the increment's: no other thread writes `local` while this thread
        // owns the count, and others only read it for `IMMORTAL_LOCAL`, which it is not (a merge
        // after the owner retired is ordered by the registry). (0 breaks invariant 1: it wraps
        // to the mark, and the count leaks rather than dies.)
        self.local.store(local.wrapping_sub(1), Ordering::Relaxed);
        LocalDrop::Dropped { last: local == 1 }
    }

    /// After the owner dropped its last local reference: whether the object is dead, merging
    /// the count if it is not.
    #[inline(always)]
    fn dead_without_local(&self) -> bool {
        // Acquire: if the shared side is zero too, every other thread's last access to the
        // object happened before its (released) decrement: free it now.
        self.shared.load(Ordering::Acquire) == 0 || self.merge_zero_local()
    }

    /// The owner dropped its last local reference: frees the object if that was the last
    /// reference, else merges.
    ///
    /// # Safety
    /// As for [`decref_owned_releasing`](Self::decref_owned_releasing), whose owner just set
    /// `local` to zero.
    #[inline(never)]
    unsafe fn last_local_dropped(this: NonNull<Self>, release: Release) {
        // SAFETY: the object is alive until this call frees it.
        if unsafe { this.as_ref() }.dead_without_local() {
            // SAFETY: that was the last reference; `release` frees such objects.
            unsafe { release(this) };
        }
    }

    /// The other half of [`decref_counting`](Self::decref_counting), for a thread that does not
    /// own the count (after [`decref_owned`](Self::decref_owned) answered `None`): `None` for an
    /// immortal or deferred count, which ignores the decrement (a deferred count's tag handed to
    /// `deferred`, as in [`incref_unowned`](Self::incref_unowned)); else the decrement in the
    /// shared count, answering whether it was the last reference.
    ///
    /// # Safety
    /// As for [`decref`](Self::decref).
    #[inline]
    pub unsafe fn decref_unowned(
        this: NonNull<Self>,
        release: Release,
        deferred: impl FnOnce(u16),
    ) -> Option<bool> {
        // SAFETY: the caller holds a reference, so the count is alive.
        let count = unsafe { this.as_ref() };
        if count.shared_saturated() {
            count.hand_over_if_deferred(deferred);
            return None;
        }
        // SAFETY: forwarded from the caller.
        Some(unsafe { Self::decref_shared(this, release) })
    }

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
    fn merge_zero_local(&self) -> bool {
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
    unsafe fn decref_shared(this: NonNull<Self>, release: Release) -> bool {
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
    unsafe fn subtract_shared(this: NonNull<Self>, release: Release) -> bool {
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
    unsafe fn queue_to_owner(this: NonNull<Self>, release: Release) {
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
            // touch `local` again and this thread can merge on its behalf.
            // SAFETY: the entry holds its reference.
            unsafe { Self::settle_queued(entry) };
        }
    }

    /// Waits until a merge in progress on another thread has published `MERGED` (or the count
    /// has saturated). That thread runs a few instructions between clearing the owner field and
    /// its exchange, so a few pauses usually do; past them, this thread yields its core, in case
    /// the merging thread was preempted in between.
    #[cold]
    fn wait_for_merge(&self) {
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
    /// `settling` (for an entry the parked queue gave back instead of taking it), or the count
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
    fn merge_queued(&self) -> bool {
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

    fn give_up_ownership_as(&self, id: u32) {
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
    fn exact_parts(&self) -> Option<(u32, i32)> {
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
    fn merge_final_local(&self, local: u32) {
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

    fn is_unique_snapshot(&self, local: u32, shared: i32) -> bool {
        if saturated(shared) || without_weak(shared) == HUSK {
            return false;
        }
        total_references(local, shared) == 1
    }

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

impl Default for BiasedCount {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for BiasedCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BiasedCount")
            .field("owner", &self.owner.load(Ordering::Relaxed))
            .field("local", &self.local.load(Ordering::Relaxed))
            .field("shared", &self.shared.load(Ordering::Relaxed))
            .field("count", &self.get())
            .finish()
    }
}

/// Marks the shared count's path (a thread that neither owns the count nor finds it deferred) as
/// the unlikely branch (`std::hint::cold_path`, which is newer than this crate's minimum Rust),
/// so that the owner's path and the deferred count's run straight through in every caller's
/// loop. Measured in the object model's `shared-refcount` workload: marking the decrement made
/// the owner's loop 22 % faster at one thread (`immortal-read` 5 %). Marking the increment as
/// well, before the deferred count had its own branch, moved registers around the immortal path
/// (`immortal-read` 10 % slower); since, left unmarked it lays the deferred count's increment
/// out of line (`shared-refcount` at two threads 0.46 s against 0.42 s marked), and marked it
/// costs the immortal path nothing (0.44 s either way).
#[cold]
#[inline(always)]
fn not_owned() {}

/// The tag a deferred count keeps in `local` (see [`BiasedCount::defer_counting`]).
#[inline(always)]
fn deferred_tag(local: u32) -> u16 {
    local as u16
}
