//! The cycle collector: frees groups of objects that only reference each other.
//!
//! Reference counting frees an object when its count reaches zero, which never happens to a
//! cycle (`a.append(a)`, two instances pointing at each other). Every object that may hold
//! references (lists, dicts, tuples, instances, modules) is *tracked*: it sits in a registry
//! (`registry`, an index in a head before the object's header), and its type's `traverse` slot
//! lists what it holds. A collection, in a stopped world
//! ([`ftrt_gil::stop_the_world`]: no other thread changes a count or a container meanwhile):
//!
//! 1. merges the calling thread's biased-count queue (stopped threads are parked: their
//!    queues are merged by whoever queues to them), so every count is exact (an object still
//!    queued to a thread outside the world that is not parked reads without the reference its
//!    queue entry carries: see `docs/gc.md`);
//! 2. gives each tracked object its count, then subtracts every reference a tracked object
//!    holds to it: what is left is the references from outside the tracked objects (handles
//!    on threads' stacks, `Shared`s, references retired for lock-free readers);
//! 3. marks everything reachable from an object with references from outside;
//! 4. takes a reference to each of the rest (so none is freed half-way) and lets the world
//!    run again; then clears them (their `clear` slot, through the normal write path) and
//!    drops the references taken, which frees them by counting. No other thread can reach
//!    them, so this half needs no stop; the pause is the first three steps and the references.
//!
//! Collections run on demand ([`collect`]) and automatically: when the tracked objects made
//! since the last collection, minus those freed, reach both [`THRESHOLD`] for each thread that
//! made objects in the interval before it (counted at each collection: a stop costs every
//! attached thread a park) and a
//! quarter of the objects the last collection left alive (CPython 3.13t's rule), the next
//! thread to reach a checkpoint collects (`ftrt_gil::CheckpointWork`); if the world
//! will not stop within 50 ms (a thread attached and blocked without a checkpoint), that
//! automatic collection is given up and tried again at the next threshold. In the biased
//! build an automatic collection hands other threads' garbage back to them (`delivery`).
//!
//! In the free-threaded builds most cycles never need a stop: no cycle mixes local and shared
//! objects, so each thread finds the cycles among its own local objects alone, in a *local
//! collection* at one of its quiescent states (`local`), and the stopped-world collections skip
//! those objects. `docs/gc.md` compares the design with CPython's.

mod delivery;
#[cfg(not(ftrt_gil_build))]
mod local;
mod registry;

use std::cell::Cell;
use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use ftrt_gil::world::StopFailed;
use ftrt_gil::{BuildCount, CheckpointWork, Python};
use ftrt_refcount::{RefCount, RefCountValue, Strategy};

use crate::borrowed::Borrowed;
#[cfg(not(ftrt_gil_build))]
use crate::header::set_gc_index;
use crate::header::{gc_index, header, listed_at, set_listed_at, Header, FOUND_GARBAGE};
use crate::refs::decref;

pub(crate) use registry::UNTRACKED;

/// Tracked objects made (net of those freed) before an automatic collection is considered, for
/// each thread that made some in the interval before the last collection.
pub const THRESHOLD: usize = 2000;

/// How long an automatic collection waits for the world to stop before giving up.
const AUTOMATIC_PATIENCE: Duration = Duration::from_millis(50);

/// Net tracked allocations a thread counts before adding them to the global count.
const LOCAL_BATCH: isize = 64;

/// What one collection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Collection {
    /// Tracked objects examined.
    pub tracked: usize,
    /// Unreachable objects found (and freed).
    pub unreachable: usize,
    /// How long the collection worked in the stopped world, from its first merge to the
    /// references taken to the garbage: neither the wait for the threads to park nor the
    /// restart is included (nor, for [`collect`], its local collection before the stop).
    pub pause: Duration,
}

/// Runs a collection now, stopping the world: returns what it found and freed. Waits for every
/// attached thread to reach a checkpoint (see [`ftrt_gil::stop_the_world`]).
///
/// It finds every unreachable cycle but those through a deferred object still hot, which stay
/// until it goes cold (see `docs/gc.md`, "Per-thread counts for hot objects"). In the
/// free-threaded builds it first runs the calling
/// thread's local collection, then examines every tracked object in the stopped world, other
/// live threads' local objects included: those found unreachable are published on their
/// threads' behalf, with the local objects they reach, and freed here (what shared garbage held
/// is retired through the epoch, as for any shared container: `ftrt_object::collect` settles
/// it). Automatic collections, and [`collect_shared`], leave live threads' local objects to
/// their threads' local collections (see `docs/gc.md`, "Local collections").
pub fn collect(py: Python<'_>) -> Collection {
    ftrt_gil::assert_attached();
    // The calling thread's local objects first: no stop needed (free-threaded builds).
    #[cfg(not(ftrt_gil_build))]
    let local = local::collect_local(py);
    #[allow(unused_mut)] // added to only in the free-threaded builds
    let mut collection = ftrt_gil::stop_the_world(py, || find_garbage(py, true)).free(py, false);
    #[cfg(not(ftrt_gil_build))]
    {
        // The stop examined the local collection's survivors again: count its garbage only.
        collection.tracked += local;
        collection.unreachable += local;
    }
    collection
}

