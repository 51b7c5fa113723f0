//! Stopping the world: one thread sees every object at rest while the others wait.
//!
//! A thread that must look at every object with nothing changing under it (the object model's
//! cycle collector) *stops the world*: every other attached thread parks at its next checkpoint,
//! and detached threads cannot attach until the stop ends. Detached threads do not hold a stop
//! up: they touch no objects. This is CPython 3.13t's `_PyEval_StopTheWorld`, with its three
//! thread states and two more (`NEW`, a thread that never attached, and `WAITED`, an attached
//! one a stopper waits for).
//!
//! This module is the protocol alone, as a plain value ([`World`]) over the threads'
//! [`Presence`]s, so that its loom model runs the real code; the runtime keeps one `World`, a
//! `Presence` per registered thread, and calls [`World::enter`] and [`World::leave`] as threads
//! attach and detach (`state.rs` gives the order). [`stop_the_world`](crate::stop_the_world) is
//! the runtime's entry point.
//!
//! ```text
//!             enter (CAS)                a stopper (CAS)
//!  DETACHED ───────────────▶ ATTACHED ─────────────────▶ WAITED
//!   ▲   ▲  ◀──── leave (CAS) ────┘ ▲                      │  │ leave (CAS): wakes it
//!   │   │                          └── out of patience ───┘  │
//!   │   │                     a stopper (CAS)                ▼
//!   │   DETACHED or NEW ───────────────────────────────▶ SUSPENDED
//!   └──────────────────────── the stop ends ──────────────┘
//! ```
//!
//! Every transition that can race another is a read-modify-write, so the threads that change a
//! presence agree on its history without relying on sequential consistency across locations
//! (the end of a stop stores `DETACHED` over the presences it suspended, which nothing else
//! changes then):
//! - a stopper suspends a detached thread with a CAS, and an attaching thread's CAS then fails
//!   and it waits for the stop to end;
//! - a stopper that finds a thread attached marks it `WAITED` (a CAS) and waits; the thread's
//!   `leave`, finding `WAITED`, suspends itself and wakes the stopper, under the mutex the
//!   stopper checks under, so no wake-up is lost. Suspending itself is what lets the stop
//!   happen: a thread that left detached could attach again before the stopper woke up, and a
//!   thread that parks in a loop would win that race for milliseconds;
//! - a thread parks at a checkpoint with [`World::park`]: it leaves and waits for the stop to
//!   end before it enters again, even if the stopper has not reached it yet.
//!
//! Threads that registered after a stopper listed the threads cannot be suspended by it: a
//! presence starts `NEW`, and a `NEW` thread attaches only under the mutex, after checking that
//! no stop is under way (a stopper raises `stopping` under that mutex before it lists the
//! threads, so a thread is either in its list or sees the flag). Threads without a presence of
//! their own (attached after their exit) are counted under the mutex the same way.
//!
//! # Holding the world alone
//!
//! A thread that attaches while no other thread is attached may *hold the world alone*
//! ([`World::try_hold_alone`]): a stop that waits for nobody, since nobody else is attached, and
//! that lasts while the holder runs. The runtime uses it to let the holder's critical sections
//! take no lock. Every other thread that tries to attach meanwhile waits, as it would for a stop,
//! and *asks* the holder to let go: from then on [`World::stop_requested`] says so, the holder
//! parks at its next checkpoint, and its [`leave`](World::leave) followed by dropping the hold
//! lets the waiters in. No hold can be taken while a thread that asked still waits, so the
//! holder cannot take the world back before they attach. The hold fails at once if any other
//! thread is attached: its suspensions are compare-and-swaps, like a stopper's, so a thread
//! attaching at the same moment either wins (the hold fails) or finds itself suspended.

use std::time::{Duration, Instant};

use crate::sync::{
    fence, AtomicBool, AtomicU8, AtomicUsize, Condvar, Mutex, MutexGuard, Ordering::*,
};

