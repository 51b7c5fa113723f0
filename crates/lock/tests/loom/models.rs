use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use ftrt_lock::section::{AfterWait, SectionDepth, SectionStack, SectionWait};
use ftrt_lock::{
    handoffs_received_in_models, request_handoff_in_models, section, RawObjectLock,
    RawThreadingLock, Spin,
};
use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::sync::mpsc::{channel, Receiver, Sender};
use loom::sync::Arc;
use loom::thread;

struct Guarded {
    lock: RawObjectLock,
    value: UnsafeCell<u32>,
}

// SAFETY: `value` is only touched while `lock` is held.
unsafe impl Sync for Guarded {}
// SAFETY: as above.
unsafe impl Send for Guarded {}

impl Guarded {
    fn new() -> Arc<Self> {
        Arc::new(Self::unlocked_zero())
    }
    fn unlocked_zero() -> Self {
        Self {
            lock: RawObjectLock::new(),
            value: UnsafeCell::new(0),
        }
    }
    /// # Safety
    /// The caller holds `lock` (directly or through a critical section).
    unsafe fn bump(&self) {
        // SAFETY: exclusive per the caller; loom checks it.
        self.value.with_mut(|v| unsafe { *v += 1 });
    }
    fn read(&self) -> u32 {
        self.lock.lock();
        // SAFETY: locked.
        let v = self.value.with(|v| unsafe { *v });
        // SAFETY: locked above.
        unsafe { self.lock.unlock() };
        v
    }
}

/// `N` counters in one allocation, for models of two-object sections: `with2` takes a pair in
/// address order, which must not change from one schedule to the next (loom replays them), as
/// the addresses of separate allocations may (the allocator reuses what the last one freed).
fn guarded_in_one_allocation<const N: usize>() -> Arc<[Guarded; N]> {
    Arc::new([(); N].map(|()| Guarded::unlocked_zero()))
}

/// Runs `model` under loom, and checks that its schedules handed the lock over to a waiter at
/// least once if `handoff` (the handoff path was explored, not only the release), and never
/// otherwise.
fn model_with_handoffs(handoff: bool, model: impl Fn() + Sync + Send + 'static) {
    let before = handoffs_received_in_models();
    loom::model(model);
    let handed = handoffs_received_in_models() - before;
    if handoff {
        assert!(handed > 0, "no schedule handed the lock to a waiter");
    } else {
        assert_eq!(handed, 0, "a handoff nobody asked for");
    }
}

fn contend(handoff: bool) {
    model_with_handoffs(handoff, move || {
        let shared = Guarded::new();
        let other = shared.clone();
        let t = thread::spawn(move || {
            request_handoff_in_models(handoff);
            other.lock.lock();
            // SAFETY: locked.
            unsafe { other.bump() };
            // SAFETY: locked above.
            unsafe { other.lock.unlock() };
        });
        // Twice: an unlock that woke the other thread believing it holds the lock while the
        // lock is free (a handoff that cleared the lock) would let the second bump race its
        // bump, which loom reports.
        for _ in 0..2 {
            shared.lock.lock();
            // SAFETY: locked.
            unsafe { shared.bump() };
            // SAFETY: locked above.
            unsafe { shared.lock.unlock() };
        }
        t.join().unwrap();
        assert_eq!(shared.read(), 3);
        assert!(!shared.lock.is_locked());
    });
}

#[test]
fn contended_lock_released_to_a_woken_waiter() {
    contend(false);
}

#[test]
fn contended_lock_handed_directly_to_a_waiter() {
    contend(true);
}

#[test]
fn nested_sections_in_opposite_orders_suspend_instead_of_deadlocking() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            section::with(&b2.lock, || {
                // SAFETY: inside a section on `b2`.
                unsafe { b2.bump() };
                // SAFETY: inside a section on `a2`.
                section::with(&a2.lock, || unsafe { a2.bump() });
                // Resumed: `b2` is locked again here.
                // SAFETY: inside the (resumed) section on `b2`.
                unsafe { b2.bump() };
            });
        });
        section::with(&a.lock, || {
            // SAFETY: inside a section on `a`.
            unsafe { a.bump() };
            // SAFETY: inside a section on `b`.
            section::with(&b.lock, || unsafe { b.bump() });
            // SAFETY: inside the (resumed) section on `a`.
            unsafe { a.bump() };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (3, 3));
    });
}