/// Runs the stopped-world collection that automatic collections run, now: it examines every
/// tracked object except live threads' local objects (free-threaded builds), which their
/// threads' local collections find; under the GIL, the same as [`collect`]. Cheaper than
/// [`collect`] when threads hold many local objects.
pub fn collect_shared(py: Python<'_>) -> Collection {
    ftrt_gil::stop_the_world(py, || find_garbage(py, false)).free(py, false)
}

/// The pauses of every collection so far (on demand and automatic), in order: the first
/// 1,000,000, later ones not recorded until [`clear_pauses`].
pub fn pauses() -> Vec<Duration> {
    lock_pauses().clone()
}

/// Forgets the recorded pauses, stopped-world and local (a benchmark run starts from none).
pub fn clear_pauses() {
    lock_pauses().clear();
    lock_local_pauses().clear();
}

/// How many stopped-world collections have run (on demand and automatic).
pub fn collections() -> usize {
    COLLECTIONS.load(Ordering::Relaxed)
}

/// How many objects collections have found unreachable (and freed) so far, stopped-world and
/// local together, on demand and automatic: the sum of the `collected` entries of CPython's
/// `gc.get_stats()`. A program that makes cycles can check that they were freed by the
/// collector, not merely that nothing is left.
pub fn collected() -> usize {
    COLLECTED.load(Ordering::Relaxed)
}

/// How many automatic collections were given up because the world would not stop within
/// 50 ms (a thread attached and blocked without reaching a checkpoint). Each is tried again
/// after the next threshold's worth of objects (see the [module docs](self)).
pub fn collections_given_up() -> usize {
    GIVEN_UP.load(Ordering::Relaxed)
}

/// How many local collections have run, on every thread: a thread's search of its own local
/// objects, with no stop (free-threaded builds; zero under the GIL). See `docs/gc.md`.
pub fn local_collections() -> usize {
    #[cfg(not(ftrt_gil_build))]
    return local::local_collections();
    #[cfg(ftrt_gil_build)]
    0
}

/// How long each local collection took, on the thread that ran it (the other threads ran on),
/// in order: the first 1,000,000, later ones not recorded until [`clear_pauses`], which forgets
/// them too.
pub fn local_pauses() -> Vec<Duration> {
    lock_local_pauses().clone()
}

static LOCAL_PAUSES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn lock_local_pauses() -> std::sync::MutexGuard<'static, Vec<Duration>> {
    LOCAL_PAUSES.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg_attr(ftrt_gil_build, allow(dead_code))]
fn record_local_pause(took: Duration) {
    let mut pauses = lock_local_pauses();
    if pauses.len() < MAX_PAUSES {
        pauses.push(took);
    }
}

static PAUSES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
static COLLECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Objects found unreachable by every collection so far ([`collected`]).
static COLLECTED: AtomicUsize = AtomicUsize::new(0);
const MAX_PAUSES: usize = 1_000_000;

