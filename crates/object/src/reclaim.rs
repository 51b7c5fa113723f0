//! Keeping objects and arrays alive for lock-free readers.
//!
//! Free-threaded builds read list items and dict entries without locks. A reader may load a
//! pointer from a slot just as a writer replaces or removes it, so whatever a writer takes out
//! of a container is *retired* through `crossbeam-epoch` rather than released at once: removed
//! references are dropped, and old item arrays and hash tables freed, only after every thread
//! that was pinned at the time has unpinned. Attached threads stay pinned between checkpoints
//! (`ftrt-gil` pins on attach and repins at `Python::check`), so a read pins for free.
//!
//! A reader that loaded a pointer while pinned may therefore increment its count without a
//! try-increment: the container's reference, or the retired reference still waiting for the
//! epoch, keeps the count above zero until the reader's guard is gone.
//!
//! A lock-free read on a thread that holds its attach pin (`ftrt_gil::local::attach_pinned`,
//! every attached thread but one attached after its exit) takes no pin of its own
//! (`with_read_guard`): it reaches no checkpoint and begins or ends no section (a section that
//! waits for its lock gives the attach pin up for the wait), so the attach pin covers it.
//!
//! `write_contents`, `with_read_guard` and `try_read_unpinned` are unsafe: the guard they give
//! their closure is unprotected on their fast paths, so their soundness rests on what the
//! closure does (see each one's `# Safety`). Their callers bind the closure first (through
//! [`guarded`]), and wrap the call alone in `unsafe`: a closure written inside an `unsafe` block
//! is unsafe code throughout, and the unsafe operations in it would lose blocks and `SAFETY`
//! arguments of their own.
//!
//! A local container (see `Header`: no other thread can reach it) needs none of this unless a
//! read is open on its own thread: its lock-free reads take no pin (`with_read_guard`), its
//! writes take none either (`write_contents`) and free what they remove at once. The reads that
//! can hold a pointer across a write on the same thread, a `ReadGuard` (for its whole life,
//! whether or not it borrowed) and a `Debug` print, count themselves in
//! `ftrt_gil::local::readers`, and while any is open removals are retired as usual.
//!
//! Nor does a shared container written by a thread that holds the world alone (lock elision,
//! `ftrt_gil::local::no_reads_elsewhere`): no other thread is attached to read it, none attaches
//! before the holder lets go, and a hold during which a thread is away with a read open (a
//! `ReadGuard` held across `allow_threads`) does not count. Its writes then take no pin and free
//! what they remove at once, as the `gil` build's do.
//!
//! Retired references are batched per thread (64 at a time, one deferred function per batch),
//! and an expired batch is dropped by the thread that retired it: when the epoch runs it on
//! another thread, it is posted back to the retiring thread's mailbox. The objects a thread
//! retires are mostly its own (a private dict's replaced values), and dropping them there takes
//! the biased count's owner path, instead of queueing each one back to its owner. A batch whose
//! references were all taken out of shared containers holds shared objects only (a shared
//! object holds only shared ones), and does not go home when its thread is away (detached, its
//! counts parked: it would drop the batch only once it attaches again, after an
//! `allow_threads` around a blocking call, say) nor ever in the build without an owner's path
//! (`atomic-rc`): it is dropped where it expires if that thread is attached, else left to the
//! orphaned batches below. A batch with a reference taken out of a local container (while a
//! read was open), which may be to a local object, always goes home: a local object is freed
//! only on its own thread (`gc::local`).
//!
//! What a thread holds this way stays bounded: at each of its quiescent states (every 16th
//! checkpoint and every detach, through `ftrt_gil::on_quiescent_state`) it hands its partial
//! batch to the epoch and drops what was posted back to it, so a thread that stops retiring
//! but keeps reaching checkpoints does not keep retired objects alive. At exit it hands over
//! its last batch and closes its mailbox.
//!
//! Dropping a batch changes counts, which only attached threads do (a stopped world relies on
//! it), and nothing here attaches: the epoch runs deferred functions on whichever thread pins,
//! an exiting one included, and an attach there would wait for any stop of the world under way,
//! which may itself wait for a thread that waits for that exit. So a batch that expires on a
//! thread that is not attached goes home to its mailbox if it would go home from an attached
//! one (or expired on its own thread), and otherwise, or once its thread has exited, joins the
//! orphaned batches, which the next attached thread to settle drops.
//!
//! The `gil` build reads and writes under the GIL, so nothing can race with a load: the guard is
//! `crossbeam_epoch::unprotected()` and replaced arrays are freed at once. A removed *reference*
//! can still outlive a reader, though: a borrowed value held while its thread deletes it, or
//! while it lets another thread run. So it is dropped at once only when no
//! [`ReadGuard`](crate::ReadGuard) is alive; otherwise it waits for the last one (see `guard`).

use std::sync::atomic::{AtomicPtr, Ordering};

use crossbeam_epoch::{Guard, Owned, Shared as EpochShared};

