//! `Borrowed<'g>`: a reference that does not count.

use std::marker::PhantomData;
use std::ptr::NonNull;

use ftrt_gil::Python;

use crate::bound::Bound;
use crate::error::{Error, Result};
use crate::header::{header, payload, Header, Kind};
use crate::string::StrPayload;
use crate::types::PyAny;

/// A reference that does not count, from a borrowed read ([`get_attr_borrowed`],
/// [`PyDict`'s `get_item_borrowed`](crate::Bound::get_item_borrowed)), or handed to a type's
/// slots. It lives no longer than both the container handle it was read from (which keeps the
/// container, and what is still in it, alive) and the [`ReadGuard`] it was read under (which
/// keeps alive what a writer removes meanwhile, on any thread). Reading a value every thread
/// shares this way touches no shared cache line: see `docs/objects.md`.
///
/// It cannot outlive the container handle:
///
/// ```compile_fail,E0505
/// use ftrt_gil::Python;
/// use ftrt_object::{PyDict, PyFloat, PyStr, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let key = PyStr::intern(py, "k");
///     let dict = PyDict::new(py);
///     dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
///     let borrowed = dict.get_item_borrowed(&key, &guard).unwrap();
///     drop(dict); // would free the value
///     assert_eq!(borrowed.to_f64(), Ok(2.5));
/// });
/// ```
///
/// ```compile_fail,E0597
/// use ftrt_gil::Python;
/// use ftrt_object::{PyClass, PyFloat, PyStr, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let name = PyStr::intern(py, "x");
///     let borrowed = {
///         let point = PyClass::new(py, "Point").unwrap().instantiate();
///         point.set_attr(&name, PyFloat::new(py, 2.5)).unwrap();
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
/// use ftrt_object::{PyDict, PyFloat, PyStr, ReadGuard};
///
/// Python::attach(|py| {
///     let guard = ReadGuard::new(py);
///     let key = PyStr::intern(py, "k");
///     let dict = PyDict::new(py);
///     dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
///     let borrowed = dict.get_item_borrowed(&key, &guard).unwrap();
///     drop(guard);
///     dict.del_item(&key).unwrap(); // would free the value
///     assert_eq!(borrowed.to_f64(), Ok(2.5));
/// });
/// ```
///
/// [`ReadGuard`]: crate::ReadGuard
/// [`get_attr_borrowed`]: crate::Bound::get_attr_borrowed
#[derive(Clone, Copy)]
pub struct Borrowed<'g> {
    ptr: NonNull<Header>,
    /// Borrows the container handle and the read guard (or the slot call) for `'g`.
    _borrows: PhantomData<&'g ()>,
}

impl<'g> Borrowed<'g> {
    /// # Safety
    /// The object stays alive for `'g` (the caller borrows, for `'g`, a reference to the
    /// container that held it and a `ReadGuard` it was loaded under, or `'g` ends within a call
    /// during which the caller keeps it alive).
    #[inline]
    pub(crate) unsafe fn new(ptr: NonNull<Header>) -> Self {
        Self {
            ptr,
            _borrows: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn ptr(&self) -> NonNull<Header> {
        self.ptr
    }

    /// The value of an `int` (or `bool`).
    #[inline]
    pub fn to_i64(&self) -> Result<i64> {
        // SAFETY: alive for `'g`.
        unsafe { crate::scalars::read_i64(self.ptr) }
    }

    /// The value of a `float` (or `int`, or `bool`).
    #[inline]
    pub fn to_f64(&self) -> Result<f64> {
        // SAFETY: alive for `'g`.
        unsafe { crate::scalars::read_f64(self.ptr) }
    }

    /// The text of a `str`, borrowed for as long as the borrow itself.
    pub fn to_str(&self) -> Result<&'g str> {
        if self.kind() != Kind::Str {
            return Err(Error::TypeError(format!(
                "expected str, got '{}' object",
                self.type_name()
            )));
        }
        // SAFETY: alive for `'g`, a `str` (checked), and a string's text never changes.
        Ok(&unsafe { payload::<StrPayload>(self.ptr) }.text)
    }

    /// Whether both are the same object.
    #[inline]
    pub fn is(&self, other: &Bound<'_, PyAny>) -> bool {
        self.ptr == other.ptr()
    }

    /// The object's kind.
    #[inline]
    pub fn kind(&self) -> Kind {
        // SAFETY: alive for `'g`.
        unsafe { header(self.ptr) }.ty.kind
    }

    /// The name of the object's type.
    pub fn type_name(&self) -> &'static str {
        // SAFETY: alive for `'g`; type objects are `'static`.
        unsafe { header(self.ptr) }.ty.name
    }

    /// A counted reference to the object, which may outlive the borrow.
    #[inline]
    pub fn to_owned<'py>(&self, py: Python<'py>) -> Bound<'py, PyAny> {
        // SAFETY: alive for `'g`, so until after the increment.
        unsafe { Bound::from_borrowed(py, self.ptr) }
    }
}

impl std::fmt::Debug for Borrowed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: alive for `'g`, which covers the call.
        unsafe { crate::display::fmt_object(self.ptr, f) }
    }
}
