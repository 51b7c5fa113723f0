//! The biased protocol, step by step, observed through the header fields.

use std::sync::{mpsc, Mutex};
use std::thread;

use super::thread::{current, DEFERRED_OWNER, NO_OWNER};
use super::*;
use crate::test_util::{Drops, Tracked};
use crate::BiasedArc;

fn fields(count: &BiasedCount) -> (u32, u32, i32) {
    (
        count.owner.load(Ordering::Relaxed),
        count.local.load(Ordering::Relaxed),
        count.shared.load(Ordering::Relaxed),
    )
}

fn header<T>(arc: &BiasedArc<T>) -> &BiasedCount {
    BiasedArc::header(arc)
}

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

unsafe fn never_called(_: NonNull<BiasedCount>) {
    panic!("release called for an object that is still referenced");
}

/// The `deferred` argument of the halves, for a count that is not deferred.
fn not_deferred(tag: u16) {
    panic!("a count that is not deferred handed out tag {tag}");
}

/// The `deferred` argument of the first halves, for a count that is not deferred: neither its
/// path nor its count may be asked for.
fn not_deferred_on_either_path() -> impl CountDeferred {
    struct NotDeferred;
    impl CountDeferred for NotDeferred {
        fn path(&self) -> DeferredPath {
            panic!("the path asked for a count that is not deferred")
        }
        fn count(self, tag: u16) {
            panic!("a count that is not deferred handed out tag {tag}")
        }
    }
    NotDeferred
}

/// The `deferred` argument of the first halves that takes the out-of-line path.
fn out_of_line(count: impl FnOnce(u16)) -> impl CountDeferred {
    CountOnPath {
        path: DeferredPath::OUT_OF_LINE,
        count,
    }
}

/// The tag the tests defer counts with.
const TAG: u16 = 7;

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

#[test]
fn try_unwrap_counts_a_queued_drop_as_dropped() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(5));
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();

    let value = BiasedArc::try_unwrap(arc).ok().expect("the only reference");
    assert_eq!(value.check(), 5);
    drop(value);
    assert_eq!(drops.count(), 1);
    // The pending entry now frees the husk's memory without dropping the value again.
    assert_eq!(merge_pending(), 1);
    assert_eq!(drops.count(), 1);
}

/// `get_mut` and `make_mut` on the owner merge a drop queued back to it first: the value they
/// change in place is then dropped with the handle's drop, not at a later merge, so whatever the
/// new value borrows outlives it.
#[test]
fn get_mut_and_make_mut_on_the_owner_merge_a_queued_drop_so_the_value_drops_with_its_last_handle() {
    type ChangeInPlace = fn(&mut BiasedArc<Tracked>) -> &mut Tracked;
    let get_mut: ChangeInPlace = |arc| BiasedArc::get_mut(arc).expect("the only handle");
    let make_mut: ChangeInPlace = BiasedArc::make_mut;
    for change_in_place in [get_mut, make_mut] {
        let drops = Drops::default();
        let mut arc = BiasedArc::new(drops.track(5));
        let remote = arc.clone();
        thread::spawn(move || drop(remote)).join().unwrap();
        let before = BiasedArc::as_ptr(&arc);
        *change_in_place(&mut arc) = drops.track(6);
        assert_eq!(
            BiasedArc::as_ptr(&arc),
            before,
            "changed in place, not cloned"
        );
        assert_eq!(drops.count(), 1, "the replaced value");
        assert_eq!(merge_pending(), 0, "merged by the call");
        drop(arc);
        assert_eq!(
            drops.count(),
            2,
            "the new value dropped with the last handle"
        );
    }
}

