//! Deferred counts (`hot.rs`): a hot shared object's count stops changing, every thread counts
//! its references to it in an array of its own with plain loads and stores, and only a settle,
//! in a stopped world, sums the arrays, hands the object back to its count, and frees it when
//! no reference is left. The models run the real stop protocol (`ftrt_gil::world`) and the real
//! biased count (`defer_counting`, the halves that hand the tag over, `resume_counting`); the
//! arrays and the registry are the model's, each thread's count a loom `UnsafeCell`, so a write
//! that the stop does not order against the settle is a reported race, not a lucky sum.
//!
//! What they check, in every interleaving: the object is freed exactly once, never while a
//! thread still holds a reference, and a deferral made in a stopped world reaches every count a
//! thread makes after it. (An exact read of a deferred count from a running thread,
//! `Bound::refcount`, races the counting threads by design and reads their arrays as atomics;
//! it is not modelled.)

use std::ptr::NonNull;

use ftrt_gil::world::{Presence, World};
use ftrt_refcount::biased::{CountOnPath, DeferredPath, LocalCounts, Owner};
use ftrt_refcount::BiasedCount;
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The deferred id: an index into every thread's array (here one entry each).
const TAG: u16 = 1;

/// The two threads of each model, by index into [`Runtime::counts`].
const COUNTER: usize = 0;
const STOPPER: usize = 1;

/// Which half of the count hands thread `me` a deferred count's tag: the first (inline) on the
/// counting thread, as on a thread whose array exists, the unowned one (out of line) on the
/// stopper, as on a thread that has not made its array yet (`refs::incref`, `refs::decref`).
fn deferred_path(me: usize) -> DeferredPath {
    if me == COUNTER {
        DeferredPath::INLINE
    } else {
        DeferredPath::OUT_OF_LINE
    }
}

/// One thread's count of the deferred object: its net references, and the references it took
/// since the last settle (the traffic that keeps an object deferred).
#[derive(Clone, Copy, Default)]
struct ThreadCount {
    net: isize,
    taken: isize,
}

impl ThreadCount {
    fn add(&mut self, other: ThreadCount) {
        self.net += other.net;
        self.taken += other.taken;
    }
}

const TAKEN: ThreadCount = ThreadCount { net: 1, taken: 1 };
const DROPPED: ThreadCount = ThreadCount { net: -1, taken: 0 };

/// What the settle reads and writes under the registry's lock.
struct Registry {
    /// Whether the object is deferred now.
    deferred: bool,
    /// Deferred since the last settle: kept deferred by it whatever its traffic.
    fresh: bool,
    /// Which threads' arrays still count (an exited thread's count is in `exited`).
    running: [bool; 2],
    /// The counts of the threads that exited.
    exited: ThreadCount,
}

std::thread_local! {
    /// What the model's schedules reached (see `ReachedKey`): settles that kept the object
    /// deferred, settles that resumed its count while the counting thread still held a
    /// reference, and references the counting thread counted in its array.
    static REACHED: std::cell::Cell<Reached> = const { std::cell::Cell::new(Reached::NONE) };
}

#[derive(Clone, Copy, PartialEq, Debug)]
struct Reached {
    kept_deferred: usize,
    resumed_while_held: usize,
    counted_in_array: usize,
}

impl Reached {
    const NONE: Reached = Reached {
        kept_deferred: 0,
        resumed_while_held: 0,
        counted_in_array: 0,
    };

    fn note(change: impl FnOnce(&mut Reached)) {
        super::note_reached(&REACHED, change);
    }

    /// What the model run by `model` reached.
    fn by(model: impl Fn() + Sync + Send + 'static) -> Reached {
        super::reached_by(&REACHED, Reached::NONE, model)
    }
}

/// Sets a flag when dropped: the object's freeing, observable.
struct Freed(Arc<AtomicUsize>);

