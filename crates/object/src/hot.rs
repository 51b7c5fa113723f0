//! Per-thread counts for hot shared objects (the biased build).
//!
//! Threads that take counted references to one shared object they do not own all write its
//! shared count, one atomic read-modify-write each, and serialise on its cache line. An object
//! found *hot* is *deferred* instead: its count stops changing
//! ([`BiasedCount::defer_counting`](ftrt_refcount::BiasedCount::defer_counting)) and keeps an
//! id as its tag, and every thread counts its increments and decrements of the object in its
//! own array, at that id, with a plain load and store. Only the collector may free a deferred
//! object: in a stopped world it sums the threads' counts.
//!
//! The count's first half (`refs::incref`) tells a deferred count apart right after its owner
//! check, from the owner field it has just read, and hands over the tag it keeps in its local
//! half, already loaded for the immortal test: a deferred object's count is then as short as
//! the owner's (the immortal test, the owner check, one more compare, the array, an add), and
//! neither the owner's path nor the immortal one pays for it. That is the inline path, which a
//! thread takes while its array exists (`CountInThread`); before its first deferred count
//! makes the array, and after its exit retires it, the first half leaves the count alone and
//! the unowned half hands the tag over out of line (`count_in_thread_out_of_line`).
//!
//! - **Found hot**: a thread that counts [`PROMOTE_AFTER`] increments of one object in the shared
//!   count (the biased count's atomic path) asks for it. Each thread remembers the
//!   objects it increments that way in a small table (32 entries, by address); an object
//!   pushed out of the table starts again from zero, so only objects incremented over and over
//!   by the same thread qualify, not every object a thread touches once. The table costs the
//!   atomic path a thread-local lookup; the owner's path and immortal objects pay nothing.
//! - **Given** to the asking thread the first time, at the next checkpoint, in a stopped world:
//!   the count moves to that thread, which then counts it without atomics, and the former owner
//!   counts on the shared side
//!   ([`BiasedCount::transfer_ownership`](ftrt_refcount::BiasedCount::transfer_ownership)). One
//!   thread counting what another made is the common case; a second thread finding the object
//!   hot (its former owner among them) gets it deferred.
//! - **Deferred** the next time, in a stopped world: a count that
//!   changes only with every thread parked has no race to lose. At most [`MAX_DEFERRED`] objects
//!   are deferred at once; requests beyond that are dropped. Each deferral, and each request
//!   dropped so, counts towards the next collection ([`DEFERRALS_PER_COLLECTION`]).
//! - **Settled** by every collection, in its stopped world: an object no thread took a reference
//!   to since the previous collection (deferred before it) has gone cold and counts in its header
//!   again; one with no reference left dies. Each thread's count of an object holds, beside the net
//!   references, how many it took since the last collection, so telling hot from cold costs the
//!   counting path nothing.
//! - **Exact**: [`Bound::refcount`](crate::Bound::refcount) adds the threads' counts, so it reads
//!   the true count whenever no other thread is changing it.
//!
//! A thread that exits adds its counts to a shared array first.
//! [`Bound::defer_refcount`](crate::Bound::defer_refcount) defers an object on demand, for
//! runtimes that know which objects will be hot.