fn lock_pauses() -> std::sync::MutexGuard<'static, Vec<Duration>> {
    PAUSES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Tracked objects made since the last collection, net of those freed (flushed from each
/// thread's count in batches).
static YOUNG: AtomicIsize = AtomicIsize::new(0);
/// Automatic collections given up because the world would not stop in time.
static GIVEN_UP: AtomicUsize = AtomicUsize::new(0);
/// The young count at which an automatic collection given up is tried again: a threshold past
/// the count it was given up at (zero once a collection runs).
static RETRY_AT: AtomicIsize = AtomicIsize::new(0);
/// Tracked objects the last collection left alive.
static SURVIVORS: AtomicUsize = AtomicUsize::new(0);
/// Threads that added young objects since the last collection (each counted once, at its
/// first flush after it).
static MAKERS: AtomicUsize = AtomicUsize::new(0);
/// The threshold in force: [`THRESHOLD`] for each thread that made objects before the last
/// collection.
static YOUNG_THRESHOLD: AtomicUsize = AtomicUsize::new(THRESHOLD);

/// A thread's share of `YOUNG` not yet added to it, added when the thread exits.
struct LocalYoung(Cell<isize>);

impl Drop for LocalYoung {
    fn drop(&mut self) {
        add_young_at_exit(self.0.get());
    }
}

thread_local! {
    /// This thread's share of `YOUNG` not yet added to it. Counts made in thread-local
    /// destructors after its own go straight to `YOUNG` ([`count_young`]).
    static LOCAL_YOUNG: LocalYoung = const { LocalYoung(Cell::new(0)) };
    /// The collection count when this thread last counted itself in `MAKERS`, plus one (zero:
    /// never).
    static COUNTED_AS_MAKER: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread is freeing a collection's garbage (`free_garbage`).
    static FREEING_GARBAGE: Cell<bool> = const { Cell::new(false) };
}

#[cfg(test)]
thread_local! {
    /// Tests only: the address of an object whose `clear` slot panics when `free_garbage`
    /// reaches it on this thread (0: none).
    static CLEAR_PANICS_AT: Cell<usize> = const { Cell::new(0) };
}

/// Tests only: runs `collect` with the `clear` slot of the object at `address` made to panic
/// when this thread frees it as garbage; returns whether `collect` panicked.
#[cfg(test)]
pub(crate) fn panics_with_a_clear_that_panics_at(address: usize, collect: impl FnOnce()) -> bool {
    CLEAR_PANICS_AT.set(address);
    let collected = std::panic::catch_unwind(std::panic::AssertUnwindSafe(collect));
    CLEAR_PANICS_AT.set(0);
    collected.is_err()
}

#[cfg(all(test, not(ftrt_gil_build)))]
thread_local! {
    /// Tests only: runs on a collecting thread once its stopped-world collection has released
    /// the registry of lists, so that a test can put another thread's exit there.
    static AFTER_LISTS_RELEASED: Cell<Option<Box<dyn FnOnce()>>> = const { Cell::new(None) };
}

/// Tracks a newly allocated object: returns its registry index. A local object is listed for
/// its thread's local collections instead (free-threaded builds, `local`), and counts towards
/// those: it takes no registry slot ([`UNTRACKED`]) until it leaves the list for the
/// stopped-world collections (published, or its thread's exit) or a full collection examines
/// it. Most objects die local, so most never touch the registry.
///
/// # Safety
/// `object` was just allocated on this thread, which is attached, is alive, of a type that
/// holds references (it carries the collector's head), and is untracked ([`untrack`]) before
/// it is freed: the collections read every tracked object.
#[inline]
pub(crate) unsafe fn track(object: NonNull<Header>) -> u32 {
    // SAFETY: the caller's contract, which `list_new` shares.
    #[cfg(not(ftrt_gil_build))]
    if unsafe { local::list_new(object) } {
        return UNTRACKED;
    }
    count_young(1);
    // SAFETY: the caller's contract.
    unsafe { registry::track(object) }
}

/// Gives `object` a registry slot if it has none (a published object leaving its list).
///
/// # Safety
/// `object` is alive and of a type that holds references; the caller is its thread.
#[cfg(not(ftrt_gil_build))]
unsafe fn give_index(object: NonNull<Header>) {
    // SAFETY: per the caller.
    if unsafe { gc_index(object) } == UNTRACKED {
        // SAFETY: per the caller; untracked before it is freed (`untrack` reads its index).
        unsafe { set_gc_index(object, registry::track(object)) };
    }
}

/// Gives each of `objects` that has no registry slot one, all at once: a thread's exit
/// unlisting its objects, or a full collection examining every listed object. Both hold the
/// live lists' lock, which a stop waits for, so the registry's locks are taken twice in all,
/// not once for each object.
///
/// # Safety
/// Every object is alive and of a type that holds references; the caller is their thread, or
/// the world is stopped; and the caller holds the live lists' lock (see [`registry::track`]).
#[cfg(not(ftrt_gil_build))]
unsafe fn give_indexes(objects: &[NonNull<Header>]) {
    let without: Vec<NonNull<Header>> = objects
        .iter()
        .copied()
        // SAFETY: per the caller.
        .filter(|&object| unsafe { gc_index(object) } == UNTRACKED)
        .collect();
    let tracked = |object, index| {
        // SAFETY: per the caller.
        unsafe { set_gc_index(object, index) }
    };
    // SAFETY: per the caller; each is untracked before it is freed (`untrack` reads the index
    // set here).
    unsafe { registry::track_all(&without, tracked) };
}

/// Stops tracking an object being freed. Garbage a stopped-world collection found does not
/// count, whenever and wherever it dies (its place reads `FOUND_GARBAGE`): the collection reset
/// the count when it found it, its owners may free it much later, and what shared garbage held
/// may die only when the epoch drops the references its clearing retired (at once when the
/// collecting thread holds the world alone). (Counted then, those
/// late frees ran the young count below zero, and the gaps between automatic collections grew
/// with every collection that found shared garbage.)
///
/// # Safety
/// `object` is alive, of a type that holds references, and being freed on the calling thread.
#[inline]
pub(crate) unsafe fn untrack(object: NonNull<Header>) {
    // SAFETY: per the caller.
    let index = unsafe { gc_index(object) };
    // SAFETY: per the caller (a listed object is freed only on its own thread).
    #[cfg(not(ftrt_gil_build))]
    if unsafe { local::unlist(object, true) } {
        // Counted down in its thread's list; a slot only if a full collection gave it one.
        if index != UNTRACKED {
            // SAFETY: its own index, and it is being freed (the caller's contract).
            unsafe { registry::untrack(index) };
        }
        return;
    }
    if index == UNTRACKED {
        // Never tracked: an immortal object.
        return;
    }
    // SAFETY: per the caller.
    let found_garbage = unsafe { listed_at(object) } == FOUND_GARBAGE;
    if !found_garbage && !FREEING_GARBAGE.get() {
        count_young(-1);
    }
    // SAFETY: its own index, and it is being freed (the caller's contract).
    unsafe { registry::untrack(index) };
}

/// `object` was just published (made shared) on its thread: it leaves the thread's local
/// objects for the stopped-world collections, and counts as young there.
///
/// # Safety
/// `object` is alive and of a type that holds references, and the caller is its thread.
#[inline]
pub(crate) unsafe fn on_published(object: NonNull<Header>) {
    // SAFETY: per the caller.
    #[cfg(not(ftrt_gil_build))]
    if unsafe { local::unlist(object, false) } {
        count_young(1);
        // SAFETY: per the caller.
        unsafe { give_index(object) };
    }
    #[cfg(ftrt_gil_build)]
    let _ = object;
}

/// Ends the calling thread's list of local objects (its exit): they join the objects the
/// stopped-world collections examine. Must run before the thread's retired references can be
/// dropped on another thread.
#[cfg(not(ftrt_gil_build))]
pub(crate) fn retire_local_objects() {
    local::retire_thread();
}

/// Whether the stopped-world collections skip `object`: it is listed for its thread's local
/// collections.
///
/// # Safety
/// `object` is alive and of a type that holds references.
unsafe fn is_listed(object: NonNull<Header>) -> bool {
    // SAFETY: per the caller.
    unsafe { listed_at(object) < FOUND_GARBAGE }
}

/// Adds to the young count; past the threshold, asks for a collection.
#[inline]
pub(crate) fn count_young(delta: isize) {
    let flush = LOCAL_YOUNG.try_with(|local| {
        let value = local.0.get() + delta;
        if value.abs() >= LOCAL_BATCH {
            local.0.set(0);
            Some(value)
        } else {
            local.0.set(value);
            None
        }
    });
    match flush {
        Ok(None) => {}
        Ok(Some(value)) => flush_young(value),
        // The thread is exiting, and its batch has been handed over.
        Err(_) => add_young_at_exit(delta),
    }
}

/// What an exiting thread counted and had not added yet: added now, however little (a thread
/// per task may make fewer than a batch each). The thread stops counting as one that makes
/// objects: it will not park for the next stop.
#[cold]
fn add_young_at_exit(value: isize) {
    YOUNG.fetch_add(value, Ordering::Relaxed);
    let collections = COLLECTIONS.load(Ordering::Relaxed) + 1;
    if COUNTED_AS_MAKER.replace(0) == collections {
        // Saturating: a collection may have just reset the count (the thread then counts one
        // less towards the next threshold; the count is a heuristic).
        let _ = MAKERS.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |makers| {
            makers.checked_sub(1)
        });
    }
    if value > 0 && collection_due() {
        want_checkpoint_work();
    }
}