impl Drop for Freed {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// An object: its count first, so that a pointer to the count is one to the object.
#[repr(C)]
struct Object {
    count: BiasedCount,
    _freed: Freed,
}

/// # Safety
/// `count` heads an `Object` leaked by [`Runtime::new`] whose last reference is gone.
unsafe fn release(count: NonNull<BiasedCount>) {
    // SAFETY: per the contract.
    drop(unsafe { Box::from_raw(count.cast::<Object>().as_ptr()) });
}

struct Runtime {
    world: World,
    presences: [Presence; 2],
    /// Each thread's count: written by its thread while attached, and by a settle, under the
    /// registry's lock, in a stopped world; read by the thread's exit under the lock.
    counts: [UnsafeCell<ThreadCount>; 2],
    registry: Mutex<Registry>,
    object: NonNull<BiasedCount>,
    freed: Arc<AtomicUsize>,
}

// SAFETY: `counts` and `object` are touched only under the protocol under test: loom checks
// the counts' cells (a broken exclusion is a reported race), and the model's own `freed`
// check catches a use of the object after its free where the free came first.
unsafe impl Sync for Runtime {}
// SAFETY: as above.
unsafe impl Send for Runtime {}

impl Runtime {
    /// A runtime with one object, owned by `owner`, holding two references: the owner's, and
    /// the one the owner hands to the counting thread.
    fn new(owner: Owner<'_>) -> Arc<Self> {
        let freed = Arc::new(AtomicUsize::new(0));
        let object = Box::new(Object {
            count: BiasedCount::new_for(owner),
            _freed: Freed(freed.clone()),
        });
        object.count.incref_for(owner);
        Arc::new(Runtime {
            world: World::new(),
            presences: [Presence::new(), Presence::new()],
            counts: [
                UnsafeCell::new(ThreadCount::default()),
                UnsafeCell::new(ThreadCount::default()),
            ],
            registry: Mutex::new(Registry {
                deferred: false,
                fresh: false,
                running: [true; 2],
                exited: ThreadCount::default(),
            }),
            object: NonNull::from(Box::leak(object)).cast(),
            freed,
        })
    }

    fn count(&self) -> &BiasedCount {
        assert_eq!(self.freed(), 0, "a thread counted a freed object");
        // SAFETY: every caller holds a reference, or settles in a stopped world a count the
        // registry keeps alive while deferred (which the check above tests where it can).
        unsafe { self.object.as_ref() }
    }

    fn freed(&self) -> usize {
        self.freed.load(Ordering::SeqCst)
    }

    /// Defers the count, as `hot::defer_stopped` does.
    ///
    /// # Safety
    /// The world is stopped (or no other thread can reach the object), and the caller holds a
    /// reference.
    unsafe fn defer(&self) -> bool {
        let mut registry = self.registry.lock().unwrap();
        // SAFETY: per the caller.
        if registry.deferred || !unsafe { self.count().defer_counting(TAG) } {
            return registry.deferred;
        }
        registry.deferred = true;
        registry.fresh = true;
        true
    }

    /// Adds `delta` to thread `me`'s count, as `hot::count_in_thread` does: a plain load and
    /// store, with no lock.
    fn count_in_thread(&self, me: usize, tag: u16, delta: ThreadCount) {
        assert_eq!(tag, TAG, "the count handed over another tag");
        if me == COUNTER {
            Reached::note(|reached| reached.counted_in_array += 1);
        }
        // SAFETY: only this thread writes its count while it is attached (which loom checks).
        self.counts[me].with_mut(|count| unsafe { (*count).add(delta) });
    }

    /// Takes a reference as thread `me` (attached), as `refs::incref` does.
    fn take(&self, me: usize, owner: Owner<'_>) {
        let count = self.count();
        let first_half = CountOnPath {
            path: deferred_path(me),
            count: |tag| self.count_in_thread(me, tag, TAKEN),
        };
        if !count.incref_owned(owner, first_half) {
            count.incref_unowned(|tag| self.count_in_thread(me, tag, TAKEN));
        }
    }

    /// Drops a reference thread `me` (attached) holds, as `refs::decref` does.
    fn drop_reference(&self, me: usize, owner: Owner<'_>) {
        let object = NonNull::from(self.count());
        let first_half = CountOnPath {
            path: deferred_path(me),
            count: |tag| self.count_in_thread(me, tag, DROPPED),
        };
        // SAFETY: the caller's reference, given up here; `release` frees exactly such objects.
        let last = match unsafe { BiasedCount::decref_owned(object, owner, first_half) } {
            Some(last) => last,
            None => {
                // SAFETY: as above.
                let last = unsafe {
                    BiasedCount::decref_unowned(object, release, |tag| {
                        self.count_in_thread(me, tag, DROPPED)
                    })
                };
                last == Some(true)
            }
        };
        if last {
            // SAFETY: that was the last reference.
            unsafe { release(object) };
        }
    }

    /// A checkpoint: parks thread `me` if a stop is wanted.
    fn checkpoint(&self, me: usize) {
        if self.world.stop_requested() {
            self.world.park(Some(&self.presences[me]));
        }
    }

