//! Thread states, the attach token and `allow_threads`.
//!
//! A thread *attaches* to the runtime to touch objects: [`Python::attach`] registers the thread
//! the first time, takes the GIL in the `gil` build, and hands the closure a [`Python`] token. The
//! token is the proof: it is `Copy` but neither `Send` nor `Sync`, and it lives only as long as
//! the closure, so it cannot outlive the attachment or move to another thread. Whatever needs the
//! GIL (the `gil` build's non-atomic reference counts) takes the token.
//!
//! [`Python::allow_threads`] detaches around blocking or native work: it suspends the thread's
//! critical sections, releases the GIL, runs the closure, then takes the GIL back and resumes the
//! innermost section. The sections stay suspended for the whole closure, even if it begins and
//! ends sections of its own (`ftrt_lock::section::detached`). The closure must be `Send`, which
//! keeps the token out of it. Attaching and the end of an attachment leave the sections alone.
//!
//! In the free-threaded builds an attached thread also stays pinned in `crossbeam-epoch`, the
//! reclamation scheme behind the object model's lock-free reads: a read pins for free (a nested
//! pin), and memory retired by writers is reclaimed once every attached thread has passed a
//! checkpoint ([`Python::check`]) or detached. This is CPython's quiescent-state-based
//! reclamation (QSBR) expressed with epochs.

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use dashmap::DashMap;
use ftrt_lock::section;
use ftrt_refcount::{BuildCount, RefCount};

use crate::Gil;

/// The runtime's GIL (a no-op in free-threaded builds).
pub fn runtime_gil() -> &'static Gil {
    static GIL: LazyLock<Gil> = LazyLock::new(Gil::new);
    &GIL
}

/// Proof that the calling thread is attached to the runtime (and, in the `gil` build, holds the
/// GIL) for the lifetime `'py`. Obtain one with [`Python::attach`].
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_gil::Python<'static>>();
/// ```
#[derive(Clone, Copy)]
pub struct Python<'py> {
    _attached: PhantomData<(&'py (), *mut ())>,
}

impl std::fmt::Debug for Python<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Python")
    }
}

impl<'py> Python<'py> {
    /// Runs `f` attached to the runtime. Re-entrant: an attached thread just calls `f`.
    ///
    /// In the `gil` build this takes the GIL for the duration (minus any `allow_threads`), and
    /// releases it even if `f` panics.
    pub fn attach<R>(f: impl for<'any> FnOnce(Python<'any>) -> R) -> R {
        if ThreadState::attached() {
            // SAFETY: the thread is attached (and holds the GIL) for the whole call.
            return f(unsafe { Python::assume_attached() });
        }
        runtime_gil().acquire();
        ThreadState::set_attached(true);
        quiescence::pin();
        let _detach = Detach;
        // SAFETY: attached just above, until `_detach` runs at the end of this call.
        f(unsafe { Python::assume_attached() })
    }

    /// A token for a thread the caller knows to be attached.
    ///
    /// # Safety
    /// The calling thread is attached (holds the GIL in the `gil` build) for all of `'py`.
    pub unsafe fn assume_attached() -> Self {
        Python {
            _attached: PhantomData,
        }
    }

    /// Detaches around `f`: suspends the thread's critical sections and releases the GIL, so
    /// other threads run while `f` blocks or computes; then re-attaches (in fair mode, ahead of
    /// threads that never left) and resumes the innermost section. Sections `f` begins and ends
    /// do not resume the suspended ones. `f` is `Send`, so it cannot use this token.
    pub fn allow_threads<T, F>(self, f: F) -> T
    where
        F: Send + FnOnce() -> T,
        T: Send,
    {
        // The sections stay suspended for the whole detach, sections begun inside `f`
        // included; the innermost outside is resumed once `Reattach` has re-attached.
        section::detached(|| {
            quiescence::unpin();
            ThreadState::set_attached(false);
            // SAFETY: the token proves this thread holds the GIL; nothing below relies on it
            // until `Reattach` takes it back.
            unsafe { runtime_gil().release() };
            let _reattach = Reattach;
            f()
        })
    }

    /// An eval-loop checkpoint: in the `gil` build, hands the GIL to a thread that asked for it
    /// and waits for its turn again. Returns whether it switched. Free in the other builds.
    #[inline]
    pub fn check(self) -> bool {
        quiescence::checkpoint();
        if !runtime_gil().drop_requested() {
            return false;
        }
        // The GIL changes hands in between, a detach like `allow_threads`: the sections are
        // suspended across it (they are no-ops in the gil build, but keep the rule uniform).
        // SAFETY: the token proves this thread holds the GIL; the thread holds nothing else
        // another holder could need (its sections are suspended).
        section::detached(|| unsafe { runtime_gil().check() })
    }

    /// The token the build's reference count asks for: the GIL proof in the `gil` build,
    /// nothing in the others.
    #[inline(always)]
    pub fn count_token(self) -> <BuildCount as RefCount>::Token<'py> {
        #[cfg(feature = "gil")]
        // SAFETY: in the gil build an attached thread holds the GIL for all of `'py`.
        return unsafe { ftrt_refcount::GilHeld::assume_held() };
        #[cfg(not(feature = "gil"))]
        return Default::default();
    }
}

