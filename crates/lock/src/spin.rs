//! The spin policy: how long a thread that found something busy keeps trying before it sleeps.
//!
//! One policy for the whole runtime: [`RawObjectLock`](crate::RawObjectLock) spins with it before
//! it parks, and the runtime's blocking primitives (`ftrt_gil::threading`) retry with it before
//! they block. A thread spins in rounds that double in length ([`SPIN_ROUNDS`] of them, 2, 4, 8
//! pause hints), then yields its core ([`YIELD_ROUNDS`] times), then gives up: by then the
//! holder is doing more than a few instructions' work, and sleeping costs less than spinning.
//! Waits whose length is known to be longer, but short of a sleep and a wake-up, spin for a
//! bounded count of hints instead ([`spin_until`]).
//!
//! The spinning thread looks at what it waits for only twice ([`LOOKS`]): after the first round,
//! which catches a holder that was about to let go, and after the last. A look reads the lock's
//! cache line, which takes the line away from the holder's core: the holder's next acquisition or
//! release then waits for it to come back. Under heavy contention, a waiter that looked after every
//! round slowed the holder at each look, and took the lock from it every few acquisitions, moving
//! the line twice each time (two threads taking one `threading.Lock` with only a load and a store
//! inside: 0.84 to 0.88 s looking every round, 0.57 to 0.59 s looking twice, the `gil` build, where
//! only one thread runs, 0.51 s). The price is a release between the two looks, which the waiter
//! misses (with a little work outside the lock, from no difference to 7 % more time for two threads
//! on two cores; `docs/locking.md`), and a thread that parks between them, which the waiter finds
//! only at its next look, spinning on meanwhile. CPython's `PyMutex` spins without looking at all
//! in 3.13 and 3.14, and looks only every few rounds since, for the same reason.
//!
//! ```
//! use std::sync::atomic::{AtomicBool, Ordering};
//! use ftrt_lock::spin;
//!
//! let ready = AtomicBool::new(true);
//! // A cheap attempt, retried a little before the caller falls back to blocking.
//! assert!(spin::retry(|| ready.load(Ordering::Acquire)));
//! assert!(!spin::retry(|| false), "gives up after a bounded wait");
//! ```
//!
//! Under loom spinning only adds interleavings to a model without changing what can happen, so
//! there a backoff gives up at once ([`retry`] still makes its attempt once).

/// Rounds of busy-waiting (2, 4, then 8 pause hints), as `parking_lot`'s `SpinWait`.
pub const SPIN_ROUNDS: u32 = 3;
/// Rounds of yielding the core after the busy rounds, before the caller should sleep.
pub const YIELD_ROUNDS: u32 = 7;
/// How many times a [`Backoff`] lets its caller look at what it waits for: after its first round
/// and after its last (see the [module docs](self)).
pub const LOOKS: u32 = 2;

/// Every round a backoff waits.
const ROUNDS: u32 = SPIN_ROUNDS + YIELD_ROUNDS;

/// A bounded, growing wait between attempts: see the [module docs](self).
#[derive(Debug, Default, Clone)]
pub struct Backoff {
    rounds: u32,
}

impl Backoff {
    /// A backoff that has not waited yet.
    pub const fn new() -> Self {
        Self { rounds: 0 }
    }

    /// A backoff whose rounds are spent: the first [`spin`](Self::spin) gives up at once,
    /// until a [`reset`](Self::reset).
    pub const fn spent() -> Self {
        Self { rounds: ROUNDS }
    }

    /// Waits until the caller should look again: through the first round, or through every
    /// round after it (the busy rounds doubling, then the yields). Returns `false`, without
    /// waiting, once the rounds are spent: the caller should park or block instead.
    #[inline]
    pub fn spin(&mut self) -> bool {
        if cfg!(loom) || self.rounds >= ROUNDS {
            return false;
        }
        loop {
            self.rounds += 1;
            if self.rounds <= SPIN_ROUNDS {
                for _ in 0..1_u32 << self.rounds {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            if self.rounds == 1 || self.rounds == ROUNDS {
                return true;
            }
        }
    }

    /// Starts over, as after a wake-up: the next wait is the shortest again.
    #[inline]
    pub fn reset(&mut self) {
        self.rounds = 0;
    }
}

/// Retries `attempt` at each look of a fresh [`Backoff`] until it succeeds (`true`) or the
/// backoff is spent (`false`: block now).
pub fn retry(mut attempt: impl FnMut() -> bool) -> bool {
    // Under loom a backoff gives up at once, but one attempt is still made: a caller's branch
    // for an attempt that succeeds before it blocks stays within the models' reach.
    if cfg!(loom) {
        return attempt();
    }
    let mut backoff = Backoff::new();
    while backoff.spin() {
        if attempt() {
            return true;
        }
    }
    false
}

/// Busy-waits for `ready`, checking it between pause hints, at most `hints` of them: for a wait
/// whose usual length is known and longer than a [`Backoff`]'s, but shorter than sleeping and
/// being woken (a stop of the world: tens to hundreds of microseconds). Whether it became
/// ready; gives up at once under loom.
pub fn spin_until(ready: impl Fn() -> bool, hints: u32) -> bool {
    if cfg!(loom) {
        return false;
    }
    for _ in 0..hints {
        if ready() {
            return true;
        }
        std::hint::spin_loop();
    }
    ready()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_backoff_lets_its_caller_look_a_bounded_number_of_times_and_starts_over_on_reset() {
        let mut backoff = Backoff::new();
        let looks = std::iter::from_fn(|| backoff.spin().then_some(())).count();
        assert_eq!(looks as u32, LOOKS);
        assert!(!backoff.spin(), "spent: the caller should sleep");
        backoff.reset();
        assert!(backoff.spin());
    }

    #[test]
    fn a_backoff_looks_after_its_first_round_and_after_all_the_others() {
        let mut backoff = Backoff::new();
        assert!(backoff.spin());
        assert_eq!(backoff.rounds, 1, "the first look comes after one round");
        assert!(backoff.spin());
        assert_eq!(
            backoff.rounds, ROUNDS,
            "the second, after every other round"
        );
    }

    #[test]
    fn retry_stops_at_the_first_success() {
        let mut attempts = 0;
        assert!(retry(|| {
            attempts += 1;
            attempts == 2
        }));
        assert_eq!(attempts, 2);
    }

    #[test]
    fn spin_until_checks_a_bounded_number_of_times() {
        let checks = std::cell::Cell::new(0);
        let never = || {
            checks.set(checks.get() + 1);
            false
        };
        assert!(!spin_until(never, 5));
        assert_eq!(checks.get(), 6, "once per hint, and once after the last");
        assert!(spin_until(|| true, 0));
    }
}
