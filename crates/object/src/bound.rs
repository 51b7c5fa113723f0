//! `Bound<'py, T>`: a counted reference usable while the thread is attached, viewed as type `T`.
//!
//! Like PyO3's `Bound<'py, PyList>`: the view is a pointer and a marker, so `Bound<'py, PyList>`
//! costs exactly what an untyped reference costs, and its methods skip the kind check that
//! downcasting did once. Every typed view dereferences to `Bound<'py, PyAny>`, the generic view,
//! whose methods (here, and the numeric ones in `scalars`) work through the object's type slots.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use ftrt_gil::{BuildCount, Python};
use ftrt_refcount::{RefCount, RefCountValue};

use crate::borrowed::Borrowed;
use crate::error::{Error, Result};
use crate::header::{header, payload, publish, Header, Kind, TypeObject};
use crate::refs::{decref, decref_attaching, incref, OwnedRef};
use crate::scalars::{hash_int, INT_TYPE};
use crate::shared::Shared;
use crate::string::{StrPayload, STR_TYPE};
use crate::types::{PyAny, PyTypeInfo};

/// A strong reference to an object of type `T`, usable while the thread is attached for `'py`:
/// cloning and dropping it count (carried into `allow_threads`' closure, a clone panics and a
/// drop attaches for its decrement). `Bound<'py>` (`T` = [`PyAny`]) is an
/// object of any type; [`Bound::downcast`] gives the typed view, or a `TypeError`.
///
/// ```
/// use ftrt_gil::Python;
/// use ftrt_object::{Bound, Error, PyAny, PyDict, PyInt, PyList};
///
/// Python::attach(|py| {
///     let any: Bound<'_, PyAny> = PyList::new(py, [PyInt::new(py, 1)]).into_any();
///     let list = any.downcast::<PyList>().unwrap();
///     assert_eq!(list.len(), 1);
///     assert!(matches!(any.downcast::<PyDict>(), Err(Error::TypeError(_))));
/// });
/// ```
#[repr(transparent)]
pub struct Bound<'py, T = PyAny> {
    ptr: NonNull<Header>,
    /// Tied to the attachment (and so neither `Send` nor `Sync`); viewed as `T`.
    _marker: PhantomData<(Python<'py>, T)>,
}

impl<'py, T: PyTypeInfo> Bound<'py, T> {
    /// Wraps a reference the caller owns.
    ///
    /// # Safety
    /// The caller owns one reference to a live object, of a type `T` accepts, and hands it over.
    #[inline]
    pub(crate) unsafe fn from_owned(ptr: NonNull<Header>) -> Self {
        Bound {
            ptr,
            _marker: PhantomData,
        }
    }

    /// A new reference to a live object.
    ///
    /// # Safety
    /// The object, of a type `T` accepts, stays alive until the increment (the caller holds or
    /// protects a reference).
    #[inline]
    pub(crate) unsafe fn from_borrowed(py: Python<'py>, ptr: NonNull<Header>) -> Self {
        // SAFETY: alive per the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe { incref(ptr, py.count_token()) };
        Bound {
            ptr,
            _marker: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<Header> {
        self.ptr
    }

    #[inline]
    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    #[inline]
    pub(crate) fn into_owned_ref(self) -> OwnedRef {
        // SAFETY: `self` owns one reference, handed over.
        unsafe { OwnedRef::from_raw(self.into_raw()) }
    }

    #[inline]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: this reference keeps the object alive while `self` is borrowed.
        unsafe { header(self.ptr) }
    }

    /// The `Python` token this reference is tied to.
    #[inline]
    pub fn py(&self) -> Python<'py> {
        // SAFETY: a `Bound<'py, _>` is used only while its thread is attached for `'py`: it
        // outlives no attachment (`Python::attach` hands out a fresh `'py`), and it is not
        // `Send`, so it cannot be captured by the closure of an `allow_threads` inside that
        // attachment (short of the hole documented on `allow_threads`, where every use of the
        // token that relies on the attachment checks it and panics).
        unsafe { Python::assume_attached() }
    }

    /// The generic view of the same reference.
    #[inline]
    pub fn as_any(&self) -> &Bound<'py, PyAny> {
        // SAFETY: `Bound` is `repr(transparent)` over the pointer for every `T`, and every
        // object may be viewed as `PyAny`.
        unsafe { &*(self as *const Self).cast::<Bound<'py, PyAny>>() }
    }

