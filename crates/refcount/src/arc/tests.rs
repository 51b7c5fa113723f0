//! `BiasedArc` and `Weak` as `Arc`'s users know them, and where an owner thread changes what they
//! see: queued drops, uniqueness, weak upgrades across threads.

use super::*;
use crate::test_util::Drops;

mod unsized_values;

#[test]
fn is_send_and_sync_like_arc() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BiasedArc<Vec<u8>>>();
    assert_send_sync::<BiasedArc<std::sync::Mutex<u8>>>();
}

#[test]
fn clones_share_one_value_and_count_it() {
    let a = BiasedArc::new(String::from("shared"));
    let b = a.clone();
    assert!(BiasedArc::ptr_eq(&a, &b));
    assert_eq!(BiasedArc::strong_count(&a), 2);
    assert_eq!(*b, "shared");
    assert!(!BiasedArc::ptr_eq(
        &a,
        &BiasedArc::new(String::from("shared"))
    ));
    assert_eq!(
        a,
        BiasedArc::new(String::from("shared")),
        "equality compares values"
    );
}

#[test]
fn into_raw_and_from_raw_round_trip_without_touching_the_count() {
    let drops = Drops::default();
    let a = BiasedArc::new(drops.track(4));
    let b = a.clone();
    let raw = BiasedArc::into_raw(b);
    assert_eq!(BiasedArc::strong_count(&a), 2);
    // SAFETY: `raw` came from `into_raw` and is passed back once.
    let b = unsafe { BiasedArc::from_raw(raw) };
    assert_eq!(b.check(), 4);
    drop((a, b));
    assert_eq!(drops.count(), 1);
}

#[test]
fn get_mut_only_for_the_only_reference() {
    let mut a = BiasedArc::new(1);
    let b = a.clone();
    assert!(BiasedArc::get_mut(&mut a).is_none());
    drop(b);
    *BiasedArc::get_mut(&mut a).expect("unique") += 1;
    assert_eq!(*a, 2);
}

#[test]
fn try_unwrap_gives_the_value_without_dropping_it() {
    let drops = Drops::default();
    let value = BiasedArc::try_unwrap(BiasedArc::new(drops.track(8)))
        .ok()
        .expect("unique");
    assert_eq!(drops.count(), 0);
    drop(value);
    assert_eq!(drops.count(), 1);
}

#[test]
fn into_inner_gives_the_value_to_the_last_reference_only() {
    let drops = Drops::default();
    let a = BiasedArc::new(drops.track(1));
    let b = a.clone();
    assert!(BiasedArc::into_inner(a).is_none());
    assert_eq!(drops.count(), 0, "the value lives on in `b`");
    let value = BiasedArc::into_inner(b).expect("the last reference");
    assert_eq!(drops.count(), 0, "returned, not dropped");
    drop(value);
    assert_eq!(drops.count(), 1);
}

/// A drop that another thread queued to the owner before the owner's `into_inner` came
/// first: the owner's reference is the last one, so it gets the value. Without merging first,
/// the owner's decrement found the queued entry still holding a reference, answered `None`,
/// and its next merge dropped the value.
#[test]
fn into_inner_on_the_owner_counts_drops_queued_before_it() {
    let drops = Drops::default();
    let owned = BiasedArc::new(drops.track(2));
    let remote = owned.clone();
    std::thread::spawn(move || drop(remote)).join().unwrap();
    let value = BiasedArc::into_inner(owned).expect("the queued drop came first");
    assert_eq!((value.check(), drops.count()), (2, 0));
    drop(value);
    assert_eq!(crate::merge_pending(), 0, "the entry was merged already");
    assert_eq!(drops.count(), 1);
}