use ftrt_gil::Python;

use crate::header::Header;
use crate::refs::{assume_token, incref, OwnedRef};

/// Runs `f` with the `gil` build's guard for pointers loaded from containers: none is needed
/// (the free-threaded builds choose, in `with_read_guard` and `write_contents`).
///
/// # Safety
/// `f` gets the unprotected guard (`crossbeam_epoch::unprotected()`), so what keeps alive what
/// it loads is the GIL alone: `f` runs no user code and never lets the GIL go (no
/// `Python::allow_threads`, no `Python::check`, which may hand the GIL over). It retires what
/// it removes only through `retire_ref`, `hand_over` and `retire_array` (a deferral through the
/// unprotected guard itself runs at once), and returns no pointer it loaded without counting a
/// reference to it.
#[cfg(ftrt_gil_build)]
#[inline]
unsafe fn with_guard<R>(f: impl FnOnce(&Guard) -> R) -> R {
    // SAFETY: under the GIL no other thread touches objects concurrently, and `f` runs no user
    // code and never lets the GIL go (the caller's contract), so nothing it loads is freed while
    // it uses it. (Replaced arrays retired through this guard are freed at once; removed
    // references go through `retire_ref`, which defers them while a `ReadGuard` is alive.)
    f(unsafe { crossbeam_epoch::unprotected() })
}

/// Returns `f` unchanged: a closure for [`write_contents`], [`with_read_guard`] or
/// [`try_read_unpinned`], written outside the `unsafe` block of the call (see the module docs),
/// is passed through here to be typed as the call's argument would be: `FnOnce`, over a guard of
/// any lifetime. Bound to a variable without it, a closure that only borrows is typed `Fn`, and
/// the call goes through a `call_once` shim that the optimiser left out of line (every list
/// write's body, and several reads', out of `write_contents`'s and `with_read_guard`'s inline
/// paths).
#[inline(always)]
pub(crate) fn guarded<F: FnOnce(&Guard) -> R, R>(f: F) -> F {
    f
}

/// Runs `f` with an unpinned guard (`crossbeam_epoch::unprotected()`), for a walk of contents
/// that nothing changes meanwhile: the `traverse` slots.
///
/// Pinning there would not only be unneeded but wrong. A pin that is a thread's outermost (on a
/// thread attached after its exit, which holds no attach pin) may run the epoch's deferred
/// functions, which drop retired references and free objects, on this thread, in the middle of
/// the walk: a collector walking every tracked object read a list freed under it that way.
///
/// # Safety
/// Nothing changes what `f` reads during the call (the caller is inside the owner's critical
/// section, the owner is local to this thread, or the world is stopped), so nothing `f` loads is
/// retired, let alone freed, while it runs; and `f` retires nothing through the guard.
#[inline]
pub(crate) unsafe fn with_unchanging<R>(f: impl FnOnce(&Guard) -> R) -> R {
    // SAFETY: per the caller: what `f` loads stays reachable from its owner until it returns,
    // and it defers nothing through the guard.
    f(unsafe { crossbeam_epoch::unprotected() })
}

