//! Explicit owners (`LocalCounts`): their tokens, their retirement, and the registry's visit.

use super::*;

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
