use ftrt_gil::world::{Presence, StopFailed, World};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::Arc;
use loom::thread;

struct Shared {
    world: World,
    mutator: Presence,
    stopper: Presence,
    other_stopper: Presence,
    /// A thread's presence that a stopper lists only once the thread has registered: one that
    /// starts while a stop is under way.
    late: Presence,
    /// Whether `late`'s thread has registered (the runtime's registry, which a stopper lists).
    late_registered: AtomicBool,
    /// Touched by attached mutators and by a stopper inside its stop, never by two at once.
    objects: UnsafeCell<u32>,
    /// The objects' locks, as the critical sections of attached threads take them (a thread
    /// holding the world alone does not).
    sections: loom::sync::Mutex<()>,
}

// SAFETY: `objects` is touched only under the protocol under test, which loom checks.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            world: World::new(),
            mutator: Presence::new(),
            stopper: Presence::new(),
            other_stopper: Presence::new(),
            late: Presence::new(),
            late_registered: AtomicBool::new(false),
            objects: UnsafeCell::new(0),
            sections: loom::sync::Mutex::new(()),
        })
    }

    fn touch(&self) {
        // SAFETY: the protocol gives the caller exclusive use (loom checks it).
        self.objects.with_mut(|objects| unsafe { *objects += 1 });
    }

    fn touch_in_section(&self) {
        let _section = self.sections.lock().unwrap();
        self.touch();
    }

    /// The registered threads' presences, as a stopper lists them.
    fn all(&self) -> Vec<&Presence> {
        let mut all = vec![&self.mutator, &self.stopper, &self.other_stopper];
        // Acquire: the registry's lock, which the registration released.
        if self.late_registered.load(Ordering::Acquire) {
            all.push(&self.late);
        }
        all
    }

    /// Attached as `me`, stops the world (parking while another stop runs), touches the
    /// objects inside the stop, and detaches.
    fn stop_once(&self, me: &Presence) {
        self.world.enter(Some(me));
        loop {
            match self.world.try_stop(Some(me), || self.all(), None) {
                Ok(stopped) => {
                    self.touch();
                    drop(stopped);
                    break;
                }
                Err(StopFailed::Busy) => self.world.park(Some(me)),
                Err(StopFailed::TimedOut) => unreachable!("no patience given"),
            }
        }
        self.world.leave(Some(me));
    }
}

/// Runs `other` on a thread of its own beside `main` on this one, joins it, and answers how
/// many times the objects were touched.
fn touches_beside(other: impl FnOnce(&Shared) + Send + 'static, main: impl FnOnce(&Shared)) -> u32 {
    let shared = Shared::new();
    let other = {
        let shared = shared.clone();
        thread::spawn(move || other(&shared))
    };
    main(&shared);
    other.join().unwrap();
    // SAFETY: every thread that touches the objects has been joined.
    shared.objects.with(|objects| unsafe { *objects })
}

/// A mutator attaches, parking at a checkpoint if a stop is wanted, while a stopper stops the
/// world once: the stop excludes both halves of the attachment.
#[test]
fn a_stop_excludes_every_attachment() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| {
                shared.world.enter(Some(&shared.mutator));
                shared.touch();
                // A checkpoint: park if asked.
                if shared.world.stop_requested() {
                    shared.world.park(Some(&shared.mutator));
                }
                shared.touch();
                shared.world.leave(Some(&shared.mutator));
            },
            |shared| shared.stop_once(&shared.stopper),
        );
        assert_eq!(touches, 3);
    });
}

/// A thread that starts while a stop is under way: it registers, then attaches for the first
/// time, and the stopper lists the registered threads at any point of that. Listed, it is
/// waited for as any thread is; not listed, its presence is still new, and its first attach
/// waits for the stop to end. Never both inside.
#[test]
fn a_thread_that_registers_during_a_stop_is_excluded_too() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| {
                shared.late_registered.store(true, Ordering::Release);
                shared.world.enter(Some(&shared.late));
                shared.touch();
                shared.world.leave(Some(&shared.late));
            },
            |shared| shared.stop_once(&shared.stopper),
        );
        assert_eq!(touches, 2);
    });
}