/// Runs `f`, a write to `owner`'s contents, in `owner`'s critical section, with a guard to load
/// them with and to retire what it removes through: every container write goes through here.
///
/// Where no reader can hold what `f` removes ([`no_reader_can_hold`]: no read open on this
/// thread, and a local owner or a world held alone), `f` runs here, inline, with neither a lock
/// nor a pin, and `retire_ref`, `hand_over` and `retire_array` free at once. The section would
/// come to nothing there: a local object's section takes no lock (see `Header::section`), and a
/// thread that holds the world alone elides its sections without recording them
/// (`no_reads_elsewhere` is true only during such a hold, whose stack elides). Otherwise the
/// section and a pinned guard, out of line. (The `gil` build takes neither: the section is the
/// GIL's, and the guard unprotected, see `with_guard`.)
///
/// # Safety
/// `f` reads and writes `owner`'s contents, no other container's (the section, and the test
/// for readers, are `owner`'s), and:
/// - does not detach the thread, directly or through what it calls: it calls neither
///   `Python::allow_threads` nor `Python::check`, and begins no section that may have to wait
///   (`ftrt_gil::section::with_if_undetached`'s contract, which `Header::section` forwards).
///   On the general path `f` runs in `owner`'s section, which a thread that holds the world
///   alone does not even record; where no reader can hold what it removes, with no section at
///   all and the unprotected guard (`crossbeam_epoch::unprotected()`), on the grounds that no
///   other thread can reach a local `owner` or is attached beside a thread that holds the world
///   alone. A detach ends such a hold (and lets the GIL go in the `gil` build): other threads
///   could then write `owner` beside `f`, or free what it loaded.
/// - runs no user code and does not make `owner` shared or hand anything to another thread:
///   what it calls is this crate's container code, the slots (`slots::Payload`: no user code)
///   and the destructors of the references it drops. Those free objects and drop what the
///   objects held, in this crate's payloads' drops: no user code, no checkpoint, no detach, no
///   section, and nothing retired through `f`'s guard.
/// - retires what it removes from `owner` only through `retire_ref`, `hand_over` and
///   `retire_array`, given `owner` and the guard, which test again whether a reader can hold
///   it, and pin for themselves where the guard is unprotected; never through the guard's own
///   `defer*`, which on the unprotected guard runs at once.
/// - lets no pointer it loaded outlive the call without counting a reference to it, returned or
///   stored through a capture: the guard (and on the general path the section) protects its
///   loads only until it returns.
#[inline(always)]
pub(crate) unsafe fn write_contents<R>(
    owner: &Header,
    py: Python<'_>,
    f: impl FnOnce(&Guard) -> R,
) -> R {
    // A handle used where its token was carried into a detach fails here, before any access.
    ftrt_gil::assert_attached();
    #[cfg(not(ftrt_gil_build))]
    {
        if no_reader_can_hold(owner) {
            // SAFETY: no other thread can write `owner` (it is local, or this thread holds the
            // world alone) or read it, and `f` neither detaches (which would end the hold) nor
            // makes `owner` shared (the caller's contract), so what `f` loads stays alive until
            // `f` itself removes it; with no read open on this thread either, nothing else holds
            // what it removes. `f` retires only through `retire_ref`, `hand_over` and
            // `retire_array`, which never defer through an unprotected guard (should the
            // condition change inside `f`, they pin for themselves).
            let written = f(unsafe { crossbeam_epoch::unprotected() });
            // The elided section's check (`ftrt_lock`'s, skipped here): a hold on the world
            // alone lasts as long as `f` only if `f` did not detach, which ends it.
            debug_assert!(
                !owner.is_shared() || ftrt_gil::local::no_reads_elsewhere(),
                "a write to a shared container detached while it relied on the world held alone"
            );
            return written;
        }
        // SAFETY: forwarded: `f` meets `write_contents`'s contract.
        unsafe { write_contents_in_section(owner, py, f) }
    }
    #[cfg(ftrt_gil_build)]
    {
        let in_section = || {
            // SAFETY: `f` runs no user code and does not detach, so never lets the GIL go,
            // retires only through `retire_ref`, `hand_over` and `retire_array`, and returns no
            // pointer it loaded without counting it (the caller's contract).
            unsafe { with_guard(f) }
        };
        // SAFETY: `f` does not detach or make `owner` shared (the caller's contract), and
        // `with_guard` does neither.
        unsafe { owner.section(py, in_section) }
    }
}

/// [`write_contents`]'s general path: the section, and a pinned guard (a reader may hold what
/// `f` removes).
///
/// # Safety
/// As for [`write_contents`]: `f` runs in `owner`'s section, which it must not detach in.
#[cfg(not(ftrt_gil_build))]
#[inline(never)]
unsafe fn write_contents_in_section<R>(
    owner: &Header,
    py: Python<'_>,
    f: impl FnOnce(&Guard) -> R,
) -> R {
    // SAFETY: `f` does not detach or make `owner` shared (the caller's contract); nor does
    // the pin, but for the assumption `Header::section` states about other crates' deferred
    // closures on a thread attached after its exit.
    unsafe { owner.section(py, || f(&crossbeam_epoch::pin())) }
}

/// [`with_read_guard`]'s pinned path, out of line: only a shared owner read on a thread without
/// its attach pin (one attached after its exit) comes here.
#[cfg(not(ftrt_gil_build))]
#[cold]
#[inline(never)]
fn read_pinned<R>(f: impl FnOnce(&Guard) -> R) -> R {
    f(&crossbeam_epoch::pin())
}

/// Replaces what `slot` holds, in its container's critical section, and returns the old
/// pointer: a load and a store rather than a swap, since writers hold the section and so none
/// races with this one (readers only load). Release: a reader that loads the new pointer sees
/// the object it points to.
///
/// # Safety
/// The caller is a write to the container that holds `slot`, in its critical section
/// ([`write_contents`]): no other write to `slot` runs meanwhile. (Two writers racing here
/// would both take the same old pointer, and both give up its reference.)
#[inline]
pub(crate) unsafe fn replace<T>(slot: &AtomicPtr<T>, new: *mut T) -> *mut T {
    let old = slot.load(Ordering::Relaxed);
    slot.store(new, Ordering::Release);
    old
}