    /// Runs `f` in a stopped world, as thread `me` (attached), parking while another stop runs.
    fn stopped<R>(&self, me: usize, f: impl FnOnce() -> R) -> R {
        super::stopped_as(&self.world, &self.presences, me, f)
    }

    /// Settles the deferred object, as `hot::settle` does: still counted since the last settle
    /// (or fresh) and alive, it stays deferred with its traffic cleared; otherwise its count
    /// counts again, the arrays folded in, and a dead object gets one reference (counted as
    /// `owner`, the calling thread), whose drop by the caller, once the world runs, frees it.
    /// Answers whether it did.
    ///
    /// # Safety
    /// The world is stopped.
    unsafe fn settle(&self, owner: Owner<'_>) -> bool {
        let mut registry = self.registry.lock().unwrap();
        if !registry.deferred {
            return false;
        }
        let mut sum = registry.exited;
        for me in [COUNTER, STOPPER] {
            if registry.running[me] {
                // SAFETY: a stopped world: no thread counts (which loom checks).
                sum.add(self.counts[me].with(|count| unsafe { *count }));
            }
        }
        let count = self.count();
        // SAFETY: deferred, not resumed since.
        let held = unsafe { count.deferred_total() } as isize;
        let fresh = std::mem::take(&mut registry.fresh);
        if held + sum.net != 0 && (sum.taken != 0 || fresh) {
            Reached::note(|reached| reached.kept_deferred += 1);
            registry.exited.taken = 0;
            for me in [COUNTER, STOPPER] {
                // SAFETY: as above.
                self.counts[me].with_mut(|count| unsafe { (*count).taken = 0 });
            }
            return false;
        }
        // SAFETY: deferred, exclusive (a stopped world), and `sum.net` is every thread's count.
        let alive = unsafe { count.resume_counting(sum.net as i64) };
        if alive && registry.running[COUNTER] {
            Reached::note(|reached| reached.resumed_while_held += 1);
        }
        registry.deferred = false;
        registry.exited = ThreadCount::default();
        for me in [COUNTER, STOPPER] {
            // SAFETY: as above.
            self.counts[me].with_mut(|count| unsafe { *count = ThreadCount::default() });
        }
        if !alive {
            count.incref_for(owner);
        }
        !alive
    }

    /// Stops the world as thread `me` (attached), settles, and frees what died once the world
    /// runs again, as a collection does.
    fn collect(&self, me: usize, owner: Owner<'_>) {
        // SAFETY: the world is stopped.
        if self.stopped(me, || unsafe { self.settle(owner) }) {
            self.drop_reference(me, owner);
        }
    }

    /// Thread `me`'s exit, detached: its count moves to the exited threads', under the lock.
    fn exit(&self, me: usize) {
        let mut registry = self.registry.lock().unwrap();
        // SAFETY: under the registry's lock, which every settle holds; the thread no longer
        // counts.
        let count = self.counts[me].with(|count| unsafe { *count });
        registry.exited.add(count);
        registry.running[me] = false;
    }

