//! `BiasedArc<T>`: `Arc`'s API over a biased count.
//!
//! Here: the handle and its operations. Beside it: [`inner`], the allocation (its layout,
//! allocation and freeing); [`weak`], the [`Weak`] handle; [`traits`], the conversions into a
//! `BiasedArc` and the standard traits it implements through its value.
//!
//! # Unsized values
//!
//! A sized value's allocation is an `ArcInner<T>` and nothing else, as it always was. An unsized
//! value's (`str`, `[T]`, `dyn Trait`) has a [`Prefix`] just before its `ArcInner`:
//!
//! ```text
//!  sized:                   count | weak | value
//!  unsized:  [pad] prefix | count | weak | value
//!                         ^ the handle points here, in both cases
//! ```
//!
//! The merge queues hold a thin pointer to the count and one release function per type, and an
//! unsized value cannot be dropped from a thin pointer: its release needs the length or the
//! vtable too. So the prefix holds the handle's own (wide) pointer while the value lives, and a
//! release that came through a queue reads it back from the count's address. Once the value is
//! dropped that pointer is no longer needed (every other user holds its own copy), and the prefix
//! holds the value's layout instead, for whoever frees the memory last: computing the layout
//! from the pointer would mean a reference to a dropped value (`Layout::for_value_raw` is
//! unstable). Whether a type is sized is a constant per type ([`is_sized`]), so a sized value's
//! paths compile to what they were, with no prefix and no extra work.

use std::alloc::Layout;
use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crate::biased::{self, BiasedCount, TakeUnique};
use crate::sync::{AtomicU32, Ordering};
use crate::RefCountValue;

mod inner;
mod traits;
mod weak;

use inner::{is_sized, with_address_of, ArcInner, Prefix, MAX_WEAK, WEAK_LOCKED};
pub use weak::Weak;

/// A thread-safe reference-counted pointer, like [`std::sync::Arc`], whose clones and drops on
/// the thread that created it use no atomic instructions.
///
/// Other threads clone and drop with one atomic operation each, as with `Arc`. See the
/// [crate documentation](crate) for when that trade pays off, and for the owner's merge queue:
/// when the last references die on other threads, the value is dropped on its owner thread at
/// its next safe point ([`BiasedArc::new`] or any other constructor, [`BiasedArc::merge_pending`]
/// or thread exit), or straight away on the dropping thread if the owner has exited.
///
/// **Constructors run other values' destructors.** Every constructor that counts (`new`,
/// `new_cyclic`, and the `From`, `FromIterator` and `Default` impls; not `new_immortal`) is a
/// safe point: it first drops, on the calling thread, the values of any type whose last handles
/// other threads dropped and handed back to it. So a constructor may run code of values it
/// never saw, and a panic in one of their destructors comes out of the constructor, as out of
/// `merge_pending`. Do not make a `BiasedArc` while holding a lock or a `RefCell` borrow that
/// one of this thread's shared values takes in its `Drop`: the drop would deadlock or panic
/// inside the constructor. (`Arc`'s constructors run no other code.) The same holds for
/// [`get_mut`](BiasedArc::get_mut), [`make_mut`](BiasedArc::make_mut) (whose copy is a new
/// value) and [`into_inner`](BiasedArc::into_inner), which merge the queue first (see each).
///
/// It is `Send` and `Sync` when `Arc<T>` would be and `T: 'static`, so values that must stay on
/// one thread stay there:
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
///
/// The `'static` is where it differs from `Arc`: a last drop on a thread that does not own the
/// value leaves the value to its owner's next safe point (above), and no lifetime says when that
/// is, so a value that borrows could be dropped after what it borrows. A value that borrows
/// stays on its thread, which drops it with its last handle:
///
/// ```compile_fail,E0597
/// fn assert_send<T: Send>(_: &T) {}
/// let borrowed = String::from("borrowed");
/// assert_send(&ftrt_refcount::BiasedArc::new(&borrowed));
/// ```
///
/// It differs again in how far it counts. `Arc` counts up to `isize::MAX` and aborts beyond it; a
/// `BiasedArc` whose count reaches a limit becomes immortal instead, as CPython's objects do: the
/// value is never dropped, [`strong_count`] reads `usize::MAX`, and [`get_mut`] and
/// [`try_unwrap`] fail from then on. The limits are 2^32 − 1 on the owner's count (its clones
/// less its drops, until they are merged) and 2^27 (134,217,728) either way on the shared count,
/// which holds other threads' clones less their drops, and the owner's count once merged into it
/// (by the owner's merge of queued drops, at [`BiasedArc::new`] or [`merge_pending`],
/// [`give_up_ownership`], or the owner's exit). Other threads' drops of clones the owner made
/// take the shared count below zero until the owner merges: 2^27 of them between two merges make
/// the value immortal with only a few references alive at any time.
///
/// [`give_up_ownership`]: BiasedArc::give_up_ownership
/// [`merge_pending`]: BiasedArc::merge_pending
/// [`strong_count`]: BiasedArc::strong_count
/// [`get_mut`]: BiasedArc::get_mut
/// [`try_unwrap`]: BiasedArc::try_unwrap
pub struct BiasedArc<T: ?Sized> {
    ptr: NonNull<ArcInner<T>>,
    _owns: PhantomData<ArcInner<T>>,
}

