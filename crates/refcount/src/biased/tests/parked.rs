//! Parked owners: drops merged by the threads that make them, unparking, and retirement;
//! panicking releases on the way.

use super::*;

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
    crate::biased::thread::WAITING_TO_UNPARK.set(Some(|| {
        UNPARK_WAITS.wait();
    }));
    owner.unpark();
    crate::biased::thread::WAITING_TO_UNPARK.set(None);
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
