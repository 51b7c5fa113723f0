//! Batches of drops ([`drop_batch`]): a run of drops, such as a container's drop of its items,
//! that hands objects back to the same parked or retired owners again and again pays the
//! registry lookup and the queue's lock once per owner instead of once per object.
//!
//! A drop that finds an object's owner parked merges the object itself, counted in the queue's
//! `settling` for the length of that one merge ([`Queue::settle_for_parked_owner`]): a registry
//! lookup under a shard lock, two lock holds of the queue and a clone of its `Arc`, per object.
//! Inside a batch the first such merge keeps its count in `settling` until the batch ends, and
//! the batch remembers the owner. Meanwhile the owner cannot unpark (its `unpark` waits for
//! `settling` to reach zero), and if it retires it retires parked (a parked retirement drains
//! nothing, and after it every thread may merge the owner's objects): so each later drop of the
//! batch to that owner merges at once, with no lookup and no lock, which is what the first merge
//! was allowed to do, for as long as its permission lasts. An owner found retired (missing from
//! the registry, and ids are never reused, so for good) is remembered too, with nothing to hold.
//!
//! The price is the owner's wait: an owner the batch holds that tries to unpark waits until the
//! batch ends, not only until the merge under way does. Batches are for runs of drops that
//! run no code which waits for another thread (the object model's container drops, whose
//! releases free only memory: dead objects that hold no references at once, the others from a
//! list after the drop).

use super::*;

/// The owners a batch remembers, per kind; past these, drops pay the full price again.
const REMEMBERED: usize = 4;

/// The calling thread's batch.
struct Batch {
    /// How many [`drop_batch`] calls are running on this thread: the outermost ends the batch.
    depth: u32,
    /// Parked owners, each with this thread counted in its queue's `settling` once, until the
    /// batch ends.
    parked: Vec<(u32, Arc<Queue>)>,
    /// Owners found retired.
    retired: Vec<u32>,
}

impl Batch {
    const NONE: Self = Batch {
        depth: 0,
        parked: Vec::new(),
        retired: Vec::new(),
    };
}

#[cfg(not(loom))]
thread_local! {
    static BATCH: RefCell<Batch> = const { RefCell::new(Batch::NONE) };
}

#[cfg(loom)]
loom::thread_local! {
    static BATCH: RefCell<Batch> = RefCell::new(Batch::NONE);
}

/// Runs `drops` as one batch of drops: an object handed back to an owner that is parked, or
/// retired, merges on this thread as it would outside a batch, but the owner is looked up once
/// per batch instead of once per object (for up to four owners of each kind). Nested batches
/// join the outermost. Other counting functions behave as usual.
///
/// A parked owner whose object the batch merged stays parked until the batch ends: its
/// [`LocalCounts::unpark`] waits for it. So `drops` must not wait for another thread that may be
/// such an owner (the lock it holds, its progress), and must not unpark any owner (its own
/// batch may hold it, or another thread's batch that waits in its turn for an owner this one
/// holds): either waits for ever. Drops whose releases free memory and run no code that waits
/// are what batches are for.
///
/// ```
/// use std::ptr::NonNull;
///
/// use ftrt_refcount::biased::{drop_batch, LocalCounts};
/// use ftrt_refcount::BiasedCount;
///
/// /// Frees a count made below (the release its last drop runs).
/// unsafe fn free(count: NonNull<BiasedCount>) {
///     // SAFETY: made by `Box::leak` below, and released once.
///     drop(unsafe { Box::from_raw(count.as_ptr()) });
/// }
///
/// /// Counts handed to another thread.
/// struct Handed(Vec<NonNull<BiasedCount>>);
/// // SAFETY: the counts are only touched through the biased protocol, from any thread.
/// unsafe impl Send for Handed {}
///
/// let owner = LocalCounts::register();
/// let handed = Handed(
///     (0..1000)
///         .map(|_| NonNull::from(Box::leak(Box::new(BiasedCount::new_for(owner.owner())))))
///         .collect(),
/// );
/// // The owner waits detached, as a runtime's thread does around blocking work.
/// // SAFETY: nothing is counted through `owner` until it unparks.
/// unsafe { owner.park() };
/// std::thread::spawn(move || {
///     let handed = handed;
///     let dropper = LocalCounts::register();
///     // Each object is merged and freed here, at its drop; the parked owner is looked up once.
///     drop_batch(|| {
///         for &count in &handed.0 {
///             // SAFETY: the one reference to each, given up once; `true` asks to free it here.
///             unsafe {
///                 if BiasedCount::decref_for(count, dropper.owner(), free) {
///                     free(count);
///                 }
///             }
///         }
///     });
/// })
/// .join()
/// .unwrap();
/// owner.unpark();
/// assert_eq!(owner.merge_pending(), 0, "nothing was left for the owner");
/// ```
pub fn drop_batch<R>(drops: impl FnOnce() -> R) -> R {
    /// Ends the batch when the outermost call returns, panics included: a count left in a
    /// queue's `settling` would keep its owner from unparking for ever.
    struct End {
        opened: bool,
    }
    impl Drop for End {
        fn drop(&mut self) {
            if self.opened {
                end();
            }
        }
    }
    // Where the thread-local is gone (a thread-local destructor's drops), no batch: each drop
    // pays in full.
    let opened = BATCH.try_with(|b| b.borrow_mut().depth += 1).is_ok();
    let _end = End { opened };
    drops()
}

