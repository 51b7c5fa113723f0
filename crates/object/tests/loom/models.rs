use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// An object: a count and a value, and a flag that says it was freed (memory is kept so that a
/// use after free is observable instead of undefined).
struct Object {
    count: AtomicUsize,
    value: u32,
    freed: AtomicBool,
}

impl Object {
    fn new(value: u32) -> *mut Object {
        Box::into_raw(Box::new(Object {
            count: AtomicUsize::new(1),
            value,
            freed: AtomicBool::new(false),
        }))
    }
}

/// # Safety
/// `object` came from `Object::new` and is never deallocated during the model.
unsafe fn object<'a>(object: *mut Object) -> &'a Object {
    // SAFETY: per the contract (the model leaks objects until its end).
    unsafe { &*object }
}

fn incref(target: &Object) {
    assert!(
        !target.freed.load(Ordering::SeqCst),
        "a reader incremented a freed object"
    );
    target.count.fetch_add(1, Ordering::Relaxed);
}

fn decref(target: &Object) {
    if target.count.fetch_sub(1, Ordering::AcqRel) == 1 {
        assert!(!target.freed.swap(true, Ordering::SeqCst), "freed twice");
    }
}

/// The message a model's failure carried: an `assert!`'s, or loom's own. A "the model can fail"
/// test matches it, so that a failure of the model itself (loom's limits, a bug in the model)
/// does not pass for the failure it expects.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("<a payload that is not a string>")
}

/// Loads a pointer with a read-modify-write (a compare-exchange that writes back what it found).
fn load_by_rmw(item: &AtomicPtr<Object>) -> *mut Object {
    let mut current = item.load(Ordering::Acquire);
    loop {
        match item.compare_exchange(current, current, Ordering::AcqRel, Ordering::Acquire) {
            Ok(found) => return found,
            Err(found) => current = found,
        }
    }
}

/// One container slot and the reader's pin, as the crate's epoch guard provides it.
struct Slot {
    item: AtomicPtr<Object>,
    reader_pinned: AtomicBool,
}

#[test]
fn reads_racing_a_replacement_never_touch_a_freed_item() {
    loom::model(|| {
        let first = Object::new(1);
        let second = Object::new(2);
        let slot = Arc::new(Slot {
            item: AtomicPtr::new(first),
            reader_pinned: AtomicBool::new(false),
        });

        let reader = {
            let slot = slot.clone();
            thread::spawn(move || {
                // Pin, then load and count the item. crossbeam orders the pin before the load with
                // a SeqCst fence; loom models SeqCst only partially, so the model orders both
                // sides with read-modify-writes, which give the same guarantee.
                slot.reader_pinned.swap(true, Ordering::AcqRel);
                let loaded = load_by_rmw(&slot.item);
                // SAFETY: objects are not deallocated during the model.
                let item = unsafe { object(loaded) };
                incref(item);
                slot.reader_pinned.store(false, Ordering::SeqCst);
                // The reader now owns a reference: use it, then drop it.
                assert!(
                    item.value == 1 || item.value == 2,
                    "read a value that was never stored"
                );
                decref(item);
            })
        };

        // The writer (holding the container's lock, which one writer makes moot here) swaps the
        // slot and retires the old reference: dropped at once if no reader is pinned, otherwise
        // kept for a later collection, after the reader has unpinned (the epoch's job).
        let old = slot.item.swap(second, Ordering::AcqRel);
        let deferred = if slot.reader_pinned.fetch_or(false, Ordering::AcqRel) {
            Some(old)
        } else {
            // SAFETY: objects are not deallocated during the model.
            decref(unsafe { object(old) });
            None
        };

        reader.join().unwrap();
        // A later collection: the reader has unpinned.
        if let Some(old) = deferred {
            // SAFETY: as above.
            decref(unsafe { object(old) });
        }
        // The container is dropped: its reference to the current item goes.
        // SAFETY: as above.
        decref(unsafe { object(slot.item.load(Ordering::Acquire)) });
        for each in [first, second] {
            // SAFETY: as above.
            let each = unsafe { object(each) };
            assert!(
                each.freed.load(Ordering::SeqCst),
                "an object was never freed"
            );
            assert_eq!(each.count.load(Ordering::SeqCst), 0);
        }
        // SAFETY: the model is over; nothing refers to them.
        unsafe { drop((Box::from_raw(first), Box::from_raw(second))) };
    });
}

