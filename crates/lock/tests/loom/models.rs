use std::time::{Duration, Instant};

use ftrt_lock::{request_handoff_in_models, section, RawObjectLock, RawThreadingLock, Spin};
use loom::cell::UnsafeCell;
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
        Arc::new(Self {
            lock: RawObjectLock::new(),
            value: UnsafeCell::new(0),
        })
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

fn contend(handoff: bool) {
    loom::model(move || {
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
        let (a, b) = (Guarded::new(), Guarded::new());
        let (a2, b2) = (a.clone(), b.clone());
        let t = thread::spawn(move || {
            // SAFETY: inside a section on both.
            section::with2(&b2.lock, &a2.lock, || unsafe { (a2.bump(), b2.bump()) });
        });
        // SAFETY: inside a section on both.
        section::with2(&a.lock, &b.lock, || unsafe { (a.bump(), b.bump()) });
        t.join().unwrap();
        assert_eq!((a.read(), b.read()), (2, 2));
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
    loom::model(move || {
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
/// deadlock).
#[test]
fn a_timed_out_waiter_leaves_a_patient_waiter_to_be_woken() {
    loom::model(|| {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let (patient, impatient) = (shared.clone(), shared.clone());
        let patient = thread::spawn(move || {
            assert!(patient.lock.lock_until(None, Spin::BeforeEachPark));
            // SAFETY: locked.
            unsafe { patient.bump() };
            patient.lock.release().unwrap();
        });
        let impatient = thread::spawn(move || impatient.bump_unless_timed_out());
        // SAFETY: locked above.
        unsafe { shared.bump() };
        shared.lock.release().unwrap();
        patient.join().unwrap();
        let took = impatient.join().unwrap();
        shared.assert_clean();
        assert_eq!(shared.read(), 2 + u32::from(took));
    });
}

/// Two threads release at once, neither of them the holder, while a timed waiter may take the
/// lock between them: every successful release undoes an acquisition no other release undid.
#[test]
fn racing_releases_from_other_threads_succeed_once_per_acquisition() {
    loom::model(|| {
        let shared = ThreadingGuarded::new();
        assert!(shared.lock.try_lock());
        let waiter = shared.clone();
        let waiter = thread::spawn(move || {
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