/// A value changed in place may borrow for less than its type says: handles are covariant, as
/// `Arc`'s are, so a handle to a value that borrows for `'static` is also one to a value that
/// borrows for less. Its drop must then come while the borrow lasts, which a drop left for a
/// queue entry to run at a later merge would not.
#[test]
fn a_value_given_a_shorter_borrow_in_place_is_dropped_while_the_borrow_lasts() {
    static DROPPED_READING: Mutex<Vec<String>> = Mutex::new(Vec::new());
    static NOTHING: String = String::new();
    struct ReadsOnDrop<'a>(&'a String);
    impl Drop for ReadsOnDrop<'_> {
        fn drop(&mut self) {
            DROPPED_READING.lock().unwrap().push(self.0.clone());
        }
    }

    let long_lived: BiasedArc<ReadsOnDrop<'static>> = BiasedArc::new(ReadsOnDrop(&NOTHING));
    let remote = long_lived.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    let borrowed = String::from("borrowed");
    let mut short_lived: BiasedArc<ReadsOnDrop<'_>> = long_lived;
    *BiasedArc::get_mut(&mut short_lived).expect("the only handle") = ReadsOnDrop(&borrowed);
    drop(short_lived);
    let dropped = DROPPED_READING.lock().unwrap().clone();
    // Should the value still be waiting for the merge, run it while `borrowed` lives, so that
    // a failure here fails the assertion rather than reading freed memory later.
    merge_pending();
    assert_eq!(dropped, ["", "borrowed"], "dropped with the last handle");
}

/// An owner that gave the count up after a drop was queued to it still has the entry in its own
/// queue: its `get_mut` merges it, and answers exactly, as on a merged count without one.
#[test]
fn get_mut_after_giving_up_ownership_merges_a_drop_queued_before() {
    let drops = Drops::default();
    let mut arc = BiasedArc::new(drops.track(3));
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    BiasedArc::give_up_ownership(&arc);
    *BiasedArc::get_mut(&mut arc).expect("the only handle, merged") = drops.track(4);
    assert_eq!(drops.count(), 1, "the replaced value");
    drop(arc);
    assert_eq!(
        drops.count(),
        2,
        "the new value dropped with the last handle"
    );
}

/// A handle whose count another thread's queue still holds a dropped reference of is not unique
/// on a thread that cannot merge that queue: dropping it would leave the value to that merge.
#[test]
fn a_handle_with_a_drop_queued_to_another_thread_is_not_unique() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(7));
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    // Merged, so another thread reads the count exactly; the queued drop stays in this thread's
    // queue.
    BiasedArc::give_up_ownership(&arc);
    let original = BiasedArc::as_ptr(&arc) as usize;
    thread::spawn({
        let drops = drops.clone();
        move || {
            let mut arc = arc;
            assert!(BiasedArc::get_mut(&mut arc).is_none(), "a drop is queued");
            *BiasedArc::make_mut(&mut arc) = drops.track(8);
            assert_ne!(BiasedArc::as_ptr(&arc) as usize, original, "cloned");
        }
    })
    .join()
    .unwrap();
    assert_eq!(drops.count(), 2, "the clone and the value it replaced");
    assert_eq!(merge_pending(), 1);
    assert_eq!(drops.count(), 3, "the original, at the queued drop's merge");
}

#[test]
fn a_non_owner_unwraps_once_the_owner_has_merged_a_queued_drop() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(9));
    let (kept, dropped) = (arc.clone(), arc.clone());
    thread::spawn(move || drop(dropped)).join().unwrap();
    drop(arc);
    // `kept` is the only handle, but the owner still counts the queued drop's reference locally
    // until it merges: another thread cannot tell that apart from a handle the owner holds.
    let kept = thread::spawn(move || {
        BiasedArc::try_unwrap(kept)
            .err()
            .expect("the owner may still hold a handle")
    })
    .join()
    .unwrap();
    assert_eq!(merge_pending(), 1);
    let (owner, _, shared) = fields(header(&kept));
    assert_eq!((owner, shared), (NO_OWNER, ONE | MERGED));
    let value = thread::spawn(move || {
        BiasedArc::try_unwrap(kept)
            .ok()
            .expect("merged: the only reference")
    })
    .join()
    .unwrap();
    assert_eq!(value.check(), 9);
    drop(value);
    assert_eq!(drops.count(), 1);
}