/// Runs `f` with a guard for a lock-free read of `owner`'s contents that retires nothing: none
/// for a local object, whose contents only this thread can change, and does not while it reads
/// (see `Header`); none on a thread that holds its attach pin, which covers `f`; else a pinned
/// guard.
///
/// Always inlined, with the unpinned path inline and the pinned one out of line
/// ([`read_pinned`]): an inlined caller otherwise left this call, with `f` in it, out of line
/// (`DictPayload::get`), and a guard that might need dropping kept a drop flag and five saved
/// registers in every read. `f` has two call sites, so the callers mark it always inline.
///
/// # Safety
/// `f` reads `owner`'s contents, and:
/// - writes nothing there, runs no user code, and does not make `owner` shared: on a local
///   `owner` the guard is unprotected (`crossbeam_epoch::unprotected()`), on the grounds that
///   only this thread can change what `f` loads, and it does not while `f` runs.
/// - reaches no checkpoint (`Python::check`, where the attach pin is renewed), does not detach
///   (`Python::allow_threads`, which gives the pin up), and begins or ends no section (one that
///   has to wait for its lock gives the attach pin up for the wait): on a thread that holds its
///   attach pin the guard is unprotected too, and that pin is what keeps alive what another
///   thread removes meanwhile. In the `gil` build the guard is always unprotected, and the GIL,
///   which `f` then never lets go, keeps it alive. (Only a shared `owner` read on a thread
///   without its attach pin gets a pinned guard.)
/// - retires nothing through the guard: a deferral through the unprotected guard runs at once.
/// - lets no pointer it loaded outlive the call without counting a reference to it, returned or
///   stored through a capture: the guard protects its loads only until it returns.
///
/// Dropping a reference inside `f` is allowed: a destructor of this object model frees objects
/// and drops what they held, with no user code, no checkpoint, no detach and no section.
#[inline(always)]
pub(crate) unsafe fn with_read_guard<R>(owner: &Header, f: impl FnOnce(&Guard) -> R) -> R {
    ftrt_gil::assert_attached();
    #[cfg(not(ftrt_gil_build))]
    {
        // The pin first: every attached thread holds it but one attached after its exit, so a
        // shared owner's flag is rarely read (three instructions a read of a shared instance).
        if ftrt_gil::local::attach_pinned() || !owner.is_shared() {
            // SAFETY: unpinned when `owner` is local, so no other thread can reach it to remove
            // what `f` loads, and `f` reads without writing or running user code (the caller's
            // contract): what it loads stays in the container, alive, until `f` has returned.
            // Or unpinned when the thread holds its attach pin
            // (`ftrt_gil::local::attach_pinned`): `f` runs no user code, reaches no checkpoint
            // (where that pin is renewed), does not detach, and begins or ends no section (whose
            // wait may give the pin up), per the caller, so the pin covers every load `f` makes,
            // and what another thread removes meanwhile is not freed before `f` returns. Nothing
            // is retired through this guard.
            return f(unsafe { crossbeam_epoch::unprotected() });
        }
        read_pinned(f)
    }
    #[cfg(ftrt_gil_build)]
    {
        let _ = owner;
        // SAFETY: `f` runs no user code, does not detach, so never lets the GIL go, and
        // retires nothing (the caller's contract).
        unsafe { with_guard(f) }
    }
}

/// [`with_read_guard`]'s inline half alone: runs `f` unpinned where `with_read_guard` would, and
/// answers `None` without running it where a read needs a pin of its own. For a read whose
/// whole fast path, `f` included, fits in its caller without a call (`PyList::get_item`): `f`
/// answers `None` too where it meets anything but the common case, and the caller then takes
/// its general path, out of line, which repeats the read.
///
/// # Safety
/// As for [`with_read_guard`], whose unprotected guard alone `f` runs with here (or the `gil`
/// build's, also unprotected): `f` writes nothing in `owner`, runs no user code, does not make
/// `owner` shared, reaches no checkpoint, does not detach, begins or ends no section, retires
/// nothing through the guard, and returns no pointer it loaded without counting a reference to
/// it.
#[inline(always)]
pub(crate) unsafe fn try_read_unpinned<R>(
    owner: &Header,
    f: impl FnOnce(&Guard) -> Option<R>,
) -> Option<R> {
    ftrt_gil::assert_attached();
    #[cfg(not(ftrt_gil_build))]
    {
        if ftrt_gil::local::attach_pinned() || !owner.is_shared() {
            // SAFETY: as for `with_read_guard`'s unpinned path, under the same conditions
            // (the same contract for `f`).
            return f(unsafe { crossbeam_epoch::unprotected() });
        }
        None
    }
    #[cfg(ftrt_gil_build)]
    {
        let _ = owner;
        // SAFETY: as in `with_read_guard`.
        unsafe { with_guard(f) }
    }
}

/// Drops a reference taken out of `owner` once no reader can still be using it: at once if
/// none can be ([`frees_at_once`]), else after the readers (`gil_readers` in the `gil` build,
/// the epoch in the free-threaded ones).
///
/// # Safety
/// `owner` held `reference`, and the caller's write, running in `owner`'s critical section
/// (`write_contents`) under the guard that gave it, `guard` (unprotected, or a pin of
/// crossbeam's default collector, which every reader pins), has just taken it out: only
/// readers that loaded it from `owner` can still hold it uncounted, which is what decides
/// between dropping it now and retiring it, and `owner` being shared says the object is
/// shared too (a batch of shared objects may be dropped on another thread, a local object
/// only on its own).
#[inline]
pub(crate) unsafe fn retire_ref(owner: &Header, reference: OwnedRef, guard: &Guard) {
    if frees_at_once(owner) {
        drop(reference);
    } else {
        defer_ref(reference, owner.is_shared(), guard);
    }
}

