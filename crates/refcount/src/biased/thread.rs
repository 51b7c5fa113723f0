//! Thread identities, the owners' merge queues and the registry that finds them.
//!
//! The registry is the one table of threads a runtime needs: besides each owner's queue it keeps
//! a payload the runtime registered with it ([`LocalCounts::register_with`]), which
//! [`for_each_registered`] visits. ftrt's runtime keeps its thread information there.
//!
//! A thread's part in the protocol is a plain value, [`LocalCounts`]: a never-reused id and the
//! merge queue other threads hand its objects back through. [`LocalCounts::register`] takes an id
//! from a global counter and enters the queue in the registry; dropping the value retires the
//! thread (it stops owning, leaves the registry and merges everything queued to it, or, if it is
//! parked, leaves that to the threads that queue to it), so no object is stranded when its owner
//! goes. [`LocalCounts::owner`] is the token the counting functions take
//! ([`BiasedCount::new_for`], [`incref_for`](BiasedCount::incref_for),
//! [`decref_for`](BiasedCount::decref_for)). A runtime keeps one `LocalCounts` in its own
//! per-thread state and passes the token along (ftrt does, in `ftrt-gil`'s thread state).
//!
//! Ids are never reused: an OS thread id or a TLS address can be recycled by a later thread, and
//! a recycled identity would let that thread count non-atomically on objects whose real owner has
//! exited. With a fresh id per thread, "the owner is not in the registry" reliably means "the
//! owner has exited", and an exited owner's objects are merged by whoever queues them.
//!
//! Standalone users ([`BiasedArc`](crate::BiasedArc), [`BiasedCount::new`] and the other methods
//! without a token) get the thread-local convenience of the `default` submodule: a `LocalCounts`
//! registered the first time the thread creates an object and retired by a thread-local
//! destructor at thread exit, panics included.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::BiasedCount;
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering};

mod batch;
mod default;
mod queue;

pub use batch::drop_batch;
pub(crate) use default::{current, merge_current_if_pending, owner_for_new_object};
pub use default::{detach_current_thread, merge_pending, with_current_owner};
#[cfg(all(test, not(loom)))]
pub(super) use queue::WAITING_TO_UNPARK;
use queue::{drop_catching, resume_first, Panic};
pub(crate) use queue::{Queue, Queued};

/// The value of a header's owner field once the object has been merged (or was never owned).
pub(crate) const NO_OWNER: u32 = 0;
/// The first id handed out.
const FIRST_ID: u32 = 1;
/// A thread that has not needed an id yet (thread-local convenience only). Never stored in a
/// header.
pub(crate) const UNASSIGNED: u32 = u32::MAX - 1;
/// A thread that owns nothing: it has retired, or ids ran out. Never stored in a header.
pub(crate) const DETACHED: u32 = u32::MAX;
/// The owner field of a deferred count ([`BiasedCount::defer_counting`]): no thread's id, and
/// no value a thread compares owner fields against (`UNASSIGNED`, `DETACHED`).
pub(crate) const DEFERRED_OWNER: u32 = u32::MAX - 2;
/// Ids are handed out up to and including this one; later threads run detached.
const LAST_ID: u32 = u32::MAX - 3;

const _: () = assert!(
    FIRST_ID > NO_OWNER
        && LAST_ID < DEFERRED_OWNER
        && DEFERRED_OWNER < UNASSIGNED
        && UNASSIGNED < DETACHED,
    "no thread's id is a header's NO_OWNER or DEFERRED_OWNER"
);

/// How an object whose count reached zero is freed. Called with the pointer the object was
/// queued with, exactly once, on whichever thread settles the count.
pub type Release = unsafe fn(NonNull<BiasedCount>);

/// One thread's part in the biased protocol, as a plain value: its never-reused id and its merge
/// queue, entered in the registry. Dropping it retires the thread (see [`retire`](Self::retire)).
///
/// Not `Send`: the id stands for the thread that registered it, and only that thread may count
/// non-atomically on the objects it owns. A thread may hold several (each is a separate owner
/// to the protocol), but a runtime gives each of its threads exactly one.
pub struct LocalCounts {
    /// A real id, or `DETACHED` when ids ran out (the thread then owns nothing).
    id: u32,
    queue: Arc<Queue>,
    _not_send: PhantomData<*const ()>,
}

impl LocalCounts {
    /// Takes a fresh id and registers its merge queue. Should ids ever run out (2^32 − 4
    /// registrations), the value owns nothing: objects created with it start out shared.
    pub fn register() -> Self {
        Self::register_with(|_| None)
    }

