//! Synchronisation objects in the spirit of Python's `threading` module.
//!
//! Each takes the caller's [`Python`] token and, when it has to block, blocks inside
//! [`Python::allow_threads`]: the GIL is released while the thread waits, so the thread that
//! will wake it can run. The uncontended paths never release the GIL, and neither does the
//! brief spinning of the free-threaded builds before they block.
//!
//! | Python | here |
//! |---|---|
//! | `Lock.acquire(blocking, timeout)` / `release()` / `locked()` | [`Lock::acquire`], [`Lock::try_acquire`], [`Lock::release`], [`Lock::locked`], [`Lock::hold`] (`with lock:`) |
//! | `Event.set()` / `clear()` / `is_set()` / `wait(timeout)` | [`Event`] |
//! | `Semaphore(value)`, `acquire`, `release(n)` | [`Semaphore`] |
//! | `Barrier(parties).wait()` | [`Barrier`] |

use std::fmt;
use std::time::{Duration, Instant};

use ftrt_lock::{RawThreadingLock, Spin};
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::Python;

/// When a wait of `timeout` (`None`: forever) that starts now ends. A timeout too long to
/// represent as an instant (`Duration::MAX`, say) means no deadline, as std's and
/// parking_lot's `Condvar::wait_timeout` treat it, rather than a panic in `Instant + Duration`.
fn deadline_after(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|timeout| Instant::now().checked_add(timeout))
}

/// Whether a wait that ends at `deadline` (`None`: never) has no time left. Such a wait
/// returns at once instead of detaching: a detach, and the attach after it, would only let
/// other threads in (in the `gil` build, hand them the GIL) for nothing.
fn spent(deadline: Option<Instant>) -> bool {
    deadline.is_some_and(|deadline| Instant::now() >= deadline)
}

/// Waits on `cond` until `done` holds or `deadline` passes; returns whether `done` holds.
fn wait_until<T>(
    cond: &Condvar,
    guard: &mut MutexGuard<'_, T>,
    deadline: Option<Instant>,
    mut done: impl FnMut(&mut T) -> bool,
) -> bool {
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

/// Whether a thread that found something busy spins before it blocks. Free-threaded builds:
/// a lock held for a few instructions is usually free again before a detach, park and wake-up
/// round trip would finish. Under the GIL the holder cannot run while we spin, so there we do
/// not.
const SPIN: bool = !cfg!(feature = "gil");

/// Retries `attempt` briefly, under the runtime's one spin policy ([`ftrt_lock::spin`]), where
/// [`SPIN`] allows it.
fn spin(attempt: impl FnMut() -> bool) -> bool {
    SPIN && ftrt_lock::spin::retry(attempt)
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
///
/// One byte, [`RawThreadingLock`]: CPython's `PyMutex` design, as the object locks use it.
/// Uncontended, [`acquire`](Self::acquire) and [`release`](Self::release) are one
/// compare-and-swap each. Contended, a thread spins briefly while attached (free-threaded
/// builds only), then detaches ([`Python::allow_threads`]) and parks; a release that finds a
/// thread parked wakes one, which competes for the lock again (or, once it has waited over
/// [`ftrt_lock::HANDOFF_AFTER`], is handed it); one that loses sleeps as long as it has waited
/// before it parks again, rather than be woken by the next release to lose again. Throughput
/// under contention degrades gracefully: threads that keep re-taking the lock do so with single
/// atomic operations, without a sleep and a wake-up for each acquisition.
#[derive(Default)]
pub struct Lock {
    raw: RawThreadingLock,
}

impl Lock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            raw: RawThreadingLock::new(),
        }
    }

    /// An unlocked lock.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            raw: RawThreadingLock::new(),
        }
    }

    /// Acquires the lock, waiting up to `timeout` (`None`: forever) with the GIL released.
    /// Returns whether it was acquired.
    #[inline]
    pub fn acquire(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        crate::assert_attached();
        self.raw.try_lock() || self.acquire_contended(py, timeout)
    }

    #[cold]
    #[inline(never)]
    fn acquire_contended(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        let deadline = deadline_after(timeout);
        // Spin attached: a detach and the attach after it cost more than most holds last.
        if SPIN && self.raw.try_lock_spinning() {
            return true;
        }
        if spent(deadline) {
            // `timeout` zero, or spent spinning. One last look: a release before the deadline
            // passed counts.
            return self.raw.try_lock();
        }
        let spin = if SPIN {
            Spin::AfterWakeUps
        } else {
            Spin::Never
        };
        take_detached(
            py,
            || self.raw.lock_until(deadline, spin),
            || {
                let _ = self.raw.release();
            },
        )
    }

    /// Acquires the lock if it is free (`acquire(blocking=False)`).
    #[inline]
    pub fn try_acquire(&self) -> bool {
        self.raw.try_lock()
    }

    /// Releases the lock; any thread may. An error if it is not locked.
    #[inline]
    pub fn release(&self) -> Result<(), ReleaseUnlocked> {
        self.raw.release().map_err(|_| ReleaseUnlocked)
    }

    /// Whether some thread holds the lock.
    #[inline]
    pub fn locked(&self) -> bool {
        self.raw.is_locked()
    }

    /// How many threads are parked waiting for the lock (a snapshot), for tests that must know
    /// an acquirer has blocked before they release.
    #[doc(hidden)]
    #[cfg(not(loom))]
    pub fn parked_waiters(&self) -> usize {
        self.raw.parked_waiters()
    }

    /// Runs `f` holding the lock (`with lock:`), releasing it afterwards even if `f` panics.
    ///
    /// # Panics
    /// If `f` returns with the lock unlocked (it released the lock and no thread took it
    /// again), as Python's `with lock:` raises when its body released the lock. A panicking `f`
    /// that left it unlocked unwinds with its own panic.
    pub fn hold<R>(&self, py: Python<'_>, f: impl FnOnce() -> R) -> R {
        crate::assert_attached();
        struct Release<'a>(&'a Lock);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                // A second panic while `f`'s unwinds would abort the process.
                if self.0.release().is_err() && !std::thread::panicking() {
                    panic!("the lock was released inside `hold` and left unlocked");
                }
            }
        }
        self.acquire(py, None);
        let _release = Release(self);
        f()
    }
}

