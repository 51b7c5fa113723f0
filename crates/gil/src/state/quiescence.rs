//! Keeps attached threads pinned in the epoch scheme (free-threaded builds only). The guard is
//! crossbeam's default collector's, so the object model's own (nested) pins are free.
//!
//! Not yet in the block: the epoch participant itself (crossbeam's `LocalHandle`) is still
//! `crossbeam-epoch`'s own thread-local; the block holds only the attach pin on it. Owning a
//! `LocalHandle` of a runtime `Collector` here means every guard the object model takes must come
//! from that collector, since a pin on one collector does not protect what is retired through
//! another: `reclaim`'s pins for list and dict reads and writes (`read_pinned`,
//! `write_contents_in_section`), `ReadGuard`, the `Debug` printer, `collect`'s flushes
//! (`reclamation::flush_until_caught_up`) and the retired batches' hand-over at exit all pin
//! through `crossbeam_epoch::pin()` today, and would have to switch together, with a fallback for
//! pins after the block is gone (a temporary handle registered per pin, what crossbeam does itself
//! once its thread-local is torn down) and `LocalHandle`'s drop placed in the exit sequence after
//! the retired batches are handed over. That is one change across `ftrt-gil` and `ftrt-object`, not
//! yet made.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_epoch::Guard;

use super::ThreadState;
use crate::reclamation::{self, WaitEnd, RETIREMENTS_BEFORE_A_WAIT};

/// Checkpoints between repins: each repin costs a fence, and reclamation only needs threads
/// to pass through quiescent states now and then. Each repin also runs the quiescent-state
/// hooks and flushes: the thread hands its retired garbage to the global queue and frees a
/// bounded batch of what has expired, so garbage is collected at the pace it is made
/// (nested pins, which some reads and the retirement take, never collect by themselves).
const CHECKS_PER_REPIN: u32 = 16;

/// Repins between flushes of a thread with no marker outstanding (nothing it retired,
/// [`note_retired`](super::note_retired), waits to be due; see [`Backlog`]). Such a flush only
/// helps the global epoch along and frees other threads' expired garbage, which the retiring
/// threads' own flushes do too. Each flush tries to advance the global epoch, a store every other
/// thread's next repin reads: in `shared-refcount`, where two threads only count
/// references, flushing every 16th repin kept 7 % of the samples in the epoch and cost the
/// two-thread cell 10 % against every 256th (a flush per 4,096 checkpoints); flushing at
/// every repin cost one thread 9 %.
const REPINS_PER_IDLE_FLUSH: u32 = 256;

/// The attach pin and the checkpoint counter.
pub(super) struct Quiescence {
    guard: RefCell<Option<Guard>>,
    /// The attach pin of an attachment that ended (or an `allow_threads` that began) while
    /// a read was open on the thread: kept until no read is, since open reads rely on it
    /// (`local::attach_pinned`). The last read to close drops it ([`release_kept_pin`]).
    kept_for_reads: RefCell<Option<Guard>>,
    checks: Cell<u32>,
    backlog: Backlog,
}

/// Whether what the thread retired is due yet, told by markers: at a repin after the thread
/// retired something ([`note_retired`](super::note_retired)), a marker is deferred behind it,
/// unless the last one has not run yet, and it runs once what was retired before it is due.
/// (The epoch hands a thread's deferred functions to the global queue in bags, in order, and
/// collects the queue in order, stopping at the first bag not yet due: by the time the marker
/// runs, what the thread retired before it has run or is running.)
///
/// Two things hang on it. The repin flushes while a marker is outstanding: what was retired is
/// freed once the global epoch has advanced twice past it, and the epoch advances at a flush
/// (at most once, and only once every pinned thread has passed a quiescent state since the last
/// advance) or at crossbeam's own collection every 128th outer pin, which attached threads
/// rarely make (their reads nest in the attach pin). So a thread flushes until its garbage is
/// due, however long another thread holds the epoch back, and then stops (flushes of a thread
/// with nothing outstanding cost threads that only count, see [`REPINS_PER_IDLE_FLUSH`]); the
/// hooks at its next repin drop what was posted back (`crates/object/tests/reclamation.rs`).
/// And a thread that retires [`RETIREMENTS_BEFORE_A_WAIT`] more while a marker is outstanding
/// waits for it ([`crate::reclamation`]).
struct Backlog {
    /// Retirements ([`note_retired`]) since the last marker was deferred.
    retired: Cell<u32>,
    /// Markers deferred.
    made: Cell<u64>,
    /// The number of the latest marker run (each raises it to its own), by whichever thread
    /// runs it; shared with them, since a marker may run after this thread has exited. A
    /// marker that never runs (a deferred function before it in its bag panicked: crossbeam
    /// never runs the rest of the bag, and leaks it) is superseded by the next
    /// ([`REPINS_BEFORE_A_NEW_MARKER`]).
    run: Arc<AtomicU64>,
    /// Repins since the outstanding marker was deferred.
    repins_outstanding: Cell<u32>,
    /// Whether the thread waited for the marker outstanding now already.
    waited: Cell<bool>,
    /// Whether the thread retired anything since its last flush ([`flush_before_detaching`]).
    unflushed: Cell<bool>,
}

