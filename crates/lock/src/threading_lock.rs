//! `RawThreadingLock`: the lock behind Python's `threading.Lock`, on the object lock's state
//! machine.

use std::fmt;
use std::time::Instant;

use crate::raw::LockByte;
use crate::spin::Backoff;

/// A lock in one byte that any thread may release, with waits that can end at a deadline: the
/// semantics of Python's `threading.Lock`, the design of CPython's `PyMutex`.
///
/// It is [`RawObjectLock`](crate::RawObjectLock)'s state machine (one compare-and-swap to take
/// or release it uncontended; spinning, then parking keyed by its address; a waiter that has
/// waited over [`HANDOFF_AFTER`](crate::HANDOFF_AFTER) handed the lock directly) with a
/// different contract: the lock has no owner, so [`release`](Self::release) is safe, and
/// releasing a lock that is not locked is an error, reported atomically with the release. It
/// can be safe because nothing's soundness rests on holding this lock: no guard, `lock_api`
/// mutex or critical section is built on this type (those use `RawObjectLock`, whose unlock
/// stays `unsafe`).
///
/// Contended throughput degrades gracefully, as `PyMutex`'s does: a release that finds nobody
/// parked is a single compare-and-swap, and a thread woken to retry competes for the lock
/// instead of being queued behind the others.
///
/// ```
/// use ftrt_lock::{NotLocked, RawThreadingLock, Spin};
/// use std::time::{Duration, Instant};
///
/// let lock = RawThreadingLock::new();
/// assert!(lock.try_lock());
/// let deadline = Instant::now() + Duration::from_millis(1);
/// assert!(!lock.lock_until(Some(deadline), Spin::BeforeEachPark), "held: timed out");
/// // Any thread may release it, once.
/// std::thread::scope(|s| s.spawn(|| lock.release()).join().unwrap()).unwrap();
/// assert_eq!(lock.release(), Err(NotLocked));
/// assert!(lock.lock_until(None, Spin::BeforeEachPark));
/// ```
pub struct RawThreadingLock {
    byte: LockByte,
}

/// When a thread waiting in [`RawThreadingLock::lock_until`] spins before it parks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spin {
    /// Before every park, the first included, under the [`spin`](crate::spin) policy, while
    /// no other thread is parked (as [`RawObjectLock`](crate::RawObjectLock) waits).
    BeforeEachPark,
    /// Only after a wake-up: the caller spun before it got ready to block (with
    /// [`RawThreadingLock::try_lock_spinning`]), so the first park comes at once.
    AfterWakeUps,
    /// Never: the holder cannot run while this thread spins (a global interpreter lock keeps
    /// it off the processor), so spinning only delays it.
    Never,
}

/// [`RawThreadingLock::release`] found the lock unlocked (Python raises `RuntimeError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLocked;

impl fmt::Display for NotLocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("release unlocked lock")
    }
}

impl std::error::Error for NotLocked {}

impl RawThreadingLock {
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

    /// Takes the lock if it is free now (`acquire(blocking=False)`). A single compare-and-swap
    /// when the lock is free: it guesses "free, nobody parked" instead of reading the state
    /// first, which would fetch a contended cache line twice (shared, then exclusive).
    #[inline]
    pub fn try_lock(&self) -> bool {
        self.byte.try_lock_from(0)
    }

    /// Takes the lock if it comes free within a short spin (the [`spin`](crate::spin) policy),
    /// giving up once a look finds a thread parked on it. Never sleeps, so a caller that must
    /// prepare before it blocks (release a global lock, say) can spin first and prepare only
    /// if this fails. Whether it took the lock.
    #[cold]
    #[inline(never)]
    pub fn try_lock_spinning(&self) -> bool {
        self.byte.spin_lock(&mut Backoff::new()).is_ok()
    }

    /// Takes the lock, waiting until `deadline` (`None`: as long as it takes), spinning as
    /// `spin` says and otherwise parked. Whether it took the lock: `false` only once the
    /// deadline has passed. A deadline already past still takes a free lock.
    ///
    /// A waiter that times out leaves no trace: the last one to leave clears the lock's parked
    /// bit, so releases take the fast path again.
    pub fn lock_until(&self, deadline: Option<Instant>, spin: Spin) -> bool {
        self.byte.lock_slow(deadline, spin, &mut None)
    }

    /// Releases the lock. Any thread may, not only the one that took it. [`NotLocked`] if it
    /// is not locked; decided atomically with the release, so of two threads releasing one
    /// acquisition exactly one succeeds, unless the lock was taken again between their releases
    /// (then the second release ends that acquisition: the lock has no owner to tell them
    /// apart).
    #[inline]
    pub fn release(&self) -> Result<(), NotLocked> {
        self.byte.unlock()
    }

    /// Whether some thread holds the lock (a snapshot).
    #[inline]
    pub fn is_locked(&self) -> bool {
        self.byte.is_locked()
    }

    /// How many threads are parked waiting for the lock (a snapshot): see
    /// [`RawObjectLock::parked_waiters`](crate::RawObjectLock::parked_waiters).
    #[doc(hidden)]
    #[cfg(not(loom))]
    pub fn parked_waiters(&self) -> usize {
        self.byte.parked_waiters_since().len()
    }
}

/// Test hooks: see `LockByte`'s.
#[cfg(all(test, not(loom)))]
impl RawThreadingLock {
    pub(crate) fn state(&self) -> u8 {
        self.byte.state()
    }
}

#[cfg(loom)]
impl RawThreadingLock {
    /// Whether the lock's parked bit is set (loom models only: a bit left set with nobody
    /// parked sends every later release down the slow path).
    pub fn parked_bit_in_models(&self) -> bool {
        self.byte.parked_bit()
    }
}

impl Default for RawThreadingLock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for RawThreadingLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawThreadingLock")
            .field("locked", &self.is_locked())
            .finish()
    }
}
