//! Critical sections on the runtime's objects: free under the GIL, `ftrt_lock::section`
//! otherwise.
//!
//! Whether a section needs its lock is the runtime's decision, made here where the token proves
//! the thread is attached: in the `gil` build an attached thread holds the GIL, which already
//! serialises every section body, so [`with`] and [`with2`] just call the closure; in the
//! free-threaded builds they are sections on the thread state's [`SectionStack`], reached through
//! the token without a thread-local access.
//! Either way a section's body is atomic up to the points where it blocks or detaches (a nested
//! section that waits, [`Python::check`] switching, [`Python::allow_threads`]), as
//! `ftrt_lock::section` documents.
//!
//! A section that has to wait for its lock (to begin, or to resume as a nested section ends)
//! waits attached, in place, and (in the free-threaded builds, with no read open on the thread,
//! `local::readers`) with its attach pin given up for the wait: a quiescent state, so a thread
//! that waits for a contended object does not hold back what other threads retire. A stop of
//! the world asked for meanwhile goes through it: the wait detaches until the stop is over,
//! holding none of the section's locks. The pin is back before the body runs on, but what was
//! read under the attach pin alone before a section began or ended must not be used after it
//! ([`local::attach_pinned`](crate::local::attach_pinned)).
//!
//! Exclusion holds between users of this module, which are all attached. A lock taken here must
//! not also be taken through `ftrt_lock` directly by a thread that may not be attached: in the
//! `gil` build that section would lock and this one would not. `ftrt-object` keeps its objects'
//! locks private for this reason. `ftrt_lock::section` itself always locks, in every build.
//! Both go on one stack, the thread's, which the thread state holds
//! (`ftrt_lock::section::claim_thread_stack`): a section of either that has to wait suspends every
//! section the thread has open, so the two nest on the same locks, in any order, without
//! deadlock, stops of the world included: a thread that holds a lock through `ftrt_lock`'s
//! thread-local functions may wait to attach holding it while a stop is under way (their wait
//! detaches), and a section of this module waiting for that lock lets the stop through between
//! tries of a millisecond instead of holding it up (`docs/locking.md`).
//!
//! ```
//! use ftrt_gil::{section, Python};
//! use ftrt_lock::RawObjectLock;
//!
//! let lock = RawObjectLock::new();
//! let answer = Python::attach(|py| section::with(py, &lock, || 42));
//! assert_eq!(answer, 42);
//! ```

#[cfg(doc)]
use ftrt_lock::section::SectionStack;
use ftrt_lock::RawObjectLock;

use crate::Python;

/// Runs `f` inside a critical section on `lock`: no lock is taken in the `gil` build (the
/// token proves this thread holds the GIL), a section on the thread's stack otherwise.
/// So it is only guaranteed to exclude this module's sections: not a section taken on `lock`
/// through `ftrt_lock` directly (see the module docs), which a crate's `gil` feature, unified
/// across the dependency graph, or lock elision (`set_lock_elision`) leaves unexcluded.
#[inline]
pub fn with<R>(py: Python<'_>, lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    with_if(py, Some(lock), f)
}

/// Runs `f` inside a critical section on `lock` when one is given ([`with`]), as it is when
/// `lock` is `None`: for callers that lock only some objects, such as objects no other thread
/// can reach yet. `f` is called from one place in either case, so the compiler can inline it
/// into the caller (see `ftrt_lock::section::with_on`).
///
/// ```
/// use ftrt_gil::{section, Python};
/// use ftrt_lock::RawObjectLock;
///
/// let lock = RawObjectLock::new();
/// let shared = false;
/// Python::attach(|py| section::with_if(py, shared.then_some(&lock), || assert!(!lock.is_locked())));
/// ```
#[inline]
pub fn with_if<R>(py: Python<'_>, lock: Option<&RawObjectLock>, f: impl FnOnce() -> R) -> R {
    crate::assert_attached();
    #[cfg(feature = "gil")]
    {
        let _ = (py, lock);
        f()
    }
    #[cfg(not(feature = "gil"))]
    {
        // Attached after its exit (see `state`): no state, and the section goes on the
        // thread's stack (`with_on` given no stack), waiting for its lock in place as a
        // registered thread's do. Read only for a section.
        let stack = lock.and_then(|_| py.state()).map(|state| &*state.sections);
        ftrt_lock::section::with_on(stack, lock, f)
    }
}