#[test]
fn a_non_owner_answers_shared_while_the_owner_holds_a_handle() {
    let drops = Drops::default();
    let owned = BiasedArc::new(drops.track(4));
    let (to_non_owner, from_owner) = mpsc::channel::<&str>();
    let (to_owner, from_non_owner) = mpsc::channel();
    let non_owner = {
        let mut remote = owned.clone();
        thread::spawn(move || {
            // Asked at each step of the race in issue 8: after the owner clones, and after a
            // third thread drops that clone.
            for step in from_owner {
                let unique = BiasedArc::get_mut(&mut remote).is_some();
                to_owner.send((step, unique)).unwrap();
            }
            BiasedArc::try_unwrap(remote)
                .err()
                .expect("the owner still holds a handle")
        })
    };
    let ask = |step| {
        to_non_owner.send(step).unwrap();
        let (step, unique) = from_non_owner.recv().unwrap();
        assert!(
            !unique,
            "the non-owner's handle was called unique when {step}"
        );
    };
    ask("both hold a handle");
    let clone = owned.clone();
    ask("the owner had cloned");
    thread::spawn(move || drop(clone)).join().unwrap();
    ask("a third thread had dropped the clone");
    drop(to_non_owner);
    let remote = non_owner.join().unwrap();
    assert_eq!(owned.check(), 4);
    drop((owned, remote));
    merge_pending();
    assert_eq!(drops.count(), 1);
}

#[test]
fn a_handle_moved_to_another_thread_is_maybe_shared_there_while_its_owner_lives() {
    let drops = Drops::default();
    let moved = BiasedArc::new(drops.track(6));
    let moved = thread::spawn(move || {
        let mut moved = moved;
        // The only handle, but its creator (alive) still counts it locally: from here that is
        // indistinguishable from the creator holding another handle.
        assert!(BiasedArc::get_mut(&mut moved).is_none());
        BiasedArc::try_unwrap(moved)
            .err()
            .expect("the owner lives and counts locally")
    })
    .join()
    .unwrap();
    // On the owner the answer is exact.
    let value = BiasedArc::try_unwrap(moved)
        .ok()
        .expect("the only reference");
    assert_eq!(value.check(), 6);
}

#[test]
fn a_non_owner_gets_the_value_once_the_owner_has_exited() {
    let drops = Drops::default();
    let mut orphan = {
        let drops = drops.clone();
        thread::spawn(move || BiasedArc::new(drops.track(2)))
            .join()
            .unwrap()
    };
    // The owner retired at exit and never writes `local` again: this thread merges the count on
    // its behalf and answers exactly.
    *BiasedArc::get_mut(&mut orphan).expect("the owner has exited") = drops.track(3);
    assert_eq!(drops.count(), 1, "the replaced value was dropped");
    assert_eq!(fields(header(&orphan)), (NO_OWNER, 1, ONE | MERGED));
    let value = BiasedArc::try_unwrap(orphan)
        .ok()
        .expect("the only reference");
    assert_eq!(value.check(), 3);
    drop(value);
    assert_eq!(drops.count(), 2);
}

#[test]
fn a_non_owner_gets_the_value_once_the_owner_gives_up_ownership() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(5));
    let clone = arc.clone();
    BiasedArc::give_up_ownership(&arc);
    assert_eq!(fields(header(&arc)), (NO_OWNER, 2, (2 * ONE) | MERGED));
    // The former owner counts atomically now.
    drop(clone);
    assert_eq!(fields(header(&arc)).2, ONE | MERGED);
    let value = thread::spawn(move || BiasedArc::try_unwrap(arc).ok().expect("merged and unique"))
        .join()
        .unwrap();
    assert_eq!(value.check(), 5);
    drop(value);
    assert_eq!(drops.count(), 1);
}

#[test]
fn giving_up_ownership_keeps_a_pending_entry_for_its_merge() {
    let drops = Drops::default();
    let arc = BiasedArc::new(drops.track(8));
    let remote = arc.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    BiasedArc::give_up_ownership(&arc);
    // local 2 folded in, the queued reference still counted until its entry is merged.
    assert_eq!(
        fields(header(&arc)),
        (NO_OWNER, 2, (2 * ONE) | QUEUED | MERGED)
    );
    assert_eq!(BiasedArc::strong_count(&arc), 1);
    assert_eq!(merge_pending(), 1);
    assert_eq!(fields(header(&arc)).2, ONE | MERGED);
    assert_eq!(drops.count(), 0);
    drop(arc);
    assert_eq!(drops.count(), 1);
}

