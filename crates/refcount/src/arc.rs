//! `BiasedArc<T>`: `Arc`'s API over a biased count.
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

use std::alloc::{self, Layout};
use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ops::Deref;
use std::ptr::{self, NonNull};

use crate::biased::{self, BiasedCount, TakeUnique};
use crate::sync::{fence, spin_hint, AtomicU32, Ordering};
use crate::RefCountValue;

/// The allocation: the count first (so a pointer to the count is a pointer to the allocation,
/// which is what the merge queues hold), the weak count, then the value. The count's 12 bytes
/// and the weak count's 4 make the 16 bytes `Arc` has before the value too. An unsized value's
/// `ArcInner` has a [`Prefix`] before it (see the module documentation).
#[repr(C)]
struct ArcInner<T: ?Sized> {
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

/// Whether `T` is sized, i.e. whether a pointer to it is thin. A constant for each type, so
/// every branch on it is decided at compile time. (Extern types, thin but unsized, are unstable
/// and cannot be named here.)
#[inline(always)]
const fn is_sized<T: ?Sized>() -> bool {
    mem::size_of::<*const T>() == mem::size_of::<*const ()>()
}

/// What sits just before an unsized value's `ArcInner` (never a sized one's).
#[repr(C)]
union Prefix<T: ?Sized> {
    /// While the value lives: the pointer its handles hold, for a release that only has the
    /// count's address (a merge queue entry's).
    inner: NonNull<ArcInner<T>>,
    /// Once the value is dropped: its layout, from which the last weak reference's drop finds
    /// the allocation's start and layout ([`layout_for`]).
    value_layout: Layout,
}

/// The layout of the allocation for a value of layout `value`, and the offset of the `ArcInner`
/// in it: 0 for a sized value (the layout is `ArcInner<T>`'s, as a `Box` allocates it), after a
/// [`Prefix`] for an unsized one. `ArcInner` is `repr(C)`: its value starts at the first multiple
/// of the value's alignment after the 16 bytes of counts, as `Layout::extend` computes it. The
/// prefix ends exactly where the `ArcInner` starts (any padding goes before the prefix), so that
/// it can be found from the count's address alone.
fn layout_for<T: ?Sized>(value: Layout) -> (Layout, usize) {
    let counts = Layout::new::<ArcInner<()>>();
    let layout = counts.extend(value).and_then(|(inner, _)| {
        let inner = inner.pad_to_align();
        if is_sized::<T>() {
            return Ok((inner, 0));
        }
        // `extend` puts the `ArcInner` at the first multiple of its alignment after the
        // prefix. Alignments are powers of two and the prefix's size (two words) is one too:
        // when the `ArcInner`'s alignment is at most that size, the offset is the size and the
        // prefix starts at 0; otherwise the offset is that alignment, a multiple of the
        // prefix's size and alignment, so the prefix just before it is aligned too.
        let (layout, offset) = Layout::new::<Prefix<T>>().extend(inner)?;
        Ok((layout.pad_to_align(), offset))
    });
    match layout {
        Ok(layout) => layout,
        Err(_) => capacity_overflow(),
    }
}

#[cold]
fn capacity_overflow() -> ! {
    panic!("BiasedArc: allocation size overflow")
}

impl<T: ?Sized> ArcInner<T> {
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