/// Two stoppers at once: one stops, the other parks and stops after it; never both inside.
#[test]
fn two_stoppers_take_turns() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| shared.stop_once(&shared.other_stopper),
            |shared| shared.stop_once(&shared.stopper),
        );
        assert_eq!(touches, 2);
    });
}

/// A thread without a presence (attached after its exit) is waited for too, and waits.
#[test]
fn an_anonymous_thread_is_excluded_too() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| {
                shared.world.enter(None);
                shared.touch();
                shared.world.leave(None);
            },
            |shared| shared.stop_once(&shared.stopper),
        );
        assert_eq!(touches, 2);
    });
}

/// How a stop with patience ended, across a model's executions (counted outside loom).
struct Outcomes {
    stopped: std::sync::atomic::AtomicBool,
    timed_out: std::sync::atomic::AtomicBool,
}

impl Outcomes {
    const fn new() -> Self {
        Outcomes {
            stopped: std::sync::atomic::AtomicBool::new(false),
            timed_out: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn note(&self, result: Result<(), StopFailed>) {
        let flag = match result {
            Ok(()) => &self.stopped,
            Err(StopFailed::TimedOut) => &self.timed_out,
            Err(StopFailed::Busy) => unreachable!("one stopper"),
        };
        flag.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Runs `model` under loom, and checks that its schedules reached both ends of the stop.
    fn reached_by(&'static self, model: fn(&'static Outcomes)) {
        loom::model(move || model(self));
        let stopped = self.stopped.load(std::sync::atomic::Ordering::Relaxed);
        let timed_out = self.timed_out.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            stopped && timed_out,
            "stopped {stopped}, timed out {timed_out}"
        );
    }
}

/// A patient stopper, whose every timed wait runs out (its patience spent by the first that
/// does), on a thread of its own beside `mutator` on this one; then `after`, on the stopper's
/// thread. The stop succeeds if it suspends every thread before or after its attachment, or if
/// a thread's `leave` finds itself waited for and suspends itself before the stopper unmarks
/// it; otherwise it times out and touches nothing. Once both threads are done, every presence
/// is detached (none left attached, marked or suspended), and a stop without patience ends.
fn a_stop_out_of_patience_beside(
    outcomes: &'static Outcomes,
    mutator: impl FnOnce(&Shared),
    after: impl FnOnce(&Shared) + Send + 'static,
) {
    let shared = Shared::new();
    let stopper = {
        let shared = shared.clone();
        thread::spawn(move || {
            let me = &shared.stopper;
            shared.world.enter(Some(me));
            ftrt_gil::run_out_next_timed_waits(usize::MAX);
            let patience = Some(std::time::Duration::from_secs(3600));
            let result = shared.world.try_stop(Some(me), || shared.all(), patience);
            outcomes.note(result.as_ref().map(|_| ()).map_err(|failed| *failed));
            if let Ok(stopped) = result {
                shared.touch();
                drop(stopped);
            }
            shared.world.leave(Some(me));
            after(&shared);
        })
    };
    mutator(&shared);
    stopper.join().unwrap();
    for presence in [&shared.mutator, &shared.stopper, &shared.other_stopper] {
        assert!(
            !presence.is_attached() && !presence.is_suspended(),
            "a presence left attached or suspended with no thread in the world"
        );
    }
    shared.stop_once(&shared.stopper);
}

/// A mutator's attachment that stays attached a while with no checkpoint (a blocking call:
/// the yield hands the other thread the time without spending one of loom's preemptions).
fn attach_touch_and_block(shared: &Shared, presence: Option<&Presence>) {
    shared.world.enter(presence);
    shared.touch();
    thread::yield_now();
    shared.world.leave(presence);
}

/// The mutator of the models below: a registered thread attached twice, so that the second
/// attachment finds what the first one's `leave` left (a presence left attached fails it, one
/// left suspended with no stop under way hangs it).
fn attach_twice(shared: &Shared) {
    attach_touch_and_block(shared, Some(&shared.mutator));
    attach_touch_and_block(shared, Some(&shared.mutator));
}

/// A stop whose patience runs out while a thread stays attached (blocked without a checkpoint)
/// lets it go: the thread's `leave`, racing the stopper's unmarking, leaves it detached (or
/// suspended by the stop, which then succeeded and excluded it), and it attaches again. The
/// schedules reach both outcomes.
#[test]
fn a_stop_that_runs_out_of_patience_lets_the_thread_it_waited_for_go() {
    static OUTCOMES: Outcomes = Outcomes::new();
    OUTCOMES.reached_by(|outcomes| a_stop_out_of_patience_beside(outcomes, attach_twice, |_| {}));
}

/// The same with the stopper stopping again at once, without patience: the thread's `leave`
/// may find the first stop's mark gone, and then the second's there. Every schedule ends with
/// both stops and both attachments done, never two at once. (That such a `leave` suspends
/// itself for the second stopper, rather than leave detached and let that stopper suspend it,
/// is a matter of liveness that no schedule here tells apart.)
#[test]
fn a_leave_racing_a_timed_out_stop_and_the_next_one_ends_in_one_of_them() {
    static OUTCOMES: Outcomes = Outcomes::new();
    OUTCOMES.reached_by(|outcomes| {
        a_stop_out_of_patience_beside(outcomes, attach_twice, |shared| {
            shared.stop_once(&shared.stopper);
        })
    });
}

/// A thread without a presence, attached while the stopper's patience runs out: the only wait
/// that can time out is the stopper's for the anonymous threads, after it suspended the
/// registered ones (the mutator's presence among them, new), and it lets them go.
#[test]
fn a_stop_out_of_patience_with_an_anonymous_thread_lets_the_world_run_on() {
    static OUTCOMES: Outcomes = Outcomes::new();
    OUTCOMES.reached_by(|outcomes| {
        a_stop_out_of_patience_beside(
            outcomes,
            |shared| attach_touch_and_block(shared, None),
            |_| {},
        )
    });
}

/// What a holder of the world alone does: its touches take no lock (the elided sections) while
/// it holds, and it lets go at its checkpoint once asked, leaving before it drops the hold. A
/// thread that cannot hold touches under `sections`, like every attached thread. Two touches
/// in every case.
fn run_as_holder(shared: &Shared) {
    let me = &shared.stopper;
    shared.world.enter(Some(me));
    match shared.world.try_hold_alone(me, || shared.all()) {
        Some(hold) => {
            shared.touch();
            // A checkpoint.
            if shared.world.stop_requested() {
                shared.world.leave(Some(me));
                drop(hold);
                shared.world.wait_while_stopping();
                shared.world.enter(Some(me));
                shared.touch_in_section();
            } else {
                shared.touch();
                shared.world.leave(Some(me));
                drop(hold);
                return;
            }
        }
        None => {
            shared.touch_in_section();
            shared.touch_in_section();
        }
    }
    shared.world.leave(Some(me));
}

/// A thread that holds the world alone touches the objects without locking while another
/// thread attaches twice (first as a new thread, then as a detached one) and touches them in
/// sections: never both at once, and nobody waits forever.
#[test]
fn a_thread_holding_the_world_alone_excludes_every_attachment() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| {
                for _ in 0..2 {
                    shared.world.enter(Some(&shared.mutator));
                    shared.touch_in_section();
                    shared.world.leave(Some(&shared.mutator));
                }
            },
            run_as_holder,
        );
        assert_eq!(touches, 4);
    });
}

