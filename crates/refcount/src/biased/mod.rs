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

mod deferred;
mod lifetime;
mod merge;
mod observe;
#[cfg(all(test, not(loom)))]
mod tests;
mod thread;

use std::ptr::NonNull;

use crate::sync::{fence, spin_hint, yield_now, AtomicI32, AtomicU32, Ordering};
use crate::{Counting, RefCountValue};

pub use deferred::{CountDeferred, CountOnPath, DeferredPath};
#[doc(hidden)]
pub use thread::unpark_waiting_for_merges;
pub use thread::{
    detach_current_thread, drop_batch, for_each_registered, merge_pending, with_current_owner,
    Info, LocalCounts, Owner, Release,
};
use thread::{Queued, DEFERRED_OWNER, DETACHED, NO_OWNER};

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