    /// The prefix of an unsized value's allocation.
    ///
    /// # Safety
    /// `T` is unsized and `this` points into a live allocation (which then has a prefix), with
    /// the allocation's provenance.
    unsafe fn prefix(this: NonNull<Self>) -> *mut Prefix<T> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::prefix_before(this.cast::<BiasedCount>()) }
    }

    /// The prefix of the unsized value's allocation whose count is at `count` (the start of its
    /// `ArcInner`).
    ///
    /// # Safety
    /// As for [`prefix`](Self::prefix).
    unsafe fn prefix_before(count: NonNull<BiasedCount>) -> *mut Prefix<T> {
        debug_assert!(!is_sized::<T>());
        // SAFETY: the prefix ends where the `ArcInner` starts, inside the same allocation
        // (`layout_for`), and the pointer carries the allocation's provenance.
        unsafe { count.as_ptr().cast::<Prefix<T>>().sub(1) }
    }

    /// The pointer to the allocation whose count is at `count`, as its handles hold it.
    ///
    /// # Safety
    /// `count` is the count of a live `ArcInner<T>` (with the allocation's provenance), and if
    /// `T` is unsized its value has not been dropped yet.
    #[inline(always)]
    unsafe fn from_count(count: NonNull<BiasedCount>) -> NonNull<Self> {
        if is_sized::<T>() {
            // SAFETY: both are thin pointers (`is_sized`), and the count is at offset 0 of the
            // `ArcInner` (`repr(C)`, first field): the same address, with the same provenance.
            unsafe { mem::transmute_copy::<NonNull<BiasedCount>, NonNull<Self>>(&count) }
        } else {
            // SAFETY: an unsized value's allocation has a prefix that holds the pointer while the
            // value lives; the count is at offset 0 of the `ArcInner`, which the prefix precedes.
            unsafe { (*Self::prefix_before(count)).inner }
        }
    }

    /// Takes one more weak reference, waiting out another handle's uniqueness check
    /// ([`WEAK_LOCKED`]); aborts past [`MAX_WEAK`], as `Arc` does.
    ///
    /// # Safety
    /// The caller holds a strong reference to the allocation (so the weak count cannot be zero,
    /// and a new weak reference is allowed: see [`drop_weak`](Self::drop_weak)).
    unsafe fn add_weak(this: NonNull<Self>) {
        // SAFETY: the caller's strong reference keeps the allocation alive.
        let weak = unsafe { Self::weak(this) };
        let mut current = weak.load(Ordering::Relaxed);
        loop {
            if current == WEAK_LOCKED {
                // Another handle's `get_mut` is checking uniqueness (and will fail: the caller's
                // handle is a second reference). It holds the lock for a few loads.
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
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Gives up one weak reference (a [`Weak`]'s, the strong references' shared one, or
    /// `try_unwrap`'s own), freeing the memory when it was the last. The value must already be
    /// dropped or moved out if this may be the last (a caller that also holds a strong reference
    /// never gives up the last one).
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
        #[cfg(test)]
        hooks::FREED.set(hooks::FREED.get() + 1);
        if is_sized::<T>() {
            // SAFETY: the last reference of any kind: nothing else points at the allocation,
            // which came from a `Box` of this layout (`ManuallyDrop<T>` has `T`'s), or from
            // `allocate` with the same layout (`layout_for`), as a `Box` may be freed; the
            // value is gone already, so only the memory is freed.
            drop(unsafe { Box::from_raw(this.as_ptr() as *mut ArcInner<ManuallyDrop<T>>) });
        } else {
            // SAFETY: the value was dropped by `release`, which wrote its layout into the prefix
            // first; the acquire above (or this thread having written it) makes it visible.
            let value_layout = unsafe { (*Self::prefix(this)).value_layout };
            let (layout, offset) = layout_for::<T>(value_layout);
            // SAFETY: the last reference of any kind; the allocation starts `offset` bytes
            // before the `ArcInner` and was made with `layout` (`allocate`).
            unsafe { alloc::dealloc(this.as_ptr().cast::<u8>().sub(offset), layout) };
        }
    }
}

impl<T: ?Sized> ArcInner<T> {
    /// Allocates the memory for a value of layout `value_layout`, with a count of one owned by
    /// the calling thread, a weak count of one and (for an unsized value) the prefix filled in;
    /// the caller writes the value at the returned pointer's `value` field. `wide` makes the
    /// pointer to the `ArcInner` from its address (giving it the value's length or vtable). A
    /// sized value's allocation is the one `Box<ArcInner<T>>` makes, as `BiasedArc::new`'s.
    ///
    /// If the caller does not write the value, it frees the memory with
    /// [`free_unwritten`](Self::free_unwritten).
    fn allocate(value_layout: Layout, wide: impl FnOnce(*mut u8) -> *mut Self) -> NonNull<Self> {
        // Before allocating: merging the thread's queue runs destructors, which may panic.
        let count = BiasedCount::new();
        let (layout, offset) = layout_for::<T>(value_layout);
        // SAFETY: the layout holds at least the counts, so it is never zero-sized.
        let base = unsafe { alloc::alloc(layout) };
        if base.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: `offset` is inside the allocation (`layout_for`).
        let inner = wide(unsafe { base.add(offset) });
        debug_assert_eq!(inner.cast::<u8>(), base.wrapping_add(offset));
        // SAFETY: inside a fresh allocation, so not null.
        let inner = unsafe { NonNull::new_unchecked(inner) };
        // SAFETY: the prefix and the counts are inside the fresh allocation and aligned
        // (`layout_for`); nothing reads them before they are written here.
        unsafe {
            if !is_sized::<T>() {
                Self::prefix(inner).write(Prefix { inner });
            }
            ptr::addr_of_mut!((*inner.as_ptr()).count).write(count);
            ptr::addr_of_mut!((*inner.as_ptr()).weak).write(AtomicU32::new(1));
        }
        inner
    }

    /// Frees an allocation from [`allocate`](Self::allocate) whose value was never (completely)
    /// written, without dropping anything.
    ///
    /// # Safety
    /// `this` came from `allocate` with `value_layout`, and nothing else points at it.
    unsafe fn free_unwritten(this: NonNull<Self>, value_layout: Layout) {
        let (layout, offset) = layout_for::<T>(value_layout);
        // SAFETY: as in `drop_weak`: the allocation starts `offset` bytes before the `ArcInner`.
        unsafe { alloc::dealloc(this.as_ptr().cast::<u8>().sub(offset), layout) };
    }
}

impl<T> ArcInner<[T]> {
    /// [`allocate`](Self::allocate) for a slice of `len` elements.
    fn allocate_slice(len: usize) -> NonNull<Self> {
        let Ok(value_layout) = Layout::array::<T>(len) else {
            capacity_overflow()
        };
        Self::allocate(value_layout, |address| {
            ptr::slice_from_raw_parts_mut(address.cast::<T>(), len) as *mut Self
        })
    }

    /// The slice's first element.
    fn elements(this: NonNull<Self>) -> *mut T {
        // SAFETY: a place projection inside the allocation; no reference is made.
        unsafe { ptr::addr_of_mut!((*this.as_ptr()).value) }.cast::<T>()
    }
}

/// `source` with its address replaced by `address` and its metadata (length or vtable) kept,
/// carrying `address`'s provenance. `ptr::with_metadata_of` and `ptr::from_raw_parts` do this
/// but are unstable; this overwrites the address half of a copy of the wide pointer, which
/// every target rustc supports lays out address first (std's `Rc` and `Arc` relied on the same
/// before those functions existed). The layout is checked before the write and the result
/// after it: a layout that differed would panic here, before the pointer is used.
fn with_address_of<T: ?Sized>(source: *mut T, address: *mut u8) -> *mut T {
    let mut wide = MaybeUninit::new(source);
    let first_word = wide.as_mut_ptr().cast::<*mut u8>();
    // SAFETY: a wide pointer is two words, the first at offset 0: reading it as a pointer reads
    // initialized bytes (an integer read as a pointer is allowed, and gets no provenance).
    let before = unsafe { first_word.read() };
    assert!(
        before == source.cast::<u8>(),
        "wide pointers lay out their address first"
    );
    // SAFETY: that word is the address (checked above); the metadata is untouched, so the
    // pointer stays valid for its type.
    unsafe { first_word.write(address) };
    // SAFETY: initialized by `new`, and a valid pointer still.
    let moved = unsafe { wide.assume_init() };
    // Same metadata as `source`: moving back by the distance gives `source` (wide pointers
    // compare their metadata too).
    let distance = source.cast::<u8>().addr().wrapping_sub(address.addr());
    assert!(
        moved.cast::<u8>() == address && ptr::eq(moved.wrapping_byte_add(distance), source),
        "wide pointers lay out their address first"
    );
    moved
}

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

impl<T> From<T> for BiasedArc<T> {
    /// [`BiasedArc::new`]: a safe point (see [`BiasedArc`]).
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T: Default> Default for BiasedArc<T> {
    /// [`BiasedArc::new`] of `T`'s default: a safe point (see [`BiasedArc`]).
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: ?Sized + fmt::Display> fmt::Display for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&**self, f)
    }
}

impl<T: ?Sized> fmt::Pointer for BiasedArc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Pointer::fmt(&Self::as_ptr(self), f)
    }
}

