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
//! without a token) get the thread-local convenience at the end of this module: a `LocalCounts`
//! registered the first time the thread creates an object and retired by a thread-local
//! destructor at thread exit, panics included.

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::ptr::NonNull;

use super::BiasedCount;
use crate::sync::{Arc, AtomicBool, Condvar, Mutex, Ordering};

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

/// An object queued for its owner, holding the reference the queuing thread gave up.
pub(crate) struct Queued {
    pub(crate) count: NonNull<BiasedCount>,
    pub(crate) release: Release,
}

// SAFETY: an entry only ever touches the count atomically, and its `release` runs once the count
// says no other reference exists. A queue may be merged on another thread (a parked owner's, by
// its pushers), which `decref_for`'s contract allows: every count's `release` must be safe to
// call from any thread. (Entries are usually queued by a thread that does not own the count, but
// not always: a drop as `Owner::detached()` on the owner's own thread queues to it. Nothing here
// relies on that. `BiasedArc<T>`, whose `T` may be neither `Send` nor `'static`, never queues
// through a token on its owner's thread (`drop_for` drops as the calling thread when the token
// does not own the count), and crosses threads only for `T: 'static`. A handle is covariant in
// `T`, though, so a value may be given a shorter borrow in place: `get_mut` and `make_mut` refuse
// while a drop of it is queued (merging the calling thread's queue first), so the value such an
// entry holds is never one changed in place after it was queued, and an entry never holds a
// value past what it borrows. It is settled by the convenience owner, never parked, on its own
// thread, or after that owner's exit by the dropping thread.)
unsafe impl Send for Queued {}

/// The objects other threads queued for one owner to merge.
///
/// **Parked owners.** An owner that will not count for a while (a runtime thread detached around
/// blocking work) parks its queue ([`LocalCounts::park`]): until it unparks, a thread that drops
/// the last shared reference to one of its objects merges that object itself, as it would for
/// an exited owner, instead of queueing it for the owner's next safe point. Without this, an
/// object whose last reference is dropped by another thread while its owner waits detached (a
/// main thread joining its workers) stays allocated, with everything it holds, until the owner
/// attaches again. Each such thread merges only its own object, and runs only that object's
/// release: the destructors it runs are those of what its own drop ended, as for every other
/// drop. The protocol:
/// - `parked` and `settling` live under the entries' lock. `park` first merges the queue as the
///   owner, still unparked, and sets `parked` in the lock hold that finds the queue empty: a
///   parked owner's queue stays empty.
/// - A pusher that finds `parked` set counts itself in `settling` in the same lock hold,
///   instead of pushing, and merges its entry once it has let go of every lock; it counts itself
///   out under the lock again (panics included) and wakes an `unpark` waiting for the last one.
/// - Unparking clears `parked` under the entries' lock, so that later drops queue, then waits on
///   `settled` for `settling` to reach zero: only the merges under way, however many drops
///   follow. From the moment the owner counts again, no other thread merges for it. (So
///   `settling` is nonzero only while the owner is parked or unparking.)
/// - Merges for a parked owner run side by side, each on its own object (an object is queued at
///   most once: a merge ends its ownership), and nobody writes those objects' `local` meanwhile.
/// - The entries' lock orders the owner's last writes to `local` (before `park` sets `parked`)
///   before every such merge, and every such merge before the owner's next count (after
///   `unpark` finds `settling` at zero).
pub(crate) struct Queue {
    state: Mutex<QueueState>,
    /// Set when an entry is pushed, so the owner's safe points can check with one load.
    pending: AtomicBool,
    /// Notified when the last merge for the parked owner ends, for an `unpark` waiting on it.
    settled: Condvar,
}

struct QueueState {
    entries: Vec<Queued>,
    parked: bool,
    /// Threads merging an entry of their own for the parked owner.
    settling: usize,
    /// Set while the owner's `unpark` waits for `settling` to reach zero. Read only by
    /// [`unpark_waiting_for_merges`], which exists for tests.
    unpark_waiting: bool,
}