impl Backlog {
    fn outstanding(&self) -> bool {
        // Relaxed: a hint for whether to flush or wait; what the marker's run says about freed
        // memory matters to no read here.
        self.run.load(Ordering::Relaxed) < self.made.get()
    }
}

impl Quiescence {
    pub(super) fn new() -> Self {
        Quiescence {
            guard: RefCell::new(None),
            kept_for_reads: RefCell::new(None),
            checks: Cell::new(0),
            backlog: Backlog {
                retired: Cell::new(0),
                made: Cell::new(0),
                run: Arc::new(AtomicU64::new(0)),
                repins_outstanding: Cell::new(0),
                waited: Cell::new(false),
                unflushed: Cell::new(false),
            },
        }
    }
}

pub(crate) fn pin(state: Option<&ThreadState>) {
    // Without a block (after exit) the thread runs unpinned; its reads pin for themselves.
    if let Some(state) = state {
        *state.quiescence.guard.borrow_mut() = Some(crossbeam_epoch::pin());
        super::CURRENT.with(|c| c.attach_pinned.set(true));
    }
}

pub(crate) fn note_retired(state: Option<&ThreadState>) {
    if let Some(state) = state {
        let backlog = &state.quiescence.backlog;
        backlog.retired.set(backlog.retired.get().saturating_add(1));
        backlog.unflushed.set(true);
    }
}

pub(crate) fn unpin(state: Option<&ThreadState>) {
    // Detaching is a quiescent state: the hooks run while the thread is still pinned. A
    // hook that panics leaves the pin in place: the panic unwinds out of `allow_threads`
    // with the thread still attached, and an attached thread is pinned (a deferred function
    // the flush runs, likewise).
    super::run_hooks();
    flush_before_detaching(state);
    drop_pin(state);
}

/// [`unpin`] at the end of an attachment, which ends even when a hook panics: then the pin
/// goes too (it would hold reclamation back until the thread attached again).
pub(crate) fn unpin_at_the_end(state: Option<&ThreadState>) {
    struct DropPin<'a>(Option<&'a ThreadState>);
    impl Drop for DropPin<'_> {
        fn drop(&mut self) {
            drop_pin(self.0);
        }
    }
    let _drop_pin = DropPin(state);
    super::run_hooks();
    flush_before_detaching(state);
}

/// Flushes at a detach while the functions a flush runs retire more: a bound, since each may.
const FLUSHES_BEFORE_DETACHING: u32 = 2;

/// At a detach, after the hooks (which may retire what they hand over): hands what the thread
/// retired since its last flush to the epoch's global queue. Left in the thread's bag, it would
/// wait for the thread to attach again, which only the thread can do, and an `allow_threads`
/// may last as long as a blocking call; in the queue, it is due once the epoch has advanced
/// twice, which the attached threads' flushes do without this one, and then what it holds is
/// freed: replaced arrays and tables at once, and retired references (the object model drops
/// a batch of shared objects where it expires while its own thread is detached, and posts a
/// batch that may hold a local object back to its thread, which drops it once attached
/// again). (A
/// detach with nothing retired since the last flush, the common one, flushes nothing: a flush
/// pushes the bag and tries to advance the epoch, a walk over every thread.)
///
/// Not while the thread unwinds: the flush runs deferred functions, of any thread, and one
/// that panicked then would abort the process. Nor for a stop of the world or checkpoint work
/// wanted: the park at the safe point is a detach, and the flush would hold the stop up; the
/// thread's next repin after it flushes instead.
fn flush_before_detaching(state: Option<&ThreadState>) {
    let Some(state) = state else { return };
    let backlog = &state.quiescence.backlog;
    if !backlog.unflushed.get() || std::thread::panicking() || super::safe_point_wanted() {
        return;
    }
    // Renewed first: a pin at the epoch of the last repin may be the one that keeps the flush
    // from advancing the epoch.
    renew_attach_pin(state, super::local::readers() > 0);
    for _ in 0..FLUSHES_BEFORE_DETACHING {
        if !backlog.unflushed.get() {
            break;
        }
        flush(backlog);
    }
}

