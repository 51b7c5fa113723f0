//! Counting on the owner and off it, queueing to the owner, its merges and its exit, the
//! convenience owner's token, and the halves a runtime calls.

use super::*;

#[test]
fn the_creating_thread_owns_the_object_and_counts_locally() {
    let count = BiasedCount::new();
    count.incref();
    count.incref();
    assert_eq!(fields(&count), (current(), 3, 0));
    assert_eq!(count.get(), RefCountValue::Mortal(3));
}

#[test]
fn other_threads_count_in_the_shared_half() {
    let count = BiasedCount::new();
    thread::scope(|s| {
        s.spawn(|| {
            count.incref();
            count.incref();
        });
    });
    assert_eq!(fields(&count), (current(), 1, 2 * ONE));
    assert_eq!(count.get(), RefCountValue::Mortal(3));
}

#[test]
fn thread_ids_are_never_reused() {
    let mut ids: Vec<u32> = (0..50)
        .map(|_| {
            thread::spawn(|| fields(&BiasedCount::new()).0)
                .join()
                .unwrap()
        })
        .collect();
    let spawned = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), spawned, "a thread id was handed out twice");
    assert!(!ids.contains(&NO_OWNER));
}

#[test]
fn the_last_drop_on_the_owner_frees_at_once() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(1));
    let clone = arc.clone();
    drop(arc);
    assert_eq!(drops.count(), 0);
    drop(clone);
    assert_eq!(drops.count(), 1);
}

#[test]
fn a_drop_that_would_take_the_shared_count_below_zero_queues_the_object() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(1));
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    // The remote drop handed its reference to this thread's queue instead of going negative.
    let (_, local, shared) = fields(header(&arc));
    assert_eq!((local, shared), (2, QUEUED));
    assert_eq!(BiasedArc::strong_count(&arc), 1);

    drop(arc);
    assert_eq!(drops.count(), 0, "freed while its queue entry was pending");
    assert_eq!(merge_pending(), 1);
    assert_eq!(drops.count(), 1);
}

#[test]
fn creating_an_object_merges_a_pending_queue() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(1));
    let remote = arc.clone();
    drop(arc);
    thread::spawn(move || drop(remote)).join().unwrap();
    assert_eq!(drops.count(), 0);
    let _next = BiasedArc::new(0_u8);
    assert_eq!(drops.count(), 1);
}

#[test]
fn when_the_owner_drops_its_last_local_reference_the_count_merges() {
    let count = BiasedCount::new();
    thread::scope(|s| {
        s.spawn(|| count.incref());
    });
    let this = NonNull::from(&count);
    // SAFETY: the count is alive and the owner gives up the reference it was created with;
    // `release` is never called because another reference remains.
    assert!(!unsafe { BiasedCount::decref(this, never_called) });
    assert_eq!(fields(&count), (NO_OWNER, 0, ONE | MERGED));
    // Now every thread, the former owner too, counts on the shared side.
    count.incref();
    assert_eq!(fields(&count).2, (2 * ONE) | MERGED);
}

#[test]
fn the_owner_exiting_merges_its_queue() {
    let drops = Drops::default();
    let (to_main, from_owner) = mpsc::channel();
    let (to_owner, from_main) = mpsc::channel::<()>();
    let owner = {
        let drops = drops.clone();
        thread::spawn(move || {
            let arc = BiasedArc::new(drops.track(7));
            to_main.send(arc.clone()).unwrap();
            drop(arc);
            // Wait until main has dropped its clone into this thread's queue, then exit.
            from_main.recv().unwrap();
        })
    };
    let clone = from_owner.recv().unwrap();
    drop(clone);
    assert_eq!(drops.count(), 0);
    to_owner.send(()).unwrap();
    owner.join().unwrap();
    assert_eq!(drops.count(), 1);
}

#[test]
fn objects_outlive_their_owner_and_the_last_holder_frees_them() {
    let drops = Drops::default();
    let arc = {
        let drops = drops.clone();
        thread::spawn(move || BiasedArc::new(drops.track(3)))
            .join()
            .unwrap()
    };
    // The owner is gone; this thread counts on the shared side.
    let clone = arc.clone();
    assert_eq!(BiasedArc::strong_count(&arc), 2);
    drop(clone);
    assert_eq!(arc.check(), 3);
    drop(arc);
    assert_eq!(drops.count(), 1);
}

#[test]
fn a_detached_thread_creates_objects_that_start_merged() {
    thread::spawn(|| {
        detach_current_thread();
        let count = BiasedCount::new();
        assert_eq!(fields(&count), (NO_OWNER, 0, ONE | MERGED));
        count.incref();
        assert_eq!(count.get(), RefCountValue::Mortal(2));
    })
    .join()
    .unwrap();
}