/// A reference of the caller's own to the value a write took out of `owner`, in place of the
/// container's: that same reference when no reader can hold the value, so no count changes
/// (a `pop`'s increment and decrement of the popped item), else a new one, the container's
/// being retired as [`retire_ref`] does.
///
/// The test always inline, the deferral out of line ([`hand_over_deferred`]): with the inliner
/// left to choose, a `pop` called the whole function in the free-threaded builds, to return the
/// reference it was given.
///
/// # Safety
/// As for [`retire_ref`], with `removed` the reference taken out of `owner`.
#[inline(always)]
pub(crate) unsafe fn hand_over(owner: &Header, removed: OwnedRef, guard: &Guard) -> OwnedRef {
    if frees_at_once(owner) {
        return removed;
    }
    hand_over_deferred(removed, owner.is_shared(), guard)
}

/// [`hand_over`]'s path where a reader may hold the value: a new reference for the caller, and
/// the container's retired (`from_shared` as for [`defer_ref`]).
#[inline(never)]
fn hand_over_deferred(removed: OwnedRef, from_shared: bool, guard: &Guard) -> OwnedRef {
    let object = removed.as_ptr();
    // Owned before the deferral, so that a panic inside it drops the new reference too.
    // SAFETY: `removed` keeps the object alive; writers run attached (under the GIL in the
    // `gil` build), which is what the token asserts. The increment is the new reference.
    let handed = unsafe {
        incref(object, assume_token());
        OwnedRef::from_raw(object)
    };
    defer_ref(removed, from_shared, guard);
    handed
}

/// Whether what a write removes from `owner` may be dropped at once: no reader can hold it
/// ([`no_reader_can_hold`] in the free-threaded builds; in the `gil` build, no `ReadGuard`
/// alive on any thread).
#[inline]
fn frees_at_once(owner: &Header) -> bool {
    #[cfg(ftrt_gil_build)]
    {
        let _ = owner;
        crate::guard::gil_readers::none()
    }
    #[cfg(not(ftrt_gil_build))]
    no_reader_can_hold(owner)
}

/// [`retire_ref`]'s deferral until the readers are done, out of line: the common removal frees
/// at once, and its callers inline that test. `from_shared`: whether the container the
/// reference was taken out of is shared, so that the object is too (a shared object holds only
/// shared ones). Read from the container's header, which the write has in cache already, not
/// from the object's, which it may not.
#[inline(never)]
fn defer_ref(reference: OwnedRef, from_shared: bool, guard: &Guard) {
    #[cfg(ftrt_gil_build)]
    {
        let _ = (guard, from_shared);
        crate::guard::gil_readers::defer(reference);
    }
    #[cfg(not(ftrt_gil_build))]
    if guard.collector().is_some() {
        batches::retire(reference, from_shared, guard);
    } else {
        // Unprotected (`write_contents` found no reader, and one opened since): deferring
        // through it would free at once.
        batches::retire(reference, from_shared, &crossbeam_epoch::pin());
    }
}

/// Whether nothing a write removes from `owner` can still be held by a reader, so that it may
/// be freed at once: no read is open on this thread ([`ReadGuard`](crate::ReadGuard)s, while
/// they live, and `Debug` prints count themselves in `ftrt_gil::local::readers`), and none on
/// another, because `owner` is local (no other thread can reach it) or because this thread
/// holds the world alone and no thread left it with a read open
/// (`ftrt_gil::local::no_reads_elsewhere`: no other thread is attached, and reads happen
/// attached). Every other lock-free read of a container runs no user code, so no write on this
/// thread runs while it holds a pointer it loaded.
#[cfg(not(ftrt_gil_build))]
#[inline]
fn no_reader_can_hold(owner: &Header) -> bool {
    ftrt_gil::local::readers() == 0 && (!owner.is_shared() || ftrt_gil::local::no_reads_elsewhere())
}

/// Hands this thread's retired references to the epoch and drops the expired batches posted
/// back to it; `collect` calls it around its flushes. The token: dropping references needs the
/// thread attached.
pub(crate) fn settle_retired(_attached: Python<'_>) {
    #[cfg(not(ftrt_gil_build))]
    batches::settle();
}

/// Whether this thread's retired references have a batch of their own: its thread state lives,
/// and the batches' key has a slot (other crates may have taken every slot first, see
/// `ftrt_gil::local::MAX_KEYS`). A thread lists its local objects only then (`gc::local`): a
/// listed object must be freed on its own thread, and a reference retired without a batch goes
/// to the epoch alone, to be dropped on whichever thread collects it.
#[cfg(not(ftrt_gil_build))]
pub(crate) fn has_retired_batch() -> bool {
    batches::has_batch()
}

