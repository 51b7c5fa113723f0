//! Deferred counts and ownership transferred, as a runtime does them in a stopped world.

use super::*;

#[test]
fn a_deferred_count_ignores_every_thread_until_it_resumes_with_what_was_counted_elsewhere() {
    let count = BiasedCount::new();
    count.incref();
    thread::scope(|s| {
        s.spawn(|| count.incref());
    });
    // Owner 2, shared 1.
    // SAFETY: no other thread touches the count; this thread holds references.
    assert!(unsafe { count.defer_counting(TAG) });
    assert_eq!(count.owner_id(), None, "deferring merges the count");
    // SAFETY: deferred above.
    assert_eq!(unsafe { count.deferred_total() }, 3);
    assert_eq!(count.get(), RefCountValue::Immortal);
    let mut elsewhere = 0;
    // The former owner and another thread: nothing counts, nothing frees.
    for _ in 0..5 {
        assert_eq!(
            count.incref_counting(Owner::current_id(current())),
            Counting::Ignored
        );
        elsewhere += 1;
    }
    thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..7 {
                // SAFETY: each gives up one of the references counted elsewhere.
                let dropped = unsafe {
                    BiasedCount::decref_counting(
                        NonNull::from(&count),
                        Owner::current_id(current()),
                        never_released,
                    )
                };
                assert_eq!(dropped, None);
            }
        });
    });
    elsewhere -= 7;
    // SAFETY: deferred above, exclusive here, and `elsewhere` is the net counted elsewhere.
    assert!(unsafe { count.resume_counting(elsewhere) });
    assert_eq!(count.get(), RefCountValue::Mortal(1));
    // Counting again, atomically (merged): the last decrement frees.
    // SAFETY: the last reference, given up; the test owns the memory.
    let last = unsafe {
        BiasedCount::decref_counting(
            NonNull::from(&count),
            Owner::current_id(current()),
            never_released,
        )
    };
    assert_eq!(last, Some(true));
}

/// The first halves a runtime calls hand a deferred count's tag to their caller, on the inline
/// path, once for every reference taken or dropped, on every thread, the former owner included,
/// and change nothing; the count leaves every owner check (`owner_id`) and, resumed, counts
/// merged again.
#[test]
fn the_halves_hand_a_deferred_counts_tag_to_every_thread() {
    let count = BiasedCount::new();
    count.incref();
    assert_eq!(count.deferred_tag(), None);
    // SAFETY: no other thread touches the count; this thread holds its references.
    assert!(unsafe { count.defer_counting(TAG) });
    assert_eq!(count.deferred_tag(), Some(TAG));
    assert_eq!(count.owner_id(), None, "no thread owns a deferred count");
    let deferred = fields(&count);
    assert_eq!((deferred.0, deferred.1), (DEFERRED_OWNER, u32::from(TAG)));
    // The former owner, then another thread: each increment and decrement hands out the tag.
    let count_by_halves = || {
        let owner = Owner::current_id(current());
        let mut handed = Vec::new();
        assert!(count.incref_owned(owner, |tag| handed.push((tag, 1))));
        // SAFETY: gives up the reference just taken (counted elsewhere, by the caller).
        let dropped = unsafe {
            BiasedCount::decref_owned(NonNull::from(&count), owner, |tag| handed.push((tag, -1)))
        };
        assert_eq!(dropped, Some(false));
        // SAFETY: as above.
        let released = unsafe {
            BiasedCount::decref_owned_releasing(NonNull::from(&count), owner, never_called, |tag| {
                handed.push((tag, -1))
            })
        };
        assert!(released, "the decrement is done");
        handed
    };
    assert_eq!(count_by_halves(), [(TAG, 1), (TAG, -1), (TAG, -1)]);
    let elsewhere = thread::scope(|s| s.spawn(count_by_halves).join().unwrap());
    assert_eq!(elsewhere, [(TAG, 1), (TAG, -1), (TAG, -1)]);
    assert_eq!(fields(&count), deferred, "a deferred count never changes");
    // Each thread took one reference and dropped two: the count's two are gone.
    // SAFETY: deferred above, exclusive here; -2 is the net counted elsewhere.
    assert!(!unsafe { count.resume_counting(-2) }, "no reference left");
    assert_eq!(count.deferred_tag(), None);
    assert_eq!(
        fields(&count),
        (NO_OWNER, 0, MERGED),
        "merged, dead, tag cleared"
    );
}

