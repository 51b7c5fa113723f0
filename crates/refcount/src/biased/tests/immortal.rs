//! Immortal counts: the mark in `local`, saturation of `shared`, and `make_immortal`.

use super::*;

#[test]
fn immortal_counts_are_never_written() {
    let count = BiasedCount::immortal();
    let before = fields(&count);
    thread::scope(|s| {
        s.spawn(|| {
            count.incref();
            // SAFETY: immortal: `decref` never releases.
            assert!(!unsafe { BiasedCount::decref(NonNull::from(&count), never_called) });
        });
    });
    count.incref();
    assert_eq!(fields(&count), before);
    assert_eq!(count.get(), RefCountValue::Immortal);
}

#[test]
fn a_local_count_that_reaches_the_mark_is_immortal_for_good() {
    // Both orders of the tests (the halves test the mark first, the whole operations the owner).
    for by_halves in [true, false] {
        let owner = LocalCounts::register();
        let id = owner.id().expect("registered");
        let count = BiasedCount::from_parts(id, IMMORTAL_LOCAL - 1, 0);
        if by_halves {
            assert!(count.incref_owned(owner.owner(), not_deferred));
        } else {
            count.incref_for(owner.owner());
        }
        assert_eq!(
            fields(&count).1,
            IMMORTAL_LOCAL,
            "the local count must not wrap"
        );
        assert!(count.is_immortal());
        assert_eq!(count.get(), RefCountValue::Immortal);
        // The mark stays: the owner's increments and decrements stop at it, in either order.
        assert!(count.incref_owned(owner.owner(), not_deferred));
        count.incref_for(owner.owner());
        // SAFETY: immortal: nothing is released.
        unsafe {
            assert_eq!(
                BiasedCount::decref_owned(NonNull::from(&count), owner.owner(), not_deferred),
                Some(false)
            );
            assert!(!BiasedCount::decref_for(
                NonNull::from(&count),
                owner.owner(),
                never_called
            ));
        }
        assert_eq!(fields(&count).1, IMMORTAL_LOCAL);
        // Another thread skips it at the mark, before or after the owner check.
        let other = LocalCounts::register();
        assert!(count.incref_owned(other.owner(), not_deferred));
        assert_eq!(count.incref_counting(other.owner()), Counting::Ignored);
        // Merged at the mark (here by another thread once the owner has retired), it saturates
        // the shared half.
        drop(owner);
        assert!(!count.is_unique());
        assert!(saturated(fields(&count).2));
        // SAFETY: immortal, never unique: nothing may be taken.
        assert_eq!(unsafe { count.try_take_unique() }, TakeUnique::Shared);
    }
}

/// An owner that gives up a count at the mark leaves it saturated: never unique, never freed.
#[test]
fn giving_up_ownership_at_the_mark_saturates_the_count() {
    // Registers this thread's convenience owner, which `give_up_ownership` acts for.
    let _registered = BiasedCount::new();
    let count = BiasedCount::from_parts(current(), IMMORTAL_LOCAL - 1, 0);
    count.incref();
    count.give_up_ownership();
    assert_eq!(count.owner_id(), None);
    assert!(saturated(fields(&count).2), "the merge saturates");
    assert!(!count.is_unique());
    assert_eq!(count.get(), RefCountValue::Immortal);
}

/// CPython's encoding: a count immortal from its creation says so in `local`, which a thread
/// reads before the owner check or right after it, and then looks no further.
#[test]
fn every_thread_finds_a_count_immortal_from_its_creation_in_its_local_half() {
    let (first, second) = (LocalCounts::register(), LocalCounts::register());
    let count = &BiasedCount::immortal();
    let before = fields(count);
    for owner in [first.owner(), second.owner()] {
        assert!(
            count.incref_owned(owner, not_deferred),
            "the first half ends it"
        );
        assert_eq!(count.incref_counting(owner), Counting::Ignored);
        // SAFETY: immortal: nothing is released, and the first half takes the reference.
        let dropped =
            unsafe { BiasedCount::decref_owned(NonNull::from(count), owner, not_deferred) };
        assert_eq!(dropped, Some(false));
        // SAFETY: as above.
        let dropped = unsafe {
            BiasedCount::decref_owned_releasing(
                NonNull::from(count),
                owner,
                never_called,
                not_deferred,
            )
        };
        assert!(dropped);
        // SAFETY: as above.
        let dropped =
            unsafe { BiasedCount::decref_counting(NonNull::from(count), owner, never_called) };
        assert_eq!(dropped, None, "ignored, as a deferred count's decrement is");
    }
    assert_eq!(fields(count), before, "nothing is written");
}

#[test]
fn a_shared_count_that_would_overflow_becomes_immortal() {
    let count = BiasedCount::from_parts(NO_OWNER, 0, ((SATURATED - 1) << FLAG_BITS) | MERGED);
    count.incref();
    assert!(count.is_immortal());
    count.incref();
    assert_eq!(
        count_of(fields(&count).2),
        SATURATED,
        "increments past saturation are taken back"
    );
    // SAFETY: immortal: `decref` never releases.
    assert!(!unsafe { BiasedCount::decref(NonNull::from(&count), never_called) });
    assert_eq!(count.get(), RefCountValue::Immortal);
}

#[test]
fn a_shared_count_driven_far_below_zero_becomes_immortal_rather_than_wrapping() {
    // Owned elsewhere (an id this thread does not have), shared already at the floor.
    let count =
        BiasedCount::from_parts(LAST_TEST_OWNER, 5, ((1 - SATURATED) << FLAG_BITS) | QUEUED);
    // SAFETY: the count is alive; saturation means `release` is never called.
    assert!(!unsafe { BiasedCount::decref(NonNull::from(&count), never_called) });
    assert!(count.is_immortal());
}

#[test]
fn make_immortal_works_from_any_thread() {
    let count = BiasedCount::new();
    thread::scope(|s| {
        s.spawn(|| count.make_immortal());
    });
    assert!(count.is_immortal());
    // SAFETY: immortal: `decref` never releases.
    assert!(!unsafe { BiasedCount::decref(NonNull::from(&count), never_called) });
    assert_eq!(count.get(), RefCountValue::Immortal);
}

#[test]
fn saturation_is_a_count_magnitude_of_at_least_saturated_for_every_word() {
    let by_definition = |shared: i32| count_of(shared).unsigned_abs() >= SATURATED as u32;
    let edges = [
        i32::MIN,
        i32::MAX,
        0,
        SATURATED << FLAG_BITS,
        (-SATURATED + 1) << FLAG_BITS,
        -SATURATED << FLAG_BITS,
    ];
    let near_edges = edges
        .iter()
        .flat_map(|&edge| (-64..=64).map(move |d: i32| edge.wrapping_add(d)));
    // Every 2^12th word besides (2^14th under Miri), offset so that the stride does not only
    // hit round words.
    let (steps, step) = if cfg!(miri) {
        (1u32 << 18, 1 << 14)
    } else {
        (1 << 20, 1 << 12)
    };
    let stride = (0..steps).map(|i| (i.wrapping_mul(step).wrapping_add(i % 8)) as i32);
    for shared in near_edges.chain(stride) {
        assert_eq!(
            saturated(shared),
            by_definition(shared),
            "shared word {shared:#x} (count {})",
            count_of(shared)
        );
    }
}
