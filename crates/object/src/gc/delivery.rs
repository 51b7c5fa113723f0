//! Handing garbage back to the threads that made it.
//!
//! Freeing an object on a thread other than the one that made it costs twice: the biased
//! count's last references go through the shared count and the owner's queue, and the
//! allocator frees into another thread's heap, which that thread must collect before it can
//! reuse the memory. A collection on one thread frees everyone's garbage, so in the biased
//! build an automatic collection keeps only its own thread's share (and objects without an
//! owner) and *delivers* the rest: each owner frees its share at its next quiescent state
//! (every 16th checkpoint, or when it detaches, unless it unwinds). A share nobody claimed by
//! the next collection is freed by that collection, so garbage waits at most one collection
//! interval, also for an owner that stays detached or has exited; in a program that stops
//! making objects there may be no next automatic collection, and the share waits for
//! [`collect`](super::collect) or `ftrt_object::collect` (`take_unclaimed`). Shares waiting
//! during a collection count among its survivors.
//!
//! Only the work moves here: every object delivered carries the reference the collection took
//! in the stopped world (before any share was cleared, so that clearing one share cannot free
//! an object of another), and whoever takes a share frees it exactly as the collector would.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, Once};

use ftrt_gil::Python;

use crate::header::Header;

/// Garbage waiting for its owner thread.
struct Share {
    owner: u32,
    objects: Vec<NonNull<Header>>,
}

// SAFETY: the objects are unreachable from every thread, and the share holds the collection's
// reference to each; whichever thread takes the share is the only one to touch them.
unsafe impl Send for Share {}

static SHARES: Mutex<Vec<Share>> = Mutex::new(Vec::new());
/// Whether `SHARES` may hold something: the quiescent-state hook's one load when it does not.
static PENDING: AtomicBool = AtomicBool::new(false);

fn lock_shares() -> MutexGuard<'static, Vec<Share>> {
    SHARES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Hands `objects` (unreachable, each with the collection's reference) to thread `owner`.
///
/// # Safety
/// As for `free_garbage`, which runs on them later: each object is unreachable garbage,
/// holding a reference the collection took, which goes with it.
pub(super) unsafe fn deliver(owner: u32, objects: Vec<NonNull<Header>>) {
    static REGISTERED: Once = Once::new();
    REGISTERED.call_once(|| {
        crate::reclaim::register_quiescent_state_hook(free_delivered);
    });
    lock_shares().push(Share { owner, objects });
    // Relaxed: a hint; the shares themselves are handed over under the mutex.
    PENDING.store(true, Ordering::Relaxed);
}

/// Takes every share not claimed yet: a collection frees what the last one delivered and its
/// owner did not take, as does `ftrt_object::collect`. A share delivered before the call (in
/// the order of happens-before) is seen: the flag's store then precedes its load.
pub(super) fn take_unclaimed() -> Vec<NonNull<Header>> {
    if !PENDING.load(Ordering::Relaxed) {
        return Vec::new();
    }
    let mut shares = lock_shares();
    PENDING.store(false, Ordering::Relaxed);
    shares.drain(..).flat_map(|share| share.objects).collect()
}

/// The quiescent-state hook: frees the shares delivered to this thread. A thread that detaches
/// to answer a stop frees its share first, and the stopper waits for it: a large share delays
/// the stop (that wait is not part of the reported pause).
fn free_delivered() {
    if !PENDING.load(Ordering::Relaxed) {
        return;
    }
    // The hook runs on attached threads; attaching again is free.
    Python::attach(|py| {
        let Some(me) = py.thread_id() else {
            return;
        };
        let mine: Vec<NonNull<Header>> = {
            let mut shares = lock_shares();
            let mut mine = Vec::new();
            shares.retain_mut(|share| {
                if share.owner == me {
                    mine.append(&mut share.objects);
                    false
                } else {
                    true
                }
            });
            if shares.is_empty() {
                PENDING.store(false, Ordering::Relaxed);
            }
            mine
        };
        // SAFETY: delivered garbage, each with the collection's reference (`deliver`'s
        // contract); this is its owner's thread.
        unsafe { super::free_garbage(py, &mine, true) };
    })
}
