//! Live-object counts per kind, always on and cheap enough to leave on.
//!
//! Each thread counts in a block of its own with plain loads and stores (no locked
//! instructions, no shared cache line: allocation-heavy workloads must still scale); a reader
//! sums every thread's block. An object freed on another thread than the one that made it
//! leaves one block at +1 and the other at −1; the sum is what counts. Exact once the threads
//! that touched the objects are joined (or otherwise synchronised with the reader).

use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::header::Kind;

const KINDS: usize = Kind::ALL.len();

/// Aligned to two cache lines (the prefetcher's pair on x86) so that two threads' blocks never
/// share a line: counting is per-thread precisely so that threads do not write shared lines.
#[repr(align(128))]
struct Block {
    live: [AtomicIsize; KINDS],
}

impl Block {
    fn new() -> Self {
        Self {
            live: std::array::from_fn(|_| AtomicIsize::new(0)),
        }
    }
}

/// Every block any thread registered; blocks outlive their threads.
static BLOCKS: Mutex<Vec<Arc<Block>>> = Mutex::new(Vec::new());
/// Counts made during thread-local teardown, when a thread's block is gone.
static LATE: [AtomicIsize; KINDS] = [const { AtomicIsize::new(0) }; KINDS];

thread_local! {
    static MINE: Arc<Block> = {
        let block = Arc::new(Block::new());
        BLOCKS.lock().unwrap_or_else(|e| e.into_inner()).push(block.clone());
        block
    };
}

fn bump(kind: Kind, delta: isize) {
    let i = kind.index();
    let counted = MINE.try_with(|block| {
        // Only this thread writes its block, so load + store cannot lose an update.
        let cell = &block.live[i];
        cell.store(cell.load(Ordering::Relaxed) + delta, Ordering::Relaxed);
    });
    if counted.is_err() {
        LATE[i].fetch_add(delta, Ordering::Relaxed);
    }
}

pub(crate) fn allocated(kind: Kind) {
    bump(kind, 1);
}

pub(crate) fn freed(kind: Kind) {
    bump(kind, -1);
}

/// How many objects of `kind` are alive (allocated and not yet freed), immortal ones included.
pub fn live_objects(kind: Kind) -> isize {
    let i = kind.index();
    let blocks = BLOCKS.lock().unwrap_or_else(|e| e.into_inner());
    blocks
        .iter()
        .map(|b| b.live[i].load(Ordering::Relaxed))
        .sum::<isize>()
        + LATE[i].load(Ordering::Relaxed)
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
