//! Counting references, and how objects die: `incref`, `decref`, the references containers own
//! (`OwnedRef`), and the trashcan. The handles users hold are in `bound`, `shared` and `borrowed`.
//!
//! Objects are freed iteratively: the outermost release on a thread's stack owns a "trash" work
//! list, and every object that dies while it frees goes on that list instead of being freed in a
//! nested call, so dropping a list nested a million deep uses no stack (CPython's trashcan,
//! without the depth limit). The pointer that sends nested releases to the list is the thread
//! state's frame pointer, which is never torn down, so this holds during thread exit too.

use std::ptr::NonNull;

use ftrt_gil::{BuildCount, Python};
use ftrt_refcount::{Counting, RefCount};

use crate::header::{count_ptr, header, Header};
use crate::hot;

/// The token the build's reference count asks for (`GilHeld` under the GIL, `()` otherwise).
pub(crate) type Token<'py> = <BuildCount as RefCount>::Token<'py>;

/// A token for paths that run without a `Python` at hand.
///
/// # Safety
/// The calling thread is attached: in the `gil` build it holds the GIL; in the biased build
/// its counts are not parked (a detached thread's are: other threads merging its queue then
/// write the `local` halves of its objects, which a count through this token would write
/// without atomics too). The atomic build's token proves nothing.
#[inline(always)]
pub(crate) unsafe fn assume_token<'a>() -> Token<'a> {
    // SAFETY: forwarded from the caller, who knows the thread attached (unchecked here).
    unsafe { Python::assume_attached().count_token_unchecked() }
}

/// Adds a reference.
///
/// # Safety
/// The object is alive (the caller holds or protects a reference to it), and `token` is the
/// calling thread's as an attached thread: from `Python::count_token` or [`assume_token`], the
/// only tokens this crate makes.
#[inline]
pub(crate) unsafe fn incref(object: NonNull<Header>, token: Token<'_>) {
    // SAFETY: forwarded from the caller.
    if !unsafe { try_incref_inline(object, token) } {
        // SAFETY: forwarded from the caller.
        unsafe { incref_shared(object, token) };
    }
}

/// [`incref`]'s inline half alone: adds a reference and answers `true` where the count takes it
/// without a call, else changes nothing and answers `false`: then count with [`incref`] (or
/// `incref_shared`, the rest of it). Inline are the owner's biased count, one marked immortal in
/// its local half, a deferred object's count in this thread's array once the thread has made
/// it, and every count of the other builds.
///
/// # Safety
/// As for [`incref`].
#[inline(always)]
pub(crate) unsafe fn try_incref_inline(object: NonNull<Header>, token: Token<'_>) -> bool {
    // SAFETY: alive per the caller.
    let head = unsafe { header(object) };
    // Every strategy but the biased count answers `true` here, and the rest folds away. The
    // biased count answers `true` on its owner, and for a count marked immortal on any thread.
    // Not the owner: a deferred object (which no thread owns) counts in this thread's array, a
    // path as short as the owner's, once the array is made; others count in the shared half,
    // out of line, as deferred objects do before the array is made.
    // SAFETY: the count's tag, for the reference taken here; alive per the caller; the thread
    // is attached (the contract's token).
    <BuildCount as RefCount>::incref_owned(&head.count, token, unsafe {
        hot::CountInThread::new(hot::TAKEN)
    })
}

/// An increment in the shared count ([`incref`]'s path for objects that count there).
///
/// # Safety
/// As for [`incref`].
#[inline(never)]
unsafe fn incref_shared(object: NonNull<Header>, token: Token<'_>) {
    // SAFETY: alive per the caller.
    let head = unsafe { header(object) };
    let count_deferred = |tag| {
        // SAFETY: the count's tag, for the reference taken here; alive per the caller; the
        // thread is attached (the contract's token).
        unsafe { hot::count_in_thread_out_of_line(tag, hot::TAKEN) }
    };
    if <BuildCount as RefCount>::incref_unowned(&head.count, token, count_deferred)
        == Counting::Shared
    {
        // SAFETY: alive per the caller, and just counted; the thread is attached (the
        // contract's token).
        unsafe { hot::note_shared_increment(object) };
    }
}

