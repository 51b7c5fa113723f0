//! Thread identities, the owners' merge queues and the registry that finds them.
//!
//! Every thread that creates a biased object gets an id from a global counter the first time it
//! needs one. Ids are never reused: an OS thread id or a TLS address can be recycled by a later
//! thread, and a recycled identity would let that thread count non-atomically on objects whose
//! real owner has exited. With a fresh id per thread, "the owner is not in the registry" reliably
//! means "the owner has exited", and an exited owner's objects are merged by whoever queues them.
//!
//! A thread's record lives in a thread-local whose destructor retires the thread: it marks the
//! thread detached (it owns nothing from then on), removes its queue from the registry and merges
//! everything queued to it, so no object is stranded when its owner exits, panics included.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use super::BiasedCount;
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};

/// The value of a header's owner field once the object has been merged (or was never owned).
pub(crate) const NO_OWNER: u32 = 0;
/// The first id handed out.
const FIRST_ID: u32 = 1;
/// A thread that has not needed an id yet. Never stored in a header.
const UNASSIGNED: u32 = u32::MAX - 1;
/// A thread that owns nothing: it is exiting, or ids ran out. Never stored in a header.
const DETACHED: u32 = u32::MAX;
/// Ids are handed out up to and including this one; later threads run detached.
const LAST_ID: u32 = u32::MAX - 2;

/// How an object whose count reached zero is freed. Called with the pointer the object was
/// queued with, exactly once, on whichever thread settles the count.
pub type Release = unsafe fn(NonNull<BiasedCount>);

/// An object queued for its owner, holding the reference the queuing thread gave up.
pub(crate) struct Queued {
    pub(crate) count: NonNull<BiasedCount>,
    pub(crate) release: Release,
}

// SAFETY: an entry is a reference to an object that is shared between threads (it was queued by a
// thread that is not its owner), so the object is already `Send + Sync` in the sense its container
// requires (`BiasedArc<T>` demands `T: Send + Sync` to cross threads). The entry only ever touches
// the count atomically, and `release` runs once the count says no other reference exists.
unsafe impl Send for Queued {}

/// The objects other threads queued for one owner to merge.
pub(crate) struct Queue {
    entries: Mutex<Vec<Queued>>,
    /// Set when an entry is pushed, so the owner's safe points can check with one load.
    pending: AtomicBool,
}

impl Queue {
    fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
        }
    }

    fn push(&self, entry: Queued) {
        self.entries.lock().push(entry);
        // Relaxed: the flag is only a hint; the entries themselves are published by the mutex.
        self.pending.store(true, Ordering::Relaxed);
    }

    /// Takes one entry. One at a time, so that an entry taken out of the queue is merged before
    /// any user code (a value's destructor) runs: `try_take_unique` relies on that.
    fn pop(&self) -> Option<Queued> {
        let mut entries = self.entries.lock();
        let entry = entries.pop();
        if entries.is_empty() {
            self.pending.store(false, Ordering::Relaxed);
        }
        entry
    }

    /// Merges every queued object and frees those whose count reached zero.
    fn merge_all(&self) -> usize {
        let mut merged = 0;
        while let Some(entry) = self.pop() {
            // SAFETY: the entry holds a (queued) reference, so the object is alive until this
            // merge settles it; `settle_queued` frees it exactly when no other reference remains.
            unsafe { BiasedCount::settle_queued(entry) };
            merged += 1;
        }
        merged
    }
}

/// Retires its thread when the thread-local storage is torn down, panics included.
struct OwnerRecord {
    id: u32,
    queue: Arc<Queue>,
}

impl Drop for OwnerRecord {
    fn drop(&mut self) {
        retire(self.id, &self.queue);
    }
}

fn retire(id: u32, queue: &Queue) {
    // The queue's flag is about to go away with the record.
    set_pending_flag(std::ptr::null());
    // First stop owning: from here on this thread counts its old objects on the shared side,
    // which is what other threads assume once the id leaves the registry below.
    set_current(DETACHED);
    registry::remove(id);
    // Pushers find the queue only through the registry, under its lock, so after `remove` no
    // entry can arrive any more: this drains the queue for good.
    queue.merge_all();
}

