//! A token carried into `allow_threads`' closure past its `Send` bound, the hole that method
//! documents (a `SendWrapper`, or a scoped thread-local set around the call), fails at its
//! first use with one message, before it changes anything, and the thread attaches again as
//! the panic leaves `allow_threads`. A closure that attaches again for itself works as ever.

// A count token is `()` in the `atomic-rc` build, and the tests take it all the same.
#![allow(clippy::let_unit_value)]

use std::panic::{catch_unwind, AssertUnwindSafe};

use ftrt_gil::threading::{Barrier, Event, Lock, Semaphore};
use ftrt_gil::{is_attached, local, section, stop_the_world, try_stop_the_world, Python};
use ftrt_lock::RawObjectLock;
use scoped_tls_hkt::scoped_thread_local;
use send_wrapper::SendWrapper;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What every use of a token on a detached thread panics with.
const USED_DETACHED: &str = "used on a thread that is not attached";

/// The message `f` panicked with, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map_or_else(|_| "(not a string)".to_owned(), |m| (*m).to_owned()),
    })
}

/// Carries `py` into `allow_threads`' closure in a `SendWrapper` (`Send` whatever it holds,
/// checked at run time to be used on the thread that made it, which the closure runs on), runs
/// `use_it` with it there, and asserts that the use panicked as a detached use and that the
/// thread is attached again afterwards.
fn assert_fails_carried_in(py: Python<'_>, what: &str, use_it: impl FnOnce(Python<'_>) + Send) {
    let carried = SendWrapper::new(py);
    let message = panic_message(|| py.allow_threads(move || use_it(*carried)));
    match message {
        Some(message) => assert!(
            message.contains(USED_DETACHED),
            "{what}: panicked with another message: {message}"
        ),
        None => panic!("{what}: a token carried into allow_threads was used detached"),
    }
    assert!(is_attached(), "{what}: the thread is not attached again");
}

#[test]
fn every_use_of_a_token_carried_into_allow_threads_fails() {
    Python::attach(|py| {
        assert_fails_carried_in(py, "count_token", |py| {
            // SAFETY: made detached, it panics; no token is made or used.
            let _ = unsafe { py.count_token() };
        });
        assert_fails_carried_in(py, "new_object_token", |py| {
            // SAFETY: as above.
            let _ = unsafe { py.new_object_token() };
        });
        assert_fails_carried_in(py, "check", |py| {
            let _ = py.check();
        });
        assert_fails_carried_in(py, "allow_threads", |py| py.allow_threads(|| ()));
        assert_fails_carried_in(py, "merge_pending", |py| {
            let _ = py.merge_pending();
        });
        assert_fails_carried_in(py, "holds_world_alone", |py| {
            let _ = py.holds_world_alone();
        });
        assert_fails_carried_in(py, "stop_the_world", |py| stop_the_world(py, || ()));
        assert_fails_carried_in(py, "try_stop_the_world", |py| {
            drop(try_stop_the_world(py, None, || ()))
        });
        let lock = RawObjectLock::new();
        let other = RawObjectLock::new();
        assert_fails_carried_in(py, "section::with", |py| section::with(py, &lock, || ()));
        assert_fails_carried_in(py, "section::with_if", |py| {
            section::with_if(py, None, || ())
        });
        assert_fails_carried_in(py, "section::with2", |py| {
            section::with2(py, &lock, &other, || ())
        });
        // SAFETY: the body does not detach.
        assert_fails_carried_in(py, "section::with_if_undetached", |py| unsafe {
            section::with_if_undetached(py, Some(&lock), || ())
        });
        assert!(!lock.is_locked() && !other.is_locked());
        static VALUE: local::Key<u32> = local::Key::new(|| 7);
        assert_fails_carried_in(py, "local::Key::with", |py| VALUE.with(py, |_| ()));
        let (lock, event) = (Lock::new(), Event::new());
        event.set(); // a set event answers at once: only its own check fails it
        let (semaphore, barrier) = (Semaphore::new(1), Barrier::new(2).unwrap());
        assert_fails_carried_in(py, "Lock::acquire", |py| {
            let _ = lock.acquire(py, None);
        });
        assert_fails_carried_in(py, "Lock::hold", |py| lock.hold(py, || ()));
        assert_fails_carried_in(py, "Event::wait", |py| {
            let _ = event.wait(py, None);
        });
        assert_fails_carried_in(py, "Semaphore::acquire", |py| {
            let _ = semaphore.acquire(py, None);
        });
        assert_fails_carried_in(py, "Barrier::wait", |py| {
            let _ = barrier.wait(py);
        });
        // Nothing was taken or counted as waiting.
        assert!(!lock.locked() && semaphore.value() == 1 && barrier.n_waiting() == 0);
        // The runtime goes on: this attachment counts, checks and detaches as before.
        // SAFETY: attached; the token is not used.
        let _ = unsafe { py.count_token() };
        py.check();
        py.allow_threads(|| assert!(!is_attached()));
    });
}

scoped_thread_local!(static CARRIED: for<'py> Python<'py>);

/// The second route: a scoped thread-local, set around `allow_threads`, hands the token to a
/// closure that captures nothing (no bound on the closure can see it).
#[test]
fn a_token_from_a_scoped_thread_local_fails_in_allow_threads() {
    fn count() {
        CARRIED.with(|py| {
            // SAFETY: made detached, it panics; no token is made or used.
            let _ = unsafe { py.count_token() };
        });
    }
    Python::attach(|py| {
        let message = CARRIED.set(py, || panic_message(|| py.allow_threads(count)));
        let message = message.expect("a token from a scoped thread-local was used detached");
        assert!(message.contains(USED_DETACHED), "another panic: {message}");
        assert!(is_attached());
    });
}

/// What the closure should do instead: attach again, with a token of its own, and it may then
/// use the carried token too (the thread is attached while it runs).
#[test]
fn a_closure_that_attaches_again_may_use_the_runtime() {
    Python::attach(|py| {
        let carried = SendWrapper::new(py);
        py.allow_threads(move || {
            Python::attach(|inner| {
                // SAFETY: attached again; the tokens are not used.
                let _ = unsafe { inner.count_token() };
                // SAFETY: as above: the carried token's thread is attached now.
                let _ = unsafe { carried.count_token() };
                inner.check();
            })
        });
        assert!(is_attached());
    });
}