/// Drops a reference the caller owns, freeing the object if it was the last.
///
/// # Safety
/// The caller owns one reference to the object and gives it up; `token` is as for [`incref`].
#[inline]
pub(crate) unsafe fn decref(object: NonNull<Header>, token: Token<'_>) {
    // The halves are `incref`'s, in the same order.
    // SAFETY: the count's tag, for the reference the caller gives up; the thread is attached
    // (the contract's token).
    let count_deferred = unsafe { hot::CountInThread::new(hot::DROPPED) };
    // SAFETY: the caller gives up its reference if the owner's half takes it; `release_count`
    // frees exactly such objects.
    match unsafe {
        <BuildCount as RefCount>::decref_owned(
            count_ptr(object),
            token,
            release_count,
            count_deferred,
        )
    } {
        // SAFETY: that was the last reference.
        Some(true) => unsafe { release(object) },
        Some(false) => {}
        // SAFETY: forwarded from the caller.
        None => unsafe { decref_shared(object, token) },
    }
}

/// A decrement in the shared count ([`decref`]'s path for objects that count there).
///
/// # Safety
/// As for [`decref`].
#[inline(never)]
unsafe fn decref_shared(object: NonNull<Header>, token: Token<'_>) {
    let count_deferred = |tag| {
        // SAFETY: the count's tag, for the reference the caller gives up; the thread is
        // attached (the contract's token).
        unsafe { hot::count_in_thread_out_of_line(tag, hot::DROPPED) }
    };
    // SAFETY: the caller gives up its reference; `release_count` frees exactly such objects.
    // `None`: immortal (made so at run time) or deferred (counted above), never freed here.
    if unsafe {
        <BuildCount as RefCount>::decref_unowned(
            count_ptr(object),
            token,
            release_count,
            count_deferred,
        )
    } == Some(true)
    {
        // SAFETY: that was the last reference.
        unsafe { release(object) };
    }
}

/// The dead objects waiting to be freed, in the frame of the outermost `release` on the stack.
type Trash = Vec<NonNull<Header>>;

/// The work list of the `release` running on this thread, if any: the thread state's frame
/// pointer (`ftrt_gil::local::frame`), which lives in a thread-local without a destructor, so it
/// is never torn down: releases that run inside thread-local destructors (an exiting owner
/// merging its queue, a `Shared` kept in a thread-local) free iteratively like any other.
fn trash() -> Option<NonNull<Trash>> {
    NonNull::new(ftrt_gil::local::frame().cast::<Trash>())
}

fn set_trash(trash: Option<NonNull<Trash>>) {
    // SAFETY: `trash` is null or the outermost `release`'s own list, which outlives every
    // nested release that reads it and is cleared (`Done`) before that frame returns.
    unsafe {
        ftrt_gil::local::set_frame(trash.map_or(std::ptr::null_mut(), |t| t.as_ptr().cast()))
    };
}

/// Frees a dead object, and every object that dies because of it, without recursion.
///
/// # Safety
/// The object's count reached zero and no lock-free reader can still reach it.
#[inline]
pub(crate) unsafe fn release(object: NonNull<Header>) {
    // SAFETY: forwarded.
    unsafe { release_count(count_ptr(object)) };
}

/// [`release`] by the count's pointer, and its body: the release function the counts call (the
/// biased count's merges, and its owner's last decrement), so that a call through this pointer
/// lands in the body at once.
///
/// # Safety
/// As for [`release`]: the count heads a dead object's header.
#[inline(never)]
unsafe fn release_count(count: NonNull<BuildCount>) {
    let object: NonNull<Header> = count.cast();
    if let Some(mut trash) = trash() {
        // SAFETY: the count heads a dead object's header, alive until freed.
        let slots = &unsafe { header(object) }.ty.slots;
        if !slots.holds_references {
            // Its free releases no reference, so it cannot free another object: no recursion
            // to avoid, and freed at once it never makes the list grow (a dead container of
            // a million ints would grow it to 8 MB, page by fresh page).
            // SAFETY: dead and unreachable, per the contract; freed once, here.
            unsafe { (slots.free)(object) };
            return;
        }
        // SAFETY: set only by the outermost `release` on this thread's stack, which owns the
        // list, outlives this nested call, and does not touch the list while a free runs.
        unsafe { trash.as_mut() }.push(object);
        return;
    }
    let mut pending = Trash::new();
    let trash = NonNull::from(&mut pending);
    set_trash(Some(trash));
    /// Stops nested releases from pushing onto the list, panics included. (A payload's drop
    /// that panics leaks the objects still on the list: they are dead and unreachable.)
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            set_trash(None);
        }
    }
    let done = Done;
    let mut next = Some(object);
    while let Some(dead) = next {
        // SAFETY: each object on the list died (count zero) and is unreachable; its payload's
        // drop pushes the objects it kills onto the list instead of freeing them here.
        unsafe { (header(dead).ty.slots.free)(dead) };
        // SAFETY: `pending` lives until the end of this function; nested releases pushed through
        // the same pointer and have returned.
        next = unsafe { &mut *trash.as_ptr() }.pop();
    }
    drop(done);
}