/// `into_inner` on the owner merges the drops queued to it first, and the merge runs other
/// values' destructors: one that panics unwinds out of the call, which then leaves the
/// handle to drop as any other. It had set the handle aside and taken a weak reference of
/// its own: both leaked, and the value was never dropped.
#[test]
fn into_inner_that_unwinds_from_another_values_destructor_drops_its_handle() {
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic!("another value's destructor panicked");
        }
    }
    let drops = Drops::default();
    let kept = BiasedArc::new(drops.track(3));
    let panicking = BiasedArc::new(PanicsOnDrop);
    // The last reference, dropped by another thread: queued to this one.
    let remote = panicking.clone();
    drop(panicking);
    std::thread::spawn(move || drop(remote)).join().unwrap();
    let unwound =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| BiasedArc::into_inner(kept)));
    assert!(
        unwound.is_err(),
        "the destructor's panic reaches the caller"
    );
    assert_eq!(drops.count(), 1, "the handle's value was dropped with it");
}

/// Once the owner has exited, the last holder on another thread gets the value back. A plain
/// decrement would queue, find the owner gone, settle the entry itself and drop the value.
#[test]
fn into_inner_after_the_owner_exited_gives_the_value_to_the_last_holder() {
    let drops = Drops::default();
    let tracked = drops.track(3);
    let (kept, other) = std::thread::spawn(move || {
        let owned = BiasedArc::new(tracked);
        (owned.clone(), owned)
    })
    .join()
    .unwrap();
    assert!(BiasedArc::into_inner(other).is_none());
    let value = BiasedArc::into_inner(kept).expect("the last reference");
    assert_eq!((value.check(), drops.count()), (3, 0));
}

/// While the owner lives and counts locally, another thread cannot know whether its handle
/// is the last: its reference goes to the owner's queue, and the owner's merge drops the value.
#[test]
fn into_inner_on_another_thread_while_the_owner_counts_leaves_the_value_to_the_owner() {
    let drops = Drops::default();
    let remote = BiasedArc::new(drops.track(4));
    let got = std::thread::spawn(move || BiasedArc::into_inner(remote).is_some())
        .join()
        .unwrap();
    assert!(!got);
    assert_eq!(drops.count(), 0, "waiting in this thread's queue");
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!(drops.count(), 1);
}

/// A drop queued to the owner before it gave up ownership keeps its entry, and the entry its
/// reference, in the merged count. The last holder's `into_inner` still gets the value: the
/// entry is the count's, not a holder's. (It answered `None`, and the entry's merge dropped
/// the value.)
#[test]
fn into_inner_on_a_merged_count_with_a_queued_drop_gives_the_value_to_the_last_holder() {
    let drops = Drops::default();
    let owned = BiasedArc::new(drops.track(6));
    let remote = owned.clone();
    std::thread::spawn(move || drop(remote)).join().unwrap();
    BiasedArc::give_up_ownership(&owned);
    assert_eq!(BiasedArc::strong_count(&owned), 1);
    let value = BiasedArc::into_inner(owned).expect("the last reference");
    assert_eq!(
        (value.check(), drops.count()),
        (6, 0),
        "returned, not dropped"
    );
    drop(value);
    assert_eq!(crate::merge_pending(), 1, "the entry is still merged, once");
    assert_eq!(drops.count(), 1);
}

/// The same on another thread: once the count is merged, its answer is exact too.
#[test]
fn into_inner_on_another_thread_on_a_merged_count_with_a_queued_drop_gives_the_value() {
    let drops = Drops::default();
    let owned = BiasedArc::new(drops.track(7));
    let remote = owned.clone();
    std::thread::spawn(move || drop(remote)).join().unwrap();
    BiasedArc::give_up_ownership(&owned);
    let got = std::thread::spawn(move || BiasedArc::into_inner(owned).map(|v| v.check()))
        .join()
        .unwrap();
    assert_eq!(got, Some(7), "the last reference");
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!(drops.count(), 1);
}

/// The race `into_inner` exists for: every holder calls it at once, and exactly one gets the
/// value (here on a merged count, where every thread's answer is exact).
#[test]
fn racing_into_inner_calls_give_the_value_exactly_once() {
    for _ in 0..200 {
        let drops = Drops::default();
        let value = BiasedArc::new(drops.track(5));
        BiasedArc::give_up_ownership(&value);
        let handles: Vec<_> = (0..3).map(|_| value.clone()).collect();
        let threads: Vec<_> = handles
            .into_iter()
            .map(|h| std::thread::spawn(move || BiasedArc::into_inner(h).map(|v| v.check())))
            .collect();
        let mut got = usize::from(BiasedArc::into_inner(value).is_some());
        got += threads
            .into_iter()
            .map(|t| usize::from(t.join().unwrap().is_some()))
            .sum::<usize>();
        assert_eq!(got, 1, "exactly one holder gets the value");
        assert_eq!(drops.count(), 1);
    }
}

