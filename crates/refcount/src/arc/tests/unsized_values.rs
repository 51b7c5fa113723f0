//! Unsized values: `str`, slices and trait objects, which carry a prefix with their wide
//! pointer (see the `arc` module's documentation).

use super::*;
use crate::arc::inner::layout_for;
use crate::test_util::Tracked;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// What the trait objects below implement: enough to notice a wrong vtable or a value
/// used after it was dropped.
trait Shape: Send + Sync {
    fn id(&self) -> u64;
}

impl Shape for Tracked {
    fn id(&self) -> u64 {
        self.check()
    }
}

/// Over-aligned, so that the `ArcInner` does not start right after the prefix.
#[repr(align(64))]
struct Wide(Tracked);

impl Shape for Wide {
    fn id(&self) -> u64 {
        assert_eq!(ptr::from_ref(self).addr() % 64, 0, "misaligned");
        self.0.check()
    }
}

struct Nothing;

impl Shape for Nothing {
    fn id(&self) -> u64 {
        0
    }
}

fn shape(shape: impl Shape + 'static) -> BiasedArc<dyn Shape> {
    BiasedArc::from(Box::new(shape) as Box<dyn Shape>)
}

fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// `From<Box<T>>` of a sized value allocates with `layout_for`, and the memory is freed
/// as a `Box<ArcInner<T>>`: the two layouts must agree.
#[test]
fn a_sized_values_layout_is_its_arc_inners() {
    fn check<T>() {
        let (layout, offset) = layout_for::<T>(Layout::new::<T>());
        assert_eq!((layout, offset), (Layout::new::<ArcInner<T>>(), 0));
    }
    #[repr(align(64))]
    struct Wide64;
    check::<()>();
    check::<u8>();
    check::<u64>();
    check::<u128>();
    check::<[u8; 13]>();
    check::<Wide64>();
    check::<String>();
}

#[test]
fn handles_of_sized_values_stay_thin_and_unsized_ones_are_wide() {
    assert_eq!(mem::size_of::<BiasedArc<u64>>(), mem::size_of::<usize>());
    assert_eq!(
        mem::size_of::<Option<BiasedArc<u64>>>(),
        mem::size_of::<usize>()
    );
    assert_eq!(
        mem::size_of::<BiasedArc<str>>(),
        2 * mem::size_of::<usize>()
    );
    assert_eq!(
        mem::size_of::<Weak<dyn Shape>>(),
        2 * mem::size_of::<usize>()
    );
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<BiasedArc<str>>();
    assert_send_sync::<BiasedArc<[u8]>>();
    assert_send_sync::<BiasedArc<dyn Shape>>();
    assert_send_sync::<Weak<dyn Shape>>();
}

#[test]
fn strings_from_str_string_and_default() {
    let a = BiasedArc::<str>::from("hello");
    let b = BiasedArc::<str>::from(String::from("hello"));
    assert_eq!((&*a, a.len()), ("hello", 5));
    assert_eq!(a, b, "equality compares values");
    assert!(!BiasedArc::ptr_eq(&a, &b));
    assert_eq!(hash_of(&a), hash_of("hello"));
    assert_eq!(
        (format!("{a}"), format!("{a:?}")),
        ("hello".into(), "\"hello\"".into())
    );
    assert!(BiasedArc::<str>::from("abc") < BiasedArc::from("abd"));
    let c = a.clone();
    assert!(BiasedArc::ptr_eq(&a, &c));
    assert_eq!(BiasedArc::strong_count(&a), 2);
    drop((a, b, c));
    assert_eq!(&*BiasedArc::<str>::default(), "");
    assert_eq!(&*BiasedArc::<str>::from(String::new()), "");
    let unicode = BiasedArc::<str>::from("żółw 🐢");
    assert_eq!(unicode.chars().count(), 6);
}

