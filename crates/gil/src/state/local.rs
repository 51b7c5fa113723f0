//! Per-thread values of the crates above, kept in the thread state: a generic part of the block
//! for data the runtime knows nothing about (the object model keeps its interning cache and its
//! retired-reference batches here). A [`Key`](local::Key) names one value of one type; each
//! thread's value is made from the key's `init` the first time the thread asks for it, lives in the
//! thread's block, and is dropped first thing in the thread's exit sequence (while the thread still
//! owns its objects; keys in the reverse order of their first use on any thread), so what it
//! releases settles before the thread retires. A thread without a block (after its exit: the
//! fallback in the thread state's docs, `state.rs`) gets `None`.
//!
//! Values are reached through a closure, never a reference the caller could keep: with a
//! [`Python`](crate::Python) token ([`Key::with`](local::Key::with), one thread-local access) or
//! without ([`Key::with_current`](local::Key::with_current), the same access, for code that runs
//! without a token: epoch callbacks, quiescent-state hooks). A value that needs to change uses a
//! `Cell` or `RefCell`.
//!
//! ```
//! use std::cell::Cell;
//! use ftrt_gil::{local::Key, Python};
//!
//! static CALLS: Key<Cell<u32>> = Key::new(|| Cell::new(0));
//!
//! Python::attach(|py| {
//!     CALLS.with(py, |calls| calls.unwrap().set(1));
//!     assert_eq!(CALLS.with(py, |calls| calls.unwrap().get()), 1);
//! });
//! std::thread::spawn(|| {
//!     // Another thread, another value; without a token, once the thread has a block.
//!     assert!(CALLS.with_current(|calls| calls.is_none()));
//!     Python::attach(|_| assert_eq!(CALLS.with_current(|calls| calls.unwrap().get()), 0));
//! })
//! .join()
//! .unwrap();
//! ```
//!
//! Also here: [`frame`](local::frame), one pointer per thread that is never torn down, for a work
//! list that a frame on the stack publishes to the calls nested in it (the object model's
//! trashcan); and [`readers`](local::readers), a count of the reads open on this thread.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::AtomicUsize;

use super::*;

/// How many keys the whole program may use: a key first used after that many others finds
/// no slot, and its thread's value is `None` on every thread, as on a thread without a
/// block (`ftrt-object` uses 4, and falls back as after a thread's exit).
pub const MAX_KEYS: usize = 16;

/// The next free slot index, under the lock every first use of a key takes: a key is given
/// an index once, and no index is lost to two threads' first uses of one key racing.
static NEXT: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// A thread's value for one key: the boxed value and how to drop it.
#[derive(Clone, Copy)]
struct Value {
    value: NonNull<()>,
    drop: unsafe fn(NonNull<()>),
}

/// The block's part: one value per key, made on first use.
pub(crate) struct Slots([Cell<Option<Value>>; MAX_KEYS]);

impl Slots {
    pub(super) fn new() -> Self {
        Slots([const { Cell::new(None) }; MAX_KEYS])
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // Later keys first: a key's value may use keys first used before it.
        for slot in self.0.iter().rev() {
            if let Some(value) = slot.take() {
                // SAFETY: `value` was made by `Key::<T>::get` from a `Box<T>` with
                // `drop_box::<T>`, and taken out of its slot, so it is dropped once. Nothing
                // borrows it: borrows live inside `Key::with` closures, and the block is
                // dropped only by the thread's exit, never inside one.
                unsafe { (value.drop)(value.value) };
            }
        }
    }
}

/// # Safety
/// `value` came from `Box::<T>::into_raw` and is dropped once.
unsafe fn drop_box<T>(value: NonNull<()>) {
    // SAFETY: per the caller.
    drop(unsafe { Box::from_raw(value.cast::<T>().as_ptr()) });
}

