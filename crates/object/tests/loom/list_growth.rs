//! A list's lock-free read racing the growth of its array (`list.rs`): the writer copies the
//! item pointers into a larger array, swaps it in, retires the old one, stores the new item
//! and publishes the length; then it pops that item, pushes another into the slot it emptied,
//! and replaces the first, retiring what it takes out. A reader, pinned, loads the length, the
//! array, and each slot below the length, with the orderings the crate uses.
//! It must never read a freed array or item, nor an array's size or an item's value that was
//! not published to it; below the length it loaded, it finds a slot a push filled or a pop
//! emptied (where the crate falls back to the lock), never one a push has yet to fill, and
//! never an index past the array it loaded.
//!
//! The epoch is stated as in `reads_racing_a_replacement_never_touch_a_freed_item`: a pin flag
//! set and read with read-modify-writes, and a grace period that defers what a writer retires
//! while the reader is pinned. The pin orders the reader's loads after it, so they are the
//! crate's plain acquire loads (that model's read-modify-write loads would read only the
//! newest stores, and miss the stale ones).

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

use super::panic_message;

/// An item: its value is written by the thread that makes it, so a reader that reads it
/// without the item's publication ordered before is a race loom reports.
struct Item {
    value: UnsafeCell<u32>,
    count: AtomicUsize,
    freed: AtomicBool,
}

impl Item {
    fn new(value: u32) -> *mut Item {
        Box::into_raw(Box::new(Item {
            value: UnsafeCell::new(value),
            count: AtomicUsize::new(1),
            freed: AtomicBool::new(false),
        }))
    }
}

/// The list's array: its size is a plain field, as a boxed slice's length is.
struct Array {
    capacity: UnsafeCell<usize>,
    slots: [AtomicPtr<Item>; 2],
    freed: AtomicBool,
}

impl Array {
    fn new(capacity: usize, first: *mut Item) -> *mut Array {
        Box::into_raw(Box::new(Array {
            capacity: UnsafeCell::new(capacity),
            slots: [AtomicPtr::new(first), AtomicPtr::new(never_filled())],
            freed: AtomicBool::new(false),
        }))
    }
}

/// # Safety
/// `pointer` came from `Item::new` or `Array::new` and is not deallocated during the model.
unsafe fn kept<'a, T>(pointer: *mut T) -> &'a T {
    // SAFETY: per the contract (the model keeps every allocation until its end).
    unsafe { &*pointer }
}

fn decref(item: &Item) {
    if item.count.fetch_sub(1, Ordering::AcqRel) == 1 {
        assert!(!item.freed.swap(true, Ordering::SeqCst), "freed twice");
    }
}

struct List {
    array: AtomicPtr<Array>,
    len: AtomicUsize,
    reader_pinned: AtomicBool,
}

/// The orderings the writer publishes with; `true` everywhere in the crate's own.
#[derive(Clone, Copy)]
struct Writer {
    /// The array swapped in with a release (else relaxed).
    release_the_array: bool,
    /// The new item stored with a release (else relaxed).
    release_the_item: bool,
    /// What the writer retires waits for the pinned reader (else it is freed at once).
    grace_period: bool,
}

const AS_THE_CRATE: Writer = Writer {
    release_the_array: true,
    release_the_item: true,
    grace_period: true,
};

/// Frees the array or drops the item's reference, now or (the reader pinned) after the model's
/// threads joined: the epoch's retirement.
enum Retired {
    Array(*mut Array),
    Item(*mut Item),
}

impl Retired {
    fn free(self) {
        match self {
            Retired::Array(array) => {
                // SAFETY: allocations are kept until the model ends.
                let array = unsafe { kept(array) };
                assert!(
                    !array.freed.swap(true, Ordering::SeqCst),
                    "an array freed twice"
                );
            }
            // SAFETY: as above.
            Retired::Item(item) => decref(unsafe { kept(item) }),
        }
    }
}

std::thread_local! {
    /// What the model's schedules reached (see `ReachedKey`).
    static REACHED: std::cell::Cell<Reached> = const { std::cell::Cell::new(Reached::NONE) };
}

/// The paths of [`reader_beside_a_growth`], each counted in the schedules that took it.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Reached {
    /// The reader found the item the growth stored at index 1.
    read_the_grown_arrays_new_item: usize,
    /// The reader found the item pushed after the pop.
    read_the_item_pushed_after_the_pop: usize,
    /// The reader found index 1 emptied by the pop, below the length it loaded.
    fell_back_on_the_emptied_slot: usize,
    /// The growth retired the first array while the reader was pinned.
    kept_the_first_array_for_the_reader: usize,
    /// The replacement retired the first item while the reader was pinned.
    kept_the_first_item_for_the_reader: usize,
}

