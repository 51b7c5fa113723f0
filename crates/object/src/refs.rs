//! Strong references (`Obj`, `Shared`), borrowed ones (`Borrowed`), and how objects die.
//!
//! Objects are freed iteratively: the outermost release on a thread's stack owns a "trash" work
//! list, and every object that dies while it frees goes on that list instead of being freed in a
//! nested call, so dropping a list nested a million deep uses no stack (CPython's trashcan,
//! without the depth limit). The thread-local that points nested releases at the list has no
//! destructor, so this holds during thread exit too.

use std::cell::Cell;
use std::marker::PhantomData;
use std::ptr::NonNull;

use ftrt_gil::{BuildCount, Python};
use ftrt_refcount::{RefCount, RefCountValue};

use crate::header::{count_ptr, header, Header, Kind};

/// The token the build's reference count asks for (`GilHeld` under the GIL, `()` otherwise).
pub(crate) type Token<'py> = <BuildCount as RefCount>::Token<'py>;

/// A token for paths that run without a `Python` at hand.
///
/// # Safety
/// In the `gil` build the calling thread holds the GIL. (The free-threaded tokens prove
/// nothing, so there it is always sound.)
#[inline(always)]
pub(crate) unsafe fn assume_token<'a>() -> Token<'a> {
    // SAFETY: forwarded from the caller.
    unsafe { Python::assume_attached() }.count_token()
}

/// Adds a reference.
///
/// # Safety
/// The object is alive (the caller holds or protects a reference to it).
#[inline]
pub(crate) unsafe fn incref(object: NonNull<Header>, token: Token<'_>) {
    // SAFETY: alive per the caller.
    <BuildCount as RefCount>::incref(&unsafe { header(object) }.count, token);
}

/// Drops a reference the caller owns, freeing the object if it was the last.
///
/// # Safety
/// The caller owns one reference to the object and gives it up.
#[inline]
pub(crate) unsafe fn decref(object: NonNull<Header>, token: Token<'_>) {
    // SAFETY: the caller gives up its reference; `release_count` frees exactly such objects.
    if unsafe { <BuildCount as RefCount>::decref(count_ptr(object), token, release_count) } {
        // SAFETY: that was the last reference.
        unsafe { release(object) };
    }
}

/// The release function the biased count's owner merges call.
///
/// # Safety
/// The count heads a dead object's header.
unsafe fn release_count(count: NonNull<BuildCount>) {
    // SAFETY: forwarded.
    unsafe { release(count.cast()) };
}

/// The dead objects waiting to be freed, in the frame of the outermost `release` on the stack.
type Trash = Vec<NonNull<Header>>;

thread_local! {
    /// The work list of the `release` running on this thread, if any. Const-initialised and
    /// without a destructor, so it is never torn down: releases that run inside thread-local
    /// destructors (an exiting owner merging its queue, a `Shared` kept in a thread-local) free
    /// iteratively like any other.
    static TRASH: Cell<Option<NonNull<Trash>>> = const { Cell::new(None) };
}

/// Frees a dead object, and every object that dies because of it, without recursion.
///
/// # Safety
/// The object's count reached zero and no lock-free reader can still reach it.
pub(crate) unsafe fn release(object: NonNull<Header>) {
    if let Some(mut trash) = TRASH.get() {
        // SAFETY: set only by the outermost `release` on this thread's stack, which owns the
        // list, outlives this nested call, and does not touch the list while a free runs.
        unsafe { trash.as_mut() }.push(object);
        return;
    }
    let mut pending = Trash::new();
    let trash = NonNull::from(&mut pending);
    TRASH.set(Some(trash));
    /// Stops nested releases from pushing onto the list, panics included. (A payload's drop
    /// that panics leaks the objects still on the list: they are dead and unreachable.)
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            TRASH.set(None);
        }
    }
    let done = Done;
    let mut next = Some(object);
    while let Some(dead) = next {
        // SAFETY: each object on the list died (count zero) and is unreachable; its payload's
        // drop pushes the objects it kills onto the list instead of freeing them here.
        unsafe { (header(dead).ty.free)(dead) };
        // SAFETY: `pending` lives until the end of this function; nested releases pushed through
        // the same pointer and have returned.
        next = unsafe { &mut *trash.as_ptr() }.pop();
    }
    drop(done);
}

/// A reference owned by the containers' payloads: decrefs on drop, without a `Python` (payloads
/// are dropped inside a release, which runs with the right to touch counts).
pub(crate) struct OwnedRef(NonNull<Header>);

// SAFETY: objects are shared between threads by design; their payloads are thread-safe and
// their counts are touched only through the build's strategy. Moving one to another thread is
// what the free-threaded builds' epoch does with retired references (any thread may drop them,
// the counts being atomic or biased). In the `gil` build the count is non-atomic, so an
// `OwnedRef` is dropped only with the GIL held: by a payload's drop inside a release (which
// runs under a decref's token), by a writer, or by the last `ReadGuard` (both attached).
unsafe impl Send for OwnedRef {}
// SAFETY: `&OwnedRef` only reads the pointer.
unsafe impl Sync for OwnedRef {}