#[test]
fn unwrap_or_clone_moves_a_unique_value_and_clones_a_shared_one() {
    let unique = BiasedArc::new(String::from("moved"));
    let moved = BiasedArc::unwrap_or_clone(unique);
    assert_eq!(moved, "moved");
    let shared = BiasedArc::new(vec![1, 2]);
    let other = shared.clone();
    assert_eq!(BiasedArc::unwrap_or_clone(shared), vec![1, 2]);
    assert_eq!(
        BiasedArc::strong_count(&other),
        1,
        "the clone's handle was dropped"
    );
}

#[test]
fn make_mut_writes_in_place_when_unique_and_clones_when_shared() {
    let mut data = BiasedArc::new(String::from("a"));
    let before = BiasedArc::as_ptr(&data);
    BiasedArc::make_mut(&mut data).push('b');
    assert_eq!(
        BiasedArc::as_ptr(&data),
        before,
        "unique: no new allocation"
    );
    let other = data.clone();
    BiasedArc::make_mut(&mut data).push('c');
    assert_eq!((data.as_str(), other.as_str()), ("abc", "ab"));
    assert!(!BiasedArc::ptr_eq(&data, &other));
    assert_eq!(BiasedArc::strong_count(&data), 1);
    assert_eq!(BiasedArc::strong_count(&other), 1);
}

/// A handle moved to another thread is "maybe shared" there while its owner lives: the first
/// `make_mut` copies it into an allocation that thread owns, and later calls are exact.
#[test]
fn make_mut_on_another_thread_copies_once_into_an_allocation_it_owns() {
    let moved = BiasedArc::new(vec![1]);
    let original = BiasedArc::as_ptr(&moved) as usize;
    std::thread::spawn(move || {
        let mut moved = moved;
        BiasedArc::make_mut(&mut moved).push(2);
        let copy = BiasedArc::as_ptr(&moved) as usize;
        assert_ne!(copy, original);
        BiasedArc::make_mut(&mut moved).push(3);
        assert_eq!(BiasedArc::as_ptr(&moved) as usize, copy);
        assert_eq!(*moved, [1, 2, 3]);
    })
    .join()
    .unwrap();
    crate::merge_pending();
}

#[test]
fn a_weak_handle_upgrades_while_the_value_lives_and_not_after() {
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(10));
    let weak = BiasedArc::downgrade(&strong);
    assert_eq!(
        (
            BiasedArc::strong_count(&strong),
            BiasedArc::weak_count(&strong)
        ),
        (1, 1)
    );
    assert_eq!((weak.strong_count(), weak.weak_count()), (1, 1));
    let again = weak.upgrade().expect("alive");
    assert!(BiasedArc::ptr_eq(&again, &strong));
    assert_eq!(weak.strong_count(), 2);
    drop((strong, again));
    assert_eq!(
        drops.count(),
        1,
        "the last strong handle drops the value, weak or not"
    );
    assert!(weak.upgrade().is_none());
    assert_eq!((weak.strong_count(), weak.weak_count()), (0, 0));
    // Dropping the weak handle frees the memory (Miri checks the leak).
    drop(weak);
}

#[test]
fn weak_new_never_upgrades() {
    let weak: Weak<u8> = Weak::new();
    assert!(weak.upgrade().is_none());
    assert_eq!((weak.strong_count(), weak.weak_count()), (0, 0));
    assert!(Weak::ptr_eq(&weak, &weak.clone()));
    assert!(Weak::<u8>::default().upgrade().is_none());
}