/// The same with a thread without a presence (attached after its exit): it waits for the hold
/// to end and asks for it, and a hold is refused while it is attached.
#[test]
fn a_thread_holding_the_world_alone_excludes_anonymous_threads() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| {
                shared.world.enter(None);
                shared.touch_in_section();
                shared.world.leave(None);
            },
            run_as_holder,
        );
        assert_eq!(touches, 3);
    });
}

/// A hold and a stop never overlap: a stopper that finds the world held waits for the holder
/// (which parks when asked), and a hold is refused while a stop is under way.
#[test]
fn a_hold_and_a_stop_take_turns() {
    loom::model(|| {
        let touches = touches_beside(
            |shared| shared.stop_once(&shared.other_stopper),
            run_as_holder,
        );
        assert_eq!(touches, 3);
    });
}

/// A thread that comes to attach while the world is held asks the holder to let go: a holder
/// that runs on until its checkpoints say so (and would run forever otherwise) lets it in.
#[test]
fn a_thread_waiting_to_attach_asks_the_holder_to_let_go() {
    loom::model(|| {
        let shared = Shared::new();
        let me = &shared.stopper;
        shared.world.enter(Some(me));
        let hold = shared
            .world
            .try_hold_alone(me, || shared.all())
            .expect("no other thread is attached");
        let mutator = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.world.enter(Some(&shared.mutator));
                shared.touch_in_section();
                shared.world.leave(Some(&shared.mutator));
            })
        };
        shared.touch();
        // Checkpoints until asked.
        while !shared.world.stop_requested() {
            thread::yield_now();
        }
        shared.world.leave(Some(me));
        drop(hold);
        mutator.join().unwrap();
        // SAFETY: the mutator has been joined: no other thread touches the cell any more.
        let objects = shared.objects.with(|objects| unsafe { *objects });
        assert_eq!(objects, 2);
    });
}

