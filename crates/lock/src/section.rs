//! Critical sections over one or two objects' locks, in the style of PEP 703.
//!
//! A critical section locks an object's [`RawObjectLock`] for the duration of a closure. Unlike
//! plain mutexes, sections cannot deadlock, however they nest:
//!
//! - Each thread keeps a stack of its sections. When beginning a section would block, the thread
//!   first *suspends* every active section (unlocks their locks), then blocks. A blocked thread
//!   therefore holds at most the locks of the section it is entering, taken in address order,
//!   so no cycle of waiting threads can form.
//! - A suspended section is *resumed* (its locks retaken) when it becomes the innermost again,
//!   i.e. when the sections nested in it end. At that point the thread holds no other section
//!   lock, so resuming is just another blocking acquisition, as deadlock-free as the first.
//! - Detaching from the runtime ([`detached`], which `allow_threads` in `ftrt-gil` uses)
//!   suspends all sections too and sets a *detach boundary*: the sections open at that point stay
//!   suspended until the detach ends, even when a section begun while detached ends (its end
//!   resumes only sections begun after the boundary). When the detach ends, the innermost
//!   section is resumed. So a detached thread holds no lock of the sections it was in, and a
//!   thread it waits for can take them.
//! - Attaching does not touch the sections: sections begun before an attachment (on a thread
//!   that was not attached) are left as they are, while it runs and when it ends.
//! - A runtime can have a stack block *its* way ([`SectionStack::set_blocking_wait`],
//!   [`set_blocking_wait`] for the sections of this module's thread-local functions, [`with`] and
//!   the rest, [`set_stackless_blocking_wait`] for a runtime's sections given no stack,
//!   [`with_on`]'s; with no hook a section waits in place): detached from
//!   the runtime, as CPython's `PyMutex` detaches a thread that blocks. Then a thread that waits
//!   for a section's lock never holds up other threads of the runtime (its GIL, or a stop of the
//!   world), so a thread that holds that lock and attaches before letting it go gets through.
//!
//! The price, as in CPython: an outer section is atomic only between the points where an inner
//! section (or a detach) blocked. Code inside a section should treat nested sections and
//! blocking calls like releases of the outer objects.
//!
//! A two-object section locks both objects in address order and accepts the same object twice.
//! A panic inside a section ends it normally: its locks are released and the object stays usable.
//!
//! Each thread's sections live in a [`SectionStack`], a plain value: a runtime keeps one in its
//! own per-thread state and calls its methods ([`SectionStack::with`], [`SectionStack::detached`]).
//! The free functions of this module ([`with`], [`with2`], [`detached`], [`depth`]) are the
//! thread-local convenience over the same mechanism: they use one stack per thread, the thread's
//! stack. A runtime whose threads may also take sections through them holds that stack
//! ([`claim_thread_stack`]) rather than a stack of its own, so that every section of a thread goes
//! on one stack: sections on two stacks suspend only their own stack's sections when they wait, and
//! a thread that nests the two on the same locks may wait for itself. [`with_on`] takes the stack
//! and the lock as options (a runtime's stack, or none where the runtime keeps none for the
//! thread; a lock, or none for an object that needs none) and calls its closure from one place
//! whichever they are.
//!
//! A section locks unless its stack was told, by an `unsafe` call, that no other thread can take
//! its locks ([`SectionStack::start_eliding`]): a runtime that knows it is the only thread touching
//! its objects skips the two atomic operations of every section, and the stack records the
//! *elided* sections so that they lock for real when it stops eliding (or, through the `unsafe`
//! [`with_on_unrecorded`], records nothing for a section whose caller promises the elision
//! outlasts it). This module knows nothing
//! of a GIL or of which threads run, and no feature changes it: the free functions below always
//! lock.
//!
//! ```
//! use ftrt_lock::{section, RawObjectLock};
//!
//! let (from, to) = (RawObjectLock::new(), RawObjectLock::new());
//! let moved = section::with2(&from, &to, || "both objects are locked here");
//! assert_eq!(moved, "both objects are locked here");
//! ```

use crate::RawObjectLock;

use stack::THREAD_API;
pub use stack::{SectionStack, ThreadStack};
pub use wait::SectionWait;

mod stack;
mod wait;