#[test]
fn two_object_sections_in_opposite_orders() {
    loom::model(|| {
        let both = guarded_in_one_allocation::<2>();
        let theirs = both.clone();
        let t = thread::spawn(move || {
            let (a2, b2) = (&theirs[0], &theirs[1]);
            // SAFETY: inside a section on both.
            section::with2(&b2.lock, &a2.lock, || unsafe { (a2.bump(), b2.bump()) });
        });
        let (a, b) = (&both[0], &both[1]);
        // SAFETY: inside a section on both.
        section::with2(&a.lock, &b.lock, || unsafe { (a.bump(), b.bump()) });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (2, 2));
    });
}

/// A two-object section suspended by a nested section that has to wait, and resumed at its
/// end: the thread holding `a` and `b` nests a section on `c`, which the other thread holds
/// while it waits for `b`. The nested section gives up both of the pair's locks (or the two
/// threads deadlock), and its end takes both back before the pair's body goes on: the other
/// thread's next section on `b` alone must wait for the pair's end (loom's cell reports a bump
/// of `b` racing the other thread's, with only `a` taken back).
#[test]
fn a_two_object_section_suspended_by_a_nested_wait_resumes_with_both_locks() {
    loom::model(|| {
        let all = guarded_in_one_allocation::<3>();
        let theirs = all.clone();
        let t = thread::spawn(move || {
            let (b2, c2) = (&theirs[1], &theirs[2]);
            section::with(&c2.lock, || {
                // SAFETY: inside a section on `c2`.
                unsafe { c2.bump() };
                // SAFETY: inside a section on `b2`.
                section::with(&b2.lock, || unsafe { b2.bump() });
            });
            // SAFETY: inside a section on `b2`.
            section::with(&b2.lock, || unsafe { b2.bump() });
        });
        let (a, b, c) = (&all[0], &all[1], &all[2]);
        section::with2(&a.lock, &b.lock, || {
            // SAFETY: inside a section on both.
            unsafe { (a.bump(), b.bump()) };
            // SAFETY: inside a section on `c`.
            section::with(&c.lock, || unsafe { c.bump() });
            // SAFETY: inside the (resumed) section on both.
            unsafe { (a.bump(), b.bump()) };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read(), c.read()), (2, 4, 2));
    });
}

/// A thread detaches inside a section on `a`, begins and ends a section on `b`, and then waits
/// for a message that the other thread sends from inside a section on `a`. Ending `b`'s section
/// must not re-lock `a` while detached, or the two threads deadlock.
#[test]
fn a_section_ending_while_detached_does_not_relock_the_section_outside() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (deliver, delivered) = loom::sync::mpsc::channel();
        let a2 = a.clone();
        let t = thread::spawn(move || {
            section::with(&a2.lock, || {
                // SAFETY: inside a section on `a2`.
                unsafe { a2.bump() };
                deliver.send(()).unwrap();
            });
        });
        section::with(&a.lock, || {
            // SAFETY: inside a section on `a`.
            unsafe { a.bump() };
            section::detached(|| {
                // SAFETY: inside a section on `b`.
                section::with(&b.lock, || unsafe { b.bump() });
                delivered.recv().unwrap();
            });
            // SAFETY: inside the section on `a`, resumed when the detach ended.
            unsafe { a.bump() };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (3, 1));
    });
}

/// A counter behind a [`RawThreadingLock`].
struct ThreadingGuarded {
    lock: RawThreadingLock,
    value: UnsafeCell<u32>,
}

// SAFETY: `value` is only touched while `lock` is held.
unsafe impl Sync for ThreadingGuarded {}
// SAFETY: as above.
unsafe impl Send for ThreadingGuarded {}

