//! The global interpreter lock, modelled on CPython's (`Python/ceval_gil.c`).
//!
//! - **Switch interval.** A thread that wants the GIL waits up to the interval (5 ms by default,
//!   settable at run time like `sys.setswitchinterval`). If the holder kept the GIL for the whole
//!   interval, the waiter raises the **drop request**, and it asks again after every interval in
//!   which the GIL did not change hands: like CPython, it never waits without a timeout. With a
//!   zero interval a waiter asks at once, and its request stands until it has the GIL, even if
//!   other threads take the GIL ahead of it, so every waiter is served whatever the interval.
//! - **Checkpoints.** The holder polls the request at [`Gil::check`], which an interpreter's eval
//!   loop calls between instructions. A set request makes the holder release and re-acquire.
//! - **Forced switching.** A holder that releases because of a drop request waits until another
//!   thread has taken the GIL before it competes again, so the requester really gets a turn.
//! - **Fair mode** ([`Scheduling::Fair`]). A thread returning from a blocking call (the end of
//!   `allow_threads`) asks for the GIL at once instead of after an interval, and ordinary waiters
//!   stand back while it waits: the holder yields at its next checkpoint and the returning thread
//!   gets the GIL. This cuts the "convoy effect", where an I/O thread waits a full interval behind
//!   a CPU-bound thread after every blocking call. After four priority takes in a row while
//!   ordinary threads wait, one of them goes next: threads that keep coming back from blocking
//!   calls, one always waiting, would otherwise keep the others out for ever.
//!
//! In the free-threaded builds `Gil` is a zero-sized type whose methods do nothing.

use std::time::Duration;

/// The default switch interval, as in CPython.
pub const DEFAULT_SWITCH_INTERVAL: Duration = Duration::from_millis(5);

/// How the GIL chooses among waiting threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheduling {
    /// CPython's scheduling: every waiter waits a switch interval before asking the holder to
    /// drop the GIL.
    #[default]
    Interval,
    /// Threads returning from blocking calls ask for the GIL at once and go first.
    Fair,
}

pub use imp::Gil;

#[cfg(feature = "gil")]
mod imp {
    use std::time::Duration;

    use super::{Scheduling, DEFAULT_SWITCH_INTERVAL};
    use crate::sync::{AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard, Ordering};

    /// The calling thread, as a number no other running thread has (never 0): the address of a
    /// thread-local with no destructor, so it answers during thread exit too. Under loom, whose
    /// threads share one OS thread's thread-locals, every thread answers 0, and the check it
    /// serves is off.
    fn this_thread() -> usize {
        #[cfg(not(loom))]
        {
            std::thread_local! {
                static MARK: u8 = const { 0 };
            }
            MARK.with(|mark| mark as *const u8 as usize)
        }
        #[cfg(loom)]
        {
            0
        }
    }

    /// A thread asked for a GIL it holds: waiting would never end.
    #[cold]
    #[inline(never)]
    fn held_by_this_thread() -> ! {
        panic!(
            "the calling thread holds this GIL already and would wait for itself for ever \
             (an attached thread holds the runtime's GIL: release it first; \
             `Python::allow_threads` does, except inside the thread's own stop of the world)"
        )
    }

    /// A global interpreter lock: see the [module documentation](crate::gil).
    pub struct Gil {
        state: Mutex<State>,
        /// Waiters for the GIL sleep here.
        available: Condvar,
        /// A holder that released on request sleeps here until someone else took the GIL.
        switched: Condvar,
        /// The eval breaker: set by a waiter, polled by the holder at every checkpoint.
        drop_request: AtomicBool,
        interval_nanos: AtomicU64,
        fair: AtomicBool,
    }

    /// Fair mode's priority takes in a row, while ordinary waiters wait, after which one of
    /// them goes next. One under loom, so that its models reach the ordinary turn.
    pub(super) const PRIORITY_RUN_LIMIT: usize = if cfg!(loom) { 1 } else { 4 };