impl Queue {
    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(QueueState {
                entries: Vec::new(),
                parked: false,
                settling: 0,
                unpark_waiting: false,
            }),
            pending: AtomicBool::new(false),
            settled: Condvar::new(),
        }
    }

    /// Pushes an entry, unless the owner is parked: then the entry comes back, and the caller,
    /// counted in `settling` from this lock hold on, must hand it to
    /// [`settle_for_parked_owner`](Self::settle_for_parked_owner) once it holds no registry
    /// lock (merging frees objects, which may queue again).
    fn push(&self, entry: Queued) -> Option<Queued> {
        let mut state = self.state.lock();
        if state.parked {
            state.settling += 1;
            return Some(entry);
        }
        state.entries.push(entry);
        // Relaxed: the flag is only a hint; the entries themselves are published by the mutex.
        self.pending.store(true, Ordering::Relaxed);
        None
    }

    /// Takes one entry. One at a time, so that an entry taken out of the queue is merged before
    /// any user code (a value's destructor) runs: `try_take_unique` relies on that.
    fn pop(&self) -> Option<Queued> {
        Self::pop_locked(&self.pending, &mut self.state.lock())
    }

    fn pop_locked(pending: &AtomicBool, state: &mut QueueState) -> Option<Queued> {
        let entry = state.entries.pop();
        if state.entries.is_empty() {
            pending.store(false, Ordering::Relaxed);
        }
        entry
    }

    /// Merges every queued object and frees those whose count reached zero. Called only by the
    /// owner (not parked), or for an owner that has retired: the merge writes the `local` halves
    /// of the owner's objects, which only they may (a safe function, private to this module;
    /// every caller keeps to this). A release that panics (a value's destructor) does not end
    /// the drain: the first panic resumes once the queue is empty.
    fn merge_all(&self) -> usize {
        let (merged, panicked) = self.merge_all_catching();
        resume_first(panicked);
        merged
    }

    /// [`merge_all`](Self::merge_all), handing the first panic back instead of resuming it.
    fn merge_all_catching(&self) -> (usize, Option<Panic>) {
        let mut merged = 0;
        let mut panicked = None;
        while let Some(entry) = self.pop() {
            // SAFETY: popped from this queue, so merged once, here.
            unsafe { settle_catching(entry, &mut panicked) };
            merged += 1;
        }
        (merged, panicked)
    }

    /// Merges `entry`, which [`push`](Self::push) gave back because the owner is parked, on the
    /// calling thread, and counts the caller out of `settling` (panics included). A panic of
    /// the release (a value's destructor) unwinds out of here, as out of any drop.
    #[cold]
    fn settle_for_parked_owner(&self, entry: Queued) {
        /// Counts the caller out of `settling` when the merge is over, panics included: left
        /// counted, the owner's unpark would wait for ever.
        struct CountOut<'a>(&'a Queue);
        impl Drop for CountOut<'_> {
            fn drop(&mut self) {
                let mut state = self.0.state.lock();
                state.settling -= 1;
                if state.settling == 0 {
                    self.0.settled.notify_all();
                }
            }
        }
        let _count_out = CountOut(self);
        // SAFETY: the entry was given back by `push`, so it is in no queue and is merged only
        // here. The owner is parked and cannot unpark while this thread is counted in
        // `settling`, so nobody else writes `local` (the same argument as for a retired owner);
        // other threads merging for it meanwhile merge other objects.
        unsafe { BiasedCount::settle_queued(entry) };
    }

    /// Merges what is queued as the owner, and parks in the lock hold that finds the queue
    /// empty (with nothing queued, that lock hold is all a park costs: every detach parks).
    /// Returns the first panic of a release the merge ran, for after the park.
    fn park(&self) -> Option<Panic> {
        let mut panicked = None;
        // As the owner, not parked yet: entries pushed meanwhile are merged here too. The loop
        // ends: only the owner makes objects that are queued to it, and each is queued at most
        // once (its merge ends its ownership); so what others can still push is bounded by what
        // the owner owns now and what the releases run here make.
        loop {
            let entry = {
                let mut state = self.state.lock();
                match Self::pop_locked(&self.pending, &mut state) {
                    Some(entry) => entry,
                    None => {
                        state.parked = true;
                        return panicked;
                    }
                }
            };
            // SAFETY: popped from this queue, so merged once, here, by the owner (not parked).
            unsafe { settle_catching(entry, &mut panicked) };
        }
    }

    /// Whether the owner is parked (a snapshot; only the owner parks and unparks it).
    fn is_parked(&self) -> bool {
        self.state.lock().parked
    }

    /// Stops parking first, so that what is dropped from now on is queued (and writes no
    /// `local`), then waits for the merges under way: only those, however many drops follow.
    fn unpark(&self) {
        let mut state = self.state.lock();
        state.parked = false;
        while state.settling > 0 {
            state.unpark_waiting = true;
            #[cfg(all(test, not(loom)))]
            if let Some(hook) = WAITING_TO_UNPARK.get() {
                hook();
            }
            state = self.settled.wait(state);
        }
        state.unpark_waiting = false;
    }
}