impl ThreadingGuarded {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            lock: RawThreadingLock::new(),
            value: UnsafeCell::new(0),
        })
    }
    /// # Safety
    /// The caller holds `lock`.
    unsafe fn bump(&self) {
        // SAFETY: exclusive per the caller; loom checks it.
        self.value.with_mut(|v| unsafe { *v += 1 });
    }
    /// Waits for the lock with a timeout, and if it gets it, bumps and releases. Whether it
    /// got it. The deadline is far off, so only the model decides when the wait times out
    /// (any time before a wake-up), not the clock.
    fn bump_unless_timed_out(&self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3600);
        let took = self.lock.lock_until(Some(deadline), Spin::BeforeEachPark);
        if took {
            // SAFETY: locked.
            unsafe { self.bump() };
            self.lock.release().unwrap();
        }
        took
    }
    fn read(&self) -> u32 {
        assert!(self.lock.lock_until(None, Spin::BeforeEachPark));
        // SAFETY: locked.
        let v = self.value.with(|v| unsafe { *v });
        self.lock.release().unwrap();
        v
    }
    /// The lock is free and no parked bit is left over for a release to trip on.
    fn assert_clean(&self) {
        assert!(!self.lock.is_locked());
        assert!(
            !self.lock.parked_bit_in_models(),
            "a parked bit outlived every waiter: each later release takes the slow path"
        );
    }
}

/// A waiter whose timeout fires at any point of the holder's release: before it parks, while
/// the release runs, after it was woken. Exclusion holds; a handoff is never lost to a timeout
/// (the handoff variant would deadlock or leave the lock locked); and the waiter, the only
/// one, leaves no parked bit behind when it times out, even in the schedules where the
/// holder's release has not yet run to clear it.
fn timed_waiter_against_a_release(handoff: bool) {
    model_with_handoffs(handoff, move || {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let other = shared.clone();
        let waiter = thread::spawn(move || {
            request_handoff_in_models(handoff);
            let took = other.bump_unless_timed_out();
            assert!(
                took || !other.lock.parked_bit_in_models(),
                "the only waiter timed out and left its parked bit set"
            );
            took
        });
        // SAFETY: locked above.
        unsafe { shared.bump() };
        shared.lock.release().unwrap();
        let took = waiter.join().unwrap();
        shared.assert_clean();
        assert_eq!(shared.read(), 1 + u32::from(took));
        shared.assert_clean();
    });
}

#[test]
fn a_timed_out_waiter_racing_a_release_leaves_the_lock_clean() {
    timed_waiter_against_a_release(false);
}

#[test]
fn a_timed_out_waiter_racing_a_handoff_leaves_the_lock_clean() {
    timed_waiter_against_a_release(true);
}

/// One waiter times out while another waits without a timeout: the timed-out one must not
/// clear the parked bit under the other, or the release never wakes it (loom reports the
/// deadlock). With handoffs asked for, the release hands the lock to whichever is at the
/// head of the queue, and the other's timeout may fire at any point of it: a handoff to the
/// impatient one must reach it whether or not its timeout fired (else the lock stays locked
/// with no holder), and the patient one must still be handed or woken.
fn patient_and_impatient_waiters(handoff: bool) {
    model_with_handoffs(handoff, move || {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let (patient, impatient) = (shared.clone(), shared.clone());
        let patient = thread::spawn(move || {
            request_handoff_in_models(handoff);
            assert!(patient.lock.lock_until(None, Spin::BeforeEachPark));
            // SAFETY: locked.
            unsafe { patient.bump() };
            patient.lock.release().unwrap();
        });
        let impatient = thread::spawn(move || {
            request_handoff_in_models(handoff);
            impatient.bump_unless_timed_out()
        });
        // SAFETY: locked above.
        unsafe { shared.bump() };
        shared.lock.release().unwrap();
        patient.join().unwrap();
        let took = impatient.join().unwrap();
        shared.assert_clean();
        assert_eq!(shared.read(), 2 + u32::from(took));
    });
}

#[test]
fn a_timed_out_waiter_leaves_a_patient_waiter_to_be_woken() {
    patient_and_impatient_waiters(false);
}

#[test]
fn a_timed_out_waiter_leaves_a_patient_waiter_to_be_handed_the_lock() {
    patient_and_impatient_waiters(true);
}

