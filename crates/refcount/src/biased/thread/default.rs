//! The thread-local convenience: one [`LocalCounts`] per thread, registered the first time the
//! thread creates an object and retired by a thread-local destructor, for users without a
//! runtime of their own. The rest of the module takes its state explicitly; this finds it in
//! thread-local storage, on top.

use super::*;

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