/// The name of one per-thread value of type `T`, kept in the thread state. Declare it in a
/// `static`; see the [module docs](self).
pub struct Key<T: 'static> {
    /// The slot index plus one, 0 until first use.
    index: AtomicUsize,
    init: fn() -> T,
}

impl<T: 'static> Key<T> {
    /// A key whose value each thread makes with `init` on first use.
    pub const fn new(init: fn() -> T) -> Self {
        Key {
            index: AtomicUsize::new(0),
            init,
        }
    }

    /// Runs `f` with the attached thread's value, or `None` when the thread has no block
    /// (it attached after its exit) or the key no slot (more than [`MAX_KEYS`] keys are
    /// used).
    #[inline]
    pub fn with<R>(&'static self, py: crate::Python<'_>, f: impl FnOnce(Option<&T>) -> R) -> R {
        assert_attached();
        f(py.state().and_then(|state| self.get(state)))
    }

    /// Runs `f` with the calling thread's value, or `None` when the thread has no block
    /// (before it first attached, or after its exit) or the key no slot (more than
    /// [`MAX_KEYS`] keys are used). For code without a token.
    #[inline]
    pub fn with_current<R>(&'static self, f: impl FnOnce(Option<&T>) -> R) -> R {
        with_current(|state| f(state.and_then(|state| self.get(state))))
    }

    #[inline]
    fn index(&self) -> Option<usize> {
        match self.index.load(Ordering::Acquire) {
            0 => self.assign(),
            index => Some(index - 1),
        }
    }

    /// The key's slot index, given on its first use, or `None` when every slot is taken.
    /// Never panics: the object model first uses its keys inside writes that must not
    /// unwind half-way.
    #[cold]
    fn assign(&self) -> Option<usize> {
        let mut next = NEXT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Asked again under the lock: another thread's first use may have assigned it.
        match self.index.load(Ordering::Acquire) {
            0 if *next < MAX_KEYS => {
                let fresh = *next;
                *next += 1;
                // Release: pairs with `index`'s acquire (the index is all it publishes).
                self.index.store(fresh + 1, Ordering::Release);
                Some(fresh)
            }
            0 => None,
            index => Some(index - 1),
        }
    }

    #[inline]
    fn get<'s>(&'static self, state: &'s ThreadState) -> Option<&'s T> {
        let slot = &state.locals.0[self.index()?];
        let value = match slot.get() {
            Some(value) => value,
            None => self.make(slot),
        };
        // SAFETY: the slot's index belongs to this key alone (`assign` hands each index out
        // once), so its value is a `Box<T>` this key made; it is dropped only with the
        // block, which outlives `'s`.
        Some(unsafe { value.value.cast::<T>().as_ref() })
    }

    #[cold]
    fn make(&self, slot: &Cell<Option<Value>>) -> Value {
        let made = Box::new((self.init)());
        // `init` may have used this key itself: the first value stored stays.
        if let Some(value) = slot.get() {
            drop(made);
            return value;
        }
        let value = Value {
            value: NonNull::from(Box::leak(made)).cast(),
            drop: drop_box::<T>,
        };
        slot.set(Some(value));
        value
    }
}

/// A handle on the calling thread's standing in the runtime, which other threads may read:
/// whether it is attached now. `None` for a thread without a block (before its first
/// attach, after its exit) or without an entry in the registry (should ids ever run out),
/// and in the `gil` build, which does not track it.
pub fn presence() -> Option<ThreadPresence> {
    #[cfg(not(feature = "gil"))]
    return with_current(|state| state?.entry.clone().map(ThreadPresence));
    #[cfg(feature = "gil")]
    None
}