/// Two threads release at once, neither of them the holder, while a timed waiter may take the
/// lock between them: every successful release undoes an acquisition no other release undid.
/// With a handoff asked for, one release may hand the lock to the waiter while the other
/// races it: the other then fails, or ends the acquisition handed over, never both.
fn racing_releases(handoff: bool) {
    model_with_handoffs(handoff, move || {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let waiter = shared.clone();
        let waiter = thread::spawn(move || {
            request_handoff_in_models(handoff);
            let deadline = Instant::now() + Duration::from_secs(3600);
            waiter.lock.lock_until(Some(deadline), Spin::BeforeEachPark)
        });
        let releaser = shared.clone();
        let releaser = thread::spawn(move || releaser.lock.release().is_ok());
        let released_here = shared.lock.release().is_ok();
        let released_there = releaser.join().unwrap();
        let took = waiter.join().unwrap();
        let released_last = shared.lock.release().is_ok();
        let acquisitions = 1 + usize::from(took);
        let releases = [released_here, released_there, released_last]
            .iter()
            .filter(|&&ok| ok)
            .count();
        assert_eq!(releases, acquisitions);
        shared.assert_clean();
    });
}

#[test]
fn racing_releases_from_other_threads_succeed_once_per_acquisition() {
    racing_releases(false);
}

#[test]
fn racing_releases_and_a_handoff_succeed_once_per_acquisition() {
    racing_releases(true);
}

#[test]
fn with_on_excludes_a_section_begun_through_with_and_suspends_like_one() {
    loom::model(|| {
        let (a, b) = (Guarded::new(), Guarded::new());
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            // A stack of the thread's own, as a runtime keeps in its thread state.
            let stack = section::SectionStack::new();
            section::with_on(Some(&stack), Some(&b2.lock), || {
                // SAFETY: inside a section on `b2`.
                unsafe { b2.bump() };
                // SAFETY: inside a section on `a2`.
                section::with_on(Some(&stack), Some(&a2.lock), || unsafe { a2.bump() });
                // SAFETY: inside the (resumed) section on `b2`.
                unsafe { b2.bump() };
            });
        });
        section::with_on(None, Some(&a.lock), || {
            // SAFETY: inside a section on `a`.
            unsafe { a.bump() };
            // SAFETY: inside a section on `b`.
            section::with(&b.lock, || unsafe { b.bump() });
            // SAFETY: inside the (resumed) section on `a`.
            unsafe { a.bump() };
        });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (3, 3));
    });
}

/// Two waiters on one lock and a holder that releases it. In some schedules both are parked at
/// once when the release comes: it wakes one with the other still queued, so it must leave the
/// parked bit set, and the woken one's release must wake the other. In others a woken waiter
/// loses the lock to the other one arriving, and parks again. Whatever the schedule, each
/// waiter gets the lock once, never beside another holder (loom's cell reports a bump racing
/// another); no wake-up is lost (loom reports the deadlock of a waiter left parked); and the
/// lock ends free with no parked bit left over, so that later releases take the fast path. With
/// handoff, each release passes the lock, still locked, to the waiter it wakes: the bit for the
/// one still queued must survive that too.
///
/// On [`RawThreadingLock`] for its parked-bit probe: it is the object lock's state machine, and
/// a wait without a deadline is the one `RawObjectLock::lock` makes after its first
/// compare-and-swap fails.
fn two_parked_waiters_against_a_release(handoff: bool) {
    model_with_handoffs(handoff, move || {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let waiter = shared.clone();
                thread::spawn(move || {
                    request_handoff_in_models(handoff);
                    assert!(waiter.lock.lock_until(None, Spin::BeforeEachPark));
                    // SAFETY: locked.
                    unsafe { waiter.bump() };
                    waiter.lock.release().unwrap();
                })
            })
            .collect();
        // SAFETY: locked above.
        unsafe { shared.bump() };
        shared.lock.release().unwrap();
        for waiter in waiters {
            waiter.join().unwrap();
        }
        shared.assert_clean();
        assert_eq!(shared.read(), 3);
    });
}

#[test]
fn two_parked_waiters_are_each_woken_by_a_release() {
    two_parked_waiters_against_a_release(false);
}

#[test]
fn two_parked_waiters_are_each_handed_the_lock() {
    two_parked_waiters_against_a_release(true);
}