#[test]
fn slices_from_vec_slice_iterator_and_box() {
    let drops = Drops::default();
    let moved = BiasedArc::<[Tracked]>::from(vec![drops.track(1), drops.track(2)]);
    assert_eq!(drops.count(), 0, "moved, not dropped");
    assert_eq!(moved.iter().map(Tracked::check).collect::<Vec<_>>(), [1, 2]);

    let originals = [drops.track(3), drops.track(4), drops.track(5)];
    let cloned = BiasedArc::<[Tracked]>::from(&originals[..]);
    assert_eq!(cloned.iter().map(Tracked::check).sum::<u64>(), 12);
    drop(originals);
    assert_eq!(drops.count(), 3, "the originals, not the clones");

    let collected: BiasedArc<[Tracked]> = (6..9).map(|id| drops.track(id)).collect();
    assert_eq!(collected.len(), 3);
    let boxed = BiasedArc::<[Tracked]>::from(vec![drops.track(9)].into_boxed_slice());
    assert_eq!(boxed[0].check(), 9);
    drop((moved, cloned, collected, boxed));
    assert_eq!(drops.count(), 3 + 2 + 3 + 3 + 1);

    let strings = BiasedArc::<[String]>::from(&[String::from("a"), String::from("b")][..]);
    assert_eq!(strings.concat(), "ab");
    assert!(BiasedArc::<[u8]>::default().is_empty());
    assert!(BiasedArc::<[String]>::from(Vec::new()).is_empty());
    let units: BiasedArc<[()]> = std::iter::repeat_n((), 5).collect();
    assert_eq!(units.len(), 5);
    let wide: BiasedArc<[u128]> = BiasedArc::from(&[1, u128::MAX][..]);
    assert_eq!(BiasedArc::as_ptr(&wide).cast::<u128>().align_offset(16), 0);
    assert_eq!(wide[1], u128::MAX);
}

#[test]
fn trait_objects_from_boxes_keep_their_vtable_and_alignment() {
    let drops = Drops::default();
    let plain = shape(drops.track(1));
    let wide = shape(Wide(drops.track(2)));
    let nothing = shape(Nothing);
    assert_eq!((plain.id(), wide.id(), nothing.id()), (1, 2, 0));
    assert_eq!(BiasedArc::as_ptr(&wide).cast::<u8>().addr() % 64, 0);
    let again = wide.clone();
    assert_eq!(again.id(), 2);
    drop((plain, wide, nothing));
    assert_eq!(drops.count(), 1, "`again` keeps the wide one");
    drop(again);
    assert_eq!(drops.count(), 2);

    let display: BiasedArc<dyn fmt::Display + Send + Sync> =
        BiasedArc::from(Box::new(42) as Box<_>);
    assert_eq!(display.to_string(), "42");
    // A sized value through `From<Box<T>>` gets the sized layout (Miri checks the layout
    // it is freed with).
    let sized = BiasedArc::<Tracked>::from(Box::new(drops.track(3)));
    assert_eq!(sized.check(), 3);
    assert_eq!(
        BiasedArc::try_unwrap(sized).ok().map(|t| t.check()),
        Some(3)
    );
    let boxed_str = BiasedArc::<str>::from(String::from("boxed").into_boxed_str());
    assert_eq!(&*boxed_str, "boxed");
}

#[test]
fn get_mut_and_raw_round_trips_work_on_unsized_values() {
    let mut numbers = BiasedArc::<[i32]>::from(vec![1, 2, 3]);
    BiasedArc::get_mut(&mut numbers).unwrap()[0] = 10;
    let other = numbers.clone();
    assert!(BiasedArc::get_mut(&mut numbers).is_none());
    assert_eq!(*other, [10, 2, 3]);

    let drops = Drops::default();
    let wide = shape(Wide(drops.track(4)));
    let raw = BiasedArc::into_raw(wide.clone());
    // SAFETY: from `into_raw`, passed back once.
    let back = unsafe { BiasedArc::from_raw(raw) };
    assert!(BiasedArc::ptr_eq(&back, &wide));
    assert_eq!((back.id(), BiasedArc::strong_count(&wide)), (4, 2));
    let raw = BiasedArc::into_raw(other);
    // SAFETY: as above.
    let other = unsafe { BiasedArc::<[i32]>::from_raw(raw) };
    assert_eq!(other.len(), 3);
    drop((back, wide));
    assert_eq!(drops.count(), 1);
}

/// The release a merge queue calls has only the count's address: it must find the wide
/// pointer in the prefix.
#[test]
fn a_last_drop_on_another_thread_is_released_by_the_owners_merge() {
    let drops = Drops::default();
    let values = (
        shape(Wide(drops.track(1))),
        BiasedArc::<[Tracked]>::from(vec![drops.track(2), drops.track(3)]),
        BiasedArc::<str>::from("queued"),
    );
    let remote = (values.0.clone(), values.1.clone(), values.2.clone());
    std::thread::spawn(move || {
        assert_eq!((remote.0.id(), &*remote.2), (1, "queued"));
        drop(remote);
    })
    .join()
    .unwrap();
    drop(values);
    assert_eq!(drops.count(), 0, "the queued drops still hold them");
    assert_eq!(crate::merge_pending(), 3);
    assert_eq!(drops.count(), 3);
}