/// A flag threads can wait for, like `threading.Event`.
///
/// As in Python, [`set`](Self::set) wakes every thread already waiting, even if the flag is
/// cleared again before they run: [`wait`](Self::wait) returns `true` if the flag was set at any
/// moment after the wait began, not only if it is still set when the waiter wakes.
#[derive(Default)]
pub struct Event {
    state: Mutex<EventState>,
    changed: Condvar,
}

#[derive(Default)]
struct EventState {
    flag: bool,
    /// Counts the calls to `set`: a waiter that sees it change knows it was set while it
    /// waited, whatever the flag says by the time the waiter runs.
    sets: u64,
    /// Threads blocked in `wait`.
    waiting: usize,
}

impl Event {
    /// An unset event.
    pub const fn new() -> Self {
        Self {
            state: Mutex::new(EventState {
                flag: false,
                sets: 0,
                waiting: 0,
            }),
            changed: Condvar::new(),
        }
    }

    /// Sets the flag and wakes every waiter.
    pub fn set(&self) {
        let mut state = self.state.lock();
        state.flag = true;
        state.sets = state.sets.wrapping_add(1);
        drop(state);
        self.changed.notify_all();
    }

    /// Clears the flag. Threads that were waiting when it was last set still return `true`.
    pub fn clear(&self) {
        self.state.lock().flag = false;
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.state.lock().flag
    }

    /// Waits until the flag is set or `timeout` passes (`None`: forever), with the GIL released.
    /// Returns whether the flag was set at some moment after the call began: `false` only when
    /// the timeout passed without a [`set`](Self::set). A zero timeout only reads the flag
    /// (the thread stays attached).
    pub fn wait(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        crate::assert_attached();
        let deadline = deadline_after(timeout);
        let sets_when_begun = {
            let state = self.state.lock();
            if state.flag {
                return true;
            }
            // Under the lock: a `set` after this look comes after the deadline.
            if spent(deadline) {
                return false;
            }
            state.sets
        };
        py.allow_threads(|| {
            let mut state = self.state.lock();
            state.waiting += 1;
            let set = wait_until(&self.changed, &mut state, deadline, |state| {
                state.flag || state.sets != sets_when_begun
            });
            state.waiting -= 1;
            set
        })
    }

    /// How many threads are blocked in [`wait`](Self::wait) now.
    pub fn n_waiting(&self) -> usize {
        self.state.lock().waiting
    }
}

/// `Semaphore::release(0)`: a release returns at least one permit (Python raises `ValueError`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseNone;

impl fmt::Display for ReleaseNone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a semaphore release must return at least one permit")
    }
}

impl std::error::Error for ReleaseNone {}

