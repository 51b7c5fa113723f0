//! `Shared<T>`: a counted reference that can move between threads (like PyO3's `Py<T>`).

use std::marker::PhantomData;
use std::ptr::NonNull;

use ftrt_gil::Python;

use crate::bound::Bound;
use crate::header::Header;
use crate::refs::decref_attaching;
use crate::types::{PyAny, PyTypeInfo};

/// A strong reference to an object of type `T` that can move between threads. Bind it to an
/// attached thread to use it. Dropping it attaches briefly if needed.
pub struct Shared<T = PyAny> {
    ptr: NonNull<Header>,
    _type: PhantomData<T>,
}

// SAFETY: objects are thread-safe; the count is touched only through `bind`/`drop`, which attach.
// `T` is a marker and holds nothing.
unsafe impl<T> Send for Shared<T> {}
// SAFETY: as above; `&Shared` only allows `bind` and `clone_ref`, which take a `Python`, and
// `Debug`, which reads the object with the right to: attached in the `gil` build (reading without
// the GIL would race with its holder's writes), lock-free under an epoch pin in the free-threaded
// builds (as every lock-free reader does).
unsafe impl<T> Sync for Shared<T> {}

impl<T: PyTypeInfo> Shared<T> {
    /// Takes over a reference the caller owns.
    ///
    /// # Safety
    /// The caller owns one reference to a live object, of a type `T` accepts, and hands it over.
    pub(crate) unsafe fn from_owned(ptr: NonNull<Header>) -> Self {
        Shared {
            ptr,
            _type: PhantomData,
        }
    }

    /// A new attached reference to the object.
    #[inline]
    pub fn bind<'py>(&self, py: Python<'py>) -> Bound<'py, T> {
        // SAFETY: this handle keeps the object, of a type `T` accepts, alive.
        unsafe { Bound::from_borrowed(py, self.ptr) }
    }

    /// Turns this handle into an attached reference without counting.
    #[inline]
    pub fn into_bound(self, _py: Python<'_>) -> Bound<'_, T> {
        let ptr = self.ptr;
        std::mem::forget(self);
        // SAFETY: this handle's reference is handed over.
        unsafe { Bound::from_owned(ptr) }
    }

    /// Another handle to the same object.
    pub fn clone_ref(&self, py: Python<'_>) -> Shared<T> {
        self.bind(py).unbind()
    }
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        // SAFETY: this handle owns one reference, given up here.
        unsafe { decref_attaching(self.ptr) };
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    /// Prints from any thread: a thread that is not attached attaches for the print (in the
    /// `gil` build it takes the GIL; in the free-threaded builds it waits while another thread
    /// stops the world or holds it alone), and reads under an epoch pin in free-threaded builds.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // SAFETY: this handle keeps the object alive for the call.
        unsafe { crate::display::fmt_object(self.ptr, f) }
    }
}