/// Adds to the young count at once, past the thread's batch: for an exit's unlisted objects,
/// counted while it holds the lists' lock, and for deferrals. Past the threshold, asks for a
/// collection.
pub(crate) fn add_young_now(delta: isize) {
    YOUNG.fetch_add(delta, Ordering::Relaxed);
    if delta > 0 && collection_due() {
        want_checkpoint_work();
    }
}

/// Counts a deferral of a hot object (or a request refused because the table is full) towards
/// the next collection, as `1 / DEFERRALS_PER_COLLECTION` of the threshold's young objects:
/// only collections free deferred objects that die and return their ids, and a program that
/// makes no containers would otherwise never have one. Past the threshold, asks for one.
///
/// A deferral a collection makes in its own stop (a request still pending when the world
/// stopped: one waits only for its thread's next checkpoint) is counted and then reset with the
/// rest of the young count, so it does not count towards the next collection. Rare, and a
/// heuristic's error only: the object is settled by a later collection all the same.
pub(crate) fn count_deferral() {
    // Rounded up, so that at most 64 deferrals after a collection (the young count starting at
    // zero) make the next one due: the 63rd at the default threshold of 2,000 (32 each).
    let per_collection = crate::hot::DEFERRALS_PER_COLLECTION as isize;
    add_young_now((due_after() + per_collection - 1) / per_collection);
}

#[cold]
fn flush_young(value: isize) {
    YOUNG.fetch_add(value, Ordering::Relaxed);
    if value <= 0 {
        return;
    }
    let collections = COLLECTIONS.load(Ordering::Relaxed) + 1;
    if COUNTED_AS_MAKER.replace(collections) != collections {
        MAKERS.fetch_add(1, Ordering::Relaxed);
    }
    if collection_due() {
        want_checkpoint_work();
    }
}

/// Asks the next thread at a checkpoint to run the object model's checkpoint work: the
/// deferrals of hot objects threads asked for, then a collection if one is due.
pub(crate) fn want_checkpoint_work() {
    if let Some(work) = registered_checkpoint_work() {
        work.request();
    }
}

/// The object model's checkpoint work, registered on first need. `None` if the runtime's table
/// was full (other crates registered [`ftrt_gil::MAX_CHECKPOINT_WORKS`] works first): then
/// collections are explicit only, and no thread asks for hot objects to be deferred.
pub(crate) fn registered_checkpoint_work() -> Option<CheckpointWork> {
    static WORK: OnceLock<Option<CheckpointWork>> = OnceLock::new();
    *WORK.get_or_init(|| CheckpointWork::register(checkpoint_work))
}

fn checkpoint_work(py: Python<'_>) {
    crate::hot::defer_requested(py);
    collect_automatically(py);
}

/// Whether the young objects have passed the threshold (see the module docs).
fn collection_due() -> bool {
    let young = YOUNG.load(Ordering::Relaxed);
    young >= due_after() && young >= RETRY_AT.load(Ordering::Relaxed)
}

/// How many young objects make a collection due: the threshold, or a quarter of the last
/// collection's survivors if more.
fn due_after() -> isize {
    let survivors = SURVIVORS.load(Ordering::Relaxed);
    let threshold = YOUNG_THRESHOLD.load(Ordering::Relaxed);
    threshold.max(survivors / 4) as isize
}