    /// The generic view, taking over this reference.
    #[inline]
    pub fn into_any(self) -> Bound<'py, PyAny> {
        // SAFETY: this reference is handed over; every object may be viewed as `PyAny`.
        unsafe { Bound::from_owned(self.into_raw()) }
    }

    /// Whether a thread other than the one that made the object may reach it. An object starts
    /// local to its creating thread, and its critical sections take no lock while it stays so;
    /// it becomes shared, for good, when a [`Shared`] handle is made of it ([`Bound::unbind`]) or
    /// when it is stored in a shared container, and with it everything it holds. Immortal
    /// objects (`None`, small ints, interned strings, classes) are shared from the start.
    ///
    /// ```
    /// use ftrt_gil::Python;
    /// use ftrt_object::{PyInt, PyList};
    ///
    /// Python::attach(|py| {
    ///     let (outer, inner) = (PyList::empty(py), PyList::empty(py));
    ///     outer.append(inner.clone());
    ///     assert!(!inner.is_shared()); // only this thread can reach either list
    ///     let handle = outer.clone().unbind(); // `handle` could go to another thread
    ///     assert!(outer.is_shared() && inner.is_shared());
    ///     assert!(PyInt::new(py, 7).is_shared()); // a small int: immortal
    ///     drop(handle);
    /// });
    /// ```
    #[inline]
    pub fn is_shared(&self) -> bool {
        self.header().is_shared()
    }

    /// A handle that can cross threads, for sharing the object.
    #[inline]
    pub fn unbind(self) -> Shared<T> {
        ftrt_gil::assert_attached();
        // The handle may go to any thread: the object must be shared first (see `Header`).
        publish(self.header());
        // SAFETY: this reference, of a type `T` accepts, is handed over.
        unsafe { Shared::from_owned(self.into_raw()) }
    }
}

impl<T: PyTypeInfo> Clone for Bound<'_, T> {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: this reference keeps the object alive.
        unsafe { Bound::from_borrowed(self.py(), self.ptr) }
    }
}

impl<T> Drop for Bound<'_, T> {
    /// Gives the reference up. A handle carried into a detached closure (the hole
    /// `Python::allow_threads` documents, where every other use panics) attaches for its drop,
    /// as a `Shared` does, so that unwinding from such a panic drops it cleanly.
    #[inline]
    fn drop(&mut self) {
        if !ftrt_gil::is_attached() {
            // SAFETY: this handle owns one reference, given up here.
            return unsafe { decref_attaching(self.ptr) };
        }
        // SAFETY: this handle owns one reference, given up here; attached, checked just above,
        // for the rest of this call.
        unsafe { decref(self.ptr, Python::assume_attached().count_token_unchecked()) };
    }
}

impl<T> std::fmt::Debug for Bound<'_, T> {
    /// Python's `repr`, through each object's type's `repr` slot (strings in double quotes with
    /// Rust's escapes). A container met again inside its own print prints as `[...]`, as in
    /// Python; so do containers nested deeper than 100 levels, where Python would recurse on.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: this reference keeps the object alive for the call.
        unsafe { crate::display::fmt_object(self.ptr, f) }
    }
}