// SAFETY: as for `Arc<T>`: clones on several threads give shared access to `T` (so `T: Sync`),
// and whichever thread settles the count drops `T` (so `T: Send`). The count itself is
// thread-safe: the non-atomic half is only touched by the owner thread. Unlike `Arc<T>`, the
// last drop on another thread can leave the value to its owner's next safe point, which no
// lifetime bounds: so `T: 'static`, or the value could be dropped after what it borrows.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for BiasedArc<T> {}
// SAFETY: as above; `&BiasedArc<T>` lets another thread clone it.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for BiasedArc<T> {}

/// Ends a `BiasedArc` allocation whose count has reached zero: drops the value (on the calling
/// thread) and gives up the strong references' weak reference, which frees the memory unless
/// [`Weak`] handles remain. What the merge queues call, with the count's address.
///
/// # Safety
/// `count` is the count of an `ArcInner<T>` (it heads the `ArcInner`) that no strong reference
/// or queue entry points at any more, with the allocation's provenance.
unsafe fn release<T: ?Sized>(count: NonNull<BiasedCount>) {
    // SAFETY: the count heads a live `ArcInner<T>` whose value has not been dropped: this is the
    // one release of that allocation.
    unsafe { release_inner(ArcInner::<T>::from_count(count)) }
}

/// [`release`], given the allocation's pointer.
///
/// # Safety
/// As for [`release`].
#[inline(always)]
unsafe fn release_inner<T: ?Sized>(inner: NonNull<ArcInner<T>>) {
    if !is_sized::<T>() {
        // The last use of the prefix's pointer (the one release reads it before this): from now
        // on it holds what the memory's last user needs to free it. An unsized value is always
        // still in place here: only `try_unwrap` moves a value out (leaving a husk), and it
        // needs `T: Sized`.
        // SAFETY: the value is alive; nobody else reads or writes the prefix now (the weak
        // references read it only once this thread has given up the strong references' one).
        unsafe {
            let value_layout = Layout::for_value(&(*inner.as_ptr()).value);
            ArcInner::prefix(inner).write(Prefix { value_layout });
        }
    }
    // SAFETY: the count is alive until the allocation is freed below.
    if !unsafe { ArcInner::count(inner) }.is_husk() {
        // A husk's value was moved out by `try_unwrap`; otherwise it is still in place, and no
        // strong reference can reach it any more (weak upgrades fail on the dead count).
        // The strong references' weak reference goes with the guard, after the drop or as it
        // unwinds: a value whose destructor panics still has its memory freed, as `Arc`'s does.
        let _strong_references_weak = GiveUpWeak(inner);
        // SAFETY: the value is in place and unreachable (above); it is dropped exactly once,
        // here, and the guard frees the memory only after.
        unsafe { ptr::drop_in_place(ptr::addr_of_mut!((*inner.as_ptr()).value)) };
    } else {
        // SAFETY: the strong references' weak reference, given up once, here.
        unsafe { ArcInner::drop_weak(inner) };
    }
}