impl Reached {
    const NONE: Reached = Reached {
        read_the_grown_arrays_new_item: 0,
        read_the_item_pushed_after_the_pop: 0,
        fell_back_on_the_emptied_slot: 0,
        kept_the_first_array_for_the_reader: 0,
        kept_the_first_item_for_the_reader: 0,
    };

    fn note(change: impl FnOnce(&mut Reached)) {
        super::note_reached(&REACHED, change);
    }
}

/// What the reader found at an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    /// Past the length it loaded.
    OutOfRange,
    /// Past the array it loaded: the crate would read again under the lock (arrays never
    /// shrink, so the reader asserts that this does not happen).
    PastTheArray,
    /// An empty slot: the crate would read again under the lock.
    FellBack,
    Value(u32),
}

/// What a slot of a new array holds until a push fills it. The crate's are null, like an
/// emptied slot; here a reader that finds one below the length it loaded saw the length
/// published before the item.
fn never_filled() -> *mut Item {
    std::ptr::NonNull::dangling().as_ptr()
}

fn read(list: &List, index: usize) -> (Read, Option<*mut Item>) {
    // Acquire, as every load here: pairs with the writer's releases of the length, the array
    // and the item. (The pin, a read-modify-write on both sides, orders the loads after it.)
    let len = list.len.load(Ordering::Acquire);
    if index >= len {
        return (Read::OutOfRange, None);
    }
    // SAFETY: allocations are kept until the model ends.
    let array = unsafe { kept(list.array.load(Ordering::Acquire)) };
    // The plain data first, so that loom reports a publication without a release as a race on
    // it. SAFETY: the reader only reads it; the writer wrote it before publishing the array.
    let capacity = array.capacity.with(|capacity| unsafe { *capacity });
    assert!(!array.freed.load(Ordering::SeqCst), "read a freed array");
    if index >= capacity {
        return (Read::PastTheArray, None);
    }
    let item = array.slots[index].load(Ordering::Acquire);
    assert!(
        item != never_filled(),
        "a slot below the length was never filled"
    );
    if item.is_null() {
        return (Read::FellBack, None);
    }
    // SAFETY: as above.
    let counted = unsafe { kept(item) };
    // SAFETY: as for the capacity.
    let value = counted.value.with(|value| unsafe { *value });
    assert!(!counted.freed.load(Ordering::SeqCst), "read a freed item");
    counted.count.fetch_add(1, Ordering::Relaxed);
    (Read::Value(value), Some(item))
}

/// Stores `new` in `slot`, returning what it held: `reclaim::replace`, a load and a store, as
/// the writer is alone in the section.
fn replace(slot: &AtomicPtr<Item>, new: *mut Item, writer: Writer) -> *mut Item {
    let old = slot.load(Ordering::Relaxed);
    slot.store(new, writer.item_ordering());
    old
}

impl Writer {
    fn item_ordering(self) -> Ordering {
        if self.release_the_item {
            Ordering::Release
        } else {
            Ordering::Relaxed
        }
    }
}

