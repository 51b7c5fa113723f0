//! Per-thread counters, summed over every thread: a generic part of the thread state for the
//! crates above (the object model counts live objects per kind in slots `0..11`). Each thread
//! adds to a row of its own, inside its block, with plain loads and stores (no locked
//! instructions, no shared cache line, one pointer from the thread-local), and
//! [`total`](counters::total) sums the rows. When a thread exits its row is folded into a
//! retired row, so a count made on one thread and undone on another still sums to zero. Exact
//! once the counting threads are joined (or otherwise synchronised with the reader).
//!
//! ```
//! use ftrt_gil::counters;
//!
//! let before = counters::total(counters::SLOTS - 1);
//! counters::add(counters::SLOTS - 1, 2);
//! std::thread::spawn(|| counters::add(counters::SLOTS - 1, -1)).join().unwrap();
//! assert_eq!(counters::total(counters::SLOTS - 1), before + 1);
//! ```

use super::*;

/// How many counters each thread has.
pub const SLOTS: usize = 16;

/// Aligned to two cache lines (the prefetcher's pair on x86) so that two threads' rows never
/// share a line.
#[repr(align(128))]
pub(crate) struct Row([AtomicIsize; SLOTS]);

/// A live thread's row, in its boxed block.
struct LiveRow(*const Row);
// SAFETY: only a pointer to atomics; `total` reads through it under `LIVE`'s lock, and a row
// leaves `LIVE` (under that lock) before its block is freed.
unsafe impl Send for LiveRow {}

/// The rows of every thread whose block is alive.
static LIVE: Mutex<Vec<LiveRow>> = Mutex::new(Vec::new());
/// The sums of the rows of exited threads, and the counts made by threads without a block
/// (after their exit). Written with atomic adds: any thread may write it.
static RETIRED: Row = Row::new();

impl Row {
    pub(super) const fn new() -> Self {
        Row([const { AtomicIsize::new(0) }; SLOTS])
    }

    /// Lists `row` for [`total`].
    ///
    /// # Safety
    /// `row` stays where it is, alive, until [`Row::retire`]: [`total`] reads every
    /// listed row.
    pub(super) unsafe fn register(row: &Row) {
        lock_live().push(LiveRow(row));
    }

    /// Folds `row` into the retired sums and unlists it, in one step under the lock, so a
    /// reader counts it exactly once. Called when nothing adds to it any more.
    pub(super) fn retire(row: &Row) {
        let mut live = lock_live();
        for (sum, cell) in RETIRED.0.iter().zip(&row.0) {
            sum.fetch_add(cell.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        live.retain(|listed| !std::ptr::eq(listed.0, row));
    }
}

fn lock_live() -> std::sync::MutexGuard<'static, Vec<LiveRow>> {
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Adds `delta` to counter `slot` of the calling thread. One thread-local access.
///
/// # Panics
/// If `slot >= SLOTS`.
#[inline]
pub fn add(slot: usize, delta: isize) {
    with_current(|state| match state {
        Some(state) => {
            // Only this thread writes its row, so load + store cannot lose an update.
            let cell = &state.counters.0[slot];
            cell.store(cell.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
        }
        None => {
            RETIRED.0[slot].fetch_add(delta, Ordering::Relaxed);
        }
    });
}

/// The sum of counter `slot` over every thread that ever counted.
///
/// # Panics
/// If `slot >= SLOTS`.
pub fn total(slot: usize) -> isize {
    let live = lock_live();
    live.iter()
        // SAFETY: a listed row is alive: it is unlisted under this lock before its block is
        // freed (`Row::retire`, from the block's owner before the exit sequence).
        .map(|row| unsafe { &*row.0 }.0[slot].load(Ordering::Relaxed))
        .sum::<isize>()
        + RETIRED.0[slot].load(Ordering::Relaxed)
}
