//! `BiasedArc<T>`: `Arc`'s API over a biased count.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::{offset_of, ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crate::biased::{self, BiasedCount, TakeUnique};
use crate::sync::{fence, spin_hint, AtomicU32, Ordering};
use crate::RefCountValue;

/// The allocation: the count first (so a pointer to the count is a pointer to the allocation,
/// which is what the merge queues hold), the weak count, then the value. The count's 12 bytes
/// and the weak count's 4 make the 16 bytes `Arc` has before the value too.
#[repr(C)]
struct ArcInner<T> {
    count: BiasedCount,
    /// The [`Weak`] handles, plus one that all the strong references hold together until the
    /// value is dropped (or moved out), as in `Arc`: whoever takes it to zero frees the memory.
    /// [`WEAK_LOCKED`] while a uniqueness check shuts out new weak handles.
    weak: AtomicU32,
    value: T,
}

/// The weak count while [`BiasedArc::get_mut`] checks uniqueness (only ever swapped in for a
/// count of one, i.e. no weak handle): a downgrade waits, so that no weak handle appears (and
/// none upgrades) mid-check.
const WEAK_LOCKED: u32 = u32::MAX;
/// More weak handles than this aborts the process, as `Arc` does past `isize::MAX`: a count
/// that wrapped would free the memory under live handles.
const MAX_WEAK: u32 = i32::MAX as u32;

impl<T> ArcInner<T> {
    /// The weak count of the allocation at `this`, without a reference to the value (which may
    /// be dropped, or being dropped, when only weak handles remain).
    ///
    /// # Safety
    /// The allocation is alive: the caller holds a strong or a weak reference to it.
    unsafe fn weak<'a>(this: NonNull<Self>) -> &'a AtomicU32 {
        // SAFETY: a place projection through a live allocation; only the field is borrowed.
        unsafe { &(*this.as_ptr()).weak }
    }

    /// The count of the allocation at `this`, as for [`weak`](Self::weak).
    ///
    /// # Safety
    /// As for [`weak`](Self::weak).
    unsafe fn count<'a>(this: NonNull<Self>) -> &'a BiasedCount {
        // SAFETY: as in `weak`.
        unsafe { &(*this.as_ptr()).count }
    }

    /// Gives up one weak reference (a [`Weak`]'s, or the strong references' shared one), freeing
    /// the memory when it was the last. The value must already be dropped or moved out.
    ///
    /// # Safety
    /// The caller holds that weak reference and does not use the allocation afterwards.
    unsafe fn drop_weak(this: NonNull<Self>) {
        // SAFETY: the caller's weak reference keeps the allocation alive.
        let weak = unsafe { Self::weak(this) };
        // A count of one is the caller's reference alone, and none can be added: a new weak
        // handle needs a strong reference or another weak one. The load spares the strong side's
        // last drop an atomic write when no weak handle was ever made (`Arc` pays one). Acquire:
        // pairs with the release decrements of the weak handles that were dropped.
        if weak.load(Ordering::Acquire) != 1 {
            // Release: this thread's uses of the allocation come before whoever frees it.
            if weak.fetch_sub(1, Ordering::Release) != 1 {
                return;
            }
            // Pairs with the other weak references' release decrements.
            fence(Ordering::Acquire);
        }
        // SAFETY: the last reference of any kind: nothing else points at the allocation, which
        // came from a `Box` of this layout (`ManuallyDrop<T>` has `T`'s), and the value is gone
        // already, so only the memory is freed.
        drop(unsafe { Box::from_raw(this.cast::<ArcInner<ManuallyDrop<T>>>().as_ptr()) });
    }
}

/// A thread-safe reference-counted pointer, like [`std::sync::Arc`], whose clones and drops on
/// the thread that created it use no atomic instructions.
///
/// Other threads clone and drop with one atomic operation each, as with `Arc`. See the
/// [crate documentation](crate) for when that trade pays off, and for the owner's merge queue:
/// when the last references die on other threads, the value is dropped on its owner thread at
/// its next safe point ([`BiasedArc::new`], [`BiasedArc::merge_pending`] or thread exit), or
/// straight away on the dropping thread if the owner has exited.
///
/// It is `Send` and `Sync` exactly when `Arc<T>` would be, so values that must stay on one thread
/// stay there:
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_refcount::BiasedArc<std::rc::Rc<i32>>>();
/// ```
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// // `Cell` is `Send` but not `Sync`: sharing it through clones on two threads would race.
/// assert_send::<ftrt_refcount::BiasedArc<std::cell::Cell<i32>>>();
/// ```
pub struct BiasedArc<T> {
    ptr: NonNull<ArcInner<T>>,
    _owns: PhantomData<ArcInner<T>>,
}

// SAFETY: as for `Arc<T>`: clones on several threads give shared access to `T` (so `T: Sync`),
// and whichever thread settles the count drops `T` (so `T: Send`). The count itself is
// thread-safe: the non-atomic half is only touched by the owner thread.
unsafe impl<T: Send + Sync> Send for BiasedArc<T> {}
// SAFETY: as above; `&BiasedArc<T>` lets another thread clone it.
unsafe impl<T: Send + Sync> Sync for BiasedArc<T> {}

/// Ends a `BiasedArc` allocation whose count has reached zero: drops the value (on the calling
/// thread) and gives up the strong references' weak reference, which frees the memory unless
/// [`Weak`] handles remain.
///
/// # Safety
/// `count` is the pointer to an `ArcInner<T>` (it heads the allocation) that no strong reference
/// or queue entry points at any more.
unsafe fn release<T>(count: NonNull<BiasedCount>) {
    let inner = count.cast::<ArcInner<T>>();
    // SAFETY: the count is alive until the allocation is freed below.
    if !unsafe { count.as_ref() }.is_husk() {
        // A husk's value was moved out by `try_unwrap`; otherwise it is still in place, and no
        // strong reference can reach it any more (weak upgrades fail on the dead count).
        // SAFETY: as above; the value is dropped exactly once, here.
        unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*inner.as_ptr()).value)) };
    }
    // SAFETY: the strong references' weak reference, given up once, here.
    unsafe { ArcInner::drop_weak(inner) };
}

