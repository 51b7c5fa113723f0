//! The registry of tracked objects: every live object that may hold references has a slot in
//! one global table, and its index in the object's head (`header::GcHead`), except local
//! objects listed for their thread's collections, which take one only when they leave the list
//! (free-threaded builds; see `gc::track`).
//!
//! Tracking is on the allocation path of every container, so it takes no lock and no atomic
//! read-modify-write: a thread takes indexes from a free list of its own (in its thread state,
//! an `ftrt_gil::local` key) and writes the object's pointer into the slot with a plain store;
//! freeing clears the slot and gives the index to the freeing thread's list. Lists are refilled
//! 256 indexes at a time, from indexes other threads gave back or from fresh ones, and a list
//! that grows past 4,096 (a thread that frees what others made) gives half back. The collector
//! walks the slots below the high-water mark in a stopped world, which orders every thread's
//! stores before its loads.
//!
//! The table is a fixed row of lazily allocated chunks, so slots never move: 2^18 chunks of
//! 2^12 slots, 2^30 tracked objects at most (8 GiB of slots; a program that reaches that many
//! live containers has run out of memory first).

use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicPtr, AtomicU32, Ordering};
use std::sync::Mutex;

use crate::header::Header;

/// The index of an object that is not tracked (an immortal one).
pub(crate) const UNTRACKED: u32 = u32::MAX;

const CHUNK_BITS: u32 = 12;
const CHUNK: usize = 1 << CHUNK_BITS;
const MAX_CHUNKS: usize = 1 << 18;
/// Indexes a thread takes at once when its list is empty.
const REFILL: u32 = 256;
/// The most indexes a thread keeps; past it, it gives half back.
const KEEP: usize = 4096;

type Chunk = [AtomicPtr<Header>; CHUNK];

static CHUNKS: [AtomicPtr<Chunk>; MAX_CHUNKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; MAX_CHUNKS];
/// Every index below it has been handed out at least once.
static HIGH: AtomicU32 = AtomicU32::new(0);
/// Indexes threads gave back (too many kept, or at exit).
static SPARE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A thread's free indexes, dropped (given back) at its exit.
struct FreeIndexes(Vec<u32>);

impl Drop for FreeIndexes {
    fn drop(&mut self) {
        spare().append(&mut self.0);
    }
}

static FREE: ftrt_gil::local::Key<RefCell<FreeIndexes>> =
    ftrt_gil::local::Key::new(|| RefCell::new(FreeIndexes(Vec::new())));

fn spare() -> std::sync::MutexGuard<'static, Vec<u32>> {
    SPARE.lock().unwrap_or_else(|e| e.into_inner())
}

fn slot(index: u32) -> &'static AtomicPtr<Header> {
    let chunk = CHUNKS[(index >> CHUNK_BITS) as usize].load(Ordering::Acquire);
    // SAFETY: a chunk is installed before any index in it is handed out (`fresh_indexes`), and
    // chunks are never freed.
    unsafe { &(*chunk)[index as usize & (CHUNK - 1)] }
}

/// Tracks `object`: returns its index.
///
/// # Safety
/// `object` is alive, of a type that holds references, and untracked ([`untrack`], with this
/// index) before it is freed: collections read every tracked object. The calling thread is
/// attached, or the world is stopped, or the caller holds the live lists' lock (a thread's exit,
/// detached): a stopped-world collection walks the slots without a lock of their own, and it
/// takes the live lists' lock before it reads them.
#[inline]
pub(crate) unsafe fn track(object: NonNull<Header>) -> u32 {
    let index = FREE
        .with_current(|free| {
            let mut free = free?.try_borrow_mut().ok()?;
            Some(match free.0.pop() {
                Some(index) => index,
                None => refill(&mut free.0),
            })
        })
        .unwrap_or_else(index_without_free_list);
    slot(index).store(object.as_ptr(), Ordering::Relaxed);
    index
}

/// One index, for a thread whose free list is gone (a container made or published in a
/// thread-local destructor) or in use: a spare one, else a fresh one. One at a time: the list it
/// would refill is gone, so the rest of a batch would be lost. (An exit's many local objects take
/// theirs through [`track_all`].)
#[cold]
fn index_without_free_list() -> u32 {
    if let Some(index) = spare().pop() {
        return index;
    }
    fresh_indexes(1)
}