    /// [`register`](Self::register), with a payload the registry keeps beside the queue until
    /// the value retires: what a runtime knows about its threads (ftrt's `ThreadInfo`), so that
    /// the runtime needs no registry of its own. `info` gets the fresh id; it is not called
    /// when ids ran out. [`for_each_registered`] visits the payloads.
    pub fn register_with(info: impl FnOnce(u32) -> Option<Info>) -> Self {
        let queue = Arc::new(Queue::new());
        let Some(id) = allocate_id() else {
            return Self::with_id(DETACHED, queue);
        };
        // Registered before the id is used in any header, so a non-owner that finds the id in a
        // header and not in the registry knows the owner has retired.
        registry::insert(id, queue.clone(), info(id));
        Self::with_id(id, queue)
    }

    fn with_id(id: u32, queue: Arc<Queue>) -> Self {
        Self {
            id,
            queue,
            _not_send: PhantomData,
        }
    }

    /// The id recorded in the headers of the objects this thread owns: never reused, never zero.
    /// `None` if ids ran out.
    pub fn id(&self) -> Option<u32> {
        (self.id != DETACHED).then_some(self.id)
    }

    /// The token the counting functions take: "the calling thread is this owner".
    #[inline(always)]
    pub fn owner(&self) -> Owner<'_> {
        Owner {
            id: self.id,
            queue: Some(&self.queue),
            _not_send: PhantomData,
        }
    }

    /// Merges every object other threads have queued for this owner, freeing those whose last
    /// reference was dropped elsewhere. Returns how many were merged. [`BiasedCount::new_for`]
    /// merges on its own when something is pending; a thread that stops creating objects but
    /// keeps receiving references back should call this now and then.
    pub fn merge_pending(&self) -> usize {
        self.queue.merge_all()
    }

    /// Parks this owner: a promise that the thread counts nothing through this owner until
    /// [`unpark`](Self::unpark) (a runtime's detached thread counts nothing at all).
    /// Meanwhile, a thread that drops the last reference to one of its objects merges that
    /// object itself instead of queueing it, so the object is freed then, on that thread, not
    /// when the owner comes back. What is queued already is merged first, on this thread, as a
    /// [`merge_pending`](Self::merge_pending) would. A runtime parks a thread for the time it is
    /// detached. Parking twice is the same as once.
    ///
    /// A release that panics in the merge (a value's destructor) unwinds out of `park` once the
    /// rest of the queue is merged; the owner is parked all the same.
    ///
    /// # Safety
    /// Until `unpark`, the calling thread must not create, count or merge any biased object
    /// through this owner (its `Owner` token, [`merge_pending`](Self::merge_pending)): other
    /// threads write the `local` counts of its objects while it is parked. (The releases that
    /// `park`'s own merge runs may count through it: the owner parks only once that merge is
    /// over.)
    pub unsafe fn park(&self) {
        if self.id != DETACHED {
            resume_first(self.queue.park());
        }
    }

    /// Ends a [`park`](Self::park): waits for the threads merging objects on this owner's
    /// behalf, if any, to finish (a thread in a [`drop_batch`] that merged one of them, until
    /// its batch ends), after which only this thread merges what is queued to it again.
    /// Unparking an owner that is not parked does nothing. Called from a release that such a
    /// merge runs on this thread (one of its objects dropped through another owner while it is
    /// parked), or inside a batch of drops on this thread that merged one of its objects, it
    /// waits for ever.
    pub fn unpark(&self) {
        self.queue.unpark();
    }

    /// Retires the owner now (what dropping it does): it stops owning, so its objects are
    /// counted on their shared side from now on, leaves the registry, and merges everything
    /// queued to it, unless it is parked, when nothing is queued (the threads that dropped its
    /// objects since the park merged them, as they do for a parked owner): a parked owner's
    /// retirement frees nothing on its own thread. Objects it still owned are merged by whichever
    /// thread meets them next.
    ///
    /// # Panics
    /// With the first panic of a value's destructor run by the merge (or of the registry
    /// payload's, dropped after it), once the whole queue is merged; only reported by the panic
    /// hook if the thread is unwinding already.
    pub fn retire(mut self) {
        let panicked = self.retire_catching();
        drop(self);
        resume_first(panicked);
    }

    /// Retires the owner unless it has retired already (then does nothing), and hands back the
    /// first panic of a destructor its merge ran, for the caller to resume or to report only.
    fn retire_catching(&mut self) -> Option<Panic> {
        let id = std::mem::replace(&mut self.id, DETACHED);
        if id == DETACHED {
            return None;
        }
        if self.queue.is_parked() {
            // Parked, it stays parked: its queue is empty (a park ends with an empty queue),
            // every object dropped for it since the park is merged by the thread that dropped
            // it, which holds the queue through its `Arc`, and after `remove` no entry can
            // arrive. So retiring merges nothing here and frees nothing on this thread. A runtime
            // retires its threads parked, at exit, where nothing counts (no attachment, so a stop
            // of the world does not wait for it): unparking here to drain the queue let another
            // thread queue to it between the unpark and the `remove`, and the drain then freed that
            // object unattached, under a stopped world's collector.
            return drop_catching(registry::remove(id), None);
        }
        // Not parked, so no thread merges on this owner's behalf (`settling` is nonzero only
        // while parked or inside `unpark`): after `remove` this value drains the queue alone.
        // No `Owner` borrowed from this value is alive (they borrow it), so nothing counts as
        // this owner any more: leaving the registry is what tells other threads.
        let payload = registry::remove(id);
        // Pushers find the queue only through the registry, under its lock, so after `remove` no
        // entry can arrive any more: this drains the queue for good.
        let panicked = self.queue.merge_all_catching().1;
        // Dropped after the drain, which no panic of its destructor can then cut short.
        drop_catching(payload, panicked)
    }
}

