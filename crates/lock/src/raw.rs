//! The lock byte's state machine, and `RawObjectLock`, the one-byte mutex built on it.
//!
//! [`LockByte`] is shared by both lock types of the crate: [`RawObjectLock`], which only the
//! holder may unlock, and [`RawThreadingLock`](crate::RawThreadingLock), which any thread may
//! release and which can wait with a deadline. They differ in their contracts, not in their
//! states or transitions.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::parking::{park, unpark_filter, FilterOp, ParkResult, ParkToken, UnparkToken};
use crate::spin::Backoff;
use crate::sync::{AtomicU8, Ordering};
use crate::threading_lock::{NotLocked, Spin};

pub(crate) const LOCKED: u8 = 0b01;
/// Some thread is (or is about to be) parked on this lock: unlocking must wake one.
pub(crate) const PARKED: u8 = 0b10;

#[cfg(any(test, loom))]
std::thread_local! {
    /// How many acquisitions this thread was handed by an unlock (tests tell a handoff from a
    /// release they raced to take). Under loom, a model's threads all run on the test's own
    /// thread, so it counts the handoffs of every schedule a model explored.
    pub(crate) static HANDOFFS_RECEIVED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// What a waiting thread did and when, for tests that check the timing of a wait from its
/// thread's own clock readings instead of hoping to catch it in the act from another thread.
#[cfg(all(test, not(loom)))]
pub(crate) mod wait_log {
    use std::cell::RefCell;
    use std::sync::{Arc, Mutex};

    /// One step of a wait, with the [`stamp`](super::fairness::stamp) read just before it (once
    /// the log is taken).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum WaitStep {
        /// About to enter the queue (the stamp is read before it does).
        Parks(usize),
        /// Woken to compete, found the lock taken (the stamp is read after it did).
        LosesAfterAWakeUp(usize),
    }

    /// The steps of a thread's waits, in order, readable from any thread.
    pub(crate) type WaitLog = Arc<Mutex<Vec<WaitStep>>>;

    std::thread_local! {
        /// Where this thread's wait steps go, if anywhere.
        pub(crate) static LOG: RefCell<Option<WaitLog>> = const { RefCell::new(None) };
    }

    /// Logs `step`, stamped once the log is taken: a thread held up waiting for the log (the
    /// test polls it) is held up before its stamp, so the wait cannot pass for part of a step.
    pub(super) fn record(step: fn(usize) -> WaitStep) {
        // A thread-local destructor's wait after `LOG`'s teardown logs nothing.
        let _torn_down = LOG.try_with(|log| {
            if let Some(log) = &*log.borrow() {
                let mut log = log.lock().expect("a test's log");
                log.push(step(super::fairness::stamp()));
            }
        });
    }
}

/// The woken thread must compete for the lock again.
const TOKEN_RETRY: UnparkToken = UnparkToken(0);
/// The unlocking thread kept the lock locked and passed it to the woken thread.
const TOKEN_HANDOFF: UnparkToken = UnparkToken(1);

/// A waiter at the head of the queue that has been waiting for longer than this (counted from
/// when it first parked, not from its latest wake-up) gets the lock handed to it directly on the
/// next unlock, as CPython's `PyMutex` does, so a stream of threads re-taking the lock cannot
/// starve it. Only the head is looked at: a waiter woken to retry that loses the lock sleeps a
/// while off the queue (as long as it has waited, at most until it has waited this long) and
/// then parks again at the tail, behind waiters that came after it, and its turn comes once
/// they have been woken (each one unlock, which a faster thread may take), as in `PyMutex`.
pub const HANDOFF_AFTER: Duration = Duration::from_millis(1);

/// One byte of lock state (`LOCKED`, `PARKED`) and every transition of it: taking the lock,
/// spinning for it, parking on it (keyed by its address) with or without a deadline, and
/// releasing it, waking one waiter or handing the lock to a waiter that has waited too long.
///
/// Whoever may release is the wrapping type's contract; the byte itself makes a release atomic
/// either way (it fails, rather than corrupting the state, if the lock is not held), so a lock
/// that any thread may release needs nothing more.
pub(crate) struct LockByte {
    state: AtomicU8,
}

