//! Garbage handed back to the threads that made it (`gc/delivery.rs`): an automatic collection
//! frees its own thread's share of the garbage and *delivers* each other owner's share, which
//! that owner frees at its next quiescent state; a share nobody claimed by the next collection
//! is freed by that collection. The shares sit in a list under a mutex; a relaxed flag, the
//! hint that the list may hold something, spares the owners' quiescent states and the
//! collections the lock when it is empty.
//!
//! The models run the real stop protocol (`ftrt_gil::world`) and the module's three steps as it
//! writes them (`deliver`, the owner's `free_delivered`, the collection's `take_unclaimed`), the
//! shares and the flag loom's. What they check, in every interleaving: every delivered object
//! is freed exactly once, and a share delivered before a collection's stop is gone when that
//! collection has taken what was unclaimed. That second promise rests on the stop: the flag is
//! relaxed, and only the stop orders the delivering thread's raising of it before the
//! collection's load.

use ftrt_gil::world::{Presence, World};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The threads of the model, by index into [`Runtime::presences`]: the one that delivers (the
/// first collection's), the owner of one share, and the second collection's.
const DELIVERER: usize = 0;
const OWNER: usize = 1;
const COLLECTOR: usize = 2;

/// Thread ids, as `Python::thread_id` gives them: the owner's, and one of a thread that exited
/// (its share is never claimed).
const OWNER_ID: u32 = 1;
const EXITED_ID: u32 = 9;

/// The objects, by index into [`Runtime::freed`]: the owner's, and the exited thread's.
const OWNERS_OBJECT: usize = 0;
const EXITED_THREADS_OBJECT: usize = 1;

/// How the owner's quiescent state clears the hint: as the module does, only when it took the
/// last share, or (the mutation that shows the models can fail) whenever it took its own.
#[derive(Clone, Copy, PartialEq)]
enum ClearHint {
    WhenEmpty,
    Always,
}

struct Share {
    owner: u32,
    objects: Vec<usize>,
}

std::thread_local! {
    /// What the model's schedules reached (see `ReachedKey`): the owner freeing its share, and
    /// the second collection taking, through the hint, the share the owner left beside its own
    /// (the owner took its share first, and the hint stayed up for the other).
    static REACHED: std::cell::Cell<Reached> = const { std::cell::Cell::new(Reached::NONE) };
}

#[derive(Clone, Copy, PartialEq, Debug)]
struct Reached {
    owner_freed_its_share: usize,
    collection_took_the_share_the_owner_left: usize,
}

impl Reached {
    const NONE: Reached = Reached {
        owner_freed_its_share: 0,
        collection_took_the_share_the_owner_left: 0,
    };

    fn note(change: impl FnOnce(&mut Reached)) {
        super::note_reached(&REACHED, change);
    }

    /// What the model run by `model` reached.
    fn by(model: impl Fn() + Sync + Send + 'static) -> Reached {
        super::reached_by(&REACHED, Reached::NONE, model)
    }
}

struct Runtime {
    world: World,
    presences: [Presence; 3],
    shares: Mutex<Vec<Share>>,
    /// Whether `shares` may hold something (`PENDING`).
    pending: AtomicBool,
    clear_hint: ClearHint,
    /// Whether the deliverer has delivered: written by it while attached, read by the second
    /// collection in its stopped world (loom checks that the stop orders the two).
    delivered: UnsafeCell<bool>,
    /// How many times each object was freed.
    freed: [AtomicUsize; 2],
}

impl Runtime {
    fn new(clear_hint: ClearHint) -> Arc<Self> {
        Arc::new(Runtime {
            world: World::new(),
            presences: [Presence::new(), Presence::new(), Presence::new()],
            shares: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            clear_hint,
            delivered: UnsafeCell::new(false),
            freed: [AtomicUsize::new(0), AtomicUsize::new(0)],
        })
    }

    fn free(&self, objects: &[usize]) {
        for &object in objects {
            let before = self.freed[object].fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "object {object} was freed twice");
        }
    }

    /// `delivery::deliver`: the share under the lock, then the hint.
    fn deliver(&self, owner: u32, objects: Vec<usize>) {
        self.shares.lock().unwrap().push(Share { owner, objects });
        self.pending.store(true, Ordering::Relaxed);
    }

    /// `delivery::take_unclaimed`: every share, if the hint says there may be one.
    fn take_unclaimed(&self) -> Vec<usize> {
        if !self.pending.load(Ordering::Relaxed) {
            return Vec::new();
        }
        let mut shares = self.shares.lock().unwrap();
        self.pending.store(false, Ordering::Relaxed);
        shares.drain(..).flat_map(|share| share.objects).collect()
    }

    /// `delivery::free_delivered`, the quiescent-state hook: frees the shares delivered to
    /// `me`, clearing the hint when it took the last share.
    fn free_delivered(&self, me: u32) {
        if !self.pending.load(Ordering::Relaxed) {
            return;
        }
        let mine = {
            let mut shares = self.shares.lock().unwrap();
            let mut mine = Vec::new();
            shares.retain_mut(|share| {
                if share.owner == me {
                    mine.append(&mut share.objects);
                    false
                } else {
                    true
                }
            });
            if shares.is_empty() || self.clear_hint == ClearHint::Always {
                self.pending.store(false, Ordering::Relaxed);
            }
            mine
        };
        if !mine.is_empty() {
            Reached::note(|reached| reached.owner_freed_its_share += 1);
        }
        self.free(&mine);
    }

    /// A checkpoint: parks thread `me` if a stop is wanted.
    fn checkpoint(&self, me: usize) {
        if self.world.stop_requested() {
            self.world.park(Some(&self.presences[me]));
        }
    }

    /// The second collection, as thread `me` (attached): stops the world (reading there whether
    /// the deliverer had delivered), and once it runs again frees what nobody claimed. A share
    /// delivered before the stop is then gone, whether its owner took it or this collection.
    fn collect(&self, me: usize) {
        let delivered_before = super::stopped_as(&self.world, &self.presences, me, || {
            // SAFETY: a stopped world: the deliverer, attached when it writes, is parked or
            // gone (which loom checks).
            self.delivered.with(|delivered| unsafe { *delivered })
        });
        let unclaimed = self.take_unclaimed();
        self.free(&unclaimed);
        if delivered_before {
            assert!(
                self.shares.lock().unwrap().is_empty(),
                "a share delivered before the collection's stop outlived the collection"
            );
            if unclaimed == [EXITED_THREADS_OBJECT] {
                Reached::note(|reached| reached.collection_took_the_share_the_owner_left += 1);
            }
        }
    }
}

