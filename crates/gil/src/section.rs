//! Critical sections on the runtime's objects: free under the GIL, `ftrt_lock::section`
//! otherwise.
//!
//! Whether a section needs its lock is the runtime's decision, made here where the token proves
//! the thread is attached: in the `gil` build an attached thread holds the GIL, which already
//! serialises every section body, so [`with`] and [`with2`] just call the closure; in the
//! free-threaded builds they are [`ftrt_lock::section::with`] and [`ftrt_lock::section::with2`].
//! Either way a section's body is atomic up to the points where it blocks or detaches (a nested
//! section that waits, [`Python::check`] switching, [`Python::allow_threads`]), as
//! `ftrt_lock::section` documents.
//!
//! Exclusion holds between users of this module, which are all attached. A lock taken here must
//! not also be taken through `ftrt_lock` directly by a thread that may not be attached: in the
//! `gil` build that section would lock and this one would not. `ftrt-object` keeps its objects'
//! locks private for this reason. `ftrt_lock::section` itself always locks, in every build.
//!
//! ```
//! use ftrt_gil::{section, Python};
//! use ftrt_lock::RawObjectLock;
//!
//! let lock = RawObjectLock::new();
//! let answer = Python::attach(|py| section::with(py, &lock, || 42));
//! assert_eq!(answer, 42);
//! ```

use ftrt_lock::RawObjectLock;

use crate::Python;

/// Runs `f` inside a critical section on `lock`: no lock is taken in the `gil` build (the
/// token proves this thread holds the GIL), `ftrt_lock::section::with` otherwise.
#[inline]
pub fn with<R>(py: Python<'_>, lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    let _ = py;
    #[cfg(feature = "gil")]
    {
        let _ = lock;
        f()
    }
    #[cfg(not(feature = "gil"))]
    {
        ftrt_lock::section::with(lock, f)
    }
}

/// Runs `f` inside a critical section on two locks (the same one twice is fine): no lock is
/// taken in the `gil` build, `ftrt_lock::section::with2` otherwise.
#[inline]
pub fn with2<R>(py: Python<'_>, a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    let _ = py;
    #[cfg(feature = "gil")]
    {
        let _ = (a, b);
        f()
    }
    #[cfg(not(feature = "gil"))]
    {
        ftrt_lock::section::with2(a, b, f)
    }
}