impl OwnedRef {
    /// Takes over a reference the caller owns.
    ///
    /// # Safety
    /// The caller owns one reference to the object and hands it over.
    pub(crate) unsafe fn from_raw(object: NonNull<Header>) -> Self {
        Self(object)
    }

    pub(crate) fn as_ptr(&self) -> NonNull<Header> {
        self.0
    }

    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let object = self.0;
        std::mem::forget(self);
        object
    }
}

impl Drop for OwnedRef {
    fn drop(&mut self) {
        // SAFETY: this owns a reference; payloads are dropped either under the GIL (gil build:
        // the dropping thread freed the container while holding it) or in a free-threaded
        // build, where the token proves nothing.
        unsafe { decref(self.0, assume_token()) };
    }
}

/// A strong reference to an object, usable while the thread is attached (like PyO3's
/// `Bound<'py, PyAny>`): cloning and dropping it count without further checks.
pub struct Obj<'py> {
    ptr: NonNull<Header>,
    _attached: PhantomData<Python<'py>>,
}

impl<'py> Obj<'py> {
    /// Wraps a reference the caller owns.
    ///
    /// # Safety
    /// The caller owns one reference to a live object and hands it over.
    pub(crate) unsafe fn from_owned(ptr: NonNull<Header>) -> Self {
        Obj {
            ptr,
            _attached: PhantomData,
        }
    }

    /// A new reference to a live object.
    ///
    /// # Safety
    /// The object stays alive until the increment (the caller holds or protects a reference).
    pub(crate) unsafe fn from_borrowed(py: Python<'py>, ptr: NonNull<Header>) -> Self {
        // SAFETY: alive per the caller.
        unsafe { incref(ptr, py.count_token()) };
        Obj {
            ptr,
            _attached: PhantomData,
        }
    }

    pub(crate) fn ptr(&self) -> NonNull<Header> {
        self.ptr
    }

    pub(crate) fn into_raw(self) -> NonNull<Header> {
        let ptr = self.ptr;
        std::mem::forget(self);
        ptr
    }

    pub(crate) fn into_owned_ref(self) -> OwnedRef {
        // SAFETY: `self` owns one reference, handed over.
        unsafe { OwnedRef::from_raw(self.into_raw()) }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: this reference keeps the object alive.
        unsafe { header(self.ptr) }
    }

    /// The `Python` token this reference is tied to.
    pub fn py(&self) -> Python<'py> {
        // SAFETY: an `Obj<'py>` exists only while its thread is attached for `'py`.
        unsafe { Python::assume_attached() }
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        self.header().ty.kind
    }

    /// The name of the object's type (`int`, `list`, a class's name...).
    pub fn type_name(&self) -> &'static str {
        self.header().ty.name
    }

    /// Whether both are the same object (Python's `is`).
    pub fn is(&self, other: &Obj<'_>) -> bool {
        self.ptr == other.ptr
    }

    /// The object's reference count, like `sys.getrefcount` (minus the argument's own
    /// reference, which Python's version adds): this reference counts as one.
    pub fn refcount(&self) -> RefCountValue {
        <BuildCount as RefCount>::get(&self.header().count, self.py().count_token())
    }

    /// Whether the object is immortal (never freed; counting does nothing).
    pub fn is_immortal(&self) -> bool {
        self.refcount() == RefCountValue::Immortal
    }

    /// A handle that can cross threads, for sharing the object.
    pub fn unbind(self) -> Shared {
        Shared(self.into_raw())
    }
}

impl Clone for Obj<'_> {
    #[inline]
    fn clone(&self) -> Self {
        // SAFETY: this reference keeps the object alive.
        unsafe { Obj::from_borrowed(self.py(), self.ptr) }
    }
}

impl Drop for Obj<'_> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference, given up here.
        unsafe { decref(self.ptr, self.py().count_token()) };
    }
}

impl std::fmt::Debug for Obj<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: this reference keeps the object alive for the call.
        unsafe { crate::display::fmt_object(self.ptr, f) }
    }
}

/// A strong reference that can move between threads (like PyO3's `Py<PyAny>`). Bind it to an
/// attached thread to use it. Dropping it attaches briefly if needed.
pub struct Shared(NonNull<Header>);

// SAFETY: objects are thread-safe; the count is touched only through `bind`/`drop`, which attach.
unsafe impl Send for Shared {}
// SAFETY: as above; `&Shared` only allows `bind` and `clone_ref`, which take a `Python`, and
// `Debug`, which reads the object with the right to: attached in the `gil` build (reading without
// the GIL would race with its holder's writes), lock-free under an epoch pin in the free-threaded
// builds (as every lock-free reader does).
unsafe impl Sync for Shared {}