/// A thread whose stack elides its locks (the only thread attached, in a runtime) while a second
/// thread appears and asks to come in: the first stops eliding where it next looks (a checkpoint
/// inside its section, or its detach at the end), and only then lets the second in, which takes
/// a section on the same lock. The request may come before the section, inside it or after it,
/// so the stop lands inside an elided section or on a stack with none open.
///
/// Stopping is the point where exclusion passes from the caller's promise back to the lock: a
/// section elided when it stops must hold its lock from then on, or the newcomer's section runs
/// beside the rest of its body (loom's cell reports the racing bumps). What the section did
/// while it elided is ordered before the newcomer only by the admission, as a runtime's attach
/// orders it.
#[test]
fn a_thread_let_in_once_elision_stops_is_excluded_from_the_section_that_elided() {
    loom::model(|| {
        let shared = Guarded::new();
        let knocked = Arc::new(AtomicBool::new(false));
        let (admit, admitted) = channel();
        let (newcomer, knocking) = (shared.clone(), knocked.clone());
        let newcomer = thread::spawn(move || {
            // Only a request: nothing is ordered by it, so Relaxed.
            knocking.store(true, Ordering::Relaxed);
            admitted.recv().unwrap();
            // SAFETY: inside a section on `newcomer.lock`.
            section::with(&newcomer.lock, || unsafe { newcomer.bump() });
        });
        let stack = SectionStack::new();
        // SAFETY: the newcomer takes the lock only once admitted, and `let_in` admits it only
        // after `stop_eliding` has returned.
        unsafe { stack.start_eliding() };
        let mut admit = Some(admit);
        let let_in = |admit: &mut Option<Sender<()>>| {
            if let Some(admit) = admit.take() {
                stack.stop_eliding();
                admit.send(()).unwrap();
            }
        };
        stack.with(&shared.lock, || {
            // SAFETY: no other thread takes the lock while the stack elides.
            unsafe { shared.bump() };
            // A checkpoint: a thread is asking to come in.
            if knocked.load(Ordering::Relaxed) {
                let_in(&mut admit);
            }
            // SAFETY: still eliding, or the stop above took the lock for this section.
            unsafe { shared.bump() };
        });
        // The thread detaches: no section is open, and the elision ends if it has not yet.
        let_in(&mut admit);
        newcomer.join().unwrap();
        assert_eq!(shared.read(), 3);
        assert!(!shared.lock.is_locked());
    });
}

/// One stack for a runtime's sections and the thread-local functions'
/// ([`section::claim_thread_stack`]):
/// while the runtime's stack elides (its promise covers its own locks only), a section of the
/// thread-local functions on it still takes its lock, nested in an elided section and around
/// one, and whether it gets the lock at once or waits for the other thread's section (which
/// suspends the elided one), so that other thread's section on the same lock is excluded
/// (loom's cell reports the racing bumps).
#[test]
fn the_thread_local_functions_sections_lock_on_a_held_stack_that_elides() {
    loom::model(|| {
        let shared = Guarded::new();
        let own = RawObjectLock::new();
        let other = shared.clone();
        let other = thread::spawn(move || {
            // SAFETY: inside a section on `other.lock`.
            section::with(&other.lock, || unsafe { other.bump() });
        });
        let stack = section::claim_thread_stack().expect("unclaimed");
        // SAFETY: no other thread takes `own`.
        unsafe { stack.start_eliding() };
        stack.with(&own, || {
            section::with(&shared.lock, || {
                // SAFETY: inside a section on `shared.lock`, which locks although the stack
                // elides.
                unsafe { shared.bump() };
                stack.with(&own, || assert!(!own.is_locked()));
                // SAFETY: as above: the elided section nested in it took nothing from it.
                unsafe { shared.bump() };
            });
        });
        stack.stop_eliding();
        other.join().unwrap();
        assert_eq!(shared.read(), 3);
        assert!(!shared.lock.is_locked() && !own.is_locked());
    });
}