    struct State {
        locked: bool,
        /// The holding thread ([`this_thread`]), while `locked`.
        holder: usize,
        /// Incremented on every acquisition: lets a waiter tell "held all along" from "changed
        /// hands", and a forced releaser tell when someone else took over.
        switches: u64,
        waiting: usize,
        /// Waiters returning from a blocking call in fair mode; while any wait, others stand back.
        priority_waiting: usize,
        /// Waiters that ask at once (fair-mode priority waiters, and every waiter while the
        /// interval is zero). Their request stands until they have the GIL: whoever takes the
        /// GIL ahead of them raises it again, so the next holder yields at its next checkpoint.
        asking_at_once: usize,
        /// Priority takes in a row while ordinary waiters waited.
        priority_run: usize,
        /// The run reached [`PRIORITY_RUN_LIMIT`]: priority waiters stand back until an ordinary
        /// waiter has taken the GIL. Set only while ordinary waiters wait, which leave only by
        /// taking the GIL, so it is always cleared.
        ordinary_turn: bool,
    }

    impl State {
        fn can_take(&self, priority: bool) -> bool {
            !self.locked
                && if priority {
                    !self.ordinary_turn
                } else {
                    self.priority_waiting == 0 || self.ordinary_turn
                }
        }
    }

    impl Gil {
        /// An unlocked GIL with the default switch interval and scheduling.
        pub fn new() -> Self {
            Self {
                state: Mutex::new(State {
                    locked: false,
                    holder: 0,
                    switches: 0,
                    waiting: 0,
                    priority_waiting: 0,
                    asking_at_once: 0,
                    priority_run: 0,
                    ordinary_turn: false,
                }),
                available: Condvar::new(),
                switched: Condvar::new(),
                drop_request: AtomicBool::new(false),
                interval_nanos: AtomicU64::new(DEFAULT_SWITCH_INTERVAL.as_nanos() as u64),
                fair: AtomicBool::new(false),
            }
        }

        /// Takes the GIL, waiting as long as it takes.
        ///
        /// # Panics
        /// If the calling thread holds this GIL already: it would wait for itself for ever.
        pub fn acquire(&self) {
            self.take(false);
        }

        /// Takes the GIL on the way back from a blocking call. In fair mode this thread goes
        /// first; otherwise it is [`acquire`](Self::acquire).
        ///
        /// # Panics
        /// As [`acquire`](Self::acquire).
        pub fn acquire_after_blocking(&self) {
            self.take(self.fair.load(Ordering::Relaxed));
        }

        /// Releases the GIL.
        ///
        /// # Safety
        /// The calling thread holds the GIL (and gives up every claim that relied on it).
        pub unsafe fn release(&self) {
            self.give(false);
        }

        /// Whether another thread has asked the holder to release.
        #[inline]
        pub fn drop_requested(&self) -> bool {
            // Relaxed: a hint polled often; the handoff itself synchronises through the mutex.
            self.drop_request.load(Ordering::Relaxed)
        }

        /// A checkpoint: if another thread asked for the GIL, hands it over and waits to get it
        /// back. Returns whether it switched.
        ///
        /// # Safety
        /// The calling thread holds the GIL, and holds nothing that another GIL holder could need
        /// before this returns (the GIL changes hands in between).
        #[inline]
        pub unsafe fn check(&self) -> bool {
            if !self.drop_requested() {
                return false;
            }
            self.switch();
            true
        }

        #[cold]
        fn switch(&self) {
            self.give(true);
            self.take(false);
        }