impl<T> BiasedArc<T> {
    /// Allocates `value`, owned by the calling thread. Also merges the calling thread's queue if
    /// other threads have queued objects for it.
    #[inline]
    pub fn new(value: T) -> Self {
        Self::from_inner(ArcInner {
            count: BiasedCount::new(),
            weak: AtomicU32::new(1),
            value,
        })
    }

    /// Allocates `value` with an immortal count: clones and drops do nothing and the value is
    /// never dropped. For values every thread reads for the life of the program.
    pub fn new_immortal(value: T) -> Self {
        Self::from_inner(ArcInner {
            count: BiasedCount::immortal(),
            weak: AtomicU32::new(1),
            value,
        })
    }

    /// A value built by `data_fn`, which gets a [`Weak`] handle to the value it builds (to store
    /// in it, for self-references); like [`Arc::new_cyclic`](std::sync::Arc::new_cyclic). Until
    /// `data_fn` returns, upgrading that handle (or a clone of it, on any thread) gives `None`.
    ///
    /// ```
    /// use ftrt_refcount::{BiasedArc, Weak};
    ///
    /// struct Node {
    ///     me: Weak<Node>,
    /// }
    /// let node = BiasedArc::new_cyclic(|me| {
    ///     assert!(me.upgrade().is_none(), "not built yet");
    ///     Node { me: me.clone() }
    /// });
    /// assert!(BiasedArc::ptr_eq(&node.me.upgrade().unwrap(), &node));
    /// ```
    pub fn new_cyclic<F>(data_fn: F) -> Self
    where
        F: FnOnce(&Weak<T>) -> T,
    {
        let unborn = Box::new(ArcInner {
            count: BiasedCount::unborn(),
            // The weak handle handed to `data_fn`; it becomes the strong references' one.
            weak: AtomicU32::new(1),
            value: MaybeUninit::<T>::uninit(),
        });
        // `MaybeUninit<T>` has `T`'s layout, so the `repr(C)` allocations are the same.
        let ptr = NonNull::from(Box::leak(unborn)).cast::<ArcInner<T>>();
        let weak = Weak { ptr };
        // If this panics, dropping `weak` frees the memory and the value is never read: the count
        // stayed unborn, so no upgrade succeeded.
        let value = data_fn(&weak);
        // SAFETY: the allocation is alive (`weak`), and nothing reads the value while the count is
        // unborn.
        unsafe { ptr::write(ptr::addr_of_mut!((*ptr.as_ptr()).value), value) };
        // SAFETY: unborn until here, and brought alive once.
        unsafe { ArcInner::count(ptr).come_alive() };
        std::mem::forget(weak);
        Self {
            ptr,
            _owns: PhantomData,
        }
    }

