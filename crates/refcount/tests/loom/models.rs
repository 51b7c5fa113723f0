use crate::loom_common::{counted, dropped, Counted};
use ftrt_refcount::biased::detach_current_thread;
use ftrt_refcount::{merge_pending, BiasedArc};
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

/// A value whose accesses loom tracks: reads through `&self`, writes through `&mut self`. A write
/// through a `&mut` that `get_mut` or `try_unwrap` handed out while another handle could still
/// read makes loom report a causality violation, even where no assertion looks.
struct Slot(loom::cell::UnsafeCell<usize>);

// SAFETY: `Slot` has no interior mutability reachable through `&self` (writes need `&mut self`),
// so sharing `&Slot` between threads is as sound as sharing `&usize`.
unsafe impl Sync for Slot {}

impl Slot {
    fn new() -> Self {
        Self(loom::cell::UnsafeCell::new(0))
    }

    fn read(&self) -> usize {
        // SAFETY: a shared read; loom checks it against every write.
        self.0.with(|value| unsafe { *value })
    }

    fn write(&mut self, new: usize) {
        // SAFETY: `&mut self` is exclusive; loom checks that claim against every other access.
        self.0.with_mut(|value| unsafe { *value = new })
    }
}

#[test]
fn owner_and_non_owner_drop_the_last_two_references_at_once() {
    loom::model(|| {
        let (owned, drops) = counted();
        let remote = owned.clone();
        let t = thread::spawn(move || drop(remote));
        drop(owned);
        t.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn non_owner_clones_and_drops_while_the_owner_drops_and_merges() {
    loom::model(|| {
        let (owned, drops) = counted();
        let remote = owned.clone();
        let t = thread::spawn(move || {
            let again = remote.clone();
            drop(remote);
            drop(again);
        });
        drop(owned);
        merge_pending();
        t.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn two_non_owners_and_the_owner_drop_concurrently() {
    loom::model(|| {
        let (owned, drops) = counted();
        let (first, second) = (owned.clone(), owned.clone());
        let t1 = thread::spawn(move || drop(first));
        let t2 = thread::spawn(move || drop(second));
        drop(owned);
        t1.join().unwrap();
        t2.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn owner_exits_while_a_non_owner_drops_its_object() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = {
            let drops = drops.clone();
            thread::spawn(move || {
                let owned = BiasedArc::new(Counted(drops));
                let remote = owned.clone();
                let t = thread::spawn(move || drop(remote));
                drop(owned);
                // The owner retires (as at thread exit) while the other thread's drop may be
                // queueing to it, or may come after it has left the registry.
                detach_current_thread();
                t.join().unwrap();
            })
        };
        owner.join().unwrap();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn an_exited_owners_object_is_freed_by_the_last_holder() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = {
            let drops = drops.clone();
            thread::spawn(move || {
                let owned = BiasedArc::new(Counted(drops));
                let kept = owned.clone();
                detach_current_thread();
                drop(owned);
                kept
            })
        };
        let kept = owner.join().unwrap();
        let other = kept.clone();
        let t = thread::spawn(move || drop(other));
        drop(kept);
        t.join().unwrap();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn try_unwrap_races_the_owner_merging_a_queued_drop() {
    loom::model(|| {
        let (owned, drops) = counted();
        let (queued, kept) = (owned.clone(), owned.clone());
        thread::spawn(move || drop(queued)).join().unwrap();
        drop(owned);
        // `kept` is now the only reference, with one drop still queued to this thread, which
        // still counts that reference locally until it merges.
        let t = thread::spawn(move || BiasedArc::try_unwrap(kept));
        merge_pending();
        let value = match t.join().unwrap() {
            Ok(value) => value,
            // Before the merge (or during it) the other thread cannot tell that this thread holds
            // no handle, and gets its handle back. The merge is done now, and a merged count is
            // exact on every thread.
            Err(kept) => BiasedArc::try_unwrap(kept)
                .ok()
                .expect("merged: the only reference"),
        };
        assert_eq!(dropped(&drops), 0);
        drop(value);
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// `into_inner` by the last two holders of a merged count with a drop still queued to its former
/// owner, while that owner merges the queued drop: exactly one holder gets the value, the merge
/// never drops it, and the memory outlives the move (the count ends as a husk when the entry is
/// still pending).
#[test]
fn racing_into_inner_on_a_merged_count_races_the_merge_of_a_queued_drop() {
    loom::model(|| {
        let (owned, drops) = counted();
        let (queued, theirs) = (owned.clone(), owned.clone());
        thread::spawn(move || drop(queued)).join().unwrap();
        // Merged with the queued drop's entry, and its reference, still in the count.
        BiasedArc::give_up_ownership(&owned);
        let t = thread::spawn(move || BiasedArc::into_inner(theirs).map(|v| dropped(&v.0)));
        let ours = BiasedArc::into_inner(owned).map(|v| dropped(&v.0));
        merge_pending();
        let theirs = t.join().unwrap();
        assert_eq!(
            usize::from(ours.is_some()) + usize::from(theirs.is_some()),
            1,
            "exactly one of the last two holders gets the value"
        );
        assert_eq!(ours.or(theirs), Some(0), "handed out alive");
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

#[test]
fn thread_exit_retires_the_owner_through_its_thread_local_destructor() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = {
            let drops = drops.clone();
            thread::spawn(move || {
                let owned = BiasedArc::new(Counted(drops));
                let kept = owned.clone();
                let t = thread::spawn(move || drop(kept));
                drop(owned);
                t
                // No explicit detach: the thread-local destructor retires this thread.
            })
        };
        owner.join().unwrap().join().unwrap();
        // loom's `join` returns before the joined thread's thread-locals are destroyed (std's
        // waits), so wait for the retirement here. A value that is never dropped makes loom
        // give up on this spin and fail the model.
        while dropped(&drops) == 0 {
            thread::yield_now();
        }
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// The race a non-owner's uniqueness check must not lose: it reads the owner's `local` count, the
/// owner clones (`local` + 1) and hands the clone to a third thread, which drops it (`shared` − 1,
/// here by queueing it), and then it reads `shared`. Summing the two reads would say "unique"
/// while the owner's handle lives.
#[test]
fn a_non_owner_never_gets_mut_while_the_owner_holds_a_handle() {
    loom::model(|| {
        let owned = BiasedArc::new(Slot::new());
        let mut remote = owned.clone();
        let non_owner = thread::spawn(move || match BiasedArc::get_mut(&mut remote) {
            Some(value) => {
                value.write(1);
                true
            }
            None => false,
        });
        let clone = owned.clone();
        thread::spawn(move || drop(clone)).join().unwrap();
        let seen = owned.read();
        let got_mut = non_owner.join().unwrap();
        assert!(
            !got_mut,
            "get_mut handed out `&mut T` while the owner's handle was alive"
        );
        assert_eq!(seen, 0);
        drop(owned);
        merge_pending();
        detach_current_thread();
    });
}

/// As above, through `try_unwrap`: the value must not be moved out from under the owner's handle.
#[test]
fn a_non_owner_never_unwraps_while_the_owner_holds_a_handle() {
    loom::model(|| {
        let owned = BiasedArc::new(Slot::new());
        let remote = owned.clone();
        let non_owner = thread::spawn(move || match BiasedArc::try_unwrap(remote) {
            Ok(mut value) => {
                value.write(1);
                true
            }
            Err(_) => false,
        });
        let clone = owned.clone();
        thread::spawn(move || drop(clone)).join().unwrap();
        let seen = owned.read();
        let unwrapped = non_owner.join().unwrap();
        assert!(
            !unwrapped,
            "try_unwrap moved the value out while the owner's handle was alive"
        );
        assert_eq!(seen, 0);
        drop(owned);
        merge_pending();
        detach_current_thread();
    });
}

/// A non-owner may answer exactly once the owner has retired: `local` is final then. The registry
/// lookup that finds the owner gone must order the owner's last accesses (here a read of the
/// value, and its last write to `local`) before the non-owner's `&mut` access.
#[test]
fn a_non_owner_unwraps_once_the_owner_has_retired() {
    loom::model(|| {
        let owner = thread::spawn(|| {
            let owned = BiasedArc::new(Slot::new());
            let remote = owned.clone();
            let non_owner = thread::spawn(move || match BiasedArc::try_unwrap(remote) {
                Ok(mut value) => {
                    value.write(1);
                    None
                }
                Err(remote) => Some(remote),
            });
            assert_eq!(owned.read(), 0);
            drop(owned);
            detach_current_thread();
            non_owner
        });
        let non_owner = owner.join().unwrap();
        if let Some(remote) = non_owner.join().unwrap() {
            // Refused while the owner might still count locally; it has retired now.
            let mut value = BiasedArc::try_unwrap(remote)
                .ok()
                .expect("the owner has retired: the only reference");
            value.write(2);
        }
        detach_current_thread();
    });
}

/// After the owner gives up ownership, any thread answers exactly, and a value taken on another
/// thread is ordered after the owner's last use of its own handle.
#[test]
fn a_non_owner_unwraps_once_the_owner_gives_up_ownership() {
    loom::model(|| {
        let owned = BiasedArc::new(Slot::new());
        let remote = owned.clone();
        BiasedArc::give_up_ownership(&owned);
        let non_owner = thread::spawn(move || match BiasedArc::try_unwrap(remote) {
            Ok(mut value) => {
                value.write(1);
                None
            }
            Err(remote) => Some(remote),
        });
        assert_eq!(owned.read(), 0);
        drop(owned);
        if let Some(remote) = non_owner.join().unwrap() {
            let mut value = BiasedArc::try_unwrap(remote)
                .ok()
                .expect("merged: the only reference");
            value.write(2);
        }
        detach_current_thread();
    });
}

/// The owner's last local drop merges the count while it holds no reference any more: it clears
/// `owner`, then publishes `MERGED`. A non-owner that saw the cleared owner and merged the count
/// itself could take the value and free the memory before the owner's exchange lands.
#[test]
fn try_unwrap_races_the_owner_merging_its_last_local_drop() {
    loom::model(|| {
        let (owned, drops) = counted();
        let lent = owned.clone();
        // A clone made on another thread, so that it is counted in the shared half.
        let (lent, remote) = thread::spawn(move || {
            let remote = lent.clone();
            (lent, remote)
        })
        .join()
        .unwrap();
        let non_owner = thread::spawn(move || match BiasedArc::try_unwrap(remote) {
            Ok(value) => drop(value),
            Err(remote) => drop(remote),
        });
        drop(lent);
        // The owner's local count reaches zero here, with the remote reference still counted.
        drop(owned);
        non_owner.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// A non-owner's drop at a shared count of zero queues its reference while the owner gives up
/// ownership: the owner clears its owner field, then folds `local` into the shared count. A
/// queueing thread that read the cleared field as "the owner has exited" settled its entry
/// itself, folding in a `local` it had no right to read (an older value than the owner's, here
/// 2 instead of 3): the count came out one short, and the value was dropped while the owner's
/// second handle still held it.
#[test]
fn a_non_owner_queues_while_the_owner_gives_up_ownership() {
    loom::model(|| {
        let (owned, drops) = counted();
        let remote = owned.clone();
        let non_owner = thread::spawn(move || drop(remote));
        // A clone after the spawn: the non-owner is not ordered after this write to `local`.
        let kept = owned.clone();
        BiasedArc::give_up_ownership(&owned);
        non_owner.join().unwrap();
        merge_pending();
        drop(owned);
        assert_eq!(dropped(&drops), 0, "dropped while a handle still held it");
        drop(kept);
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// An object counted through an explicit owner ([`LocalCounts`]), freed by `release_object`.
#[repr(C)]
struct Object {
    count: ftrt_refcount::BiasedCount,
    value: Counted,
}

impl Object {
    /// A new object with one reference, counted locally by `owner`, whose drop `drops` counts;
    /// its count is what the protocol functions take, and `release_object` frees it.
    fn leak(
        owner: ftrt_refcount::biased::Owner<'_>,
        drops: &Arc<AtomicUsize>,
    ) -> std::ptr::NonNull<ftrt_refcount::BiasedCount> {
        let object = Box::new(Object {
            count: ftrt_refcount::BiasedCount::new_for(owner),
            value: Counted(drops.clone()),
        });
        std::ptr::NonNull::from(Box::leak(object)).cast()
    }
}

/// A pointer to an `Object` that may cross threads (the model's own handle).
struct Handle(std::ptr::NonNull<ftrt_refcount::BiasedCount>);
// SAFETY: the object is shared by design; its count is only touched through the protocol.
unsafe impl Send for Handle {}

/// # Safety
/// The count heads an `Object` made by `Box::into_raw`, and reached zero.
unsafe fn release_object(count: std::ptr::NonNull<ftrt_refcount::BiasedCount>) {
    // SAFETY: per the contract.
    drop(unsafe { Box::from_raw(count.cast::<Object>().as_ptr()) });
}

/// Gives up one reference to an `Object` as `owner`, freeing it when that was the last.
///
/// # Safety
/// The caller holds the reference.
unsafe fn drop_ref(
    count: std::ptr::NonNull<ftrt_refcount::BiasedCount>,
    owner: ftrt_refcount::biased::Owner<'_>,
) {
    // SAFETY: forwarded; `true` means this call saw the count reach zero and must free.
    unsafe {
        if ftrt_refcount::BiasedCount::decref_for(count, owner, release_object) {
            release_object(count);
        }
    }
}

/// Two objects of `owner`, each with a second reference for another thread, counted in the owner's
/// local half as a reference handed over to another thread is; and their drop counts.
fn two_objects_with_a_reference_to_hand_over(
    owner: &ftrt_refcount::biased::LocalCounts,
) -> (
    [std::ptr::NonNull<ftrt_refcount::BiasedCount>; 2],
    [Arc<AtomicUsize>; 2],
) {
    let drops = [(); 2].map(|()| Arc::new(AtomicUsize::new(0)));
    let objects = [
        Object::leak(owner.owner(), &drops[0]),
        Object::leak(owner.owner(), &drops[1]),
    ];
    for count in objects {
        // SAFETY: alive: the owner's reference is held.
        unsafe { count.as_ref() }.incref_for(owner.owner());
    }
    (objects, drops)
}

/// The parked-owner protocol: a non-owner drops its reference while the owner parks (as a
/// runtime thread does when it detaches) and unparks, then drops its own. Whether the non-owner
/// merges for the parked owner, queues for it, or finds it running again, the object is freed
/// exactly once, and never while the owner still counts on it (`local` is written only by the
/// owner outside a park, or by a thread merging its own drop inside one).
#[test]
fn a_non_owner_drop_races_the_owner_parking_and_unparking() {
    use ftrt_refcount::biased::LocalCounts;
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = LocalCounts::register();
        let count = Object::leak(owner.owner(), &drops);
        // SAFETY: the object is alive: the owner's reference is held.
        unsafe { count.as_ref() }.incref_for(owner.owner());
        let handle = Handle(count);
        let other = thread::spawn(move || {
            let handle = handle;
            let counts = LocalCounts::register();
            // SAFETY: this thread's reference, given up once.
            unsafe { drop_ref(handle.0, counts.owner()) };
        });
        // SAFETY: nothing is counted through `owner` between park and unpark.
        unsafe { owner.park() };
        owner.unpark();
        // SAFETY: the owner's own reference, given up once.
        unsafe { drop_ref(count, owner.owner()) };
        other.join().unwrap();
        owner.merge_pending();
        drop(owner);
        assert_eq!(dropped(&drops), 1);
    });
}

/// Two non-owners drop references to two objects of a parked owner while it unparks, then the
/// owner drops its own. A parked owner's objects are merged by the threads that drop them, side
/// by side, each its own; the unpark waits for both merges under way, so the owner's next count
/// never lands between a merge's read of `local` and its exchange. Each object is freed exactly
/// once, after its last reference is gone.
#[test]
fn two_non_owner_drops_for_a_parked_owner_race_its_unpark() {
    use ftrt_refcount::biased::LocalCounts;
    loom::model(|| {
        let owner = LocalCounts::register();
        let (objects, drops) = two_objects_with_a_reference_to_hand_over(&owner);
        // SAFETY: nothing is counted through `owner` between park and unpark.
        unsafe { owner.park() };
        let others = objects.map(|count| {
            let handle = Handle(count);
            thread::spawn(move || {
                let handle = handle;
                let counts = LocalCounts::register();
                // SAFETY: this thread's reference, given up once.
                unsafe { drop_ref(handle.0, counts.owner()) };
            })
        });
        owner.unpark();
        for count in objects {
            // SAFETY: the owner's own reference, given up once.
            unsafe { drop_ref(count, owner.owner()) };
        }
        for other in others {
            other.join().unwrap();
        }
        owner.merge_pending();
        drop(owner);
        assert_eq!(drops.each_ref().map(|drops| dropped(drops)), [1, 1]);
    });
}

/// A batch of drops ([`drop_batch`](ftrt_refcount::biased::drop_batch)) holds a parked owner
/// from its first merge for it to its end: another thread drops references to two of the owner's
/// objects in one batch while the owner unparks, then the owner drops its own. The batch's
/// second drop merges without looking at the queue, which is sound only while the owner cannot
/// unpark: its unpark waits for the batch, so its next count never lands in the middle of a
/// merge. Each object is freed exactly once, after its last reference is gone.
#[test]
fn a_batch_of_drops_for_a_parked_owner_races_its_unpark() {
    use ftrt_refcount::biased::{drop_batch, LocalCounts};
    loom::model(|| {
        let owner = LocalCounts::register();
        let (objects, drops) = two_objects_with_a_reference_to_hand_over(&owner);
        // SAFETY: nothing is counted through `owner` between park and unpark.
        unsafe { owner.park() };
        let handles = objects.map(Handle);
        let other = thread::spawn(move || {
            let handles = handles;
            let counts = LocalCounts::register();
            drop_batch(|| {
                for handle in &handles {
                    // SAFETY: this thread's reference, given up once.
                    unsafe { drop_ref(handle.0, counts.owner()) };
                }
            });
        });
        owner.unpark();
        for count in objects {
            // SAFETY: the owner's own reference, given up once.
            unsafe { drop_ref(count, owner.owner()) };
        }
        other.join().unwrap();
        owner.merge_pending();
        drop(owner);
        assert_eq!(drops.each_ref().map(|drops| dropped(drops)), [1, 1]);
    });
}

/// A batch of drops races a parked owner's retirement: the batch holds the owner parked, or
/// finds it retired, or holds it and sees it retire between its two drops. Both objects (the
/// batch holds their only references) are freed exactly once, by the batch's thread.
#[test]
fn a_batch_of_drops_races_a_parked_owners_retirement() {
    use ftrt_refcount::biased::{drop_batch, LocalCounts};
    loom::model(|| {
        let drops = [(); 2].map(|()| Arc::new(AtomicUsize::new(0)));
        let owner = LocalCounts::register();
        let handles = [
            Object::leak(owner.owner(), &drops[0]),
            Object::leak(owner.owner(), &drops[1]),
        ]
        .map(Handle);
        // SAFETY: nothing is counted through `owner` from here on.
        unsafe { owner.park() };
        let other = thread::spawn(move || {
            let handles = handles;
            let counts = LocalCounts::register();
            drop_batch(|| {
                for handle in &handles {
                    // SAFETY: the only reference (counted in the owner's local half), given up
                    // once.
                    unsafe { drop_ref(handle.0, counts.owner()) };
                }
            });
        });
        owner.retire();
        other.join().unwrap();
        assert_eq!(drops.each_ref().map(|drops| dropped(drops)), [1, 1]);
    });
}

/// The owner's half that frees by itself (`decref_owned_releasing`, which the object model
/// inlines into every handle's drop) against a non-owner's drop of a reference on the shared
/// half: the owner's last local drop finds the shared half zero and frees, or merges and leaves
/// the end to the non-owner. The object is freed exactly once, and never while the non-owner
/// still holds its reference.
#[test]
fn the_releasing_owner_drop_races_a_non_owner_drop() {
    use ftrt_refcount::biased::LocalCounts;
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = LocalCounts::register();
        let count = Object::leak(owner.owner(), &drops);
        // The other thread's reference, taken here on the shared half (as a non-owner would)
        // while the owner's keeps the object alive.
        // SAFETY: alive: the owner's reference is held.
        unsafe { count.as_ref() }.incref_for(ftrt_refcount::biased::Owner::detached());
        let handle = Handle(count);
        let drops_seen = drops.clone();
        let other = thread::spawn(move || {
            let handle = handle;
            let counts = LocalCounts::register();
            // A free that did not wait for this reference shows here (loom does not see a use
            // of freed memory by itself).
            assert_eq!(dropped(&drops_seen), 0, "freed while a reference was held");
            // SAFETY: the reference taken for this thread above, given up once.
            unsafe { drop_ref(handle.0, counts.owner()) };
        });
        // SAFETY: the owner's only reference, given up once; `release_object` frees objects
        // made by `Object::leak`.
        let owned = unsafe {
            ftrt_refcount::BiasedCount::decref_owned_releasing(
                count,
                owner.owner(),
                release_object,
                |_| unreachable!("not deferred"),
            )
        };
        assert!(owned);
        other.join().unwrap();
        owner.merge_pending();
        drop(owner);
        assert_eq!(dropped(&drops), 1);
    });
}

/// A parked owner retires (as a runtime thread exits: parked since its last detach) while a
/// non-owner drops the last reference. The retirement drains nothing: the non-owner merges what
/// it queued, for the parked owner or, once the owner has left the registry, for a retired one.
/// Wherever the drop falls, the object is freed exactly once.
#[test]
fn a_non_owner_drop_races_a_parked_owners_retirement() {
    use ftrt_refcount::biased::LocalCounts;
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = LocalCounts::register();
        let count = Object::leak(owner.owner(), &drops);
        let handle = Handle(count);
        // SAFETY: nothing is counted through `owner` from here on.
        unsafe { owner.park() };
        let other = thread::spawn(move || {
            let handle = handle;
            let counts = LocalCounts::register();
            // SAFETY: the only reference (counted in the owner's local half), given up once.
            unsafe { drop_ref(handle.0, counts.owner()) };
        });
        owner.retire();
        other.join().unwrap();
        assert_eq!(dropped(&drops), 1);
    });
}

/// Deferred counting, as the object model's per-thread counts for hot objects use it
/// (`ftrt_object::hot`), in miniature: threads count only while attached (here, a read lock on
/// the world), and the world stops (the write lock) to defer the count and later to resume it
/// with what the threads counted meanwhile in their own counts. A non-owner takes a reference
/// and drops two; the owner defers the count, drops its reference while it is deferred, and
/// resumes it. The owner counts a deferred count through the first halves (the inline path),
/// the other thread through the unowned ones (the out-of-line path). Wherever the stops fall
/// between the other thread's steps (its drops on the shared count queueing to the owner included),
/// the object is freed exactly once, after the last reference is gone: by the non-owner, by the
/// owner's merge, or by the resume that finds no reference left.
#[test]
fn deferring_and_resuming_in_stopped_worlds_keeps_the_count_exact() {
    use ftrt_refcount::biased::{CountOnPath, DeferredPath, LocalCounts};
    use ftrt_refcount::{BiasedCount, Counting};
    use loom::sync::atomic::{AtomicBool, AtomicIsize};
    use loom::sync::RwLock;

    struct World {
        attached: RwLock<()>,
        deferred: AtomicBool,
        /// Each thread's count of the deferred object (owner, other).
        counted: [AtomicIsize; 2],
    }

    /// A reference taken or dropped while attached, through the halves the object model calls:
    /// a deferred count hands its tag over, and the reference is counted in `thread`'s own
    /// count; otherwise the owner's half or the shared half counts it.
    ///
    /// # Safety
    /// To drop, the caller holds the reference.
    unsafe fn count_attached(
        world: &World,
        thread: usize,
        count: std::ptr::NonNull<BiasedCount>,
        owner: ftrt_refcount::biased::Owner<'_>,
        take: bool,
    ) {
        let _attached = world.attached.read().unwrap();
        // Stable while attached: it changes only in a stopped world.
        let deferred = world.deferred.load(Ordering::Relaxed);
        // Thread 0 counts deferred counts inline, thread 1 out of line.
        let path = [DeferredPath::INLINE, DeferredPath::OUT_OF_LINE][thread];
        let mut handed = None;
        if take {
            // SAFETY: alive: the caller holds a reference it clones.
            let counted = unsafe { count.as_ref() };
            let first_half = CountOnPath {
                path,
                count: |tag| handed = Some(tag),
            };
            if !counted.incref_owned(owner, first_half) {
                let expected = if deferred {
                    Counting::Ignored
                } else {
                    Counting::Shared
                };
                assert_eq!(counted.incref_unowned(|tag| handed = Some(tag)), expected);
            }
        } else {
            let first_half = CountOnPath {
                path,
                count: |tag| handed = Some(tag),
            };
            // SAFETY: the caller gives up its reference; the owner's half frees through
            // `release_object`.
            if !unsafe {
                BiasedCount::decref_owned_releasing(count, owner, release_object, first_half)
            } {
                // SAFETY: as above.
                match unsafe {
                    BiasedCount::decref_unowned(count, release_object, |tag| handed = Some(tag))
                } {
                    // SAFETY: that was the last reference.
                    Some(true) => unsafe { release_object(count) },
                    Some(false) => {}
                    None => assert!(deferred, "a count that ignores decrements is deferred"),
                }
            }
        }
        assert_eq!(
            handed,
            deferred.then_some(TAG),
            "the tag is handed over exactly while the count is deferred"
        );
        if deferred {
            // A plain load and store: only this thread writes its own count.
            let mine = &world.counted[thread];
            mine.store(
                mine.load(Ordering::Relaxed) + if take { 1 } else { -1 },
                Ordering::Relaxed,
            );
        }
    }

    /// The tag the count is deferred with.
    const TAG: u16 = 3;

    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = LocalCounts::register();
        let count = Object::leak(owner.owner(), &drops);
        // The other thread's reference.
        // SAFETY: alive: the owner's reference is held.
        unsafe { count.as_ref() }.incref_for(owner.owner());
        let world = Arc::new(World {
            attached: RwLock::new(()),
            deferred: AtomicBool::new(false),
            counted: [AtomicIsize::new(0), AtomicIsize::new(0)],
        });
        let handle = Handle(count);
        let other = {
            let world = world.clone();
            thread::spawn(move || {
                let handle = handle;
                let counts = LocalCounts::register();
                // SAFETY: it holds a reference to take another from, then drops both.
                unsafe {
                    count_attached(&world, 1, handle.0, counts.owner(), true);
                    count_attached(&world, 1, handle.0, counts.owner(), false);
                    count_attached(&world, 1, handle.0, counts.owner(), false);
                }
            })
        };
        {
            let _stopped = world.attached.write().unwrap();
            // SAFETY: the world is stopped and the owner holds a reference; whatever the count
            // ignores from here on goes to the threads' counts.
            if unsafe { count.as_ref().defer_counting(TAG) } {
                world.deferred.store(true, Ordering::Relaxed);
            }
        }
        // SAFETY: the owner's own reference, given up once.
        unsafe { count_attached(&world, 0, count, owner.owner(), false) };
        {
            let _stopped = world.attached.write().unwrap();
            if world.deferred.swap(false, Ordering::Relaxed) {
                let elsewhere: isize = world
                    .counted
                    .iter()
                    .map(|c| c.swap(0, Ordering::Relaxed))
                    .sum();
                // SAFETY: deferred and not resumed; stopped; `elsewhere` is every thread's
                // count. The object is alive: deferred counts are never freed by a drop.
                if !unsafe { count.as_ref().resume_counting(elsewhere as i64) } {
                    // SAFETY: no reference is left, and nothing else frees it.
                    unsafe { release_object(count) };
                }
            }
        }
        other.join().unwrap();
        owner.merge_pending();
        drop(owner);
        assert_eq!(dropped(&drops), 1);
    });
}

/// Ownership moving to the thread that counts an object most (`ftrt_object::hot` gives a hot
/// object to the one thread that asked, in a stopped world), in miniature: threads count only
/// while attached (a read lock on the world), and the world stops (the write lock) to give the
/// count to the other thread, consuming the reference the request held. The other thread takes
/// a reference and drops two (its own and the one it took), before or after the transfer; the
/// former owner then drops its own, on the shared side once the count has moved (queueing to the
/// new owner, or merging for it once it has exited). The object is freed exactly once, after the
/// last reference is gone.
#[test]
fn transferring_ownership_in_a_stopped_world_keeps_the_count_exact() {
    use ftrt_refcount::biased::LocalCounts;
    use ftrt_refcount::BiasedCount;
    use loom::sync::atomic::AtomicU32;
    use loom::sync::RwLock;

    /// Takes or drops a reference while attached.
    ///
    /// # Safety
    /// To drop, the caller holds the reference.
    unsafe fn count_attached(
        world: &RwLock<()>,
        count: std::ptr::NonNull<BiasedCount>,
        owner: ftrt_refcount::biased::Owner<'_>,
        take: bool,
    ) {
        let _attached = world.read().unwrap();
        if take {
            // SAFETY: alive: the caller holds a reference it clones.
            unsafe { count.as_ref() }.incref_for(owner);
        } else {
            // SAFETY: the caller gives up its reference.
            unsafe { drop_ref(count, owner) };
        }
    }

    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = LocalCounts::register();
        let count = Object::leak(owner.owner(), &drops);
        // The other thread's reference, and the request's.
        // SAFETY: alive: the owner's reference is held.
        unsafe { count.as_ref() }.incref_for(owner.owner());
        // SAFETY: as above.
        unsafe { count.as_ref() }.incref_for(owner.owner());
        let world = Arc::new(RwLock::new(()));
        // The other thread's id once it has one (0: not registered yet).
        let other_id = Arc::new(AtomicU32::new(0));
        let handle = Handle(count);
        let other = {
            let (world, other_id) = (world.clone(), other_id.clone());
            thread::spawn(move || {
                let handle = handle;
                let counts = LocalCounts::register();
                other_id.store(counts.id().expect("ids left"), Ordering::Relaxed);
                // SAFETY: it holds a reference to take another from, then drops both.
                unsafe {
                    count_attached(&world, handle.0, counts.owner(), true);
                    count_attached(&world, handle.0, counts.owner(), false);
                    count_attached(&world, handle.0, counts.owner(), false);
                }
            })
        };
        let transferred = {
            let _stopped = world.write().unwrap();
            match other_id.load(Ordering::Relaxed) {
                0 => false,
                // SAFETY: the world is stopped and the request's reference is held (and given
                // up if this succeeds).
                id => unsafe { count.as_ref().transfer_ownership(id) },
            }
        };
        if !transferred {
            // SAFETY: the request's reference, given up once.
            unsafe { count_attached(&world, count, owner.owner(), false) };
        }
        // SAFETY: the owner's own reference, given up once.
        unsafe { count_attached(&world, count, owner.owner(), false) };
        other.join().unwrap();
        owner.merge_pending();
        drop(owner);
        assert_eq!(dropped(&drops), 1);
    });
}