use std::cell::{Cell, OnceCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ftrt_gil::{BuildCount, Python};
use ftrt_refcount::RefCount;

use crate::header::{header, Header};
use crate::refs::{assume_token, decref, Token};
use crate::unwind::{each_past_panics, resume_first, Panic};

/// Increments of one object in its shared count, by one thread, that make it hot.
pub const PROMOTE_AFTER: u32 = 4096;

/// Objects deferred at once, at most. Ids run from 1 to this; 0 means "not deferred".
pub const MAX_DEFERRED: usize = 1023;

/// Deferrals between two collections, at most (about: the young count may start below zero):
/// each counts as this fraction of the collection threshold's young objects, rounded up, so
/// that deferred objects that die are freed (and their ids returned) even in a program that
/// makes no more containers. A request refused because [`MAX_DEFERRED`] objects are deferred
/// counts the same, while the last settling gave an id back.
pub const DEFERRALS_PER_COLLECTION: usize = 64;

/// The length of each counting thread's array: a power of two, so that masking an id
/// ([`ID_MASK`]) proves it in bounds. Index 0 is unused.
const IDS: usize = MAX_DEFERRED + 1;

/// Masks a tag into the arrays' bounds (ids are below [`IDS`] already: the mask only tells the
/// compiler so).
const ID_MASK: u16 = (IDS - 1) as u16;

const _: () = assert!(IDS.is_power_of_two(), "ids are masked in");

/// Objects each thread remembers incrementing in the shared count.
const RECENT: usize = 32;

/// How long a deferral waits for the world to stop before it gives up (to be asked again).
pub const PATIENCE: Duration = Duration::from_millis(50);

/// Deferrals given up because the world would not stop in time.
static GIVEN_UP: AtomicUsize = AtomicUsize::new(0);

/// How long threads ask for no deferral after one was given up, unless a collection stops the
/// world sooner: a thread blocked while attached may stay blocked a long time, and every try
/// costs the asking thread the [`PATIENCE`] (at most 5 % of its time this way; objects are
/// found hot every [`PROMOTE_AFTER`] increments).
pub const HOLD_OFF: Duration = Duration::from_secs(1);

/// Until when threads ask for no deferral (`None`: they ask).
static HELD_OFF_UNTIL: Mutex<Option<Instant>> = Mutex::new(None);

fn lock_held_off_until() -> MutexGuard<'static, Option<Instant>> {
    HELD_OFF_UNTIL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lets threads ask for deferrals again (the world stopped, or a settling was asked for).
fn lift_hold_off() {
    *lock_held_off_until() = None;
}

/// Whether deferrals are held off after one given up.
fn held_off() -> bool {
    let mut until = lock_held_off_until();
    match *until {
        Some(when) if Instant::now() < when => true,
        Some(_) => {
            *until = None;
            false
        }
        None => false,
    }
}

/// One thread's counts, by deferred id (index 0 unused: id 0 means "not deferred"). Written by
/// its thread with plain loads and stores while it runs, and by a collector's settle only in a
/// stopped world, under the registry's lock, while the thread is parked (the stop's
/// synchronisation orders the two); read by that settle, by exact reads of a count, and by the
/// thread's own exit.
struct ThreadCounts([AtomicIsize; IDS]);

/// A deferred object, by its header.
struct Deferred(NonNull<Header>);

// SAFETY: only a pointer, to a shared object (a local one is never requested), which whoever
// holds it keeps alive: the registry, used in a stopped world or under its lock (a deferred
// object is never freed while deferred), or a `Request`, which holds a reference of its own
// from the moment it is made until a stopped world gives it away with the object or hands it to
// the registry (`run_pending`), or `drop_references` gives it up: after that stop, inside a
// collection's stop, or after a try that timed out.
unsafe impl Send for Deferred {}

/// What the collector needs to settle deferred objects, under one lock.
struct Registry {
    /// The deferred object of each id (index 0 unused).
    objects: Vec<Option<Deferred>>,
    /// Ids not in use.
    free: Vec<u16>,
    /// The counting threads still running.
    threads: Vec<Arc<ThreadCounts>>,
    /// The counts of threads that have exited, by id.
    exited: Vec<isize>,
    /// References the registry holds, by id: the requests' own, taken before the deferral (in
    /// the count), kept until the object counts in its header again. Left out of the threads'
    /// sum, so that "the threads let go" reads as a sum of zero.
    requests_held: Vec<isize>,
    /// Deferred since the last settling, by id: not cold yet, however little it was counted
    /// (the threads have just woken from the stop that deferred it).
    fresh: Vec<bool>,
}

static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    objects: Vec::new(),
    free: Vec::new(),
    threads: Vec::new(),
    exited: Vec::new(),
    requests_held: Vec::new(),
    fresh: Vec::new(),
});

/// Objects deferred now: a relaxed hint for the paths that only need "none" or "full".
static DEFERRED: AtomicUsize = AtomicUsize::new(0);

/// Whether requests refused for a full table count towards the next collection: set by each
/// settling that gave an id back (cold or dead), cleared by one that gave none back.
static REFUSALS_ASK: AtomicBool = AtomicBool::new(true);

/// Objects some thread found hot, each with a reference the request holds.
static REQUESTS: Mutex<Vec<Request>> = Mutex::new(Vec::new());

/// A thread found `object` hot (see [`request`]).
struct Request {
    object: Deferred,
    /// The asking thread's id (`Python::thread_id`), to give the object to.
    asked_by: Option<u32>,
}