/// The checkpoint work: an automatic collection, unless the world will not stop in time.
fn collect_automatically(py: Python<'_>) {
    // Other threads may have asked again (their counts passed the threshold) while a
    // collection ran: one is enough.
    if !collection_due() {
        return;
    }
    let work = || find_garbage(py, false);
    let collections = COLLECTIONS.load(Ordering::Relaxed);
    match ftrt_gil::try_stop_the_world(py, Some(AUTOMATIC_PATIENCE), work).map_err(|not| not.why) {
        Ok(garbage) => {
            garbage.free(py, true);
        }
        Err(StopFailed::TimedOut) => {
            // Tried again a threshold later, not at the next count past it: each try costs
            // the thread the patience, and the blocked thread may stay blocked a long time.
            // Unless another thread's collection ran meanwhile: its fresh count stands.
            if COLLECTIONS.load(Ordering::Relaxed) == collections {
                let young = YOUNG.load(Ordering::Relaxed);
                RETRY_AT.store(young + due_after(), Ordering::Relaxed);
            }
            GIVEN_UP.fetch_add(1, Ordering::Relaxed);
        }
        // Another thread's stop ran meanwhile (this thread parked for it): a collection, or
        // the next count past the threshold asks again.
        Err(StopFailed::Busy) => {}
    }
}

/// What a collection knows of one tracked object.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// No tracked object at this index.
    Absent,
    /// Not yet known to be reachable; the count is its references from outside so far.
    Candidate,
    /// Reachable from outside the tracked objects.
    Reachable,
}

/// What a collection found in the stopped world: the unreachable objects, each with a
/// reference the collection holds, so that none is freed before [`Garbage::free`] clears them.
struct Garbage {
    unreachable: Vec<NonNull<Header>>,
    /// Deferred objects the collection found with no reference left (`hot::settle`).
    dead: crate::hot::Dead,
    tracked: usize,
    pause: Duration,
}

/// The stopped half of a collection: finds the unreachable objects and takes a reference to
/// each. Freeing them waits until the world runs again (CPython 3.13t does the same): no other
/// thread can reach them, so clearing them needs no stop, and the other threads do their own
/// work meanwhile instead of waiting for it.
///
/// `full` (an explicit [`collect`]): other live threads' local objects are examined too, and
/// those found unreachable are published, with the local objects they reach, so that they can
/// be freed on this thread (free-threaded builds). Otherwise (automatic collections) listed
/// objects are left to their threads' local collections.
fn find_garbage(py: Python<'_>, full: bool) -> Garbage {
    let started = Instant::now();
    py.merge_pending();
    #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
    // SAFETY: used in this call only, which stays attached throughout.
    let token = unsafe { py.count_token() };
    // The pending requests of threads that found objects hot, before any count is read: a
    // request's reference would read as one from outside. The objects they defer stay deferred
    // through the settling below (they are fresh).
    // SAFETY: the world is stopped.
    unsafe { crate::hot::defer_requested_stopped(token) };
    // Deferred objects the threads let go of count in their headers again, before any count is
    // read; the rest read as immortal below, so they and what they hold survive.
    // SAFETY: the world is stopped.
    let dead = unsafe { crate::hot::settle(token) };
    // No thread's exit half-way through unlisting its objects (and giving them registry slots)
    // while this reads the registry and the lists, or unlists some of them.
    #[cfg(not(ftrt_gil_build))]
    let lists = local::lock_lists();
    // A full collection examines the listed objects too: those without a slot take one (and
    // keep it, listed or not, until they are freed).
    #[cfg(not(ftrt_gil_build))]
    if full {
        // SAFETY: the world is stopped and `lists` is held; listed objects are alive and of
        // tracked types.
        unsafe { give_indexes(&lists.listed()) };
    }
    let high = registry::high() as usize;
    let mut marks = vec![Mark::Absent; high];
    let mut outside = vec![0isize; high];
    let mut tracked = Vec::new();
    registry::for_each(|index, object| {
        // SAFETY: tracked objects are alive (untracked before they are freed) and of types that
        // hold references; the world is stopped.
        if !full && unsafe { is_listed(object) } {
            // Local to a live thread, which collects it itself: no unlisted object holds it,
            // and what it holds counts as referenced from outside (kept, for now).
            return;
        }
        let index = index as usize;
        tracked.push((index, object));
        // SAFETY: tracked objects are alive (untracked before they are freed), and the world
        // is stopped.
        let count = <BuildCount as RefCount>::get(&unsafe { header(object) }.count, token);
        match count {
            RefCountValue::Mortal(count) => {
                marks[index] = Mark::Candidate;
                outside[index] = count as isize;
            }
            RefCountValue::Immortal => marks[index] = Mark::Reachable,
        }
    });
    // SAFETY: tracked objects are alive, and the world is stopped, so what they hold does not
    // change.
    let unreachable =
        unsafe { unreachable_among(&tracked, &mut marks, &mut outside, tracked_index) };
    // The references that keep the garbage alive while it is freed, taken before any of it is
    // cleared: the shares are freed on different threads, in any order, and clearing one
    // object drops what it holds, which may sit in another thread's share.
    // Taken on the count directly, not through `refs::incref`, which would note an increment on
    // the shared side as traffic: one more in a row at that address could ask for the garbage to
    // be deferred, and the request's reference would keep it alive past this collection. (No
    // garbage is deferred: a deferred count reads as immortal above.)
    for &object in &unreachable {
        // SAFETY: alive: tracked, and nothing frees it in a stopped world.
        <BuildCount as RefCount>::incref(&unsafe { header(object) }.count, token);
    }
    // Another thread's local garbage is freed here, or wherever its shares go: published
    // first, with every local object it reaches (reachable ones included, which its clearing
    // releases), so that none of them is listed, or local, when another thread drops it.
    // Published survivors join the objects stopped-world collections examine: they count as
    // young there, as any object does when its thread publishes it.
    #[allow(unused_mut)] // added to only in the free-threaded builds
    let mut published_survivors = 0;
    #[cfg(not(ftrt_gil_build))]
    if full {
        let listed_garbage = unreachable
            .iter()
            // SAFETY: alive (tracked); the world is stopped.
            .filter(|&&object| unsafe { is_listed(object) })
            .count();
        let mut published = 0;
        for &object in &unreachable {
            // SAFETY: alive (tracked); the world is stopped.
            if unsafe { is_listed(object) } {
                // SAFETY: as above.
                let head = unsafe { header(object) };
                let on_published = |newly_shared| {
                    // Only a listed object joins those the stopped-world collections
                    // examine: an unlisted one was among them already.
                    // SAFETY: the world is stopped and `lists` is held; `newly_shared` is alive
                    // (reached from the garbage) and of a type that holds references.
                    if unsafe { lists.unlist(newly_shared) } {
                        published += 1;
                    }
                };
                // SAFETY: the world is stopped: the other threads wait at checkpoints or are
                // detached (a section's body never detaches; a section's wait for its lock may
                // let the stop through, holding none of the section's locks, before the body
                // runs), and this one collects outside any section (a section's body does not
                // collect: `Header::section`'s contract): none is in a section of these objects.
                unsafe { crate::header::publish_with(head, on_published) };
            }
        }
        published_survivors = published - listed_garbage;
    }
    // Freeing the garbage does not count down the young count, whenever and wherever it dies.
    for &object in &unreachable {
        // SAFETY: alive (tracked), in no list now; the world is stopped.
        unsafe { set_listed_at(object, FOUND_GARBAGE) };
    }
    // The survivors that set the automatic threshold: those the automatic collections examine
    // (a full collection's listed survivors are their threads' to collect).
    let survivors = tracked
        .iter()
        .filter(|&&(index, object)| {
            // SAFETY: alive (tracked); the world is stopped.
            marks[index] == Mark::Reachable && !unsafe { is_listed(object) }
        })
        .count();
    SURVIVORS.store(survivors, Ordering::Relaxed);
    // A stop costs every attached thread a park: the threshold grows with the threads making
    // objects, so that collections take the same share of each thread's time at any count.
    let makers = MAKERS.swap(0, Ordering::Relaxed).max(1);
    YOUNG_THRESHOLD.store(THRESHOLD * makers, Ordering::Relaxed);
    // What the threads count towards the next collection starts from here (freeing the
    // garbage is not counted: see `untrack`).
    YOUNG.store(published_survivors as isize, Ordering::Relaxed);
    RETRY_AT.store(0, Ordering::Relaxed);
    // Only now may an exit unlist its thread's objects: it counts them as young, and the
    // collection did not examine them (`lists` kept them listed), so its count must come after
    // the reset, not be overwritten by it.
    #[cfg(not(ftrt_gil_build))]
    drop(lists);
    #[cfg(all(test, not(ftrt_gil_build)))]
    if let Some(hook) = AFTER_LISTS_RELEASED.take() {
        hook();
    }
    let pause = started.elapsed();
    COLLECTIONS.fetch_add(1, Ordering::Relaxed);
    count_collected(unreachable.len());
    let mut pauses = lock_pauses();
    if pauses.len() < MAX_PAUSES {
        pauses.push(pause);
    }
    Garbage {
        unreachable,
        dead,
        tracked: tracked.len(),
        pause,
    }
}