#[test]
fn without_the_grace_period_the_model_catches_the_use_after_free() {
    // The same protocol with the retire done at once: loom must find the interleaving where the
    // reader increments the old item after the writer freed it. This shows the model can fail.
    let outcome = std::panic::catch_unwind(|| {
        loom::model(|| {
            let first = Object::new(1);
            let slot = Arc::new(AtomicPtr::new(first));
            let reader = {
                let slot = slot.clone();
                thread::spawn(move || {
                    // SAFETY: objects are not deallocated during the model.
                    let item = unsafe { object(slot.load(Ordering::SeqCst)) };
                    incref(item);
                    decref(item);
                })
            };
            let old = slot.swap(Object::new(2), Ordering::SeqCst);
            // SAFETY: as above.
            decref(unsafe { object(old) });
            reader.join().unwrap();
        });
    });
    let failure = outcome.expect_err("the model missed a use after free");
    let message = panic_message(&*failure);
    // The use after free shows as the reader's increment of the freed object, or, where the
    // reader looked just before the free and counted just after it, as its decrement freeing
    // the object a second time.
    assert!(
        message.contains("a reader incremented a freed object") || message.contains("freed twice"),
        "the model failed otherwise: {message}"
    );
}

/// The `gil` build's state for borrowed reads: one slot, the count of live read guards (changed
/// only under the GIL, so a relaxed load and store, as in the crate), and the deferred removals.
struct GilWorld {
    gil: Mutex<()>,
    slot: AtomicPtr<Object>,
    readers: AtomicUsize,
    deferred: Mutex<Vec<usize>>,
}

impl GilWorld {
    fn new(item: *mut Object) -> Self {
        GilWorld {
            gil: Mutex::new(()),
            slot: AtomicPtr::new(item),
            readers: AtomicUsize::new(0),
            deferred: Mutex::new(Vec::new()),
        }
    }