fn registry() -> MutexGuard<'static, Registry> {
    let mut registry = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    if registry.objects.is_empty() {
        registry.objects.resize_with(IDS, || None);
        registry.exited.resize(IDS, 0);
        registry.requests_held.resize(IDS, 0);
        registry.fresh.resize(IDS, false);
        registry.free = (1..=MAX_DEFERRED as u16).rev().collect();
    }
    registry
}

/// This thread's entry in the registry; dropping it (thread exit) moves its counts to the
/// exited threads' array.
struct Registered(Arc<ThreadCounts>);

impl Drop for Registered {
    fn drop(&mut self) {
        set_mine(std::ptr::null());
        let mut registry = registry();
        for (id, count) in self.0 .0.iter().enumerate() {
            registry.exited[id] = registry.exited[id].wrapping_add(count.load(Ordering::Relaxed));
        }
        registry
            .threads
            .retain(|thread| !Arc::ptr_eq(thread, &self.0));
    }
}

thread_local! {
    static COUNTS: OnceCell<Registered> = const { OnceCell::new() };
    /// Objects this thread recently incremented in their shared count: address and increments
    /// in a row. Const, destructor-less: usable in other thread-locals' destructors.
    static RECENTLY_SHARED: [Cell<(usize, u32)>; RECENT] =
        const { [const { Cell::new((0, 0)) }; RECENT] };
}

/// This thread's array (`COUNTS`'), once registered and until its destructor runs: null
/// otherwise. Kept in `ftrt_gil::local::counts`, one load from the owner id every count reads
/// first.
#[inline(always)]
fn mine() -> *const ThreadCounts {
    ftrt_gil::local::counts().cast()
}

fn set_mine(counts: *const ThreadCounts) {
    // SAFETY: null, or this thread's registered array, which `Registered`'s destructor (the
    // only place that frees it) sets back to null first.
    unsafe { ftrt_gil::local::set_counts(counts.cast()) };
}

fn register_thread() -> Registered {
    let counts = Arc::new(ThreadCounts(std::array::from_fn(|_| AtomicIsize::new(0))));
    registry().threads.push(counts.clone());
    Registered(counts)
}

/// The id of a deferred object (the tag its count keeps), 0 if it is not deferred.
#[inline]
fn deferred_id(object: &Header) -> u16 {
    <BuildCount as RefCount>::deferred_tag(&object.count).unwrap_or(0)
}

/// Whether the object was given to a thread that found it hot.
fn was_given(object: &Header) -> bool {
    // Relaxed: set only in a stopped world, whose restart orders it before every thread's next
    // access.
    object.given.load(Ordering::Relaxed)
}

/// What a thread adds to its count of a deferred object for a reference it takes: one for the
/// reference, in the low 32 bits, and one in the high 32 bits, which count the references taken
/// since the last collection (the object's traffic, which decides whether it is still hot).
pub(crate) const TAKEN: isize = 1 + (1 << 32);
const _: () = assert!(
    isize::BITS == 64,
    "a thread's count of a deferred object keeps two 32-bit halves in one isize"
);
/// What a thread adds for a reference it drops.
pub(crate) const DROPPED: isize = -1;

/// A sum of [`TAKEN`]s and [`DROPPED`]s, split: the net references, and how many were taken.
/// Exact while every thread's net stays within ±2^31 and the references taken between two
/// collections below 2^31. Past either bound the net stays exact modulo 2^32 (so a dead object is
/// still found dead), but the taken part can read wrong: a cold object can then look hot, and
/// stay deferred (holding one of the ids) until its traffic shows, or a hot one look cold once
/// (demoted early). Neither frees anything wrongly.
fn split(sum: isize) -> (isize, isize) {
    let net = sum as i32 as isize;
    (net, sum.wrapping_sub(net) >> 32)
}

/// What the first halves of a count's increment and decrement do with a deferred object's count
/// (`incref_owned`, `decref_owned`): on a thread whose array is made, count the reference in it
/// inline ([`count_in_thread`]); before it is made, and after the thread's exit has retired it,
/// leave it to the unowned halves, which hand the tag to [`count_in_thread_out_of_line`]. The
/// path is `ftrt_gil::local::deferred_path`, which `set_mine` sets with the array.
pub(crate) struct CountInThread(isize);