/// Once a weak handle exists, the owner's clones and drops stay local, but its last drop can no
/// longer decide death with a load (which an upgrade on another thread cannot see): `WEAK` keeps
/// `shared` off zero, and the death is an exchange that writes the dead state.
#[test]
fn a_weak_handle_makes_the_owners_last_drop_write_the_dead_state() {
    let arc = BiasedArc::new(0);
    let weak = BiasedArc::downgrade(&arc);
    assert_eq!(fields(header(&arc)), (current(), 1, WEAK));
    let clone = arc.clone();
    assert_eq!(fields(header(&arc)), (current(), 2, WEAK));
    drop(clone);
    let count: *const BiasedCount = header(&arc);
    drop(arc);
    // SAFETY: the weak handle keeps the memory, count included, alive.
    assert_eq!(fields(unsafe { &*count }), (NO_OWNER, 0, MERGED | WEAK));
    assert!(weak.upgrade().is_none());
}

/// A non-owner's drop that finds the shared half at zero (the `WEAK` flag aside) still queues:
/// going negative would leave the owner counting a reference that is gone.
#[test]
fn a_non_owner_drop_with_weak_handles_still_queues_at_zero() {
    let arc = BiasedArc::new(0);
    let _weak = BiasedArc::downgrade(&arc);
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    assert_eq!(fields(header(&arc)), (current(), 2, QUEUED | WEAK));
    assert_eq!(merge_pending(), 1);
    assert_eq!(fields(header(&arc)), (NO_OWNER, 2, ONE | MERGED | WEAK));
}

// `with_current_owner`: the convenience owner's token, for `BiasedArc::clone_for` / `drop_for`.

#[test]
fn clones_and_drops_with_the_owner_token_count_locally_like_clone_and_drop() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(1));
    let id = current();
    with_current_owner(|owner| {
        assert_eq!(owner.counting_id(), id);
        let a = BiasedArc::clone_for(&arc, owner);
        let b = BiasedArc::clone_for(&a, owner);
        let c = b.clone();
        assert_eq!(fields(header(&arc)), (id, 4, 0));
        BiasedArc::drop_for(a, owner);
        drop(b);
        assert_eq!(fields(header(&arc)), (id, 2, 0));
        BiasedArc::drop_for(c, owner);
    });
    assert_eq!(fields(header(&arc)), (id, 1, 0));
    assert_eq!(BiasedArc::strong_count(&arc), 1);
    drop(arc);
    assert_eq!(drops.count(), 1);
}

#[test]
fn the_owner_token_registers_a_thread_that_has_made_nothing_yet() {
    thread::spawn(|| {
        let (token_id, made) = with_current_owner(|owner| {
            let made = BiasedArc::new(7);
            let clone = BiasedArc::clone_for(&made, owner);
            assert_eq!(fields(header(&made)).1, 2, "counted locally");
            BiasedArc::drop_for(clone, owner);
            (owner.counting_id(), made)
        });
        assert_eq!(token_id, current(), "the token is the thread's own owner");
        assert_eq!(header(&made).owner_id(), Some(token_id));
    })
    .join()
    .unwrap();
}

#[test]
fn another_threads_owner_token_counts_on_the_shared_side() {
    let arc = BiasedArc::new(3);
    let id = current();
    let remote = arc.clone();
    thread::spawn(move || {
        with_current_owner(|owner| {
            let clone = BiasedArc::clone_for(&remote, owner);
            assert_eq!(fields(header(&remote)), (id, 2, ONE));
            BiasedArc::drop_for(clone, owner);
            assert_eq!(fields(header(&remote)), (id, 2, 0));
            // The last reference this thread holds, queued back to the owner.
            BiasedArc::drop_for(remote, owner);
        });
    })
    .join()
    .unwrap();
    assert_eq!(fields(header(&arc)), (id, 2, QUEUED));
    assert_eq!(BiasedArc::strong_count(&arc), 1);
}

#[test]
fn drop_for_of_the_last_reference_drops_the_value_once_on_either_thread() {
    let drops = Drops::default();
    let here = BiasedArc::new(drops.track(1));
    with_current_owner(|owner| BiasedArc::drop_for(here, owner));
    assert_eq!(drops.count(), 1, "the owner's last drop_for");

    let arc = BiasedArc::new(drops.track(2));
    let remote = arc.clone();
    drop(arc);
    thread::spawn(move || with_current_owner(|owner| BiasedArc::drop_for(remote, owner)))
        .join()
        .unwrap();
    // The last reference died on another thread: queued back, dropped at the owner's merge.
    assert_eq!(drops.count(), 1);
    assert_eq!(merge_pending(), 1);
    assert_eq!(drops.count(), 2);
}