#[test]
fn strong_counts_change_through_raw_pointers_as_through_handles() {
    let drops = Drops::default();
    let raw = BiasedArc::into_raw(BiasedArc::new(drops.track(1)));
    // SAFETY: `raw` carries a reference, given back once below.
    unsafe { BiasedArc::increment_strong_count(raw) };
    // SAFETY: as above; the handle is dropped at once.
    let seen = unsafe { BiasedArc::from_raw(raw) };
    assert_eq!(BiasedArc::strong_count(&seen), 2);
    std::mem::forget(seen);
    // Another thread gives one reference back: the value lives on.
    let address = raw.expose_provenance();
    std::thread::spawn(move || {
        let raw = ptr::with_exposed_provenance::<crate::test_util::Tracked>(address);
        // SAFETY: one of the two references, given back once.
        unsafe { BiasedArc::decrement_strong_count(raw) };
    })
    .join()
    .unwrap();
    assert_eq!(drops.count(), 0);
    // SAFETY: the last reference, given back once.
    unsafe { BiasedArc::decrement_strong_count(raw) };
    crate::biased::merge_pending();
    assert_eq!(
        drops.count(),
        1,
        "dropped exactly once, after the last reference"
    );
}

#[test]
fn weak_handles_round_trip_through_raw_pointers_alive_or_dead() {
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(7));
    let raw = Weak::into_raw(BiasedArc::downgrade(&strong));
    assert_eq!(raw, BiasedArc::as_ptr(&strong));
    // SAFETY: from `into_raw`, taken back once.
    let weak = unsafe { Weak::from_raw(raw) };
    assert_eq!(weak.upgrade().map(|v| v.check()), Some(7));
    assert_eq!(BiasedArc::weak_count(&strong), 1);
    let raw = Weak::into_raw(weak);
    drop(strong);
    assert_eq!(drops.count(), 1);
    // The value is gone; the memory is not, and the handle still frees it.
    // SAFETY: from `into_raw`, taken back once.
    let weak = unsafe { Weak::from_raw(raw) };
    assert!(weak.upgrade().is_none());
    assert_eq!(weak.strong_count(), 0);
    drop(weak);
    // A handle to nothing stays one.
    let raw = Weak::into_raw(Weak::<u64>::new());
    // SAFETY: from `into_raw`, taken back once.
    let nothing = unsafe { Weak::from_raw(raw) };
    assert!(nothing.upgrade().is_none());
    assert!(Weak::ptr_eq(&nothing, &Weak::new()));
}

#[test]
fn unsized_weak_handles_round_trip_through_raw_pointers() {
    let name: BiasedArc<str> = BiasedArc::from("weak");
    let raw = Weak::into_raw(BiasedArc::downgrade(&name));
    // SAFETY: from `into_raw`, taken back once.
    let weak = unsafe { Weak::<str>::from_raw(raw) };
    assert_eq!(weak.upgrade().as_deref(), Some("weak"));
    let raw = Weak::into_raw(weak);
    drop(name);
    // SAFETY: from `into_raw`, taken back once; the value is dropped, its length is in `raw`.
    let weak = unsafe { Weak::<str>::from_raw(raw) };
    assert!(weak.upgrade().is_none());
}

#[test]
fn weak_handles_are_counted_and_outlive_the_value() {
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(11));
    let (a, b) = (BiasedArc::downgrade(&strong), BiasedArc::downgrade(&strong));
    let c = a.clone();
    assert_eq!(BiasedArc::weak_count(&strong), 3);
    drop(b);
    assert_eq!(c.weak_count(), 2);
    drop(strong);
    assert_eq!(drops.count(), 1);
    assert!(a.upgrade().is_none() && c.upgrade().is_none());
}

/// The race `Weak` must not lose: another thread upgrades while the owner drops its last
/// strong handle. Either the upgrade lands first and its handle keeps the value alive, or it
/// fails; the value is never used after it was dropped, and is dropped once.
#[test]
fn an_upgrade_on_another_thread_races_the_owners_last_drop() {
    for round in 0..500 {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(round));
        let weak = BiasedArc::downgrade(&strong);
        let upgrader = std::thread::spawn(move || {
            weak.upgrade().inspect(|value| {
                assert_eq!(value.check(), round, "upgraded to a dropped value");
            })
        });
        drop(strong);
        let upgraded = upgrader.join().unwrap();
        assert_eq!(drops.count(), usize::from(upgraded.is_none()));
        drop(upgraded);
        crate::merge_pending();
        assert_eq!(drops.count(), 1);
    }
}