impl<'py> Bound<'py, PyAny> {
    /// The object's type.
    #[inline]
    pub fn get_type(&self) -> &'static TypeObject {
        self.header().ty
    }

    /// The object's kind.
    #[inline]
    pub fn kind(&self) -> Kind {
        self.header().ty.kind
    }

    /// The name of the object's type (`int`, `list`, a class's name...).
    pub fn type_name(&self) -> &'static str {
        self.header().ty.name
    }

    /// Whether both are the same object (Python's `is`).
    #[inline]
    pub fn is(&self, other: &Bound<'_, PyAny>) -> bool {
        self.ptr == other.ptr
    }

    /// The object's identity (Python's `id`): its address, unique among the objects alive now.
    /// A freed object's identity may be reused by a later one.
    #[inline]
    pub fn id(&self) -> usize {
        self.ptr.as_ptr() as usize
    }

    /// Whether this is `None`.
    #[inline]
    pub fn is_none(&self) -> bool {
        self.kind() == Kind::None
    }

    /// Whether the object may be viewed as a `T` ([`Bound::downcast`] would succeed).
    #[inline]
    pub fn is_instance_of<T: PyTypeInfo>(&self) -> bool {
        T::is_type_of(self.header().ty)
    }

    /// The object viewed as a `T`; a `TypeError` if it is not one.
    #[inline]
    pub fn downcast<T: PyTypeInfo>(&self) -> Result<&Bound<'py, T>> {
        if self.is_instance_of::<T>() {
            // SAFETY: `Bound` is `repr(transparent)` over the pointer for every `T`, and the
            // object's type was checked.
            Ok(unsafe { &*(self as *const Self).cast::<Bound<'py, T>>() })
        } else {
            Err(self.not_a(T::NAME))
        }
    }

    /// This reference viewed as a `T`; a `TypeError` (and the reference dropped) if it is not
    /// one.
    #[inline]
    pub fn downcast_into<T: PyTypeInfo>(self) -> Result<Bound<'py, T>> {
        if self.is_instance_of::<T>() {
            // SAFETY: this reference is handed over; the object's type was checked.
            Ok(unsafe { Bound::from_owned(self.into_raw()) })
        } else {
            Err(self.not_a(T::NAME))
        }
    }

    #[cold]
    fn not_a(&self, expected: &str) -> Error {
        Error::TypeError(format!(
            "expected {expected}, got '{}' object",
            self.type_name()
        ))
    }

    /// The object's reference count, like `sys.getrefcount` (minus the argument's own
    /// reference, which Python's version adds): this reference counts as one. Two kinds of the
    /// runtime's own references are left out: those of requests to defer the object (found
    /// hot, see [`hot`](crate::hot)) that wait for a checkpoint, and a deferred object's
    /// registry's. A reference a removal took out of a shared container still counts until the
    /// epoch frees it (see `docs/objects.md`, "Lock-free reads"), as a reader may still use it.
    pub fn refcount(&self) -> RefCountValue {
        match self.counted() {
            RefCountValue::Mortal(count) => {
                let pending = crate::hot::pending_requests_for(self.header());
                RefCountValue::Mortal(count.saturating_sub(pending))
            }
            immortal => immortal,
        }
    }

    /// The count as the header (or, deferred, the threads' arrays) holds it.
    fn counted(&self) -> RefCountValue {
        // Before the deferred count, whose id only an attached thread sees stay put.
        ftrt_gil::assert_attached();
        match crate::hot::deferred_refcount(self.py(), self.header()) {
            Some(count) => RefCountValue::Mortal(count),
            // SAFETY: attached, checked just above; the token is used for this read only.
            None => <BuildCount as RefCount>::get(&self.header().count, unsafe {
                self.py().count_token_unchecked()
            }),
        }
    }

    /// Counts the object's references per thread, as if it were found hot (see
    /// [`hot`](crate::hot)): every thread's increments and decrements become a plain load and
    /// store in its own array, and only a collection frees the object. For objects a runtime
    /// knows many threads will take references to. It lasts as a found-hot object's deferral
    /// does: through the first collection after it, then until a collection finds that no
    /// thread took a reference since the one before (it then counts in its header again, and
    /// only being found hot defers it anew). Stops the world. Returns whether the object
    /// is deferred: `false` if it is immortal, if its count cannot be deferred at this moment
    /// (a drop by another thread is waiting for its owner to merge it), or if
    /// [`MAX_DEFERRED`](crate::hot::MAX_DEFERRED) objects already are; always `false` in builds
    /// without biased counts. In the biased build the object is shared first, with everything
    /// it reaches ([`is_shared`](Self::is_shared)), and stays so whatever the answer: whichever
    /// thread collects settles a deferred object's count.
    pub fn defer_refcount(&self) -> bool {
        // Before the publication the biased build makes first, which writes what it reaches.
        ftrt_gil::assert_attached();
        // SAFETY: `self` holds a reference.
        unsafe { crate::hot::defer(self.py(), self.ptr()) }
    }

    /// The thread that counts this object's references without atomics: its
    /// [`Python::thread_id`](ftrt_gil::Python::thread_id), the object's creator unless the object
    /// was given to a thread that counted it hot (see [`hot`](crate::hot)). `None` once no thread
    /// owns the count (its owner dropped its last reference while others held some, or the
    /// object is immortal or deferred), and always in builds without biased counts. A snapshot:
    /// the owner may give the count up at any time.
    pub fn owner_thread_id(&self) -> Option<u32> {
        <BuildCount as RefCount>::owner_id(&self.header().count)
    }

    /// Whether the object is immortal (never freed; counting does nothing).
    pub fn is_immortal(&self) -> bool {
        self.counted() == RefCountValue::Immortal
    }

    /// Python's `==`, through the type's `eq` slot: numbers and strings by value, everything
    /// else by identity.
    pub fn equals(&self, other: &Bound<'_, PyAny>) -> bool {
        // SAFETY: both references keep their objects alive; the slot is this object's type's.
        unsafe { (self.header().ty.slots.eq)(self.ptr, other.ptr) }
    }

    /// Python's `hash()`, through the type's `hash` slot: `str`, `int` and `bool` are hashable
    /// (and may be dict keys); anything else is a `TypeError`.
    pub fn hash(&self) -> Result<u64> {
        // SAFETY: this reference keeps the object alive.
        unsafe { hash_object(self.ptr) }
    }

    /// The objects this one holds references to, one entry per reference, in order (a list's
    /// items, a dict's keys and values, an instance's attribute names and values): Python's
    /// `gc.get_referents`, through the type's `traverse` slot. A consistent snapshot, taken in
    /// the object's critical section.
    pub fn referents(&self) -> Vec<Bound<'py, PyAny>> {
        let py = self.py();
        let mut found = Vec::new();
        let slots = &self.header().ty.slots;
        let mut collect = || {
            let mut visit = |held: Borrowed<'_>| {
                // SAFETY: held by the object, which cannot let go of it while we are in its
                // critical section (or ever, if what it holds never changes).
                found.push(unsafe { Bound::from_borrowed(py, held.ptr()) });
            };
            // SAFETY: alive (this reference); its own type's slot; nothing changes what it holds
            // during the call: we are in its critical section, or its contents are fixed.
            unsafe { (slots.traverse)(self.ptr, &mut visit) };
        };
        if slots.holds_change {
            // SAFETY: `collect` runs the type's `traverse` slot (no user code) and counts what
            // it visits: it does not detach and publishes nothing.
            unsafe { self.header().section(py, collect) };
        } else {
            // Immutable contents (tuples, scalars, strings, classes): no lock byte is written,
            // so immortal objects stay unwritten.
            collect();
        }
        found
    }
}