/// Stops tracking the object at `index` (it is being freed).
///
/// # Safety
/// `index` is the one [`track`] or [`track_all`] gave an object being freed, untracked once:
/// the slot goes back to the free indexes. The calling thread is attached, or the world is
/// stopped, as for [`track`].
#[inline]
pub(crate) unsafe fn untrack(index: u32) {
    slot(index).store(std::ptr::null_mut(), Ordering::Relaxed);
    let kept = FREE.with_current(|free| {
        let mut free = free?.try_borrow_mut().ok()?;
        free.0.push(index);
        if free.0.len() > KEEP {
            let half = free.0.len() / 2;
            spare().extend(free.0.drain(half..));
        }
        Some(())
    });
    if kept.is_none() {
        spare().push(index);
    }
}

/// Fills `free` with indexes (spare ones first, else fresh ones, installing their chunk) and
/// returns one more.
#[cold]
fn refill(free: &mut Vec<u32>) -> u32 {
    {
        let mut spare = spare();
        let take = spare.len().min(REFILL as usize);
        let at = spare.len() - take;
        free.extend(spare.drain(at..));
    }
    if let Some(index) = free.pop() {
        return index;
    }
    let first = fresh_indexes(REFILL);
    free.extend((first + 1..first + REFILL).rev());
    first
}

/// Tracks every object of `objects` at once (a thread's exit, a full collection), in two steps
/// however many there are: spare indexes first, then one batch of fresh ones. Calls `tracked`
/// with each object and its index.
///
/// # Safety
/// As for [`track`], for each object.
#[cfg_attr(ftrt_gil_build, allow(dead_code))] // the free-threaded builds' local objects
pub(crate) unsafe fn track_all(
    objects: &[NonNull<Header>],
    mut tracked: impl FnMut(NonNull<Header>, u32),
) {
    let mut indexes = {
        let mut spare = spare();
        let at = spare.len().saturating_sub(objects.len());
        spare.split_off(at)
    };
    let rest = objects.len() - indexes.len();
    if rest > 0 {
        let rest = u32::try_from(rest).expect("more than 2^30 tracked objects");
        let first = fresh_indexes(rest);
        indexes.extend(first..first + rest);
    }
    for (&object, index) in objects.iter().zip(indexes) {
        slot(index).store(object.as_ptr(), Ordering::Relaxed);
        tracked(object, index);
    }
}

/// Hands out `count` indexes never handed out before, with their chunks installed: returns the
/// first.
fn fresh_indexes(count: u32) -> u32 {
    let first = HIGH.fetch_add(count, Ordering::Relaxed);
    let last = first
        .checked_add(count - 1)
        .filter(|&last| ((last >> CHUNK_BITS) as usize) < MAX_CHUNKS)
        .expect("more than 2^30 tracked objects");
    // Single indexes (`index_without_free_list`) and `track_all`'s batches of any length leave
    // batches unaligned: one may span several chunks.
    for chunk in first >> CHUNK_BITS..=last >> CHUNK_BITS {
        install(chunk as usize);
    }
    first
}

fn install(chunk: usize) {
    if !CHUNKS[chunk].load(Ordering::Acquire).is_null() {
        return;
    }
    let fresh: Box<Chunk> = Box::new([const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNK]);
    let fresh = Box::into_raw(fresh);
    // Release: whoever loads the chunk sees its slots initialised.
    if CHUNKS[chunk]
        .compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: made just above and never shared.
        drop(unsafe { Box::from_raw(fresh) });
    }
}

/// The number of indexes handed out so far: every tracked object's index is below it.
pub(crate) fn high() -> u32 {
    HIGH.load(Ordering::Acquire)
}

/// Visits every tracked object, by index. Meant for a stopped world, where nothing tracks or
/// untracks meanwhile.
pub(crate) fn for_each(mut visit: impl FnMut(u32, NonNull<Header>)) {
    let high = high();
    for chunk in 0..high.div_ceil(CHUNK as u32) {
        let slots = CHUNKS[chunk as usize].load(Ordering::Acquire);
        if slots.is_null() {
            continue;
        }
        // SAFETY: installed chunks are never freed.
        let slots = unsafe { &*slots };
        for (i, slot) in slots.iter().enumerate() {
            if let Some(object) = NonNull::new(slot.load(Ordering::Relaxed)) {
                visit((chunk << CHUNK_BITS) + i as u32, object);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Batches are no longer aligned to chunks (single indexes come between them), so a batch
    /// installs every chunk it spans; one longer than a chunk spans two or three.
    #[test]
    fn a_batch_of_fresh_indexes_has_every_chunk_it_spans_installed() {
        let count = CHUNK as u32 + 1;
        let first = fresh_indexes(count);
        for index in [first, first + count / 2, first + count - 1] {
            let chunk = CHUNKS[(index >> CHUNK_BITS) as usize].load(Ordering::Acquire);
            assert!(!chunk.is_null(), "index {index}'s chunk is installed");
        }
        assert!(high() >= first + count);
    }
}