impl<T: ?Sized + PartialEq> PartialEq for BiasedArc<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: ?Sized + Eq> Eq for BiasedArc<T> {}

impl<T: ?Sized + PartialOrd> PartialOrd for BiasedArc<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        (**self).partial_cmp(&**other)
    }
}

impl<T: ?Sized + Ord> Ord for BiasedArc<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (**self).cmp(&**other)
    }
}

impl<T: ?Sized + Hash> Hash for BiasedArc<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (**self).hash(state)
    }
}

// Unsized values. `CoerceUnsized` is unstable, so a `BiasedArc<Concrete>` cannot coerce to a
// `BiasedArc<dyn Trait>` as an `Arc` does; `From<Box<T>>` is the way to a trait object.

impl<T: ?Sized> From<Box<T>> for BiasedArc<T> {
    /// Moves a boxed value into a new allocation owned by the calling thread, and frees the box
    /// (without dropping the value). The way to a `BiasedArc<dyn Trait>`, since unsized coercion
    /// (`CoerceUnsized`) is unstable. A safe point, as every counting constructor (see
    /// [`BiasedArc`]).
    ///
    /// ```
    /// use ftrt_refcount::BiasedArc;
    /// use std::fmt::Display;
    ///
    /// let shown: BiasedArc<dyn Display + Send + Sync> = BiasedArc::from(Box::new(7) as Box<_>);
    /// assert_eq!(shown.to_string(), "7");
    /// let words: BiasedArc<[&str]> = BiasedArc::from(vec!["a", "b"].into_boxed_slice());
    /// assert_eq!(words.len(), 2);
    /// ```
    fn from(boxed: Box<T>) -> Self {
        let value_layout = Layout::for_value::<T>(&boxed);
        let metadata = ptr::addr_of!(*boxed).cast_mut() as *mut ArcInner<T>;
        let inner =
            ArcInner::<T>::allocate(value_layout, |address| with_address_of(metadata, address));
        let source = Box::into_raw(boxed);
        // SAFETY: the box's value is moved, bytes for bytes, into the fresh allocation's value
        // field, which has its layout; the box then frees its memory without dropping the value
        // (`ManuallyDrop<T>` has `T`'s layout, as the box allocated it).
        unsafe {
            ptr::copy_nonoverlapping(
                source.cast::<u8>(),
                ptr::addr_of_mut!((*inner.as_ptr()).value).cast::<u8>(),
                value_layout.size(),
            );
            drop(Box::from_raw(source as *mut ManuallyDrop<T>));
        }
        Self {
            ptr: inner,
            _owns: PhantomData,
        }
    }
}

impl<T> From<Vec<T>> for BiasedArc<[T]> {
    /// Moves the elements into a new allocation owned by the calling thread and frees the
    /// vector's buffer. A safe point, as every counting constructor (see [`BiasedArc`]).
    fn from(vec: Vec<T>) -> Self {
        let inner = ArcInner::<[T]>::allocate_slice(vec.len());
        let mut vec = ManuallyDrop::new(vec);
        // SAFETY: the elements move to the fresh allocation, which has room for exactly them;
        // the vector then forgets them and frees only its buffer.
        unsafe {
            ptr::copy_nonoverlapping(vec.as_ptr(), ArcInner::elements(inner), vec.len());
            vec.set_len(0);
            ManuallyDrop::drop(&mut vec);
        }
        Self {
            ptr: inner,
            _owns: PhantomData,
        }
    }
}

impl<T: Clone> From<&[T]> for BiasedArc<[T]> {
    /// Clones the elements into a new allocation owned by the calling thread. If a clone panics,
    /// the elements cloned so far are dropped and the memory freed. A safe point, as every counting
    /// constructor (see [`BiasedArc`]).
    fn from(slice: &[T]) -> Self {
        /// Drops what was written and frees the memory, unless forgotten.
        struct Partial<T> {
            inner: NonNull<ArcInner<[T]>>,
            len: usize,
            written: usize,
        }
        impl<T> Drop for Partial<T> {
            fn drop(&mut self) {
                // SAFETY: the first `written` elements were written and nothing else points at
                // the allocation, made by `allocate_slice(len)`, with `Layout::array::<T>(len)`.
                unsafe {
                    ptr::drop_in_place(ptr::slice_from_raw_parts_mut(
                        ArcInner::elements(self.inner),
                        self.written,
                    ));
                    let value_layout = Layout::array::<T>(self.len).unwrap_unchecked();
                    ArcInner::free_unwritten(self.inner, value_layout);
                }
            }
        }

        let mut partial = Partial {
            inner: ArcInner::<[T]>::allocate_slice(slice.len()),
            len: slice.len(),
            written: 0,
        };
        let elements = ArcInner::elements(partial.inner);
        for item in slice {
            // SAFETY: `written < slice.len()`, the allocation's length: in bounds and not yet
            // written.
            unsafe { elements.add(partial.written).write(item.clone()) };
            partial.written += 1;
        }
        let ptr = partial.inner;
        mem::forget(partial);
        Self {
            ptr,
            _owns: PhantomData,
        }
    }
}