#[test]
fn giving_up_ownership_on_a_thread_that_does_not_own_the_count_does_nothing() {
    let arc = BiasedArc::new(1);
    let remote = arc.clone();
    let before = fields(header(&arc));
    thread::spawn(move || BiasedArc::give_up_ownership(&remote))
        .join()
        .unwrap();
    assert_eq!(fields(header(&arc)).0, before.0);
    assert_eq!(fields(header(&arc)).1, before.1);
    merge_pending();
}

#[test]
fn try_unwrap_refuses_while_another_reference_exists() {
    let arc = BiasedArc::new(1);
    let other = thread::spawn({
        let arc = arc.clone();
        move || arc
    })
    .join()
    .unwrap();
    let arc = BiasedArc::try_unwrap(arc).expect_err("two references");
    drop(other);
    assert_eq!(BiasedArc::try_unwrap(arc), Ok(1));
}

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

/// An id no test thread will reach.
const LAST_TEST_OWNER: u32 = u32::MAX - 3;

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
fn dropping_values_during_a_merge_may_drop_more_biased_objects() {
    let drops = Drops::default();
    let inner = BiasedArc::new(drops.track(1));
    let outer = BiasedArc::new((inner, drops.track(2)));
    let remote = outer.clone();
    thread::spawn(move || drop(remote)).join().unwrap();
    drop(outer);
    merge_pending();
    assert_eq!(drops.count(), 2);
}

/// Unreachable release function for counts the tests settle by hand.
unsafe fn never_released(_: NonNull<BiasedCount>) {
    unreachable!("the test keeps a reference")
}

#[test]
fn an_explicit_owner_counts_locally_with_the_id_of_its_local_counts() {
    let counts = LocalCounts::register();
    let id = counts.id().expect("ids left");
    assert_ne!(
        id,
        current(),
        "a separate owner from the thread-local convenience"
    );
    let count = BiasedCount::new_for(counts.owner());
    count.incref_for(counts.owner());
    assert_eq!(fields(&count), (id, 2, 0));
    assert_eq!(count.owner_id(), Some(id));
    // The convenience's id is another owner: it counts on the shared side.
    count.incref();
    assert_eq!(fields(&count), (id, 2, ONE));
    // SAFETY: three references are held and the test gives up two.
    unsafe {
        assert!(!BiasedCount::decref(NonNull::from(&count), never_released));
        assert!(!BiasedCount::decref_for(
            NonNull::from(&count),
            counts.owner(),
            never_released
        ));
    }
    assert_eq!(fields(&count), (id, 1, 0));
}

#[test]
fn retiring_local_counts_gives_up_ownership_and_makes_uniqueness_exact_elsewhere() {
    let counts = LocalCounts::register();
    let count = BiasedCount::new_for(counts.owner());
    // Another owner cannot read a live owner's local count exactly.
    assert!(!count.is_unique());
    counts.retire();
    // Retired: the owner left the registry, so any thread may merge on its behalf.
    assert!(count.is_unique());
    assert_eq!(count.owner_id(), None);
}

#[test]
fn an_explicit_owner_gives_up_its_ownership_with_its_own_token() {
    let counts = LocalCounts::register();
    let id = counts.id().expect("ids left");
    let count = BiasedCount::new_for(counts.owner());
    // The thread-local convenience is another owner: giving up as it changes nothing.
    count.give_up_ownership();
    assert_eq!(count.owner_id(), Some(id));
    assert!(
        !count.is_unique(),
        "another live owner's count reads as maybe shared"
    );
    count.give_up_ownership_for(counts.owner());
    assert_eq!(count.owner_id(), None);
    assert_eq!(fields(&count).2, ONE | MERGED);
    assert!(count.is_unique(), "merged: exact on every thread");
    // A token that does not own the count changes nothing either.
    count.give_up_ownership_for(counts.owner());
    assert_eq!(fields(&count).2, ONE | MERGED);
}

#[test]
fn a_detached_owner_creates_shared_objects() {
    let count = BiasedCount::new_for(Owner::detached());
    assert_eq!(fields(&count), (NO_OWNER, 0, ONE | MERGED));
    assert_eq!(count.owner_id(), None);
}