/// Hands what the thread retired to the epoch's global queue, tries to advance the epoch, and
/// runs what is due. Through a nested pin of this thread (which leaves its attach pin as it is,
/// or pins an unpinned thread for the flush alone): the flush runs due deferred functions, and
/// one may detach, which takes the attach pin out.
fn flush(backlog: &Backlog) {
    let pin = crossbeam_epoch::pin();
    // After the pin (an outer pin may collect, running deferred functions that retire more)
    // and before the flush: what the functions the flush runs retire is not in it.
    backlog.unflushed.set(false);
    pin.flush();
}

fn drop_pin(state: Option<&ThreadState>) {
    // Before the pin goes: from here reads pin for themselves.
    super::CURRENT.with(|c| c.attach_pinned.set(false));
    let Some(state) = state else { return };
    let mut guard = state.quiescence.guard.borrow_mut().take();
    if super::local::readers() > 0 {
        // A read open across the detach may rely on this pin: it is kept until the last
        // read closes. A pin kept already is older, and covers this one's reads too (pins
        // nest: the thread stays at the epoch of its first), so then this one can go.
        let mut kept = state.quiescence.kept_for_reads.borrow_mut();
        if kept.is_none() {
            *kept = guard.take();
            super::CURRENT.with(|c| c.pin_kept.set(kept.is_some()));
        }
    }
    // Dropped outside the borrows: unpinning may run deferred destructors.
    drop(guard);
}

/// Gives up the attach pin for a wait for the locks of a section on the thread's stack
/// (`thread::wait_for_object_section`): a quiescent state, so the epoch advances past the
/// thread while it waits. Returns whether it did; then [`pin`] takes it again once the
/// section is recorded. Nested pins of the thread's own (a flush's, a retirement's) keep it
/// pinned all the same: crossbeam unpins only when the last guard goes. With no pin in the
/// slot (not attached, or the pin taken out) it does nothing.
///
/// # Safety
/// `state` is the calling thread's; no read is open on it (`crate::local::readers` is 0: an
/// open read's borrowed values live as long as the attach pin); the pin in the slot is not one
/// kept across a detach (`thread::wait_for_section_detached`'s); and until [`pin`] takes it
/// again nothing on the thread relies on the attach pin (`attach_pinned` reads false, so reads
/// pin for themselves).
pub(crate) unsafe fn unpin_for_wait(state: &ThreadState) -> bool {
    let pin = state
        .quiescence
        .guard
        .try_borrow_mut()
        .ok()
        .and_then(|mut guard| guard.take());
    let Some(pin) = pin else { return false };
    super::CURRENT.with(|c| c.attach_pinned.set(false));
    // Outside the borrow (an unpin runs nothing, but the last guard's drop may finalize).
    drop(pin);
    true
}

/// Drops the pin kept aside for open reads, now that the last one has closed. Attached, the
/// thread stays pinned by its attach pin; detached, it unpins here.
///
/// # Safety
/// No read is open on the calling thread: the kept pin is what an open read's borrowed values
/// rely on across a detach.
#[cold]
#[inline(never)]
pub(crate) unsafe fn release_kept_pin() {
    super::CURRENT.with(|c| c.pin_kept.set(false));
    // Taken out of the borrow before it drops: unpinning may run deferred destructors.
    let kept = super::with_current(|state| {
        state.and_then(|state| state.quiescence.kept_for_reads.borrow_mut().take())
    });
    drop(kept);
}