impl LockByte {
    #[cfg(not(loom))]
    pub(crate) const fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
        }
    }

    #[cfg(loom)]
    pub(crate) fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
        }
    }

    /// Takes the lock if it is free and nobody is parked: one compare-and-swap.
    #[inline]
    pub(crate) fn lock_fast(&self) -> bool {
        // Acquire: what the previous holder did under the lock is visible to us.
        self.state
            .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Takes the lock if it is free, starting from `state` as the guess of the current state.
    #[inline]
    pub(crate) fn try_lock_from(&self, mut state: u8) -> bool {
        loop {
            if state & LOCKED != 0 {
                return false;
            }
            // Acquire: as in `lock_fast`.
            match self.state.compare_exchange_weak(
                state,
                state | LOCKED,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => state = actual,
            }
        }
    }

    /// Takes the lock if it is free now, reading the state first (no write to a busy lock).
    #[inline]
    pub(crate) fn try_lock(&self) -> bool {
        self.try_lock_from(self.state.load(Ordering::Relaxed))
    }

    /// Releases the lock, or reports that it was not locked. The report is atomic with the
    /// release: of two threads releasing one acquisition, exactly one succeeds, unless the lock
    /// was taken again between their releases (then the second release ends that acquisition,
    /// as a release made after it would).
    #[inline]
    pub(crate) fn unlock(&self) -> Result<(), NotLocked> {
        // Release: publishes what we did under the lock to the next holder.
        match self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => Ok(()),
            // The failed exchange read the state atomically: not locked at that moment.
            Err(state) if state & LOCKED == 0 => Err(NotLocked),
            Err(_) => self.unlock_slow(),
        }
    }

    #[inline]
    pub(crate) fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    fn key(&self) -> usize {
        self as *const Self as usize
    }

    /// Tries for the lock, spinning between tries under `backoff` (which says when to look
    /// again), until a look finds someone parked. `Err` carries the state last seen once the
    /// caller should park instead: someone is parked already, or the backoff is spent.
    pub(crate) fn spin_lock(&self, backoff: &mut Backoff) -> Result<(), u8> {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED == 0 {
                // Acquire: as in `lock_fast`.
                match self.state.compare_exchange_weak(
                    state,
                    state | LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(()),
                    Err(actual) => state = actual,
                }
                continue;
            }
            // Spin on only while nobody is parked, as far as the last look saw: once someone is,
            // the lock is busy enough that spinning mostly burns the holder's core time. (A
            // thread that parks between two looks is seen at the next one: looking sooner
            // would take the lock's line from the holder, see `spin`.)
            if state & PARKED != 0 || !backoff.spin() {
                return Err(state);
            }
            state = self.state.load(Ordering::Relaxed);
        }
    }

    /// Takes the lock, spinning as `spin` says and parking in between, until `deadline` passes
    /// (`None`: as long as it takes). Whether it took the lock.
    ///
    /// `parked_since` is the wait's place in time for the handoff rule: `None` for a fresh
    /// wait, set when it first parks, and left set when it times out, so that a caller that
    /// waits again for the same acquisition (a section's wait that gives up now and then to
    /// look around, `section::SectionWait::wait_until`) keeps the time it has waited.
    #[cold]
    #[inline(never)]
    pub(crate) fn lock_slow(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        parked_since: &mut Option<usize>,
    ) -> bool {
        let mut backoff = match spin {
            Spin::BeforeEachPark => Backoff::new(),
            Spin::AfterWakeUps | Spin::Never => Backoff::spent(),
        };
        // When this thread first parked: its place in time for the handoff rule. Taken once per
        // acquisition, as CPython's `PyMutex` fixes its fair time once: a waiter woken to retry
        // that loses the lock to a faster thread parks again with its original stamp, so holds
        // shorter than `HANDOFF_AFTER` cannot keep the lock from it for ever. The caller's, so
        // that it lasts across timed waits for one acquisition.
        // Woken to compete, this thread has not had the lock since.
        let mut woken_to_retry = false;
        loop {
            let state = match self.spin_lock(&mut backoff) {
                Ok(()) => return true,
                Err(state) => state,
            };
            // Past the deadline, do not set the parked bit: the holder's unlock would take the
            // slow path for a waiter that is already leaving.
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                return false;
            }
            // Woken, and another thread took the lock first: it is being taken back to back.
            // Parked again at once, this thread would be woken by the next unlock to lose
            // again, each time costing the holder a wake-up and both threads the lock's cache
            // line (two threads taking one lock around a counter increment made 125,000 futex
            // calls in a second this way). So it sleeps off the queue first, as long as it has
            // waited so far (a loss every few microseconds becomes one every millisecond within
            // a few rounds), and no later than its handoff time; then it parks with its first
            // stamp, and at the head of the queue it is handed the lock once that is over
            // `HANDOFF_AFTER` old.
            if std::mem::take(&mut woken_to_retry) {
                #[cfg(all(test, not(loom)))]
                wait_log::record(wait_log::WaitStep::LosesAfterAWakeUp);
                if let Some(since) = *parked_since {
                    sit_out(since, deadline);
                    continue;
                }
            }
            if state & PARKED == 0
                && self
                    .state
                    .compare_exchange_weak(
                        state,
                        state | PARKED,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    )
                    .is_err()
            {
                continue;
            }
            // Sleep only if the lock is still locked with the parked bit set: the check runs
            // under the parking lot's queue lock, the same lock `unlock_slow` and `timed_out`
            // hold while they update the state, so a wake-up cannot be lost in between.
            let validate = || self.state.load(Ordering::Relaxed) == LOCKED | PARKED;
            let before_sleep = || {};
            // Runs under the queue lock once the deadline has passed and this thread is off the
            // queue. The last waiter to leave clears the bit, so that unlocks take the fast path
            // again; a thread about to park validates under the same lock, finds the bit clear
            // and sets it again, so no waiter is left parked without it.
            let timed_out = |_key, was_last_thread: bool| {
                if was_last_thread {
                    self.state.fetch_and(!PARKED, Ordering::Relaxed);
                }
            };
            let token = ParkToken(*parked_since.get_or_insert_with(fairness::stamp));
            #[cfg(all(test, not(loom)))]
            wait_log::record(wait_log::WaitStep::Parks);
            // SAFETY: the key is this lock's address, used only by this lock; the callbacks
            // neither panic nor call into the parking lot.
            match unsafe {
                park(
                    self.key(),
                    validate,
                    before_sleep,
                    timed_out,
                    token,
                    deadline,
                )
            } {
                // The unlocking thread left the lock locked for us. The parking lot's own
                // synchronisation orders its critical section before this point.
                ParkResult::Unparked(TOKEN_HANDOFF) => {
                    #[cfg(any(test, loom))]
                    HANDOFFS_RECEIVED.with(|n| n.set(n.get() + 1));
                    return true;
                }
                ParkResult::TimedOut => return false,
                ParkResult::Unparked(_) => woken_to_retry = true,
                ParkResult::Invalid => {}
            }
            if spin != Spin::Never {
                backoff.reset();
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) -> Result<(), NotLocked> {
        let first_waiter_since = Cell::new(None);
        let released = Cell::new(Ok(()));
        // Wake the waiter at the head of the queue, remembering when it first parked. (Not
        // necessarily the one that has waited longest: one that lost a retry parked again at
        // the tail; see `HANDOFF_AFTER`.)
        let filter = |ParkToken(since)| {
            if first_waiter_since.get().is_some() {
                return FilterOp::Stop;
            }
            first_waiter_since.set(Some(since));
            FilterOp::Unpark
        };
        // Runs under the queue lock, so the parked bit and the queue change together.
        let callback = |result: crate::parking::UnparkResult| {
            let more = if result.have_more_threads { PARKED } else { 0 };
            let handoff = result.unparked_threads != 0
                && first_waiter_since
                    .get()
                    .is_some_and(fairness::waited_too_long);
            // A compare-and-swap, not a store: the state may have changed since `unlock` read
            // it. A waiter that timed out may have cleared the parked bit, letting other
            // threads' fast paths in: another release, then an acquisition.
            let mut state = self.state.load(Ordering::Relaxed);
            loop {
                let (next, token, outcome) = if state & LOCKED == 0 {
                    // Released by another thread since `unlock` saw it locked. The waiter just
                    // woken competes for the lock like anyone.
                    (more, TOKEN_RETRY, Err(NotLocked))
                } else if handoff {
                    (LOCKED | more, TOKEN_HANDOFF, Ok(()))
                } else {
                    (more, TOKEN_RETRY, Ok(()))
                };
                // Release: publishes our critical section to whoever takes the lock next.
                match self.state.compare_exchange_weak(
                    state,
                    next,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        released.set(outcome);
                        return token;
                    }
                    Err(actual) => state = actual,
                }
            }
        };
        // SAFETY: as in `lock_slow`.
        unsafe { unpark_filter(self.key(), filter, callback) };
        released.get()
    }
}