thread_local! {
    static RELEASED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Frees a `Box<BiasedCount>` made by `boxed_count` and counts the release on this thread.
unsafe fn release_boxed(count: NonNull<BiasedCount>) {
    // SAFETY: made by `Box::into_raw` in `boxed_count`; released exactly once.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
    RELEASED.with(|r| r.set(r.get() + 1));
}

fn boxed_count(owner: Owner<'_>) -> NonNull<BiasedCount> {
    NonNull::from(Box::leak(Box::new(BiasedCount::new_for(owner))))
}

fn released() -> usize {
    RELEASED.with(|r| r.get())
}

#[test]
fn a_drop_by_another_owner_while_the_owner_is_parked_frees_at_once() {
    // Two owners on one thread: the protocol only sees ids.
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let count = boxed_count(owner.owner());
    // SAFETY: the test counts nothing through `owner` until it unparks.
    unsafe { owner.park() };
    let before = released();
    // SAFETY: the one reference, counted in the owner's local half, is dropped by another owner.
    unsafe { BiasedCount::decref_for(count, other.owner(), release_boxed) };
    assert_eq!(
        released(),
        before + 1,
        "queued to a parked owner instead of merged"
    );
    owner.unpark();
    assert_eq!(owner.merge_pending(), 0);
}

/// Panics in its release instead of freeing (a value whose destructor panics), after counting
/// the release.
unsafe fn release_panicking(count: NonNull<BiasedCount>) {
    // SAFETY: as in `release_boxed`.
    unsafe { release_boxed(count) };
    panic!("a destructor panicked");
}

/// A release that panics while another thread merges an object for a parked owner unwinds out of
/// that thread's drop, and the merge is over all the same: later drops are merged by their own
/// threads, and the owner's unpark does not wait for it. (When the first thread to find the owner
/// parked claimed its queue, a claim left set by the panic made every later drop stay queued, and
/// the unpark wait for ever for a merge that had ended.)
#[test]
fn a_panicking_release_for_a_parked_owner_ends_its_merge() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let (panicking, next) = (boxed_count(owner.owner()), boxed_count(owner.owner()));
    // SAFETY: nothing is counted through `owner` until it unparks.
    unsafe { owner.park() };
    let before = released();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the one reference, dropped by another owner; `release_panicking` frees it.
        unsafe { BiasedCount::decref_for(panicking, other.owner(), release_panicking) };
    }));
    assert!(
        unwound.is_err(),
        "the release's panic reaches the dropping thread"
    );
    assert_eq!(released(), before + 1);
    // SAFETY: as above.
    unsafe { BiasedCount::decref_for(next, other.owner(), release_boxed) };
    assert_eq!(released(), before + 2, "left queued to a parked owner");
    owner.unpark();
    assert_eq!(owner.merge_pending(), 0);
}

/// Queues two objects to `owner` from `other`: `last` is merged first (the queue pops the latest
/// entry), and its release panics; `first`'s frees it normally.
fn queue_a_panicking_release_before_another(owner: &LocalCounts, other: &LocalCounts) {
    let (first, last) = (boxed_count(owner.owner()), boxed_count(owner.owner()));
    // SAFETY: each count's one reference, dropped by another owner; the releases free them.
    unsafe { BiasedCount::decref_for(first, other.owner(), release_boxed) };
    // SAFETY: as above.
    unsafe { BiasedCount::decref_for(last, other.owner(), release_panicking) };
}

/// A retiring owner drains its queue for good: after it leaves the registry nobody can reach the
/// queue again. A release that panicked there unwound out of the drain and stranded the entries
/// behind it: their objects stayed allocated, never released.
#[test]
fn a_retiring_owner_merges_its_whole_queue_even_if_a_release_panics() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    queue_a_panicking_release_before_another(&owner, &other);
    let before = released();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| owner.retire()));
    assert!(
        unwound.is_err(),
        "the release's panic reaches the retiring thread"
    );
    assert_eq!(
        released(),
        before + 2,
        "the entry behind the panicking release stayed queued"
    );
}