/// The first collection's thread, after its stop: delivers the owner's share and the exited
/// thread's, then reaches a checkpoint and detaches. (Its own `take_unclaimed`, before it
/// delivers, finds nothing here: no collection delivered before it.)
fn delivering_thread(runtime: Arc<Runtime>) {
    let me = DELIVERER;
    runtime.world.enter(Some(&runtime.presences[me]));
    runtime.deliver(OWNER_ID, vec![OWNERS_OBJECT]);
    runtime.deliver(EXITED_ID, vec![EXITED_THREADS_OBJECT]);
    // SAFETY: attached: a stop's stopped world waits for this thread to park or leave.
    runtime
        .delivered
        .with_mut(|delivered| unsafe { *delivered = true });
    runtime.checkpoint(me);
    runtime.world.leave(Some(&runtime.presences[me]));
}

/// The owner: attached, it reaches a quiescent state, a checkpoint, and another quiescent state
/// (its detach's), then detaches.
fn owning_thread(runtime: Arc<Runtime>) {
    let me = OWNER;
    runtime.world.enter(Some(&runtime.presences[me]));
    runtime.free_delivered(OWNER_ID);
    runtime.checkpoint(me);
    runtime.free_delivered(OWNER_ID);
    runtime.world.leave(Some(&runtime.presences[me]));
}

/// What the model's last collection, after the threads joined, checks.
#[derive(Clone, Copy, PartialEq)]
enum LastCollection {
    /// That every object has been freed, exactly once.
    ChecksEveryObjectFreed,
    /// Nothing: it frees what is left. The failing model uses it, so that what fails it is the
    /// second collection's promise, which rests on the stop, and not a share left for ever.
    FreesWhatIsLeft,
}

/// The model: the deliverer and the owner run beside a second collection; after they join, a
/// third collection frees whatever is left. Every object is then freed exactly once.
fn deliveries_race_a_collection(clear_hint: ClearHint, last: LastCollection) {
    let runtime = Runtime::new(clear_hint);
    let deliverer = {
        let runtime = runtime.clone();
        thread::spawn(move || delivering_thread(runtime))
    };
    let owner = {
        let runtime = runtime.clone();
        thread::spawn(move || owning_thread(runtime))
    };
    runtime.world.enter(Some(&runtime.presences[COLLECTOR]));
    runtime.collect(COLLECTOR);
    runtime.world.leave(Some(&runtime.presences[COLLECTOR]));
    deliverer.join().unwrap();
    owner.join().unwrap();
    let unclaimed = runtime.take_unclaimed();
    runtime.free(&unclaimed);
    if last == LastCollection::FreesWhatIsLeft {
        return;
    }
    for (object, freed) in runtime.freed.iter().enumerate() {
        assert_eq!(
            freed.load(Ordering::SeqCst),
            1,
            "object {object} was never freed"
        );
    }
}

#[test]
fn a_delivered_share_is_freed_once_and_by_the_next_collection_at_the_latest() {
    let reached = Reached::by(|| {
        deliveries_race_a_collection(ClearHint::WhenEmpty, LastCollection::ChecksEveryObjectFreed);
    });
    assert!(
        reached.owner_freed_its_share > 0 && reached.collection_took_the_share_the_owner_left > 0,
        "a path of the protocol was never reached: {reached:?}"
    );
}

/// The owner clearing the hint while another thread's share still waits: the collection after
/// the delivery reads the hint down and leaves that share behind (for ever, the hint staying
/// down until the next delivery), which the model catches. This shows the model can fail.
#[test]
fn clearing_the_hint_with_a_share_left_is_caught_by_the_model() {
    let outcome = std::panic::catch_unwind(|| {
        loom::model(|| {
            deliveries_race_a_collection(ClearHint::Always, LastCollection::FreesWhatIsLeft);
        });
    });
    let failure = outcome.expect_err("the model missed a share left behind by a collection");
    let message = super::panic_message(&*failure);
    assert!(
        message.contains("outlived the collection"),
        "the model failed otherwise: {message}"
    );
}