/// A counter of permits, like `threading.Semaphore`.
pub struct Semaphore {
    state: Mutex<SemaphoreState>,
    released: Condvar,
}

struct SemaphoreState {
    permits: usize,
    /// Threads blocked in `acquire`.
    waiting: usize,
}

impl Semaphore {
    /// A semaphore holding `permits` permits.
    pub const fn new(permits: usize) -> Self {
        Self {
            state: Mutex::new(SemaphoreState {
                permits,
                waiting: 0,
            }),
            released: Condvar::new(),
        }
    }

    /// Takes a permit, waiting up to `timeout` (`None`: forever) with the GIL released. Returns
    /// whether it got one. The timeout counts from the call, the free-threaded builds' brief
    /// spin included; a timeout spent by then (zero, say) returns without releasing the GIL.
    #[inline]
    pub fn acquire(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        crate::assert_attached();
        self.try_acquire() || self.acquire_contended(py, timeout)
    }

    #[cold]
    #[inline(never)]
    fn acquire_contended(&self, py: Python<'_>, timeout: Option<Duration>) -> bool {
        let deadline = deadline_after(timeout);
        if spin(|| self.try_acquire()) {
            return true;
        }
        if spent(deadline) {
            // One last look: a permit released before the deadline passed counts.
            return self.try_acquire();
        }
        let take = || {
            let mut state = self.state.lock();
            state.waiting += 1;
            let got = wait_until(&self.released, &mut state, deadline, |state| {
                state.permits > 0
            });
            state.waiting -= 1;
            if got {
                state.permits -= 1;
            }
            got
        };
        take_detached(py, take, || {
            let _ = self.release(1);
        })
    }

    /// Takes a permit if one is available.
    pub fn try_acquire(&self) -> bool {
        let mut state = self.state.lock();
        if state.permits == 0 {
            return false;
        }
        state.permits -= 1;
        true
    }

    /// Returns `n` permits and wakes up to `n` waiters. The count saturates at `usize::MAX`
    /// (more permits than could ever be taken) instead of overflowing. An error, changing
    /// nothing, if `n` is zero.
    pub fn release(&self, n: usize) -> Result<(), ReleaseNone> {
        if n == 0 {
            return Err(ReleaseNone);
        }
        let mut state = self.state.lock();
        state.permits = state.permits.saturating_add(n);
        // Wake only threads that wait: one per permit, or all of them when there are permits
        // for all, so that the work is bounded by the waiters, never by `n`. (`waiting` also
        // counts threads woken earlier that have not run yet. A notification goes only to a
        // thread still asleep, so each new permit still gets a sleeper woken for it, if any.)
        if n >= state.waiting {
            self.released.notify_all();
        } else {
            for _ in 0..n {
                self.released.notify_one();
            }
        }
        Ok(())
    }

    /// The permits available now.
    pub fn value(&self) -> usize {
        self.state.lock().permits
    }

