//! The standard traits of [`BiasedArc`]: conversions into it (each a safe point, as every
//! counting constructor), `Default`, formatting, comparison and hashing through the value.

use std::fmt;
use std::hash::{Hash, Hasher};

use super::*;

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