/// A quiescent state: the thread holds no reference it read without counting, beyond the
/// reads still open on it ([`local::readers`](super::local::readers): the repin waits until
/// none is) and nested pins of its own (which keep it pinned). Returns whether the thread
/// should stop at a safe point (a stop of the world, or checkpoint work, is wanted): looked
/// at every `CHECKS_PER_REPIN`th checkpoint, with the repin, so the common checkpoint stays a
/// count.
#[inline]
pub(crate) fn checkpoint(state: Option<&ThreadState>) -> bool {
    let Some(state) = state else {
        return super::safe_point_wanted();
    };
    let checks = state.quiescence.checks.get().wrapping_add(1);
    state.quiescence.checks.set(checks);
    if checks % CHECKS_PER_REPIN == 0 {
        return repin(state);
    }
    false
}

/// Moves the attach pin to the current epoch, unless `reads_open`: an open read may rely on the
/// pin staying as it is (`local::attach_pinned`), as a nested pin would keep it. Returns whether
/// the thread has an attach pin.
fn renew_attach_pin(state: &ThreadState, reads_open: bool) -> bool {
    state
        .quiescence
        .guard
        .borrow_mut()
        .as_mut()
        .map(|guard| {
            if !reads_open {
                guard.repin();
            }
        })
        .is_some()
}

#[cold]
fn repin(state: &ThreadState) -> bool {
    if super::running_own_stop() {
        // No hooks (they may collect, which stops the world) and no hold inside a stop: the
        // first repinning checkpoint after it does both.
        return false;
    }
    let reads_open = super::local::readers() > 0;
    // Not while the thread unwinds (a checkpoint in a destructor): the hooks and the flushes
    // run code of other crates, and a panic there would abort the process.
    if !std::thread::panicking() && renew_attach_pin(state, reads_open) {
        // Between the repin and the flush, so what the hooks hand over goes out with this
        // flush; and outside the guard's borrow, since hooks drop objects.
        super::run_hooks();
        // After the hooks, which may retire what they hand over.
        let flush_for_marker = mark_what_was_retired(&state.quiescence.backlog);
        let repins = state.quiescence.checks.get() / CHECKS_PER_REPIN;
        if flush_for_marker || repins % REPINS_PER_IDLE_FLUSH == 0 {
            // Not through the pin in the borrow: see `flush`.
            flush(&state.quiescence.backlog);
        }
        if !reads_open {
            keep_up_with_the_epoch(state);
        }
    }
    if state.hold_wanted.replace(false) {
        super::try_hold_alone(state);
    }
    super::safe_point_wanted()
}

/// Repins with a marker outstanding that flush each: enough for the epoch to advance twice
/// and collect, once the threads holding it back have passed a quiescent state. From there on
/// the repin flushes one time in [`REPINS_PER_SLOW_FLUSH`]: another thread may hold the epoch
/// back for long (a detached thread with a read open keeps its pin), and a flush that cannot
/// advance still costs a fence and a walk over every thread's epoch.
const REPINS_FLUSHING_EACH: u32 = 4;

/// See [`REPINS_FLUSHING_EACH`].
const REPINS_PER_SLOW_FLUSH: u32 = 4;

/// Repins after which an outstanding marker is given up for a new one, behind what the thread
/// retired since (if anything): a marker may never run (see [`Backlog::run`]).
const REPINS_BEFORE_A_NEW_MARKER: u32 = REPINS_PER_IDLE_FLUSH;

/// At a repin: defers a marker behind what the thread retired since its last one, unless that
/// one has not run yet (and was deferred fewer than [`REPINS_BEFORE_A_NEW_MARKER`] repins ago).
/// Returns whether the repin flushes for a marker outstanding ([`REPINS_FLUSHING_EACH`]).
fn mark_what_was_retired(backlog: &Backlog) -> bool {
    let retired = backlog.retired.get() > 0;
    if backlog.outstanding() {
        let repins = backlog.repins_outstanding.get().saturating_add(1);
        backlog.repins_outstanding.set(repins);
        if repins < REPINS_BEFORE_A_NEW_MARKER || !retired {
            return repins <= REPINS_FLUSHING_EACH || repins % REPINS_PER_SLOW_FLUSH == 0;
        }
    } else if !retired {
        return false;
    }
    backlog.retired.set(0);
    backlog.repins_outstanding.set(0);
    let marker = backlog.made.get() + 1;
    backlog.made.set(marker);
    backlog.waited.set(false);
    let run = Arc::clone(&backlog.run);
    // Through a nested pin, as the flush: the attach pin stays as it is. The closure (an `Arc`
    // and a number) fits in crossbeam's deferred function without an allocation.
    crossbeam_epoch::pin().defer(move || {
        run.fetch_max(marker, Ordering::Relaxed);
    });
    true
}