/// Once the count is merged, the last drop on another thread releases the value there,
/// straight from the handle.
#[test]
fn a_last_drop_on_another_thread_of_a_merged_count_releases_there() {
    let drops = Drops::default();
    let value = shape(Wide(drops.track(5)));
    BiasedArc::give_up_ownership(&value);
    let remote = value.clone();
    drop(value);
    std::thread::spawn(move || drop(remote)).join().unwrap();
    assert_eq!(drops.count(), 1);
}

/// The owner exits holding nothing: the last drop elsewhere queues to an owner that is
/// gone, settles the entry itself and releases through the prefix on its own thread.
#[test]
fn values_outlive_their_owner_and_are_released_by_the_last_holder() {
    let drops = Drops::default();
    let (d1, d2) = (drops.track(6), drops.track(7));
    let (shape_value, slice, text) = std::thread::spawn(move || {
        (
            shape(d1),
            BiasedArc::<[Tracked]>::from(vec![d2]),
            BiasedArc::<str>::from("orphan"),
        )
    })
    .join()
    .unwrap();
    assert_eq!(
        (shape_value.id(), slice[0].check(), &*text),
        (6, 7, "orphan")
    );
    let kept = slice.clone();
    drop((shape_value, slice, text));
    assert_eq!(drops.count(), 1);
    drop(kept);
    assert_eq!(drops.count(), 2);
}

#[test]
fn weak_handles_to_unsized_values_upgrade_until_the_value_dies_and_then_free_it() {
    let drops = Drops::default();
    let strong = shape(Wide(drops.track(8)));
    let weak = BiasedArc::downgrade(&strong);
    assert_eq!(weak.upgrade().map(|s| s.id()), Some(8));
    assert_eq!((weak.strong_count(), weak.weak_count()), (1, 1));
    let text = BiasedArc::<str>::from("weak");
    let weak_text = BiasedArc::downgrade(&text);
    drop((strong, text));
    assert_eq!(drops.count(), 1);
    assert!(weak.upgrade().is_none() && weak_text.upgrade().is_none());
    // The last weak handles free the memory, from the layout the release left in the
    // prefix (Miri checks the layout and the leak).
    let elsewhere = weak.clone();
    std::thread::spawn(move || drop(elsewhere)).join().unwrap();
    drop((weak, weak_text));
}

/// The value is released on the owner's merge (through the queue) while weak handles
/// live on other threads; the last of them frees the memory there.
#[test]
fn a_queued_release_of_an_unsized_value_leaves_the_memory_to_a_weak_handle() {
    let drops = Drops::default();
    let strong = BiasedArc::<[Tracked]>::from(vec![drops.track(9), drops.track(10)]);
    let weak = BiasedArc::downgrade(&strong);
    let remote = strong.clone();
    drop(strong);
    let holder = std::thread::spawn(move || {
        drop(remote);
        weak
    })
    .join()
    .unwrap();
    assert_eq!(weak_len(&holder), Some(2), "not dead until merged");
    assert_eq!(crate::merge_pending(), 1);
    assert_eq!(drops.count(), 2);
    assert!(holder.upgrade().is_none());
    std::thread::spawn(move || drop(holder)).join().unwrap();
}

fn weak_len(weak: &Weak<[Tracked]>) -> Option<usize> {
    weak.upgrade().map(|slice| slice.len())
}

#[test]
fn a_panicking_clone_drops_what_was_cloned_and_frees_the_memory() {
    struct Fuse(Tracked, bool);
    impl Clone for Fuse {
        fn clone(&self) -> Self {
            assert!(!self.1, "clone failed");
            Fuse(self.0.clone(), false)
        }
    }
    let drops = Drops::default();
    let items = vec![
        Fuse(drops.track(1), false),
        Fuse(drops.track(2), false),
        Fuse(drops.track(3), true),
    ];
    let outcome = std::panic::catch_unwind(|| BiasedArc::<[Fuse]>::from(&items[..]));
    assert!(outcome.is_err());
    assert_eq!(drops.count(), 2, "the two clones made");
    drop(items);
    assert_eq!(drops.count(), 5);
}

/// Clones and drops on several threads at once, the last drop landing anywhere.
#[test]
fn unsized_values_shared_between_threads_are_dropped_once() {
    let rounds = if cfg!(miri) { 3 } else { 100 };
    for round in 0..rounds {
        let drops = Drops::default();
        let value = shape(Wide(drops.track(round)));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let mine = value.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        assert_eq!(mine.clone().id(), round);
                    }
                })
            })
            .collect();
        drop(value);
        for thread in threads {
            thread.join().unwrap();
        }
        crate::merge_pending();
        assert_eq!(drops.count(), 1);
    }
}