/// Sleeps as long as a waiter first parked at `since` has waited so far, but not past the time it
/// is owed a handoff, nor past `deadline`: a waiter that lost the lock after a wake-up sits out
/// (see `LockByte::lock_slow`). Never longer than it has waited, so a lock that comes free
/// meanwhile keeps it at most twice as long as it would have waited parked. Under loom time
/// does not pass, and a model's waiter goes on at once: sleeping holds nothing and publishes
/// nothing, so the schedules the model explores without it are the ones that matter.
fn sit_out(since: usize, deadline: Option<Instant>) {
    #[cfg(not(loom))]
    {
        let (waited, left) = fairness::waited_and_left_before_handoff(since);
        // Read after the stamp: a thread descheduled between the two reads then sleeps a little
        // longer, instead of queueing again before it has sat out as long as it had waited.
        let now = Instant::now();
        let mut until = now + waited.min(left);
        if let Some(deadline) = deadline {
            until = until.min(deadline);
        }
        if until > now {
            std::thread::sleep(until - now);
        }
    }
    #[cfg(loom)]
    let _ = (since, deadline);
}

#[cfg(not(loom))]
impl LockByte {
    /// The park tokens (the instants they started waiting, per [`fairness::stamp`]) of the
    /// threads parked on this lock, in queue order. Wakes nobody. For tests, which wait with
    /// it for a thread to block (`parked_waiters`), instead of sleeping and hoping it has.
    pub(crate) fn parked_waiters_since(&self) -> Vec<usize> {
        let mut since = Vec::new();
        let filter = |ParkToken(token)| {
            since.push(token);
            FilterOp::Skip
        };
        // SAFETY: as in `lock_slow`; nothing is unparked, so the state is left alone.
        unsafe { unpark_filter(self.key(), filter, |_| TOKEN_RETRY) };
        since
    }
}