/// A one-item list (`[1]`) grows to take a second item (`[1, 2]`), pops it (`[1]`), takes a
/// third (`[1, 4]`), and has its first replaced (`[3, 4]`), while a pinned reader reads both
/// indices.
fn reader_beside_a_growth(writer: Writer) {
    let one = Item::new(1);
    let first_array = Array::new(1, one);
    let list = Arc::new(List {
        array: AtomicPtr::new(first_array),
        len: AtomicUsize::new(1),
        reader_pinned: AtomicBool::new(false),
    });
    let reader = {
        let list = list.clone();
        thread::spawn(move || {
            list.reader_pinned.swap(true, Ordering::AcqRel);
            let reads = [read(&list, 0), read(&list, 1)];
            list.reader_pinned.store(false, Ordering::SeqCst);
            let [(at_0, _), (at_1, _)] = reads;
            match at_1 {
                Read::Value(2) => Reached::note(|r| r.read_the_grown_arrays_new_item += 1),
                Read::Value(4) => Reached::note(|r| r.read_the_item_pushed_after_the_pop += 1),
                Read::FellBack => Reached::note(|r| r.fell_back_on_the_emptied_slot += 1),
                _ => {}
            }
            assert!(matches!(at_0, Read::Value(1 | 3)), "index 0 read {at_0:?}");
            // (`PastTheArray`, which the crate checks for, cannot happen: the length's acquire
            // orders the growth before the array's load.)
            assert!(
                matches!(at_1, Read::Value(2 | 4) | Read::FellBack | Read::OutOfRange),
                "index 1 read {at_1:?}"
            );
            for (_, counted) in reads {
                if let Some(item) = counted {
                    // SAFETY: allocations are kept until the model ends.
                    decref(unsafe { kept(item) });
                }
            }
        })
    };
    // The writer, in the list's section (one writer here). It makes each item it stores just
    // before, so that only that store publishes it.
    let mut later = Vec::new();
    let mut retire = |retired: Retired| {
        if writer.grace_period && list.reader_pinned.fetch_or(false, Ordering::AcqRel) {
            Reached::note(|reached| match retired {
                Retired::Array(_) => reached.kept_the_first_array_for_the_reader += 1,
                Retired::Item(item) if item == one => {
                    reached.kept_the_first_item_for_the_reader += 1;
                }
                Retired::Item(_) => {}
            });
            later.push(retired);
        } else {
            retired.free();
        }
    };
    // `push`, growing: the new array's size and copied pointers are written before the swap
    // publishes it; then the item, then the length.
    let grown = Array::new(2, one);
    let publish = if writer.release_the_array {
        Ordering::AcqRel
    } else {
        Ordering::Relaxed
    };
    let old = list.array.swap(grown, publish);
    retire(Retired::Array(old));
    // SAFETY: allocations are kept until the model ends.
    let slots = &unsafe { kept(grown) }.slots;
    let two = Item::new(2);
    replace(&slots[1], two, writer);
    list.len.store(2, Ordering::Release);
    // `pop`: the length first, then the slot emptied; the popped reference retired.
    list.len.store(1, Ordering::Release);
    let popped = replace(&slots[1], std::ptr::null_mut(), writer);
    retire(Retired::Item(popped));
    // `push` into the room there is.
    let four = Item::new(4);
    replace(&slots[1], four, writer);
    list.len.store(2, Ordering::Release);
    // `set_item(0, 3)`.
    let three = Item::new(3);
    let replaced = replace(&slots[0], three, writer);
    retire(Retired::Item(replaced));
    reader.join().unwrap();
    // A later collection: the reader has unpinned.
    later.into_iter().for_each(Retired::free);
    // The list is dropped: its array, and its references to the items.
    for slot in slots {
        // SAFETY: allocations are kept until the model ends.
        decref(unsafe { kept(slot.load(Ordering::Acquire)) });
    }
    Retired::Array(grown).free();
    let items = [one, two, three, four];
    for item in items {
        // SAFETY: as above.
        let item = unsafe { kept(item) };
        assert!(item.freed.load(Ordering::SeqCst), "an item was never freed");
    }
    // SAFETY: the model is over; nothing refers to them.
    unsafe {
        items.into_iter().for_each(|item| drop(Box::from_raw(item)));
        drop((Box::from_raw(first_array), Box::from_raw(grown)));
    }
}

#[test]
fn reads_racing_a_growth_see_only_published_live_arrays_and_items() {
    let reached = super::reached_by(&REACHED, Reached::NONE, || {
        reader_beside_a_growth(AS_THE_CRATE);
    });
    assert!(
        reached.read_the_grown_arrays_new_item > 0
            && reached.read_the_item_pushed_after_the_pop > 0
            && reached.fell_back_on_the_emptied_slot > 0
            && reached.kept_the_first_array_for_the_reader > 0
            && reached.kept_the_first_item_for_the_reader > 0,
        "a path was never reached: {reached:?}"
    );
}

/// Runs the model with one of the writer's guarantees taken away, and checks that it fails
/// with one of `failures` (loom's message or the model's), not otherwise.
fn fails_without(writer: Writer, failures: &[&str]) {
    let outcome = std::panic::catch_unwind(|| loom::model(move || reader_beside_a_growth(writer)));
    let failure = outcome.expect_err("the model passed without one of the writer's guarantees");
    let message = panic_message(&*failure);
    assert!(
        failures.iter().any(|failure| message.contains(failure)),
        "the model failed otherwise: {message}"
    );
}

/// A reader's read of plain data the writer wrote and did not publish to it.
const RACE: &str = "Causality violation: Concurrent read and write accesses";

/// The new array swapped in, or the items stored, without a release.
#[test]
fn a_publication_without_a_release_is_caught_by_the_model() {
    let array_relaxed = Writer {
        release_the_array: false,
        ..AS_THE_CRATE
    };
    let items_relaxed = Writer {
        release_the_item: false,
        ..AS_THE_CRATE
    };
    for writer in [array_relaxed, items_relaxed] {
        fails_without(writer, &[RACE]);
    }
}

#[test]
fn retiring_without_a_grace_period_is_caught_by_the_model() {
    let writer = Writer {
        grace_period: false,
        ..AS_THE_CRATE
    };
    // A read of the freed array or item; or, where the reader counted the item just before
    // its free, its decrement freeing it a second time.
    fails_without(
        writer,
        &["read a freed array", "read a freed item", "freed twice"],
    );
}