/// Leaves a batch; the outermost counts this thread out of every queue it held.
fn end() {
    let _ = BATCH.try_with(|b| {
        let mut batch = b.borrow_mut();
        batch.depth -= 1;
        if batch.depth == 0 {
            batch.retired.clear();
            for (_, queue) in batch.parked.drain(..) {
                // Counting out runs no release and touches no thread-local, so the borrow can
                // stay.
                queue.count_out();
            }
        }
    });
}

/// Whether the calling thread's batch holds `owner` parked or found it retired: an object
/// queued to it may be merged here at once.
pub(super) fn holds(owner: u32) -> bool {
    BATCH
        .try_with(|b| {
            let batch = b.borrow();
            batch.depth > 0
                && (batch.parked.iter().any(|p| p.0 == owner) || batch.retired.contains(&owner))
        })
        .unwrap_or(false)
}

/// Remembers, inside a batch, that `owner` has retired.
pub(super) fn found_retired(owner: u32) {
    let _ = BATCH.try_with(|b| {
        let mut batch = b.borrow_mut();
        if batch.depth > 0 && batch.retired.len() < REMEMBERED {
            batch.retired.push(owner);
        }
    });
}

/// Merges `entry`, which `queue` (the parked `owner`'s) gave back with this thread counted in
/// its `settling`. Inside a batch with room, the count stays until the batch ends and the batch
/// remembers the owner; otherwise the count ends with this merge.
pub(super) fn settle_for_parked_owner(owner: u32, queue: Arc<Queue>, entry: Queued) {
    // Borrowed by the closure, not moved into it: should the thread-local be gone, the queue
    // stays here for the merge that counts this thread out.
    let mut queue = Some(queue);
    let _ = BATCH.try_with(|b| {
        let mut batch = b.borrow_mut();
        if batch.depth > 0 && batch.parked.len() < REMEMBERED {
            batch
                .parked
                .extend(queue.take().map(|queue| (owner, queue)));
        }
    });
    if let Some(queue) = queue {
        queue.settle_for_parked_owner(entry);
        return;
    }
    // SAFETY: `push` gave the entry back, so it is in no queue and is merged only here. This
    // thread stays counted in the queue's `settling` until its batch ends, so the owner cannot
    // unpark before then and nobody else writes `local` (the argument of
    // `Queue::settle_for_parked_owner`); an owner that retires meanwhile retires parked, and then
    // any thread may merge. A panic of the release leaves the count to the batch's end, which
    // runs while unwinding.
    unsafe { BiasedCount::settle_queued(entry) };
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::atomic::AtomicBool as StdAtomicBool;
    use std::sync::Barrier;

    use super::registry::LOOKUPS;
    use super::*;
    use crate::biased::tests::{
        boxed_count as boxed, release_boxed, release_panicking, released, SendPtr,
    };

    fn lookups() -> usize {
        LOOKUPS.with(Cell::get)
    }

    /// Threads counted in the `settling` of `owner`'s queue.
    fn settling(owner: &LocalCounts) -> usize {
        owner.queue.settling()
    }

    /// Drops the one reference to each count, as `dropper` (not their owner).
    fn drop_each(counts: &[NonNull<BiasedCount>], dropper: Owner<'_>) {
        for &count in counts {
            // SAFETY: the one reference, counted in the owner's local half, dropped once.
            unsafe { BiasedCount::decref_for(count, dropper, release_boxed) };
        }
    }

    #[test]
    fn a_batch_looks_a_parked_owner_up_once_and_frees_each_object_as_it_drops() {
        // Two owners on one thread: the protocol only sees ids.
        let (owner, dropper) = (LocalCounts::register(), LocalCounts::register());
        let (alone, together) = (
            [(); 50].map(|()| boxed(owner.owner())),
            [(); 50].map(|()| boxed(owner.owner())),
        );
        // SAFETY: nothing is counted through `owner` until it unparks.
        unsafe { owner.park() };
        let (before, looked_up) = (released(), lookups());
        drop_each(&alone, dropper.owner());
        assert_eq!(
            released(),
            before + 50,
            "each drop frees its object at once"
        );
        assert_eq!(
            lookups(),
            looked_up + 50,
            "outside a batch, one lookup a drop"
        );
        drop_batch(|| {
            drop_each(&together[..1], dropper.owner());
            assert_eq!(settling(&owner), 1, "the batch holds the owner parked");
            drop_each(&together[1..], dropper.owner());
            assert_eq!(
                released(),
                before + 100,
                "each drop frees its object at once"
            );
        });
        assert_eq!(
            lookups(),
            looked_up + 51,
            "inside a batch, one lookup in all"
        );
        assert_eq!(settling(&owner), 0, "the batch let go of the owner");
        owner.unpark();
        assert_eq!(owner.merge_pending(), 0);
    }

    /// An owner that a batch holds parked unparks only once the batch ends: until then the batch
    /// merges its objects without looking at its queue, and a count of the owner's own would
    /// race those merges.
    #[test]
    fn an_owner_held_by_a_batch_unparks_only_once_the_batch_ends() {
        static HELD: Barrier = Barrier::new(2);
        static UNPARKED: StdAtomicBool = StdAtomicBool::new(false);
        static BATCH_ENDING: StdAtomicBool = StdAtomicBool::new(false);
        let owner = LocalCounts::register();
        let id = owner.id().unwrap();
        let objects = [boxed(owner.owner()), boxed(owner.owner())].map(SendPtr);
        // SAFETY: nothing is counted through `owner` until it unparks.
        unsafe { owner.park() };
        let batch = std::thread::spawn(move || {
            let objects = objects;
            let dropper = LocalCounts::register();
            drop_batch(|| {
                drop_each(&[objects[0].0], dropper.owner());
                HELD.wait();
                // Until the owner waits in its unpark, or (wrongly) has unparked.
                while !unpark_waiting_for_merges(id) && !UNPARKED.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                let unparked_early = UNPARKED.load(Ordering::SeqCst);
                drop_each(&[objects[1].0], dropper.owner());
                BATCH_ENDING.store(true, Ordering::SeqCst);
                (unparked_early, released())
            })
        });
        HELD.wait();
        owner.unpark();
        UNPARKED.store(true, Ordering::SeqCst);
        assert!(
            BATCH_ENDING.load(Ordering::SeqCst),
            "unparked inside the batch"
        );
        let (unparked_early, freed) = batch.join().unwrap();
        assert!(!unparked_early, "unparked while the batch held the owner");
        assert_eq!(freed, 2, "both objects freed by the batch's thread");
        assert_eq!(owner.merge_pending(), 0, "nothing queued to the owner");
    }

    thread_local! {
        /// The count `release_dropping_another` drops a reference to, once.
        static THEN_DROP: Cell<Option<NonNull<BiasedCount>>> = const { Cell::new(None) };
    }

    /// Frees like `release_boxed`, then gives up the one reference to `THEN_DROP`'s count, in a
    /// batch of its own: a release that frees a container drops its items so.
    unsafe fn release_dropping_another(count: NonNull<BiasedCount>) {
        // SAFETY: forwarded.
        unsafe { release_boxed(count) };
        if let Some(next) = THEN_DROP.take() {
            drop_batch(|| {
                // SAFETY: the one reference to `next`, given up once, by no owner of it.
                unsafe {
                    if BiasedCount::decref_for(next, Owner::detached(), release_boxed) {
                        release_boxed(next);
                    }
                }
            });
        }
    }

    /// A merge inside a batch runs a release that drops another object of the owner the batch
    /// holds, in a batch nested there: merged at once, under the same hold and the same lookup.
    #[test]
    fn a_release_inside_a_batch_may_drop_more_of_a_held_owners_objects() {
        let (owner, dropper) = (LocalCounts::register(), LocalCounts::register());
        let [first, second, third] = [(); 3].map(|()| boxed(owner.owner()));
        // SAFETY: nothing is counted through `owner` until it unparks.
        unsafe { owner.park() };
        let (before, looked_up) = (released(), lookups());
        THEN_DROP.set(Some(second));
        drop_batch(|| {
            // SAFETY: the one reference to `first`, given up once; its release drops `second`.
            unsafe { BiasedCount::decref_for(first, dropper.owner(), release_dropping_another) };
            assert_eq!(released(), before + 2, "both freed at their drops");
            assert_eq!(
                settling(&owner),
                1,
                "the nested batch's end let go of the owner"
            );
            drop_each(&[third], dropper.owner());
        });
        assert_eq!(released(), before + 3);
        assert_eq!(lookups(), looked_up + 1, "one lookup for the three");
        assert_eq!(settling(&owner), 0);
        owner.unpark();
        assert_eq!(owner.merge_pending(), 0);
    }

    #[test]
    fn a_batch_looks_an_exited_owner_up_once() {
        let objects: Vec<SendPtr> = std::thread::spawn(|| {
            let owner = LocalCounts::register();
            (0..20).map(|_| SendPtr(boxed(owner.owner()))).collect()
        })
        .join()
        .unwrap();
        let objects: Vec<_> = objects.into_iter().map(|p| p.0).collect();
        let dropper = LocalCounts::register();
        let (before, looked_up) = (released(), lookups());
        drop_batch(|| drop_each(&objects, dropper.owner()));
        assert_eq!(released(), before + 20);
        assert_eq!(lookups(), looked_up + 1);
    }

    #[test]
    fn a_release_that_panics_in_a_batch_still_lets_the_owner_go() {
        let (owner, dropper) = (LocalCounts::register(), LocalCounts::register());
        let (first, panicking) = (boxed(owner.owner()), boxed(owner.owner()));
        // SAFETY: nothing is counted through `owner` until it unparks.
        unsafe { owner.park() };
        let before = released();
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop_batch(|| {
                drop_each(&[first], dropper.owner());
                // SAFETY: the one reference, dropped once; its release panics after freeing.
                unsafe { BiasedCount::decref_for(panicking, dropper.owner(), release_panicking) };
            })
        }));
        assert!(
            unwound.is_err(),
            "the release's panic reaches the batch's caller"
        );
        assert_eq!(released(), before + 2);
        assert_eq!(settling(&owner), 0, "left holding the owner after a panic");
        owner.unpark();
        // A later batch starts afresh.
        let next = boxed(owner.owner());
        // SAFETY: as above.
        unsafe { owner.park() };
        drop_batch(|| drop_each(&[next], dropper.owner()));
        assert_eq!((released(), settling(&owner)), (before + 3, 0));
        owner.unpark();
    }

    #[test]
    fn nested_batches_hold_their_owners_until_the_outermost_ends() {
        let (owner, dropper) = (LocalCounts::register(), LocalCounts::register());
        let objects = [boxed(owner.owner()), boxed(owner.owner())];
        // SAFETY: nothing is counted through `owner` until it unparks.
        unsafe { owner.park() };
        let looked_up = lookups();
        drop_batch(|| {
            drop_batch(|| drop_each(&objects[..1], dropper.owner()));
            assert_eq!(
                settling(&owner),
                1,
                "an inner batch's end let go of the owner"
            );
            drop_each(&objects[1..], dropper.owner());
        });
        assert_eq!(lookups(), looked_up + 1);
        assert_eq!(settling(&owner), 0);
        owner.unpark();
    }

    /// Past the owners a batch remembers, drops merge as outside a batch: freed at once, and every
    /// owner free to unpark afterwards.
    #[test]
    fn a_batch_over_more_owners_than_it_remembers_frees_everything() {
        let owners: Vec<LocalCounts> = (0..REMEMBERED + 2)
            .map(|_| LocalCounts::register())
            .collect();
        let dropper = LocalCounts::register();
        let objects: Vec<[NonNull<BiasedCount>; 3]> = owners
            .iter()
            .map(|owner| [(); 3].map(|()| boxed(owner.owner())))
            .collect();
        for owner in &owners {
            // SAFETY: nothing is counted through these owners until they unpark.
            unsafe { owner.park() };
        }
        let (before, looked_up) = (released(), lookups());
        drop_batch(|| {
            for each in &objects {
                drop_each(each, dropper.owner());
            }
            let held: Vec<usize> = owners.iter().map(settling).collect();
            let mut expected = vec![1; REMEMBERED];
            expected.extend([0, 0]);
            assert_eq!(
                held, expected,
                "the first owners held, the rest let go after each merge"
            );
        });
        assert_eq!(released(), before + 3 * owners.len());
        assert_eq!(lookups(), looked_up + REMEMBERED + 3 * 2);
        for owner in &owners {
            assert_eq!(settling(owner), 0);
            owner.unpark();
        }
    }

    #[test]
    fn a_batch_queues_to_a_running_owner_as_usual() {
        let (owner, dropper) = (LocalCounts::register(), LocalCounts::register());
        let objects = [boxed(owner.owner()), boxed(owner.owner())];
        let before = released();
        drop_batch(|| drop_each(&objects, dropper.owner()));
        assert_eq!(released(), before, "merged for an owner that counts");
        assert_eq!(owner.merge_pending(), 2);
        assert_eq!(released(), before + 2);
    }
}