    fn from_inner(inner: ArcInner<T>) -> Self {
        Self {
            ptr: NonNull::from(Box::leak(Box::new(inner))),
            _owns: PhantomData,
        }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn header(this: &Self) -> &BiasedCount {
        this.count()
    }

    #[inline(always)]
    fn count(&self) -> &BiasedCount {
        // SAFETY: this handle holds a reference, so the allocation is alive.
        unsafe { &self.ptr.as_ref().count }
    }

    /// The number of references (like [`Arc::strong_count`](std::sync::Arc::strong_count));
    /// `usize::MAX` for an immortal value. References dropped on other threads but still waiting
    /// in the owner's merge queue are not counted.
    ///
    /// Like `Arc::strong_count`, only a snapshot when other threads clone and drop the value at
    /// the same time; on a thread that does not own the value it can then be off in either
    /// direction (see [`BiasedCount::get`]). Use [`get_mut`](Self::get_mut) or
    /// [`try_unwrap`](Self::try_unwrap) to decide whether a handle is the only one.
    pub fn strong_count(this: &Self) -> usize {
        match this.count().get() {
            RefCountValue::Mortal(count) => count,
            RefCountValue::Immortal => usize::MAX,
        }
    }

    /// The number of [`Weak`] handles, like [`Arc::weak_count`](std::sync::Arc::weak_count); a
    /// snapshot when other threads make or drop them.
    pub fn weak_count(this: &Self) -> usize {
        // SAFETY: this handle keeps the allocation alive.
        match unsafe { ArcInner::weak(this.ptr) }.load(Ordering::Acquire) {
            // Another handle's `get_mut` is checking: there were no weak handles.
            WEAK_LOCKED => 0,
            count => count as usize - 1,
        }
    }

    /// A [`Weak`] handle to the value, which does not keep the value alive but can
    /// [`upgrade`](Weak::upgrade) to a strong one while it lives; like
    /// [`Arc::downgrade`](std::sync::Arc::downgrade).
    ///
    /// The first one marks the count: from then on the owner's last drop of this value decides
    /// its death with one atomic exchange (that upgrades race) instead of a plain load. The
    /// owner's other clones and drops stay plain.
    pub fn downgrade(this: &Self) -> Weak<T> {
        // Before the weak handle exists: see `BiasedCount::mark_weak`.
        this.count().mark_weak();
        // SAFETY: this handle keeps the allocation alive.
        let weak = unsafe { ArcInner::weak(this.ptr) };
        let mut current = weak.load(Ordering::Relaxed);
        loop {
            if current == WEAK_LOCKED {
                // Another handle's `get_mut` is checking uniqueness (and will fail: this handle
                // is a second reference). It holds the lock for a few loads.
                spin_hint();
                current = weak.load(Ordering::Relaxed);
                continue;
            }
            if current > MAX_WEAK {
                std::process::abort();
            }
            // Acquire: pairs with the lock's release, so that the check it guarded is over.
            match weak.compare_exchange_weak(
                current,
                current + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    return Weak { ptr: this.ptr };
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether this handle is the only reference and no [`Weak`] handle exists, as far as the
    /// calling thread can tell exactly (see [`BiasedCount::is_unique`]). Like `Arc`'s check, it
    /// locks the weak count for the time it reads the strong one, so that no weak handle can be
    /// made, or upgrade, in between.
    fn is_unique(this: &Self) -> bool {
        // SAFETY: this handle keeps the allocation alive.
        let weak = unsafe { ArcInner::weak(this.ptr) };
        // Acquire: pairs with the release decrements of dropped weak handles, whose upgrades'
        // references the strong count then shows.
        if weak
            .compare_exchange(1, WEAK_LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        let unique = this.count().is_unique();
        // Release: pairs with a waiting downgrade's acquire.
        weak.store(1, Ordering::Release);
        unique
    }

    /// The count as `Mortal(n)` or `Immortal`.
    pub fn ref_count(this: &Self) -> RefCountValue {
        this.count().get()
    }

    /// Whether both point to the same allocation.
    #[inline]
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        this.ptr == other.ptr
    }

    /// A pointer to the value.
    pub fn as_ptr(this: &Self) -> *const T {
        // SAFETY: in bounds of the live allocation; no reference is created.
        unsafe { ptr::addr_of!((*this.ptr.as_ptr()).value) }
    }

    /// Gives up the handle without dropping its reference; [`from_raw`](Self::from_raw) takes it
    /// back.
    pub fn into_raw(this: Self) -> *const T {
        let this = ManuallyDrop::new(this);
        Self::as_ptr(&this)
    }

    /// Rebuilds a handle from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `ptr` came from `BiasedArc::<T>::into_raw` (same `T`) and each such pointer is passed
    /// here at most once per reference it carries.
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        // SAFETY: `ptr` points at the `value` field of an `ArcInner<T>`, so stepping back by that
        // field's offset stays inside the same allocation, with its provenance.
        let inner = unsafe { ptr.byte_sub(offset_of!(ArcInner<T>, value)) } as *mut ArcInner<T>;
        Self {
            // SAFETY: derived from a non-null allocation pointer.
            ptr: unsafe { NonNull::new_unchecked(inner) },
            _owns: PhantomData,
        }
    }

    /// A mutable reference to the value if this is the only reference, counting references still
    /// waiting in a merge queue as dropped.
    ///
    /// `Some` is always right. `None` means "maybe shared": on a thread that does not own the
    /// value, the answer is `None` for as long as the owning thread (the one that created it)
    /// lives and still counts it locally, even if this is in fact the only handle, because the
    /// owner's local count changes without atomics and cannot be read exactly from another
    /// thread. Unlike `Arc::get_mut`, a handle *moved* to another thread is therefore not unique
    /// there until the owner calls [`give_up_ownership`](Self::give_up_ownership) on it (best
    /// before sending it), or exits, or calls [`biased::detach_current_thread`]. On the owning
    /// thread, and once the count is merged, the answer is exact.
    ///
    /// ```
    /// use ftrt_refcount::BiasedArc;
    /// use std::thread;
    ///
    /// let moved = BiasedArc::new(String::from("a"));
    /// thread::spawn(move || {
    ///     let mut moved = moved;
    ///     // The creating thread still counts it locally, as far as this thread can tell.
    ///     assert!(BiasedArc::get_mut(&mut moved).is_none());
    /// })
    /// .join()
    /// .unwrap();
    ///
    /// let handed_over = BiasedArc::new(String::from("b"));
    /// BiasedArc::give_up_ownership(&handed_over);
    /// thread::spawn(move || {
    ///     let mut handed_over = handed_over;
    ///     BiasedArc::get_mut(&mut handed_over).unwrap().push('!');
    ///     assert_eq!(*handed_over, "b!");
    /// })
    /// .join()
    /// .unwrap();
    /// ```
    pub fn get_mut(this: &mut Self) -> Option<&mut T> {
        if Self::is_unique(this) {
            // SAFETY: `is_unique` answers `true` only when it read the count exactly, this
            // handle's reference was the only one and no weak handle existed; `&mut this` stops
            // new ones being made, and a pending merge touches only the count.
            Some(unsafe { &mut (*this.ptr.as_ptr()).value })
        } else {
            None
        }
    }

    /// The value, if this is the only reference; otherwise the handle back. Exact even when other
    /// threads' drops are still waiting in a merge queue.
    ///
    /// `Ok` is always right. `Err` means "maybe shared", as for [`get_mut`](Self::get_mut): on a
    /// thread that does not own the value, `try_unwrap` fails while the owning thread lives and
    /// still counts the value locally (call [`give_up_ownership`](Self::give_up_ownership) on the
    /// owner before handing the value over). Dropping the handle instead is always fine: the
    /// value is then dropped on its owner thread.
    pub fn try_unwrap(this: Self) -> Result<T, Self> {
        let this = ManuallyDrop::new(this);
        // SAFETY: `this` holds a reference, and is not used after `Free`/`LeftToQueue`.
        match unsafe { this.count().try_take_unique() } {
            TakeUnique::Shared => Err(ManuallyDrop::into_inner(this)),
            // SAFETY: the only reference, no queue entry points at the allocation, and weak
            // upgrades fail from now on: the value is ours to move out, and the strong
            // references' weak reference ours to give up.
            TakeUnique::Free => Ok(unsafe { Self::take_and_free(this.ptr) }),
            TakeUnique::LeftToQueue => {
                // SAFETY: the count is now a husk: the value is ours to move out, and the pending
                // merge frees only the memory (see `release`).
                Ok(unsafe { ptr::read(ptr::addr_of!((*this.ptr.as_ptr()).value)) })
            }
        }
    }

    /// The value, if this was the last reference; otherwise `None`, and the reference is dropped.
    /// Like [`Arc::into_inner`](std::sync::Arc::into_inner), it is the race-free way to take a
    /// value back from several handles: when they all call it, at most one gets `Some`, and
    /// `Some` is never returned while another reference lives.
    ///
    /// Exactly one gets `Some` on the owning thread, and on every thread once the count is merged
    /// ([`give_up_ownership`](Self::give_up_ownership), or the owner retired). While the owner
    /// lives and still counts the value locally, a handle dropped here on another thread can only
    /// hand its reference to the owner's merge queue (that thread cannot tell whether the owner
    /// holds others); if it was the last, the owner's next merge drops the value and every
    /// caller got `None`. On the owning thread, drops that other threads queued before this call
    /// are merged first, so they count as having come first.
    ///
    /// ```
    /// use ftrt_refcount::BiasedArc;
    /// use std::thread;
    ///
    /// let value = BiasedArc::new(vec![1, 2]);
    /// // Merged: every thread's answer is exact from here on.
    /// BiasedArc::give_up_ownership(&value);
    /// let other = value.clone();
    /// let theirs = thread::spawn(move || BiasedArc::into_inner(other));
    /// let ours = BiasedArc::into_inner(value);
    /// let theirs = theirs.join().unwrap();
    /// assert!(ours.is_some() != theirs.is_some());
    /// ```
    pub fn into_inner(this: Self) -> Option<T> {
        let this = ManuallyDrop::new(this);
        let count = this.ptr.cast::<BiasedCount>();
        // SAFETY: this handle's reference is given up here, as in `drop`, and the handle is not
        // used afterwards except to free the allocation when the count says it was the last.
        if unsafe { BiasedCount::decref_settling(count, release::<T>) } {
            // SAFETY: that was the last reference and no queue entry remains; weak upgrades fail
            // on the count from now on.
            Some(unsafe { Self::take_and_free(this.ptr) })
        } else {
            None
        }
    }

    /// The value, moved out if this is the only reference (as [`try_unwrap`](Self::try_unwrap)
    /// decides it), otherwise cloned; like
    /// [`Arc::unwrap_or_clone`](std::sync::Arc::unwrap_or_clone).
    ///
    /// On a thread that does not own the value, a handle that is in fact the only one may be
    /// "maybe shared" (see [`get_mut`](Self::get_mut)) and is then cloned: the result is the same
    /// value, at the price of a clone.
    pub fn unwrap_or_clone(this: Self) -> T
    where
        T: Clone,
    {
        Self::try_unwrap(this).unwrap_or_else(|this| T::clone(&this))
    }

    /// A mutable reference to the value, cloning it into a new allocation first unless this is
    /// the only reference; like [`Arc::make_mut`](std::sync::Arc::make_mut) (clone-on-write).
    /// Other handles keep the old value.
    ///
    /// Uniqueness is decided as by [`get_mut`](Self::get_mut): on a thread that does not own the
    /// value, a handle moved there is "maybe shared" while the owner lives, and the first
    /// `make_mut` clones it. The copy is owned by the calling thread, so later calls there are
    /// exact and do not clone again.
    ///
    /// ```
    /// use ftrt_refcount::BiasedArc;
    ///
    /// let mut data = BiasedArc::new(5);
    /// *BiasedArc::make_mut(&mut data) += 1; // the only reference: no clone
    /// let other = data.clone();
    /// *BiasedArc::make_mut(&mut data) += 1; // shared: clones
    /// assert_eq!((*data, *other), (7, 6));
    /// ```
    pub fn make_mut(this: &mut Self) -> &mut T
    where
        T: Clone,
    {
        if !Self::is_unique(this) {
            // Maybe shared: a fresh allocation owned by this thread, unique from the start. The
            // old handle is dropped by the assignment, after the clone is made.
            *this = Self::new(T::clone(this));
        }
        // SAFETY: this handle's reference is the only one (checked exactly by `is_unique`, or
        // the allocation was just made), and `&mut this` stops new ones being made.
        unsafe { &mut (*this.ptr.as_ptr()).value }
    }

    /// Moves the value out and gives up the strong references' weak reference.
    ///
    /// # Safety
    /// The count says dead and nothing will call `release` for it: the value is the caller's.
    unsafe fn take_and_free(ptr: NonNull<ArcInner<T>>) -> T {
        // SAFETY: per the contract, the value is in place and nobody else will touch it.
        let value = unsafe { ptr::read(ptr::addr_of!((*ptr.as_ptr()).value)) };
        // SAFETY: the strong references' weak reference, given up once; the value is moved out.
        unsafe { ArcInner::drop_weak(ptr) };
        value
    }

    /// Makes every thread count this value atomically from now on, if the calling thread owns it
    /// (created it); does nothing on any other thread.
    ///
    /// Call it before handing a value to another thread that will want it back with
    /// [`get_mut`](Self::get_mut) or [`try_unwrap`](Self::try_unwrap): after it, those answer
    /// exactly on every thread. Clones and drops of this value on the calling thread then cost
    /// one atomic operation each, as on any other thread.
    pub fn give_up_ownership(this: &Self) {
        this.count().give_up_ownership();
    }

    /// Merges the calling thread's queue now: settles every object other threads handed back to
    /// this thread, dropping those whose last reference died elsewhere. Returns how many it
    /// merged. See [`biased::merge_pending`].
    pub fn merge_pending() -> usize {
        biased::merge_pending()
    }
}

impl<T> Clone for BiasedArc<T> {
    #[inline]
    fn clone(&self) -> Self {
        self.count().incref();
        Self {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for BiasedArc<T> {
    #[inline]
    fn drop(&mut self) {
        let count = self.ptr.cast::<BiasedCount>();
        // SAFETY: this handle's reference is given up here; `release::<T>` frees exactly this
        // kind of allocation, from any thread (`T: Send` whenever the handle can cross threads).
        if unsafe { BiasedCount::decref(count, release::<T>) } {
            // SAFETY: that was the last reference and no queue entry remains.
            unsafe { release::<T>(count) };
        }
    }
}

impl<T> Deref for BiasedArc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this handle keeps the allocation alive; shared access only.
        unsafe { &self.ptr.as_ref().value }
    }
}

impl<T> AsRef<T> for BiasedArc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T> Borrow<T> for BiasedArc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

impl<T> From<T> for BiasedArc<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Default> Default for BiasedArc<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: fmt::Display> fmt::Display for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T> fmt::Pointer for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Self::as_ptr(self), f)
    }
}

impl<T: PartialEq> PartialEq for BiasedArc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Eq> Eq for BiasedArc<T> {}

impl<T: PartialOrd> PartialOrd for BiasedArc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: Ord> Ord for BiasedArc<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: Hash> Hash for BiasedArc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

/// A weak handle to a [`BiasedArc`] value, like [`std::sync::Weak`]: it keeps the memory but
/// not the value alive, and [`upgrade`](Self::upgrade)s to a strong handle while the value lives.
///
/// Upgrading counts like a clone: on the value's owner thread without atomics, elsewhere with one
/// compare-and-swap, which fails once the count has decided the value's death. Which thread drops
/// the value does not change: the one that settles the count (see [`BiasedArc`]). The memory is
/// freed by whichever comes last, that thread or the last weak handle's drop.
///
/// A value is alive until its count decides its death, which for a last strong reference dropped
/// on a thread other than the owner happens when the owner merges it (its next safe point).
/// Until then an upgrade succeeds and the value lives on: unlike `Arc`'s, a weak handle can
/// upgrade after every strong handle was dropped, if the last drop still waits in the owner's
/// merge queue.
pub struct Weak<T> {
    /// The allocation, or a dangling address (`usize::MAX`, never an allocation's) for
    /// [`Weak::new`].
    ptr: NonNull<ArcInner<T>>,
}

// SAFETY: as for `BiasedArc<T>`: a weak handle upgrades to a strong one on whatever thread holds
// it, and its drop may free the memory (never the value) there.
unsafe impl<T: Send + Sync> Send for Weak<T> {}
// SAFETY: as above; `&Weak<T>` lets another thread clone or upgrade it.
unsafe impl<T: Send + Sync> Sync for Weak<T> {}

impl<T> Weak<T> {
    /// A weak handle to nothing: it never upgrades, and allocates nothing.
    pub const fn new() -> Self {
        // SAFETY: `usize::MAX` is not null; it is never dereferenced (see `allocation`).
        let ptr = unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(usize::MAX)) };
        Self { ptr }
    }

    /// The allocation, unless this handle came from [`Weak::new`].
    fn allocation(&self) -> Option<NonNull<ArcInner<T>>> {
        (self.ptr.as_ptr().addr() != usize::MAX).then_some(self.ptr)
    }

    /// A strong handle to the value if it is still alive, `None` once its count has decided its
    /// death (or, in [`BiasedArc::new_cyclic`], before it is built).
    pub fn upgrade(&self) -> Option<BiasedArc<T>> {
        let ptr = self.allocation()?;
        // SAFETY: this handle's weak reference keeps the allocation alive, and the count was
        // marked before the handle was made.
        if unsafe { ArcInner::count(ptr) }.try_incref() {
            Some(BiasedArc {
                ptr,
                _owns: PhantomData,
            })
        } else {
            None
        }
    }

    /// The number of strong references, 0 once the value is dead; as
    /// [`BiasedArc::strong_count`], a snapshot.
    pub fn strong_count(&self) -> usize {
        let Some(ptr) = self.allocation() else {
            return 0;
        };
        // SAFETY: this handle keeps the allocation alive.
        match unsafe { ArcInner::count(ptr) }.get() {
            RefCountValue::Mortal(count) => count,
            RefCountValue::Immortal => usize::MAX,
        }
    }

    /// The number of weak handles (this one included), or 0 once the value is dead, like
    /// [`std::sync::Weak::weak_count`]; a snapshot.
    pub fn weak_count(&self) -> usize {
        let Some(ptr) = self.allocation() else {
            return 0;
        };
        // SAFETY: this handle keeps the allocation alive.
        let weak = unsafe { ArcInner::weak(ptr) }.load(Ordering::Acquire);
        if self.strong_count() == 0 {
            0
        } else {
            // The strong references' one is not a handle. (Never locked: a lock needs no weak
            // handle to exist, and this is one.)
            weak as usize - 1
        }
    }

    /// Whether both point to the same allocation (two [`Weak::new`] handles do).
    pub fn ptr_eq(this: &Self, other: &Self) -> bool {
        this.ptr == other.ptr
    }
}

