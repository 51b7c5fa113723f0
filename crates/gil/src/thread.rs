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
//! reclamation (QSBR) expressed with epochs. Crates that keep garbage per thread before handing
//! it to the epoch run their part at those quiescent states through [`on_quiescent_state`].

use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, OnceLock};

use dashmap::DashMap;
use ftrt_lock::section;
use ftrt_refcount::RefCount;

use crate::{BuildCount, Gil};

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
        // suspended across it. In the gil build the object model's sections take no lock, but
        // sections of `ftrt_lock` users do, and another holder of the GIL may need them.
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
///
/// Thread-locals are torn down in the reverse order of their first use, so values that other
/// thread-locals hold (a `Shared` kept in one, say) may be dropped after the state is gone, and
/// dropping them attaches. Attaching therefore never depends on the state: whether the thread is
/// attached lives in `ATTACHED`, which is never torn down, and a thread whose state is gone
/// attaches unregistered. It has retired its biased counts by then, so it owns nothing and counts
/// on the objects' shared side, as any thread that is not the owner does.
struct ThreadState {
    id: u64,
}

thread_local! {
    static STATE: ThreadState = ThreadState::register();
    /// Whether the thread is attached. Const-initialised and without a destructor, so std never
    /// tears it down: it works in every thread-local destructor.
    static ATTACHED: Cell<bool> = const { Cell::new(false) };
}

impl ThreadState {
    fn register() -> Self {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let name = std::thread::current().name().map(str::to_owned);
        REGISTRY.insert(id, ThreadInfo { name });
        ThreadState { id }
    }

    /// Whether the calling thread is attached, registering it on first use (unless its state
    /// was already torn down: see the type's docs).
    fn attached() -> bool {
        let _registered = STATE.try_with(|_| ());
        ATTACHED.get()
    }

    fn set_attached(attached: bool) {
        ATTACHED.set(attached);
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
    ATTACHED.get()
}

/// How many hooks [`on_quiescent_state`] accepts.
pub const MAX_QUIESCENT_STATE_HOOKS: usize = 4;

static QUIESCENT_STATE_HOOKS: [OnceLock<fn()>; MAX_QUIESCENT_STATE_HOOKS] =
    [const { OnceLock::new() }; MAX_QUIESCENT_STATE_HOOKS];

/// Registers `hook` to run on every attached thread at each of its quiescent states: every 16th
/// checkpoint ([`Python::check`]), after the thread repinned and before it flushes its epoch
/// garbage, and whenever it detaches ([`Python::allow_threads`], the end of [`Python::attach`]),
/// before it unpins.
///
/// This is for crates that keep garbage per thread before handing it to `crossbeam-epoch`, or
/// that get expired garbage handed back: the hook hands the thread's share over and frees what
/// came back, so the memory held for lock-free readers stays bounded, in objects and in time, on
/// every thread that keeps reaching checkpoints, not only on threads that keep making garbage.
/// `ftrt-object` registers its retired-reference batches here.
///
/// A hook runs on the thread whose quiescent state it is, attached and pinned (unpinned only in
/// thread-local destructors at thread exit, where the pin's slot may be gone), without a token.
/// It should be short: it must not block and must not detach. It may drop objects. Hooks run in
/// registration order. In the `gil` build nothing is reclaimed late: there are no quiescent
/// states and hooks never run.
///
/// Registering the same hook twice runs it twice: register once (behind a `std::sync::Once`).
///
/// # Panics
/// If [`MAX_QUIESCENT_STATE_HOOKS`] hooks are registered already.
pub fn on_quiescent_state(hook: fn()) {
    // Slots fill in order: a `set` racing another on the same slot waits for it and moves on.
    let registered = QUIESCENT_STATE_HOOKS
        .iter()
        .any(|slot| slot.set(hook).is_ok());
    assert!(
        registered,
        "at most {MAX_QUIESCENT_STATE_HOOKS} quiescent-state hooks can be registered"
    );
}

/// Keeps attached threads pinned in the epoch scheme (free-threaded builds only).
#[cfg(not(feature = "gil"))]
mod quiescence {
    use std::cell::{Cell, RefCell};
    use std::sync::OnceLock;

    use crossbeam_epoch::Guard;

    /// Checkpoints between repins: each repin costs a fence, and reclamation only needs threads
    /// to pass through quiescent states now and then. Each repin also runs the quiescent-state
    /// hooks and flushes: the thread hands its retired garbage to the global queue and frees a
    /// bounded batch of what has expired, so garbage is collected at the pace it is made
    /// (nested pins, which reads use, never collect by themselves).
    const CHECKS_PER_REPIN: u32 = 16;

    thread_local! {
        // Torn down at thread exit like any thread-local with a destructor; a thread that
        // attaches after that (a thread-local's drop) runs unpinned, and its reads pin for
        // themselves. Hence `try_with` throughout.
        static GUARD: RefCell<Option<Guard>> = const { RefCell::new(None) };
        static CHECKS: Cell<u32> = const { Cell::new(0) };
    }

    pub(super) fn pin() {
        let guard = crossbeam_epoch::pin();
        // If the slot is gone, the closure (and the guard with it) is dropped unrun.
        let _ = GUARD.try_with(|slot| *slot.borrow_mut() = Some(guard));
    }

    pub(super) fn unpin() {
        // Detaching is a quiescent state: the hooks run while the thread is still pinned.
        run_hooks();
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
        let repinned = GUARD
            .try_with(|slot| {
                slot.borrow_mut()
                    .as_mut()
                    .map(|guard| guard.repin())
                    .is_some()
            })
            .unwrap_or(false);
        if !repinned {
            return;
        }
        // Between the repin and the flush, so what the hooks hand over goes out with this
        // flush; and outside the slot's borrow, since hooks drop objects.
        run_hooks();
        let _ = GUARD.try_with(|slot| {
            if let Some(guard) = slot.borrow().as_ref() {
                guard.flush();
            }
        });
    }

    fn run_hooks() {
        for hook in super::QUIESCENT_STATE_HOOKS.iter().map_while(OnceLock::get) {
            hook();
        }
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