/// Ends an attachment, panics included.
///
/// It leaves the thread's critical sections alone: the ones open now were open when the
/// attachment began (the sections it began have ended, as closures nest), so they belong to
/// the code around it, which expects them as it left them.
struct Detach;

impl Drop for Detach {
    fn drop(&mut self) {
        quiescence::unpin();
        ThreadState::set_attached(false);
        // SAFETY: `attach` took the GIL and this is its matching release.
        unsafe { runtime_gil().release() };
    }
}

/// Ends an `allow_threads`, panics included. The sections are resumed after it, by the end of
/// `section::detached`.
struct Reattach;

impl Drop for Reattach {
    fn drop(&mut self) {
        runtime_gil().acquire_after_blocking();
        ThreadState::set_attached(true);
        quiescence::pin();
    }
}

/// What the registry knows about a thread.
#[derive(Debug, Clone)]
pub struct ThreadInfo {
    /// The thread's name, if it has one.
    pub name: Option<String>,
}

static REGISTRY: LazyLock<DashMap<u64, ThreadInfo>> = LazyLock::new(DashMap::new);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The runtime's view of one OS thread, registered on its first attach and retired when the
/// thread exits (panics included): its biased-count merge queue is merged and it leaves the
/// registry.
struct ThreadState {
    id: u64,
    attached: Cell<bool>,
}

thread_local! {
    static STATE: ThreadState = ThreadState::register();
}

impl ThreadState {
    fn register() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = std::thread::current().name().map(str::to_owned);
        REGISTRY.insert(id, ThreadInfo { name });
        ThreadState {
            id,
            attached: Cell::new(false),
        }
    }

    /// Whether the calling thread is attached, registering it on first use.
    fn attached() -> bool {
        STATE.with(|state| state.attached.get())
    }

    fn set_attached(attached: bool) {
        STATE.with(|state| state.attached.set(attached));
    }
}

impl Drop for ThreadState {
    fn drop(&mut self) {
        // Settle what other threads handed back to this one and give up ownership of its
        // objects, so nothing waits on a thread that is gone.
        ftrt_refcount::merge_pending();
        ftrt_refcount::biased::detach_current_thread();
        REGISTRY.remove(&self.id);
    }
}

/// The number of threads registered with the runtime (attached at least once and not exited).
pub fn registered_threads() -> usize {
    REGISTRY.len()
}

/// A snapshot of the registered threads.
pub fn threads() -> Vec<ThreadInfo> {
    REGISTRY.iter().map(|entry| entry.value().clone()).collect()
}

/// Whether the calling thread is attached right now.
pub fn is_attached() -> bool {
    STATE
        .try_with(|state| state.attached.get())
        .unwrap_or(false)
}

/// Keeps attached threads pinned in the epoch scheme (free-threaded builds only).
#[cfg(not(feature = "gil"))]
mod quiescence {
    use std::cell::{Cell, RefCell};

    use crossbeam_epoch::Guard;

    /// Checkpoints between repins: each repin costs a fence, and reclamation only needs threads
    /// to pass through quiescent states now and then. Each repin also flushes: the thread hands
    /// its retired garbage to the global queue and frees a bounded batch of what has expired,
    /// so garbage is collected at the pace it is made (nested pins, which reads use, never
    /// collect by themselves).
    const CHECKS_PER_REPIN: u32 = 16;

    thread_local! {
        static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
        static CHECKS: Cell<u32> = const { Cell::new(0) };
    }

    pub(super) fn pin() {
        let guard = crossbeam_epoch::pin();
        GUARD.with(|slot| *slot.borrow_mut() = Some(guard));
    }

    pub(super) fn unpin() {
        // Dropped outside the borrow: unpinning may run deferred destructors.
        let guard = GUARD
            .try_with(|slot| slot.borrow_mut().take())
            .ok()
            .flatten();
        drop(guard);
    }

    /// A quiescent state: the thread holds no reference it read without counting (beyond
    /// nested guards of its own, which keep it pinned).
    #[inline]
    pub(super) fn checkpoint() {
        let checks = CHECKS.with(|c| {
            let n = c.get().wrapping_add(1);
            c.set(n);
            n
        });
        if checks % CHECKS_PER_REPIN == 0 {
            repin();
        }
    }

    #[cold]
    fn repin() {
        GUARD.with(|slot| {
            if let Some(guard) = slot.borrow_mut().as_mut() {
                guard.repin();
                guard.flush();
            }
        });
    }
}

/// The GIL build needs no reclamation scheme: the GIL orders every read before any free.
#[cfg(feature = "gil")]
mod quiescence {
    #[inline(always)]
    pub(super) fn pin() {}
    #[inline(always)]
    pub(super) fn unpin() {}
    #[inline(always)]
    pub(super) fn checkpoint() {}
}
