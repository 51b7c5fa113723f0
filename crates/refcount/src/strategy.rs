//! One interface over the three counting strategies, so the object model is written once and
//! the build picks the strategy.

use std::ptr::NonNull;

use crate::biased::{CountDeferred, Owner};
use crate::{AtomicCount, BiasedCount, GilHeld, NonAtomicCount};

/// What a count reports when asked for its value, like `sys.getrefcount`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefCountValue {
    /// This many references exist.
    Mortal(usize),
    /// The object is never freed; increments and decrements do nothing.
    Immortal,
}

/// Where an increment was counted ([`RefCount::incref_counting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counting {
    /// Without an atomic read-modify-write: the biased count's owner, or a count guarded by the
    /// GIL.
    Local,
    /// With an atomic read-modify-write on a count other threads also write: the traffic that
    /// makes a shared object hot.
    Shared,
    /// Not at all: the count is immortal, or deferred (see
    /// [`BiasedCount::defer_counting`](crate::BiasedCount::defer_counting)).
    Ignored,
}

/// The counting strategies, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Plain integer, guarded by the GIL ([`NonAtomicCount`]).
    NonAtomic,
    /// One atomic count for every thread ([`AtomicCount`]).
    Atomic,
    /// Owner counts without atomics, others atomically ([`BiasedCount`]).
    Biased,
}

impl Strategy {
    /// A short lowercase name: `non-atomic`, `atomic` or `biased`.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::NonAtomic => "non-atomic",
            Strategy::Atomic => "atomic",
            Strategy::Biased => "biased",
        }
    }
}