#[cfg(all(test, not(loom)))]
thread_local! {
    /// Run by `unpark` on this thread each time it is about to wait for merges under way
    /// (holding the queue's lock, which the wait gives up).
    pub(super) static WAITING_TO_UNPARK: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// A panic caught while draining a queue, to resume once the drain is over.
type Panic = Box<dyn std::any::Any + Send>;

/// Settles a popped entry ([`BiasedCount::settle_queued`]), keeping the first panic of its release
/// in `panicked` instead of unwinding: a drain goes on past a panicking destructor, since
/// entries left in a queue may never be merged (a retired owner's, a parked one's). The entry
/// was merged before its release ran, so the count is settled either way.
///
/// # Safety
/// `entry` was popped from its queue, and is settled nowhere else: it holds a queued reference,
/// which keeps the object alive until this merge; `settle_queued` frees it exactly when no
/// other reference remains. And, as `settle_queued` asks, the caller is the queue's owner, or
/// the owner has retired.
unsafe fn settle_catching(entry: Queued, panicked: &mut Option<Panic>) {
    let settled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: forwarded from the caller.
        unsafe { BiasedCount::settle_queued(entry) }
    }));
    if let Err(panic) = settled {
        panicked.get_or_insert(panic);
    }
}

/// Resumes the first panic a drain caught, if any (later ones are dropped), unless the thread
/// is unwinding already, when a second panic would abort the process: the panic hook's report
/// of it is then all that is left.
fn resume_first(panicked: Option<Panic>) {
    if let Some(panic) = panicked {
        if !std::thread::panicking() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Drops a registry payload (a runtime's value, whose destructor may panic), keeping the first
/// panic: `panicked`'s, else the payload's.
fn drop_catching(payload: Option<Info>, mut panicked: Option<Panic>) -> Option<Panic> {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload))) {
        panicked.get_or_insert(panic);
    }
    panicked
}

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
    /// behalf, if any, to finish, after which only this thread merges what is queued to it
    /// again. Unparking an owner that is not parked does nothing. Called from a release that
    /// such a merge runs on this thread (one of its objects dropped through another owner
    /// while it is parked), it waits for ever.
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
/// Gives the entry back when the owner has exited.
pub(crate) fn queue_for_owner(owner: u32, entry: Queued) -> Result<(), Queued> {
    if let Some((parked, entry)) = registry::push(owner, entry)? {
        parked.settle_for_parked_owner(entry);
    }
    Ok(())
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

// The thread-local convenience: one `LocalCounts` per thread, for users without a runtime of
// their own. Everything above takes its state explicitly; everything below finds it here.

/// The convenience's `LocalCounts`, which stops the thread owning before it retires.
struct ConvenienceOwner(LocalCounts);

impl ConvenienceOwner {
    /// Stops owning and retires, handing back the first panic of a destructor the merge ran.
    fn retire_catching(&mut self) -> Option<Panic> {
        // The queue's flag goes away with the value.
        set_pending_flag(std::ptr::null());
        // First stop owning: from here on this thread counts its old objects on the shared side,
        // which is what other threads assume once the id leaves the registry in the retirement
        // right after this (merging runs destructors, which may count).
        set_current(DETACHED);
        self.0.retire_catching()
    }
}

impl Drop for ConvenienceOwner {
    /// The thread's exit (a thread-local destructor). A destructor's panic in the merge is
    /// reported by the panic hook and goes no further: out of a thread-local destructor it
    /// would abort the process, and no code of the thread is left to catch it.
    fn drop(&mut self) {
        let _reported_only = self.retire_catching();
    }
}

#[cfg(not(loom))]
thread_local! {
    /// The convenience owner's id: `UNASSIGNED` until the thread first creates an object,
    /// `DETACHED` once it retired. No destructor, so std keeps it readable through every TLS
    /// destructor.
    static CURRENT: Cell<u32> = const { Cell::new(UNASSIGNED) };
    static OWNER: RefCell<Option<ConvenienceOwner>> = const { RefCell::new(None) };
    /// The `pending` flag of the convenience owner's queue while it lives (null otherwise), so
    /// that the safe point in every object creation is one thread-local load and one relaxed
    /// load, without borrowing the owner (merging runs destructors, which may use it).
    static PENDING: Cell<*const AtomicBool> = const { Cell::new(std::ptr::null()) };
}

#[cfg(loom)]
loom::thread_local! {
    static CURRENT: Cell<u32> = Cell::new(UNASSIGNED);
    static OWNER: RefCell<Option<ConvenienceOwner>> = RefCell::new(None);
}

#[cfg(not(loom))]
fn set_pending_flag(flag: *const AtomicBool) {
    PENDING.with(|p| p.set(flag));
}

#[cfg(loom)]
fn set_pending_flag(_flag: *const AtomicBool) {}

/// The calling thread's convenience id as it stands: a real id only once the thread has
/// registered. Compared against header owner fields, which hold only real ids, `NO_OWNER` or
/// `DEFERRED_OWNER`, so an unregistered or detached thread never matches.
#[inline(always)]
pub(crate) fn current() -> u32 {
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

/// The convenience owner for a new object's header: the calling thread's, registering it if
/// needed, or `NO_OWNER` when it has retired (the object then starts out merged).
#[inline]
pub(crate) fn owner_for_new_object() -> u32 {
    match current() {
        UNASSIGNED => register_current(),
        id => Owner::current_id(id).for_new_object(),
    }
}

#[cold]
#[inline(never)]
fn register_current() -> u32 {
    let counts = LocalCounts::register();
    let Some(id) = counts.id() else {
        set_current(DETACHED);
        return NO_OWNER;
    };
    // The value owns the queue (an `Arc`, so the flag does not move) until it is dropped.
    let flag: *const AtomicBool = &counts.queue.pending;
    let mut counts = Some(ConvenienceOwner(counts));
    let stored = OWNER.try_with(|slot| *slot.borrow_mut() = counts.take());
    if stored.is_err() {
        // Thread-local storage is being torn down: this thread cannot be retired later, so it
        // must not own anything (dropping the value retires it at once).
        drop(counts);
        set_current(DETACHED);
        return NO_OWNER;
    }
    set_pending_flag(flag);
    set_current(id);
    id
}

/// The convenience's safe point: merges the queue if another thread has pushed to it since the
/// last merge. One relaxed load when there is nothing to do.
#[inline]
pub(crate) fn merge_current_if_pending() {
    #[cfg(not(loom))]
    {
        let flag = PENDING.with(Cell::get);
        // SAFETY: non-null only while the convenience owner, which owns the queue holding the
        // flag, is alive: set after it is stored, cleared first thing when it is dropped.
        if !flag.is_null() && unsafe { &*flag }.load(Ordering::Relaxed) {
            merge_pending();
        }
    }
    #[cfg(loom)]
    let pending = OWNER.try_with(|slot| {
        slot.try_borrow().is_ok_and(|owner| {
            owner
                .as_ref()
                .is_some_and(|owner| owner.0.queue.pending.load(Ordering::Relaxed))
        })
    });
    #[cfg(loom)]
    if matches!(pending, Ok(true)) {
        merge_pending();
    }
}

/// Merges every object other threads have queued for the calling thread's convenience owner
/// (the one [`BiasedCount::new`] and [`BiasedArc`](crate::BiasedArc) use), freeing those whose
/// last reference was dropped elsewhere. Returns how many objects were merged.
///
/// Owners merge at their safe points: when they create a new object, when they call this, and
/// when they exit. A long-running thread that stops creating objects but keeps receiving
/// references back from other threads should call this now and then.
pub fn merge_pending() -> usize {
    // Not run under the slot's borrow: merging frees objects, whose destructors may use the slot.
    let queue = OWNER
        .try_with(|slot| {
            slot.try_borrow()
                .ok()?
                .as_ref()
                .map(|owner| owner.0.queue.clone())
        })
        .ok()
        .flatten();
    queue.map_or(0, |queue| queue.merge_all())
}

/// Retires the calling thread's convenience owner now instead of at thread exit: merges its
/// queue and gives up ownership of every object it owns (other threads merge those as they meet
/// them). Objects the thread creates afterwards through the convenience start out shared.
/// Doing nothing is also correct, since thread exit does the same.
///
/// # Panics
/// Inside [`with_current_owner`] on this thread, whose token must keep counting as the owner
/// until it returns. With the first panic of a value's destructor run by the merge, once the
/// whole queue is merged (at the thread's exit such a panic is only reported: a thread-local
/// destructor cannot unwind).
pub fn detach_current_thread() {
    // Dropped outside the borrow: retiring merges, which runs destructors.
    let taken = OWNER.try_with(|slot| {
        let Ok(mut slot) = slot.try_borrow_mut() else {
            panic!("detach_current_thread inside with_current_owner: the token must stay valid");
        };
        slot.take()
    });
    if let Ok(Some(mut owner)) = taken {
        // Called by the thread's code, which may catch a destructor's panic: resumed here.
        let panicked = owner.retire_catching();
        drop(owner);
        resume_first(panicked);
    } else {
        set_current(DETACHED);
    }
}

/// Runs `f` with the calling thread's convenience owner token (the owner
/// [`BiasedArc::new`](crate::BiasedArc::new) and [`BiasedCount::new`] record), registering the
/// thread first if it has not made an object yet. A loop that clones and drops many values
/// passes the token to [`BiasedArc::clone_for`](crate::BiasedArc::clone_for) and
/// [`drop_for`](crate::BiasedArc::drop_for), which then compare the owner field against a
/// value already in a register instead of loading the thread's id for every count.
///
/// After the thread's convenience owner has retired (thread-local teardown, or
/// [`detach_current_thread`]) the token is [`Owner::detached`]'s: it owns nothing, and counts
/// on the shared side as any non-owner does.
///
/// # Panics
/// [`detach_current_thread`] called on this thread inside `f` panics: the token counts as the
/// owner until `f` returns, so the owner cannot retire meanwhile.
///
/// ```
/// use ftrt_refcount::{biased, BiasedArc};
///
/// let value = BiasedArc::new(7_u64);
/// let total = biased::with_current_owner(|owner| {
///     (0..1_000)
///         .map(|_| {
///             let clone = BiasedArc::clone_for(&value, owner);
///             let read = *clone;
///             BiasedArc::drop_for(clone, owner);
///             read
///         })
///         .sum::<u64>()
/// });
/// assert_eq!(total, 7_000);
/// assert_eq!(BiasedArc::strong_count(&value), 1);
/// ```
pub fn with_current_owner<R>(f: impl FnOnce(Owner<'_>) -> R) -> R {
    if current() == UNASSIGNED {
        register_current();
    }
    let mut f = Some(f);
    let ran = OWNER.try_with(|slot| {
        // The shared borrow keeps the convenience owner in its slot, registered, until `f`
        // returns: `detach_current_thread` takes it only through a mutable borrow, and its
        // thread-local destructor cannot run while this thread is still in a call.
        let owner = slot.try_borrow().ok()?;
        owner.as_ref()?;
        // SAFETY: `current()` is the id of the convenience owner in the slot (set when it was
        // stored, reset to `DETACHED` before it is dropped), which this thread registered; the
        // borrow held across `f` keeps it registered, and nothing parks a convenience owner,
        // for all of the token's lifetime (`f`'s call: the token cannot leave it).
        let token = unsafe { Owner::assume_counting_as(current()) };
        let f = f.take()?;
        let result = f(token);
        drop(owner);
        Some(result)
    });
    match (ran, f) {
        (Ok(Some(result)), _) => result,
        // Torn down or retired: count as a thread that owns nothing.
        (_, Some(f)) => f(Owner::detached()),
        // `f` ran and returned `None` through the closure's `?`: impossible, since `f`'s
        // result is wrapped in `Some` after it returns.
        (_, None) => unreachable!("with_current_owner ran its closure and lost the result"),
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

    use super::{Info, Queue, Queued, FIRST_ID};

    /// One owner: its queue, and its runtime's payload.
    struct Entry {
        queue: Arc<Queue>,
        info: Option<Info>,
    }

    static QUEUES: LazyLock<DashMap<u32, Entry>> = LazyLock::new(DashMap::new);
    static NEXT_ID: AtomicU32 = AtomicU32::new(FIRST_ID);

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
