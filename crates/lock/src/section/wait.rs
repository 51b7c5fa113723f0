//! The wait a section that has to block hands its stack's hook ([`SectionWait`]).

use std::time::Instant;

use crate::{RawObjectLock, Spin};

/// The wait of a section that has to block for its locks, handed to the stack's
/// [`BlockingWait`](super::BlockingWait) hook, which takes the locks through it: at once, waiting
/// as long as it takes ([`wait`](Self::wait)), or by a deadline
/// ([`wait_until`](Self::wait_until)), for a hook that gives up now and then to do something
/// else meanwhile and then waits again. A runtime whose threads wait for their sections
/// attached, say, lets a stop of the world through between two tries (`ftrt-gil` does). If the
/// hook returns without the locks, the stack takes them itself, waiting as long as it takes.
///
/// A wait that gives up keeps its place in time: the next try is owed the lock's handoff
/// ([`HANDOFF_AFTER`](crate::HANDOFF_AFTER)) as soon as a wait that never gave up would have
/// been. Of two locks it keeps the first while it waits for the second, as any wait does, until
/// the hook gives it back ([`give_back`](Self::give_back)).
///
/// ```
/// use std::time::{Duration, Instant};
/// use ftrt_lock::section::{AfterWait, SectionStack, SectionWait};
/// use ftrt_lock::RawObjectLock;
///
/// fn in_short_tries(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
///     while !wait.wait_until(Instant::now() + Duration::from_millis(1)) {
///         // Before the thread waits for anything else: the first of two locks may be held.
///         wait.give_back();
///         assert!(!wait.holds_any());
///     }
///     None
/// }
///
/// let (stack, lock) = (SectionStack::new(), RawObjectLock::new());
/// stack.set_blocking_wait(Some(in_short_tries));
/// lock.lock();
/// std::thread::scope(|s| {
///     s.spawn(|| {
///         std::thread::sleep(Duration::from_millis(5));
///         // SAFETY: locked below on the scope's thread, which leaves the release to this one.
///         unsafe { lock.unlock() };
///     });
///     stack.with(&lock, || assert!(lock.is_locked()));
/// });
/// ```
pub struct SectionWait<'a> {
    /// The section's locks, lower address first (one lock twice for a one-lock section).
    locks: [&'a RawObjectLock; 2],
    /// How many of them this wait holds, in order: 0, 1 (the first of two, kept while it waits
    /// for the second), or 2 (taken; a one-lock section counts its lock twice).
    held: usize,
    /// Each lock's place in time for the handoff rule, kept across tries that gave up.
    parked_since: [Option<usize>; 2],
}

impl<'a> SectionWait<'a> {
    /// The wait for `locks`, ordered lower address first.
    pub(super) fn new(locks: [&'a RawObjectLock; 2]) -> Self {
        Self {
            locks,
            held: 0,
            parked_since: [None; 2],
        }
    }

    /// Takes the section's locks, waiting as long as it takes; does nothing once they are taken.
    pub fn wait(&mut self) {
        let taken = self.take_within(None);
        debug_assert!(taken, "a wait without a deadline ends with the locks");
    }

    /// Takes the section's locks if it can by `deadline` (one that has passed still takes free
    /// ones); whether they are taken, now or by an earlier call. A try that gives up on the
    /// second of two locks keeps the first, as a wait that never gave up holds it while it waits
    /// for the second: [`give_back`](Self::give_back) lets it go, as a hook must before it waits
    /// for something other than the locks (a stop of the world to end, say), since the thread it
    /// waits for may need the lock it keeps.
    pub fn wait_until(&mut self, deadline: Instant) -> bool {
        self.take_within(Some(deadline))
    }

    /// Whether the wait has taken the section's locks.
    pub fn is_taken(&self) -> bool {
        self.held == 2
    }

    /// Whether the wait holds any of the section's locks: all of them, or the first of two,
    /// kept by a try that gave up.
    pub fn holds_any(&self) -> bool {
        self.held > 0
    }

    /// Gives back every lock of the section the wait holds, taken or kept by a try that gave
    /// up; a later wait or try takes them again, keeping its place in time. Does nothing if it
    /// holds none.
    pub fn give_back(&mut self) {
        match self.held {
            // SAFETY: taken by this wait, and not given back since.
            2 => unsafe { super::stack::unlock_all(self.locks) },
            // SAFETY: as above, the first of the two.
            1 => unsafe { self.locks[0].unlock() },
            _ => {}
        }
        self.held = 0;
    }

    fn take_within(&mut self, deadline: Option<Instant>) -> bool {
        // A wait with a deadline parks at once, spinning only after a wake-up: the stack spun
        // before it called the hook, and a spin before each park of a try could outlast the try
        // (a yield on a loaded machine can keep the thread off its core for milliseconds), and
        // the wait would then never park, nor be woken or handed the lock.
        let spin = if deadline.is_some() {
            Spin::AfterWakeUps
        } else {
            Spin::BeforeEachPark
        };
        let [first, second] = self.locks;
        let [first_since, second_since] = &mut self.parked_since;
        if self.held == 0 {
            if !first.lock_within(deadline, spin, first_since) {
                return false;
            }
            self.held = if std::ptr::eq(first, second) { 2 } else { 1 };
        }
        if self.held == 1 {
            if !second.lock_within(deadline, spin, second_since) {
                return false;
            }
            self.held = 2;
        }
        true
    }
}