/// A retiring owner drains its queue before it drops its registry payload, which may be the
/// last handle to a runtime's value with a destructor of its own: a payload that panicked as it
/// went unwound out of the retirement before the drain, and stranded every entry queued.
#[test]
fn a_retiring_owner_merges_its_queue_even_if_its_payload_panics_as_it_goes() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("a payload's destructor panicked");
        }
    }
    let owner = LocalCounts::register_with(|_| Some(std::sync::Arc::new(PanicsOnDrop)));
    let other = LocalCounts::register();
    let queued = boxed_count(owner.owner());
    // SAFETY: the one reference, dropped by another owner; `release_boxed` frees it.
    unsafe { BiasedCount::decref_for(queued, other.owner(), release_boxed) };
    let before = released();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| owner.retire()));
    assert!(
        unwound.is_err(),
        "the payload's panic reaches the retiring thread"
    );
    assert_eq!(released(), before + 1, "the queued entry was stranded");
}

/// Parking merges what was queued before; a release that panicked there unwound out of the
/// merge and left the entries behind it queued to an owner that, parked, merges nothing: retired
/// parked (as a runtime retires its threads), it stranded them for good.
#[test]
fn a_merge_for_a_parked_owner_finishes_its_queue_even_if_a_release_panics() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    queue_a_panicking_release_before_another(&owner, &other);
    let before = released();
    // SAFETY: nothing is counted through `owner` until it unparks.
    let unwound =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { owner.park() }));
    assert!(
        unwound.is_err(),
        "the release's panic reaches the parking thread"
    );
    assert_eq!(
        released(),
        before + 2,
        "the entry behind the panicking release stayed queued"
    );
    owner.unpark();
    assert_eq!(owner.merge_pending(), 0);
}

/// A count handed to another thread, whose protocol touches it from any thread.
struct SendPtr(NonNull<BiasedCount>);
// SAFETY: the count is only touched through the biased protocol, from any thread.
unsafe impl Send for SendPtr {}

/// Who ran `release_recording_thread`, and who waits inside `release_waiting`.
static RELEASED_BY: std::sync::Mutex<Option<thread::ThreadId>> = std::sync::Mutex::new(None);
static SLOW_RELEASE_ENTERED: std::sync::Barrier = std::sync::Barrier::new(2);
static OTHER_DROP_RETURNED: std::sync::Barrier = std::sync::Barrier::new(2);

/// Frees like `release_boxed`, noting which thread ran it.
unsafe fn release_recording_thread(count: NonNull<BiasedCount>) {
    *RELEASED_BY.lock().unwrap() = Some(thread::current().id());
    // SAFETY: forwarded.
    unsafe { release_boxed(count) };
}

/// Frees like `release_boxed`, once another thread's drop has come and gone meanwhile.
unsafe fn release_waiting(count: NonNull<BiasedCount>) {
    SLOW_RELEASE_ENTERED.wait();
    OTHER_DROP_RETURNED.wait();
    // SAFETY: forwarded.
    unsafe { release_boxed(count) };
}

/// A thread that drops the last reference to a parked owner's object frees that object itself,
/// and nothing another thread dropped: a release (a value's destructor) runs on the thread
/// whose drop ended the value, as it does for every other owner. Before, the first thread to
/// find the owner parked claimed its queue and freed whatever other threads queued to it while
/// the claim lasted: their destructors ran on its thread, their panics unwound out of its drop,
/// a destructor that took a lock the claimer held deadlocked, and their objects stayed
/// allocated, their drops returned, until the claimer got to them.
#[test]
fn each_drop_for_a_parked_owner_frees_its_own_object_on_its_own_thread() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let (slow, quick) = (boxed_count(owner.owner()), boxed_count(owner.owner()));
    let quick = SendPtr(quick);
    // SAFETY: nothing is counted through `owner` until it unparks.
    unsafe { owner.park() };
    let dropper = thread::spawn(move || {
        let quick = quick;
        let counts = LocalCounts::register();
        SLOW_RELEASE_ENTERED.wait();
        // SAFETY: the one reference, counted in the owner's local half, dropped by a non-owner.
        unsafe { BiasedCount::decref_for(quick.0, counts.owner(), release_recording_thread) };
        let freed_by = *RELEASED_BY.lock().unwrap();
        OTHER_DROP_RETURNED.wait();
        freed_by
    });
    // SAFETY: as above; `release_waiting` frees it once the other thread's drop has returned.
    unsafe { BiasedCount::decref_for(slow, other.owner(), release_waiting) };
    let dropper_id = dropper.thread().id();
    assert_eq!(
        dropper.join().unwrap(),
        Some(dropper_id),
        "the other thread's object was not freed by its own drop"
    );
    owner.unpark();
    assert_eq!(owner.merge_pending(), 0);
}