impl<T> FromIterator<T> for BiasedArc<[T]> {
    /// Collects the items into a `Vec` first, then moves them (the length is not known until
    /// the iterator ends). A safe point, as every counting constructor (see [`BiasedArc`]).
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl From<&str> for BiasedArc<str> {
    /// Copies the string into a new allocation owned by the calling thread. A safe point, as every
    /// counting constructor (see [`BiasedArc`]).
    fn from(text: &str) -> Self {
        let bytes = text.as_bytes();
        let inner = ArcInner::<[u8]>::allocate_slice(bytes.len());
        // SAFETY: the fresh allocation has room for exactly these bytes.
        unsafe {
            ptr::copy_nonoverlapping(bytes.as_ptr(), ArcInner::elements(inner), bytes.len());
        }
        // `str` has `[u8]`'s layout and metadata (the length in bytes), and the bytes are UTF-8.
        let inner = inner.as_ptr() as *mut ArcInner<str>;
        // SAFETY: from a non-null allocation pointer; the prefix is rewritten with the pointer
        // as its handles hold it, so that a release reads a `str` pointer back.
        let inner = unsafe { NonNull::new_unchecked(inner) };
        // SAFETY: the prefix of the fresh allocation, which nothing else points at yet.
        unsafe { ArcInner::prefix(inner).write(Prefix { inner }) };
        Self {
            ptr: inner,
            _owns: PhantomData,
        }
    }
}

impl From<String> for BiasedArc<str> {
    /// Copies the string into a new allocation owned by the calling thread (the string's buffer has
    /// no room for the counts), as `Arc<str>`'s does. A safe point, as every counting constructor
    /// (see [`BiasedArc`]).
    fn from(text: String) -> Self {
        Self::from(text.as_str())
    }
}

impl Default for BiasedArc<str> {
    /// An empty string. A safe point, as every counting constructor (see [`BiasedArc`]).
    fn default() -> Self {
        Self::from("")
    }
}

impl<T> Default for BiasedArc<[T]> {
    /// An empty slice. A safe point, as every counting constructor (see [`BiasedArc`]).
    fn default() -> Self {
        Self::from(Vec::new())
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
pub struct Weak<T: ?Sized> {
    /// The allocation, or a dangling address ([`WEAK_NEW`], never an allocation's) for
    /// [`Weak::new`].
    ptr: NonNull<ArcInner<T>>,
}

// SAFETY: as for `BiasedArc<T>` (`T: 'static` included): a weak handle upgrades to a strong one
// on whatever thread holds it, and its drop may free the memory (never the value) there.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Weak<T> {}
// SAFETY: as above; `&Weak<T>` lets another thread clone or upgrade it.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Weak<T> {}

/// The address a [`Weak::new`] handle holds in place of an allocation: the last one, where no
/// allocation (and no value inside one) can start.
const WEAK_NEW: usize = usize::MAX;

impl<T> Weak<T> {
    /// A weak handle to nothing: it never upgrades, and allocates nothing. Sized values only,
    /// as `std::sync::Weak::new`: an unsized one's handle would need a length or vtable.
    pub const fn new() -> Self {
        // SAFETY: `WEAK_NEW` is not null; it is never dereferenced (see `allocation`).
        let ptr = unsafe { NonNull::new_unchecked(ptr::without_provenance_mut(WEAK_NEW)) };
        Self { ptr }
    }
}

impl<T: ?Sized> Weak<T> {
    /// The allocation, unless this handle came from [`Weak::new`].
    fn allocation(&self) -> Option<NonNull<ArcInner<T>>> {
        (self.ptr.as_ptr().cast::<u8>().addr() != WEAK_NEW).then_some(self.ptr)
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

    /// The number of strong handles, as [`BiasedArc::strong_count`] counts them; a snapshot.
    ///
    /// Unlike `std::sync::Weak`'s, 0 does not mean the value is dead: while the last handles'
    /// drops, made on other threads, wait in the owner's merge queue, this reads 0 and
    /// [`upgrade`](Self::upgrade) still succeeds, until the owner merges them (its next safe
    /// point; see [`BiasedArc`]). Only a failed `upgrade` says the value is gone for good.
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

    /// The number of weak handles (this one included), or 0 where
    /// [`strong_count`](Self::strong_count) reads 0 (which, there, does not mean dead), like
    /// [`std::sync::Weak::weak_count`]; a snapshot. While [`BiasedArc::into_inner`] or
    /// [`BiasedArc::try_unwrap`] runs, the count is one higher: they hold a weak reference of
    /// their own for the time.
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
        // Addresses only, as in `BiasedArc::ptr_eq`.
        ptr::addr_eq(this.ptr.as_ptr(), other.ptr.as_ptr())
    }

    /// A pointer to the value, as [`BiasedArc::as_ptr`]: valid to read through only while the
    /// value lives (a strong handle exists), since a weak handle keeps the memory but not the
    /// value. For a [`Weak::new`] handle, a dangling pointer that must not be read through.
    pub fn as_ptr(&self) -> *const T {
        match self.allocation() {
            // SAFETY: in bounds of the allocation this handle keeps; no reference is created.
            Some(ptr) => unsafe { ptr::addr_of!((*ptr.as_ptr()).value) },
            // The sentinel itself (sized values only: see `Weak::new`).
            None => self.ptr.as_ptr() as *const T,
        }
    }

    /// Gives up the handle without dropping its weak reference; [`from_raw`](Self::from_raw)
    /// takes it back.
    pub fn into_raw(self) -> *const T {
        let this = ManuallyDrop::new(self);
        this.as_ptr()
    }

    /// Rebuilds a weak handle from [`into_raw`](Self::into_raw).
    ///
    /// # Safety
    /// `ptr` came from `Weak::<T>::into_raw` (same `T`), and each such pointer is passed here at
    /// most once per weak reference it carries. Unless `T: Send + Sync + 'static`, the calling
    /// thread is the one that made the value: a handle upgraded from this one and dropped last
    /// on another thread hands the value to the thread that made it, to drop at its next merge
    /// (see [`BiasedArc::from_raw`]).
    pub unsafe fn from_raw(ptr: *const T) -> Self {
        if ptr.cast::<u8>().addr() == WEAK_NEW {
            // From a `Weak::new` handle (`as_ptr` hands out the sentinel itself): no value can
            // sit at the last address (a value follows the aligned counts of its allocation).
            let sentinel = ptr as *mut ArcInner<T>;
            // SAFETY: not null; never dereferenced (see `allocation`).
            let ptr = unsafe { NonNull::new_unchecked(sentinel) };
            return Self { ptr };
        }
        Self {
            // SAFETY: `ptr` came from `into_raw` of a handle to a real allocation, which the weak
            // reference it carries keeps alive (the value may be dropped: only the pointer's
            // metadata is read).
            ptr: unsafe { inner_of_value(ptr) },
        }
    }
}

impl<T: ?Sized> Clone for Weak<T> {
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

impl<T: ?Sized> Drop for Weak<T> {
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

impl<T: ?Sized> fmt::Debug for Weak<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(Weak)")
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

    /// `into_inner` on the owner merges the drops queued to it first, and the merge runs other
    /// values' destructors: one that panics unwinds out of the call, which then leaves the
    /// handle to drop as any other. It had set the handle aside and taken a weak reference of
    /// its own: both leaked, and the value was never dropped.
    #[test]
    fn into_inner_that_unwinds_from_another_values_destructor_drops_its_handle() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("another value's destructor panicked");
            }
        }
        let drops = Drops::default();
        let kept = BiasedArc::new(drops.track(3));
        let panicking = BiasedArc::new(PanicsOnDrop);
        // The last reference, dropped by another thread: queued to this one.
        let remote = panicking.clone();
        drop(panicking);
        std::thread::spawn(move || drop(remote)).join().unwrap();
        let unwound =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| BiasedArc::into_inner(kept)));
        assert!(
            unwound.is_err(),
            "the destructor's panic reaches the caller"
        );
        assert_eq!(drops.count(), 1, "the handle's value was dropped with it");
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