/// Test hooks that reach into the parking lot and the state, so the unit tests can drive an
/// exact interleaving instead of hoping the scheduler produces it.
#[cfg(all(test, not(loom)))]
impl LockByte {
    /// The state byte now (`LOCKED`, `PARKED`).
    pub(crate) fn state(&self) -> u8 {
        self.state.load(Ordering::Relaxed)
    }

    /// Wakes the longest waiter with "retry" while the lock stays locked: what the waiter sees
    /// when the holder unlocks and takes the lock again before the waiter gets to run.
    ///
    /// The caller holds the lock.
    pub(crate) fn wake_a_waiter_to_find_the_lock_retaken(&self) {
        let mut woken = false;
        let filter = |_| {
            if std::mem::replace(&mut woken, true) {
                FilterOp::Stop
            } else {
                FilterOp::Unpark
            }
        };
        let callback = |result: crate::parking::UnparkResult| {
            let more = if result.have_more_threads { PARKED } else { 0 };
            self.state.store(LOCKED | more, Ordering::Relaxed);
            TOKEN_RETRY
        };
        // SAFETY: as in `lock_slow`.
        unsafe { unpark_filter(self.key(), filter, callback) };
    }
}

#[cfg(loom)]
impl LockByte {
    /// Whether the parked bit is set (loom models only).
    pub(crate) fn parked_bit(&self) -> bool {
        self.state.load(Ordering::Relaxed) & PARKED != 0
    }
}