#[cfg(not(loom))]
thread_local! {
    static CURRENT: Cell<u32> = const { Cell::new(UNASSIGNED) };
    static OWNER: RefCell<Option<OwnerRecord>> = const { RefCell::new(None) };
    /// The `pending` flag of this thread's queue while its record lives (null otherwise), so
    /// that the safe point in every object creation is one thread-local load and one relaxed
    /// load, without borrowing the record.
    static PENDING: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

#[cfg(not(loom))]
fn set_pending_flag(flag: *const AtomicBool) {
    PENDING.with(|p| p.set(flag));
}

#[cfg(loom)]
fn set_pending_flag(_flag: *const AtomicBool) {}

#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Cell<u32> = Cell::new(UNASSIGNED);
    static OWNER: RefCell<Option<OwnerRecord>> = RefCell::new(None);
}

/// The calling thread's id as it stands: a real id only once the thread has registered.
/// Compared against header owner fields, which hold only real ids or `NO_OWNER`, so an
/// unregistered or detached thread never matches.
#[inline(always)]
pub(crate) fn current() -> u32 {
    // The id cell has no destructor, so std keeps it reachable through every TLS destructor.
    #[cfg(not(loom))]
    return CURRENT.with(Cell::get);
    // loom tears down every thread-local, in no particular order: a torn-down id reads as
    // detached.
    #[cfg(loom)]
    return CURRENT.try_with(Cell::get).unwrap_or(DETACHED);
}

fn set_current(id: u32) {
    #[cfg(not(loom))]
    CURRENT.with(|c| c.set(id));
    #[cfg(loom)]
    let _ = CURRENT.try_with(|c| c.set(id));
}

/// The owner to record in a new object's header: this thread, registering it if needed, or
/// `NO_OWNER` when the thread is detached (the object then starts out merged).
#[inline]
pub(crate) fn owner_for_new_object() -> u32 {
    match current() {
        UNASSIGNED => register_current(),
        DETACHED => NO_OWNER,
        id => id,
    }
}

#[cold]
#[inline(never)]
fn register_current() -> u32 {
    let Some(id) = allocate_id() else {
        set_current(DETACHED);
        return NO_OWNER;
    };
    let queue = Arc::new(Queue::new());
    // Registered before the id is used in any header, so a non-owner that finds the id in a
    // header and not in the registry knows the owner has exited.
    registry::insert(id, queue.clone());
    let flag: *const AtomicBool = &queue.pending;
    let stored = OWNER.try_with(|slot| *slot.borrow_mut() = Some(OwnerRecord { id, queue }));
    if stored.is_err() {
        // Thread-local storage is being torn down: this thread cannot be retired later, so it
        // must not own anything.
        registry::remove(id);
        set_current(DETACHED);
        return NO_OWNER;
    }
    // The record now owns the queue (an `Arc`, so the flag does not move) until `retire`.
    set_pending_flag(flag);
    set_current(id);
    id
}

fn allocate_id() -> Option<u32> {
    registry::next_id()
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
            (id <= LAST_ID).then(|| id + 1)
        })
        .ok()
}

/// Queues `entry` for the owner `owner`. Gives the entry back when the owner has exited.
pub(crate) fn queue_for_owner(owner: u32, entry: Queued) -> Result<(), Queued> {
    registry::push(owner, entry)
}

/// Whether the thread `id` has retired (exited, or called [`detach_current_thread`]): it will
/// never write a header's `local` again. `id` must come from a header the caller reached through a
/// reference it holds: ids are registered before they are written into any header and never
/// reused, so an id missing from the registry has been removed for good. The registry's lock
/// orders the retirement, and so the owner's last write to `local`, before the caller's next
/// reads.
pub(crate) fn has_retired(id: u32) -> bool {
    !registry::contains(id)
}

fn own_queue() -> Option<Arc<Queue>> {
    OWNER
        .try_with(|slot| slot.borrow().as_ref().map(|record| record.queue.clone()))
        .ok()
        .flatten()
}