    /// A drop queued to the owner before it gave up ownership keeps its entry, and the entry its
    /// reference, in the merged count. The last holder's `into_inner` still gets the value: the
    /// entry is the count's, not a holder's. (It answered `None`, and the entry's merge dropped
    /// the value.)
    #[test]
    fn into_inner_on_a_merged_count_with_a_queued_drop_gives_the_value_to_the_last_holder() {
        let drops = Drops::default();
        let owned = BiasedArc::new(drops.track(6));
        let remote = owned.clone();
        std::thread::spawn(move || drop(remote)).join().unwrap();
        BiasedArc::give_up_ownership(&owned);
        assert_eq!(BiasedArc::strong_count(&owned), 1);
        let value = BiasedArc::into_inner(owned).expect("the last reference");
        assert_eq!(
            (value.check(), drops.count()),
            (6, 0),
            "returned, not dropped"
        );
        drop(value);
        assert_eq!(crate::merge_pending(), 1, "the entry is still merged, once");
        assert_eq!(drops.count(), 1);
    }

    /// The same on another thread: once the count is merged, its answer is exact too.
    #[test]
    fn into_inner_on_another_thread_on_a_merged_count_with_a_queued_drop_gives_the_value() {
        let drops = Drops::default();
        let owned = BiasedArc::new(drops.track(7));
        let remote = owned.clone();
        std::thread::spawn(move || drop(remote)).join().unwrap();
        BiasedArc::give_up_ownership(&owned);
        let got = std::thread::spawn(move || BiasedArc::into_inner(owned).map(|v| v.check()))
            .join()
            .unwrap();
        assert_eq!(got, Some(7), "the last reference");
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
    fn strong_counts_change_through_raw_pointers_as_through_handles() {
        let drops = Drops::default();
        let raw = BiasedArc::into_raw(BiasedArc::new(drops.track(1)));
        // SAFETY: `raw` carries a reference, given back once below.
        unsafe { BiasedArc::increment_strong_count(raw) };
        // SAFETY: as above; the handle is dropped at once.
        let seen = unsafe { BiasedArc::from_raw(raw) };
        assert_eq!(BiasedArc::strong_count(&seen), 2);
        std::mem::forget(seen);
        // Another thread gives one reference back: the value lives on.
        let address = raw.expose_provenance();
        std::thread::spawn(move || {
            let raw = ptr::with_exposed_provenance::<crate::test_util::Tracked>(address);
            // SAFETY: one of the two references, given back once.
            unsafe { BiasedArc::decrement_strong_count(raw) };
        })
        .join()
        .unwrap();
        assert_eq!(drops.count(), 0);
        // SAFETY: the last reference, given back once.
        unsafe { BiasedArc::decrement_strong_count(raw) };
        crate::biased::merge_pending();
        assert_eq!(
            drops.count(),
            1,
            "dropped exactly once, after the last reference"
        );
    }

    #[test]
    fn weak_handles_round_trip_through_raw_pointers_alive_or_dead() {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(7));
        let raw = Weak::into_raw(BiasedArc::downgrade(&strong));
        assert_eq!(raw, BiasedArc::as_ptr(&strong));
        // SAFETY: from `into_raw`, taken back once.
        let weak = unsafe { Weak::from_raw(raw) };
        assert_eq!(weak.upgrade().map(|v| v.check()), Some(7));
        assert_eq!(BiasedArc::weak_count(&strong), 1);
        let raw = Weak::into_raw(weak);
        drop(strong);
        assert_eq!(drops.count(), 1);
        // The value is gone; the memory is not, and the handle still frees it.
        // SAFETY: from `into_raw`, taken back once.
        let weak = unsafe { Weak::from_raw(raw) };
        assert!(weak.upgrade().is_none());
        assert_eq!(weak.strong_count(), 0);
        drop(weak);
        // A handle to nothing stays one.
        let raw = Weak::into_raw(Weak::<u64>::new());
        // SAFETY: from `into_raw`, taken back once.
        let nothing = unsafe { Weak::from_raw(raw) };
        assert!(nothing.upgrade().is_none());
        assert!(Weak::ptr_eq(&nothing, &Weak::new()));
    }