impl CountInThread {
    /// Counts `delta` ([`TAKEN`] or [`DROPPED`]).
    ///
    /// # Safety
    /// Handed only to the first half of a count's increment or decrement (which calls `count`
    /// only right after `path` said inline), on an attached thread, for a reference as
    /// [`count_in_thread`] says: taken now ([`TAKEN`], the object alive) or owned and given up
    /// ([`DROPPED`]).
    #[inline(always)]
    pub(crate) unsafe fn new(delta: isize) -> Self {
        CountInThread(delta)
    }
}

impl ftrt_refcount::biased::CountDeferred for CountInThread {
    #[inline(always)]
    fn path(&self) -> ftrt_refcount::biased::DeferredPath {
        ftrt_gil::local::deferred_path()
    }

    #[inline(always)]
    fn count(self, tag: u16) {
        // SAFETY: the first half hands the tag over on the inline path only, which
        // `ftrt_gil::local::set_counts` chooses exactly while `mine` is set (read just now by
        // `path`, on this thread, with nothing between that sets it back); the rest is the
        // contract of `new`.
        unsafe { count_in_thread(tag, self.0) }
    }
}

/// Counts a reference to a deferred object taken ([`TAKEN`]) or dropped ([`DROPPED`]), without
/// an atomic: in this thread's array at `tag`, the id its count handed over. Inline into the
/// count's first half, so that deferred objects, the mortal ones every thread counts most, have
/// one path as short as the owner's: a thread-local load and an add, with no test for an array
/// not made yet ([`CountInThread`] takes this path only while it is made). (Out of line, a
/// deferred object's clone and drop cost 2.5 times the owner's; with the test, 41 instructions
/// a pair where the owner's take 33, and 37 without it.)
///
/// # Safety
/// The thread is attached, and its array is made (`mine` is set); `tag` is the one a deferred
/// object's count handed over (its first or unowned half), and `delta` counts one reference to
/// that object the thread takes now ([`TAKEN`], the object alive) or owns and gives up
/// ([`DROPPED`]): a collection sums these counts to decide that the object is dead.
#[inline(always)]
unsafe fn count_in_thread(tag: u16, delta: isize) {
    let mine = mine();
    debug_assert!(!mine.is_null(), "a deferred count inline without an array");
    // SAFETY: set, per the caller: it points to this thread's `Registered` array, alive until
    // its destructor, which sets it to null first.
    let counts = unsafe { &*mine };
    // The mask tells the compiler the id indexes the array, so the count needs no bounds check.
    let count = &counts.0[usize::from(tag & ID_MASK)];
    // A plain load and store: while this thread runs, only it writes its counts (a settle
    // writes them only in a stopped world).
    count.store(
        count.load(Ordering::Relaxed).wrapping_add(delta),
        Ordering::Relaxed,
    );
}

/// [`count_in_thread`] for a tag the count's unowned half handed over (`incref_unowned`,
/// `decref_unowned`): the thread's counts took the out-of-line path, because its array is not
/// made yet (this makes it, and later counts go inline) or is gone with its exit (this counts
/// with the exited threads).
///
/// # Safety
/// As for [`count_in_thread`], but for the array, which need not be made.
#[cold]
#[inline(never)]
pub(crate) unsafe fn count_in_thread_out_of_line(tag: u16, delta: isize) {
    let id = usize::from(tag & ID_MASK);
    let registered = COUNTS.try_with(|counts| {
        let counts = counts.get_or_init(register_thread);
        set_mine(Arc::as_ptr(&counts.0));
    });
    if registered.is_ok() {
        // SAFETY: `mine` is set just above; forwarded otherwise.
        return unsafe { count_in_thread(tag, delta) };
    }
    // This thread's counts are gone (its exit is under way): count with the exited ones.
    let exited = &mut registry().exited[id];
    *exited = exited.wrapping_add(delta);
}

/// Notes an increment of `object` in its shared count; the [`PROMOTE_AFTER`]th in a row from
/// this thread asks for it to be deferred. Out of line, like the atomic increment it follows.
///
/// # Safety
/// The thread is attached and has just counted a reference to `object`, which it still holds.
#[inline(never)]
pub(crate) unsafe fn note_shared_increment(object: NonNull<Header>) {
    let address = object.as_ptr() as usize;
    let slot = recent_slot(address);
    let hot = RECENTLY_SHARED.with(|recent| {
        let (last, times) = recent[slot].get();
        if last != address {
            recent[slot].set((address, 1));
            return false;
        }
        if times + 1 < PROMOTE_AFTER {
            recent[slot].set((address, times + 1));
            return false;
        }
        recent[slot].set((0, 0));
        true
    });
    if hot {
        // SAFETY: the caller's contract.
        unsafe { request(object) };
    }
}