impl<T> BiasedArc<T> {
    /// Allocates `value`, owned by the calling thread. Also merges the calling thread's queue if
    /// other threads have queued objects for it: a safe point, which may drop other values (see
    /// [`BiasedArc`]).
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
    /// A safe point, before `data_fn` runs (see [`BiasedArc`]).
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
}

impl<T: ?Sized> BiasedArc<T> {
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
    /// snapshot when other threads make or drop them. One more while another thread's
    /// [`into_inner`](Self::into_inner) or [`try_unwrap`](Self::try_unwrap) is under way: each
    /// holds a weak reference of its own for the call.
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
        unsafe { ArcInner::add_weak(this.ptr) };
        Weak { ptr: this.ptr }
    }

    /// Whether this handle is the only reference, no [`Weak`] handle exists and no queued drop
    /// holds the value, as far as the calling thread can tell exactly (see
    /// [`BiasedCount::is_unique_with_no_queued_drop`]). Like `Arc`'s check, it locks the weak
    /// count for the time it reads the strong one, so that no weak handle can be made, or
    /// upgrade, in between.
    ///
    /// A queued drop's reference keeps the value alive until the owner merges it, and handles
    /// are covariant in `T`: a value typed to borrow for `'static` can be given a shorter
    /// borrow through `get_mut` or `make_mut`, and must then be dropped with the last handle,
    /// while that borrow lasts, not at a later merge. So the thread merges what other threads
    /// queued to it first, if it owns the count or the count has a drop queued (as `new` and
    /// `into_inner` merge; it may run other values' destructors), and a count whose queued drop
    /// waits in another thread's queue reads as shared.
    fn is_unique(this: &Self) -> bool {
        // Before the weak count is locked: a destructor the merge runs may downgrade.
        this.count().merge_queued_here();
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
        let unique = this.count().is_unique_with_no_queued_drop();
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
        // Addresses only, as `Arc::ptr_eq`: two pointers to one `dyn` value may carry different
        // copies of its vtable.
        ptr::addr_eq(this.ptr.as_ptr(), other.ptr.as_ptr())
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
    /// Unless `T: Send + Sync + 'static` (the bound on `BiasedArc`'s and `Weak`'s `Send` and
    /// `Sync`, which a raw pointer escapes), the calling thread is the one that made the value:
    /// a handle's last drop on another thread hands the value to the thread that made it, which
    /// drops it at its next merge, later than the borrows in `T` may live, and on a thread that
    /// `T` may not be sent to.
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        Self {
            // SAFETY: `ptr` came from `into_raw`, and the reference it carries keeps the
            // allocation alive.
            ptr: unsafe { inner_of_value(ptr) },
            _owns: PhantomData,
        }
    }

    /// Adds a strong reference to the value `ptr` points at, as cloning the handle it came from
    /// and leaking the clone would; like `Arc::increment_strong_count`, for code that passes
    /// values around as raw pointers (across an FFI boundary).
    ///
    /// # Safety
    /// `ptr` came from `BiasedArc::<T>::into_raw` (same `T`), and the reference it carries has
    /// not been given back yet (so the value is alive for the whole call).
    pub unsafe fn increment_strong_count(ptr: *const T) {
        // SAFETY: per the caller; the handle is not dropped, so the reference `ptr` carries stays.
        let this = ManuallyDrop::new(unsafe { Self::from_raw(ptr) });
        let _clone = ManuallyDrop::new(BiasedArc::clone(&this));
    }

    /// Drops a strong reference to the value `ptr` points at, as `from_raw` and dropping the
    /// handle would: the value is dropped if that was the last one (on this thread, or at its
    /// owner's merge, as any drop).
    ///
    /// # Safety
    /// `ptr` came from `BiasedArc::<T>::into_raw` (same `T`) and carries the reference given up
    /// here (each reference is given up once).
    /// Unless `T: Send + Sync + 'static` (the bound on `BiasedArc`'s and `Weak`'s `Send` and
    /// `Sync`, which a raw pointer escapes), the calling thread is the one that made the value:
    /// a handle's last drop on another thread hands the value to the thread that made it, which
    /// drops it at its next merge, later than the borrows in `T` may live, and on a thread that
    /// `T` may not be sent to.
    pub unsafe fn decrement_strong_count(ptr: *const T) {
        // SAFETY: per the caller.
        drop(unsafe { Self::from_raw(ptr) });
    }

    /// A mutable reference to the value if this is the only reference. The drops other threads
    /// queued back to the calling thread are merged first where they may concern this value
    /// (which may run other values' destructors, as [`new`](Self::new) does); a drop still
    /// waiting in another thread's queue makes the answer `None`, since that drop's merge, not
    /// this handle's, would drop the value.
    ///
    /// `Some` is always right. `None` means "maybe shared": on a thread that does not own the
    /// value, the answer is `None` for as long as the owning thread (the one that created it)
    /// lives and still counts it locally, even if this is in fact the only handle, because the
    /// owner's local count changes without atomics and cannot be read exactly from another
    /// thread. Unlike `Arc::get_mut`, a handle *moved* to another thread is therefore not unique
    /// there until the owner calls [`give_up_ownership`](Self::give_up_ownership) on it (best
    /// before sending it), or exits, or calls [`biased::detach_current_thread`]. On the owning
    /// thread, and once the count is merged, the answer is exact, but for one case: while
    /// another thread's [`into_inner`](Self::into_inner) or [`try_unwrap`](Self::try_unwrap)
    /// of the last other handle is under way, that call holds a weak reference of its own (so
    /// that the memory outlives its decision), and this handle reads as shared until it ends.
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
            // handle's reference was the only one, no queue entry held one and no weak handle
            // existed; `&mut this` stops new ones being made. So nothing else reads the value
            // while the `&mut` lives, and the value is dropped with this handle, before any
            // borrow written into it ends.
            Some(unsafe { &mut (*this.ptr.as_ptr()).value })
        } else {
            None
        }
    }
}