// What the thread of `the_work_a_wait_leaves_runs_in_its_section_holding_the_lock` gives its
// hook's work, which is a plain `fn()`, and what that work saw there.
loom::thread_local! {
    /// The counter the waited-for lock guards.
    static WAITED_FOR: RefCell<Option<Arc<Guarded>>> = RefCell::new(None);
    /// Taken by the first run of the work, which detaches until a message comes through it.
    static DETACH_UNTIL: RefCell<Option<Receiver<()>>> = RefCell::new(None);
    /// How many waits went through the hook.
    static WAITS: Cell<u32> = Cell::new(0);
    /// Per run of the work: the thread's sections and whether the lock was locked, as it saw
    /// them. Checked after the section, not inside the work: a panic there aborts the process
    /// (loom's report of a race in the work does too; `--nocapture` shows its message).
    static SEEN_AFTER_WAITS: RefCell<Vec<(SectionDepth, bool)>> = RefCell::new(Vec::new());
}

/// Waits in place and leaves [`work_after_the_wait`] to run.
fn wait_then_leave_work(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
    WAITS.with(|waits| waits.set(waits.get() + 1));
    wait.wait();
    Some(work_after_the_wait)
}

/// Notes what it sees, bumps the guarded counter, and the first time detaches until the
/// other thread has been in a section on the lock.
fn work_after_the_wait() {
    let shared = WAITED_FOR.with(|shared| shared.borrow().clone().expect("set by the waiter"));
    let seen = (section::depth(), shared.lock.is_locked());
    SEEN_AFTER_WAITS.with(|runs| runs.borrow_mut().push(seen));
    // SAFETY: the work runs in the section that waited, holding its lock.
    unsafe { shared.bump() };
    if let Some(until) = DETACH_UNTIL.with(|until| until.borrow_mut().take()) {
        section::detached(|| until.recv().unwrap());
    }
}