/// The entry of `RECENTLY_SHARED` that tracks the object at `address`.
#[inline(always)]
fn recent_slot(address: usize) -> usize {
    // Objects are at least 8-aligned and 24 bytes apart: drop the low bits, fold in higher ones.
    ((address >> 4) ^ (address >> 10)) % RECENT
}

/// Asks for `object` to be deferred at this thread's next checkpoint.
///
/// # Safety
/// As [`note_shared_increment`].
#[cold]
unsafe fn request(object: NonNull<Header>) {
    if DEFERRED.load(Ordering::Relaxed) >= MAX_DEFERRED {
        // Refused, but it counts towards the collection that settles the deferred objects and
        // frees the ids of those gone cold or dead; unless the last settling freed none, when
        // another collection asked for this way would most likely free none either, and the
        // refusals (one every `PROMOTE_AFTER` increments of each hot object) would stop the
        // world every 64 of them.
        if REFUSALS_ASK.load(Ordering::Relaxed) {
            crate::gc::count_deferral();
        }
        return;
    }
    // (Without a checkpoint work to run them, requests would only pile up.)
    if held_off() || crate::gc::registered_checkpoint_work().is_none() {
        return;
    }
    // Only shared objects: the request's reference may be dropped on whichever thread handles
    // it, and a local object's references are dropped on its own thread alone (`gc::local`).
    // (A local object counted on the shared side has lost its owner; it is not contended.)
    // SAFETY: the caller just took a reference, so the object is alive.
    if !unsafe { header(object) }.is_shared() {
        return;
    }
    // The request's own reference keeps the object alive until the deferral runs. Taken on the
    // count directly: it is not traffic to note.
    // SAFETY: the caller just took a reference, so the object is alive; the thread is attached.
    <BuildCount as RefCount>::incref(&unsafe { header(object) }.count, unsafe { assume_token() });
    // SAFETY: the thread is attached (it just counted a reference).
    let asked_by = unsafe { Python::assume_attached() }.thread_id();
    lock_requests().push(Request {
        object: Deferred(object),
        asked_by,
    });
    crate::gc::want_checkpoint_work();
}

/// The references that requests waiting for a checkpoint hold to `object`: counted in its
/// count, but the runtime's, not a holder's (`Bound::refcount` leaves them out). Only the
/// biased build makes requests.
pub(crate) fn pending_requests_for(object: &Header) -> usize {
    if ftrt_gil::BUILD_STRATEGY != ftrt_refcount::Strategy::Biased {
        return 0;
    }
    lock_requests()
        .iter()
        .filter(|request| std::ptr::eq(request.object.0.as_ptr(), object))
        .count()
}

fn lock_requests() -> MutexGuard<'static, Vec<Request>> {
    REQUESTS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Defers `object`'s count now, stopping the world: from here on every thread counts it in its
/// own array, and only a collection frees it. For runtimes that know which objects will be
/// shared and hot (CPython defers types, code objects and module globals this way). Returns
/// whether it is deferred: `false` for an immortal object, one whose count cannot be deferred
/// this moment, or when [`MAX_DEFERRED`] objects already are; always `false` in builds without
/// biased counts.
///
/// # Safety
/// The caller holds a reference to `object`.
pub(crate) unsafe fn defer(py: Python<'_>, object: NonNull<Header>) -> bool {
    if ftrt_gil::BUILD_STRATEGY != ftrt_refcount::Strategy::Biased {
        return false;
    }
    // A deferred object's count is settled, and a dead one freed, by whichever thread collects:
    // it must be shared first (a local object's references are dropped on its thread alone,
    // which its thread's local collections rely on).
    // SAFETY: the caller holds a reference.
    crate::header::publish(unsafe { header(object) });
    ftrt_gil::stop_the_world(py, || {
        // SAFETY: the caller holds a reference; the world is stopped.
        unsafe { defer_stopped(&mut registry(), object) }
    })
}