impl Drop for LocalCounts {
    /// Retires the owner ([`retire`](LocalCounts::retire)). A destructor's panic in the merge
    /// unwinds out of the drop, unless the thread is unwinding already (a second panic would
    /// abort the process): then the panic hook's report of it is all that is left. Kept in a
    /// thread-local and dropped at the thread's exit, a panic out of the drop aborts the process
    /// (std's rule for thread-local destructors): a runtime whose values' destructors may panic
    /// retires parked there, or calls [`retire`](LocalCounts::retire) inside `catch_unwind`.
    fn drop(&mut self) {
        resume_first(self.retire_catching());
    }
}

impl std::fmt::Debug for LocalCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCounts")
            .field("id", &self.id())
            .finish()
    }
}

/// Proof of which owner the calling thread is, for the counting functions: borrowed from the
/// thread's [`LocalCounts`] (so it cannot outlive it), or [`Owner::detached`], which owns
/// nothing.
///
/// Neither `Send` nor `Sync`: on another thread it would count the owner's objects with plain
/// stores, racing with the owner, and lose counts.
///
/// ```compile_fail,E0277
/// fn assert_send<T: Send>(_: &T) {}
/// let counts = ftrt_refcount::biased::LocalCounts::register();
/// assert_send(&counts.owner());
/// ```
///
/// ```compile_fail,E0277
/// fn assert_sync<T: Sync>(_: &T) {}
/// let counts = ftrt_refcount::biased::LocalCounts::register();
/// assert_sync(&counts.owner());
/// ```
#[derive(Clone, Copy)]
pub struct Owner<'a> {
    id: u32,
    /// The owner's queue, for the safe point in object creation. `None` for a detached owner
    /// and for the thread-local convenience's increments and decrements, which need only the id.
    queue: Option<&'a Queue>,
    /// Stays on its thread (a shared reference to the queue alone would be `Send`).
    _not_send: PhantomData<*const ()>,
}

impl Owner<'static> {
    /// An owner that owns nothing: objects created with it start out shared, and every count is
    /// changed atomically. What a thread uses once its own state is gone (thread exit).
    pub const fn detached() -> Self {
        Owner {
            id: DETACHED,
            queue: None,
            _not_send: PhantomData,
        }
    }

    /// The thread-local convenience's id, for increments and decrements (which never need the
    /// queue). Only this crate makes these, from the calling thread's own id.
    #[inline(always)]
    pub(crate) fn current_id(id: u32) -> Self {
        Owner {
            id,
            queue: None,
            _not_send: PhantomData,
        }
    }
}

impl<'a> Owner<'a> {
    /// The id this token counts as: its thread's, or [`detached`](Owner::detached)'s, which no
    /// object's count records. For a runtime that keeps it where its hot path reaches it in one
    /// load, to make counting tokens from with [`assume_counting_as`](Self::assume_counting_as).
    #[inline(always)]
    pub const fn counting_id(self) -> u32 {
        self.id
    }