const DETACHED: u8 = 0;
const ATTACHED: u8 = 1;
/// Attached, and a stopper waits for it to leave.
const WAITED: u8 = 2;
const SUSPENDED: u8 = 3;
/// Registered, never attached yet.
const NEW: u8 = 4;

/// One thread's standing in a [`World`]: new, detached, attached, or suspended by a stop.
#[derive(Debug)]
pub struct Presence(AtomicU8);

impl Presence {
    /// The presence of a thread that has not attached yet.
    pub fn new() -> Self {
        Presence(AtomicU8::new(NEW))
    }

    /// Whether the thread is attached (a snapshot).
    pub fn is_attached(&self) -> bool {
        matches!(self.0.load(Acquire), ATTACHED | WAITED)
    }

    /// Whether a stopper waits for this attached thread to leave (a snapshot).
    pub fn is_waited_for(&self) -> bool {
        self.0.load(Acquire) == WAITED
    }

    /// Whether a stop holds this detached thread: it cannot attach until that stop ends (a
    /// snapshot).
    pub fn is_suspended(&self) -> bool {
        self.0.load(Acquire) == SUSPENDED
    }
}

impl Default for Presence {
    fn default() -> Self {
        Self::new()
    }
}

/// Why [`World::try_stop`] did not stop the world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopFailed {
    /// Another thread is stopping the world: park (detach) until it ends, then try again.
    Busy,
    /// Some thread stayed attached past the patience given; the threads stopped so far were
    /// let go.
    TimedOut,
}

/// The stop protocol's shared state. See the [module docs](self).
pub struct World {
    /// Raised by a stopper, or a thread holding the world alone, for the whole stop (under
    /// `lock`): new and anonymous threads wait. Raising it is taking the stopper's role.
    stopping: AtomicBool,
    /// What checkpoints poll: attached threads should park. Raised with `stopping` by a
    /// stopper, and by a thread that waits to attach while the world is held alone.
    park_wanted: AtomicBool,
    /// Attached threads without a presence, counted under `lock`.
    anonymous: AtomicUsize,
    lock: Mutex<Holds>,
    changed: Condvar,
}

/// What `World::lock` guards besides the waits on `changed`.
#[derive(Debug, Default)]
struct Holds {
    /// The stop under way is a thread holding the world alone.
    alone: bool,
    /// Threads waiting to attach that asked a holder to let go: no hold is taken while one
    /// waits.
    asking: usize,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("stopping", &self.stopping)
            .field("park_wanted", &self.park_wanted)
            .field("anonymous", &self.anonymous)
            .finish_non_exhaustive()
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// A world with no stop under way.
    pub fn new() -> Self {
        World {
            stopping: AtomicBool::new(false),
            park_wanted: AtomicBool::new(false),
            anonymous: AtomicUsize::new(0),
            lock: Mutex::new(Holds::default()),
            changed: Condvar::new(),
        }
    }

    /// Whether an attached thread should park (leave, then enter again) at its next checkpoint:
    /// a stop is under way, or a thread waits to attach while this one holds the world alone. A
    /// hint, polled: relaxed.
    #[inline]
    pub fn stop_requested(&self) -> bool {
        self.park_wanted.load(Relaxed)
    }

    /// Under `lock`, for a thread about to wait to attach: if the world is held alone, asks the
    /// holder to let go (once per wait: `asked` records it, and the thread must
    /// [`stop_asking`](Self::stop_asking) once it attaches).
    fn ask_holder(&self, holds: &mut Holds, asked: &mut bool) {
        if holds.alone && !*asked {
            *asked = true;
            holds.asking += 1;
            // Release: see `wait_while_stopping`.
            self.park_wanted.store(true, Release);
        }
    }