    /// `ReadGuard::new`, under the GIL.
    fn enter(&self) {
        self.readers
            .store(self.readers.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Dropping a `ReadGuard`, under the GIL: the last one drops what was deferred.
    fn leave(&self) {
        let left = self.readers.load(Ordering::Relaxed) - 1;
        self.readers.store(left, Ordering::Relaxed);
        if left == 0 {
            for old in std::mem::take(&mut *self.deferred.lock().unwrap()) {
                // SAFETY: objects are not deallocated during the model.
                decref(unsafe { object(old as *mut Object) });
            }
        }
    }

    /// A writer replaces the item under the GIL and retires the old reference.
    fn replace(&self, item: *mut Object, defer_while_read: bool) {
        let old = self.slot.swap(item, Ordering::Relaxed);
        if defer_while_read && self.readers.load(Ordering::Relaxed) > 0 {
            self.deferred.lock().unwrap().push(old as usize);
        } else {
            // SAFETY: objects are not deallocated during the model.
            decref(unsafe { object(old) });
        }
    }
}

/// A reader borrows the item under a read guard, gives the GIL up and takes it back (as across
/// `allow_threads`), and reads the borrowed item; a writer replaces the item meanwhile.
fn gil_borrow_across_a_release(defer_while_read: bool) {
    let first = Object::new(1);
    let second = Object::new(2);
    let world = Arc::new(GilWorld::new(first));
    let reader = {
        let world = world.clone();
        thread::spawn(move || {
            let borrowed = {
                let _gil = world.gil.lock().unwrap();
                world.enter();
                world.slot.load(Ordering::Relaxed)
            };
            // Detached: another thread may hold the GIL now.
            let _gil = world.gil.lock().unwrap();
            // SAFETY: objects are not deallocated during the model.
            let item = unsafe { object(borrowed) };
            assert!(
                !item.freed.load(Ordering::SeqCst),
                "a borrowed item was freed under its read guard"
            );
            assert!(
                item.value == 1 || item.value == 2,
                "read a value never stored"
            );
            world.leave();
        })
    };
    {
        let _gil = world.gil.lock().unwrap();
        world.replace(second, defer_while_read);
    }
    reader.join().unwrap();
    // The container is dropped: its reference to the current item goes.
    // SAFETY: as above.
    decref(unsafe { object(world.slot.load(Ordering::Relaxed)) });
    assert!(
        world.deferred.lock().unwrap().is_empty(),
        "a deferred reference was kept"
    );
    for each in [first, second] {
        // SAFETY: as above.
        let each = unsafe { object(each) };
        assert!(
            each.freed.load(Ordering::SeqCst),
            "an object was never freed"
        );
    }
    // SAFETY: the model is over; nothing refers to them.
    unsafe { drop((Box::from_raw(first), Box::from_raw(second))) };
}

#[test]
fn under_the_gil_a_borrow_held_across_a_release_never_sees_a_freed_item() {
    loom::model(|| gil_borrow_across_a_release(true));
}

#[test]
fn under_the_gil_without_the_reader_count_the_model_catches_the_use_after_free() {
    // Removals dropped at once, as the gil build did: the reader's borrowed item is freed while
    // it has given up the GIL. This shows the model can fail.
    let outcome = std::panic::catch_unwind(|| loom::model(|| gil_borrow_across_a_release(false)));
    let failure = outcome.expect_err("the model missed a use after free");
    let message = panic_message(&*failure);
    assert!(
        message.contains("a borrowed item was freed under its read guard"),
        "the model failed otherwise: {message}"
    );
}

/// Local objects: an object only its creating thread can reach takes no lock in its critical
/// sections, and the creating thread marks it shared before handing a reference to another
/// thread (`Header`'s invariant). The model: the creator mutates a fresh object with its section
/// skipped, publishes it into a shared slot, and mutates it again; another thread takes it from
/// the slot and mutates it, locking only if the object says it is shared. The value is a loom
/// `UnsafeCell`, so two unlocked writes that are not ordered fail the model, and every write
/// must survive.
mod local_objects {
    use loom::cell::UnsafeCell;
    use loom::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
    use loom::sync::{Arc, Mutex};
    use loom::thread;

    struct Object {
        shared: AtomicBool,
        lock: Mutex<()>,
        value: UnsafeCell<u32>,
    }

    impl Object {
        /// A critical section: skipped while the object is local.
        fn section(&self, f: impl FnOnce(&mut u32)) {
            let _held = self
                .shared
                .load(Ordering::Relaxed)
                .then(|| self.lock.lock().unwrap());
            // SAFETY: locked, or local (no other thread can reach the object).
            self.value.with_mut(|value| f(unsafe { &mut *value }));
        }
    }

    /// Where a shared container keeps the object: written under its lock, as a shared list or
    /// dict is.
    struct Container {
        lock: Mutex<()>,
        slot: AtomicPtr<Object>,
    }

    fn creator_publishes_then_mutates(mark_before_hand_over: bool) {
        let container = Arc::new(Container {
            lock: Mutex::new(()),
            slot: AtomicPtr::new(std::ptr::null_mut()),
        });
        let other = {
            let container = container.clone();
            thread::spawn(move || {
                let found = {
                    let _held = container.lock.lock().unwrap();
                    container.slot.load(Ordering::Relaxed)
                };
                // SAFETY: the object is freed only after both threads are joined.
                if let Some(object) = unsafe { found.as_ref() } {
                    object.section(|value| *value += 10);
                }
                !found.is_null()
            })
        };
        let object = Box::into_raw(Box::new(Object {
            shared: AtomicBool::new(false),
            lock: Mutex::new(()),
            value: UnsafeCell::new(0),
        }));
        // SAFETY: freed at the end of the model.
        let local = unsafe { &*object };
        local.section(|value| *value += 1);
        if mark_before_hand_over {
            local.shared.store(true, Ordering::Relaxed);
        }
        {
            let _held = container.lock.lock().unwrap();
            container.slot.store(object, Ordering::Relaxed);
        }
        if !mark_before_hand_over {
            local.shared.store(true, Ordering::Relaxed);
        }
        local.section(|value| *value += 100);
        let other_saw_it = other.join().unwrap();
        let expected = if other_saw_it { 111 } else { 101 };
        local.section(|value| assert_eq!(*value, expected, "a write was lost"));
        // SAFETY: both threads are done with it.
        drop(unsafe { Box::from_raw(object) });
    }

    #[test]
    fn a_local_object_is_marked_shared_before_another_thread_can_reach_it() {
        loom::model(|| creator_publishes_then_mutates(true));
    }

    #[test]
    fn marking_after_the_hand_over_is_caught_by_the_model() {
        // The other thread can find the object still marked local and skip the lock while the
        // creator's section runs: this shows the model can fail.
        let outcome =
            std::panic::catch_unwind(|| loom::model(|| creator_publishes_then_mutates(false)));
        let failure = outcome.expect_err("the model missed an unlocked race");
        let message = super::panic_message(&*failure);
        // Loom's check of the `UnsafeCell` finds the two unordered writes (or, in an
        // interleaving it reaches first, the lost one shows in the final value).
        assert!(
            message.contains("Causality violation") || message.contains("a write was lost"),
            "the model failed otherwise: {message}"
        );
    }
}

/// Runs `f` in a stopped world, as the thread with presence `presences[me]` (attached), parking
/// while another thread's stop runs: a collection's stop, through the real protocol.
fn stopped_as<R>(
    world: &ftrt_gil::world::World,
    presences: &[ftrt_gil::world::Presence],
    me: usize,
    f: impl FnOnce() -> R,
) -> R {
    use ftrt_gil::world::StopFailed;
    let presence = &presences[me];
    loop {
        match world.try_stop(Some(presence), || presences.iter().collect(), None) {
            Ok(stopped) => {
                let answer = f();
                drop(stopped);
                return answer;
            }
            Err(StopFailed::Busy) => world.park(Some(presence)),
            Err(StopFailed::TimedOut) => unreachable!("no patience given"),
        }
    }
}

/// Where a model notes the paths its schedules reached: a thread-local of the test's thread
/// (loom runs a model's threads on the test's own). A model checks that each of its paths was
/// reached, so that it cannot pass by exploring none of them.
type ReachedKey<R> = std::thread::LocalKey<std::cell::Cell<R>>;

/// Notes in `reached` a path a schedule reached.
fn note_reached<R: Copy>(reached: &'static ReachedKey<R>, change: impl FnOnce(&mut R)) {
    reached.with(|reached| {
        let mut now = reached.get();
        change(&mut now);
        reached.set(now);
    });
}

/// Runs `model`, and answers what its schedules noted in `reached`, from `none` on.
fn reached_by<R: Copy>(
    reached: &'static ReachedKey<R>,
    none: R,
    model: impl Fn() + Sync + Send + 'static,
) -> R {
    reached.with(|reached| reached.set(none));
    loom::model(model);
    reached.with(std::cell::Cell::get)
}

/// Deferred counts: per-thread counts of hot shared objects, summed in a stopped world.
#[path = "deferred.rs"]
mod deferred;

/// Garbage delivered to its owner thread, or freed by the next collection.
#[path = "delivery.rs"]
mod delivery;

/// A list's lock-free read against the growth of its array, a pop and a push.
#[path = "list_growth.rs"]
mod list_growth;