#[test]
fn an_upgrade_on_the_owner_thread_counts_locally() {
    let strong = BiasedArc::new(1);
    let weak = BiasedArc::downgrade(&strong);
    let again = weak.upgrade().unwrap();
    assert_eq!(strong.count().owner_id(), again.count().owner_id());
    assert_eq!(BiasedArc::strong_count(&strong), 2);
    drop((strong, again));
    assert!(weak.upgrade().is_none());
}

/// The owner thread exits holding nothing; the value lives on in a handle elsewhere, and weak
/// handles upgrade there until it is dropped.
#[test]
fn weak_handles_work_after_the_owner_exited() {
    let drops = Drops::default();
    let tracked = drops.track(12);
    let (strong, weak) = std::thread::spawn(move || {
        let strong = BiasedArc::new(tracked);
        let weak = BiasedArc::downgrade(&strong);
        (strong, weak)
    })
    .join()
    .unwrap();
    let again = weak.upgrade().expect("alive in `strong`");
    drop(strong);
    assert_eq!(again.check(), 12);
    drop(again);
    assert_eq!(drops.count(), 1);
    assert!(weak.upgrade().is_none());
}

/// The owner exits holding the last strong handle: the value is dropped on that thread, and
/// weak handles elsewhere stop upgrading.
#[test]
fn the_owners_exit_with_the_last_strong_handle_ends_weak_upgrades() {
    let drops = Drops::default();
    let tracked = drops.track(13);
    let weak = std::thread::spawn(move || BiasedArc::downgrade(&BiasedArc::new(tracked)))
        .join()
        .unwrap();
    assert_eq!(drops.count(), 1);
    assert!(weak.upgrade().is_none());
}

/// Every constructor that counts is a safe point: it first drops the values whose last
/// handles other threads dropped and queued back to this thread, whatever their type.
#[test]
fn every_counting_constructor_drops_what_other_threads_queued_back_first() {
    let constructors: [(&str, fn()); 11] = [
        ("new", || drop(BiasedArc::new(1_u8))),
        ("new_cyclic", || drop(BiasedArc::new_cyclic(|_| 1_u8))),
        ("From<T>", || drop(BiasedArc::from(1_u8))),
        ("Default", || drop(BiasedArc::<u8>::default())),
        ("From<Box<T>>", || {
            drop(BiasedArc::<u8>::from(Box::new(1_u8)))
        }),
        ("From<Vec<T>>", || drop(BiasedArc::<[u8]>::from(vec![1_u8]))),
        ("From<&[T]>", || drop(BiasedArc::<[u8]>::from(&[1_u8][..]))),
        ("FromIterator", || {
            drop((0..2_u8).collect::<BiasedArc<[u8]>>())
        }),
        ("From<&str>", || drop(BiasedArc::<str>::from("a"))),
        ("From<String>", || {
            drop(BiasedArc::<str>::from(String::from("a")))
        }),
        ("Default for [T]", || drop(BiasedArc::<[u8]>::default())),
    ];
    for (name, construct) in constructors {
        let drops = Drops::default();
        let strong = BiasedArc::new(drops.track(15));
        let remote = strong.clone();
        drop(strong);
        // The last handle, dropped elsewhere: queued back to this thread, the owner.
        std::thread::spawn(move || drop(remote)).join().unwrap();
        assert_eq!(drops.count(), 0, "{name}: waits for the owner's safe point");
        construct();
        assert_eq!(drops.count(), 1, "{name} did not merge the queue");
    }
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(16));
    let remote = strong.clone();
    drop(strong);
    std::thread::spawn(move || drop(remote)).join().unwrap();
    // An immortal value is never freed: kept reachable from a static, so that Miri's leak
    // check, which runs on this crate's tests, does not count it as lost.
    static IMMORTAL: std::sync::OnceLock<BiasedArc<u8>> = std::sync::OnceLock::new();
    IMMORTAL.get_or_init(|| BiasedArc::new_immortal(1_u8));
    assert_eq!(
        drops.count(),
        0,
        "new_immortal counts nothing and merges nothing"
    );
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!(drops.count(), 1);
}

