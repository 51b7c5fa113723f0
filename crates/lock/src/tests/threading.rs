//! `threading.Lock`: one byte, deadlines, and releases from any thread.

use super::*;

#[test]
fn a_threading_lock_is_one_byte() {
    assert_eq!(std::mem::size_of::<RawThreadingLock>(), 1);
}

/// A deadline `after` from now.
fn deadline_in(after: Duration) -> Option<Instant> {
    Some(Instant::now() + after)
}

/// Waits until `n` threads are parked on `lock`.
fn until_parked(lock: &RawThreadingLock, n: usize) {
    while lock.parked_waiters() != n {
        thread::yield_now();
    }
}

#[test]
fn a_waiter_that_times_out_clears_the_parked_bit_it_set() {
    let lock = RawThreadingLock::new();
    assert!(lock.try_lock());
    for spin in [Spin::BeforeEachPark, Spin::AfterWakeUps, Spin::Never] {
        let took = thread::scope(|s| {
            s.spawn(|| lock.lock_until(deadline_in(Duration::from_millis(20)), spin))
                .join()
                .unwrap()
        });
        assert!(!took, "took a lock that was held throughout");
        assert_eq!(
            lock.state(),
            LOCKED,
            "the waiter that timed out left the parked bit set ({spin:?}): every release would \
             take the slow path for nobody"
        );
    }
    assert_eq!(lock.release(), Ok(()));
    assert_eq!(lock.state(), 0);
    assert!(lock.try_lock(), "usable after the timeouts");
    assert_eq!(lock.release(), Ok(()));
}

#[test]
fn a_waiter_that_times_out_beside_another_leaves_the_parked_bit_for_it() {
    let lock = RawThreadingLock::new();
    assert!(lock.try_lock());
    let (state_after_timeout, patient_took) = thread::scope(|s| {
        // Patient, but not for ever: if the release below fails to wake it, the test fails
        // instead of hanging.
        let patient =
            s.spawn(|| lock.lock_until(deadline_in(Duration::from_secs(30)), Spin::Never));
        until_parked(&lock, 1);
        let impatient =
            s.spawn(|| lock.lock_until(deadline_in(Duration::from_millis(5)), Spin::Never));
        assert!(!impatient.join().unwrap());
        assert_eq!(lock.parked_waiters(), 1);
        let state_after_timeout = lock.state();
        assert_eq!(lock.release(), Ok(()));
        (state_after_timeout, patient.join().unwrap())
    });
    assert_eq!(
        state_after_timeout,
        LOCKED | PARKED,
        "the parked bit was cleared with a waiter still parked: the release would not wake it"
    );
    assert!(
        patient_took,
        "the release did not wake the waiter still parked"
    );
    assert!(lock.is_locked(), "taken by the patient waiter");
    assert_eq!(lock.release(), Ok(()));
    assert_eq!(lock.state(), 0);
}

#[test]
fn a_deadline_already_past_takes_a_free_lock_and_leaves_a_held_one_untouched() {
    let lock = RawThreadingLock::new();
    let past = Some(Instant::now());
    assert!(lock.lock_until(past, Spin::BeforeEachPark), "free: taken");
    assert!(
        !lock.lock_until(past, Spin::BeforeEachPark),
        "held: given up"
    );
    assert_eq!(
        lock.state(),
        LOCKED,
        "gave up without marking itself parked"
    );
    assert_eq!(lock.release(), Ok(()));
}

#[test]
fn releasing_an_unlocked_threading_lock_is_an_error_and_any_thread_may_release() {
    let lock = RawThreadingLock::new();
    assert_eq!(lock.release(), Err(NotLocked));
    assert!(lock.try_lock());
    assert!(!lock.try_lock());
    thread::scope(|s| {
        s.spawn(|| assert_eq!(lock.release(), Ok(())));
    });
    assert!(!lock.is_locked());
    assert_eq!(lock.release(), Err(NotLocked), "released twice");
    assert_eq!(lock.state(), 0, "a failed release changed the state");
}

#[test]
fn a_release_by_another_thread_than_the_holder_wakes_a_parked_waiter() {
    let lock = RawThreadingLock::new();
    assert!(lock.try_lock());
    thread::scope(|s| {
        let waiter = s.spawn(|| lock.lock_until(None, Spin::Never));
        until_parked(&lock, 1);
        s.spawn(|| lock.release()).join().unwrap().unwrap();
        assert!(waiter.join().unwrap());
    });
    assert_eq!(lock.release(), Ok(()));
    assert_eq!(lock.release(), Err(NotLocked));
}

/// Two threads release at once while a waiter is parked, so that the releases go through the
/// parking lot and the waiter may take the lock between them. Releases never outnumber
/// acquisitions: every successful release undoes an acquisition no other release undid.
#[test]
fn racing_releases_succeed_once_per_acquisition() {
    let rounds = if cfg!(miri) { 5 } else { 200 };
    let lock = RawThreadingLock::new();
    for _ in 0..rounds {
        assert!(lock.try_lock());
        let released = thread::scope(|s| {
            let waiter = s.spawn(|| lock.lock_until(None, Spin::Never));
            until_parked(&lock, 1);
            let releases = [s.spawn(|| lock.release()), s.spawn(|| lock.release())];
            let released = releases.map(|r| r.join().unwrap().is_ok());
            assert!(waiter.join().unwrap());
            released
        });
        // Two acquisitions (this thread's and the waiter's): whatever the racing releases left
        // locked is released now, and the successes add up to two.
        let last = lock.release().is_ok();
        let successes = released.iter().chain([&last]).filter(|&&ok| ok).count();
        assert_eq!(successes, 2, "racing: {released:?}, then: {last}");
        assert_eq!(lock.state(), 0);
    }
}
