//! Synchronisation objects in the spirit of Python's `threading` module.
//!
//! Each takes the caller's [`Python`] token and, when it has to block, blocks inside
//! [`Python::allow_threads`]: the GIL is released while the thread waits, so the thread that
//! will wake it can run. The uncontended paths never release the GIL.
//!
//! | Python | here |
//! |---|---|
//! | `Lock.acquire(blocking, timeout)` / `release()` / `locked()` | [`Lock::acquire`], [`Lock::try_acquire`], [`Lock::release`], [`Lock::locked`], [`Lock::hold`] (`with lock:`) |
//! | `Event.set()` / `clear()` / `is_set()` / `wait(timeout)` | [`Event`] |
//! | `Semaphore(value)`, `acquire`, `release(n)` | [`Semaphore`] |
//! | `Barrier(parties).wait()` | [`Barrier`] |

use std::fmt;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Python;

/// Waits on `cond` until `done` holds or `timeout` passes; returns whether `done` holds.
fn wait_until<T>(
    cond: &Condvar,
    guard: &mut MutexGuard<'_, T>,
    timeout: Option<Duration>,
    mut done: impl FnMut(&mut T) -> bool,
) -> bool {
    let deadline = timeout.map(|t| Instant::now() + t);
    while !done(guard) {
        match deadline {
            None => cond.wait(guard),
            Some(deadline) => {
                if cond.wait_until(guard, deadline).timed_out() {
                    return done(guard);
                }
            }
        }
    }
    true
}

/// Retries `attempt` briefly. Free-threaded builds: a lock held for a few instructions is
/// usually free again before a detach, park and wake-up round trip would finish. Under the GIL
/// the holder cannot run while we spin, so there we do not.
fn spin(mut attempt: impl FnMut() -> bool) -> bool {
    const SPINS: u32 = if cfg!(feature = "gil") { 0 } else { 100 };
    (0..SPINS).any(|_| {
        std::hint::spin_loop();
        attempt()
    })
}

/// `release` was called on a lock nobody holds (Python raises `RuntimeError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseUnlocked;

impl fmt::Display for ReleaseUnlocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("release unlocked lock")
    }
}

impl std::error::Error for ReleaseUnlocked {}

/// A non-reentrant lock that any thread may release, like `threading.Lock`.
#[derive(Default)]
pub struct Lock {
    locked: Mutex<bool>,
    released: Condvar,
}

impl Lock {
    /// An unlocked lock.
    pub const fn new() -> Self {
        Self {
            locked: Mutex::new(false),
            released: Condvar::new(),
        }
    }

    /// Acquires the lock, waiting up to `timeout` (`None`: forever) with the GIL released.
    /// Returns whether it was acquired.
    pub fn acquire(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        self.try_acquire()
            || spin(|| self.try_acquire())
            || py.allow_threads(|| {
                let mut locked = self.locked.lock();
                let acquired = wait_until(&self.released, &mut locked, timeout, |locked| !*locked);
                if acquired {
                    *locked = true;
                }
                acquired
            })
    }

    /// Acquires the lock if it is free (`acquire(blocking=False)`).
    pub fn try_acquire(&self) -> bool {
        let mut locked = self.locked.lock();
        !std::mem::replace(&mut *locked, true)
    }

    /// Releases the lock; any thread may. An error if it is not locked.
    pub fn release(&self) -> Result<(), ReleaseUnlocked> {
        let mut locked = self.locked.lock();
        if !*locked {
            return Err(ReleaseUnlocked);
        }
        *locked = false;
        self.released.notify_one();
        Ok(())
    }

    /// Whether some thread holds the lock.
    pub fn locked(&self) -> bool {
        *self.locked.lock()
    }

    /// Runs `f` holding the lock (`with lock:`), releasing it afterwards even if `f` panics.
    pub fn hold<R>(&self, py: Python<'_>, f: impl FnOnce() -> R) -> R {
        struct Release<'a>(&'a Lock);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.release().expect("held by this frame");
            }
        }
        self.acquire(py, None);
        let _release = Release(self);
        f()
    }
}

