//! Live-object counts per kind, always on and cheap enough to leave on.
//!
//! Each thread counts in its thread state's row of counters (`ftrt_gil::counters`, one slot per
//! kind) with plain loads and stores (no locked instructions, no shared cache line:
//! allocation-heavy workloads must still scale); a reader sums every thread's row. An object freed
//! on another thread than the one that made it leaves one block at +1 and the other at −1; the sum
//! is what counts. Exact once the threads that touched the objects are joined (or otherwise
//! synchronised with the reader).

use crate::header::Kind;

const _: () = assert!(
    Kind::ALL.len() <= ftrt_gil::counters::SLOTS,
    "one per-thread counter per kind"
);

/// Counter `kind.index()` of the thread state's per-thread counters (`ftrt_gil::counters`).
#[inline]
fn bump(kind: Kind, delta: isize) {
    ftrt_gil::counters::add(kind.index(), delta);
}

// Inline, like `bump`: called on every allocation and free, from the crates whose code inlines
// the allocation (a workload's `PyInt::new`), where an out-of-line call is a call through the GOT.
#[inline]
pub(crate) fn allocated(kind: Kind) {
    bump(kind, 1);
}

pub(crate) fn freed(kind: Kind) {
    bump(kind, -1);
}

/// How many objects of `kind` are alive (allocated and not yet freed), immortal ones included.
pub fn live_objects(kind: Kind) -> isize {
    ftrt_gil::counters::total(kind.index())
}

/// Live objects of every kind together.
pub fn live_total() -> isize {
    Kind::ALL.iter().map(|&k| live_objects(k)).sum()
}

/// A snapshot of every kind's live count, for comparing before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObjects(pub Vec<(Kind, isize)>);

impl LiveObjects {
    /// The counts now.
    pub fn now() -> Self {
        Self(Kind::ALL.iter().map(|&k| (k, live_objects(k))).collect())
    }
}
