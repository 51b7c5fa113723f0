//! The lock and the sections, as specifications of behaviour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::{section, Mutex, RawObjectLock};

#[test]
fn the_lock_is_one_byte() {
    assert_eq!(std::mem::size_of::<RawObjectLock>(), 1);
}

#[test]
fn try_lock_fails_while_locked_and_succeeds_after_unlock() {
    let lock = RawObjectLock::new();
    assert!(lock.try_lock());
    assert!(lock.is_locked());
    assert!(!lock.try_lock());
    // SAFETY: locked above.
    unsafe { lock.unlock() };
    assert!(!lock.is_locked());
    assert!(lock.try_lock());
    // SAFETY: locked above.
    unsafe { lock.unlock() };
}

#[test]
fn contended_increments_are_exact() {
    let threads = if cfg!(miri) { 3 } else { 8 };
    let per_thread = if cfg!(miri) { 50 } else { 20_000 };
    let counter = Mutex::new(0_usize);
    thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                for _ in 0..per_thread {
                    *counter.lock() += 1;
                }
            });
        }
    });
    assert_eq!(*counter.lock(), threads * per_thread);
}

#[test]
#[cfg_attr(miri, ignore = "relies on real time passing")]
fn a_waiter_parked_for_over_a_millisecond_is_handed_the_lock() {
    let lock = RawObjectLock::new();
    let waiting = AtomicBool::new(false);
    lock.lock();
    thread::scope(|s| {
        s.spawn(|| {
            waiting.store(true, Ordering::SeqCst);
            lock.lock();
            // SAFETY: locked above.
            unsafe { lock.unlock() };
        });
        while !waiting.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        // Long enough for the waiter to stop spinning, park, and pass the fairness threshold.
        thread::sleep(Duration::from_millis(20));
        // SAFETY: locked above.
        unsafe { lock.unlock() };
        // Handed over, not released: nobody can barge in between.
        assert!(
            !lock.try_lock(),
            "the lock was released instead of handed to the waiter"
        );
    });
}

#[test]
fn a_section_holds_its_lock_and_releases_it_at_the_end() {
    let lock = RawObjectLock::new();
    section::with(&lock, || {
        assert_eq!(lock.is_locked(), cfg!(not(feature = "gil")));
    });
    assert!(!lock.is_locked());
    assert_eq!(section::depth(), section::SectionDepth::default());
}

#[test]
fn a_panicking_section_releases_its_lock() {
    let lock = RawObjectLock::new();
    let result = std::panic::catch_unwind(|| section::with(&lock, || panic!("boom")));
    assert!(result.is_err());
    assert!(!lock.is_locked());
    assert_eq!(section::depth().open, 0);
    // The object stays usable.
    assert_eq!(section::with(&lock, || 7), 7);
}

#[test]
fn two_object_sections_accept_the_same_object_twice() {
    let lock = RawObjectLock::new();
    section::with2(&lock, &lock, || {
        assert_eq!(lock.is_locked(), cfg!(not(feature = "gil")))
    });
    assert!(!lock.is_locked());
}

#[cfg(not(feature = "gil"))]
#[test]
fn nesting_a_section_on_a_lock_the_thread_already_holds_suspends_the_outer_one() {
    let lock = RawObjectLock::new();
    section::with(&lock, || {
        section::with(&lock, || {
            // The outer section gave the lock up so the inner one could take it.
            assert_eq!(
                section::depth(),
                section::SectionDepth { open: 2, active: 1 }
            );
        });
        // Resumed when the inner one ended.
        assert_eq!(
            section::depth(),
            section::SectionDepth { open: 1, active: 1 }
        );
        assert!(lock.is_locked());
    });
    assert!(!lock.is_locked());
}

#[cfg(not(feature = "gil"))]
#[test]
fn suspend_all_and_resume_innermost_bracket_a_detach() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        section::with(&inner, || {
            section::suspend_all();
            assert!(!outer.is_locked() && !inner.is_locked());
            section::resume_innermost();
            // Only the innermost comes back now; the outer one when it is innermost again.
            assert!(inner.is_locked() && !outer.is_locked());
        });
        assert!(outer.is_locked());
    });
}

#[cfg(feature = "gil")]
#[test]
fn sections_lock_nothing_under_the_gil() {
    let lock = RawObjectLock::new();
    section::with(&lock, || {
        assert!(!lock.is_locked());
        assert_eq!(section::depth().open, 0);
    });
}