/// A thread's standing in the runtime, read from any thread ([`presence`]).
#[derive(Clone)]
pub struct ThreadPresence(#[allow(dead_code)] Arc<Registered>);

impl ThreadPresence {
    /// Whether the thread is attached (a snapshot: it may attach or detach at any moment
    /// after). A thread parked by a stop of the world, or waiting to attach, is not. A thread
    /// that counts its objects on the owner's path is attached: in the biased build a
    /// detach parks the counts before the thread leaves the world, and an attach unparks
    /// them before it enters. So while a thread reads as not attached, its counts are
    /// parked (a thread that drops the last reference to one of its objects merges that
    /// object itself), or about to be unparked, with such drops queued to it.
    #[inline]
    pub fn is_attached(&self) -> bool {
        #[cfg(not(feature = "gil"))]
        return self.0.presence.is_attached();
        #[cfg(feature = "gil")]
        false
    }
}

/// The calling thread's frame pointer (null when no frame has set one). One pointer per
/// thread, never torn down (it lives in the thread-local every access goes through, which
/// has no destructor), so it works during thread exit too. Meant for one frame on the stack
/// to publish a work list to the calls nested in it: the object model's trashcan uses it
/// (its outermost release's list of dead objects), and nothing else may.
#[inline(always)]
pub fn frame() -> *mut () {
    CURRENT.with(|c| c.frame.get())
}

/// Sets the calling thread's [`frame`] pointer.
///
/// # Safety
/// Code that reads [`frame`] writes through it (the object model's trashcan pushes onto the
/// work list it points to): `frame` is null, or points to that work list, alive and not
/// otherwise borrowed until the pointer is set again.
#[inline(always)]
pub unsafe fn set_frame(frame: *mut ()) {
    CURRENT.with(|c| c.frame.set(frame));
}

/// The calling thread's counts pointer (null until set). Like [`frame`], one pointer per
/// thread in the thread-local every access goes through, never torn down, one load away from
/// the owner id every count compares: the object model keeps its per-thread counts of
/// deferred objects here, and nothing else may.
#[inline(always)]
pub fn counts() -> *const () {
    CURRENT.with(|c| c.counts.get())
}

/// The path the calling thread's counts of deferred objects take
/// ([`CountDeferred::path`](ftrt_refcount::biased::CountDeferred::path)): inline while
/// [`counts`] is set, out of line while it is null (see [`set_counts`]). Beside it in the
/// thread-local, one load.
#[inline(always)]
pub fn deferred_path() -> ftrt_refcount::biased::DeferredPath {
    CURRENT.with(|c| c.deferred_path.get())
}

/// Sets the calling thread's [`counts`] pointer, and the [`deferred_path`] with it: the
/// inline one ([`DeferredPath::INLINE`](ftrt_refcount::biased::DeferredPath::INLINE)) while
/// the pointer is set, so that the first halves may write through it with no test for
/// null, the out-of-line one while it is null.
///
/// # Safety
/// Code that reads [`counts`] writes through it (the object model counts references in the
/// array it points to): `counts` is null, or points to that array, alive until the pointer
/// is set again.
#[inline(always)]
pub unsafe fn set_counts(counts: *const ()) {
    use ftrt_refcount::biased::DeferredPath;
    let path = if counts.is_null() {
        DeferredPath::OUT_OF_LINE
    } else {
        DeferredPath::INLINE
    };
    CURRENT.with(|c| {
        c.counts.set(counts);
        c.deferred_path.set(path);
    });
}

/// Whether the calling thread holds its attach pin: the pin on `crossbeam-epoch`'s default
/// collector that an attach takes and a detach gives up (repinned at checkpoints), in the
/// free-threaded builds. Never true in the `gil` build, during `allow_threads` (but for one
/// inside the thread's own stop of the world, which stays attached and pinned), or after
/// the thread's exit. A read that reaches no checkpoint, does not detach, and begins or ends no
/// section through [`section`](crate::section) (one that has to wait for its lock, or an
/// outer one that has to wait to resume when a nested one ends, gives the pin up for the
/// wait, with no read open), made on a thread where this is true, is protected by that pin:
/// whatever it loads was reachable after the pin was taken, so the epoch cannot free it
/// before the pin is given up or repinned. The object model's lock-free container reads rely
/// on it to take no pin of their own.
///
/// While a read is open on the thread ([`OpenRead`], counted in [`readers`]) the pin is
/// not renewed at checkpoints, and a detach puts it aside instead of giving it up (or, when
/// an older pin is aside already, gives it up in favour of that one, which covers the same
/// reads and more) until the last open read closes. So a read opened while this is true is
/// protected for as long as it stays open, across checkpoints and `allow_threads` (the
/// object model's `ReadGuard` takes no pin of its own on such a thread).
#[inline(always)]
pub fn attach_pinned() -> bool {
    CURRENT.with(|c| c.attach_pinned.get())
}

/// How many reads are open on the calling thread: [`OpenRead`]s alive on it. Like
/// [`frame`], it lives in the thread-local every access goes through and is never torn down.
/// The object model counts its read guards here: a write to a container only this thread can
/// reach may free what it removes at once when no read is open, since no reader, on this
/// thread or another, can still hold it.
#[inline(always)]
pub fn readers() -> usize {
    CURRENT.with(|c| c.readers.get())
}

/// Whether no other thread can have a read open now, so that what this thread removes from
/// any container, shared ones included, may be freed at once once no read is open on this
/// thread either ([`readers`]). True while the thread holds the world alone
/// ([`Python::holds_world_alone`](crate::Python::holds_world_alone): no other thread is
/// attached, and none attaches before this one lets go), unless a thread left the world
/// with a read open (an [`OpenRead`] alive across `allow_threads`; then false for the
/// whole hold). It relies on its users reading objects only while attached (the object
/// model's `Debug` print attaches for that reason), and on every read that can outlive a
/// detach being an open read: the object model's lock-free reads open none, and reach no
/// checkpoint and do not detach. Never true in the `gil` build, inside the thread's own stop
/// of the world, or after the thread lets go.
///
/// A thread that leaves the world with a read open is counted until it enters again or
/// exits; a leaked [`OpenRead`] (a `mem::forget`-ten guard) on a thread that keeps
/// detaching therefore keeps every hold, on every thread, from freeing at once until that
/// thread exits. That costs speed, never safety.
#[inline(always)]
pub fn no_reads_elsewhere() -> bool {
    CURRENT.with(|c| c.no_reads_elsewhere.get())
}

/// A read open on the calling thread, counted in [`readers`] until it is dropped. The only
/// way to lower the count is to drop one, so safe code cannot make it read zero while a read
/// is open. While one is open the thread's epoch pin stays as it is (see
/// [`attach_pinned`]); the last one to close lets a pin put aside by a detach go. Forgetting
/// one keeps the count up and the thread pinned until it exits, which holds back the epoch's
/// reclamation on every thread (speed and memory, never safety). Neither `Send` nor `Sync`.
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_gil::local::OpenRead>();
/// ```
#[must_use = "the read closes when this is dropped"]
pub struct OpenRead {
    _not_send: PhantomData<*const ()>,
}

impl OpenRead {
    /// Opens a read on the calling thread.
    #[inline(always)]
    pub fn new() -> Self {
        CURRENT.with(|c| c.readers.set(c.readers.get() + 1));
        OpenRead {
            _not_send: PhantomData,
        }
    }
}

impl Default for OpenRead {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for OpenRead {
    #[inline(always)]
    fn drop(&mut self) {
        // Made on this thread (it cannot leave it), so the count is at least one.
        let last = CURRENT.with(|c| {
            let open = c.readers.get() - 1;
            c.readers.set(open);
            open == 0 && c.pin_kept.get()
        });
        if last {
            // The last read closed: no read relies on a pin kept aside by a detach.
            // SAFETY: no read is open (the count just reached zero).
            unsafe { super::quiescence::release_kept_pin() };
        }
    }
}

impl std::fmt::Debug for OpenRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OpenRead")
    }
}