/// Runs what threads that found objects hot asked for, at a checkpoint. In one stopped world,
/// each object is given to the thread that asked if it is the first time ([`give_or_defer`]),
/// or deferred. A request's reference goes into the transfer of a given object and to the
/// registry for a deferred one; the others are dropped. Nothing to do, it returns at once. (A
/// collection runs the requests still pending in its own stopped world:
/// [`defer_requested_stopped`].)
pub(crate) fn defer_requested(py: Python<'_>) {
    if lock_requests().is_empty() {
        return;
    }
    let mut left = Vec::new();
    let collections = crate::gc::collections();
    // Taken inside the stop: taken before it, they would miss a collection that stopped the
    // world first (this thread then parks for it: `Busy`) and hold their references through it.
    let stopped = ftrt_gil::try_stop_the_world(py, Some(PATIENCE), || {
        // SAFETY: the world is stopped.
        left = unsafe { run_pending() };
    });
    match stopped.map_err(|not| not.why) {
        Ok(()) => {}
        Err(ftrt_gil::world::StopFailed::TimedOut) => {
            let mut until = lock_held_off_until();
            // Unless a collection stopped the world meanwhile (its `settle` lifted the hold-off).
            if crate::gc::collections() == collections {
                *until = Some(Instant::now() + HOLD_OFF);
            }
            GIVEN_UP.fetch_add(1, Ordering::Relaxed);
            // Dropped: the threads will ask again, after the hold-off.
            left = std::mem::take(&mut *lock_requests());
        }
        Err(ftrt_gil::world::StopFailed::Busy) => {
            // Another thread's stop ran (this one parked until it ended): a collection ran the
            // requests; those still pending wait for the next checkpoint that runs the work.
            if !lock_requests().is_empty() {
                crate::gc::want_checkpoint_work();
            }
        }
    }
    #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
    // SAFETY: used in this call only, which stays attached throughout.
    let token = unsafe { py.count_token() };
    drop_references(left, token);
}

/// Runs the requests still pending, as [`defer_requested`] does, in a collection's stopped
/// world and before it reads any count: no request's reference outlives a collection (one made
/// as the world stopped would read as a reference from outside, keeping what it holds, and
/// `Bound::refcount` would read one high). The references of requests that can be neither
/// given nor deferred are dropped here, in the stopped world, as the collector's own merge
/// drops what was queued to it.
///
/// # Safety
/// The world is stopped.
pub(crate) unsafe fn defer_requested_stopped(token: Token<'_>) {
    // SAFETY: forwarded from the caller.
    drop_references(unsafe { run_pending() }, token);
}

/// Drops the references of `requests`, every one of them even if a release panics: the first
/// panic resumes once they are all dropped (stopped, they would keep their objects for ever).
fn drop_references(requests: Vec<Request>, token: Token<'_>) {
    resume_first([each_past_panics(requests, |request| {
        // SAFETY: the request's reference, given up here.
        unsafe { decref(request.object.0, token) }
    })]);
}

/// Takes the pending requests and gives or defers the object of each; returns those that could
/// be neither, whose references are still to drop.
///
/// # Safety
/// The world is stopped.
unsafe fn run_pending() -> Vec<Request> {
    let requests = std::mem::take(&mut *lock_requests());
    let mut left = Vec::new();
    if requests.is_empty() {
        return left;
    }
    let mut registry = registry();
    for request in requests {
        // SAFETY: the request holds a reference; the world is stopped.
        match unsafe { give_or_defer(&mut registry, &request) } {
            // The reference went into the transfer.
            Handled::Given => {}
            Handled::Deferred => {
                // SAFETY: as above.
                let id = deferred_id(unsafe { header(request.object.0) });
                registry.requests_held[usize::from(id)] += 1;
            }
            Handled::Neither => left.push(request),
        }
    }
    left
}

/// What became of a request.
enum Handled {
    /// The object's count moved to the thread that asked, taking the request's reference.
    Given,
    /// The object is deferred; the request's reference is the registry's.
    Deferred,
    /// Neither could be done; the request's reference is still to drop.
    Neither,
}

/// The first time an object is found hot, one thread other than its owner is counting it over
/// and over: the count moves to that thread, which then counts it without atomics
/// ([`BiasedCount::transfer_ownership`](ftrt_refcount::BiasedCount::transfer_ownership)), and a
/// former owner still counting it does so on the shared side. The next time (a second thread
/// finds it hot, the former owner among them), it is deferred, which scales with the threads.
///
/// # Safety
/// The world is stopped, and the request holds a reference.
unsafe fn give_or_defer(registry: &mut Registry, request: &Request) -> Handled {
    let object = request.object.0;
    // SAFETY: alive: the request holds a reference.
    let head = unsafe { header(object) };
    // A deferred object is never given: its count is saturated, which `transfer_ownership`
    // refuses, and `defer_stopped` then finds it deferred already.
    let give_to = request.asked_by.filter(|_| !was_given(head));
    // SAFETY: a stopped world, and the request's reference is held; given up here when the
    // count moves.
    if give_to.is_some_and(|thread| unsafe {
        <BuildCount as RefCount>::transfer_ownership(&head.count, thread)
    }) {
        head.given.store(true, Ordering::Relaxed);
        return Handled::Given;
    }
    // SAFETY: per the caller.
    if unsafe { defer_stopped(registry, object) } {
        Handled::Deferred
    } else {
        Handled::Neither
    }
}

