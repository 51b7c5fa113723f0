//! Back-pressure on retirement: a thread that retires faster than the epoch scheme frees waits,
//! now and then, for what it retired to be freed.
//!
//! What an attached thread retires ([`note_retired`](crate::note_retired)) is freed once the
//! epoch has advanced twice past it, and the epoch advances only once every pinned thread has
//! passed a quiescent state (a checkpoint's repin, a detach) since the last advance. One thread
//! that stays pinned for a few milliseconds without one (a long stretch between checkpoints, a
//! stall on page faults) holds back everything the others retire meanwhile, and a thread that
//! replaces values in a loop retires tens of thousands in that time. Memory grows with each such
//! stall; the `gil` build, which frees at once, never sees it.
//!
//! So in the free-threaded builds an attached thread that has retired something defers a
//! *marker* on the epoch behind it, at its next checkpoint's repin (or, with a marker still
//! outstanding, at the first repin after that one has run), and looks at its later repins
//! whether the marker has run (flushing until it has). If it has not, and the thread has
//! retired [`RETIREMENTS_BEFORE_A_WAIT`] more since (a retirement is one deferred function: in
//! the object model a batch of up to 64 references, or one replaced array or table), the
//! thread waits at that checkpoint, unpinned (a quiescent state, so it holds nothing back
//! itself) and flushing, until the marker runs, for at most [`wait_limit`]. The wait ends
//! early where the checkpoint has somewhere to stop (a stop of the world, a thread waiting for
//! this one's hold on the world alone to end, checkpoint work to run), and where a function the
//! flush ran attached the thread again. A
//! thread waits at most once per marker: should the marker not run within the limit, it goes on
//! retiring without waiting until that marker has run.
//!
//! The thread waits only where waiting holds nothing up: at a checkpoint (where it may park
//! for a stop of the world already), with no read open (which relies on its pin) and no
//! section of its own active (so no other thread waits for a lock it holds), outside its own
//! stop of the world, the park of its counts and a hold on the world alone, and with no pin of
//! its own nested in the attach pin (which would keep it pinned through the wait).
//!
//! [`waits`] counts the waits, by how each ended. The `gil` build frees at once and never waits;
//! its counts stay zero.
//!
//! [`flush_until_caught_up`] waits for a marker of its own in the same way, on a thread that is
//! not attached, and in every build: it flushes until what the global queue held when it was
//! called has been taken off it (run, or running on another thread), as a runtime's "free what
//! can be freed now" wants (the object model's `collect`).
//!
//! ```
//! use std::time::Duration;
//!
//! ftrt_gil::reclamation::set_wait_limit(Duration::from_millis(5));
//! assert_eq!(ftrt_gil::reclamation::wait_limit(), Duration::from_millis(5));
//! let waits = ftrt_gil::reclamation::waits();
//! assert!(waits.begun >= waits.caught_up + waits.timed_out + waits.interrupted);
//! # ftrt_gil::reclamation::set_wait_limit(ftrt_gil::reclamation::DEFAULT_WAIT_LIMIT);
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Retirements past an outstanding marker that make a thread wait for it. At 16 (with a
/// marker every 16 retirements, and again with a marker at each repin after retiring, as now),
/// `list-replace-shared`'s peak memory at 2 and 4 threads came down to the `gil` build's
/// (`docs/results.md`, "P13: a thread that retires waits for the epoch").
pub const RETIREMENTS_BEFORE_A_WAIT: u32 = 16;

/// The longest one wait lasts, unless changed with [`set_wait_limit`]. Long enough to cover
/// the pinned stalls of 3 to 5 ms measured on a 2-core machine (with 5 ms, some waits ran out
/// and the memory they should have kept down came back); short enough that a thread held up by
/// a pinned thread that does not come back soon loses little.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_millis(10);

/// The wait limit in nanoseconds (`u64` holds 584 years).
static WAIT_LIMIT_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_WAIT_LIMIT.as_nanos() as u64);

/// Sets the longest one wait lasts, for every thread, from its next wait on. Zero turns the
/// waits off. A limit beyond `u64::MAX` nanoseconds (584 years) is taken as that; one past what
/// the clock can add to now means no limit.
pub fn set_wait_limit(limit: Duration) {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    // Relaxed: a setting, read once per wait; no other memory hangs on it.
    WAIT_LIMIT_NANOS.store(nanos, Ordering::Relaxed);
}

/// The longest one wait lasts ([`set_wait_limit`]; [`DEFAULT_WAIT_LIMIT`] until set).
pub fn wait_limit() -> Duration {
    Duration::from_nanos(WAIT_LIMIT_NANOS.load(Ordering::Relaxed))
}