        /// Waits for the GIL as CPython's `take_gil` does: never without a timeout, and asking
        /// the holder to drop the GIL whenever it kept it for a whole interval. A waiter that
        /// asks at once (fair-mode priority, or a zero interval) is counted in
        /// `asking_at_once`, which keeps its request raised across other threads' turns until it
        /// is served: a request cleared by someone else's take would never be repeated, because
        /// such a waiter has no interval to time out on.
        fn take(&self, priority: bool) {
            let mut state = self.state.lock();
            if state.locked && state.holder != 0 && state.holder == this_thread() {
                drop(state);
                held_by_this_thread();
            }
            if state.can_take(priority) {
                return self.taken(state, priority);
            }
            state.waiting += 1;
            if priority {
                state.priority_waiting += 1;
            }
            let mut asking_at_once = false;
            loop {
                let interval = self.switch_interval();
                // Re-read every round: the interval may have changed while this thread waited.
                let asks_at_once_now = priority || interval.is_zero();
                if asks_at_once_now != asking_at_once {
                    if asks_at_once_now {
                        state.asking_at_once += 1;
                    } else {
                        state.asking_at_once -= 1;
                    }
                    asking_at_once = asks_at_once_now;
                }
                if asking_at_once {
                    self.drop_request.store(true, Ordering::Relaxed);
                }
                let switches_before = state.switches;
                // A waiter that asks at once needs no timer to ask again, but still wakes up now
                // and then to pick up a changed interval. `wait_for` treats a timeout too long
                // to represent (a huge interval) as none.
                let timeout = if interval.is_zero() {
                    DEFAULT_SWITCH_INTERVAL
                } else {
                    interval
                };
                let (woken, timed_out) = self.available.wait_for(&self.state, state, timeout);
                state = woken;
                if state.can_take(priority) {
                    break;
                }
                if timed_out && state.locked && state.switches == switches_before {
                    // The holder kept the GIL for a whole interval: ask it to yield.
                    self.drop_request.store(true, Ordering::Relaxed);
                }
            }
            state.waiting -= 1;
            if priority {
                state.priority_waiting -= 1;
            }
            if asking_at_once {
                state.asking_at_once -= 1;
            }
            self.taken(state, priority);
        }

        fn taken(&self, mut state: MutexGuard<'_, State>, priority: bool) {
            state.locked = true;
            state.holder = this_thread();
            state.switches += 1;
            // Priority goes first, but not for ever: threads that keep coming back from
            // blocking calls would otherwise keep an ordinary waiter out as long as one of them
            // waits. (This thread no longer counts as waiting.)
            let ordinary_waiting = state.waiting > state.priority_waiting;
            state.priority_run = if priority && ordinary_waiting {
                state.priority_run + 1
            } else {
                0
            };
            state.ordinary_turn = state.priority_run >= PRIORITY_RUN_LIMIT;
            // The request that brought us here is served; one still waiting to be served keeps
            // asking. (Interval waiters ask again when their interval runs out.)
            self.drop_request
                .store(state.asking_at_once > 0, Ordering::Relaxed);
            drop(state);
            self.switched.notify_all();
        }

        fn give(&self, forced: bool) {
            let mut state = self.state.lock();
            debug_assert!(state.locked, "released a GIL that was not held");
            state.locked = false;
            state.holder = 0;
            if state.priority_waiting > 0 {
                // Only a priority waiter may take it (or, on an ordinary turn, only an ordinary
                // one): wake them all so that it is not missed.
                self.available.notify_all();
            } else {
                self.available.notify_one();
            }
            if forced {
                // Forced switching: do not compete again until another thread has had the GIL.
                let switches = state.switches;
                while state.switches == switches && state.waiting > 0 {
                    state = self.switched.wait(state);
                }
            }
        }

        /// How long a waiter lets the holder keep the GIL before asking for it.
        pub fn switch_interval(&self) -> Duration {
            Duration::from_nanos(self.interval_nanos.load(Ordering::Relaxed))
        }

        /// Sets the switch interval, like `sys.setswitchinterval`. Zero means a waiter asks at
        /// once and keeps asking until it has the GIL. Intervals beyond `u64::MAX` nanoseconds
        /// (584 years) are clamped to it: in effect, a waiter never asks. Takes effect from each
        /// waiter's next wait.
        pub fn set_switch_interval(&self, interval: Duration) {
            let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
            self.interval_nanos.store(nanos, Ordering::Relaxed);
        }

        /// The current scheduling mode.
        pub fn scheduling(&self) -> Scheduling {
            if self.fair.load(Ordering::Relaxed) {
                Scheduling::Fair
            } else {
                Scheduling::Interval
            }
        }