/// [`with_if`] for a body that never detaches, which lets a thread that holds the world alone
/// skip the section's bookkeeping as well as its lock: while the thread's stack elides (from
/// the checkpoint where it took the world, [`Python::holds_world_alone`], until it lets go; its
/// own stops of the world included), the section is not recorded at all
/// (`ftrt_lock::section::with_on_unrecorded`, which checks in debug builds that the elision
/// lasted). Otherwise it is [`with_if`]'s section.
///
/// # Safety
/// `f` does not detach the thread, directly or through what it calls: it calls neither
/// [`Python::allow_threads`] nor [`Python::check`] (which parks when another thread waits to
/// attach beside a holder, or stops the world), nor begins an `ftrt_lock` section (one of the
/// thread-local functions') that may have to wait: a registered thread waits for those
/// detached. (A section of this module nested in `f` may wait, and its wait may let a stop of
/// the world through, a detach, but only where the thread does not hold the world alone: while
/// it holds it the nested section elides and never waits, and otherwise this section was
/// recorded, and is suspended across the detach like any other.) A stop of the world that `f`
/// makes itself
/// ([`stop_the_world`](crate::stop_the_world)) is fine: a holder's stop runs on its hold and
/// keeps the stack eliding, detaches inside it included, and a stop that has to wait for
/// others (and may park) is made only by a thread that does not hold the world, whose section
/// was recorded. A thread lets go of the world alone only where it detaches, so the hold, and
/// with it the exclusion the unrecorded section relies on, lasts until `f` returns.
///
/// Always inlined, as `ftrt_lock::section::with_on_unrecorded` is (see there).
#[inline(always)]
pub unsafe fn with_if_undetached<R>(
    py: Python<'_>,
    lock: Option<&RawObjectLock>,
    f: impl FnOnce() -> R,
) -> R {
    crate::assert_attached();
    #[cfg(feature = "gil")]
    {
        let _ = (py, lock);
        f()
    }
    #[cfg(not(feature = "gil"))]
    {
        let stack = lock.and_then(|_| py.state()).map(|state| &*state.sections);
        // SAFETY: the state's stack elides only while the thread holds the world alone
        // (`state::try_hold_alone`), and stops only in `state::leave_world`, as the thread
        // detaches (its own stop of the world keeps the stack eliding, the hold set aside for
        // it); `f` does not detach, per the caller. After the thread's exit the section goes on
        // the thread's stack (no stack given), where it never elides.
        unsafe { ftrt_lock::section::with_on_unrecorded(stack, lock, f) }
    }
}

/// Runs `f` inside a critical section on two locks (the same one twice is fine): no lock is
/// taken in the `gil` build, a section on the thread's stack otherwise.
#[inline]
pub fn with2<R>(py: Python<'_>, a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    crate::assert_attached();
    #[cfg(feature = "gil")]
    {
        let _ = (py, a, b);
        f()
    }
    #[cfg(not(feature = "gil"))]
    {
        // As in `with_if`, after the thread's exit too.
        let stack = py.state().map(|state| &*state.sections);
        ftrt_lock::section::with2_on(stack, a, b, f)
    }
}

/// Runs `f` detached from every section the thread has open, behind a detach boundary (see
/// `ftrt_lock::section::detached`): the object model's and those of `ftrt_lock` users beside
/// the runtime, which are on one stack, the thread's, held by the thread state.
pub(crate) fn detached<R>(py: Python<'_>, f: impl FnOnce() -> R) -> R {
    match py.state() {
        Some(state) => state.sections.detached(f),
        None => ftrt_lock::section::detached(f),
    }
}