static SETTLING_ENTERED: std::sync::Barrier = std::sync::Barrier::new(2);
static SETTLING_MAY_END: std::sync::Barrier = std::sync::Barrier::new(2);
static UNPARK_WAITS: std::sync::Barrier = std::sync::Barrier::new(2);
static LATE_RELEASED_BY: std::sync::Mutex<Option<thread::ThreadId>> = std::sync::Mutex::new(None);

/// Frees like `release_boxed`, noting which thread ran it in `LATE_RELEASED_BY`.
unsafe fn release_late(count: NonNull<BiasedCount>) {
    *LATE_RELEASED_BY.lock().unwrap() = Some(thread::current().id());
    // SAFETY: forwarded.
    unsafe { release_boxed(count) };
}

/// Frees like `release_boxed`, once the test lets it: a merge for a parked owner under way.
unsafe fn release_when_let(count: NonNull<BiasedCount>) {
    SETTLING_ENTERED.wait();
    SETTLING_MAY_END.wait();
    // SAFETY: forwarded.
    unsafe { release_boxed(count) };
}

/// An owner that unparks waits for the merges on its behalf that are under way, and only for
/// them: an object dropped for it meanwhile is queued to it, as to any owner that counts. It
/// used to stay parked while it waited, so every such drop joined the merges it waited for, and
/// a steady stream of them (workers dropping a main thread's objects) kept it waiting for as
/// long as it lasted.
#[test]
fn an_unparking_owner_waits_only_for_the_merges_under_way() {
    let owner = LocalCounts::register();
    let (slow, late) = (boxed_count(owner.owner()), boxed_count(owner.owner()));
    let (slow, late) = (SendPtr(slow), SendPtr(late));
    // SAFETY: nothing is counted through `owner` until it unparks.
    unsafe { owner.park() };
    let settling = thread::spawn(move || {
        let slow = slow;
        let counts = LocalCounts::register();
        // SAFETY: the one reference, dropped by a non-owner: merged here, for the parked owner.
        unsafe { BiasedCount::decref_for(slow.0, counts.owner(), release_when_let) };
    });
    SETTLING_ENTERED.wait();
    let late_dropper = thread::spawn(move || {
        let late = late;
        let counts = LocalCounts::register();
        UNPARK_WAITS.wait();
        // SAFETY: as above; released wherever the protocol says.
        unsafe { BiasedCount::decref_for(late.0, counts.owner(), release_late) };
        let freed_by = *LATE_RELEASED_BY.lock().unwrap();
        SETTLING_MAY_END.wait();
        freed_by
    });
    super::thread::WAITING_TO_UNPARK.set(Some(|| {
        UNPARK_WAITS.wait();
    }));
    owner.unpark();
    super::thread::WAITING_TO_UNPARK.set(None);
    settling.join().unwrap();
    let late_dropper_id = late_dropper.thread().id();
    let freed_by = late_dropper.join().unwrap();
    assert_ne!(
        freed_by,
        Some(late_dropper_id),
        "a drop made while the owner unparked was merged for it as if it were still parked"
    );
    assert_eq!(owner.merge_pending(), 1, "queued to the owner");
    assert_eq!(
        *LATE_RELEASED_BY.lock().unwrap(),
        Some(thread::current().id())
    );
}

#[test]
fn parking_merges_what_was_queued_before() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    let count = boxed_count(owner.owner());
    let before = released();
    // SAFETY: as above.
    unsafe { BiasedCount::decref_for(count, other.owner(), release_boxed) };
    assert_eq!(released(), before, "queued: the owner is running");
    // SAFETY: nothing is counted through `owner` until it unparks.
    unsafe { owner.park() };
    assert_eq!(released(), before + 1);
    owner.unpark();
}

#[test]
fn after_unparking_drops_by_other_owners_queue_again() {
    let (owner, other) = (LocalCounts::register(), LocalCounts::register());
    // SAFETY: nothing is counted through `owner` while parked.
    unsafe { owner.park() };
    owner.unpark();
    let count = boxed_count(owner.owner());
    let before = released();
    // SAFETY: as above.
    unsafe { BiasedCount::decref_for(count, other.owner(), release_boxed) };
    assert_eq!(released(), before, "merged for an owner that is running");
    assert_eq!(owner.merge_pending(), 1);
    assert_eq!(released(), before + 1);
}

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