/// Registers one of the object model's quiescent-state hooks, on its first need: inside a
/// write, which must not unwind half-way (a write that removed a value and then panicked would
/// drop it under a reader), so without panicking. Should other crates have filled
/// `ftrt-gil`'s table first, the hook does not run, and what it would free at quiescent states
/// stays until another path frees it, or for good: a leak, not a fault. Returns whether the hook
/// is registered, for callers that have another path to take without it.
pub(crate) fn register_quiescent_state_hook(hook: fn()) -> bool {
    ftrt_gil::try_on_quiescent_state(hook)
}

#[cfg(not(ftrt_gil_build))]
mod batches {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, Once};

    use crossbeam_epoch::Guard;

    use crate::refs::OwnedRef;

    /// References per deferred function.
    const BATCH: usize = 64;

    /// Retired references, handed to the epoch together.
    #[derive(Default)]
    struct Batch {
        refs: Vec<OwnedRef>,
        /// Whether one of them may be to a local object: it was taken out of a local container
        /// (while a read was open). A listed local object is freed only on its own thread
        /// (`gc::local`), so such a batch is dropped there, or anywhere once the thread has
        /// exited (its exit unlists its objects first). The other batches' references were
        /// taken out of shared containers, so they hold shared objects only, and reach only
        /// shared objects when they are dropped (a shared object holds only shared ones): any
        /// attached thread may drop them.
        home_only: bool,
    }

    /// Where expired batches wait for the thread that retired them.
    struct Mailbox {
        /// Closed when the thread exits: later deliveries are handed back to the deliverer,
        /// which drops them if attached, else leaves them to the orphaned batches.
        inbox: Mutex<(Vec<Batch>, bool)>,
        pending: AtomicBool,
        /// The retiring thread's standing, to ask whether it is attached.
        home: Option<ftrt_gil::local::ThreadPresence>,
    }

    impl Mailbox {
        fn new() -> Self {
            Mailbox {
                inbox: Mutex::default(),
                pending: AtomicBool::new(false),
                home: ftrt_gil::local::presence(),
            }
        }

        /// Whether posting a batch of shared objects only (not [`Batch::home_only`]) home would
        /// only make it wait: any attached thread drops it as cheaply as this mailbox's would.
        ///
        /// In the biased build the retiring thread drops its own objects on the owner's path,
        /// so a batch goes home while that thread is attached. While it is detached (a stop of
        /// the world parks it so too) its counts are parked, and it would drop the batch only
        /// once it attaches again, which an `allow_threads` around a blocking call may put off
        /// for as long as the call lasts; dropped elsewhere, the batch's objects it owns are
        /// merged there, and those that die are freed at once. A snapshot: should the thread
        /// attach meanwhile, the objects it owns are queued to it, as any other thread's drop
        /// would queue them; should it detach just after, a batch posted home waits for its
        /// next attach (its detach drained the mailbox before it left, unless it unwound). The
        /// other free-threaded build has no owner's path, so there a batch of shared objects
        /// never goes home.
        fn home_is_away(&self) -> bool {
            if ftrt_gil::BUILD_STRATEGY != ftrt_refcount::Strategy::Biased {
                return true;
            }
            // A thread without a presence (made at its exit) owns nothing.
            self.home.as_ref().is_none_or(|home| !home.is_attached())
        }

        /// Posts `batch` home; hands it back if the mailbox is closed (its thread has exited).
        fn deliver(&self, batch: Batch) -> Option<Batch> {
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            if inbox.1 {
                return Some(batch);
            }
            inbox.0.push(batch);
            // Relaxed: a hint; the batches themselves travel under the mutex.
            self.pending.store(true, Ordering::Relaxed);
            None
        }

        fn take(&self, close: bool) -> Vec<Batch> {
            self.pending.store(false, Ordering::Relaxed);
            let mut inbox = self.inbox.lock().unwrap_or_else(|e| e.into_inner());
            inbox.1 |= close;
            std::mem::take(&mut inbox.0)
        }
    }

    /// A thread's batch being filled, and its mailbox (made when it first retires).
    struct Retired {
        batch: Batch,
        mailbox: Option<Arc<Mailbox>>,
    }

    impl Retired {
        /// The batch so far, full or not, with the mailbox to send it home to.
        fn take_batch(&mut self) -> Option<(Batch, Arc<Mailbox>)> {
            if self.batch.refs.is_empty() {
                return None;
            }
            let home = self
                .mailbox
                .get_or_insert_with(|| Arc::new(Mailbox::new()))
                .clone();
            Some((std::mem::take(&mut self.batch), home))
        }
    }

    impl Drop for Retired {
        fn drop(&mut self) {
            // The thread's local objects leave its list first: once the mailbox is closed, what
            // the thread retired (local objects among it) may be dropped on another thread.
            crate::gc::retire_local_objects();
            // The thread is exiting: hand over what is left and close the mailbox (what was
            // posted to it, which has expired, goes to the orphaned batches below).
            if let Some((batch, home)) = self.take_batch() {
                defer(batch, home, &crossbeam_epoch::pin());
            }
            if let Some(mailbox) = &self.mailbox {
                // Not dropped here: counts change only on attached threads, and the exit does not
                // attach. A thread may wait attached for this exit (a join) while a stop of the
                // world waits for that thread, and attaching would wait for the stop.
                for batch in mailbox.take(true) {
                    drop_or_orphan(batch);
                }
            }
        }
    }

    /// Each thread's batch and mailbox, in its thread state (`ftrt_gil::local`): made on the
    /// first access (the quiescent-state hook touches it on every attached thread; it allocates
    /// nothing until the thread retires), dropped in the thread's exit sequence after the keys
    /// made after it (`ftrt_gil::local` drops the latest first). Its drop unlists the thread's
    /// local objects (`retire_local_objects`) before it hands its batch over, whether or not the
    /// lists' key went first.
    static RETIRED: ftrt_gil::local::Key<RefCell<Retired>> = ftrt_gil::local::Key::new(|| {
        RefCell::new(Retired {
            batch: Batch::default(),
            mailbox: None,
        })
    });

    /// Makes every attached thread settle at its quiescent states, from the first retirement on.
    fn settle_at_quiescent_states() {
        static REGISTERED: Once = Once::new();
        REGISTERED.call_once(|| {
            super::register_quiescent_state_hook(settle);
        });
    }

    /// Batches that no thread's mailbox takes, on a thread that may not drop them then: expired
    /// after their thread exited, or of shared objects only while their thread is away. The
    /// next attached thread to settle drops them.
    static ORPHANS: Mutex<Vec<Batch>> = Mutex::new(Vec::new());
    /// Whether `ORPHANS` may hold a batch: a hint, read at every settle.
    static ORPHANED: AtomicBool = AtomicBool::new(false);

    /// Drops `batch` now if the calling thread is attached, else leaves it to the next attached
    /// thread that settles. Counts change only on attached threads (a stopped world relies on
    /// it), and this never attaches: the epoch runs deferred functions on whichever thread
    /// pins, an exiting one included, and attaching there waits for any stop under way, which
    /// may wait for a thread that waits for the exit.
    fn drop_or_orphan(batch: Batch) {
        if ftrt_gil::is_attached() {
            drop(batch);
            return;
        }
        ORPHANS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(batch);
        // Relaxed: a hint; the batches themselves travel under the mutex.
        ORPHANED.store(true, Ordering::Relaxed);
        // The orphans are adopted at quiescent states: make sure they are watched even when
        // nothing was retired with a thread state (only after a thread's exit).
        settle_at_quiescent_states();
    }

    /// Drops the orphaned batches. Called on attached threads only.
    fn adopt_orphans() {
        if !ORPHANED.load(Ordering::Relaxed) {
            return;
        }
        let orphans = {
            let mut orphans = ORPHANS.lock().unwrap_or_else(|e| e.into_inner());
            ORPHANED.store(false, Ordering::Relaxed);
            std::mem::take(&mut *orphans)
        };
        // Outside the mutex: dropping runs destructors, which may retire and orphan again.
        drop(orphans);
    }

    /// Hands `batch`, retired by the thread whose mailbox is `home`, to the epoch, which runs
    /// [`expire`] on it once no reader can hold its references.
    fn defer(batch: Batch, home: Arc<Mailbox>, guard: &Guard) {
        // SAFETY: the closure is `Send` (references and an `Arc`) and may run on any thread; the
        // epoch runs it once no reader can hold the pointers it drops.
        unsafe { guard.defer_unchecked(move || expire(batch, &home)) };
        ftrt_gil::note_retired();
    }

    /// Disposes of an expired `batch` on whichever thread the epoch ran it. Attached at home, the
    /// batch is dropped here (the owner path, mostly); detached at home (`collect`'s flushes),
    /// it is posted to the thread's own mailbox, which `collect` drains once attached again.
    /// Elsewhere, a batch of shared objects only whose thread is away is dropped here if this
    /// thread is attached, else left to the orphans, which the next attached thread to settle
    /// drops: at home it would wait for its thread to attach again. Any other batch goes home,
    /// to be dropped at the retiring thread's next quiescent state; once that thread has exited
    /// (its mailbox closed) it is handed back, and dropped here or orphaned as above. (A
    /// collection's traversal pins nothing, so this never runs inside one, on the stopping
    /// thread or another.)
    fn expire(batch: Batch, home: &Arc<Mailbox>) {
        let at_home = RETIRED.with_current(|r| {
            r.is_some_and(|r| {
                r.try_borrow()
                    .is_ok_and(|r| r.mailbox.as_ref().is_some_and(|m| Arc::ptr_eq(m, home)))
            })
        });
        if at_home && ftrt_gil::is_attached() {
            drop(batch);
        } else if !at_home && !batch.home_only && home.home_is_away() {
            drop_or_orphan(batch);
        } else if let Some(batch) = home.deliver(batch) {
            drop_or_orphan(batch);
        }
    }

    /// A removed reference while `retire` finds it a place: leaked, not dropped, should that
    /// panic. A reader may still hold what it points to, so dropping it there could free the
    /// object under the reader.
    struct LeakOnUnwind(Option<OwnedRef>);

    impl Drop for LeakOnUnwind {
        fn drop(&mut self) {
            std::mem::forget(self.0.take());
        }
    }

    /// Retires `reference`, taken out of a shared container if `from_shared` (then the object
    /// is shared too), else out of a local one (then it may be local).
    pub(super) fn retire(reference: OwnedRef, from_shared: bool, guard: &Guard) {
        let mut reference = LeakOnUnwind(Some(reference));
        let reference = &mut reference.0;
        let full = RETIRED.with_current(|r| {
            let mut r = r?.try_borrow_mut().ok()?;
            if r.batch.refs.capacity() == 0 {
                // A new batch (once per `BATCH` retirements).
                r.batch.refs.reserve_exact(BATCH);
                settle_at_quiescent_states();
            }
            r.batch.home_only |= !from_shared;
            r.batch.refs.extend(reference.take());
            if r.batch.refs.len() >= BATCH {
                r.take_batch()
            } else {
                None
            }
        });
        if let Some(reference) = reference.take() {
            // No batch: the thread's exit is under way (its batch is being settled), or the
            // batches' key found no slot. Either way the thread has no local objects listed
            // (its exit unlists them first; a thread without a batch lists none,
            // `has_retired_batch`), so this reference may be dropped on any thread: defer it on
            // its own.
            let batch = Batch {
                refs: vec![reference],
                home_only: false,
            };
            // SAFETY: as in `defer`.
            unsafe { guard.defer_unchecked(move || drop_or_orphan(batch)) };
            ftrt_gil::note_retired();
            return;
        }
        if let Some((batch, home)) = full {
            defer(batch, home, guard);
            drain();
        }
    }

    /// Whether the calling thread has a batch (see `has_retired_batch`). Gives the batches' key
    /// its slot, if it has none yet and one is free.
    pub(super) fn has_batch() -> bool {
        RETIRED.with_current(|r| r.is_some())
    }

    /// Drops the expired batches posted back to this thread.
    fn drain() {
        let batches = RETIRED.with_current(|r| {
            let r = r?.try_borrow().ok()?;
            let mailbox = r.mailbox.as_ref()?;
            mailbox
                .pending
                .load(Ordering::Relaxed)
                .then(|| mailbox.take(false))
        });
        drop(batches);
    }

    /// Hands this thread's partial batch to the epoch and drops the expired batches posted back
    /// to it, and the orphaned ones. Runs at every quiescent state of an attached thread (the
    /// hook registered with `ftrt-gil`), so neither stays with a thread that stops retiring; and
    /// from `collect`. Not while the thread unwinds (`ftrt-gil` runs no hook then): a thread
    /// that unwinds out of its attachment and stays detached keeps its partial batch and its
    /// mailbox until its next quiescent state or its exit.
    pub(super) fn settle() {
        let batch = RETIRED.with_current(|r| r?.try_borrow_mut().ok()?.take_batch());
        if let Some((batch, home)) = batch {
            defer(batch, home, &crossbeam_epoch::pin());
        }
        drain();
        adopt_orphans();
    }

    #[cfg(test)]
    mod tests;
}