    /// After every thread has joined: collects, which must free the object (with no reference
    /// left, traffic does not keep it deferred).
    fn collect_until_freed(&self, owner: Owner<'_>) {
        self.world.enter(Some(&self.presences[STOPPER]));
        self.collect(STOPPER, owner);
        self.world.leave(Some(&self.presences[STOPPER]));
        assert_eq!(
            self.freed(),
            1,
            "every thread let go, and the object was not freed"
        );
    }
}

/// How a model's threads count: through counts of their own, as runtime threads do, or as
/// detached threads, every count atomic and nothing registered. (A model that fails with a
/// thread registered aborts the process: loom drops the registry's queues outside the model.)
#[derive(Clone, Copy)]
enum Owners {
    Registered,
    Detached,
}

impl Owners {
    /// Runs `f` with this thread's owner.
    fn with<R>(self, f: impl FnOnce(Owner<'_>) -> R) -> R {
        match self {
            Owners::Registered => {
                let counts = LocalCounts::register();
                f(counts.owner())
            }
            Owners::Detached => f(Owner::detached()),
        }
    }
}

/// A counting thread: attached, it takes a reference and drops it, then drops the one it was
/// handed, with a checkpoint between each; then it detaches and exits.
fn counting_thread(runtime: Arc<Runtime>, owners: Owners) {
    let me = COUNTER;
    owners.with(|owner| {
        runtime.world.enter(Some(&runtime.presences[me]));
        runtime.take(me, owner);
        runtime.checkpoint(me);
        runtime.drop_reference(me, owner);
        runtime.checkpoint(me);
        runtime.drop_reference(me, owner);
        runtime.world.leave(Some(&runtime.presences[me]));
    });
    runtime.exit(me);
}

/// Starts [`counting_thread`] on a thread of its own.
fn spawn_counting_thread(runtime: &Arc<Runtime>, owners: Owners) -> thread::JoinHandle<()> {
    let runtime = runtime.clone();
    thread::spawn(move || counting_thread(runtime, owners))
}

/// An object deferred before a second thread could reach it (as `Bound::defer_refcount` does)
/// is counted by that thread and by its owner while the owner collects. The settle sums the
/// counts the threads made before they parked: it keeps the object deferred, or hands it back
/// to its count while the other thread still holds a reference (which that thread then drops
/// on the shared side), never frees it while held, and the object is freed exactly once after
/// both let go.
#[test]
fn a_deferred_object_is_freed_once_after_every_thread_lets_go() {
    let reached = Reached::by(|| {
        let owner = LocalCounts::register();
        let runtime = Runtime::new(owner.owner());
        // SAFETY: no other thread can reach the object yet; the owner's reference is held.
        assert!(unsafe { runtime.defer() });
        // Deferred before the last collection: the next one hands it back to its count if the
        // other thread has not counted it yet, while that thread still holds its reference.
        runtime.registry.lock().unwrap().fresh = false;
        let counter = spawn_counting_thread(&runtime, Owners::Registered);
        runtime.world.enter(Some(&runtime.presences[STOPPER]));
        runtime.drop_reference(STOPPER, owner.owner());
        runtime.collect(STOPPER, owner.owner());
        runtime.world.leave(Some(&runtime.presences[STOPPER]));
        counter.join().unwrap();
        runtime.collect_until_freed(owner.owner());
        owner.merge_pending();
    });
    assert!(
        reached.kept_deferred > 0 && reached.resumed_while_held > 0 && reached.counted_in_array > 0,
        "a path of the protocol was never reached: {reached:?}"
    );
}

/// The owner defers its object in a stopped world while another thread counts it on the shared
/// side: the counts the thread makes after the stop go to its array (the tag reaches it through
/// the stop's restart, though the count stores it relaxed), those before it stay in the count,
/// and the sum frees the object exactly once, after both let go.
#[test]
fn a_deferral_in_a_stopped_world_reaches_every_later_count() {
    let reached = Reached::by(|| {
        let owner = LocalCounts::register();
        let runtime = Runtime::new(owner.owner());
        let counter = spawn_counting_thread(&runtime, Owners::Registered);
        runtime.world.enter(Some(&runtime.presences[STOPPER]));
        // SAFETY: the world is stopped; the owner's reference is held. (A count with a drop
        // queued to its owner is not deferred: the models go on either way.)
        runtime.stopped(STOPPER, || unsafe { runtime.defer() });
        runtime.drop_reference(STOPPER, owner.owner());
        runtime.world.leave(Some(&runtime.presences[STOPPER]));
        counter.join().unwrap();
        // What the counting thread queued to the owner, merged (a runtime's owner merges at
        // its checkpoints).
        owner.merge_pending();
        if runtime.freed() == 0 {
            runtime.collect_until_freed(owner.owner());
        }
        assert_eq!(runtime.freed(), 1);
    });
    assert!(
        reached.counted_in_array > 0,
        "no schedule counted in the array after the deferral: {reached:?}"
    );
}

/// The settle without its stopped world (the same counts, the collector's sum taken while the
/// other thread runs): loom finds the sum racing the thread's count, or the object freed under
/// it. This shows the models can fail.
#[test]
fn a_settle_outside_a_stopped_world_is_caught_by_the_model() {
    let outcome = std::panic::catch_unwind(|| {
        loom::model(|| {
            let owner = Owner::detached();
            let runtime = Runtime::new(owner);
            // SAFETY: no other thread can reach the object yet; the owner's reference is held.
            assert!(unsafe { runtime.defer() });
            let counter = spawn_counting_thread(&runtime, Owners::Detached);
            runtime.drop_reference(STOPPER, owner);
            // SAFETY: none: the world is not stopped, which the model must catch.
            if unsafe { runtime.settle(owner) } {
                runtime.drop_reference(STOPPER, owner);
            }
            counter.join().unwrap();
        });
    });
    let failure = outcome.expect_err("the model missed a settle racing a count");
    let message = super::panic_message(&*failure);
    assert!(
        message.contains("Causality violation"),
        "the model failed otherwise: {message}"
    );
}