impl<T> Clone for Weak<T> {
    fn clone(&self) -> Self {
        if let Some(ptr) = self.allocation() {
            // SAFETY: this handle keeps the allocation alive.
            let weak = unsafe { ArcInner::weak(ptr) };
            // Relaxed, as in `Arc`'s: the new handle is made from one that keeps the memory.
            if weak.fetch_add(1, Ordering::Relaxed) > MAX_WEAK {
                std::process::abort();
            }
        }
        Self { ptr: self.ptr }
    }
}

impl<T> Drop for Weak<T> {
    fn drop(&mut self) {
        if let Some(ptr) = self.allocation() {
            // SAFETY: this handle's weak reference, given up once. While strong references
            // remain they hold the weak count above one, so this never frees a live value.
            unsafe { ArcInner::drop_weak(ptr) };
        }
    }
}

impl<T> Default for Weak<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::test_util::Drops;

    #[test]
    fn is_send_and_sync_like_arc() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<BiasedArc<Vec<u8>>>();
        assert_send_sync::<BiasedArc<std::sync::Mutex<u8>>>();
    }

    #[test]
    fn clones_share_one_value_and_count_it() {
        let a = BiasedArc::new(String::from("shared"));
        let b = a.clone();
        assert!(BiasedArc::ptr_eq(&a, &b));
        assert_eq!(BiasedArc::strong_count(&a), 2);
        assert_eq!(*b, "shared");
        assert!(!BiasedArc::ptr_eq(
            &a,
            &BiasedArc::new(String::from("shared"))
        ));
        assert_eq!(
            a,
            BiasedArc::new(String::from("shared")),
            "equality compares values"
        );
    }

    #[test]
    fn into_raw_and_from_raw_round_trip_without_touching_the_count() {
        let drops = Drops::default();
        let a = BiasedArc::new(drops.track(4));
        let b = a.clone();
        let raw = BiasedArc::into_raw(b);
        assert_eq!(BiasedArc::strong_count(&a), 2);
        // SAFETY: `raw` came from `into_raw` and is passed back once.
        let b = unsafe { BiasedArc::from_raw(raw) };
        assert_eq!(b.check(), 4);
        drop((a, b));
        assert_eq!(drops.count(), 1);
    }

    #[test]
    fn get_mut_only_for_the_only_reference() {
        let mut a = BiasedArc::new(1);
        let b = a.clone();
        assert!(BiasedArc::get_mut(&mut a).is_none());
        drop(b);
        *BiasedArc::get_mut(&mut a).expect("unique") += 1;
        assert_eq!(*a, 2);
    }

    #[test]
    fn try_unwrap_gives_the_value_without_dropping_it() {
        let drops = Drops::default();
        let value = BiasedArc::try_unwrap(BiasedArc::new(drops.track(8)))
            .ok()
            .expect("unique");
        assert_eq!(drops.count(), 0);
        drop(value);
        assert_eq!(drops.count(), 1);
    }

    #[test]
    fn into_inner_gives_the_value_to_the_last_reference_only() {
        let drops = Drops::default();
        let a = BiasedArc::new(drops.track(1));
        let b = a.clone();
        assert!(BiasedArc::into_inner(a).is_none());
        assert_eq!(drops.count(), 0, "the value lives on in `b`");
        let value = BiasedArc::into_inner(b).expect("the last reference");
        assert_eq!(drops.count(), 0, "returned, not dropped");
        drop(value);
        assert_eq!(drops.count(), 1);
    }

    /// A drop that another thread queued to the owner before the owner's `into_inner` came
    /// first: the owner's reference is the last one, so it gets the value. Without merging first,
    /// the owner's decrement found the queued entry still holding a reference, answered `None`,
    /// and its next merge dropped the value.
    #[test]
    fn into_inner_on_the_owner_counts_drops_queued_before_it() {
        let drops = Drops::default();
        let owned = BiasedArc::new(drops.track(2));
        let remote = owned.clone();
        std::thread::spawn(move || drop(remote)).join().unwrap();
        let value = BiasedArc::into_inner(owned).expect("the queued drop came first");
        assert_eq!((value.check(), drops.count()), (2, 0));
        drop(value);
        assert_eq!(crate::merge_pending(), 0, "the entry was merged already");
        assert_eq!(drops.count(), 1);
    }

    /// Once the owner has exited, the last holder on another thread gets the value back. A plain
    /// decrement would queue, find the owner gone, settle the entry itself and drop the value.
    #[test]
    fn into_inner_after_the_owner_exited_gives_the_value_to_the_last_holder() {
        let drops = Drops::default();
        let tracked = drops.track(3);
        let (kept, other) = std::thread::spawn(move || {
            let owned = BiasedArc::new(tracked);
            (owned.clone(), owned)
        })
        .join()
        .unwrap();
        assert!(BiasedArc::into_inner(other).is_none());
        let value = BiasedArc::into_inner(kept).expect("the last reference");
        assert_eq!((value.check(), drops.count()), (3, 0));
    }

    /// While the owner lives and counts locally, another thread cannot know whether its handle
    /// is the last: its reference goes to the owner's queue, and the owner's merge drops the value.
    #[test]
    fn into_inner_on_another_thread_while_the_owner_counts_leaves_the_value_to_the_owner() {
        let drops = Drops::default();
        let remote = BiasedArc::new(drops.track(4));
        let got = std::thread::spawn(move || BiasedArc::into_inner(remote).is_some())
            .join()
            .unwrap();
        assert!(!got);
        assert_eq!(drops.count(), 0, "waiting in this thread's queue");
        assert_eq!(crate::merge_pending(), 1);
        assert_eq!(drops.count(), 1);
    }

    /// The race `into_inner` exists for: every holder calls it at once, and exactly one gets the
    /// value (here on a merged count, where every thread's answer is exact).
    #[test]
    fn racing_into_inner_calls_give_the_value_exactly_once() {
        for _ in 0..200 {
            let drops = Drops::default();
            let value = BiasedArc::new(drops.track(5));
            BiasedArc::give_up_ownership(&value);
            let handles: Vec<_> = (0..3).map(|_| value.clone()).collect();
            let threads: Vec<_> = handles
                .into_iter()
                .map(|h| std::thread::spawn(move || BiasedArc::into_inner(h).map(|v| v.check())))
                .collect();
            let mut got = usize::from(BiasedArc::into_inner(value).is_some());
            got += threads
                .into_iter()
                .map(|t| usize::from(t.join().unwrap().is_some()))
                .sum::<usize>();
            assert_eq!(got, 1, "exactly one holder gets the value");
            assert_eq!(drops.count(), 1);
        }
    }

    #[test]
    fn unwrap_or_clone_moves_a_unique_value_and_clones_a_shared_one() {
        let unique = BiasedArc::new(String::from("moved"));
        let moved = BiasedArc::unwrap_or_clone(unique);
        assert_eq!(moved, "moved");
        let shared = BiasedArc::new(vec![1, 2]);
        let other = shared.clone();
        assert_eq!(BiasedArc::unwrap_or_clone(shared), vec![1, 2]);
        assert_eq!(
            BiasedArc::strong_count(&other),
            1,
            "the clone's handle was dropped"
        );
    }

    #[test]
    fn make_mut_writes_in_place_when_unique_and_clones_when_shared() {
        let mut data = BiasedArc::new(String::from("a"));
        let before = BiasedArc::as_ptr(&data);
        BiasedArc::make_mut(&mut data).push('b');
        assert_eq!(
            BiasedArc::as_ptr(&data),
            before,
            "unique: no new allocation"
        );
        let other = data.clone();
        BiasedArc::make_mut(&mut data).push('c');
        assert_eq!((data.as_str(), other.as_str()), ("abc", "ab"));
        assert!(!BiasedArc::ptr_eq(&data, &other));
        assert_eq!(BiasedArc::strong_count(&data), 1);
        assert_eq!(BiasedArc::strong_count(&other), 1);
    }

    /// A handle moved to another thread is "maybe shared" there while its owner lives: the first
    /// `make_mut` copies it into an allocation that thread owns, and later calls are exact.
    #[test]
    fn make_mut_on_another_thread_copies_once_into_an_allocation_it_owns() {
        let moved = BiasedArc::new(vec![1]);
        let original = BiasedArc::as_ptr(&moved) as usize;
        std::thread::spawn(move || {
            let mut moved = moved;
            BiasedArc::make_mut(&mut moved).push(2);
            let copy = BiasedArc::as_ptr(&moved) as usize;
            assert_ne!(copy, original);
            BiasedArc::make_mut(&mut moved).push(3);
            assert_eq!(BiasedArc::as_ptr(&moved) as usize, copy);
            assert_eq!(*moved, [1, 2, 3]);
        })
        .join()
        .unwrap();
        crate::merge_pending();
    }

    #[test]
    fn a_weak_handle_upgrades_while_the_value_lives_and_not_after() {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(10));
        let weak = BiasedArc::downgrade(&strong);
        assert_eq!(
            (
                BiasedArc::strong_count(&strong),
                BiasedArc::weak_count(&strong)
            ),
            (1, 1)
        );
        assert_eq!((weak.strong_count(), weak.weak_count()), (1, 1));
        let again = weak.upgrade().expect("alive");
        assert!(BiasedArc::ptr_eq(&again, &strong));
        assert_eq!(weak.strong_count(), 2);
        drop((strong, again));
        assert_eq!(
            drops.count(),
            1,
            "the last strong handle drops the value, weak or not"
        );
        assert!(weak.upgrade().is_none());
        assert_eq!((weak.strong_count(), weak.weak_count()), (0, 0));
        // Dropping the weak handle frees the memory (Miri checks the leak).
        drop(weak);
    }

    #[test]
    fn weak_new_never_upgrades() {
        let weak: Weak<u8> = Weak::new();
        assert!(weak.upgrade().is_none());
        assert_eq!((weak.strong_count(), weak.weak_count()), (0, 0));
        assert!(Weak::ptr_eq(&weak, &weak.clone()));
        assert!(Weak::<u8>::default().upgrade().is_none());
    }

    #[test]
    fn weak_handles_are_counted_and_outlive_the_value() {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(11));
        let (a, b) = (BiasedArc::downgrade(&strong), BiasedArc::downgrade(&strong));
        let c = a.clone();
        assert_eq!(BiasedArc::weak_count(&strong), 3);
        drop(b);
        assert_eq!(c.weak_count(), 2);
        drop(strong);
        assert_eq!(drops.count(), 1);
        assert!(a.upgrade().is_none() && c.upgrade().is_none());
    }

    /// The race `Weak` must not lose: another thread upgrades while the owner drops its last
    /// strong handle. Either the upgrade lands first and its handle keeps the value alive, or it
    /// fails; the value is never used after it was dropped, and is dropped once.
    #[test]
    fn an_upgrade_on_another_thread_races_the_owners_last_drop() {
        for round in 0..500 {
            let drops = Drops::default();
            let strong = BiasedArc::new(drops.track(round));
            let weak = BiasedArc::downgrade(&strong);
            let upgrader = std::thread::spawn(move || {
                weak.upgrade().inspect(|value| {
                    assert_eq!(value.check(), round, "upgraded to a dropped value");
                })
            });
            drop(strong);
            let upgraded = upgrader.join().unwrap();
            assert_eq!(drops.count(), usize::from(upgraded.is_none()));
            drop(upgraded);
            crate::merge_pending();
            assert_eq!(drops.count(), 1);
        }
    }

    #[test]
    fn an_upgrade_on_the_owner_thread_counts_locally() {
        let strong = BiasedArc::new(1);
        let weak = BiasedArc::downgrade(&strong);
        let again = weak.upgrade().unwrap();
        assert_eq!(strong.count().owner_id(), again.count().owner_id());
        assert_eq!(BiasedArc::strong_count(&strong), 2);
        drop((strong, again));
        assert!(weak.upgrade().is_none());
    }

    /// The owner thread exits holding nothing; the value lives on in a handle elsewhere, and weak
    /// handles upgrade there until it is dropped.
    #[test]
    fn weak_handles_work_after_the_owner_exited() {
        let drops = Drops::default();
        let tracked = drops.track(12);
        let (strong, weak) = std::thread::spawn(move || {
            let strong = BiasedArc::new(tracked);
            let weak = BiasedArc::downgrade(&strong);
            (strong, weak)
        })
        .join()
        .unwrap();
        let again = weak.upgrade().expect("alive in `strong`");
        drop(strong);
        assert_eq!(again.check(), 12);
        drop(again);
        assert_eq!(drops.count(), 1);
        assert!(weak.upgrade().is_none());
    }

    /// The owner exits holding the last strong handle: the value is dropped on that thread, and
    /// weak handles elsewhere stop upgrading.
    #[test]
    fn the_owners_exit_with_the_last_strong_handle_ends_weak_upgrades() {
        let drops = Drops::default();
        let tracked = drops.track(13);
        let weak = std::thread::spawn(move || BiasedArc::downgrade(&BiasedArc::new(tracked)))
            .join()
            .unwrap();
        assert_eq!(drops.count(), 1);
        assert!(weak.upgrade().is_none());
    }

    /// A last strong handle dropped on another thread waits in the owner's queue, and the value
    /// lives until the owner merges it: a weak handle upgrades meanwhile (where `Arc`'s would
    /// not), and the value then lives on in the upgraded handle.
    #[test]
    fn a_weak_handle_upgrades_while_the_last_drop_waits_in_the_owners_queue() {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(14));
        let weak = BiasedArc::downgrade(&strong);
        std::thread::spawn(move || drop(strong)).join().unwrap();
        let revived = weak.upgrade().expect("not dead until merged");
        assert_eq!(crate::merge_pending(), 1);
        assert_eq!((drops.count(), revived.check()), (0, 14));
        drop(revived);
        assert_eq!(drops.count(), 1);
        assert!(weak.upgrade().is_none());
    }

    #[test]
    fn get_mut_refuses_while_a_weak_handle_exists() {
        let mut strong = BiasedArc::new(1);
        let weak = BiasedArc::downgrade(&strong);
        assert!(
            BiasedArc::get_mut(&mut strong).is_none(),
            "the weak handle could upgrade"
        );
        drop(weak);
        *BiasedArc::get_mut(&mut strong).unwrap() += 1;
        assert_eq!(*strong, 2);
    }

    #[test]
    fn try_unwrap_and_into_inner_end_weak_upgrades() {
        let strong = BiasedArc::new(String::from("a"));
        let weak = BiasedArc::downgrade(&strong);
        assert_eq!(BiasedArc::try_unwrap(strong).ok().as_deref(), Some("a"));
        assert!(weak.upgrade().is_none());

        let strong = BiasedArc::new(String::from("b"));
        let weak = BiasedArc::downgrade(&strong);
        assert_eq!(BiasedArc::into_inner(strong).as_deref(), Some("b"));
        assert!(weak.upgrade().is_none());
    }

    /// `try_unwrap` with a drop still queued leaves a husk for the queue's merge; weak handles
    /// must not upgrade to it, and the memory outlives them both.
    #[test]
    fn try_unwrap_of_a_queued_value_with_weak_handles_leaves_a_dead_husk() {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(15));
        let weak = BiasedArc::downgrade(&strong);
        let remote = strong.clone();
        std::thread::spawn(move || drop(remote)).join().unwrap();
        let value = BiasedArc::try_unwrap(strong).ok().expect("unique");
        assert!(weak.upgrade().is_none());
        assert_eq!(crate::merge_pending(), 1);
        assert_eq!((drops.count(), value.check()), (0, 15));
        drop(weak);
    }

    #[test]
    fn make_mut_disassociates_weak_handles() {
        let mut strong = BiasedArc::new(5);
        let weak = BiasedArc::downgrade(&strong);
        *BiasedArc::make_mut(&mut strong) += 1;
        assert_eq!(*strong, 6);
        assert!(weak.upgrade().is_none());
        assert_eq!(BiasedArc::weak_count(&strong), 0);
    }

    #[test]
    fn new_cyclic_hands_out_a_weak_handle_that_upgrades_once_built() {
        struct Node {
            me: Weak<Node>,
            _tracked: crate::test_util::Tracked,
        }
        let drops = Drops::default();
        let node = BiasedArc::new_cyclic(|me| {
            assert!(me.upgrade().is_none(), "not built yet");
            let elsewhere = me.clone();
            let upgraded = std::thread::spawn(move || elsewhere.upgrade().is_some())
                .join()
                .unwrap();
            assert!(!upgraded, "not built yet, on any thread");
            Node {
                me: me.clone(),
                _tracked: drops.track(16),
            }
        });
        let me = node.me.upgrade().expect("built");
        assert!(BiasedArc::ptr_eq(&me, &node));
        assert_eq!(
            (BiasedArc::strong_count(&node), BiasedArc::weak_count(&node)),
            (2, 1)
        );
        drop((me, node));
        assert_eq!(
            drops.count(),
            1,
            "a self-reference through `Weak` does not leak"
        );
    }

    #[test]
    fn new_cyclic_frees_the_memory_when_building_panics() {
        let outcome = std::panic::catch_unwind(|| {
            BiasedArc::<u8>::new_cyclic(|_| panic!("building failed"));
        });
        assert!(outcome.is_err());
    }

    #[test]
    fn immortal_values_are_never_dropped() {
        // Immortal values live as long as the program, so keep this one where leak checkers
        // (Miri's) expect such values: reachable from a static.
        static IMMORTAL: std::sync::OnceLock<BiasedArc<crate::test_util::Tracked>> =
            std::sync::OnceLock::new();
        let drops = Drops::default();
        let a = IMMORTAL.get_or_init(|| BiasedArc::new_immortal(drops.track(0)));
        let b = a.clone();
        assert_eq!(BiasedArc::strong_count(a), usize::MAX);
        assert_eq!(BiasedArc::ref_count(&b), RefCountValue::Immortal);
        drop(b.clone());
        drop(b);
        assert_eq!(drops.count(), 0);
        assert_eq!(a.check(), 0);
    }

    #[test]
    fn zero_sized_and_over_aligned_values_work() {
        #[repr(align(64))]
        struct Wide(u8);
        let unit = BiasedArc::new(());
        assert_eq!(BiasedArc::try_unwrap(unit.clone()).ok(), None);
        let wide = BiasedArc::new(Wide(3));
        assert_eq!(BiasedArc::as_ptr(&wide) as usize % 64, 0);
        assert_eq!(wide.0, 3);
    }
}