/// A flag threads can wait for, like `threading.Event`.
#[derive(Default)]
pub struct Event {
    flag: Mutex<bool>,
    changed: Condvar,
}

impl Event {
    /// An unset event.
    pub const fn new() -> Self {
        Self {
            flag: Mutex::new(false),
            changed: Condvar::new(),
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        *self.flag.lock() = true;
        self.changed.notify_all();
    }

    /// Clears the flag.
    pub fn clear(&self) {
        *self.flag.lock() = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        *self.flag.lock()
    }

    /// Waits until the flag is set or `timeout` passes (`None`: forever), with the GIL released.
    /// Returns whether the flag is set.
    pub fn wait(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        self.is_set()
            || py.allow_threads(|| {
                let mut flag = self.flag.lock();
                wait_until(&self.changed, &mut flag, timeout, |flag| *flag)
            })
    }
}

/// A counter of permits, like `threading.Semaphore`.
pub struct Semaphore {
    permits: Mutex<usize>,
    released: Condvar,
}

impl Semaphore {
    /// A semaphore holding `permits` permits.
    pub const fn new(permits: usize) -> Self {
        Self {
            permits: Mutex::new(permits),
            released: Condvar::new(),
        }
    }

    /// Takes a permit, waiting up to `timeout` (`None`: forever) with the GIL released. Returns
    /// whether it got one.
    pub fn acquire(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        self.try_acquire()
            || spin(|| self.try_acquire())
            || py.allow_threads(|| {
                let mut permits = self.permits.lock();
                let got = wait_until(&self.released, &mut permits, timeout, |permits| {
                    *permits > 0
                });
                if got {
                    *permits -= 1;
                }
                got
            })
    }

    /// Takes a permit if one is available.
    pub fn try_acquire(&self) -> bool {
        let mut permits = self.permits.lock();
        if *permits == 0 {
            return false;
        }
        *permits -= 1;
        true
    }

    /// Returns `n` permits and wakes up to `n` waiters.
    pub fn release(&self, n: usize) {
        let mut permits = self.permits.lock();
        *permits = permits.saturating_add(n);
        for _ in 0..n.min(*permits) {
            self.released.notify_one();
        }
    }

    /// The permits available now.
    pub fn value(&self) -> usize {
        *self.permits.lock()
    }
}

/// A barrier needs at least one party (Python raises `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoParties;

impl fmt::Display for NoParties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a barrier needs at least one party")
    }
}

impl std::error::Error for NoParties {}

/// A rendezvous for a fixed number of threads, like `threading.Barrier` (without `abort`).
pub struct Barrier {
    parties: usize,
    state: Mutex<BarrierState>,
    all_arrived: Condvar,
}

struct BarrierState {
    arrived: usize,
    generation: u64,
}

impl Barrier {
    /// A barrier for `parties` threads.
    pub fn new(parties: usize) -> Result<Self, NoParties> {
        if parties == 0 {
            return Err(NoParties);
        }
        Ok(Self {
            parties,
            state: Mutex::new(BarrierState {
                arrived: 0,
                generation: 0,
            }),
            all_arrived: Condvar::new(),
        })
    }

    /// Waits, with the GIL released, until `parties` threads are waiting, then releases them
    /// all. Returns the thread's arrival index, `0..parties`, different for each.
    pub fn wait(&self, py: Python<'_>) -> usize {
        let mut state = self.state.lock();
        let index = state.arrived;
        state.arrived += 1;
        if state.arrived == self.parties {
            state.arrived = 0;
            state.generation += 1;
            self.all_arrived.notify_all();
            return index;
        }
        let generation = state.generation;
        drop(state);
        py.allow_threads(|| {
            let mut state = self.state.lock();
            wait_until(&self.all_arrived, &mut state, None, |state| {
                state.generation != generation
            });
        });
        index
    }

    /// How many threads the barrier waits for.
    pub fn parties(&self) -> usize {
        self.parties
    }

    /// How many threads are waiting now.
    pub fn n_waiting(&self) -> usize {
        self.state.lock().arrived
    }
}