/// A last strong handle dropped on another thread waits in the owner's queue, and the value
/// lives until the owner merges it: a weak handle upgrades meanwhile (where `Arc`'s would
/// not), and the value then lives on in the upgraded handle.
#[test]
fn a_weak_handle_upgrades_while_the_last_drop_waits_in_the_owners_queue() {
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(14));
    let weak = BiasedArc::downgrade(&strong);
    std::thread::spawn(move || drop(strong)).join().unwrap();
    let revived = weak.upgrade().expect("not dead until merged");
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!((drops.count(), revived.check()), (0, 14));
    drop(revived);
    assert_eq!(drops.count(), 1);
    assert!(weak.upgrade().is_none());
}

#[test]
fn get_mut_refuses_while_a_weak_handle_exists() {
    let mut strong = BiasedArc::new(1);
    let weak = BiasedArc::downgrade(&strong);
    assert!(
        BiasedArc::get_mut(&mut strong).is_none(),
        "the weak handle could upgrade"
    );
    drop(weak);
    *BiasedArc::get_mut(&mut strong).unwrap() += 1;
    assert_eq!(*strong, 2);
}

#[test]
fn try_unwrap_and_into_inner_end_weak_upgrades() {
    let strong = BiasedArc::new(String::from("a"));
    let weak = BiasedArc::downgrade(&strong);
    assert_eq!(BiasedArc::try_unwrap(strong).ok().as_deref(), Some("a"));
    assert!(weak.upgrade().is_none());

    let strong = BiasedArc::new(String::from("b"));
    let weak = BiasedArc::downgrade(&strong);
    assert_eq!(BiasedArc::into_inner(strong).as_deref(), Some("b"));
    assert!(weak.upgrade().is_none());
}

/// `try_unwrap` with a drop still queued leaves a husk for the queue's merge; weak handles
/// must not upgrade to it, and the memory outlives them both.
#[test]
fn try_unwrap_of_a_queued_value_with_weak_handles_leaves_a_dead_husk() {
    let drops = Drops::default();
    let strong = BiasedArc::new(drops.track(15));
    let weak = BiasedArc::downgrade(&strong);
    let remote = strong.clone();
    std::thread::spawn(move || drop(remote)).join().unwrap();
    let value = BiasedArc::try_unwrap(strong).ok().expect("unique");
    assert!(weak.upgrade().is_none());
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!((drops.count(), value.check()), (0, 15));
    drop(weak);
}

/// A value that borrows from its creator's frame is dropped by its last handle, even when a
/// handle was dropped through a token that does not own the count: queued to the owner, as
/// a drop on another thread would be, the reference would keep the value until the owner's
/// next safe point, after the borrow it holds has ended.
#[test]
fn a_value_that_borrows_is_dropped_by_its_last_handle_whatever_token_dropped_the_others() {
    use std::cell::Cell;
    struct SetsOnDrop<'a>(&'a Cell<bool>);
    impl Drop for SetsOnDrop<'_> {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let other = crate::biased::LocalCounts::register();
    for token in [crate::biased::Owner::detached(), other.owner()] {
        let dropped = Cell::new(false);
        let value = BiasedArc::new(SetsOnDrop(&dropped));
        BiasedArc::drop_for(value.clone(), token);
        drop(value);
        assert!(dropped.get(), "the value outlived its last handle");
    }
}