/// An object of the owner's that another thread frees, and whose release attaches (as the
/// runtime's frees run attached): with the presence of `Shared::other_stopper`, a registered
/// thread that a stopper lists. `repr(C)`: the count first, as its pointer is the object's.
#[repr(C)]
struct AttachingObject {
    count: ftrt_refcount::BiasedCount,
    shared: Arc<Shared>,
}

impl Drop for AttachingObject {
    fn drop(&mut self) {
        if IS_DROPPER.with(std::cell::Cell::get) {
            MERGED_FOR_THE_PARKED_OWNER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let (world, me) = (&self.shared.world, &self.shared.other_stopper);
        world.enter(Some(me));
        self.shared.touch();
        world.leave(Some(me));
    }
}

/// # Safety
/// The count heads an `AttachingObject` made by `Box::leak`, and reached zero.
unsafe fn release_attaching(count: std::ptr::NonNull<ftrt_refcount::BiasedCount>) {
    // SAFETY: per the contract.
    drop(unsafe { Box::from_raw(count.cast::<AttachingObject>().as_ptr()) });
}

/// A pointer to an `AttachingObject` that may cross threads.
struct Handed(std::ptr::NonNull<ftrt_refcount::BiasedCount>);
// SAFETY: the object is shared by design; its count is only touched through the protocol.
unsafe impl Send for Handed {}

/// Executions in which the release ran on the dropping thread, merging for the parked owner:
/// the case the model is about (counted outside loom, across its executions).
static MERGED_FOR_THE_PARKED_OWNER: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

loom::thread_local! {
    /// Whether this thread is the one that drops the handed reference.
    static IS_DROPPER: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

/// The biased counts' park with the stop protocol, as a runtime thread's detach and reattach
/// combine them: a detached owner's object, whose one reference it handed to another thread,
/// is dropped there, and the drop merges it for the parked owner and frees it, attaching in
/// its release; meanwhile the owner reattaches and a third thread stops the world. The reattach
/// unparks (waiting for the merge) before it enters the world, as the runtime's does: entering
/// first, it would wait for the merge inside the world, while the merge's release waits for the
/// stop to end and the stop for every thread in the world (loom reports that deadlock with the
/// two steps swapped; a deadlocked model aborts the test binary, so no test keeps that mutation).
fn reattach_beside_a_merge() {
    use ftrt_refcount::biased::LocalCounts;
    let shared = Shared::new();
    let owner = LocalCounts::register();
    // Attached, the owner makes the object; its one reference goes to another thread.
    shared.world.enter(Some(&shared.mutator));
    let object = Box::new(AttachingObject {
        count: ftrt_refcount::BiasedCount::new_for(owner.owner()),
        shared: shared.clone(),
    });
    let count = std::ptr::NonNull::from(Box::leak(object)).cast();
    let handed = Handed(count);
    // Detach: park the counts, then leave the world.
    // SAFETY: nothing is counted through `owner` between park and unpark.
    unsafe { owner.park() };
    shared.world.leave(Some(&shared.mutator));
    let dropper = thread::spawn(move || {
        let handed = handed;
        let counts = LocalCounts::register();
        IS_DROPPER.with(|is| is.set(true));
        // SAFETY: the reference handed to this thread, given up once; `true` means this call
        // saw the count reach zero and must free.
        unsafe {
            if ftrt_refcount::BiasedCount::decref_for(handed.0, counts.owner(), release_attaching) {
                release_attaching(handed.0);
            }
        }
    });
    let stopper = {
        let shared = shared.clone();
        thread::spawn(move || shared.stop_once(&shared.stopper))
    };
    // Reattach: unpark (waiting for a merge on this thread's behalf), then enter.
    owner.unpark();
    shared.world.enter(Some(&shared.mutator));
    shared.touch();
    shared.world.leave(Some(&shared.mutator));
    dropper.join().unwrap();
    stopper.join().unwrap();
    owner.merge_pending();
    drop(owner);
    // SAFETY: every thread that touches the objects has been joined.
    let touches = shared.objects.with(|objects| unsafe { *objects });
    assert_eq!(
        touches, 3,
        "the stop, the reattach and the release, once each"
    );
}

/// [`reattach_beside_a_merge`] as the runtime orders it: no schedule deadlocks, the stop
/// excludes every attachment, the object is freed once; and some schedules do merge on the
/// dropping thread for the parked owner (the model is not vacuous).
#[test]
fn a_reattach_waits_for_a_merge_on_its_behalf_outside_the_world() {
    MERGED_FOR_THE_PARKED_OWNER.store(0, std::sync::atomic::Ordering::Relaxed);
    loom::model(reattach_beside_a_merge);
    assert!(
        MERGED_FOR_THE_PARKED_OWNER.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no schedule merged on the dropping thread for the parked owner"
    );
}

/// A thread that saw a stop requested and parks waits for that stop to end before it attaches
/// again, whether or not the stopper has reached it yet: the park's wait must see the stop
/// under way that the request it answers belongs to. (Both flags were read relaxed: the park
/// saw the request raised and then found no stop under way, and attached again at once; the
/// stopper found it attached and waited for it to leave again. Miri found the schedule.)
#[test]
fn a_thread_that_parks_for_a_stop_waits_for_that_stop() {
    loom::model(|| {
        let shared = Shared::new();
        let stop_ran = Arc::new(AtomicBool::new(false));
        shared.world.enter(Some(&shared.mutator));
        let stopper = {
            let (shared, stop_ran) = (shared.clone(), stop_ran.clone());
            thread::spawn(move || {
                shared.world.enter(Some(&shared.stopper));
                let stopped = shared
                    .world
                    .try_stop(Some(&shared.stopper), || shared.all(), None)
                    .expect("the only stopper");
                stop_ran.store(true, Ordering::Relaxed);
                drop(stopped);
                shared.world.leave(Some(&shared.stopper));
            })
        };
        while !shared.world.stop_requested() {
            thread::yield_now();
        }
        shared.world.park(Some(&shared.mutator));
        // Relaxed: the end of the stop (a store of the presence, Release; the enter's
        // Acquire) orders the flag before this load.
        let ran = stop_ran.load(Ordering::Relaxed);
        shared.world.leave(Some(&shared.mutator));
        stopper.join().unwrap();
        assert!(ran, "the park ended before the stop it answered");
    });
}