/// A thread begins a section on a lock that the other thread holds and releases at any point
/// of the wait (or before it: then nothing waits, and nothing is left to run), through a hook
/// that waits and leaves work to run after the wait ([`AfterWait`]). The work's contract: it
/// runs once the section that waited is recorded and holds its lock, before the body, and may
/// do what a body may. So each run sees the section recorded and active, with the lock locked;
/// its bump of the guarded counter is excluded from the other thread's (loom's cell reports it
/// otherwise); the work of every wait has run when the body starts; and a detach inside the
/// work suspends the section, letting the other thread into a section on the lock, whose
/// message the detach waits for (loom reports the deadlock if the detach kept the lock).
///
/// The detach's end resumes the section, and where the other thread still holds the lock the
/// resume waits through the hook too: the work runs again, nested in the first run, and must
/// find the section as a begin leaves it, the resumed section already active.
///
/// Schedules where the resume waits take a preemption: the test counts them (outside loom) and
/// fails if none was explored, rather than pass without the resume path (with
/// `LOOM_MAX_PREEMPTIONS=0` it fails so).
#[test]
fn the_work_a_wait_leaves_runs_in_its_section_holding_the_lock() {
    static RESUMES_THAT_WAITED: std::sync::atomic::AtomicUsize =
        std::sync::atomic::AtomicUsize::new(0);
    loom::model(|| {
        let shared = Guarded::new();
        shared.lock.lock();
        let (message, detached_until) = channel();
        let waiter = shared.clone();
        let waiter = thread::spawn(move || {
            WAITED_FOR.with(|shared| *shared.borrow_mut() = Some(waiter.clone()));
            DETACH_UNTIL.with(|until| *until.borrow_mut() = Some(detached_until));
            section::set_blocking_wait(Some(wait_then_leave_work));
            section::with(&waiter.lock, || {
                let runs = SEEN_AFTER_WAITS.with(|runs| runs.borrow().len());
                assert_eq!(
                    runs,
                    WAITS.with(Cell::get) as usize,
                    "the body ran before the work its wait left"
                );
                // SAFETY: inside a section on `waiter.lock`.
                unsafe { waiter.bump() };
            });
            section::set_blocking_wait(None);
            // Took the lock without waiting: the message is received here instead (loom
            // reports a message left in a channel).
            if let Some(until) = DETACH_UNTIL.with(RefCell::take) {
                until.recv().unwrap();
            }
            SEEN_AFTER_WAITS.with(RefCell::take)
        });
        // SAFETY: locked above.
        unsafe { shared.bump() };
        // SAFETY: locked above.
        unsafe { shared.lock.unlock() };
        section::with(&shared.lock, || {
            // SAFETY: inside a section on `shared.lock`.
            unsafe { shared.bump() };
            message.send(()).unwrap();
        });
        let seen = waiter.join().unwrap();
        let recorded = SectionDepth {
            open: 1,
            active: 1,
            elided: 0,
        };
        for (depth, locked) in &seen {
            assert_eq!(
                *depth, recorded,
                "the work ran outside its recorded, active section"
            );
            // The lock's owner is not recorded: the exclusion itself is the cell's check.
            assert!(locked, "the lock was free while the work ran");
        }
        if seen.len() == 2 {
            RESUMES_THAT_WAITED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        assert_eq!(shared.read(), 3 + seen.len() as u32);
        assert!(!shared.lock.is_locked());
    });
    assert!(
        RESUMES_THAT_WAITED.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "no schedule explored had the resume wait (LOOM_MAX_PREEMPTIONS 0?)"
    );
}

loom::thread_local! {
    /// The locks [`wait_in_two_tries`] waits for, for its look between two tries.
    static PAIR: RefCell<Option<Pair>> = RefCell::new(None);
}

/// Two counters in one allocation, as the waiter of the model below holds them.
struct Pair(Arc<[Guarded; 2]>);

/// Set by [`wait_in_two_tries`] when it finds the first lock held where it should not be, or
/// not held where it should.
static MISHELD_BETWEEN_TRIES: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Takes the section's locks in two tries with a deadline (whose timeout, under loom, may fire
/// at any point of the wait), giving the first lock back after the first try that gave up,
/// then waits for them as long as it takes.
fn wait_in_two_tries(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
    // Nobody else takes the first lock: locked, this wait holds it.
    let first_locked =
        || PAIR.with(|pair| pair.borrow().as_ref().expect("set").0[0].lock.is_locked());
    for try_number in 0..2 {
        if wait.wait_until(Instant::now() + Duration::from_secs(60)) {
            return None;
        }
        // A try gives up on the second lock only: it keeps the first.
        if wait.is_taken() || !wait.holds_any() || !first_locked() {
            MISHELD_BETWEEN_TRIES.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if try_number == 0 {
            wait.give_back();
            if wait.holds_any() || first_locked() {
                MISHELD_BETWEEN_TRIES.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }
    wait.wait();
    None
}

/// A two-lock section waits through a hook that takes the locks in tries
/// ([`SectionWait::wait_until`]), while the other thread holds the second lock and releases it
/// at any point. A try that gives up keeps the first lock, and a give-back lets it go (nobody
/// else takes it, so whether it is locked says whether the wait holds it); a release racing a
/// timeout wakes the waiter or leaves it nothing to wait for (loom reports a deadlock
/// otherwise); the body runs holding both (loom's cells report a bump without them); and both
/// locks end free.
#[test]
fn a_section_waiting_in_tries_keeps_its_first_lock_until_given_back_and_ends_with_its_locks() {
    loom::model(|| {
        MISHELD_BETWEEN_TRIES.store(false, std::sync::atomic::Ordering::SeqCst);
        let pair = guarded_in_one_allocation::<2>();
        pair[1].lock.lock();
        let holder = pair.clone();
        let holder = thread::spawn(move || {
            // SAFETY: locked above; the release is this thread's to make.
            unsafe { holder[1].bump() };
            // SAFETY: locked above, released once.
            unsafe { holder[1].lock.unlock() };
        });
        PAIR.with(|mine| *mine.borrow_mut() = Some(Pair(pair.clone())));
        let stack = SectionStack::new();
        stack.set_blocking_wait(Some(wait_in_two_tries));
        stack.with2(&pair[1].lock, &pair[0].lock, || {
            // SAFETY: the section holds both locks.
            unsafe { pair[0].bump() };
            // SAFETY: as above.
            unsafe { pair[1].bump() };
        });
        holder.join().unwrap();
        assert!(!MISHELD_BETWEEN_TRIES.load(std::sync::atomic::Ordering::SeqCst));
        assert_eq!((pair[0].read(), pair[1].read()), (1, 2));
        assert!(!pair[0].lock.is_locked() && !pair[1].lock.is_locked());
    });
}
