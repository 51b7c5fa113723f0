//! Who may call a handle unique, and what `try_unwrap`, `get_mut` and giving up ownership do
//! with drops still queued.

use super::*;

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