/// Merges every object other threads have queued for the calling thread, freeing those whose
/// last reference was dropped elsewhere. Returns how many objects were merged.
///
/// Owners merge at their safe points: when they create a new object, when they call this, and
/// when they exit. A long-running thread that stops creating objects but keeps receiving
/// references back from other threads should call this now and then.
pub fn merge_pending() -> usize {
    own_queue().map_or(0, |queue| queue.merge_all())
}

/// Merges the queue if another thread has pushed to it since the last merge. One relaxed load
/// when there is nothing to do.
#[inline]
pub(crate) fn merge_if_pending() {
    #[cfg(not(loom))]
    {
        let flag = PENDING.with(Cell::get);
        // SAFETY: non-null only while this thread's record, which owns the queue holding the
        // flag, is alive: set after the record is stored, cleared first thing in `retire`.
        if !flag.is_null() && unsafe { &*flag }.load(Ordering::Relaxed) {
            merge_pending();
        }
    }
    #[cfg(loom)]
    let pending = OWNER.try_with(|slot| {
        slot.borrow()
            .as_ref()
            .is_some_and(|record| record.queue.pending.load(Ordering::Relaxed))
    });
    #[cfg(loom)]
    if matches!(pending, Ok(true)) {
        merge_pending();
    }
}

/// Retires the calling thread now instead of at thread exit: merges its queue and gives up
/// ownership of every object it owns (other threads merge those as they meet them). Objects the
/// thread creates afterwards start out shared. Runtimes call this when a thread leaves them;
/// doing nothing is also correct, since thread exit does the same.
pub fn detach_current_thread() {
    if let Ok(Some(record)) = OWNER.try_with(|slot| slot.borrow_mut().take()) {
        drop(record);
    } else {
        set_current(DETACHED);
    }
}

/// The owner registry: thread id to queue. A concurrent map in production, a plain mutex-guarded
/// map under loom (which cannot model `dashmap`'s internals); both give `push` the same guarantee:
/// the lookup and the push happen under a lock that `remove` also takes.
#[cfg(not(loom))]
mod registry {
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, LazyLock};

    use dashmap::DashMap;

    use super::{Queue, Queued, FIRST_ID};

    static QUEUES: LazyLock<DashMap<u32, Arc<Queue>>> = LazyLock::new(DashMap::new);
    static NEXT_ID: AtomicU32 = AtomicU32::new(FIRST_ID);

    pub(super) fn next_id() -> &'static AtomicU32 {
        &NEXT_ID
    }

    pub(super) fn insert(id: u32, queue: Arc<Queue>) {
        QUEUES.insert(id, queue);
    }

    pub(super) fn remove(id: u32) {
        QUEUES.remove(&id);
    }

    pub(super) fn contains(id: u32) -> bool {
        QUEUES.contains_key(&id)
    }

    pub(super) fn push(owner: u32, entry: Queued) -> Result<(), Queued> {
        // The read guard holds the shard lock across the push, so `remove` cannot slip between
        // finding the queue and pushing to it.
        match QUEUES.get(&owner) {
            Some(queue) => {
                queue.push(entry);
                Ok(())
            }
            None => Err(entry),
        }
    }
}

#[cfg(loom)]
mod registry {
    use std::collections::HashMap;

    use loom::sync::atomic::AtomicU32;

    use super::{Queue, Queued, FIRST_ID};
    use crate::sync::{Arc, Mutex};

    loom::lazy_static! {
        static ref QUEUES: Mutex<HashMap<u32, Arc<Queue>>> = Mutex::new(HashMap::new());
        static ref NEXT_ID: AtomicU32 = AtomicU32::new(FIRST_ID);
    }

    pub(super) fn next_id() -> &'static AtomicU32 {
        &NEXT_ID
    }

    pub(super) fn insert(id: u32, queue: Arc<Queue>) {
        QUEUES.lock().insert(id, queue);
    }

    pub(super) fn remove(id: u32) {
        QUEUES.lock().remove(&id);
    }

    pub(super) fn contains(id: u32) -> bool {
        QUEUES.lock().contains_key(&id)
    }

    pub(super) fn push(owner: u32, entry: Queued) -> Result<(), Queued> {
        let queues = QUEUES.lock();
        match queues.get(&owner) {
            Some(queue) => {
                queue.push(entry);
                Ok(())
            }
            None => Err(entry),
        }
    }
}