/// Defers one object's count, if it can be and is not already.
///
/// # Safety
/// The world is stopped (or no other thread can reach the object) and the caller holds a
/// reference to it.
unsafe fn defer_stopped(registry: &mut Registry, object: NonNull<Header>) -> bool {
    // SAFETY: alive, per the caller.
    let head = unsafe { header(object) };
    if deferred_id(head) != 0 {
        return true;
    }
    let Some(id) = registry.free.pop() else {
        return false;
    };
    // SAFETY: exclusive (a stopped world), with a reference held; every count the object's
    // count ignores from here on goes to the threads' arrays, which `settle` passes back.
    if !unsafe { <BuildCount as RefCount>::defer_counting(&head.count, id) } {
        registry.free.push(id);
        return false;
    }
    registry.objects[usize::from(id)] = Some(Deferred(object));
    registry.fresh[usize::from(id)] = true;
    DEFERRED.fetch_add(1, Ordering::Relaxed);
    crate::gc::count_deferral();
    true
}

/// The sum of every thread's count for id `id` (see [`split`]).
fn counted_elsewhere(registry: &Registry, id: usize) -> isize {
    registry
        .threads
        .iter()
        .fold(registry.exited[id], |sum, thread| {
            sum.wrapping_add(thread.0[id].load(Ordering::Relaxed))
        })
}

/// What the threads counted for the object deferred at `id` since the deferral, less the
/// registry's own references (the requests', given up when the header counts again): the net
/// references, and the references taken since the last settling. The object's references are
/// these plus those its header held when it was deferred.
fn counted_since_deferral(registry: &Registry, id: usize) -> (isize, isize) {
    let (net, taken) = split(counted_elsewhere(registry, id));
    (net - registry.requests_held[id], taken)
}

/// The references to a deferred object, counted everywhere; `None` if it is not deferred.
/// Exact when no other thread changes the count meanwhile. The token: the caller is attached.
pub(crate) fn deferred_refcount(_attached: Python<'_>, object: &Header) -> Option<usize> {
    let id = usize::from(deferred_id(object));
    if id == 0 {
        return None;
    }
    let (net, _) = counted_since_deferral(&registry(), id);
    // SAFETY: deferred (the id stays until a stopped world, which the caller, attached (the
    // token), is not part of).
    let held = unsafe { <BuildCount as RefCount>::deferred_total(&object.count) } as isize;
    Some((held + net).max(0) as usize)
}

/// Deferred objects a settling found with no reference left, each holding one the settling took
/// (so that the cycle search reads them as alive): [`free`](Self::free) drops those references,
/// which frees the objects, once the world runs again. With them, the first refusal of the
/// settling (an object whose counts hold more drops than references: a counting bug), which
/// `free` passes on once the objects are freed.
#[must_use = "the objects are freed only by `free`"]
pub(crate) struct Dead {
    objects: Vec<NonNull<Header>>,
    refused: Option<Panic>,
}

impl Dead {
    /// Drops the settling's references, freeing the objects, every one of them even if a
    /// release panics; then resumes the settling's refusal, or else the first such panic. With
    /// the world running.
    pub(crate) fn free(self, token: Token<'_>) {
        let released = each_past_panics(self.objects, |object| {
            // SAFETY: the settling's reference, the only one: this frees it.
            unsafe { decref(object, token) }
        });
        resume_first([self.refused, released]);
    }
}