impl<T> BiasedArc<T> {
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
        // A weak reference of this call's own, held until the value is moved out. Should the
        // count end as a husk, the pending queue entry's merge may run on another thread the
        // moment the husk is visible, and give up the strong references' weak reference there
        // (see `release`): without this one, it would free the memory under the move. With it,
        // whichever of the two finishes last frees it. Not a `Weak` handle: it never upgrades,
        // so the count needs no mark.
        // SAFETY: `this` holds a strong reference.
        unsafe { ArcInner::add_weak(this.ptr) };
        // SAFETY: `this` holds a reference, and is not used after `Free`/`LeftToQueue`.
        let taken = unsafe { this.count().try_take_unique() };
        // SAFETY: `taken` is what the count just answered, and this call holds its own weak
        // reference.
        match unsafe { Self::value_if_taken(this.ptr, taken) } {
            Some(value) => Ok(value),
            None => Err(ManuallyDrop::into_inner(this)),
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
    /// caller got `None`. An owner that retires while the call runs counts as living: the
    /// handle's reference may then be queued to it, and settled by this thread, which drops the
    /// value and answers `None`. On the owning thread, drops that other threads queued before
    /// this call are merged first, so they count as having come first.
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
        // Merged while `this` is still an ordinary handle: the merge runs other values'
        // destructors, and should one panic, `this` drops as usual on the way out.
        this.count().merge_queued_to_owner();
        let this = ManuallyDrop::new(this);
        // A weak reference of this call's own, held until the value is moved out, as in
        // `try_unwrap`: should the count end as a husk, the pending entry's merge may free the
        // memory the moment the husk is visible.
        // SAFETY: `this` holds a strong reference.
        unsafe { ArcInner::add_weak(this.ptr) };
        let count = this.ptr.cast::<BiasedCount>();
        // A decrement queued to a parked owner may merge that owner's queue, which runs other
        // values' destructors: should one panic, the guard gives up this call's weak reference
        // (the strong one is given up by then).
        let unwinding = GiveUpWeak(this.ptr);
        // SAFETY: this handle's reference is given up here, as in `drop`, and the handle is not
        // used afterwards except as the answer says; `release::<T>` frees exactly this kind of
        // allocation.
        let taken = unsafe { BiasedCount::decref_taking(count, release::<T>) };
        mem::forget(unwinding);
        // SAFETY: `taken` is what the count just answered, and this call holds its own weak
        // reference.
        unsafe { Self::value_if_taken(this.ptr, taken) }
    }