/// On the out-of-line path the first halves leave a deferred count alone, as one the token does
/// not own, and the unowned halves hand its tag over, once for every reference taken or
/// dropped; neither half hands over a count that is not deferred.
#[test]
fn out_of_line_the_unowned_halves_hand_a_deferred_counts_tag_over() {
    let count = BiasedCount::new();
    count.incref();
    let owner = Owner::current_id(current());
    // Not deferred yet: the owner counts it, and neither path is asked for.
    assert!(count.incref_owned(owner, not_deferred_on_either_path()));
    // SAFETY: gives up the reference just taken.
    let dropped = unsafe {
        BiasedCount::decref_owned(NonNull::from(&count), owner, not_deferred_on_either_path())
    };
    assert_eq!(dropped, Some(false));
    // SAFETY: no other thread touches the count; this thread holds its references.
    assert!(unsafe { count.defer_counting(TAG) });
    let deferred = fields(&count);
    let count_by_halves = || {
        let owner = Owner::current_id(current());
        let mut first = Vec::new();
        let mut unowned = Vec::new();
        assert!(!count.incref_owned(owner, out_of_line(|tag| first.push((tag, 1)))));
        assert_eq!(
            count.incref_unowned(|tag| unowned.push((tag, 1))),
            Counting::Ignored
        );
        // SAFETY: the first half changes nothing; the unowned half gives up the reference
        // just taken (counted elsewhere, by the caller).
        let dropped = unsafe {
            BiasedCount::decref_owned(
                NonNull::from(&count),
                owner,
                out_of_line(|tag| first.push((tag, -1))),
            )
        };
        assert_eq!(dropped, None);
        // SAFETY: as above.
        let dropped = unsafe {
            BiasedCount::decref_unowned(NonNull::from(&count), never_called, |tag| {
                unowned.push((tag, -1))
            })
        };
        assert_eq!(dropped, None);
        assert!(first.is_empty(), "the first halves hand nothing over");
        unowned
    };
    // The former owner, then another thread.
    assert_eq!(count_by_halves(), [(TAG, 1), (TAG, -1)]);
    let elsewhere = thread::scope(|s| s.spawn(count_by_halves).join().unwrap());
    assert_eq!(elsewhere, [(TAG, 1), (TAG, -1)]);
    assert_eq!(fields(&count), deferred, "a deferred count never changes");
    // SAFETY: deferred above, exclusive here; nothing net was counted elsewhere.
    assert!(unsafe { count.resume_counting(0) }, "both references left");
    // SAFETY: the test's two references, given up; the second is the last.
    unsafe {
        assert!(!BiasedCount::decref(NonNull::from(&count), never_called));
        assert!(BiasedCount::decref(NonNull::from(&count), never_called));
    }
}

#[test]
fn a_resumed_count_with_no_reference_left_is_dead() {
    let count = BiasedCount::new();
    // SAFETY: exclusive; this thread holds the one reference.
    assert!(unsafe { count.defer_counting(TAG) });
    // The one reference was dropped elsewhere.
    // SAFETY: deferred above, exclusive, and -1 is what was counted elsewhere.
    assert!(!unsafe { count.resume_counting(-1) });
    assert_eq!(count.get(), RefCountValue::Mortal(0));
}

#[test]
fn immortal_deferred_and_queued_counts_are_not_deferred() {
    let immortal = BiasedCount::immortal();
    // SAFETY: exclusive in each case; the test holds references.
    assert!(!unsafe { immortal.defer_counting(TAG) });
    let deferred = BiasedCount::new();
    // SAFETY: as above.
    assert!(unsafe { deferred.defer_counting(TAG) });
    // SAFETY: as above.
    assert!(!unsafe { deferred.defer_counting(TAG) }, "already deferred");
    // SAFETY: deferred.
    assert_eq!(unsafe { deferred.deferred_total() }, 1);
    // A pending queue entry: a non-owner dropped a reference while the shared half was zero.
    let queued = BiasedCount::new();
    queued.incref();
    thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: the reference the owner took for this thread, given up.
            let last = unsafe {
                BiasedCount::decref_counting(
                    NonNull::from(&queued),
                    Owner::current_id(current()),
                    never_released,
                )
            };
            assert_eq!(last, Some(false));
        });
    });
    assert_eq!(fields(&queued).2 & QUEUED, QUEUED);
    // SAFETY: as above.
    assert!(!unsafe { queued.defer_counting(TAG) });
    assert_eq!(merge_pending(), 1);
    assert!(
        // SAFETY: as above.
        unsafe { queued.defer_counting(TAG) },
        "merged: no entry pending"
    );
}