    /// Waits on `changed` while `blocked`, asking a holder of the world to let go if there is
    /// one ([`ask_holder`](Self::ask_holder)): how every thread that waits to attach waits.
    fn wait_asking<'a>(
        &self,
        mut holds: MutexGuard<'a, Holds>,
        asked: &mut bool,
        blocked: impl Fn() -> bool,
    ) -> MutexGuard<'a, Holds> {
        while blocked() {
            self.ask_holder(&mut holds, asked);
            holds = self.changed.wait(holds);
        }
        holds
    }

    /// Under `lock`: a thread that asked a holder to let go has attached.
    fn stop_asking(holds: &mut Holds, asked: bool) {
        if asked {
            holds.asking -= 1;
        }
    }

    /// Attaches the thread whose presence this is (`None`: a thread without one), waiting while a
    /// stop is under way. One CAS when no stop is.
    ///
    /// # Panics
    /// If the presence is attached already.
    pub fn enter(&self, presence: Option<&Presence>) {
        let mut asked = false;
        let Some(presence) = presence else {
            let stopping = || self.stopping.load(Relaxed);
            let mut holds = self.wait_asking(self.lock.lock(), &mut asked, stopping);
            self.anonymous.fetch_add(1, Relaxed);
            Self::stop_asking(&mut holds, asked);
            return;
        };
        loop {
            // Acquire: a thread let go by a stop sees what the stopper did.
            match presence
                .0
                .compare_exchange(DETACHED, ATTACHED, Acquire, Relaxed)
            {
                Ok(_) => break,
                Err(NEW) => {
                    let stopping = || self.stopping.load(Relaxed);
                    let mut holds = self.wait_asking(self.lock.lock(), &mut asked, stopping);
                    // Under the lock no stopper can list threads: attach, unless a stopper that
                    // listed this thread suspended it meanwhile (then wait for it, below).
                    if presence
                        .0
                        .compare_exchange(NEW, ATTACHED, Acquire, Relaxed)
                        .is_ok()
                    {
                        Self::stop_asking(&mut holds, asked);
                        return;
                    }
                }
                Err(SUSPENDED) => {
                    let suspended = || presence.0.load(Relaxed) == SUSPENDED;
                    drop(self.wait_asking(self.lock.lock(), &mut asked, suspended));
                }
                Err(_) => {
                    Self::stop_asking(&mut self.lock.lock(), asked);
                    panic!("a thread entered the world twice")
                }
            }
        }
        if asked {
            // Attached: a hold may be taken again (it fails while this thread stays attached).
            Self::stop_asking(&mut self.lock.lock(), asked);
        }
    }

    /// Detaches the thread (the one that [`enter`](Self::enter)ed with this presence), waking a
    /// stopper that waits for it.
    ///
    /// # Panics
    /// If the thread is not in the world: `presence` is not attached, or, for anonymous threads
    /// (`None`), there are more leaves than enters. (An anonymous count that wrapped around
    /// would make every later stop wait for ever, or let one run beside an attached thread.)
    pub fn leave(&self, presence: Option<&Presence>) {
        let Some(presence) = presence else {
            let _lock = self.lock.lock();
            // Release: a stopper that sees the count fall without taking the lock (its spin)
            // sees everything this thread did attached.
            if self
                .anonymous
                .fetch_update(Release, Relaxed, |attached| attached.checked_sub(1))
                .is_err()
            {
                panic!("an anonymous thread left the world without entering it");
            }
            self.changed.notify_all();
            return;
        };
        // Release: the stopper that suspends this thread sees everything it did attached.
        match presence
            .0
            .compare_exchange(ATTACHED, DETACHED, Release, Relaxed)
        {
            Ok(_) => {}
            Err(WAITED) => {
                // A stopper waits for this thread: it leaves suspended, so it cannot attach
                // again before the stop ends (leaving detached, it could, before the stopper
                // woke up to suspend it, and a thread that parks and attaches in a loop would
                // keep the stop from ever being reached). A stopper whose patience ran out
                // may be putting it back to ATTACHED meanwhile: then leave as usual; and the
                // next stopper may mark it WAITED again before this thread does: then suspend
                // it for that one. Compare-and-swaps (see the module docs): a store of DETACHED
                // could write over the next stopper's mark, and the thread, leaving detached,
                // could attach again before that stopper suspends it.
                let _lock = self.lock.lock();
                let mut state = WAITED;
                loop {
                    let next = if state == WAITED { SUSPENDED } else { DETACHED };
                    match presence.0.compare_exchange(state, next, Release, Relaxed) {
                        Ok(_) => break,
                        // While the thread is attached, stoppers only mark and unmark it.
                        Err(found @ (ATTACHED | WAITED)) => state = found,
                        Err(_) => unreachable!("an attached thread's presence was suspended"),
                    }
                }
                self.changed.notify_all();
            }
            Err(_) => panic!("a thread left the world without entering it"),
        }
    }

    /// Waits (detached: the caller has [`leave`](Self::leave)n) until no stop is under way, or
    /// until the only one is a thread holding the world alone (that one is for
    /// [`enter`](Self::enter) to ask to end).
    pub fn wait_while_stopping(&self) {
        // A thread at a checkpoint parks because it saw a request raised (`stop_requested`, a
        // relaxed load). This pairs with the stop's Release store of it, so that the loads below
        // see the stop under way: otherwise they may take it for over, and the thread would
        // attach again at once, before the stopper has reached it (Miri failed
        // `a_thread_parked_before_the_stopper_reached_it_waits_for_the_stop` in
        // `stop_the_world.rs` so; the loom model
        // `a_thread_that_parks_for_a_stop_waits_for_that_stop`). A caller whose `try_stop` was
        // `Busy` found the stop under the mutex, which orders it already; for a hold on the
        // world alone this returns either way.
        fence(Acquire);
        // A stop under way raises both; a hold on the world alone raises only `stopping` until a
        // thread asks it to end, and the loop below returns for it in any case.
        let over = || !self.stopping.load(Relaxed) || !self.park_wanted.load(Relaxed);
        // Under loom the spin gives up at once; check once here, so that the models take the
        // path on which a parked thread finds the stop over without the lock.
        if (spin_until(over) || (cfg!(loom) && over())) && !self.stopping.load(Relaxed) {
            return;
        }
        let mut holds = self.lock.lock();
        while self.stopping.load(Relaxed) && !holds.alone {
            holds = self.changed.wait(holds);
        }
    }

    /// A checkpoint's answer to a stop: leaves, waits until no stop is under way, and enters
    /// again. Leaving alone is not enough: a stopper that has not reached this thread yet would
    /// find it attached again.
    pub fn park(&self, presence: Option<&Presence>) {
        self.leave(presence);
        self.wait_while_stopping();
        self.enter(presence);
    }

    /// Stops the world for the calling thread, which is attached with presence `me` (or is
    /// anonymous: `None`): every presence `threads()` lists, except `me`, is suspended, waiting
    /// for attached ones to leave, and every anonymous thread has left. `threads()` is called
    /// after the stop is raised: threads that register later wait when they first attach. The
    /// world runs again when the [`Stopped`] is dropped.
    ///
    /// Fails with [`StopFailed::Busy`] at once if another thread is stopping the world (the
    /// caller must then leave and [`wait_while_stopping`](Self::wait_while_stopping), or that
    /// stopper waits for it forever), and with [`StopFailed::TimedOut`] if `patience` runs out
    /// first (`None`, or a patience too long for the clock to add: wait as long as it takes;
    /// under loom, the patience runs out when a timed wait does, see
    /// `run_out_next_timed_waits`).
    /// A hold on the world being tried meanwhile ([`try_hold_alone`](Self::try_hold_alone))
    /// fails, the caller being attached: this waits for it to give up first.
    pub fn try_stop<'w, P: AsRef<Presence>>(
        &'w self,
        me: Option<&Presence>,
        threads: impl FnOnce() -> Vec<P>,
        patience: Option<Duration>,
    ) -> Result<Stopped<'w, P>, StopFailed> {
        // Before the stop is raised: from there until `Stopped` exists a panic would leave it
        // raised for ever. A patience past the clock's end is no deadline.
        let mut deadline = Deadline {
            at: patience.and_then(|patience| Instant::now().checked_add(patience)),
            passed: false,
        };
        {
            let mut holds = self.lock.lock();
            // A hold being tried: it fails, since this thread is attached (a hold never waits
            // for an attached thread, and a thread holding the world does not call this). Waiting
            // for it rather than answering `Busy` keeps the caller from parking in a loop for as
            // long as the other thread takes to give up.
            while self.stopping.load(Relaxed) && holds.alone {
                holds = self.changed.wait(holds);
            }
            if self.stopping.load(Relaxed) {
                return Err(StopFailed::Busy);
            }
            self.stopping.store(true, Relaxed);
            // Release: a thread that sees the request and parks sees the stop under way
            // (`wait_while_stopping`).
            self.park_wanted.store(true, Release);
        }
        let mut stopped = Stopped {
            world: self,
            suspended: Vec::new(),
        };
        for presence in threads() {
            if me.is_some_and(|me| std::ptr::eq(me, presence.as_ref())) {
                continue;
            }
            if !self.suspend(presence.as_ref(), &mut deadline) {
                return Err(StopFailed::TimedOut);
            }
            stopped.suspended.push(presence);
        }
        // The caller counts itself among the anonymous if it has no presence.
        let own = usize::from(me.is_none());
        // Acquire: pairs with the Release of an anonymous thread's `leave`.
        if !self.wait_for(|| self.anonymous.load(Acquire) <= own, &mut deadline) {
            return Err(StopFailed::TimedOut);
        }
        Ok(stopped)
    }

    /// Makes the calling thread, attached with presence `me`, the only attached thread until the
    /// returned hold is dropped: every presence `threads()` lists, except `me`, is suspended as
    /// by a stop, and new and anonymous threads wait. `None` if that would mean waiting:
    /// another thread is attached (with a presence or without), a stop is under way, or a
    /// thread that asked an earlier holder to let go has not attached yet. The world is then as
    /// it was, except that threads that came to attach while the hold was tried waited for it
    /// to fail. See the [module docs](self).
    ///
    /// While the hold lasts, a thread that tries to attach waits, and raises
    /// [`stop_requested`](Self::stop_requested): the holder should then [`leave`](Self::leave)
    /// and drop the hold, in that order, at its next checkpoint. The holder must not call
    /// [`try_stop`](Self::try_stop), which waits for every hold to end: the world is stopped
    /// already.
    pub fn try_hold_alone<'w, P: AsRef<Presence>>(
        &'w self,
        me: &Presence,
        threads: impl FnOnce() -> Vec<P>,
    ) -> Option<Stopped<'w, P>> {
        {
            let mut holds = self.lock.lock();
            if self.stopping.load(Relaxed) || holds.asking > 0 || self.anonymous.load(Relaxed) > 0 {
                return None;
            }
            // Under the lock: an anonymous thread counted itself before this (seen above) or
            // will wait, as will a new thread.
            self.stopping.store(true, Relaxed);
            holds.alone = true;
        }
        let mut hold = Stopped {
            world: self,
            suspended: Vec::new(),
        };
        for presence in threads() {
            if std::ptr::eq(me, presence.as_ref()) {
                continue;
            }
            // Acquire: the holder sees everything the thread did before it left, as a stopper
            // does. A thread attaching at the same moment wins the compare-and-swap (then the
            // hold fails: dropping it lets go of the threads suspended so far) or loses it and
            // waits in `enter`.
            let suspended = [DETACHED, NEW].into_iter().any(|state| {
                presence
                    .as_ref()
                    .0
                    .compare_exchange(state, SUSPENDED, Acquire, Relaxed)
                    .is_ok()
            });
            if !suspended {
                return None;
            }
            hold.suspended.push(presence);
        }
        Some(hold)
    }

    /// Suspends `presence`, waiting while its thread is attached. `false` if the deadline
    /// passed first (the thread stays attached, unmarked); a thread that left just then is
    /// suspended all the same.
    fn suspend(&self, presence: &Presence, deadline: &mut Deadline) -> bool {
        loop {
            // Acquire: for a thread found suspended by its own `leave` (below).
            let state = presence.0.load(Acquire);
            let next = match state {
                // Acquire: the stopper sees everything the thread did before it left.
                DETACHED | NEW => SUSPENDED,
                ATTACHED => WAITED,
                // Suspended by its own `leave`, which found it waited for by this stopper (the
                // only one: every earlier stop let its threads go before it ended). Acquire:
                // as above.
                SUSPENDED => return true,
                _ => {
                    // Waited for (by this stopper): wait for `leave`.
                    if !self.wait_for(|| presence.0.load(Relaxed) != WAITED, deadline) {
                        // Unmark it, unless it left meanwhile (suspended: then it is stopped).
                        return presence
                            .0
                            .compare_exchange(WAITED, ATTACHED, Relaxed, Acquire)
                            .is_err();
                    }
                    continue;
                }
            };
            if presence
                .0
                .compare_exchange(state, next, Acquire, Relaxed)
                .is_ok()
                && next == SUSPENDED
            {
                return true;
            }
        }
    }

    /// Waits until `ready`, or the deadline; whether it became ready.
    fn wait_for(&self, ready: impl Fn() -> bool, deadline: &mut Deadline) -> bool {
        // Under loom the spin gives up at once; check once here, so that the models take the
        // path on which a stopper finds the world ready without the lock.
        if spin_until(&ready) || (cfg!(loom) && ready()) {
            return true;
        }
        let mut lock = self.lock.lock();
        while !ready() {
            let Some(at) = deadline.at else {
                lock = self.changed.wait(lock);
                continue;
            };
            let left = at.saturating_duration_since(Instant::now());
            if deadline.passed || left == Duration::ZERO {
                return false;
            }
            let ran_out;
            (lock, ran_out) = self.changed.wait_for(&self.lock, lock, left);
            deadline.passed = ran_out;
        }
        true
    }
}