/// Runs `drops`, a dead container's drop of the references it held, as one batch of drops
/// (`RefCount::drop_batch`: in the biased build, items handed back to the same parked or exited
/// owner pay for the owner's lookup once, not once each). Only inside a release, whose nested
/// releases put the dead objects that hold references on its list instead of freeing them, and
/// free the others (scalars and strings) at once: then `drops` runs no destructor but those of
/// memory, and waits for no thread, as a batch requires. Elsewhere `drops` just runs.
#[inline]
pub(crate) fn drop_items(drops: impl FnOnce()) {
    if trash().is_some() {
        <BuildCount as RefCount>::drop_batch(drops);
    } else {
        drops();
    }
}

/// A reference owned by the containers' payloads: decrefs on drop, without a `Python` (payloads
/// are dropped inside a release, which runs with the right to touch counts).
pub(crate) struct OwnedRef(NonNull<Header>);

// SAFETY: objects are shared between threads by design; their payloads are thread-safe and
// their counts are touched only through the build's strategy. Moving one to another thread is
// what the free-threaded builds' epoch does with retired references. It is dropped only on an
// attached thread (`assume_token`'s contract: under the GIL in the `gil` build, counts not
// parked in the biased one): by a payload's drop inside a release (which runs under a decref's
// token), by a writer, by the last `ReadGuard`, or by a retired batch's drop, which the
// reclamation runs only on attached threads; or, unwinding from an operation on a handle
// carried into a detach, by its `Drop`, which then attaches first.
unsafe impl Send for OwnedRef {}
// SAFETY: `&OwnedRef` only reads the pointer.
unsafe impl Sync for OwnedRef {}

impl OwnedRef {
    /// Takes over a reference the caller owns.
    ///
    /// # Safety
    /// The caller owns one reference to the object and hands it over.
    pub(crate) unsafe fn from_raw(object: NonNull<Header>) -> Self {
        Self(object)
    }

    pub(crate) fn as_ptr(&self) -> NonNull<Header> {
        self.0
    }

    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let object = self.0;
        std::mem::forget(self);
        object
    }
}

impl Drop for OwnedRef {
    // Inline: a write closure that moves an `OwnedRef` into a container (`set_item`) drops it on
    // its error path, and an out-of-line drop takes the closure's address, so its captures stay
    // in memory and are copied at every call level (measured: `shared-attribute-keep` at one
    // thread 1.57 -> 0.95 s).
    #[inline]
    fn drop(&mut self) {
        // Every drop of the object model's own runs on an attached thread (under the GIL in the
        // `gil` build): inside a release (under a decref's token), in a writer, in the last
        // `ReadGuard`'s drop, or in a retired batch's drop, which the reclamation runs only on
        // attached threads (`reclaim`). But an operation on a handle carried into a detach
        // (the hole `Python::allow_threads` documents) may have made its reference one of
        // these before its check panicked, and the unwinding drops it here: attached for it.
        if !ftrt_gil::is_attached() {
            // SAFETY: this owns a reference, given up here.
            return unsafe { decref_attaching(self.0) };
        }
        // SAFETY: this owns a reference; attached, checked just above.
        unsafe { decref(self.0, assume_token()) };
    }
}

/// Gives up a reference on a thread that may not be attached, attaching for the decrement
/// (at once if it is attached already): a `Shared`'s drop, on any thread, and the drop of a
/// handle or reference on a detached thread (`OwnedRef`'s, `Bound`'s). Out of line: those last
/// two are rare, and an attachment costs more than the call.
///
/// # Safety
/// The caller owns one reference to the object and gives it up.
#[cold]
#[inline(never)]
pub(crate) unsafe fn decref_attaching(object: NonNull<Header>) {
    // SAFETY: the caller's reference, given up here; attached, the token is genuine, and used
    // at once.
    Python::attach(|py| unsafe { decref(object, py.count_token()) });
}