#[test]
#[should_panic(expected = "detach_current_thread inside with_current_owner")]
fn detaching_while_an_owner_token_is_out_panics() {
    let arc = BiasedArc::new(0);
    with_current_owner(|owner| {
        let clone = BiasedArc::clone_for(&arc, owner);
        detach_current_thread();
        BiasedArc::drop_for(clone, owner);
    });
}

#[test]
fn after_the_thread_detached_the_owner_token_owns_nothing() {
    thread::spawn(|| {
        let arc = BiasedArc::new(5);
        let id = current();
        detach_current_thread();
        with_current_owner(|owner| {
            assert_eq!(owner.counting_id(), Owner::detached().counting_id());
            let clone = BiasedArc::clone_for(&arc, owner);
            assert_eq!(BiasedArc::strong_count(&arc), 2);
            assert_eq!(fields(header(&arc)).0, id, "not merged yet");
            BiasedArc::drop_for(clone, owner);
        });
        assert_eq!(BiasedArc::strong_count(&arc), 1);
    })
    .join()
    .unwrap();
}

/// The halves of `incref_counting` and `decref_counting` that callers run apart (the object
/// model looks at its own per-thread counts between them): the owner's half counts only on
/// the owner, and changes nothing elsewhere.
#[test]
fn the_owners_halves_count_on_the_owner_and_leave_the_count_alone_elsewhere() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let count = boxed_count(owner.owner());
    // SAFETY: `count` is live until the last drop below.
    let counted = unsafe { count.as_ref() };
    let before = fields(counted);
    assert!(!counted.incref_owned(other.owner(), not_deferred));
    // SAFETY: the call takes the reference only if it answers `Some`.
    let dropped = unsafe { BiasedCount::decref_owned(count, other.owner(), not_deferred) };
    assert_eq!(dropped, None);
    // SAFETY: the call takes the reference only if it answers `true`.
    let dropped = unsafe {
        BiasedCount::decref_owned_releasing(count, other.owner(), release_boxed, not_deferred)
    };
    assert!(!dropped);
    assert_eq!(
        fields(counted),
        before,
        "a non-owner's halves change nothing"
    );

    assert!(counted.incref_owned(owner.owner(), not_deferred));
    assert_eq!(counted.incref_unowned(not_deferred), Counting::Shared);
    assert_eq!(fields(counted).1, 2);
    assert_eq!(counted.get(), RefCountValue::Mortal(3));
    // SAFETY: drops one of the owner's two local references.
    let last = unsafe { BiasedCount::decref_owned(count, owner.owner(), not_deferred) };
    assert_eq!(last, Some(false));
    // SAFETY: drops the shared reference.
    let last = unsafe { BiasedCount::decref_unowned(count, release_boxed, not_deferred) };
    assert_eq!(last, Some(false));
    let before = released();
    // SAFETY: drops the last reference, which the call frees through `release_boxed`.
    assert!(unsafe {
        BiasedCount::decref_owned_releasing(count, owner.owner(), release_boxed, not_deferred)
    });
    assert_eq!(
        released(),
        before + 1,
        "the owner's last drop frees at once"
    );
}

/// The releasing owner's half merges when another thread still holds references, frees nothing
/// then, and the last drop elsewhere frees exactly once.
#[test]
fn the_releasing_owners_last_local_drop_merges_while_others_hold_references() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let count = boxed_count(owner.owner());
    // SAFETY: `count` stays live until the last drop below.
    unsafe { count.as_ref() }.incref_for(other.owner());
    let before = released();
    // SAFETY: gives up the owner's one local reference.
    assert!(unsafe {
        BiasedCount::decref_owned_releasing(count, owner.owner(), release_boxed, not_deferred)
    });
    assert_eq!(released(), before, "another reference is alive");
    // SAFETY: the count is still live (one shared reference).
    let (owner_id, local, _) = fields(unsafe { count.as_ref() });
    assert_eq!(
        (owner_id, local),
        (NO_OWNER, 0),
        "merged: no owner any more"
    );
    // SAFETY: drops the last reference.
    assert!(unsafe { BiasedCount::decref_for(count, other.owner(), release_boxed) });
    // SAFETY: freed by the caller of `decref_for`, which answered `true`.
    unsafe { release_boxed(count) };
    assert_eq!(released(), before + 1);
}

/// Immortal counts go nowhere on a non-owner's halves.
#[test]
fn the_unowned_halves_ignore_immortal_counts() {
    let count = NonNull::from(Box::leak(Box::new(BiasedCount::immortal())));
    // SAFETY: live (leaked until the end of the test).
    let counted = unsafe { count.as_ref() }.incref_unowned(not_deferred);
    assert_eq!(counted, Counting::Ignored);
    // SAFETY: an immortal count ignores the decrement.
    let dropped = unsafe { BiasedCount::decref_unowned(count, release_boxed, not_deferred) };
    assert_eq!(dropped, None);
    // SAFETY: made by `Box::leak` above, not used after.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
}