/// When a stop with patience gives up.
struct Deadline {
    /// `None`: never.
    at: Option<Instant>,
    /// A timed wait ran out: the deadline passed, as the clock would say, for the rest of the
    /// stop. (Under loom, which has no clock, it is how a deadline passes: see
    /// `run_out_next_timed_waits`.)
    passed: bool,
}

/// Spins briefly until `ready`, before a waiter sleeps (the runtime's spin policy,
/// `ftrt_lock::spin`): a collection's stop lasts tens of microseconds, about what sleeping and
/// being woken cost, and each stop has every parked thread wait once and the stopper once per
/// attached thread. Whether it became ready.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    ftrt_lock::spin::spin_until(ready, SPINS_BEFORE_SLEEPING)
}

/// A few hundred microseconds of pause hints on current x86 cores (a `pause` is 40-140
/// cycles): cycle-create's stops at 2 threads (pause p50 about 100 µs) then end before the
/// waiters sleep, which took 2,900 context switches out of a 0.6 s run (1<<12 still left half).
const SPINS_BEFORE_SLEEPING: u32 = 1 << 13;

/// A stopped world, or one held alone: while it lives, the threads it suspended cannot attach.
/// Dropping it lets them go.
#[must_use = "the world runs again when this is dropped"]
pub struct Stopped<'w, P: AsRef<Presence>> {
    world: &'w World,
    suspended: Vec<P>,
}

impl<P: AsRef<Presence>> Stopped<'_, P> {
    /// How many threads this stop suspended.
    pub fn suspended(&self) -> usize {
        self.suspended.len()
    }
}

impl<P: AsRef<Presence>> Drop for Stopped<'_, P> {
    fn drop(&mut self) {
        let mut holds = self.world.lock.lock();
        for presence in self.suspended.drain(..) {
            // Release: a thread let go sees what the stopper did.
            presence.as_ref().0.store(DETACHED, Release);
        }
        holds.alone = false;
        self.world.stopping.store(false, Relaxed);
        self.world.park_wanted.store(false, Relaxed);
        self.world.changed.notify_all();
    }
}

impl AsRef<Presence> for Presence {
    fn as_ref(&self) -> &Presence {
        self
    }
}