/// Flushes the calling thread's epoch bag and collects, until what was deferred on the epoch
/// before the call has been taken off the epoch's global queue (run, or running on another
/// thread), as far as the queue holds it (bags still in other threads' hands are not on it), or
/// `max_flushes` flushes have. Returns the flushes it took, or `None` where it gave up. A
/// runtime's "free what can be freed now" (the object model's `collect`) flushes this way,
/// instead of a fixed number of times.
///
/// How it knows: it defers a marker of its own, which joins the thread's bag behind everything
/// the thread deferred, and the flush pushes that bag onto the global queue behind every bag
/// pushed before. The queue is collected in order, a bag only once the epoch has advanced twice
/// past it, so once the marker has run every bag ahead of it has been taken off the queue, by
/// this thread, which has run it, or by another, which may still be running it. Deferred
/// functions still in other threads' bags are not on the queue; the threads' checkpoints and
/// detaches push them.
///
/// Each flush advances the epoch one step at most, and only once every pinned thread has passed
/// a quiescent state since the last advance; it runs a few bags (crossbeam runs 8 at most). So
/// with no thread pinned the call takes two or three flushes, a backlog takes more, and a thread
/// that stays pinned without a quiescent state makes the call give up. Call it detached or not
/// attached: in the free-threaded builds an attached thread's own pin holds the epoch back, and
/// the call gives up.
///
/// A deferred function that panics in one of the call's flushes unwinds out of the call. One
/// that panics on another thread leaves the rest of its bag unrun (crossbeam leaks it): if that
/// bag held the marker (the function was deferred on this thread before the call), the call
/// gives up; if it was ahead of the marker, the marker runs all the same and the call cannot
/// tell.
///
/// ```
/// // Nothing is pinned: what was deferred before runs within a few flushes.
/// assert!(ftrt_gil::reclamation::flush_until_caught_up(64).is_some());
/// ```
pub fn flush_until_caught_up(max_flushes: usize) -> Option<usize> {
    let ran = Arc::new(AtomicBool::new(false));
    let marker = Arc::clone(&ran);
    // Release, with the Acquire below: what the thread that ran the marker ran before it (the
    // bags ahead of it that this thread took) is seen done by the caller.
    crossbeam_epoch::pin().defer(move || marker.store(true, Ordering::Release));
    for flushes in 1..=max_flushes {
        crossbeam_epoch::pin().flush();
        if ran.load(Ordering::Acquire) {
            return Some(flushes);
        }
    }
    None
}

/// The waits of every thread since the process started, by how each ended. Waits under way are
/// counted in `begun` and in none of the others, so `begun` is never less than the others'
/// sum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Waits {
    /// Waits begun.
    pub begun: u64,
    /// Ended because the marker ran: what the thread retired before it was due, and has run
    /// or is running (in the object model a batch that ran on another thread may be posted back
    /// to its own, and dropped at that thread's next quiescent state).
    pub caught_up: u64,
    /// Ended at the limit, the marker still waiting for a pinned thread.
    pub timed_out: u64,
    /// Ended early: the checkpoint had somewhere to stop, the thread was attached again by a
    /// function the wait ran, or such a function panicked.
    pub interrupted: u64,
}

/// How a wait ended.
#[cfg_attr(feature = "gil", allow(dead_code))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum WaitEnd {
    CaughtUp,
    TimedOut,
    Interrupted,
}

// Statistics: each count Relaxed on its own, but an end is counted with Release and read with
// Acquire before `BEGUN` is, so a reader that sees an end sees its beginning (`begun` is never
// less than the ends' sum). A reader that needs the counts exact synchronises with the waiting
// threads otherwise (joins them).
static BEGUN: AtomicU64 = AtomicU64::new(0);
static CAUGHT_UP: AtomicU64 = AtomicU64::new(0);
static TIMED_OUT: AtomicU64 = AtomicU64::new(0);
static INTERRUPTED: AtomicU64 = AtomicU64::new(0);

/// The waits so far (see [`Waits`]).
pub fn waits() -> Waits {
    let caught_up = CAUGHT_UP.load(Ordering::Acquire);
    let timed_out = TIMED_OUT.load(Ordering::Acquire);
    let interrupted = INTERRUPTED.load(Ordering::Acquire);
    Waits {
        begun: BEGUN.load(Ordering::Relaxed),
        caught_up,
        timed_out,
        interrupted,
    }
}

#[cfg_attr(feature = "gil", allow(dead_code))]
pub(crate) fn record_begun() {
    BEGUN.fetch_add(1, Ordering::Relaxed);
}

#[cfg_attr(feature = "gil", allow(dead_code))]
pub(crate) fn record_end(end: WaitEnd) {
    let counter = match end {
        WaitEnd::CaughtUp => &CAUGHT_UP,
        WaitEnd::TimedOut => &TIMED_OUT,
        WaitEnd::Interrupted => &INTERRUPTED,
    };
    counter.fetch_add(1, Ordering::Release);
}
