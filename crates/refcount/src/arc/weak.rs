//! [`Weak`], the handle that keeps a [`BiasedArc`]'s memory but not its value alive.

use super::*;

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
    pub(super) ptr: NonNull<ArcInner<T>>,
}

// SAFETY: as for `BiasedArc<T>` (`T: 'static` included): a weak handle upgrades to a strong one
// on whatever thread holds it, and its drop may free the memory (never the value) there.
unsafe impl<T: ?Sized + Send + Sync + 'static> Send for Weak<T> {}
// SAFETY: as above; `&Weak<T>` lets another thread clone or upgrade it.
unsafe impl<T: ?Sized + Send + Sync + 'static> Sync for Weak<T> {}

/// The address a [`Weak::new`] handle holds in place of an allocation: the last one, where no
/// allocation (and no value inside one) can start.
pub(super) const WEAK_NEW: usize = usize::MAX;

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