/// A reference count embedded in an object's header.
///
/// Each strategy names the token a thread must hold to use it: [`GilHeld`] for the non-atomic
/// count, the calling thread's [`Owner`] for the biased one, nothing (`()`) for the atomic one.
///
/// # Safety
/// Implementations count exactly: `decref` returns `true` once, after the last reference of a
/// mortal count is dropped, and never for an immortal one; a count that would overflow becomes
/// immortal instead of wrapping. The halves count as the whole does: an owned half that answers
/// `true` (`Some`) took the reference, one that answers `false` (`None`) changed nothing, and
/// the object is released exactly once, by the caller on `Some(true)` or through `release`.
pub unsafe trait RefCount: Send + Sync + Sized + 'static {
    /// What proves the calling thread may touch the count.
    type Token<'py>: Copy;
    /// Which strategy this is.
    const STRATEGY: Strategy;

    /// A count of one (owned by the calling thread, for strategies that care).
    fn new(token: Self::Token<'_>) -> Self;
    /// A count that never changes.
    fn immortal() -> Self;
    /// Adds a reference.
    fn incref(&self, token: Self::Token<'_>);
    /// Adds a reference and says where it was counted. Strategies that cannot defer counting
    /// answer [`Counting::Local`] (atomic ones too: no runtime moves their counts elsewhere).
    #[inline]
    fn incref_counting(&self, token: Self::Token<'_>) -> Counting {
        self.incref(token);
        Counting::Local
    }
    /// The fast half of [`incref_counting`](Self::incref_counting): adds a reference and answers
    /// `true` where the calling thread counts without atomics or the strategy has one path (every
    /// strategy but the biased one, which answers `false` on a thread that does not own the count,
    /// changing nothing, unless the count is marked immortal in its local half, which every
    /// thread skips here). After `false`, call [`incref_unowned`](Self::incref_unowned).
    ///
    /// A deferred count ([`defer_counting`](Self::defer_counting)) answers `true` after handing
    /// `deferred` its tag, on every thread, when `deferred` says the inline path
    /// ([`CountDeferred::path`]): the caller counts the reference where the tag says. On the
    /// out-of-line path it answers `false`, and the unowned half hands the tag over. Strategies
    /// that never defer never call it.
    #[inline(always)]
    fn incref_owned(&self, token: Self::Token<'_>, _deferred: impl CountDeferred) -> bool {
        self.incref(token);
        true
    }
    /// The rest of [`incref_counting`](Self::incref_counting), after
    /// [`incref_owned`](Self::incref_owned) answered `false`: a deferred count met here (a token
    /// on the out-of-line path) calls `deferred` with its tag, as the first half does on the
    /// inline path.
    #[inline]
    fn incref_unowned(&self, token: Self::Token<'_>, _deferred: impl FnOnce(u16)) -> Counting {
        self.incref_counting(token)
    }
    /// Drops a reference; `true` means it was the last one and the caller must free the object.
    ///
    /// # Safety
    /// `this` points to the live count of an object the caller holds a reference to, which the
    /// caller gives up. `release` frees that object given this same pointer; a strategy may call
    /// it later from another thread (the biased count's owner merges do), exactly once. Until
    /// then the count stays alive at this address, whatever the count answers meanwhile (see
    /// [`BiasedCount::decref`]).
    unsafe fn decref(
        this: NonNull<Self>,
        token: Self::Token<'_>,
        release: unsafe fn(NonNull<Self>),
    ) -> bool;
    /// [`decref`](Self::decref), answering `None` when the count ignored the decrement (it is
    /// deferred or immortal) instead of `Some(false)`.
    ///
    /// # Safety
    /// As for `decref`.
    #[inline]
    unsafe fn decref_counting(
        this: NonNull<Self>,
        token: Self::Token<'_>,
        release: unsafe fn(NonNull<Self>),
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        Some(unsafe { Self::decref(this, token, release) })
    }
    /// The fast half of [`decref_counting`](Self::decref_counting), as
    /// [`incref_owned`](Self::incref_owned) is of `incref_counting`: `None`, changing nothing,
    /// on a thread that does not own a biased count (`Some(false)` for one marked immortal in its
    /// local half, on any thread); then call
    /// [`decref_unowned`](Self::decref_unowned). `Some(true)`: the caller frees the object. A
    /// strategy may also free it through `release` itself and answer `Some(false)` (the biased
    /// count does, out of line, to keep the inlined part short). A deferred count answers
    /// `Some(false)` after handing `deferred` its tag on the inline path, `None` on the other,
    /// as in `incref_owned`.
    ///
    /// # Safety
    /// As for `decref`; the reference is given up only if the answer is `Some`.
    #[inline(always)]
    unsafe fn decref_owned(
        this: NonNull<Self>,
        token: Self::Token<'_>,
        release: unsafe fn(NonNull<Self>),
        _deferred: impl CountDeferred,
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        Some(unsafe { Self::decref(this, token, release) })
    }
    /// The rest of [`decref_counting`](Self::decref_counting), after
    /// [`decref_owned`](Self::decref_owned) answered `None`; `deferred` as in
    /// [`incref_unowned`](Self::incref_unowned).
    ///
    /// # Safety
    /// As for `decref`.
    #[inline]
    unsafe fn decref_unowned(
        this: NonNull<Self>,
        token: Self::Token<'_>,
        release: unsafe fn(NonNull<Self>),
        _deferred: impl FnOnce(u16),
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::decref_counting(this, token, release) }
    }
    /// The number of references, or `Immortal`.
    fn get(&self, token: Self::Token<'_>) -> RefCountValue;
    /// Makes the object immortal. Irreversible.
    fn make_immortal(&self, token: Self::Token<'_>);
    /// The id of the thread that counts this object without atomics, if the strategy has one
    /// and the object still has an owner (see [`BiasedCount::owner_id`]); `None` otherwise.
    fn owner_id(&self) -> Option<u32> {
        None
    }
    /// Stops counting here, for a caller that counts the references elsewhere meanwhile, where
    /// `tag` says (see [`BiasedCount::defer_counting`]). Returns whether it did; strategies that
    /// cannot defer answer `false`.
    ///
    /// # Safety
    /// As for `BiasedCount::defer_counting`.
    unsafe fn defer_counting(&self, _tag: u16) -> bool {
        false
    }
    /// Makes thread `new_owner` the owner and gives up one reference the caller holds (see
    /// [`BiasedCount::transfer_ownership`]). Returns whether it did; strategies without owners
    /// answer `false`.
    ///
    /// # Safety
    /// As for `BiasedCount::transfer_ownership`.
    unsafe fn transfer_ownership(&self, _new_owner: u32) -> bool {
        false
    }
    /// The tag of a deferred count, `None` if it is not deferred (see
    /// [`BiasedCount::deferred_tag`]).
    fn deferred_tag(&self) -> Option<u16> {
        None
    }
    /// The references a deferred count holds (see [`BiasedCount::deferred_total`]).
    ///
    /// # Safety
    /// The count was deferred by [`defer_counting`](Self::defer_counting) and not resumed since
    /// (so only strategies that defer are ever asked).
    unsafe fn deferred_total(&self) -> i64 {
        unreachable!("{} counts are never deferred", Self::STRATEGY.name())
    }
    /// Counts here again (see [`BiasedCount::resume_counting`]); whether a reference remains.
    ///
    /// # Safety
    /// As for `BiasedCount::resume_counting`.
    unsafe fn resume_counting(&self, _elsewhere: i64) -> bool {
        unreachable!("{} counts are never deferred", Self::STRATEGY.name())
    }
    /// Runs `drops` as one batch of drops, where the strategy has batches (see
    /// [`biased::drop_batch`](crate::biased::drop_batch), and its rule: nothing in `drops` may
    /// wait for another thread); others just run it.
    fn drop_batch<R>(drops: impl FnOnce() -> R) -> R {
        drops()
    }
}

// SAFETY: `NonAtomicCount` counts exactly and saturates at `u32::MAX`; see its methods.
unsafe impl RefCount for NonAtomicCount {
    type Token<'py> = GilHeld<'py>;
    const STRATEGY: Strategy = Strategy::NonAtomic;

    #[inline]
    fn new(gil: GilHeld<'_>) -> Self {
        NonAtomicCount::new(gil)
    }
    fn immortal() -> Self {
        NonAtomicCount::immortal()
    }
    #[inline]
    fn incref(&self, gil: GilHeld<'_>) {
        NonAtomicCount::incref(self, gil)
    }
    #[inline]
    unsafe fn decref(
        this: NonNull<Self>,
        gil: GilHeld<'_>,
        _release: unsafe fn(NonNull<Self>),
    ) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { NonAtomicCount::decref_raw(this, gil) }
    }
    #[inline]
    fn get(&self, gil: GilHeld<'_>) -> RefCountValue {
        NonAtomicCount::get(self, gil)
    }
    fn make_immortal(&self, gil: GilHeld<'_>) {
        NonAtomicCount::make_immortal(self, gil)
    }
}

// SAFETY: `AtomicCount` counts exactly and saturates at 2^31; see its methods.
unsafe impl RefCount for AtomicCount {
    type Token<'py> = ();
    const STRATEGY: Strategy = Strategy::Atomic;

    #[inline]
    fn new((): ()) -> Self {
        AtomicCount::new()
    }
    fn immortal() -> Self {
        AtomicCount::immortal()
    }
    #[inline]
    fn incref(&self, (): ()) {
        AtomicCount::incref(self)
    }
    #[inline]
    unsafe fn decref(this: NonNull<Self>, (): (), _release: unsafe fn(NonNull<Self>)) -> bool {
        // SAFETY: the caller guarantees the count is alive.
        unsafe { this.as_ref() }.decref()
    }
    #[inline]
    fn get(&self, (): ()) -> RefCountValue {
        AtomicCount::get(self)
    }
    fn make_immortal(&self, (): ()) {
        AtomicCount::make_immortal(self)
    }
}

// SAFETY: `BiasedCount` counts exactly (the protocol is model-checked under loom) and saturates
// both halves; see the `biased` module.
unsafe impl RefCount for BiasedCount {
    type Token<'py> = Owner<'py>;
    const STRATEGY: Strategy = Strategy::Biased;

    #[inline]
    fn new(owner: Owner<'_>) -> Self {
        BiasedCount::new_for(owner)
    }
    fn immortal() -> Self {
        BiasedCount::immortal()
    }
    #[inline]
    fn incref(&self, owner: Owner<'_>) {
        BiasedCount::incref_for(self, owner)
    }
    #[inline]
    unsafe fn decref(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: unsafe fn(NonNull<Self>),
    ) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::decref_for(this, owner, release) }
    }
    #[inline]
    fn incref_counting(&self, owner: Owner<'_>) -> Counting {
        BiasedCount::incref_counting(self, owner)
    }
    #[inline]
    unsafe fn decref_counting(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: unsafe fn(NonNull<Self>),
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::decref_counting(this, owner, release) }
    }
    #[inline(always)]
    fn incref_owned(&self, owner: Owner<'_>, deferred: impl CountDeferred) -> bool {
        BiasedCount::incref_owned(self, owner, deferred)
    }
    #[inline]
    fn incref_unowned(&self, _: Owner<'_>, deferred: impl FnOnce(u16)) -> Counting {
        BiasedCount::incref_unowned(self, deferred)
    }
    #[inline(always)]
    unsafe fn decref_owned(
        this: NonNull<Self>,
        owner: Owner<'_>,
        release: unsafe fn(NonNull<Self>),
        deferred: impl CountDeferred,
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::decref_owned_releasing(this, owner, release, deferred) }
            .then_some(false)
    }
    #[inline]
    unsafe fn decref_unowned(
        this: NonNull<Self>,
        _: Owner<'_>,
        release: unsafe fn(NonNull<Self>),
        deferred: impl FnOnce(u16),
    ) -> Option<bool> {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::decref_unowned(this, release, deferred) }
    }
    #[inline]
    fn get(&self, _: Owner<'_>) -> RefCountValue {
        BiasedCount::get(self)
    }
    fn make_immortal(&self, _: Owner<'_>) {
        BiasedCount::make_immortal(self)
    }
    fn owner_id(&self) -> Option<u32> {
        BiasedCount::owner_id(self)
    }
    unsafe fn defer_counting(&self, tag: u16) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::defer_counting(self, tag) }
    }
    unsafe fn transfer_ownership(&self, new_owner: u32) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::transfer_ownership(self, new_owner) }
    }
    fn deferred_tag(&self) -> Option<u16> {
        BiasedCount::deferred_tag(self)
    }
    unsafe fn deferred_total(&self) -> i64 {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::deferred_total(self) }
    }
    unsafe fn resume_counting(&self, elsewhere: i64) -> bool {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::resume_counting(self, elsewhere) }
    }
    fn drop_batch<R>(drops: impl FnOnce() -> R) -> R {
        crate::biased::drop_batch(drops)
    }
}
