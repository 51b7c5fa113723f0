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
/// - free-threaded builds: attached (re-entrant, so free for an attached thread; a `Shared`
///   printed from a detached thread attaches, since a thread holding the world alone frees what
///   its writes remove at once, which only attached readers and open reads that left the world
///   hold back), with an epoch pin, and a read open on this thread (`ftrt_gil::local::readers`),
///   for writes that skip the epoch when no read is open (to local containers, or by a thread
///   holding the world alone);
/// - `gil` build: attached (a `Shared` printed from another thread takes the GIL, since reading
///   without it races with its holder's writes) and under a [`ReadGuard`](crate::ReadGuard),
///   which defers removals.
///
/// # Safety
/// `object` is alive for the call (the caller holds a reference to it).
pub(crate) unsafe fn fmt_object(object: NonNull<Header>, f: &mut Formatter<'_>) -> fmt::Result {
    #[cfg(ftrt_gil_build)]
    {
        ftrt_gil::Python::attach(|py| {
            let reader = crate::guard::ReadGuard::new(py);
            // SAFETY: alive per the caller; `reader` keeps removed items alive for the print
            // (a `ReadGuard` defers every removal while it lives).
            unsafe { Repr::new(reader.epoch()).object(object, f) }
        })
    }
    #[cfg(not(ftrt_gil_build))]
    {
        ftrt_gil::Python::attach(|_| {
            // The print is a read open on this thread until it ends, panics included: a write
            // the writer makes meanwhile must not free what it removes at once, and should the
            // writer detach, the read leaves the world counted (no hold frees at once then).
            let _open = ftrt_gil::local::OpenRead::new();
            let guard = crossbeam_epoch::pin();
            // SAFETY: alive per the caller; `guard` keeps removed items alive for the print:
            // with a read open on this thread, every write retires what it removes, and the
            // pin holds it back until the print ends.
            unsafe { Repr::new(&guard).object(object, f) }
        })
    }
}