    /// How many threads are blocked in [`acquire`](Self::acquire) now.
    pub fn n_waiting(&self) -> usize {
        self.state.lock().waiting
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
    ///
    /// The thread arrives once detached: a panic in what the detach runs first (a
    /// quiescent-state hook) unwinds out before it is counted, so no other thread is released
    /// by an arrival whose thread does not wait.
    pub fn wait(&self, py: Python<'_>) -> usize {
        crate::assert_attached();
        py.allow_threads(|| {
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
            wait_until(&self.all_arrived, &mut state, None, |state| {
                state.generation != generation
            });
            index
        })
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

/// Runs `take` detached ([`Python::allow_threads`]) and answers what it answers: whether it took
/// what the thread waits for (a lock, a permit). If the attach after it panics (a deferred
/// destructor that the re-pin runs), what it took is given back with `give_back` before the
/// panic goes on: the caller never learns that it acquired, so nothing else would release it.
fn take_detached(
    py: Python<'_>,
    take: impl FnOnce() -> bool + Send,
    give_back: impl FnOnce(),
) -> bool {
    let taken = std::sync::atomic::AtomicBool::new(false);
    let detached = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        py.allow_threads(|| {
            let took = take();
            // Relaxed: read by this thread only.
            taken.store(took, std::sync::atomic::Ordering::Relaxed);
            took
        })
    }));
    match detached {
        Ok(took) => took,
        Err(panic) => {
            if taken.load(std::sync::atomic::Ordering::Relaxed) {
                give_back();
            }
            std::panic::resume_unwind(panic)
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::mpsc::{self, RecvTimeoutError};
    use std::sync::Arc;
    use std::thread::{self, JoinHandle};

    use super::*;

    /// How long a test waits for something that must happen before calling it a hang.
    const HANG: Duration = Duration::from_secs(30);

    /// Runs `f` on its own thread: fails, rather than hanging, if it has not finished within
    /// `HANG`, and passes on its panic if it panicked. Tests join every thread they start, so
    /// that Miri's leak check sees them all finish.
    fn finishes(what: &str, f: impl FnOnce() + Send + 'static) {
        let (done, finished) = mpsc::channel();
        let runner = thread::spawn(move || {
            f();
            done.send(()).unwrap();
        });
        match finished.recv_timeout(HANG) {
            Ok(()) => runner.join().unwrap(),
            Err(RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(runner.join().unwrap_err())
            }
            Err(RecvTimeoutError::Timeout) => panic!("{what} did not finish"),
        }
    }

    /// Yields until `condition` holds; a hang is the failure (callers run under `finishes`).
    fn until(condition: impl Fn() -> bool) {
        while !condition() {
            thread::yield_now();
        }
    }

    /// Starts a thread that attaches and runs `f`.
    fn spawn_attached<T: Send + 'static>(
        f: impl FnOnce(Python<'_>) -> T + Send + 'static,
    ) -> JoinHandle<T> {
        thread::spawn(move || Python::attach(f))
    }

    #[test]
    fn set_then_clear_at_once_wakes_a_thread_already_waiting_without_a_timeout() {
        finishes("a waiter woken by set() then clear()", || {
            let event = Arc::new(Event::new());
            let waiter = spawn_attached({
                let event = event.clone();
                move |py| event.wait(py, None)
            });
            until(|| event.n_waiting() == 1);
            event.set();
            event.clear();
            assert!(waiter.join().unwrap());
        });
    }

    #[test]
    fn set_then_clear_at_once_makes_a_wait_with_a_timeout_return_true() {
        finishes("a waiter woken by set() then clear()", || {
            let event = Arc::new(Event::new());
            let waiter = spawn_attached({
                let event = event.clone();
                // Times out well before `HANG`, so a waiter that misses the set() says so.
                move |py| event.wait(py, Some(HANG / 3))
            });
            until(|| event.n_waiting() == 1);
            event.set();
            event.clear();
            assert!(
                waiter.join().unwrap(),
                "the waiter missed a set() made while it waited"
            );
        });
    }

    #[test]
    fn a_wait_that_begins_after_set_and_clear_waits_for_the_next_set() {
        let event = Event::new();
        event.set();
        event.clear();
        assert!(!Python::attach(
            |py| event.wait(py, Some(Duration::from_millis(10)))
        ));
    }

    #[test]
    fn releasing_more_permits_than_a_machine_word_holds_returns_and_saturates() {
        finishes("release(usize::MAX)", || {
            let semaphore = Semaphore::new(1);
            semaphore.release(usize::MAX).unwrap();
            assert_eq!(semaphore.value(), usize::MAX);
            semaphore.release(usize::MAX).unwrap();
            assert_eq!(semaphore.value(), usize::MAX);
            assert!(semaphore.try_acquire());
            assert_eq!(semaphore.value(), usize::MAX - 1);
        });
    }

    /// Starts `n` threads and returns once all are blocked in `acquire(None)`.
    fn blocked_acquirers(semaphore: &Arc<Semaphore>, n: usize) -> Vec<JoinHandle<bool>> {
        let acquirers = (0..n)
            .map(|_| {
                let semaphore = semaphore.clone();
                spawn_attached(move |py| semaphore.acquire(py, None))
            })
            .collect();
        until(|| semaphore.n_waiting() == n);
        acquirers
    }

    #[test]
    fn releasing_more_permits_than_there_are_waiters_wakes_every_waiter() {
        const WAITERS: usize = 4;
        finishes("the released waiters", || {
            let semaphore = Arc::new(Semaphore::new(0));
            let acquirers = blocked_acquirers(&semaphore, WAITERS);
            semaphore.release(WAITERS + 2).unwrap();
            for acquirer in acquirers {
                assert!(acquirer.join().unwrap());
            }
            assert_eq!(semaphore.value(), 2);
        });
    }

    #[test]
    fn releasing_fewer_permits_than_there_are_waiters_admits_that_many() {
        const WAITERS: usize = 4;
        finishes("the released waiters", || {
            let semaphore = Arc::new(Semaphore::new(0));
            let acquirers = blocked_acquirers(&semaphore, WAITERS);
            semaphore.release(2).unwrap();
            until(|| acquirers.iter().filter(|a| a.is_finished()).count() == 2);
            until(|| semaphore.n_waiting() == WAITERS - 2);
            assert_eq!(semaphore.value(), 0);
            semaphore.release(2).unwrap();
            for acquirer in acquirers {
                assert!(acquirer.join().unwrap());
            }
            assert_eq!(semaphore.value(), 0);
        });
    }

    /// How many times `f` detached the calling thread.
    fn detaches_in(f: impl FnOnce()) -> u64 {
        let detaches = || crate::thread::DETACHES.with(std::cell::Cell::get);
        let before = detaches();
        f();
        detaches() - before
    }

    #[test]
    fn a_zero_timeout_on_a_busy_lock_an_unset_event_or_an_empty_semaphore_stays_attached() {
        Python::attach(|py| {
            let lock = Lock::new();
            assert!(lock.try_acquire());
            let event = Event::new();
            let semaphore = Semaphore::new(0);
            let zero = Some(Duration::ZERO);
            assert_eq!(detaches_in(|| assert!(!lock.acquire(py, zero))), 0, "lock");
            assert_eq!(detaches_in(|| assert!(!event.wait(py, zero))), 0, "event");
            assert_eq!(
                detaches_in(|| assert!(!semaphore.acquire(py, zero))),
                0,
                "semaphore"
            );
            // With time left they do wait detached (long enough to outlast the semaphore's
            // spin on a loaded machine).
            let short = Some(Duration::from_millis(50));
            assert_eq!(detaches_in(|| assert!(!event.wait(py, short))), 1);
            assert_eq!(detaches_in(|| assert!(!semaphore.acquire(py, short))), 1);
        });
    }

    #[test]
    fn releasing_no_permits_is_an_error_and_changes_nothing() {
        let semaphore = Semaphore::new(1);
        assert_eq!(semaphore.release(0), Err(ReleaseNone));
        assert_eq!(semaphore.value(), 1);
        assert_eq!(semaphore.release(2), Ok(()));
        assert_eq!(semaphore.value(), 3);
    }

    #[test]
    fn a_timeout_too_long_to_represent_means_no_deadline() {
        assert_eq!(deadline_after(Some(Duration::MAX)), None);
        assert_eq!(deadline_after(None), None);
        let before = Instant::now();
        let deadline = deadline_after(Some(Duration::from_secs(1))).unwrap();
        assert!(deadline >= before + Duration::from_secs(1));
    }

    #[test]
    fn the_longest_timeout_on_a_free_lock_a_set_event_or_an_open_semaphore_succeeds_at_once() {
        Python::attach(|py| {
            let lock = Lock::new();
            assert!(lock.acquire(py, Some(Duration::MAX)));
            let event = Event::new();
            event.set();
            assert!(event.wait(py, Some(Duration::MAX)));
            let semaphore = Semaphore::new(1);
            assert!(semaphore.acquire(py, Some(Duration::MAX)));
        });
    }

    #[test]
    fn an_event_waited_for_with_the_longest_timeout_wakes_when_set() {
        finishes("the waiter", || {
            let event = Arc::new(Event::new());
            let waiter = spawn_attached({
                let event = event.clone();
                move |py| event.wait(py, Some(Duration::MAX))
            });
            until(|| event.n_waiting() == 1);
            event.set();
            assert!(waiter.join().unwrap());
        });
    }

    #[test]
    fn a_semaphore_acquired_with_the_longest_timeout_admits_on_release() {
        finishes("the acquirer", || {
            let semaphore = Arc::new(Semaphore::new(0));
            let acquirer = spawn_attached({
                let semaphore = semaphore.clone();
                move |py| semaphore.acquire(py, Some(Duration::MAX))
            });
            until(|| semaphore.n_waiting() == 1);
            semaphore.release(1).unwrap();
            assert!(acquirer.join().unwrap());
        });
    }

    #[test]
    fn a_lock_acquired_with_the_longest_timeout_is_had_once_released() {
        finishes("the acquirer", || {
            let lock = Arc::new(Lock::new());
            assert!(lock.try_acquire());
            let acquirer = spawn_attached({
                let lock = lock.clone();
                move |py| lock.acquire(py, Some(Duration::MAX))
            });
            until(|| lock.parked_waiters() == 1);
            lock.release().unwrap();
            assert!(acquirer.join().unwrap());
            assert!(lock.locked());
        });
    }
}