impl Shared {
    /// A new attached reference to the object.
    pub fn bind<'py>(&self, py: Python<'py>) -> Obj<'py> {
        // SAFETY: this handle keeps the object alive.
        unsafe { Obj::from_borrowed(py, self.0) }
    }

    /// Turns this handle into an attached reference without counting.
    pub fn into_bound(self, _py: Python<'_>) -> Obj<'_> {
        let ptr = self.0;
        std::mem::forget(self);
        // SAFETY: this handle's reference is handed over.
        unsafe { Obj::from_owned(ptr) }
    }

    /// Another handle to the same object.
    pub fn clone_ref(&self, py: Python<'_>) -> Shared {
        self.bind(py).unbind()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let ptr = self.0;
        // SAFETY: this handle owns one reference; attached, the token is genuine.
        Python::attach(|py| unsafe { decref(ptr, py.count_token()) });
    }
}

impl std::fmt::Debug for Shared {
    /// Prints from any thread: in the `gil` build a thread that is not attached attaches (takes
    /// the GIL) for the print; the free-threaded builds read lock-free under an epoch pin.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: this handle keeps the object alive for the call.
        unsafe { crate::display::fmt_object(self.0, f) }
    }
}

/// A reference that does not count, from a borrowed read ([`Obj::get_attr_borrowed`],
/// [`Obj::dict_get_borrowed`]). It lives no longer than both the container handle it was read
/// from (which keeps the container, and what is still in it, alive) and the [`ReadGuard`] it was
/// read under (which keeps alive what a writer removes meanwhile, on any thread). Reading a value
/// every thread shares this way touches no shared cache line: see `docs/objects.md`.
///
/// It cannot outlive the container handle:
///
/// ```compile_fail,E0505
/// use ftrt_gil::Python;
/// use ftrt_object::{Obj, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let key = Obj::intern(py, "k");
///     let dict = Obj::dict(py);
///     dict.dict_set(&key, Obj::float(py, 2.5)).unwrap();
///     let borrowed = dict.dict_get_borrowed(&key, &guard).unwrap();
///     drop(dict); // would free the value
///     assert_eq!(borrowed.to_f64(), Ok(2.5));
/// });
/// ```
///
/// ```compile_fail,E0597
/// use ftrt_gil::Python;
/// use ftrt_object::{Obj, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let name = Obj::intern(py, "x");
///     let borrowed = {
///         let point = Obj::class(py, "Point").unwrap().instantiate().unwrap();
///         point.set_attr(&name, Obj::float(py, 2.5)).unwrap();
///         point.get_attr_borrowed(&name, &guard).unwrap()
///     };
///     assert_eq!(borrowed.to_f64(), Ok(2.5));
/// });
/// ```
///
/// nor the guard:
///
/// ```compile_fail,E0505
/// use ftrt_gil::Python;
/// use ftrt_object::{Obj, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let key = Obj::intern(py, "k");
///     let dict = Obj::dict(py);
///     dict.dict_set(&key, Obj::float(py, 2.5)).unwrap();
///     let borrowed = dict.dict_get_borrowed(&key, &guard).unwrap();
///     drop(guard);
///     dict.dict_del(&key).unwrap(); // would free the value
///     assert_eq!(borrowed.to_f64(), Ok(2.5));
/// });
/// ```
///
/// [`ReadGuard`]: crate::ReadGuard
#[derive(Clone, Copy)]
pub struct Borrowed<'g> {
    ptr: NonNull<Header>,
    /// Borrows the container handle and the read guard for `'g`.
    _borrows: PhantomData<&'g ()>,
}

impl<'g> Borrowed<'g> {
    /// # Safety
    /// The object stays alive for `'g` (the caller borrows, for `'g`, a reference to the
    /// container that held it and a `ReadGuard` it was loaded under).
    pub(crate) unsafe fn new(ptr: NonNull<Header>) -> Self {
        Self {
            ptr,
            _borrows: PhantomData,
        }
    }

    /// The value of an `int` (or `bool`).
    pub fn to_i64(&self) -> crate::Result<i64> {
        // SAFETY: alive for `'g`.
        unsafe { crate::scalars::read_i64(self.ptr) }
    }

    /// The value of a `float` (or `int`).
    pub fn to_f64(&self) -> crate::Result<f64> {
        // SAFETY: alive for `'g`.
        unsafe { crate::scalars::read_f64(self.ptr) }
    }

    /// The text of a `str`, borrowed for as long as the borrow itself.
    pub fn to_str(&self) -> crate::Result<&'g str> {
        // SAFETY: alive for `'g`, and a string's text never changes.
        unsafe { crate::string::read_str(self.ptr) }
    }

    /// Whether both are the same object.
    pub fn is(&self, other: &Obj<'_>) -> bool {
        self.ptr == other.ptr()
    }

    /// The object's kind.
    pub fn kind(&self) -> Kind {
        // SAFETY: alive for `'g`.
        unsafe { header(self.ptr) }.ty.kind
    }

    /// A counted reference to the object, which may outlive the borrow.
    pub fn to_owned<'py>(&self, py: Python<'py>) -> Obj<'py> {
        // SAFETY: alive for `'g`, so until after the increment.
        unsafe { Obj::from_borrowed(py, self.ptr) }
    }
}

impl std::fmt::Debug for Borrowed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: alive for `'g`, which covers the call.
        unsafe { crate::display::fmt_object(self.ptr, f) }
    }
}