/// Frees an array or table that was replaced in `owner`, once no reader can still be using it
/// (at once if none can be, as for [`retire_ref`]).
///
/// # Safety
/// `old` was `owner`'s, and the caller's write, running in `owner`'s critical section
/// (`write_contents`) under `guard` (as for [`retire_ref`]), has just made it unreachable
/// from `owner`: whether a reader can still hold it is decided from `owner`. Its contents'
/// references were moved to the replacement (freeing it must not release them).
pub(crate) unsafe fn retire_array<T: Send>(owner: &Header, old: EpochShared<'_, T>, guard: &Guard) {
    #[cfg(not(ftrt_gil_build))]
    if no_reader_can_hold(owner) {
        // SAFETY: unreachable per the caller, and no reader holds it.
        drop(unsafe { old.into_owned() });
        return;
    }
    let _ = owner;
    #[cfg(not(ftrt_gil_build))]
    if guard.collector().is_none() {
        // Unprotected, as in `retire_ref`.
        // SAFETY: unreachable per the caller; the epoch delays the free past current readers.
        unsafe { crossbeam_epoch::pin().defer_destroy(old) };
        ftrt_gil::note_retired();
        return;
    }
    // SAFETY: unreachable per the caller; the epoch delays the free past current readers (in
    // the `gil` build the guard is unprotected and frees at once: nothing reads concurrently).
    unsafe { guard.defer_destroy(old) };
    ftrt_gil::note_retired();
}

/// Allocates an array or table for publication.
pub(crate) fn owned<T>(value: T) -> Owned<T> {
    Owned::new(value)
}
