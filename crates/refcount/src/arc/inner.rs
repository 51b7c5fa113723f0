//! The allocation behind a [`BiasedArc`](super::BiasedArc): the counts and the value in one
//! block, with a [`Prefix`] before it for an unsized value (see the parent module), and the
//! functions that compute its layout, allocate and free it.

use std::alloc::{self, Layout};
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr::{self, NonNull};

use crate::biased::BiasedCount;
use crate::sync::{fence, spin_hint, AtomicU32, Ordering};

/// The allocation: the count first (so a pointer to the count is a pointer to the allocation,
/// which is what the merge queues hold), the weak count, then the value. The count's 12 bytes
/// and the weak count's 4 make the 16 bytes `Arc` has before the value too. An unsized value's
/// `ArcInner` has a [`Prefix`] before it (see the `arc` module's documentation).
#[repr(C)]
pub(super) struct ArcInner<T: ?Sized> {
    pub(super) count: BiasedCount,
    /// The [`Weak`] handles, plus one that all the strong references hold together until the
    /// value is dropped (or moved out), as in `Arc`: whoever takes it to zero frees the memory.
    /// [`WEAK_LOCKED`] while a uniqueness check shuts out new weak handles.
    pub(super) weak: AtomicU32,
    pub(super) value: T,
}

/// The weak count while [`BiasedArc::get_mut`] checks uniqueness (only ever swapped in for a
/// count of one, i.e. no weak handle): a downgrade waits, so that no weak handle appears (and
/// none upgrades) mid-check.
pub(super) const WEAK_LOCKED: u32 = u32::MAX;
/// More weak handles than this aborts the process, as `Arc` does past `isize::MAX`: a count
/// that wrapped would free the memory under live handles.
pub(super) const MAX_WEAK: u32 = i32::MAX as u32;

/// Whether `T` is sized, i.e. whether a pointer to it is thin. A constant for each type, so
/// every branch on it is decided at compile time. (Extern types, thin but unsized, are unstable
/// and cannot be named here.)
#[inline(always)]
pub(super) const fn is_sized<T: ?Sized>() -> bool {
    mem::size_of::<*const T>() == mem::size_of::<*const ()>()
}

/// What sits just before an unsized value's `ArcInner` (never a sized one's).
#[repr(C)]
pub(super) union Prefix<T: ?Sized> {
    /// While the value lives: the pointer its handles hold, for a release that only has the
    /// count's address (a merge queue entry's).
    pub(super) inner: NonNull<ArcInner<T>>,
    /// Once the value is dropped: its layout, from which the last weak reference's drop finds
    /// the allocation's start and layout ([`layout_for`]).
    pub(super) value_layout: Layout,
}

/// The layout of the allocation for a value of layout `value`, and the offset of the `ArcInner`
/// in it: 0 for a sized value (the layout is `ArcInner<T>`'s, as a `Box` allocates it), after a
/// [`Prefix`] for an unsized one. `ArcInner` is `repr(C)`: its value starts at the first multiple
/// of the value's alignment after the 16 bytes of counts, as `Layout::extend` computes it. The
/// prefix ends exactly where the `ArcInner` starts (any padding goes before the prefix), so that
/// it can be found from the count's address alone.
pub(super) fn layout_for<T: ?Sized>(value: Layout) -> (Layout, usize) {
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
pub(super) fn capacity_overflow() -> ! {
    panic!("BiasedArc: allocation size overflow")
}

impl<T: ?Sized> ArcInner<T> {
    /// The weak count of the allocation at `this`, without a reference to the value (which may
    /// be dropped, or being dropped, when only weak handles remain).
    ///
    /// # Safety
    /// The allocation is alive: the caller holds a strong or a weak reference to it.
    pub(super) unsafe fn weak<'a>(this: NonNull<Self>) -> &'a AtomicU32 {
        // SAFETY: a place projection through a live allocation; only the field is borrowed.
        unsafe { &(*this.as_ptr()).weak }
    }

    /// The count of the allocation at `this`, as for [`weak`](Self::weak).
    ///
    /// # Safety
    /// As for [`weak`](Self::weak).
    pub(super) unsafe fn count<'a>(this: NonNull<Self>) -> &'a BiasedCount {
        // SAFETY: as in `weak`.
        unsafe { &(*this.as_ptr()).count }
    }

    /// The prefix of an unsized value's allocation.
    ///
    /// # Safety
    /// `T` is unsized and `this` points into a live allocation (which then has a prefix), with
    /// the allocation's provenance.
    pub(super) unsafe fn prefix(this: NonNull<Self>) -> *mut Prefix<T> {
        // SAFETY: forwarded from the caller.
        unsafe { Self::prefix_before(this.cast::<BiasedCount>()) }
    }

    /// The prefix of the unsized value's allocation whose count is at `count` (the start of its
    /// `ArcInner`).
    ///
    /// # Safety
    /// As for [`prefix`](Self::prefix).
    pub(super) unsafe fn prefix_before(count: NonNull<BiasedCount>) -> *mut Prefix<T> {
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
    pub(super) unsafe fn from_count(count: NonNull<BiasedCount>) -> NonNull<Self> {
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
    pub(super) unsafe fn add_weak(this: NonNull<Self>) {
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
    pub(super) unsafe fn drop_weak(this: NonNull<Self>) {
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
        super::hooks::FREED.set(super::hooks::FREED.get() + 1);
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
    pub(super) fn allocate(
        value_layout: Layout,
        wide: impl FnOnce(*mut u8) -> *mut Self,
    ) -> NonNull<Self> {
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
    pub(super) unsafe fn free_unwritten(this: NonNull<Self>, value_layout: Layout) {
        let (layout, offset) = layout_for::<T>(value_layout);
        // SAFETY: as in `drop_weak`: the allocation starts `offset` bytes before the `ArcInner`.
        unsafe { alloc::dealloc(this.as_ptr().cast::<u8>().sub(offset), layout) };
    }
}

impl<T> ArcInner<[T]> {
    /// [`allocate`](Self::allocate) for a slice of `len` elements.
    pub(super) fn allocate_slice(len: usize) -> NonNull<Self> {
        let Ok(value_layout) = Layout::array::<T>(len) else {
            capacity_overflow()
        };
        Self::allocate(value_layout, |address| {
            ptr::slice_from_raw_parts_mut(address.cast::<T>(), len) as *mut Self
        })
    }

    /// The slice's first element.
    pub(super) fn elements(this: NonNull<Self>) -> *mut T {
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
pub(super) fn with_address_of<T: ?Sized>(source: *mut T, address: *mut u8) -> *mut T {
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