impl Garbage {
    /// Frees the garbage, with the world running, and what earlier collections delivered that
    /// no thread claimed. With `deliver` (automatic collections in the biased build), the
    /// objects other threads own go to their owners instead (`delivery`).
    fn free(self, py: Python<'_>, deliver: bool) -> Collection {
        let collection = Collection {
            tracked: self.tracked,
            unreachable: self.unreachable.len(),
            pause: self.pause,
        };
        let mut now = delivery::take_unclaimed();
        match py.thread_id() {
            Some(me) if deliver && ftrt_gil::BUILD_STRATEGY == Strategy::Biased => {
                let mut theirs: HashMap<u32, Vec<NonNull<Header>>> = HashMap::new();
                for object in self.unreachable {
                    // SAFETY: alive (the collection's reference). A snapshot: the owner only
                    // decides who frees it.
                    match unsafe { header(object) }.count.owner_id() {
                        Some(owner) if owner != me => theirs.entry(owner).or_default().push(object),
                        _ => now.push(object),
                    }
                }
                for (owner, objects) in theirs {
                    // SAFETY: unreachable garbage, each with the collection's reference, which
                    // goes with it.
                    unsafe { delivery::deliver(owner, objects) };
                }
            }
            _ => now.extend(self.unreachable),
        }
        // The dead deferred objects are freed even if freeing the garbage panicked. Then the
        // settling's refusal goes on to the caller if there was one (it came first; this
        // panic is dropped), else this panic.
        let freed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: unreachable garbage, each with the collection's reference, given up
            // here. None is listed by another thread: automatic collections skip listed
            // objects, and a full one unlisted (published) the listed garbage it found.
            unsafe { free_garbage(py, &now, true) };
        }));
        #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
        // SAFETY: used in this call only, which stays attached throughout.
        let token = unsafe { py.count_token() };
        self.dead.free(token);
        if let Err(panic) = freed {
            std::panic::resume_unwind(panic);
        }
        collection
    }
}