    /// The end of [`try_unwrap`](Self::try_unwrap) and [`into_inner`](Self::into_inner), after
    /// the count's answer `taken`: the value moved out (`Free`, `LeftToQueue`) or `None`
    /// (`Shared`); the caller's own weak reference, taken before the count answered, given up.
    ///
    /// # Safety
    /// `taken` is what [`BiasedCount::try_take_unique`] or [`BiasedCount::decref_taking`] just
    /// answered for `ptr`'s count, and the caller holds a weak reference of its own (no `Weak`
    /// handle: the count needs no mark), which it gives up here.
    unsafe fn value_if_taken(ptr: NonNull<ArcInner<T>>, taken: TakeUnique) -> Option<T> {
        let value = match taken {
            TakeUnique::Shared => None,
            // SAFETY: that was the last reference and no queue entry points at the allocation;
            // weak upgrades fail on the count from now on. The value is ours to move out, and
            // the strong references' weak reference ours to give up (`take_and_free` does).
            TakeUnique::Free => Some(unsafe { Self::take_and_free(ptr) }),
            TakeUnique::LeftToQueue => {
                #[cfg(test)]
                if let Some(hook) = hooks::BEFORE_HUSK_MOVE.take() {
                    hook();
                }
                // SAFETY: the count is now a husk: the value is ours to move out, the pending
                // merge frees only the memory (see `release`), and the caller's weak reference
                // keeps that memory until the move is done.
                Some(unsafe { ptr::read(ptr::addr_of!((*ptr.as_ptr()).value)) })
            }
        };
        // SAFETY: the caller's weak reference, given up once: the last (freeing the memory) if
        // every other was given up meanwhile (the strong references' by `take_and_free`, by a
        // husk's merge, or by the last strong reference's release on another thread).
        unsafe { ArcInner::drop_weak(ptr) };
        value
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
}

impl<T: ?Sized> BiasedArc<T> {
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

    /// [`clone`](Clone::clone), counting as `owner`, the calling thread's token from
    /// [`biased::with_current_owner`]: the same count, without loading the thread's id. For
    /// loops that clone and drop many values; any other token is correct too (it owns nothing
    /// `BiasedArc` made, so it counts on the shared side, at the cost of an atomic operation).
    #[inline]
    pub fn clone_for(this: &Self, owner: biased::Owner<'_>) -> Self {
        this.count().incref_for(owner);
        Self {
            ptr: this.ptr,
            _owns: PhantomData,
        }
    }

