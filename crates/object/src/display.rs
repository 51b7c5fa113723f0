//! `Debug` output in Python's `repr` style: one guard for the whole print, then each object's
//! type's `repr` slot (see `slots`).

use std::fmt::{self, Formatter};
use std::ptr::NonNull;

use crate::header::Header;
use crate::slots::Repr;

/// Writes `object` as Python's `repr`.
///
/// The whole print is one read: the writer behind `f` may be user code that mutates what is
/// being printed (pops the list, deletes a key) or lets other threads run, and nothing the print
/// has loaded may be freed before it ends. So it runs under one guard that keeps whatever writers
/// remove alive until the print is over:
///
/// - free-threaded builds: an epoch pin (reads need no attachment there, so a `Shared` may be
///   printed from any thread), and a read open on this thread (`ftrt_gil::local::readers`), for
///   writes to local containers, which skip the epoch when no read is open;
/// - `gil` build: attached (re-entrant, so free for an attached thread; a `Shared` printed from
///   another thread takes the GIL, since reading without it races with its holder's writes) and
///   under a [`ReadGuard`](crate::ReadGuard), which defers removals.
///
/// # Safety
/// `object` is alive for the call (the caller holds a reference to it).
pub(crate) unsafe fn fmt_object(object: NonNull<Header>, f: &mut Formatter<'_>) -> fmt::Result {
    #[cfg(ftrt_gil_build)]
    {
        ftrt_gil::Python::attach(|py| {
            let reader = crate::guard::ReadGuard::new(py);
            // SAFETY: alive per the caller; `reader` keeps removed items alive for the print.
            unsafe { Repr::new(reader.epoch()).object(object, f) }
        })
    }
    #[cfg(not(ftrt_gil_build))]
    {
        // The print is a read open on this thread until it ends, panics included: a write the
        // writer makes meanwhile to a local container must not free what it removes at once.
        let _open = ftrt_gil::local::OpenRead::new();
        let guard = crossbeam_epoch::pin();
        // SAFETY: alive per the caller; `guard` keeps removed items alive for the print.
        unsafe { Repr::new(&guard).object(object, f) }
    }
}