/// The hash of an object that may be a dict key; `TypeError` if its type is unhashable.
///
/// # Safety
/// The object is alive for the call.
#[inline]
pub(crate) unsafe fn hash_object(object: NonNull<Header>) -> Result<u64> {
    // SAFETY: alive per the caller.
    let ty = unsafe { header(object) }.ty;
    // Most keys are strings: read the cached hash without the slot's indirect call, as
    // CPython's dict does for exact `str`.
    if ptr::eq(ty, &STR_TYPE) {
        // SAFETY: a `str` holds a `StrPayload`.
        return Ok(unsafe { payload::<StrPayload>(object) }.hash);
    }
    // Then ints, the other common key, again without the indirect call.
    if ptr::eq(ty, &INT_TYPE) {
        // SAFETY: an `int` holds an `i64`.
        return Ok(hash_int(*unsafe { payload::<i64>(object) }));
    }
    // SAFETY: alive per the caller; the slot is the object's own type's.
    unsafe { (ty.slots.hash)(object) }.ok_or_else(|| unhashable(ty))
}

#[cold]
fn unhashable(ty: &TypeObject) -> Error {
    Error::TypeError(format!("unhashable type: '{}'", ty.name))
}

/// Dict key equality, given equal hashes: the same object, or equal by the first's `eq` slot.
///
/// # Safety
/// Both objects are alive for the call.
#[inline]
pub(crate) unsafe fn keys_equal(a: NonNull<Header>, b: NonNull<Header>) -> bool {
    if a == b {
        return true;
    }
    // SAFETY: both alive per the caller.
    let (ta, tb) = unsafe { (header(a).ty, header(b).ty) };
    // Two keys of the same common type compare inline, without the slot's indirect call.
    if ptr::eq(ta, tb) {
        if ptr::eq(ta, &STR_TYPE) {
            // SAFETY: both are `str`s, which hold a `StrPayload`.
            let (sa, sb) = unsafe { (payload::<StrPayload>(a), payload::<StrPayload>(b)) };
            return sa.hash == sb.hash && sa.text == sb.text;
        }
        if ptr::eq(ta, &INT_TYPE) {
            // SAFETY: both are `int`s, which hold an `i64`.
            return unsafe { *payload::<i64>(a) == *payload::<i64>(b) };
        }
    }
    // SAFETY: both alive per the caller; the slot is `a`'s own type's.
    unsafe { (ta.slots.eq)(a, b) }
}