/// Frees every share of garbage automatic collections delivered that no thread has taken yet,
/// as the next collection would: those of threads away (detached, or registered and not
/// attached) or gone, which might otherwise wait long, and those that attached owners would
/// take at their next quiescent state (`ftrt_object::collect` runs this).
pub(crate) fn free_unclaimed(py: Python<'_>) {
    let unclaimed = delivery::take_unclaimed();
    // SAFETY: delivered garbage, each object with the collection's reference, given up here
    // (`delivery::deliver`'s contract); delivered garbage is never listed (automatic
    // collections skip listed objects).
    unsafe { free_garbage(py, &unclaimed, true) };
}

/// Adds to [`collected`].
fn count_collected(found: usize) {
    COLLECTED.fetch_add(found, Ordering::Relaxed);
}

/// Frees unreachable objects, each holding a reference the collection took: clears each
/// container (none is freed while others still point at it, in this share or another
/// thread's), then drops the references, which frees them by counting.
///
/// `found_in_a_stop`: the garbage of a stopped-world collection, which reset the young count
/// when it found it, so what freeing it frees does not count down. A local collection's garbage
/// counts as it is freed.
///
/// A panic in a slot or a release does not stop the rest from being cleared and freed; the
/// first one resumes once they are.
///
/// # Safety
/// Each object is unreachable garbage: alive, reachable only from other garbage, holding a
/// reference the collection took, which this gives up. A listed object (`local`) is freed on
/// its own thread only (`untrack` unlists it there).
unsafe fn free_garbage(py: Python<'_>, objects: &[NonNull<Header>], found_in_a_stop: bool) {
    #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
    // SAFETY: used in this call only, which stays attached throughout.
    let token = unsafe { py.count_token() };
    // Every tracked object this frees is garbage: whatever only garbage reaches is garbage too.
    // Restored on the way out, a panicking `clear` slot included.
    struct Freeing(bool);
    impl Drop for Freeing {
        fn drop(&mut self) {
            FREEING_GARBAGE.set(self.0);
        }
    }
    let _freeing = Freeing(FREEING_GARBAGE.replace(found_in_a_stop));
    // A panic (a bug: no slot of this object model panics) does not end the loops: unwound,
    // they would leave the rest of the garbage uncleared and every collection's reference
    // held, for ever. An object whose clearing panicked may keep itself alive through its own
    // cycle; the next collection finds it again.
    let cleared = crate::unwind::each_past_panics(objects, |&object| {
        #[cfg(test)]
        if CLEAR_PANICS_AT.get() == object.as_ptr() as usize {
            panic!("a clear slot panics (a test's hook)");
        }
        // SAFETY: alive (the collection's reference); unreachable from any other thread, so
        // clearing it races with nothing; its own type's slot.
        unsafe { (header(object).ty.slots.clear)(object, py) };
    });
    let released = crate::unwind::each_past_panics(objects, |&object| {
        // SAFETY: the collection's reference.
        unsafe { decref(object, token) };
    });
    crate::unwind::resume_first([cleared, released]);
}

/// The middle of every collection, stopped-world or local: takes off each object's outside
/// count the references the `examined` objects hold to each other, marks everything reachable
/// from an object with references left from outside (or already `Reachable`), and returns the
/// rest. `examined` pairs each object with its index into `marks` and `outside` (which hold
/// `Candidate` and its count, or `Reachable`); `index_of` gives a held object's index, if it
/// has one (an index whose mark is neither is left alone).
///
/// # Safety
/// Every examined object is alive, and nothing changes what any of them holds during the call.
unsafe fn unreachable_among(
    examined: &[(usize, NonNull<Header>)],
    marks: &mut [Mark],
    outside: &mut [isize],
    index_of: impl Fn(NonNull<Header>) -> Option<usize>,
) -> Vec<NonNull<Header>> {
    // References held by examined objects are not from outside.
    for &(_, object) in examined {
        // SAFETY: per the caller.
        unsafe {
            traverse(object, |held| {
                if let Some(index) = index_of(held) {
                    outside[index] -= 1;
                }
            })
        };
    }
    // Everything reachable from an object referenced from outside is alive.
    let mut stack: Vec<NonNull<Header>> = Vec::new();
    for &(index, object) in examined {
        if marks[index] == Mark::Candidate && outside[index] > 0 {
            marks[index] = Mark::Reachable;
            stack.push(object);
        } else if marks[index] == Mark::Reachable {
            stack.push(object);
        }
    }
    while let Some(object) = stack.pop() {
        // SAFETY: per the caller (reachable objects are examined ones).
        unsafe {
            traverse(object, |held| {
                if let Some(index) = index_of(held) {
                    if marks[index] == Mark::Candidate {
                        marks[index] = Mark::Reachable;
                        stack.push(held);
                    }
                }
            })
        };
    }
    examined
        .iter()
        .filter(|&&(index, _)| marks[index] == Mark::Candidate)
        .inspect(|&&(index, _)| {
            debug_assert_eq!(
                outside[index], 0,
                "an unreachable object has references from outside (a count was not exact)"
            )
        })
        .map(|&(_, object)| object)
        .collect()
}

/// The registry index of `object` if it is tracked.
fn tracked_index(object: NonNull<Header>) -> Option<usize> {
    // SAFETY: held by a live tracked object, so alive.
    let holds_references = unsafe { header(object) }.ty.slots.holds_references;
    if !holds_references {
        return None;
    }
    // SAFETY: alive, and of a type that holds references.
    let index = unsafe { gc_index(object) };
    (index != UNTRACKED).then_some(index as usize)
}