/// How a stack blocks for a section's locks, if it has to ([`SectionStack::set_blocking_wait`]):
/// called with the section's wait ([`SectionWait`]), through which it takes the locks, around
/// whatever the runtime does while its thread blocks (detaching from it, and attaching again
/// after): at once ([`SectionWait::wait`]), or in tries by a deadline
/// ([`SectionWait::wait_until`]), doing what the runtime needs between two tries (letting a
/// stop of the world through). By then the stack's other sections are suspended, behind a
/// detach boundary (as in [`detached`]): sections the hook begins and ends on the same stack do
/// not resume them. They must end before the hook takes the locks: run inside one, the wait
/// blocks holding its lock, and the thread that holds the lock waited for may be waiting for
/// that one (the deadlock the suspension is there to rule out).
///
/// A hook that returns without the locks costs nothing but the detour: the stack takes them itself
/// afterwards. While the wait holds any of them (all, or the first of two, which a try that gave up
/// on the second keeps until [`SectionWait::give_back`]), the hook holds them, and the stack
/// records them only once the hook returns: meanwhile it must not begin a section (one that blocks
/// there suspends nothing, and waits holding those locks, which no other thread's section can then
/// take), only come back to the runtime (attach again), which is what the part after the wait is
/// for. Work that may begin sections or detach goes in the [`AfterWait`]
/// the hook returns, which runs once the section is recorded. A hook that panics aborts the
/// process: a section's wait has no way to fail (a resume runs in the drop of a section that ended,
/// perhaps while unwinding, and the section around it would go on without its lock).
pub type BlockingWait = fn(wait: &mut SectionWait<'_>) -> Option<AfterWait>;

/// What a [`BlockingWait`] hook leaves to run once the section that waited is recorded (begun,
/// or resumed) and holds its locks, before its body runs on: it may do what a section's body
/// may, begin sections and detach (a detach suspends the section, which the stack now knows
/// of). A panic in it aborts the process, as one in the hook does.
pub type AfterWait = fn();

/// Sets how the sections of this module's thread-local functions ([`with`], [`with2`]; not a
/// runtime's sections given no stack, [`with_on`]'s: [`set_stackless_blocking_wait`]) block on the
/// calling thread, replacing the hook set before: see [`SectionStack::set_blocking_wait`], which
/// sets the hook of the stack's own sections apart from this one ([`claim_thread_stack`]). (A
/// runtime sets it for its threads: `ftrt-gil` does for every thread it registers.) The hook stays
/// the thread's for the whole of its exit: a stack made after the thread's first one is freed (by a
/// section in a thread-local destructor late in the thread's exit) blocks through it too.
pub fn set_blocking_wait(hook: Option<BlockingWait>) {
    stack::set_thread_blocking_wait(hook);
}

/// Sets how a runtime's sections given no stack ([`with_on`], [`with2_on`] given `None`) block
/// on the calling thread, replacing the hook set before: with none (the default) they wait in
/// place; through a hook, as a stack's own sections wait through
/// [`SectionStack::set_blocking_wait`]'s. Apart from the thread-local functions' hook
/// ([`set_blocking_wait`]): the runtime's sections and its users' may have to wait differently
/// (see [`with_on`]). A runtime sets it for its threads (`ftrt-gil` does for every thread it
/// registers, for the sections it takes after the thread's exit), and it stays the thread's for
/// the whole of its exit, as [`set_blocking_wait`]'s does.
pub fn set_stackless_blocking_wait(hook: Option<BlockingWait>) {
    stack::set_stackless_blocking_wait(hook);
}

/// Runs `f` inside a critical section on `lock`, on the calling thread's stack.
#[inline]
pub fn with<R>(lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    stack::with_thread_stack(|stack| stack.section::<THREAD_API, R>([lock, lock], f))
}

/// Runs `f` inside a critical section on two locks, taken in a consistent order. The same lock
/// may be passed twice.
#[inline]
pub fn with2<R>(a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    stack::with_thread_stack(|stack| stack.section::<THREAD_API, R>([a, b], f))
}

/// Runs `f` inside a critical section on `lock` when one is given, recorded on `stack` as one of
/// its own sections; runs `f` as it is when `lock` is `None`. With no `stack`, the section is
/// recorded on the calling thread's stack (the thread-local functions' one), but it is still the
/// runtime's own: if it has to wait for its lock it waits through the thread's stackless hook
/// ([`set_stackless_blocking_wait`]; in place if none is set), not through
/// [`set_blocking_wait`]'s, and it never elides.
///
/// For a runtime that locks only some objects (it skips the lock of an object no other thread
/// can reach) or keeps its stack in its own per-thread state only where that state exists. The
/// point is that `f` is called from one place whichever case holds: a closure called from two
/// branches (a locked one, an unlocked one) is usually compiled as a function of its own, and on
/// a short section that call, and reloading the closure's captures, cost more than the lock.
///
/// Why not the thread-local functions' hook, where the runtime has no stack: that hook may wait
/// detached from the runtime (as `ftrt-gil`'s does, so that a thread waiting for a user's lock
/// never holds up a thread that attaches holding it), and so come back holding the lock and wait
/// to attach meanwhile (for a stop of the world, say). A runtime whose threads wait for the
/// locks of its own sections attached, because a holder gives them up where it detaches, would
/// then have holders that cannot give a lock up until the stop ends, and more of them the more
/// of its sections wait that way.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let lock = RawObjectLock::new();
/// assert!(section::with_on(None, Some(&lock), || lock.is_locked()));
/// assert!(!section::with_on(None, None, || lock.is_locked()));
/// ```
#[inline]
pub fn with_on<R>(
    stack: Option<&SectionStack>,
    lock: Option<&RawObjectLock>,
    f: impl FnOnce() -> R,
) -> R {
    stack::with_on::<true, R>(stack, lock, f)
}

/// [`with_on`], except that a section begun while its stack elides is not recorded at all: it
/// would take no lock, and with the caller's promise that the stack elides until `f` returns
/// nothing can need it to lock later, so there is nothing to record. That saves the push and pop
/// of the record and the end's check for a suspended section to resume, which on a short section
/// cost about as much as the two atomic operations elision saves. A section begun while the
/// stack does not elide is recorded and locks as [`with_on`]'s does. An unrecorded section does
/// not show in [`SectionStack::depth`].
///
/// ```
/// use ftrt_lock::section::{self, SectionStack};
/// use ftrt_lock::RawObjectLock;
///
/// let (stack, lock) = (SectionStack::new(), RawObjectLock::new());
/// // SAFETY: no other thread sees the lock; `f` below never stops the elision.
/// unsafe { stack.start_eliding() };
/// let f = || (lock.is_locked(), stack.depth().open);
/// assert_eq!(unsafe { section::with_on_unrecorded(Some(&stack), Some(&lock), f) }, (false, 0));
/// stack.stop_eliding();
/// assert_eq!(unsafe { section::with_on_unrecorded(Some(&stack), Some(&lock), f) }, (true, 1));
/// ```
///
/// Debug builds check the contract below where the section ends, and panic if it was broken.
///
/// # Safety
/// If `stack` is given (with `None` the section is on the thread's stack and never elides) and
/// elides when this is called, it keeps eliding until `f` returns: nothing `f` does, directly or
/// through what it calls, calls [`SectionStack::stop_eliding`] on it. (A runtime stops eliding
/// where its thread detaches, so `f` must not detach.) The exclusion the section then relies on
/// is the one [`SectionStack::start_eliding`]'s caller promised; were the elision to end inside
/// `f`, the section would run on without its lock once other threads may take it.
///
/// Always inlined, like the layers a runtime puts above it: a section wraps one short
/// container operation, and where the inliner kept one layer out of line, that call and its
/// saved registers cost a list append a twentieth of its time.
#[inline(always)]
pub unsafe fn with_on_unrecorded<R>(
    stack: Option<&SectionStack>,
    lock: Option<&RawObjectLock>,
    f: impl FnOnce() -> R,
) -> R {
    stack::with_on::<false, R>(stack, lock, f)
}

/// [`with_on`] on two locks, taken in a consistent order (the same lock may be passed twice),
/// always locked: recorded on `stack` as one of its own sections, or, with no `stack`, on the
/// calling thread's stack, waiting as [`with_on`]'s sections given no stack do.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
/// assert!(section::with2_on(None, &a, &b, || a.is_locked() && b.is_locked()));
/// ```
#[inline]
pub fn with2_on<R>(
    stack: Option<&SectionStack>,
    a: &RawObjectLock,
    b: &RawObjectLock,
    f: impl FnOnce() -> R,
) -> R {
    stack::with2_on(stack, [a, b], f)
}

/// Runs `f` with the calling thread's sections suspended, as a thread detaching from the runtime
/// must (`allow_threads` in `ftrt-gil`, and a GIL switch at a checkpoint).
///
/// Every active section is unlocked before `f` starts, and the ones open now stay suspended
/// until `f` returns: sections that `f` begins and ends never resume them (their end resumes
/// only sections begun inside `f`). When `f` returns, or panics, the innermost section outside
/// is locked again; the others as they become innermost, as usual.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
/// section::with(&outer, || {
///     section::detached(|| {
///         section::with(&inner, || ());
///         // Detached: the section on `outer` stays suspended after the inner one ended.
///         assert!(!outer.is_locked());
///     });
///     assert!(outer.is_locked());
/// });
/// ```
#[inline]
pub fn detached<R>(f: impl FnOnce() -> R) -> R {
    stack::with_thread_stack(|stack| stack.detached(f))
}

/// How many sections the calling thread has open (active or suspended) on its thread-local
/// stack, and how many of them are active right now.
pub fn depth() -> SectionDepth {
    stack::with_thread_stack(SectionStack::depth)
}

/// The claim on the calling thread's stack, the one the functions of this module use, for a
/// runtime that keeps it in its own per-thread state instead of a stack of its own: its sections
/// (the stack's own methods, [`with_on`] given the stack) and those of this module's users on the
/// same thread then go on one stack, so a section that has to wait suspends all of them, and
/// sections of the two kinds nest on the same locks, in any order, without deadlock, as far as
/// this crate goes: a runtime whose hooks wait differently must keep them from adding a wait of
/// their own to the cycle (`ftrt-gil`'s in-place waits let a stop of the world through, since a
/// holder of a lock taken through this module's functions may wait to attach, holding it).
///
/// The two kinds differ in two ways. Each waits through its own hook: the stack's own sections
/// through [`SectionStack::set_blocking_wait`]'s, this module's through [`set_blocking_wait`]'s
/// (and a third kind, a runtime's sections given no stack, [`with_on`]'s, through
/// [`set_stackless_blocking_wait`]'s). And only the stack's own sections elide
/// ([`SectionStack::start_eliding`]): a runtime's promise covers the locks of its own objects, not
/// those of other users of this module.
///
/// There is one claim at a time (`None` while another lives on this thread): the stack's own
/// sections, its elision and its own hook are the claimant's, since its promise to
/// [`SectionStack::start_eliding`] covers every section of the stack's own. Two runtimes cannot
/// both claim one thread's stack.
///
/// The stack lives while the thread or a claim keeps it: a runtime that claims it through the
/// thread's exit keeps it, and keeps it the thread's, while the thread-locals around it are torn
/// down, in whatever order. When the thread's own hold goes (its thread-locals torn down), the
/// sections still open on the stack, which only a process exiting inside them leaves
/// (`std::process::exit` runs the calling thread's thread-local destructors from inside the
/// call), are abandoned ([`SectionStack::abandon_open_sections`]): their locks stay as they are,
/// and nothing the exit still runs on the stack unlocks or takes them again. (What the exit runs
/// before that teardown finds them as they were: a detach suspends a held one.)
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (mine, theirs) = (RawObjectLock::new(), RawObjectLock::new());
/// let stack = section::claim_thread_stack().expect("no other claim on this thread");
/// assert!(section::claim_thread_stack().is_none());
/// stack.with(&mine, || {
///     section::with(&theirs, || assert_eq!(stack.depth().open, 2));
///     // A section on a lock the thread holds already suspends the outer one, and resumes it.
///     section::with(&mine, || assert!(mine.is_locked()));
/// });
/// ```
pub fn claim_thread_stack() -> Option<ThreadStack> {
    ThreadStack::claim()
}

/// The calling thread's sections: see [`depth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SectionDepth {
    /// Sections begun and not yet ended.
    pub open: usize,
    /// Of those, the ones active now: holding their locks, or eliding them.
    pub active: usize,
    /// Of the active ones, those that took no lock: begun or resumed while the stack elides
    /// ([`SectionStack::start_eliding`]), by its own methods (never the functions of this
    /// module).
    pub elided: usize,
}

#[cfg(all(test, not(loom)))]
mod tests;