    /// A token that counts as the owner whose [`counting_id`](Self::counting_id) is `id`,
    /// without the owner's queue: [`BiasedCount::incref_for`] and
    /// [`decref_for`](BiasedCount::decref_for) take it like the owner's own token, but
    /// [`BiasedCount::new_for`] with it skips the safe point where creation merges the queue,
    /// so make objects with [`LocalCounts::owner`]'s token.
    ///
    /// The point is the hot path: a runtime that keeps the id in a thread-local of its own
    /// reaches it with one load, instead of a load of its thread state and then of the id.
    ///
    /// # Safety
    /// `id` is the `counting_id` of [`Owner::detached`], or of the token of a [`LocalCounts`]
    /// that the calling thread registered, and that stays registered (not dropped or retired)
    /// and unparked for all of `'a`. Counting as another thread's id would change that thread's
    /// local count without atomics while it does too, and while the owner is parked other
    /// threads merging its queue do the same (see [`LocalCounts::park`]).
    #[inline(always)]
    pub const unsafe fn assume_counting_as(id: u32) -> Self {
        Owner {
            id,
            queue: None,
            _not_send: PhantomData,
        }
    }

    /// The id to compare header owner fields against. `DETACHED` never matches a header.
    #[inline(always)]
    pub(crate) fn id(self) -> u32 {
        self.id
    }

    /// The owner for a new object's header: this one, or `NO_OWNER` (start out merged).
    #[inline(always)]
    pub(crate) fn for_new_object(self) -> u32 {
        if self.id == DETACHED {
            NO_OWNER
        } else {
            self.id
        }
    }

    /// The safe point in object creation: merges the queue if another thread has pushed to it.
    /// One relaxed load when there is nothing to do.
    #[inline(always)]
    pub(crate) fn merge_if_pending(self) {
        if let Some(queue) = self.queue {
            if queue.pending.load(Ordering::Relaxed) {
                queue.merge_all();
            }
        }
    }
}

impl std::fmt::Debug for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Owner")
            .field(&(self.id != DETACHED).then_some(self.id))
            .finish()
    }
}

fn allocate_id() -> Option<u32> {
    registry::next_id()
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |id| {
            (id <= LAST_ID).then(|| id + 1)
        })
        .ok()
}

/// Whether the owner with id `id` is unparking and waiting for merges other threads run on its
/// behalf ([`LocalCounts::unpark`] with drops of its objects merged elsewhere under way). A
/// snapshot, read under the queue's lock, so `true` means the owner has reached that wait;
/// `false` for an id not registered. It exists for tests, which spin on it instead of sleeping
/// to let the owner get there.
#[doc(hidden)]
pub fn unpark_waiting_for_merges(id: u32) -> bool {
    registry::queue(id).is_some_and(|queue| queue.state.lock().unpark_waiting)
}

/// A payload registered with an owner ([`LocalCounts::register_with`]).
pub type Info = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// Calls `f` with the id and payload of every registered owner (the thread-local convenience's
/// included, whose payload is `None`), read one registry shard at a time: every owner registered
/// before the call and not retired before its shard is read, and perhaps some registered during
/// the call. `f` runs with no lock held, so it may register, retire and count; an owner it
/// visits may have retired since. (Under `--cfg loom` the registry is one mutex, held across
/// `f`: no model may register or retire from `f`.)
pub fn for_each_registered(f: impl FnMut(u32, Option<&Info>)) {
    registry::for_each(f);
}

/// Queues `entry` for the owner `owner`, or merges it on this thread if the owner is parked.
/// Gives the entry back, for the caller to merge, when the owner has exited, or when this
/// thread's [`drop_batch`] holds the owner parked (or found it exited) already.
pub(crate) fn queue_for_owner(owner: u32, entry: Queued) -> Result<(), Queued> {
    if batch::holds(owner) {
        return Err(entry);
    }
    match registry::push(owner, entry) {
        Ok(None) => Ok(()),
        Ok(Some((parked, entry))) => {
            batch::settle_for_parked_owner(owner, parked, entry);
            Ok(())
        }
        Err(entry) => {
            batch::found_retired(owner);
            Err(entry)
        }
    }
}

/// Whether the thread `id` has retired (dropped its [`LocalCounts`]: exited, or called
/// [`detach_current_thread`]): it will never write a header's `local` again. `id` must come from
/// a header the caller reached through a reference it holds: ids are registered before they are
/// written into any header and never reused, so an id missing from the registry has been removed
/// for good. The registry's lock orders the retirement, and so the owner's last write to
/// `local`, before the caller's next reads.
pub(crate) fn has_retired(id: u32) -> bool {
    !registry::contains(id)
}