/// Calls `visit` with every object `object` holds.
///
/// # Safety
/// `object` is alive and nothing changes what it holds during the call.
unsafe fn traverse(object: NonNull<Header>, mut visit: impl FnMut(NonNull<Header>)) {
    let mut visit = |held: Borrowed<'_>| visit(held.ptr());
    // SAFETY: per the caller; its own type's slot.
    unsafe { (header(object).ty.slots.traverse)(object, &mut visit) };
}

#[cfg(test)]
mod free_tests;
#[cfg(all(test, not(ftrt_gil_build)))]
mod tests {
    use super::*;
    use crate::header::publish;
    use crate::PyList;

    /// Most containers die local, so tracking one costs a push on its thread's list and no
    /// registry slot; the slot comes when the stopped-world collections need it.
    #[test]
    fn a_local_container_takes_a_registry_slot_only_when_it_is_published() {
        Python::attach(|py| {
            let list = PyList::empty(py);
            let object = list.ptr();
            // SAFETY: alive (held), a list (holds references), on its own thread.
            let (index, place) = unsafe { (gc_index(object), listed_at(object)) };
            assert_eq!(index, UNTRACKED, "a local list takes no registry slot");
            assert!(place < FOUND_GARBAGE, "a local list is listed");
            publish(list.header());
            // SAFETY: as above.
            let (index, place) = unsafe { (gc_index(object), listed_at(object)) };
            assert_ne!(index, UNTRACKED, "a published list has a registry slot");
            assert_eq!(
                place,
                crate::header::NOT_LISTED,
                "a published list is unlisted"
            );
            let mut found = false;
            registry::for_each(|at, tracked| found |= at == index && tracked == object);
            assert!(found, "the registry holds the published list at its index");
        });
    }

    /// A thread that exits as a stopped-world collection finishes, after the collection has
    /// read the lists: the local objects its exit unlists were not examined, and count as young
    /// towards the next collection. (The collection reset the young count after it released
    /// the lists, and overwrote what an exit in between had added: the next automatic
    /// collection came a threshold late.)
    #[test]
    fn a_thread_that_exits_as_a_collection_ends_still_counts_its_objects_as_young() {
        const MADE: usize = if cfg!(miri) { 40 } else { THRESHOLD / 2 };
        let _one = crate::one_stopping_test_at_a_time();
        let (exit, exit_wanted) = std::sync::mpsc::channel::<()>();
        let (made, made_all) = std::sync::mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            Python::attach(|py| {
                for _ in 0..MADE {
                    let list = PyList::empty(py);
                    list.append(list.clone());
                }
            });
            made.send(()).unwrap();
            // Detached: the stop does not wait for this thread, and its exit runs inside it.
            exit_wanted.recv().unwrap();
        });
        made_all.recv().unwrap();
        AFTER_LISTS_RELEASED.set(Some(Box::new(move || {
            exit.send(()).unwrap();
            maker.join().unwrap();
        })));
        Python::attach(|py| {
            // Leaves the maker's listed cycles alone (an explicit `collect` would free them).
            collect_shared(py);
            let young = YOUNG.load(Ordering::Relaxed);
            assert!(
                young >= MADE as isize / 2,
                "the young count after the collection is {young}; the exit unlisted {MADE}"
            );
            // The cycles the exit left go.
            collect(py);
        });
    }

    /// A thread's exit unlists its objects just before a stopped-world collection examines
    /// them: after the collection they are no longer young, since it saw them and reset the
    /// count. (The exit added its count after it released the lists, on top of the reset: the
    /// next automatic collection came up to a thread's list early.)
    #[test]
    fn objects_an_exit_unlisted_before_a_collection_are_not_young_after_it() {
        const MADE: usize = if cfg!(miri) { 40 } else { THRESHOLD / 2 };
        let _one = crate::one_stopping_test_at_a_time();
        let (unlisted, exit_unlisted) = std::sync::mpsc::channel::<isize>();
        let (collected, collection_done) = std::sync::mpsc::channel::<()>();
        let maker = std::thread::spawn(move || {
            Python::attach(|py| {
                for _ in 0..MADE {
                    let list = PyList::empty(py);
                    list.append(list.clone());
                }
            });
            let before = YOUNG.load(Ordering::Relaxed);
            local::AFTER_EXIT_UNLISTED.set(Some(Box::new(move || {
                // The lists' lock is let go by now: the count must be in already.
                let counted = YOUNG.load(Ordering::Relaxed) - before;
                unlisted.send(counted).unwrap();
                collection_done.recv().unwrap();
            })));
            // What the thread's exit does first, run here while it is detached (a stop does
            // not wait for it).
            local::retire_thread();
        });
        let counted = exit_unlisted
            .recv_timeout(Duration::from_secs(60))
            .expect("the exit unlisted its objects");
        assert!(
            counted >= MADE as isize / 2,
            "the exit had counted {counted} of its {MADE} objects when it let the lists go"
        );
        let after_collection = Python::attach(|py| {
            collect_shared(py);
            YOUNG.load(Ordering::Relaxed)
        });
        collected.send(()).unwrap();
        maker.join().unwrap();
        let added = YOUNG.load(Ordering::Relaxed) - after_collection;
        assert!(
            added < MADE as isize / 2,
            "the exit added {added} young objects after the collection examined its {MADE}"
        );
    }
}