        /// Switches the scheduling mode at run time.
        pub fn set_scheduling(&self, scheduling: Scheduling) {
            self.fair
                .store(scheduling == Scheduling::Fair, Ordering::Relaxed);
        }

        /// How many times the GIL has been acquired, by any thread.
        pub fn acquisitions(&self) -> u64 {
            self.state.lock().switches
        }

        /// How many threads are waiting for the GIL now.
        pub fn waiting(&self) -> usize {
            self.state.lock().waiting
        }
    }

    impl Default for Gil {
        fn default() -> Self {
            Self::new()
        }
    }
}

#[cfg(not(feature = "gil"))]
mod imp {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::Duration;

    use super::{Scheduling, DEFAULT_SWITCH_INTERVAL};

    /// The free-threaded builds' GIL: zero-sized, every method a no-op. The settings are kept
    /// (as free-threaded CPython keeps `sys.getswitchinterval`) but have no effect.
    #[derive(Default)]
    pub struct Gil;

    static INTERVAL_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_SWITCH_INTERVAL.as_nanos() as u64);
    static FAIR: AtomicBool = AtomicBool::new(false);

    impl Gil {
        /// The no-op GIL.
        pub const fn new() -> Self {
            Gil
        }
        /// Does nothing.
        #[inline(always)]
        pub fn acquire(&self) {}
        /// Does nothing.
        #[inline(always)]
        pub fn acquire_after_blocking(&self) {}
        /// Does nothing.
        ///
        /// # Safety
        /// None needed; `unsafe` only to match the GIL build's signature.
        #[inline(always)]
        pub unsafe fn release(&self) {}
        /// Always `false`.
        #[inline(always)]
        pub fn drop_requested(&self) -> bool {
            false
        }
        /// Does nothing; returns `false`.
        ///
        /// # Safety
        /// None needed; `unsafe` only to match the GIL build's signature.
        #[inline(always)]
        pub unsafe fn check(&self) -> bool {
            false
        }
        /// The stored (ineffective) switch interval.
        pub fn switch_interval(&self) -> Duration {
            Duration::from_nanos(INTERVAL_NANOS.load(Ordering::Relaxed))
        }
        /// Stores the interval; it has no effect without a GIL.
        pub fn set_switch_interval(&self, interval: Duration) {
            let nanos = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX);
            INTERVAL_NANOS.store(nanos, Ordering::Relaxed);
        }
        /// The stored (ineffective) scheduling mode.
        pub fn scheduling(&self) -> Scheduling {
            if FAIR.load(Ordering::Relaxed) {
                Scheduling::Fair
            } else {
                Scheduling::Interval
            }
        }
        /// Stores the mode; it has no effect without a GIL.
        pub fn set_scheduling(&self, scheduling: Scheduling) {
            FAIR.store(scheduling == Scheduling::Fair, Ordering::Relaxed);
        }
        /// Always zero: nothing is ever acquired.
        pub fn acquisitions(&self) -> u64 {
            0
        }
        /// Always zero: nobody ever waits.
        pub fn waiting(&self) -> usize {
            0
        }
    }
}

/// The runtime's GIL as a program sees it ([`runtime_gil`](crate::runtime_gil)): its settings
/// and counters. Only attaching takes it ([`Python::attach`](crate::Python::attach)) and only the
/// end of the attachment or a detach ([`Python::allow_threads`](crate::Python::allow_threads))
/// releases it, so no safe code can hold it without being attached, nor keep it past its
/// attachment.
///
/// ```compile_fail
/// ftrt_gil::runtime_gil().acquire(); // only `Python::attach` takes the runtime's GIL
/// ```
#[derive(Clone, Copy)]
pub struct RuntimeGil {
    gil: &'static Gil,
}

impl RuntimeGil {
    pub(crate) fn new(gil: &'static Gil) -> Self {
        Self { gil }
    }

    /// As [`Gil::switch_interval`].
    pub fn switch_interval(self) -> Duration {
        self.gil.switch_interval()
    }