/// Settles the deferred objects, in a collection's stopped world. One that no thread took a
/// reference to since the last settling (and that was deferred before it) has gone cold, and
/// one that no reference holds any more is dead: both count in their headers again (the threads'
/// counts folded in). The rest stay deferred, their traffic counted afresh. Returns the dead, to
/// free once the world runs again, and the panic of the first refusal (an object whose counts
/// hold more drops than references; it stays deferred), which [`Dead::free`] resumes.
///
/// # Safety
/// The world is stopped.
pub(crate) unsafe fn settle(token: Token<'_>) -> Dead {
    // The world stopped: deferrals may be asked for again.
    lift_hold_off();
    let mut dead = Dead {
        objects: Vec::new(),
        refused: None,
    };
    if DEFERRED.load(Ordering::Relaxed) == 0 {
        REFUSALS_ASK.store(true, Ordering::Relaxed);
        return dead;
    }
    let mut registry = registry();
    let mut gave_back = false;
    for id in 1..=MAX_DEFERRED {
        let Some(Deferred(object)) = registry.objects[id] else {
            continue;
        };
        // SAFETY: deferred objects stay alive; the world is stopped.
        let head = unsafe { header(object) };
        let (net, taken) = counted_since_deferral(&registry, id);
        // SAFETY: deferred, not resumed since.
        let held = unsafe { <BuildCount as RefCount>::deferred_total(&head.count) } as isize;
        let fresh = std::mem::take(&mut registry.fresh[id]);
        if held + net != 0 && (taken != 0 || fresh) {
            // Still hot: every thread's count keeps only its net, and the traffic starts over.
            registry.exited[id] = split(registry.exited[id]).0;
            for thread in &registry.threads {
                let count = &thread.0[id];
                count.store(split(count.load(Ordering::Relaxed)).0, Ordering::Relaxed);
            }
            continue;
        }
        // Cold or dead: the header counts again, the threads' counts folded in. The header
        // first: it refuses a negative total (a counting bug) by panicking before it changes
        // anything, and the id must then stay with the object that still carries it as its
        // tag, not go to the next object deferred. The refusal is caught, so that the other
        // objects settle and the dead found so far are freed (unwound, they would keep the
        // settling's references for ever), and the caller gets it once they are.
        // Unwind-safe: a refusal changes nothing.
        let resumed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: deferred, exclusive (stopped world), and `net` is every thread's count
            // less the references the registry gives up.
            unsafe { <BuildCount as RefCount>::resume_counting(&head.count, net as i64) }
        }));
        let alive = match resumed {
            Ok(alive) => alive,
            Err(refusal) => {
                dead.refused.get_or_insert(refusal);
                continue;
            }
        };
        registry.exited[id] = 0;
        registry.requests_held[id] = 0;
        for thread in &registry.threads {
            thread.0[id].store(0, Ordering::Relaxed);
        }
        registry.objects[id] = None;
        registry.free.push(id as u16);
        gave_back = true;
        DEFERRED.fetch_sub(1, Ordering::Relaxed);
        if !alive {
            // No reference left: one for the caller, whose drop frees it by counting.
            <BuildCount as RefCount>::incref(&head.count, token);
            dead.objects.push(object);
        }
    }
    REFUSALS_ASK.store(gave_back, Ordering::Relaxed);
    dead
}

/// Runs the pending requests (deferrals held off after one was given up are asked for again),
/// then settles the deferred objects now (see [`settle`]), in one stopped world, if any are
/// pending or deferred.
pub(crate) fn settle_now(py: Python<'_>) {
    // Asked for explicitly: deferrals held off are asked for again.
    lift_hold_off();
    if deferred_count() == 0 && lock_requests().is_empty() {
        return;
    }
    #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
    // SAFETY: used in this call only, which stays attached throughout.
    let token = unsafe { py.count_token() };
    ftrt_gil::stop_the_world(py, || {
        // The requests first, in the same stop: the objects they defer stay deferred through
        // the settling (they are fresh).
        // SAFETY: the world is stopped.
        unsafe { defer_requested_stopped(token) };
        // SAFETY: the world is stopped.
        unsafe { settle(token) }
    })
    .free(token);
}

/// Whether `object`'s references are counted per thread now (it is deferred).
pub fn is_deferred<T: crate::PyTypeInfo>(object: &crate::Bound<'_, T>) -> bool {
    deferred_id(object.header()) != 0
}

/// How many times the deferrals threads asked for were given up because the world would not
/// stop within [`PATIENCE`] (a thread attached and blocked without reaching a checkpoint).
pub fn deferrals_given_up() -> usize {
    GIVEN_UP.load(Ordering::Relaxed)
}

/// How many objects are deferred now.
pub fn deferred_count() -> usize {
    DEFERRED.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
