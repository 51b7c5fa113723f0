//! `RawObjectLock`: a one-byte mutex with eventual fairness.

use std::cell::Cell;
use std::time::Duration;

use crate::parking::{park, unpark_filter, FilterOp, ParkResult, ParkToken, UnparkToken};
use crate::spin::Backoff;
use crate::sync::{AtomicU8, Ordering};

const LOCKED: u8 = 0b01;
/// Some thread is (or is about to be) parked on this lock: unlocking must wake one.
const PARKED: u8 = 0b10;

/// The woken thread must compete for the lock again.
const TOKEN_RETRY: UnparkToken = UnparkToken(0);
/// The unlocking thread kept the lock locked and passed it to the woken thread.
const TOKEN_HANDOFF: UnparkToken = UnparkToken(1);

/// A waiter that has been waiting for longer than this (counted from when it first parked, not
/// from its latest wake-up) gets the lock handed to it directly on the next unlock, as CPython's
/// `PyMutex` does, so a stream of threads re-taking the lock cannot starve it.
pub const HANDOFF_AFTER: Duration = Duration::from_millis(1);

/// A mutex in one byte, for embedding in every object's header.
///
/// Uncontended, `lock` and `unlock` are one compare-and-swap each. Contended, a thread spins
/// briefly ([`spin`](crate::spin)'s policy) and then parks in `parking_lot_core`'s global parking lot,
/// keyed by the lock's address. Unlocking wakes one waiter; if that waiter has been waiting for
/// longer than [`HANDOFF_AFTER`] in total, the lock is handed to it directly instead of being
/// released for anyone to grab (eventual fairness). A waiter woken to compete that loses the
/// lock again keeps the time it has waited, so it is handed the lock on the first unlock after
/// that time has passed, however short each hold is.
///
/// This is the raw primitive: [`Mutex`](crate::Mutex) wraps it with a guard, and the
/// [`section`](crate::section) module builds critical sections on it.
pub struct RawObjectLock {
    state: AtomicU8,
}

impl RawObjectLock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
        }
    }

    /// An unlocked lock.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            state: AtomicU8::new(0),
        }
    }

    /// Acquires the lock, waiting as long as it takes.
    #[inline]
    pub fn lock(&self) {
        // Acquire: what the previous holder did under the lock is visible to us.
        if self
            .state
            .compare_exchange_weak(0, LOCKED, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_slow();
        }
    }

    /// Acquires the lock if it is free now.
    #[inline]
    pub fn try_lock(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED != 0 {
                return false;
            }
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

    /// Releases the lock.
    ///
    /// # Safety
    /// The calling context holds the lock (it need not be the thread that took it, as long as
    /// the holder gave up its claim).
    #[inline]
    pub unsafe fn unlock(&self) {
        // Release: publishes what we did under the lock to the next holder.
        if self
            .state
            .compare_exchange(LOCKED, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.unlock_slow();
        }
    }

    /// Whether some thread holds the lock (a snapshot).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Relaxed) & LOCKED != 0
    }

    fn key(&self) -> usize {
        self as *const Self as usize
    }

    #[cold]
    #[inline(never)]
    fn lock_slow(&self) {
        let mut spin = Backoff::new();
        // When this thread first parked: its place in time for the handoff rule. Taken once per
        // acquisition, as CPython's `PyMutex` fixes its fair time once: a waiter woken to retry
        // that loses the lock to a faster thread parks again with its original stamp, so holds
        // shorter than `HANDOFF_AFTER` cannot keep the lock from it for ever.
        let mut parked_since = None;
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & LOCKED == 0 {
                match self.state.compare_exchange_weak(
                    state,
                    state | LOCKED,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return,
                    Err(actual) => state = actual,
                }
                continue;
            }
            // Spin only while nobody is parked: once someone is, the lock is busy enough that
            // spinning mostly burns the holder's core time.
            if state & PARKED == 0 && spin.spin() {
                state = self.state.load(Ordering::Relaxed);
                continue;
            }
            if state & PARKED == 0 {
                if let Err(actual) = self.state.compare_exchange_weak(
                    state,
                    state | PARKED,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    state = actual;
                    continue;
                }
            }
            // Sleep only if the lock is still locked with the parked bit set: the check runs
            // under the parking lot's queue lock, the same lock `unlock_slow` holds while it
            // updates the state, so a wake-up cannot be lost in between.
            let validate = || self.state.load(Ordering::Relaxed) == LOCKED | PARKED;
            let before_sleep = || {};
            let timed_out = |_, _| {};
            let token = ParkToken(*parked_since.get_or_insert_with(fairness::stamp));
            // SAFETY: the key is this lock's address, used only by this lock; the callbacks
            // neither panic nor call into the parking lot.
            match unsafe { park(self.key(), validate, before_sleep, timed_out, token, None) } {
                // The unlocking thread left the lock locked for us. The parking lot's own
                // synchronisation orders its critical section before this point.
                ParkResult::Unparked(TOKEN_HANDOFF) => return,
                ParkResult::Unparked(_) | ParkResult::Invalid | ParkResult::TimedOut => {}
            }
            spin.reset();
            state = self.state.load(Ordering::Relaxed);
        }
    }

    #[cold]
    #[inline(never)]
    fn unlock_slow(&self) {
        let first_waiter_since = Cell::new(None);
        // Wake the longest waiter (queue order), remembering when it started waiting.
        let filter = |ParkToken(since)| {
            if first_waiter_since.get().is_some() {
                return FilterOp::Stop;
            }
            first_waiter_since.set(Some(since));
            FilterOp::Unpark
        };
        // Runs under the queue lock, so the state and the queue change together.
        let callback = |result: crate::parking::UnparkResult| {
            let more = if result.have_more_threads { PARKED } else { 0 };
            if result.unparked_threads != 0
                && first_waiter_since
                    .get()
                    .is_some_and(fairness::waited_too_long)
            {
                self.state.store(LOCKED | more, Ordering::Relaxed);
                return TOKEN_HANDOFF;
            }
            // Release: publishes our critical section to whoever takes the lock next.
            self.state.store(more, Ordering::Release);
            TOKEN_RETRY
        };
        // SAFETY: as in `lock_slow`.
        unsafe { unpark_filter(self.key(), filter, callback) };
    }
}

/// Test hooks that reach into the parking lot, so the unit tests can drive an exact interleaving
/// instead of hoping the scheduler produces it.
#[cfg(all(test, not(loom)))]
impl RawObjectLock {
    /// The park tokens (the instants they started waiting, per [`fairness::stamp`]) of the
    /// threads parked on this lock, in queue order. Wakes nobody.
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
    use std::time::Instant;

    use super::HANDOFF_AFTER;

    fn epoch() -> Instant {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Nanoseconds since the first lock parked, as a park token.
    pub(crate) fn stamp() -> usize {
        epoch().elapsed().as_nanos() as usize
    }

    pub(super) fn waited_too_long(since: usize) -> bool {
        stamp().saturating_sub(since) >= HANDOFF_AFTER.as_nanos() as usize
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