/// At a repin with no read open, after the flush: once the thread has retired
/// [`RETIREMENTS_BEFORE_A_WAIT`] more while a marker is outstanding, waits for it, at most once
/// per marker ([`crate::reclamation`]).
fn keep_up_with_the_epoch(state: &ThreadState) {
    let backlog = &state.quiescence.backlog;
    if backlog.retired.get() < RETIREMENTS_BEFORE_A_WAIT || !backlog.outstanding() {
        return;
    }
    if !backlog.waited.get() && may_wait(state) {
        // Set first: nothing the wait runs waits again for this marker.
        backlog.waited.set(true);
        if !wait_for_the_marker(state, backlog) {
            backlog.waited.set(false);
        }
    }
}

/// Whether a wait holds nothing up: no section of the thread's active (another thread may wait
/// for its lock; one stack holds the object model's and `ftrt_lock`'s), no park of its counts
/// under way, no hold on the world alone (then no other thread is attached, and what the thread
/// retires is mostly freed at once: only a detached thread could hold the epoch back, for no
/// telling how long), and a limit set. (The caller has checked that no read is open, and
/// `repin` that the thread runs no stop of its own.)
fn may_wait(state: &ThreadState) -> bool {
    !reclamation::wait_limit().is_zero()
        && state.sections.depth().active == 0
        && !super::parking_counts()
        && state.alone.try_borrow().is_ok_and(|hold| hold.is_none())
}

/// The wait itself: unpinned, flushing (which advances the epoch and runs what is due, the
/// marker among it), until the marker has run, a safe point is wanted, the thread is pinned
/// again (a function the flush ran attached again), or the limit has passed. Returns whether it
/// waited: not where a read is open, nor where a pin of the thread's own, nested in its attach
/// pin, keeps it pinned all the same (a caller's around the checkpoint, or the repin's
/// flush's, whose deferred function reached this checkpoint): the marker could not run before
/// the limit.
#[cold]
#[inline(never)]
fn wait_for_the_marker(state: &ThreadState, backlog: &Backlog) -> bool {
    // A quiescent state, as a section's wait is: no read is open (`repin` checked; checked
    // again here, where it is cheap, so that the unpin's soundness does not rest on the
    // caller), so the thread holds no reference it read without counting, and nothing relies
    // on the attach pin.
    if super::local::readers() > 0 {
        return false;
    }
    // SAFETY: this thread's state, no read open (just checked); its pin is the attach pin (a
    // repin runs attached, not inside `wait_for_section_detached`); and until `wait` takes it
    // again as it drops, what runs here (the flushes) pins for itself.
    if !unsafe { unpin_for_wait(state) } {
        return false;
    }
    let mut wait = PinAgainAfterWait { state, end: None };
    if crossbeam_epoch::is_pinned() {
        return false;
    }
    reclamation::record_begun();
    let deadline = Instant::now().checked_add(reclamation::wait_limit());
    wait.end = Some(WaitEnd::Interrupted);
    let end = loop {
        flush(backlog);
        if !backlog.outstanding() {
            break WaitEnd::CaughtUp;
        }
        if super::safe_point_wanted() || crate::local::attach_pinned() {
            break WaitEnd::Interrupted;
        }
        // No deadline where the limit overflows the clock: as good as no limit.
        if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            break WaitEnd::TimedOut;
        }
        std::thread::yield_now();
    };
    wait.end = Some(end);
    true
}

/// Ends a wait for the marker, panics included (a deferred function the flush runs may panic):
/// takes the attach pin again, and counts the wait's end if it began (a panic ends it as
/// interrupted).
struct PinAgainAfterWait<'a> {
    state: &'a ThreadState,
    end: Option<WaitEnd>,
}

impl Drop for PinAgainAfterWait<'_> {
    fn drop(&mut self) {
        pin(Some(self.state));
        if let Some(end) = self.end {
            reclamation::record_end(end);
        }
    }
}