/// A mutex in one byte, for embedding in every object's header.
///
/// Uncontended, `lock` and `unlock` are one compare-and-swap each. Contended, a thread spins
/// briefly ([`spin`](crate::spin)'s policy) and then parks in `parking_lot_core`'s global parking
/// lot, keyed by the lock's address. Unlocking wakes the waiter at the head of the queue; if that
/// waiter has been waiting for longer than [`HANDOFF_AFTER`] in total, the lock is handed to it
/// directly instead of being released for anyone to grab (eventual fairness). A waiter woken to
/// compete that loses the lock again keeps the time it has waited, sleeps as long again (at most
/// until it has waited [`HANDOFF_AFTER`]: the lock is being taken back to back, and waking it at
/// each unlock would only slow the holder down), and parks at the tail: alone in the queue, it
/// is handed the lock on the first unlock once its wait is over [`HANDOFF_AFTER`], however
/// short each hold is; behind others, once each of them has been woken.
///
/// This is the raw primitive: [`Mutex`](crate::Mutex) wraps it with a guard, and the
/// [`section`](crate::section) module builds critical sections on it. Only the holder may
/// unlock it ([`unlock`](Self::unlock) is `unsafe`); for a lock any thread may release, see
/// [`RawThreadingLock`](crate::RawThreadingLock).
pub struct RawObjectLock {
    byte: LockByte,
}

impl RawObjectLock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            byte: LockByte::new(),
        }
    }

    /// An unlocked lock.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            byte: LockByte::new(),
        }
    }

    /// Acquires the lock, waiting as long as it takes.
    #[inline]
    pub fn lock(&self) {
        self.lock_with(Spin::BeforeEachPark);
    }

    /// Acquires the lock, waiting as long as it takes, spinning as `spin` says.
    #[inline(always)]
    fn lock_with(&self, spin: Spin) {
        let locked = self.lock_within(None, spin, &mut None);
        debug_assert!(locked, "a wait without a deadline ends with the lock");
    }

    /// Acquires the lock if it can by `deadline` (`None`: as long as it takes), spinning as
    /// `spin` says; whether it did. `parked_since` carries the wait's place in
    /// time for the handoff rule ([`HANDOFF_AFTER`]) from one call to the next: `None` for a
    /// fresh wait, and the same value again for another try at the same acquisition, so that a
    /// waiter that gives up now and then and comes back is owed the handoff as soon as one
    /// that stayed parked. Always inlined: its first half is [`lock`](Self::lock)'s fast path.
    #[inline(always)]
    pub(crate) fn lock_within(
        &self,
        deadline: Option<Instant>,
        spin: Spin,
        parked_since: &mut Option<usize>,
    ) -> bool {
        self.byte.lock_fast() || self.byte.lock_slow(deadline, spin, parked_since)
    }

    /// Acquires the lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.byte.try_lock()
    }

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling context holds the lock (it need not be the thread that took it, as long as
    /// the holder gave up its claim). A lock a critical section holds is the section's
    /// ([`section`](crate::section)), which releases it at its end: unlocked inside it, the
    /// section's end would release it a second time, perhaps another thread's acquisition.
    #[inline]
    pub unsafe fn unlock(&self) {
        let released = self.byte.unlock();
        debug_assert!(released.is_ok(), "unlocked a lock nobody held");
    }

    /// Whether some thread holds the lock (a snapshot).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.byte.is_locked()
    }

    /// How many threads are parked waiting for the lock (a snapshot; it takes the parking lot's
    /// lock for this lock's queue). For tests that must know a waiter has blocked before they
    /// let the lock go, instead of sleeping and hoping it has.
    #[doc(hidden)]
    #[cfg(not(loom))]
    pub fn parked_waiters(&self) -> usize {
        self.byte.parked_waiters_since().len()
    }
}

/// Test hooks: see `LockByte`'s.
#[cfg(all(test, not(loom)))]
impl RawObjectLock {
    pub(crate) fn parked_waiters_since(&self) -> Vec<usize> {
        self.byte.parked_waiters_since()
    }