/// A parked owner that retires leaves the objects dropped for it to the threads that drop them
/// (they merge for a parked owner, as ever): retiring merges nothing, frees nothing on its own
/// thread, and waits for no merge. (It used to unpark and drain the queue itself, and another
/// thread could queue to it between the unpark and its leaving the registry: the drain then
/// freed that object on the retiring thread. In ftrt that thread was exiting, outside any
/// attachment, while a collector walked the objects in a stopped world.)
#[test]
fn a_parked_owner_retires_without_merging_what_other_threads_queue_to_it() {
    use SendPtr as Pointer;
    /// What the first object's release does, on the thread merging the parked owner's queue.
    struct Nested {
        second: Pointer,
        retire: mpsc::Sender<()>,
        retired: mpsc::Receiver<()>,
    }
    static NESTED: std::sync::Mutex<Option<Nested>> = std::sync::Mutex::new(None);
    static RETIRED_MEANWHILE: std::sync::atomic::AtomicBool =
        std::sync::atomic::AtomicBool::new(false);
    /// Releases the first object, then drops the second for the parked owner (merged at once,
    /// nested in this release) and has the owner retire while this merge is under way.
    unsafe fn release_first(count: NonNull<BiasedCount>) {
        // SAFETY: forwarded.
        unsafe { release_boxed(count) };
        let nested = NESTED.lock().unwrap().take().expect("set before the merge");
        // SAFETY: the one reference, held in the owner's local half, is dropped here.
        unsafe { BiasedCount::decref(nested.second.0, release_boxed) };
        nested.retire.send(()).unwrap();
        let meanwhile = nested
            .retired
            .recv_timeout(std::time::Duration::from_secs(1))
            .is_ok();
        RETIRED_MEANWHILE.store(meanwhile, std::sync::atomic::Ordering::SeqCst);
    }

    let (to_merger, from_owner) = mpsc::channel::<(Pointer, Pointer)>();
    let (retire, retire_now) = mpsc::channel::<()>();
    let (retired_send, retired) = mpsc::channel::<()>();
    let owner_thread = thread::spawn(move || {
        let owner = LocalCounts::register();
        let (first, second) = (boxed_count(owner.owner()), boxed_count(owner.owner()));
        // SAFETY: nothing is counted through `owner` from here on.
        unsafe { owner.park() };
        to_merger.send((Pointer(first), Pointer(second))).unwrap();
        retire_now.recv().unwrap();
        owner.retire();
        let _ = retired_send.send(());
        released()
    });
    let (first, second) = from_owner.recv().unwrap();
    *NESTED.lock().unwrap() = Some(Nested {
        second,
        retire,
        retired,
    });
    let before = released();
    // SAFETY: the first object's one reference, dropped by a thread that does not own it: merged
    // here, for the parked owner.
    unsafe { BiasedCount::decref(first.0, release_first) };
    let released_by_the_owner = owner_thread.join().unwrap();
    assert!(
        RETIRED_MEANWHILE.load(std::sync::atomic::Ordering::SeqCst),
        "the parked owner's retirement waited for a merge of its queue"
    );
    assert_eq!(
        released(),
        before + 2,
        "both merged by the thread that queued them"
    );
    assert_eq!(
        released_by_the_owner, 0,
        "the retiring thread freed nothing"
    );
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

/// The callback of `for_each_registered` may register, retire and queue: it runs on a snapshot,
/// with no registry lock held. (It ran under a shard's lock: registering an owner there, or
/// dropping the last reference to an object another thread owns, waited for that lock.)
#[test]
fn a_visit_of_the_registered_owners_may_register_and_retire_owners() {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let mine = LocalCounts::register();
        let mut visited = 0;
        for_each_registered(|id, _| {
            visited += 1;
            if Some(id) == mine.id() {
                // Registers an owner and retires it, inside the visit.
                LocalCounts::register().retire();
            }
        });
        done.send(visited).unwrap();
    });
    let visited = finished
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the visit waited for the registry's lock it held");
    assert!(visited >= 1);
}