    /// As [`Gil::set_switch_interval`] (`sys.setswitchinterval`).
    pub fn set_switch_interval(self, interval: Duration) {
        self.gil.set_switch_interval(interval);
    }

    /// As [`Gil::scheduling`].
    pub fn scheduling(self) -> Scheduling {
        self.gil.scheduling()
    }

    /// As [`Gil::set_scheduling`].
    pub fn set_scheduling(self, scheduling: Scheduling) {
        self.gil.set_scheduling(scheduling);
    }

    /// As [`Gil::acquisitions`]: every attach, and every return from a detach, takes it.
    pub fn acquisitions(self) -> u64 {
        self.gil.acquisitions()
    }

    /// As [`Gil::waiting`].
    pub fn waiting(self) -> usize {
        self.gil.waiting()
    }

    /// As [`Gil::drop_requested`].
    pub fn drop_requested(self) -> bool {
        self.gil.drop_requested()
    }
}

#[cfg(all(test, feature = "gil", not(loom)))]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    use std::thread;
    use std::time::Duration;

    use super::imp::PRIORITY_RUN_LIMIT;
    use super::*;

    /// Waits (without a deadline: a hang is the failure) until `n` threads wait for `gil`.
    fn until_waiting(gil: &Gil, n: usize) {
        while gil.waiting() < n {
            thread::yield_now();
        }
    }

    #[test]
    fn acquiring_a_gil_the_thread_holds_panics_instead_of_waiting_for_itself() {
        let (sent, outcome) = std::sync::mpsc::channel();
        // On a thread of its own: without the check, the second acquire never returns.
        thread::spawn(move || {
            let gil = Gil::new();
            gil.acquire();
            let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| gil.acquire()));
            let message = again.err().map(|payload| match payload.downcast::<&str>() {
                Ok(text) => text.to_string(),
                Err(payload) => *payload.downcast::<String>().expect("a message"),
            });
            // The GIL is still this thread's, and usable.
            // SAFETY: held.
            unsafe { gil.release() };
            gil.acquire();
            // SAFETY: held.
            unsafe { gil.release() };
            sent.send(message).unwrap();
        });
        let message = outcome
            .recv_timeout(Duration::from_secs(10))
            .expect("the second acquire waited for the thread itself");
        let message = message.expect("the second acquire returned");
        assert!(
            message.contains("holds this GIL"),
            "unexpected panic: {message}"
        );
    }

    #[test]
    fn a_checkpoint_without_a_request_keeps_the_gil() {
        let gil = Gil::new();
        gil.acquire();
        // SAFETY: held.
        assert!(!unsafe { gil.check() });
        // SAFETY: held.
        unsafe { gil.release() };
        assert_eq!(gil.acquisitions(), 1);
    }

    #[test]
    fn a_waiter_asks_for_the_gil_after_one_interval_and_the_holder_yields_at_its_checkpoint() {
        let gil = Gil::new();
        gil.set_switch_interval(Duration::from_micros(200));
        let waiter_had_it = AtomicBool::new(false);
        gil.acquire();
        thread::scope(|s| {
            s.spawn(|| {
                gil.acquire();
                waiter_had_it.store(true, Ordering::SeqCst);
                // SAFETY: held.
                unsafe { gil.release() };
            });
            until_waiting(&gil, 1);
            while !gil.drop_requested() {
                thread::yield_now();
            }
            // SAFETY: held.
            assert!(unsafe { gil.check() });
            // Forced switching: the checkpoint returned only after the waiter had its turn.
            assert!(waiter_had_it.load(Ordering::SeqCst));
            // SAFETY: held again after the switch.
            unsafe { gil.release() };
        });
    }

    #[test]
    fn in_fair_mode_a_thread_back_from_blocking_goes_before_ordinary_waiters() {
        let gil = Gil::new();
        gil.set_scheduling(Scheduling::Fair);
        // A long interval: the ordinary waiter would not even ask for the GIL during the test.
        gil.set_switch_interval(Duration::from_secs(60));
        let order = Mutex::new(Vec::new());
        gil.acquire();
        thread::scope(|s| {
            s.spawn(|| {
                gil.acquire();
                order.lock().unwrap().push("ordinary");
                // SAFETY: held.
                unsafe { gil.release() };
            });
            until_waiting(&gil, 1);
            s.spawn(|| {
                gil.acquire_after_blocking();
                order.lock().unwrap().push("back from blocking");
                // SAFETY: held.
                unsafe { gil.release() };
            });
            until_waiting(&gil, 2);
            // The returning thread asked at once, without waiting an interval.
            assert!(gil.drop_requested());
            // SAFETY: held.
            assert!(unsafe { gil.check() });
            // SAFETY: held again.
            unsafe { gil.release() };
        });
        assert_eq!(order.into_inner().unwrap()[0], "back from blocking");
    }

    /// Two threads that keep coming back from blocking calls, each waiting with priority while
    /// the other holds the GIL, do not keep an ordinary waiter out for ever: after
    /// [`PRIORITY_RUN_LIMIT`] priority takes in a row while it waits, it goes next. (Priority
    /// waiters went first whenever one waited, and here one always does: the ordinary waiter
    /// had the GIL only once the returning threads stopped.)
    #[test]
    fn in_fair_mode_threads_back_from_blocking_do_not_starve_an_ordinary_waiter() {
        use std::sync::atomic::AtomicUsize;
        let gil = Gil::new();
        gil.set_scheduling(Scheduling::Fair);
        gil.set_switch_interval(Duration::from_secs(60));
        let rounds = 4 * PRIORITY_RUN_LIMIT;
        let priority_takes = AtomicUsize::new(0);
        // The priority takes before the ordinary waiter's; `usize::MAX` until it takes.
        let ordinary_took_after = AtomicUsize::new(usize::MAX);
        // The two returning threads hand the GIL to each other: each releases only once the
        // other waits with priority beside the ordinary waiter, so a priority waiter waits at
        // every release, until the rounds end or the ordinary waiter has had its turn.
        let returning = || loop {
            gil.acquire_after_blocking();
            let taken = priority_takes.fetch_add(1, Ordering::SeqCst) + 1;
            let done = taken >= rounds || ordinary_took_after.load(Ordering::SeqCst) != usize::MAX;
            if !done {
                until_waiting(&gil, 2);
            }
            // SAFETY: held.
            unsafe { gil.release() };
            if done {
                return;
            }
        };
        gil.acquire();
        thread::scope(|s| {
            s.spawn(|| {
                gil.acquire();
                ordinary_took_after.store(priority_takes.load(Ordering::SeqCst), Ordering::SeqCst);
                // SAFETY: held.
                unsafe { gil.release() };
            });
            until_waiting(&gil, 1);
            s.spawn(returning);
            until_waiting(&gil, 2);
            // SAFETY: held (the test's first take). A priority waiter waits: it goes first.
            unsafe { gil.release() };
            s.spawn(returning);
        });
        let took_after = ordinary_took_after.into_inner();
        assert!(
            took_after < rounds,
            "the ordinary waiter had the GIL only after all {rounds} priority takes ({took_after})"
        );
        assert_eq!(took_after, PRIORITY_RUN_LIMIT);
    }

    /// Runs `f` on its own thread; fails (instead of hanging the test run) if it has not
    /// finished within a generous deadline.
    fn finishes_within_a_minute(what: &str, f: impl FnOnce() + Send + 'static) {
        use std::sync::mpsc::{self, RecvTimeoutError};
        let (done, finished) = mpsc::channel();
        let runner = thread::spawn(move || {
            f();
            done.send(()).unwrap();
        });
        match finished.recv_timeout(Duration::from_secs(60)) {
            Ok(()) => runner.join().unwrap(),
            // `f` panicked: report its own message.
            Err(RecvTimeoutError::Disconnected) => {
                std::panic::resume_unwind(runner.join().unwrap_err())
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("{what} did not finish: a GIL waiter was starved")
            }
        }
    }

    /// With a zero switch interval every waiter asks at once, and keeps asking until it has the
    /// GIL. The schedule below makes one waiter (`late`) start waiting behind the holder, so the
    /// holder is the one woken when the GIL is next released: the holder's take must not cancel
    /// `late`'s request, or a holder that only reaches checkpoints keeps the GIL for ever.
    #[test]
    fn with_a_zero_interval_a_waiter_queued_behind_the_holder_gets_the_gil_at_its_next_checkpoint()
    {
        /// Far more checkpoints than serving a request needs (one).
        const CHECKPOINTS: usize = 1_000_000;
        finishes_within_a_minute("the zero-interval schedule", || {
            let gil = Gil::new();
            gil.set_switch_interval(Duration::ZERO);
            let (early_had_it, late_had_it) = (AtomicBool::new(false), AtomicBool::new(false));
            let late_may_start = std::sync::Barrier::new(2);
            gil.acquire();
            let late_served = thread::scope(|s| {
                s.spawn(|| {
                    late_may_start.wait();
                    gil.acquire();
                    late_had_it.store(true, Ordering::SeqCst);
                    // SAFETY: held.
                    unsafe { gil.release() };
                });
                s.spawn(|| {
                    gil.acquire();
                    early_had_it.store(true, Ordering::SeqCst);
                    // The holder, forced to switch, now waits for the GIL back ...
                    until_waiting(&gil, 1);
                    // ... and `late` queues behind it.
                    late_may_start.wait();
                    until_waiting(&gil, 2);
                    // SAFETY: held.
                    unsafe { gil.release() };
                });
                until_waiting(&gil, 1);
                // SAFETY: held at every checkpoint.
                assert!(unsafe { gil.check() }, "`early` asked at once");
                assert!(early_had_it.load(Ordering::SeqCst));
                let late_served = (0..CHECKPOINTS).any(|_| {
                    // SAFETY: held.
                    unsafe { gil.check() };
                    late_had_it.load(Ordering::SeqCst)
                });
                // Released before judging, so that a failure does not leave `late` blocked.
                // SAFETY: held.
                unsafe { gil.release() };
                late_served
            });
            assert!(
                late_served,
                "`late` still waited after {CHECKPOINTS} checkpoints of the holder"
            );
        });
    }

    /// An interval too long to represent as a deadline means the waiter never asks: after
    /// several default intervals of waiting it still has not. It gets the GIL when the holder
    /// releases, and nothing panics.
    #[test]
    fn the_longest_switch_interval_means_never_ask_and_panics_nowhere() {
        let gil = Gil::new();
        gil.set_switch_interval(Duration::MAX);
        assert_eq!(gil.switch_interval(), Duration::from_nanos(u64::MAX));
        gil.acquire();
        thread::scope(|s| {
            s.spawn(|| {
                gil.acquire();
                // SAFETY: held.
                unsafe { gil.release() };
            });
            until_waiting(&gil, 1);
            // A sleep, not a spin: what is checked is that time passing does not make the
            // waiter ask. Checked at once, any interval would pass.
            let waited = 4 * DEFAULT_SWITCH_INTERVAL;
            thread::sleep(waited);
            let asked = gil.drop_requested();
            // Released before judging, so that a failure does not leave the waiter blocked.
            // SAFETY: held.
            unsafe { gil.release() };
            assert!(!asked, "the waiter asked after {waited:?}");
        });
        assert_eq!(gil.acquisitions(), 2);
    }

    #[test]
    fn the_switch_interval_and_scheduling_are_settable_at_run_time() {
        let gil = Gil::new();
        assert_eq!(gil.switch_interval(), DEFAULT_SWITCH_INTERVAL);
        gil.set_switch_interval(Duration::from_millis(1));
        assert_eq!(gil.switch_interval(), Duration::from_millis(1));
        assert_eq!(gil.scheduling(), Scheduling::Interval);
        gil.set_scheduling(Scheduling::Fair);
        assert_eq!(gil.scheduling(), Scheduling::Fair);
    }
}