/// A husk's value is moved out while the pending entry's merge may run on any thread (the
/// owner merging its queue, a thread merging for a parked owner, a thread settling an
/// exited owner's entry): that merge must not free the memory under the move. Here it runs
/// in exactly that window, from a hook between the count's end and the move.
#[test]
fn try_unwrap_keeps_the_memory_while_the_husks_entry_merges() {
    let value = BiasedArc::new(String::from("kept"));
    // Dropped by a thread that does not own the count, at a shared count of zero: queued
    // back to this thread's queue.
    let clone = value.clone();
    std::thread::spawn(move || drop(clone))
        .join()
        .expect("the other thread drops its clone");
    // Merged, so the answer below is exact; the entry is still pending.
    BiasedArc::give_up_ownership(&value);
    hooks::BEFORE_HUSK_MOVE.set(Some(|| {
        let freed = hooks::FREED.get();
        assert_eq!(crate::merge_pending(), 1, "the pending entry merged");
        assert_eq!(
            hooks::FREED.get(),
            freed,
            "the entry's merge freed the memory the value is being moved out of"
        );
    }));
    let freed = hooks::FREED.get();
    assert_eq!(BiasedArc::try_unwrap(value).ok().as_deref(), Some("kept"));
    assert!(
        hooks::BEFORE_HUSK_MOVE.take().is_none(),
        "the value was not a husk with a pending entry"
    );
    assert_eq!(hooks::FREED.get(), freed + 1, "freed once, after the move");
}

#[test]
fn make_mut_disassociates_weak_handles() {
    let mut strong = BiasedArc::new(5);
    let weak = BiasedArc::downgrade(&strong);
    *BiasedArc::make_mut(&mut strong) += 1;
    assert_eq!(*strong, 6);
    assert!(weak.upgrade().is_none());
    assert_eq!(BiasedArc::weak_count(&strong), 0);
}

#[test]
fn new_cyclic_hands_out_a_weak_handle_that_upgrades_once_built() {
    struct Node {
        me: Weak<Node>,
        _tracked: crate::test_util::Tracked,
    }
    let drops = Drops::default();
    let node = BiasedArc::new_cyclic(|me| {
        assert!(me.upgrade().is_none(), "not built yet");
        let elsewhere = me.clone();
        let upgraded = std::thread::spawn(move || elsewhere.upgrade().is_some())
            .join()
            .unwrap();
        assert!(!upgraded, "not built yet, on any thread");
        Node {
            me: me.clone(),
            _tracked: drops.track(16),
        }
    });
    let me = node.me.upgrade().expect("built");
    assert!(BiasedArc::ptr_eq(&me, &node));
    assert_eq!(
        (BiasedArc::strong_count(&node), BiasedArc::weak_count(&node)),
        (2, 1)
    );
    drop((me, node));
    assert_eq!(
        drops.count(),
        1,
        "a self-reference through `Weak` does not leak"
    );
}

#[test]
fn new_cyclic_frees_the_memory_when_building_panics() {
    let outcome = std::panic::catch_unwind(|| {
        BiasedArc::<u8>::new_cyclic(|_| panic!("building failed"));
    });
    assert!(outcome.is_err());
}

#[test]
fn immortal_values_are_never_dropped() {
    // Immortal values live as long as the program, so keep this one where leak checkers
    // (Miri's) expect such values: reachable from a static.
    static IMMORTAL: std::sync::OnceLock<BiasedArc<crate::test_util::Tracked>> =
        std::sync::OnceLock::new();
    let drops = Drops::default();
    let a = IMMORTAL.get_or_init(|| BiasedArc::new_immortal(drops.track(0)));
    let b = a.clone();
    assert_eq!(BiasedArc::strong_count(a), usize::MAX);
    assert_eq!(BiasedArc::ref_count(&b), RefCountValue::Immortal);
    drop(b.clone());
    drop(b);
    assert_eq!(drops.count(), 0);
    assert_eq!(a.check(), 0);
}

#[test]
fn zero_sized_and_over_aligned_values_work() {
    #[repr(align(64))]
    struct Wide(u8);
    let unit = BiasedArc::new(());
    assert_eq!(BiasedArc::try_unwrap(unit.clone()).ok(), None);
    let wide = BiasedArc::new(Wide(3));
    assert_eq!(BiasedArc::as_ptr(&wide) as usize % 64, 0);
    assert_eq!(wide.0, 3);
}