#[test]
fn a_transferred_count_is_counted_locally_by_its_new_owner_and_keeps_its_total() {
    // Two owners on one thread: the protocol only sees ids.
    let (first, second) = (LocalCounts::register(), LocalCounts::register());
    let count = boxed_count(first.owner());
    // SAFETY: alive: the first owner's reference is held.
    let counted = unsafe { count.as_ref() };
    counted.incref_for(first.owner());
    counted.incref_for(second.owner());
    counted.incref_for(second.owner());
    // Four references: two counted locally by the first owner, two shared by the second. The
    // caller's (one of the second's) is given up by the transfer.
    // SAFETY: nothing else counts; the test holds references.
    assert!(unsafe { counted.transfer_ownership(second.owner().id()) });
    assert_eq!(counted.owner_id(), second.id());
    assert_eq!(counted.get(), RefCountValue::Mortal(3));
    // The new owner counts without touching the shared half; the former owner counts on it.
    let shared_before = fields(counted).2;
    assert_eq!(counted.incref_counting(second.owner()), Counting::Local);
    assert_eq!(fields(counted).2, shared_before);
    assert_eq!(counted.incref_counting(first.owner()), Counting::Shared);
    assert_eq!(counted.get(), RefCountValue::Mortal(5));
    // Everyone lets go, in an order that takes the new owner's local count to zero first (it
    // gives up ownership) and the former owner's drops to the shared half: freed once, at the
    // last.
    let before = released();
    for owner in [&second, &second, &first, &first] {
        // SAFETY: one of the references counted above, each given up once.
        let last = unsafe { BiasedCount::decref_for(count, owner.owner(), release_boxed) };
        assert!(!last);
    }
    assert_eq!(released(), before);
    second.merge_pending();
    first.merge_pending();
    // SAFETY: the last reference.
    let last = unsafe { BiasedCount::decref_for(count, first.owner(), release_boxed) };
    if last {
        // SAFETY: that was the last reference.
        unsafe { release_boxed(count) };
    }
    second.merge_pending();
    first.merge_pending();
    assert_eq!(released(), before + 1, "freed exactly once");
}

#[test]
fn counts_without_an_owner_to_replace_or_without_a_spare_reference_are_not_transferred() {
    let (first, second) = (LocalCounts::register(), LocalCounts::register());
    let new_owner = second.owner().id();
    let immortal = BiasedCount::immortal();
    // SAFETY: nothing else counts; the test holds a reference.
    assert!(!unsafe { immortal.transfer_ownership(new_owner) });
    let merged = BiasedCount::new_for(Owner::detached());
    merged.incref_for(first.owner());
    // SAFETY: nothing else counts; the test holds a reference.
    assert!(!unsafe { merged.transfer_ownership(new_owner) }, "merged");
    let only_one = BiasedCount::new_for(first.owner());
    assert!(
        // SAFETY: nothing else counts; the test holds a reference.
        !unsafe { only_one.transfer_ownership(new_owner) },
        "the caller's only"
    );
    assert_eq!(only_one.get(), RefCountValue::Mortal(1));
    let already = BiasedCount::new_for(second.owner());
    already.incref_for(second.owner());
    assert!(
        // SAFETY: nothing else counts; the test holds a reference.
        !unsafe { already.transfer_ownership(new_owner) },
        "already its owner"
    );
    let deferred = BiasedCount::new_for(first.owner());
    deferred.incref_for(first.owner());
    // SAFETY: nothing else counts; the test holds a reference.
    assert!(unsafe { deferred.defer_counting(TAG) });
    assert!(
        // SAFETY: nothing else counts; the test holds a reference.
        !unsafe { deferred.transfer_ownership(new_owner) },
        "deferred"
    );
    // A pending queue entry, which the former owner's merge would settle.
    let queued = boxed_count(first.owner());
    // SAFETY: alive: the first owner's reference is held.
    let counted = unsafe { queued.as_ref() };
    counted.incref_for(first.owner());
    counted.incref_for(first.owner());
    // SAFETY: a reference the first owner took, given up by the second: queued (shared was 0).
    assert!(!unsafe { BiasedCount::decref_for(queued, second.owner(), release_boxed) });
    // SAFETY: nothing else counts; the test holds a reference.
    assert!(!unsafe { counted.transfer_ownership(new_owner) }, "queued");
    assert_eq!(first.merge_pending(), 1);
    for _ in 0..2 {
        // SAFETY: the first owner's remaining references.
        if unsafe { BiasedCount::decref_for(queued, first.owner(), release_boxed) } {
            // SAFETY: the last one.
            unsafe { release_boxed(queued) };
        }
    }
}