/// The owner registry: thread id to queue. A concurrent map in production, a plain mutex-guarded
/// map under loom (which cannot model `dashmap`'s internals); both give `push` the same guarantee:
/// the lookup and the push happen under a lock that `remove` also takes.
#[cfg(not(loom))]
mod registry {
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, LazyLock};

    use dashmap::DashMap;

    use super::{Info, Queue, Queued, FIRST_ID};

    /// One owner: its queue, and its runtime's payload.
    struct Entry {
        queue: Arc<Queue>,
        info: Option<Info>,
    }

    static QUEUES: LazyLock<DashMap<u32, Entry>> = LazyLock::new(DashMap::new);
    static NEXT_ID: AtomicU32 = AtomicU32::new(FIRST_ID);

    #[cfg(test)]
    thread_local! {
        /// How many times this thread looked an owner up to hand it an object, for tests.
        pub(in crate::biased) static LOOKUPS: std::cell::Cell<usize> =
            const { std::cell::Cell::new(0) };
    }

    pub(super) fn next_id() -> &'static AtomicU32 {
        &NEXT_ID
    }

    pub(super) fn insert(id: u32, queue: Arc<Queue>, info: Option<Info>) {
        QUEUES.insert(id, Entry { queue, info });
    }

    /// Takes the owner out; returns its payload, for the caller to drop once it has drained the
    /// queue (outside the shard lock, and after the drain: it may be the last handle to a value
    /// whose destructor panics).
    pub(super) fn remove(id: u32) -> Option<Info> {
        QUEUES.remove(&id).and_then(|(_, entry)| entry.info)
    }

    pub(super) fn for_each(mut f: impl FnMut(u32, Option<&Info>)) {
        // A snapshot, so that `f` runs with no shard locked: it may register, retire, or drop
        // a reference that queues to an owner, each of which locks a shard.
        let entries: Vec<(u32, Option<Info>)> = QUEUES
            .iter()
            .map(|entry| (*entry.key(), entry.value().info.clone()))
            .collect();
        for (id, info) in &entries {
            f(*id, info.as_ref());
        }
    }

    pub(super) fn contains(id: u32) -> bool {
        QUEUES.contains_key(&id)
    }

    /// The owner's queue, cloned out so that no shard stays locked.
    pub(super) fn queue(id: u32) -> Option<Arc<Queue>> {
        QUEUES.get(&id).map(|entry| entry.queue.clone())
    }

    /// Pushes to the owner's queue; when its owner is parked, returns the queue and the entry
    /// instead, for the caller to merge once the shard lock is let go (merging frees objects,
    /// which may push again).
    pub(super) fn push(owner: u32, entry: Queued) -> Result<Option<(Arc<Queue>, Queued)>, Queued> {
        #[cfg(test)]
        LOOKUPS.with(|lookups| lookups.set(lookups.get() + 1));
        // The read guard holds the shard lock across the push, so `remove` cannot slip between
        // finding the queue and pushing to it.
        match QUEUES.get(&owner) {
            Some(found) => Ok(found
                .queue
                .push(entry)
                .map(|entry| (found.queue.clone(), entry))),
            None => Err(entry),
        }
    }
}

#[cfg(loom)]
mod registry {
    use std::collections::HashMap;

    use loom::sync::atomic::AtomicU32;

    use super::{Info, Queue, Queued, FIRST_ID};
    use crate::sync::{Arc, Mutex};

    /// An owner's queue and payload.
    type Entry = (Arc<Queue>, Option<Info>);

    loom::lazy_static! {
        static ref QUEUES: Mutex<HashMap<u32, Entry>> =
            Mutex::new(HashMap::new());
        static ref NEXT_ID: AtomicU32 = AtomicU32::new(FIRST_ID);
    }

    pub(super) fn next_id() -> &'static AtomicU32 {
        &NEXT_ID
    }

    pub(super) fn insert(id: u32, queue: Arc<Queue>, info: Option<Info>) {
        QUEUES.lock().insert(id, (queue, info));
    }

    pub(super) fn remove(id: u32) -> Option<Info> {
        let removed = QUEUES.lock().remove(&id);
        removed.and_then(|(_, info)| info)
    }

    pub(super) fn for_each(mut f: impl FnMut(u32, Option<&Info>)) {
        for (id, (_, info)) in QUEUES.lock().iter() {
            f(*id, info.as_ref());
        }
    }

    pub(super) fn contains(id: u32) -> bool {
        QUEUES.lock().contains_key(&id)
    }

    pub(super) fn queue(id: u32) -> Option<Arc<Queue>> {
        QUEUES.lock().get(&id).map(|(queue, _)| queue.clone())
    }

    pub(super) fn push(owner: u32, entry: Queued) -> Result<Option<(Arc<Queue>, Queued)>, Queued> {
        let queues = QUEUES.lock();
        match queues.get(&owner) {
            Some((queue, _)) => Ok(queue.push(entry).map(|entry| (queue.clone(), entry))),
            None => Err(entry),
        }
    }
}
