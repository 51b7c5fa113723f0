//! The read guard: the runtime's proof that a borrowed read stays valid.
//!
//! A [`Borrowed`](crate::Borrowed) value takes no reference count, so something else must keep
//! the object alive while it is used. The container handle it was read from keeps the container
//! (and so everything still in it) alive; a [`ReadGuard`] keeps alive whatever a writer takes out
//! of a container meanwhile: a replaced or deleted value, a popped item.
//!
//! - **Free-threaded builds:** the guard keeps the thread pinned in `crossbeam-epoch`'s default
//!   collector, the one writers retire into (see `reclaim`). A removed value is dropped only
//!   after every thread pinned at the time has unpinned. The guard counts itself as a read open
//!   on its thread (`ftrt_gil::local::readers`), and that is what keeps the pin: an attached
//!   thread's attach pin is not renewed at checkpoints while a read is open, and a detach puts
//!   it aside until the last read closes (a thread without one pins for itself). The open read
//!   also tells writes that no other thread's read can race with (to a local container, or by
//!   a thread holding the world alone) to free what they remove at once only while no read is
//!   open; and a thread that detaches with one open keeps other threads' holds on the world
//!   from freeing at once.
//! - **`gil` build:** readers and writers take turns on the GIL, but a reader can still outlive a
//!   removal: on its own thread (borrow, then `del_item`), or on another thread while the reader
//!   holds its guard across `allow_threads` or a GIL switch at `Python::check`. So the guard
//!   registers an active reader, and a removal made while any reader guard is alive, on any
//!   thread, is deferred until the last one is gone. With no reader, a removal drops at once
//!   after one counter check, as before.
//!
//! The guard is made from a [`Python`] token and tied to it: it is made only on an attached
//! thread and is neither `Send` nor `Sync`, so it cannot be moved into `allow_threads` or to
//! another thread as such. One carried in past the bound (the hole `Python::allow_threads`
//! documents) loads nothing there (its loads check the attachment) and is dropped attached.

use std::marker::PhantomData;

use ftrt_gil::Python;

/// Keeps values read without counting alive: while a `ReadGuard` lives, nothing a writer
/// removes from a container (on this thread or any other) is freed. Borrowed reads
/// ([`get_attr_borrowed`](crate::Bound::get_attr_borrowed) on instances and modules,
/// [`get_item_borrowed`](crate::Bound::get_item_borrowed) on dicts) take one, and the
/// [`Borrowed`](crate::Borrowed) values they return live no longer than the guard and the
/// container handle they came from.
///
/// Hold a guard briefly, the way an interpreter holds a borrowed value on its stack: one per
/// read or per short run of reads. While it lives, retired memory is not reclaimed (in the `gil`
/// build: on any thread); leaking one with `mem::forget` keeps alive everything later retired
/// through the epoch, anywhere (in the free-threaded builds, at least until its thread exits;
/// other threads' writes to their own local containers still free at once).
///
/// A guard stays on the thread that made it, attached, and cannot enter `allow_threads`:
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_object::ReadGuard<'static>>();
/// ```
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>() {}
/// assert_sync::<ftrt_object::ReadGuard<'static>>();
/// ```
///
/// Only the runtime's guard is accepted: a guard from another epoch collector protects nothing
/// the runtime retires, and the borrowed reads reject it by type.
///
/// ```compile_fail,E0308
/// use ftrt_gil::Python;
/// use ftrt_object::{PyDict, PyFloat, PyStr};
///
/// Python::attach(|py| {
///     let dict = PyDict::new(py);
///     let key = PyStr::intern(py, "k");
///     dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
///     let collector = crossbeam_epoch::Collector::new();
///     let handle = collector.register();
///     let foreign = handle.pin();
///     let _ = dict.get_item_borrowed(&key, &foreign);
/// });
/// ```
pub struct ReadGuard<'py> {
    /// Its own pin, on a thread that does not hold its attach pin (after the thread's exit);
    /// `None` where the attach pin covers the guard's whole life (see [`ReadGuard::new`]).
    #[cfg(not(ftrt_gil_build))]
    epoch: Option<crossbeam_epoch::Guard>,
    /// The read it keeps open on its thread (`ftrt_gil::local::readers`) while it lives.
    #[cfg(not(ftrt_gil_build))]
    _open_read: ftrt_gil::local::OpenRead,
    /// Tied to the attachment, and neither `Send` nor `Sync` (as `Python` is not).
    _attached: PhantomData<Python<'py>>,
}

impl<'py> ReadGuard<'py> {
    /// A guard for borrowed reads on this attached thread.
    ///
    /// Free-threaded builds: a read opened on the thread (a thread-local counter), which keeps
    /// the thread's attach pin as it is while it is open, across checkpoints and detaches
    /// (`ftrt_gil::local::attach_pinned`); only a thread without that pin pins for itself.
    /// `gil` build: a counter increment.
    #[inline]
    pub fn new(py: Python<'py>) -> Self {
        let _ = py;
        // A token carried into a detach makes no guard there: it would protect nothing.
        ftrt_gil::assert_attached();
        #[cfg(ftrt_gil_build)]
        gil_readers::enter();
        #[cfg(not(ftrt_gil_build))]
        {
            // Opened first: from here the attach pin, if the thread holds it, stays as it is
            // until the read closes, so whatever the guard's reads load later was reachable
            // while the pin was held, and the epoch frees none of it before the guard is gone.
            let open_read = ftrt_gil::local::OpenRead::new();
            ReadGuard {
                // The default collector's: the one `reclaim` retires into.
                epoch: (!ftrt_gil::local::attach_pinned()).then(crossbeam_epoch::pin),
                _open_read: open_read,
                _attached: PhantomData,
            }
        }
        #[cfg(ftrt_gil_build)]
        ReadGuard {
            _attached: PhantomData,
        }
    }

