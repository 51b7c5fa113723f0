//! The owners' merge queues: what a non-owner's drop hands back to the owner ([`Queued`]),
//! the queue it waits in ([`Queue`], with the parked owner's merges that other threads run), and
//! the drains that settle its entries past a panicking destructor.

use super::*;

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
/// - A thread in a batch of drops ([`drop_batch`](super::drop_batch)) stays counted from its
///   first such merge to the batch's end, and merges the batch's later entries for this owner
///   without offering them to the queue: one count covers all of them (see `batch.rs`).
/// - Unparking clears `parked` under the entries' lock, so that later drops queue, then waits on
///   `settled` for `settling` to reach zero: only the merges under way and the batches holding
///   the owner, however many drops follow outside them. From the moment the owner counts again,
///   no other thread merges for it. (So `settling` is nonzero only while the owner is parked or
///   unparking.)
/// - Merges for a parked owner run side by side, each on its own object (an object is queued at
///   most once: a merge ends its ownership), and nobody writes those objects' `local` meanwhile.
/// - The entries' lock orders the owner's last writes to `local` (before `park` sets `parked`)
///   before every such merge, and every such merge before the owner's next count (after
///   `unpark` finds `settling` at zero).
pub(crate) struct Queue {
    pub(super) state: Mutex<QueueState>,
    /// Set when an entry is pushed, so the owner's safe points can check with one load.
    pub(super) pending: AtomicBool,
    /// Notified when the last merge for the parked owner ends, for an `unpark` waiting on it.
    settled: Condvar,
}

pub(super) struct QueueState {
    entries: Vec<Queued>,
    parked: bool,
    /// Threads merging an entry of their own for the parked owner.
    settling: usize,
    /// Set while the owner's `unpark` waits for `settling` to reach zero. Read only by
    /// [`unpark_waiting_for_merges`], which exists for tests.
    pub(super) unpark_waiting: bool,
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
    pub(super) fn push(&self, entry: Queued) -> Option<Queued> {
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
    /// owner (not parked), or for an owner that has retired: the merge writes the `local` halves of
    /// the owner's objects, which only they may (a safe function, private to the `thread` module
    /// and its submodules; every caller keeps to this). A release that panics (a value's
    /// destructor) does not end the drain: the first panic resumes once the queue is empty.
    pub(super) fn merge_all(&self) -> usize {
        let (merged, panicked) = self.merge_all_catching();
        resume_first(panicked);
        merged
    }

    /// [`merge_all`](Self::merge_all), handing the first panic back instead of resuming it.
    pub(super) fn merge_all_catching(&self) -> (usize, Option<Panic>) {
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
    pub(super) fn settle_for_parked_owner(&self, entry: Queued) {
        /// Counts the caller out of `settling` when the merge is over, panics included: left
        /// counted, the owner's unpark would wait for ever.
        struct CountOut<'a>(&'a Queue);
        impl Drop for CountOut<'_> {
            fn drop(&mut self) {
                self.0.count_out();
            }
        }
        let _count_out = CountOut(self);
        // SAFETY: the entry was given back by `push`, so it is in no queue and is merged only
        // here. The owner is parked and cannot unpark while this thread is counted in
        // `settling`, so nobody else writes `local` (the same argument as for a retired owner);
        // other threads merging for it meanwhile merge other objects.
        unsafe { BiasedCount::settle_queued(entry) };
    }

    /// Counts the caller out of `settling`, where [`push`](Self::push) counted it in, and wakes
    /// an `unpark` waiting for the last merge.
    pub(super) fn count_out(&self) {
        let mut state = self.state.lock();
        state.settling -= 1;
        if state.settling == 0 {
            self.settled.notify_all();
        }
    }

    /// Merges what is queued as the owner, and parks in the lock hold that finds the queue
    /// empty (with nothing queued, that lock hold is all a park costs: every detach parks).
    /// Returns the first panic of a release the merge ran, for after the park.
    pub(super) fn park(&self) -> Option<Panic> {
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

    /// How many threads are counted in `settling` (a snapshot), for tests.
    #[cfg(all(test, not(loom)))]
    pub(super) fn settling(&self) -> usize {
        self.state.lock().settling
    }

    /// Whether the owner is parked (a snapshot; only the owner parks and unparks it).
    pub(super) fn is_parked(&self) -> bool {
        self.state.lock().parked
    }

    /// Stops parking first, so that what is dropped from now on is queued (and writes no
    /// `local`), then waits for the merges under way and the batches of drops that hold the
    /// owner: only those, however many drops follow outside them.
    pub(super) fn unpark(&self) {
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
    pub(in crate::biased) static WAITING_TO_UNPARK: Cell<Option<fn()>> = const { Cell::new(None) };
}

/// A panic caught while draining a queue, to resume once the drain is over.
pub(super) type Panic = Box<dyn std::any::Any + Send>;

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
pub(super) fn resume_first(panicked: Option<Panic>) {
    if let Some(panic) = panicked {
        if !std::thread::panicking() {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Drops a registry payload (a runtime's value, whose destructor may panic), keeping the first
/// panic: `panicked`'s, else the payload's.
pub(super) fn drop_catching(payload: Option<Info>, mut panicked: Option<Panic>) -> Option<Panic> {
    if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(payload))) {
        panicked.get_or_insert(panic);
    }
    panicked
}