    #[test]
    fn unsized_weak_handles_round_trip_through_raw_pointers() {
        let name: BiasedArc<str> = BiasedArc::from("weak");
        let raw = Weak::into_raw(BiasedArc::downgrade(&name));
        // SAFETY: from `into_raw`, taken back once.
        let weak = unsafe { Weak::<str>::from_raw(raw) };
        assert_eq!(weak.upgrade().as_deref(), Some("weak"));
        let raw = Weak::into_raw(weak);
        drop(name);
        // SAFETY: from `into_raw`, taken back once; the value is dropped, its length is in `raw`.
        let weak = unsafe { Weak::<str>::from_raw(raw) };
        assert!(weak.upgrade().is_none());
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

    /// Every constructor that counts is a safe point: it first drops the values whose last
    /// handles other threads dropped and queued back to this thread, whatever their type.
    #[test]
    fn every_counting_constructor_drops_what_other_threads_queued_back_first() {
        let constructors: [(&str, fn()); 11] = [
            ("new", || drop(BiasedArc::new(1_u8))),
            ("new_cyclic", || drop(BiasedArc::new_cyclic(|_| 1_u8))),
            ("From<T>", || drop(BiasedArc::from(1_u8))),
            ("Default", || drop(BiasedArc::<u8>::default())),
            ("From<Box<T>>", || {
                drop(BiasedArc::<u8>::from(Box::new(1_u8)))
            }),
            ("From<Vec<T>>", || drop(BiasedArc::<[u8]>::from(vec![1_u8]))),
            ("From<&[T]>", || drop(BiasedArc::<[u8]>::from(&[1_u8][..]))),
            ("FromIterator", || {
                drop((0..2_u8).collect::<BiasedArc<[u8]>>())
            }),
            ("From<&str>", || drop(BiasedArc::<str>::from("a"))),
            ("From<String>", || {
                drop(BiasedArc::<str>::from(String::from("a")))
            }),
            ("Default for [T]", || drop(BiasedArc::<[u8]>::default())),
        ];
        for (name, construct) in constructors {
            let drops = Drops::default();
            let strong = BiasedArc::new(drops.track(15));
            let remote = strong.clone();
            drop(strong);
            // The last handle, dropped elsewhere: queued back to this thread, the owner.
            std::thread::spawn(move || drop(remote)).join().unwrap();
            assert_eq!(drops.count(), 0, "{name}: waits for the owner's safe point");
            construct();
            assert_eq!(drops.count(), 1, "{name} did not merge the queue");
        }
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(16));
        let remote = strong.clone();
        drop(strong);
        std::thread::spawn(move || drop(remote)).join().unwrap();
        drop(BiasedArc::new_immortal(1_u8));
        assert_eq!(
            drops.count(),
            0,
            "new_immortal counts nothing and merges nothing"
        );
        assert_eq!(crate::merge_pending(), 1);
        assert_eq!(drops.count(), 1);
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

    /// A value that borrows from its creator's frame is dropped by its last handle, even when a
    /// handle was dropped through a token that does not own the count: queued to the owner, as
    /// a drop on another thread would be, the reference would keep the value until the owner's
    /// next safe point, after the borrow it holds has ended.
    #[test]
    fn a_value_that_borrows_is_dropped_by_its_last_handle_whatever_token_dropped_the_others() {
        use std::cell::Cell;
        struct SetsOnDrop<'a>(&'a Cell<bool>);
        impl Drop for SetsOnDrop<'_> {
            fn drop(&mut self) {
                self.0.set(true);
            }
        }
        let other = crate::biased::LocalCounts::register();
        for token in [crate::biased::Owner::detached(), other.owner()] {
            let dropped = Cell::new(false);
            let value = BiasedArc::new(SetsOnDrop(&dropped));
            BiasedArc::drop_for(value.clone(), token);
            drop(value);
            assert!(dropped.get(), "the value outlived its last handle");
        }
    }

    /// A husk's value is moved out while the pending entry's merge may run on any thread (the
    /// owner merging its queue, a thread merging for a parked owner, a thread settling an
    /// exited owner's entry): that merge must not free the memory under the move. Here it runs
    /// in exactly that window, from a hook between the count's end and the move.
    #[test]
    fn try_unwrap_keeps_the_memory_while_the_husks_entry_merges() {
        let value = BiasedArc::new(String::from("kept"));
        // Dropped by a thread that does not own the count, at a shared count of zero: queued
        // back to this thread's queue.
        let clone = value.clone();
        std::thread::spawn(move || drop(clone))
            .join()
            .expect("the other thread drops its clone");
        // Merged, so the answer below is exact; the entry is still pending.
        BiasedArc::give_up_ownership(&value);
        hooks::BEFORE_HUSK_MOVE.set(Some(|| {
            let freed = hooks::FREED.get();
            assert_eq!(crate::merge_pending(), 1, "the pending entry merged");
            assert_eq!(
                hooks::FREED.get(),
                freed,
                "the entry's merge freed the memory the value is being moved out of"
            );
        }));
        let freed = hooks::FREED.get();
        assert_eq!(BiasedArc::try_unwrap(value).ok().as_deref(), Some("kept"));
        assert!(
            hooks::BEFORE_HUSK_MOVE.take().is_none(),
            "the value was not a husk with a pending entry"
        );
        assert_eq!(hooks::FREED.get(), freed + 1, "freed once, after the move");
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

    /// Unsized values: `str`, slices and trait objects, which carry a prefix with their wide
    /// pointer (see the module documentation).
    mod unsized_values {
        use super::*;
        use crate::test_util::Tracked;
        use std::collections::hash_map::DefaultHasher;

        /// What the trait objects below implement: enough to notice a wrong vtable or a value
        /// used after it was dropped.
        trait Shape: Send + Sync {
            fn id(&self) -> u64;
        }

        impl Shape for Tracked {
            fn id(&self) -> u64 {
                self.check()
            }
        }

        /// Over-aligned, so that the `ArcInner` does not start right after the prefix.
        #[repr(align(64))]
        struct Wide(Tracked);

        impl Shape for Wide {
            fn id(&self) -> u64 {
                assert_eq!(ptr::from_ref(self).addr() % 64, 0, "misaligned");
                self.0.check()
            }
        }

        struct Nothing;

        impl Shape for Nothing {
            fn id(&self) -> u64 {
                0
            }
        }

        fn shape(shape: impl Shape + 'static) -> BiasedArc<dyn Shape> {
            BiasedArc::from(Box::new(shape) as Box<dyn Shape>)
        }

        fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
            let mut hasher = DefaultHasher::new();
            value.hash(&mut hasher);
            hasher.finish()
        }

        /// `From<Box<T>>` of a sized value allocates with `layout_for`, and the memory is freed
        /// as a `Box<ArcInner<T>>`: the two layouts must agree.
        #[test]
        fn a_sized_values_layout_is_its_arc_inners() {
            fn check<T>() {
                let (layout, offset) = layout_for::<T>(Layout::new::<T>());
                assert_eq!((layout, offset), (Layout::new::<ArcInner<T>>(), 0));
            }
            #[repr(align(64))]
            struct Wide64;
            check::<()>();
            check::<u8>();
            check::<u64>();
            check::<u128>();
            check::<[u8; 13]>();
            check::<Wide64>();
            check::<String>();
        }

        #[test]
        fn handles_of_sized_values_stay_thin_and_unsized_ones_are_wide() {
            assert_eq!(mem::size_of::<BiasedArc<u64>>(), mem::size_of::<usize>());
            assert_eq!(
                mem::size_of::<Option<BiasedArc<u64>>>(),
                mem::size_of::<usize>()
            );
            assert_eq!(
                mem::size_of::<BiasedArc<str>>(),
                2 * mem::size_of::<usize>()
            );
            assert_eq!(
                mem::size_of::<Weak<dyn Shape>>(),
                2 * mem::size_of::<usize>()
            );
            fn assert_send_sync<T: Send + Sync>() {}
            assert_send_sync::<BiasedArc<str>>();
            assert_send_sync::<BiasedArc<[u8]>>();
            assert_send_sync::<BiasedArc<dyn Shape>>();
            assert_send_sync::<Weak<dyn Shape>>();
        }

        #[test]
        fn strings_from_str_string_and_default() {
            let a = BiasedArc::<str>::from("hello");
            let b = BiasedArc::<str>::from(String::from("hello"));
            assert_eq!((&*a, a.len()), ("hello", 5));
            assert_eq!(a, b, "equality compares values");
            assert!(!BiasedArc::ptr_eq(&a, &b));
            assert_eq!(hash_of(&a), hash_of("hello"));
            assert_eq!(
                (format!("{a}"), format!("{a:?}")),
                ("hello".into(), "\"hello\"".into())
            );
            assert!(BiasedArc::<str>::from("abc") < BiasedArc::from("abd"));
            let c = a.clone();
            assert!(BiasedArc::ptr_eq(&a, &c));
            assert_eq!(BiasedArc::strong_count(&a), 2);
            drop((a, b, c));
            assert_eq!(&*BiasedArc::<str>::default(), "");
            assert_eq!(&*BiasedArc::<str>::from(String::new()), "");
            let unicode = BiasedArc::<str>::from("żółw 🐢");
            assert_eq!(unicode.chars().count(), 6);
        }

        #[test]
        fn slices_from_vec_slice_iterator_and_box() {
            let drops = Drops::default();
            let moved = BiasedArc::<[Tracked]>::from(vec![drops.track(1), drops.track(2)]);
            assert_eq!(drops.count(), 0, "moved, not dropped");
            assert_eq!(moved.iter().map(Tracked::check).collect::<Vec<_>>(), [1, 2]);

            let originals = [drops.track(3), drops.track(4), drops.track(5)];
            let cloned = BiasedArc::<[Tracked]>::from(&originals[..]);
            assert_eq!(cloned.iter().map(Tracked::check).sum::<u64>(), 12);
            drop(originals);
            assert_eq!(drops.count(), 3, "the originals, not the clones");

            let collected: BiasedArc<[Tracked]> = (6..9).map(|id| drops.track(id)).collect();
            assert_eq!(collected.len(), 3);
            let boxed = BiasedArc::<[Tracked]>::from(vec![drops.track(9)].into_boxed_slice());
            assert_eq!(boxed[0].check(), 9);
            drop((moved, cloned, collected, boxed));
            assert_eq!(drops.count(), 3 + 2 + 3 + 3 + 1);

            let strings = BiasedArc::<[String]>::from(&[String::from("a"), String::from("b")][..]);
            assert_eq!(strings.concat(), "ab");
            assert!(BiasedArc::<[u8]>::default().is_empty());
            assert!(BiasedArc::<[String]>::from(Vec::new()).is_empty());
            let units: BiasedArc<[()]> = std::iter::repeat_n((), 5).collect();
            assert_eq!(units.len(), 5);
            let wide: BiasedArc<[u128]> = BiasedArc::from(&[1, u128::MAX][..]);
            assert_eq!(BiasedArc::as_ptr(&wide).cast::<u128>().align_offset(16), 0);
            assert_eq!(wide[1], u128::MAX);
        }

        #[test]
        fn trait_objects_from_boxes_keep_their_vtable_and_alignment() {
            let drops = Drops::default();
            let plain = shape(drops.track(1));
            let wide = shape(Wide(drops.track(2)));
            let nothing = shape(Nothing);
            assert_eq!((plain.id(), wide.id(), nothing.id()), (1, 2, 0));
            assert_eq!(BiasedArc::as_ptr(&wide).cast::<u8>().addr() % 64, 0);
            let again = wide.clone();
            assert_eq!(again.id(), 2);
            drop((plain, wide, nothing));
            assert_eq!(drops.count(), 1, "`again` keeps the wide one");
            drop(again);
            assert_eq!(drops.count(), 2);

            let display: BiasedArc<dyn fmt::Display + Send + Sync> =
                BiasedArc::from(Box::new(42) as Box<_>);
            assert_eq!(display.to_string(), "42");
            // A sized value through `From<Box<T>>` gets the sized layout (Miri checks the layout
            // it is freed with).
            let sized = BiasedArc::<Tracked>::from(Box::new(drops.track(3)));
            assert_eq!(sized.check(), 3);
            assert_eq!(
                BiasedArc::try_unwrap(sized).ok().map(|t| t.check()),
                Some(3)
            );
            let boxed_str = BiasedArc::<str>::from(String::from("boxed").into_boxed_str());
            assert_eq!(&*boxed_str, "boxed");
        }

        #[test]
        fn get_mut_and_raw_round_trips_work_on_unsized_values() {
            let mut numbers = BiasedArc::<[i32]>::from(vec![1, 2, 3]);
            BiasedArc::get_mut(&mut numbers).unwrap()[0] = 10;
            let other = numbers.clone();
            assert!(BiasedArc::get_mut(&mut numbers).is_none());
            assert_eq!(*other, [10, 2, 3]);

            let drops = Drops::default();
            let wide = shape(Wide(drops.track(4)));
            let raw = BiasedArc::into_raw(wide.clone());
            // SAFETY: from `into_raw`, passed back once.
            let back = unsafe { BiasedArc::from_raw(raw) };
            assert!(BiasedArc::ptr_eq(&back, &wide));
            assert_eq!((back.id(), BiasedArc::strong_count(&wide)), (4, 2));
            let raw = BiasedArc::into_raw(other);
            // SAFETY: as above.
            let other = unsafe { BiasedArc::<[i32]>::from_raw(raw) };
            assert_eq!(other.len(), 3);
            drop((back, wide));
            assert_eq!(drops.count(), 1);
        }

        /// The release a merge queue calls has only the count's address: it must find the wide
        /// pointer in the prefix.
        #[test]
        fn a_last_drop_on_another_thread_is_released_by_the_owners_merge() {
            let drops = Drops::default();
            let values = (
                shape(Wide(drops.track(1))),
                BiasedArc::<[Tracked]>::from(vec![drops.track(2), drops.track(3)]),
                BiasedArc::<str>::from("queued"),
            );
            let remote = (values.0.clone(), values.1.clone(), values.2.clone());
            std::thread::spawn(move || {
                assert_eq!((remote.0.id(), &*remote.2), (1, "queued"));
                drop(remote);
            })
            .join()
            .unwrap();
            drop(values);
            assert_eq!(drops.count(), 0, "the queued drops still hold them");
            assert_eq!(crate::merge_pending(), 3);
            assert_eq!(drops.count(), 3);
        }

        /// Once the count is merged, the last drop on another thread releases the value there,
        /// straight from the handle.
        #[test]
        fn a_last_drop_on_another_thread_of_a_merged_count_releases_there() {
            let drops = Drops::default();
            let value = shape(Wide(drops.track(5)));
            BiasedArc::give_up_ownership(&value);
            let remote = value.clone();
            drop(value);
            std::thread::spawn(move || drop(remote)).join().unwrap();
            assert_eq!(drops.count(), 1);
        }

        /// The owner exits holding nothing: the last drop elsewhere queues to an owner that is
        /// gone, settles the entry itself and releases through the prefix on its own thread.
        #[test]
        fn values_outlive_their_owner_and_are_released_by_the_last_holder() {
            let drops = Drops::default();
            let (d1, d2) = (drops.track(6), drops.track(7));
            let (shape_value, slice, text) = std::thread::spawn(move || {
                (
                    shape(d1),
                    BiasedArc::<[Tracked]>::from(vec![d2]),
                    BiasedArc::<str>::from("orphan"),
                )
            })
            .join()
            .unwrap();
            assert_eq!(
                (shape_value.id(), slice[0].check(), &*text),
                (6, 7, "orphan")
            );
            let kept = slice.clone();
            drop((shape_value, slice, text));
            assert_eq!(drops.count(), 1);
            drop(kept);
            assert_eq!(drops.count(), 2);
        }

        #[test]
        fn weak_handles_to_unsized_values_upgrade_until_the_value_dies_and_then_free_it() {
            let drops = Drops::default();
            let strong = shape(Wide(drops.track(8)));
            let weak = BiasedArc::downgrade(&strong);
            assert_eq!(weak.upgrade().map(|s| s.id()), Some(8));
            assert_eq!((weak.strong_count(), weak.weak_count()), (1, 1));
            let text = BiasedArc::<str>::from("weak");
            let weak_text = BiasedArc::downgrade(&text);
            drop((strong, text));
            assert_eq!(drops.count(), 1);
            assert!(weak.upgrade().is_none() && weak_text.upgrade().is_none());
            // The last weak handles free the memory, from the layout the release left in the
            // prefix (Miri checks the layout and the leak).
            let elsewhere = weak.clone();
            std::thread::spawn(move || drop(elsewhere)).join().unwrap();
            drop((weak, weak_text));
        }

        /// The value is released on the owner's merge (through the queue) while weak handles
        /// live on other threads; the last of them frees the memory there.
        #[test]
        fn a_queued_release_of_an_unsized_value_leaves_the_memory_to_a_weak_handle() {
            let drops = Drops::default();
            let strong = BiasedArc::<[Tracked]>::from(vec![drops.track(9), drops.track(10)]);
            let weak = BiasedArc::downgrade(&strong);
            let remote = strong.clone();
            drop(strong);
            let holder = std::thread::spawn(move || {
                drop(remote);
                weak
            })
            .join()
            .unwrap();
            assert_eq!(weak_len(&holder), Some(2), "not dead until merged");
            assert_eq!(crate::merge_pending(), 1);
            assert_eq!(drops.count(), 2);
            assert!(holder.upgrade().is_none());
            std::thread::spawn(move || drop(holder)).join().unwrap();
        }

        fn weak_len(weak: &Weak<[Tracked]>) -> Option<usize> {
            weak.upgrade().map(|slice| slice.len())
        }

        #[test]
        fn a_panicking_clone_drops_what_was_cloned_and_frees_the_memory() {
            struct Fuse(Tracked, bool);
            impl Clone for Fuse {
                fn clone(&self) -> Self {
                    assert!(!self.1, "clone failed");
                    Fuse(self.0.clone(), false)
                }
            }
            let drops = Drops::default();
            let items = vec![
                Fuse(drops.track(1), false),
                Fuse(drops.track(2), false),
                Fuse(drops.track(3), true),
            ];
            let outcome = std::panic::catch_unwind(|| BiasedArc::<[Fuse]>::from(&items[..]));
            assert!(outcome.is_err());
            assert_eq!(drops.count(), 2, "the two clones made");
            drop(items);
            assert_eq!(drops.count(), 5);
        }

        /// Clones and drops on several threads at once, the last drop landing anywhere.
        #[test]
        fn unsized_values_shared_between_threads_are_dropped_once() {
            let rounds = if cfg!(miri) { 3 } else { 100 };
            for round in 0..rounds {
                let drops = Drops::default();
                let value = shape(Wide(drops.track(round)));
                let threads: Vec<_> = (0..3)
                    .map(|_| {
                        let mine = value.clone();
                        std::thread::spawn(move || {
                            for _ in 0..10 {
                                assert_eq!(mine.clone().id(), round);
                            }
                        })
                    })
                    .collect();
                drop(value);
                for thread in threads {
                    thread.join().unwrap();
                }
                crate::merge_pending();
                assert_eq!(drops.count(), 1);
            }
        }
    }
}