    /// The epoch guard to load container pointers with. Callers never retire through it.
    ///
    /// Where the attach pin covers the guard, and in the `gil` build, this is `unprotected()`.
    /// In the `gil` build nothing runs concurrently with a load under the GIL, and removals are
    /// deferred by the reader count instead of the epoch.
    #[inline]
    pub(crate) fn epoch(&self) -> &crossbeam_epoch::Guard {
        // Both answers rely on the thread being attached while it loads (the attach pin, the
        // GIL): a guard carried into a detach fails here, before the read.
        ftrt_gil::assert_attached();
        #[cfg(not(ftrt_gil_build))]
        return match &self.epoch {
            Some(pinned) => pinned,
            // SAFETY: the thread holds its attach pin, kept pinned while this guard's read is
            // open (see `new`): pointers loaded under it stay valid while the guard lives.
            // Nothing is deferred through it, which would run at once.
            None => unsafe { crossbeam_epoch::unprotected() },
        };
        #[cfg(ftrt_gil_build)]
        // SAFETY: under the GIL no other thread touches objects while this thread loads a
        // pointer, and a pointer loaded here is kept alive past the load by the reader count
        // (`gil_readers`), not by this guard. Callers never retire through it.
        return unsafe { crossbeam_epoch::unprotected() };
    }
}

impl Drop for ReadGuard<'_> {
    /// Closes the read. A guard carried into a detached closure (the hole
    /// `Python::allow_threads` documents) is dropped attached in the `gil` build, whose reader
    /// count the GIL serialises; the free-threaded builds' open read closes on any thread.
    #[inline]
    fn drop(&mut self) {
        #[cfg(ftrt_gil_build)]
        if ftrt_gil::is_attached() {
            gil_readers::leave();
        } else {
            Python::attach(|_| gil_readers::leave());
        }
        // The free-threaded builds' open read closes as `_open_read` drops.
    }
}

impl std::fmt::Debug for ReadGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadGuard")
    }
}

/// The `gil` build's reader registry: how many read guards are alive, on every thread, and the
/// removals deferred until there are none.
///
/// Every access happens on an attached thread, which in the `gil` build holds the GIL: a guard is
/// made from a `Python` token, cannot leave its thread (it is neither `Send` nor `Sync`, and
/// tied to `'py`), and one carried into `allow_threads` past its bound attaches for its drop
/// (`ReadGuard`'s `Drop`), so it is dropped attached too; removals run in writers,
/// which are attached. The GIL's acquire and release order every access, so the count needs no
/// read-modify-write: a relaxed load and store (the cost of a plain counter) suffice, and the
/// atomics only keep a misuse a logic error instead of a data race.
///
/// Invariant: references are deferred only while the count is above zero, and the last guard to
/// go drops them, so with no reader the list is empty.
#[cfg(ftrt_gil_build)]
pub(crate) mod gil_readers {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    use crate::refs::OwnedRef;

    /// Read guards alive on every thread.
    static READERS: AtomicUsize = AtomicUsize::new(0);
    /// Whether `DEFERRED` holds anything (so the last guard checks a flag, not a mutex).
    static HAS_DEFERRED: AtomicBool = AtomicBool::new(false);
    /// Removals made while a reader guard was alive. The mutex is never contended (the GIL
    /// serialises its users); it makes the static shareable without an `unsafe impl`.
    static DEFERRED: Mutex<Vec<OwnedRef>> = Mutex::new(Vec::new());

    #[inline]
    pub(super) fn enter() {
        debug_assert!(ftrt_gil::is_attached(), "a read guard on a detached thread");
        // Relaxed load + store: serialised by the GIL (see the module docs).
        READERS.store(READERS.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    #[inline]
    pub(super) fn leave() {
        debug_assert!(ftrt_gil::is_attached(), "a read guard dropped detached");
        let left = READERS.load(Ordering::Relaxed) - 1;
        READERS.store(left, Ordering::Relaxed);
        if left == 0 && HAS_DEFERRED.load(Ordering::Relaxed) {
            release_deferred();
        }
    }

    /// Whether no read guard is alive on any thread, so that what a write removes may be
    /// freed at once.
    #[inline]
    pub(crate) fn none() -> bool {
        READERS.load(Ordering::Relaxed) == 0
    }

    /// Keeps a reference taken out of a container, while a reader guard is alive (see
    /// [`none`]), until the last one is gone.
    #[cold]
    pub(crate) fn defer(reference: OwnedRef) {
        DEFERRED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(reference);
        HAS_DEFERRED.store(true, Ordering::Relaxed);
    }

    #[cold]
    fn release_deferred() {
        HAS_DEFERRED.store(false, Ordering::Relaxed);
        // Taken out before dropping: a drop frees objects, which must not run under the mutex.
        let deferred = std::mem::take(&mut *DEFERRED.lock().unwrap_or_else(|e| e.into_inner()));
        drop(deferred);
    }
}