    /// Drops `this`, counting as `owner`, like [`clone_for`](Self::clone_for). With a token that
    /// does not own the count, on the thread that does, it drops as [`drop`](Drop::drop) does: a
    /// drop is never put off because of the token it was given (see
    /// [`BiasedCount::decref_for`]).
    #[inline]
    pub fn drop_for(this: Self, owner: biased::Owner<'_>) {
        let this = ManuallyDrop::new(this);
        let count = this.ptr.cast::<BiasedCount>();
        // SAFETY: as in `Drop::drop`: this handle's reference is given up here (the handle is
        // not dropped again), and `release::<T>` frees exactly this kind of allocation.
        if unsafe { BiasedCount::decref_for(count, owner, release::<T>) } {
            // SAFETY: that was the last reference and no queue entry remains.
            unsafe { release_inner(this.ptr) };
        }
    }
}

/// Gives up one weak reference when dropped, on a return or an unwind alike: the strong
/// references' one as the value is dropped (`release_inner`), [`BiasedArc::into_inner`]'s own
/// should the count's decision unwind (forgotten where another path gives it up).
struct GiveUpWeak<T: ?Sized>(NonNull<ArcInner<T>>);

impl<T: ?Sized> Drop for GiveUpWeak<T> {
    fn drop(&mut self) {
        // SAFETY: whoever made the guard holds that weak reference and gives it up through the
        // guard alone, once; it kept the allocation alive until now.
        unsafe { ArcInner::drop_weak(self.0) };
    }
}

/// The allocation whose value `ptr` points at.
///
/// # Safety
/// `ptr` points at the `value` field of a live `ArcInner<T>` allocation (the value itself may
/// have been dropped: only the pointer's metadata is read).
unsafe fn inner_of_value<T: ?Sized>(ptr: *const T) -> NonNull<ArcInner<T>> {
    // The value's offset in `ArcInner<T>` (`repr(C)`): the first multiple of its alignment
    // after the counts. A constant for a sized value; an unsized one's alignment comes from its
    // metadata (a slice's length or a vtable, carried by the pointer, not read from memory).
    // SAFETY: the allocation is live, so the place is dereferenceable; `for_value` reads no byte
    // of it.
    let value_layout = Layout::for_value(unsafe { &*ptr });
    let offset = match Layout::new::<ArcInner<()>>().extend(value_layout) {
        Ok((_, offset)) => offset,
        // The allocation exists, so its layout did not overflow.
        Err(_) => unreachable!(),
    };
    // SAFETY: `ptr` points at the `value` field of an `ArcInner<T>`, so stepping back by that
    // field's offset stays inside the same allocation, with its provenance; the cast keeps the
    // metadata.
    let inner = unsafe { ptr.byte_sub(offset) } as *mut ArcInner<T>;
    // SAFETY: derived from a non-null allocation pointer.
    unsafe { NonNull::new_unchecked(inner) }
}

impl<T: ?Sized> Clone for BiasedArc<T> {
    #[inline]
    fn clone(&self) -> Self {
        self.count().incref();
        Self {
            ptr: self.ptr,
            _owns: PhantomData,
        }
    }
}

impl<T: ?Sized> Drop for BiasedArc<T> {
    #[inline]
    fn drop(&mut self) {
        let count = self.ptr.cast::<BiasedCount>();
        // SAFETY: this handle's reference is given up here; `release::<T>` frees exactly this
        // kind of allocation, from any thread (`T: Send` whenever the handle can cross threads).
        if unsafe { BiasedCount::decref(count, release::<T>) } {
            // SAFETY: that was the last reference and no queue entry remains.
            unsafe { release_inner(self.ptr) };
        }
    }
}

impl<T: ?Sized> Deref for BiasedArc<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: this handle keeps the allocation alive; shared access only.
        unsafe { &self.ptr.as_ref().value }
    }
}

impl<T: ?Sized> AsRef<T> for BiasedArc<T> {
    fn as_ref(&self) -> &T {
        self
    }
}

impl<T: ?Sized> Borrow<T> for BiasedArc<T> {
    fn borrow(&self) -> &T {
        self
    }
}

/// Test hooks, so a test can run a queue's merge in the one window that matters for
/// `try_unwrap` (between the count's end and the value's move) and see whether the memory was
/// freed in it, instead of hoping a scheduler produces that interleaving.
#[cfg(test)]
mod hooks {
    use std::cell::Cell;

    thread_local! {
        /// Run once by `try_unwrap`, on this thread, right before it moves a husk's value out.
        pub(super) static BEFORE_HUSK_MOVE: Cell<Option<fn()>> = const { Cell::new(None) };
        /// Allocations freed on this thread.
        pub(super) static FREED: Cell<usize> = const { Cell::new(0) };
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