    /// The caller holds the lock.
    pub(crate) fn wake_a_waiter_to_find_the_lock_retaken(&self) {
        self.byte.wake_a_waiter_to_find_the_lock_retaken()
    }

    /// [`lock`](Self::lock), but parking without spinning first, before the first park and
    /// after each wake-up (whose spinning yields, and on a loaded machine a yield can keep a
    /// thread off its core for milliseconds). What the waiter does between its parks is the
    /// same for every spin policy.
    pub(crate) fn lock_without_spinning(&self) {
        self.lock_with(Spin::Never);
    }
}

impl Default for RawObjectLock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RawObjectLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawObjectLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}

// SAFETY: `lock` and `try_lock` grant exclusive ownership until `unlock`, with acquire/release
// ordering, and `unlock` is only called by the context that owns the lock.
#[cfg(not(loom))]
unsafe impl lock_api::RawMutex for RawObjectLock {
    #[allow(clippy::declare_interior_mutable_const)]
    const INIT: Self = Self::new();
    type GuardMarker = lock_api::GuardNoSend;

    #[inline]
    fn lock(&self) {
        RawObjectLock::lock(self)
    }

    #[inline]
    fn try_lock(&self) -> bool {
        RawObjectLock::try_lock(self)
    }

    #[inline]
    unsafe fn unlock(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { RawObjectLock::unlock(self) }
    }

    #[inline]
    fn is_locked(&self) -> bool {
        RawObjectLock::is_locked(self)
    }
}

/// When a waiter has waited long enough to be handed the lock.
#[cfg(not(loom))]
pub(crate) mod fairness {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use super::HANDOFF_AFTER;

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Nanoseconds since the first lock parked, as a park token: modulo 2^32 on 32-bit
    /// targets, where it wraps every 4.3 s.
    pub(crate) fn stamp() -> usize {
        epoch().elapsed().as_nanos() as usize
    }

    pub(super) fn waited_too_long(since: usize) -> bool {
        waited_too_long_at(stamp(), since)
    }

    /// How long a waiter stamped `since` has waited, and how long it has left to wait before it
    /// is owed a handoff (zero once it is).
    pub(super) fn waited_and_left_before_handoff(since: usize) -> (Duration, Duration) {
        let waited = Duration::from_nanos(stamp().wrapping_sub(since) as u64);
        (waited, HANDOFF_AFTER.saturating_sub(waited))
    }

    /// Whether a waiter stamped `since` has waited long enough at `now`. The difference wraps,
    /// so that a stamp taken just before the counter wrapped (32-bit targets) still reads the
    /// time waited, not zero.
    pub(crate) fn waited_too_long_at(now: usize, since: usize) -> bool {
        now.wrapping_sub(since) >= HANDOFF_AFTER.as_nanos() as usize
    }
}

/// Under loom time does not pass; the models choose handoff or release per waiter.
#[cfg(loom)]
mod fairness {
    /// Waiters whose stamp is odd are handed the lock.
    pub(super) fn stamp() -> usize {
        super::HANDOFF_IN_MODELS.with(|h| usize::from(h.get()))
    }

    pub(super) fn waited_too_long(since: usize) -> bool {
        since & 1 == 1
    }
}

#[cfg(loom)]
loom::thread_local! {
    static HANDOFF_IN_MODELS: Cell<bool> = Cell::new(false);
}

/// Makes the calling thread's future waits ask for a direct handoff (loom models only: there is
/// no time in a model, so "waited over a millisecond" is chosen instead).
#[cfg(loom)]
pub fn request_handoff_in_models(handoff: bool) {
    HANDOFF_IN_MODELS.with(|h| h.set(handoff));
}

/// How many acquisitions were handed over by an unlock in the models the calling test ran so
/// far, over every schedule they explored (loom only): a model that asks for handoffs checks
/// that its schedules reached one, and one that does not, that none happened.
#[cfg(loom)]
pub fn handoffs_received_in_models() -> usize {
    HANDOFFS_RECEIVED.with(Cell::get)
}
