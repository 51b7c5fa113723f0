//! The `threading` objects: `Lock`, `Event`, `Semaphore` and `Barrier`.

use super::*;

#[test]
fn a_lock_excludes_and_releases_the_gil_while_waiting() {
    let lock = Arc::new(Lock::new());
    let inside = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (lock, inside) = (lock.clone(), inside.clone());
            thread::spawn(move || {
                Python::attach(|py| {
                    for _ in 0..200 {
                        lock.hold(py, || {
                            assert_eq!(
                                inside.fetch_add(1, Ordering::SeqCst),
                                0,
                                "two holders at once"
                            );
                            // Blocking inside the lock: the others must be able to attach
                            // meanwhile.
                            py.allow_threads(thread::yield_now);
                            inside.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(!lock.locked());
}

#[test]
fn releasing_an_unlocked_lock_is_an_error_and_any_thread_may_release() {
    let lock = Arc::new(Lock::new());
    assert_eq!(lock.release(), Err(ReleaseUnlocked));
    Python::attach(|py| assert!(lock.acquire(py, None)));
    let other = lock.clone();
    thread::spawn(move || other.release())
        .join()
        .unwrap()
        .unwrap();
    assert!(!lock.locked());
    assert!(lock.try_acquire());
    Python::attach(|py| assert!(!lock.acquire(py, Some(Duration::from_millis(10)))));
}

#[test]
fn hold_reports_a_body_that_left_the_lock_unlocked_and_lets_a_panicking_body_unwind() {
    let lock = Lock::new();
    Python::attach(|py| {
        // Released inside and left unlocked: the release at the end finds nothing to release,
        // as Python's `with lock:` raises when its body released the lock.
        let released = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.hold(py, || lock.release().unwrap())
        }));
        let message = released.expect_err("hold ended without its release");
        assert!(message
            .downcast_ref::<&str>()
            .is_some_and(|m| m.contains("released inside")));
        assert!(!lock.locked());

        // The same while the body panics: the body's panic is the one that reaches the caller
        // (a second panic during the unwind would abort the process).
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lock.hold(py, || {
                lock.release().unwrap();
                panic!("the body's own panic");
            })
        }));
        let message = panicked.expect_err("the body panicked");
        assert_eq!(
            message.downcast_ref::<&str>(),
            Some(&"the body's own panic")
        );
        assert!(lock.try_acquire());
    });
}

#[test]
fn a_timed_acquire_that_times_out_leaves_the_lock_usable() {
    finishes(
        "the timed-out acquirer and the acquisitions after it",
        || {
            let lock = Arc::new(Lock::new());
            Python::attach(|py| assert!(lock.acquire(py, None)));
            let waiter = lock.clone();
            let took = thread::spawn(move || {
                Python::attach(|py| waiter.acquire(py, Some(Duration::from_millis(20))))
            })
            .join()
            .unwrap();
            assert!(!took, "acquired a lock held throughout");
            assert!(lock.locked());
            // Zero: no wait at all, in any build.
            Python::attach(|py| assert!(!lock.acquire(py, Some(Duration::ZERO))));
            assert_eq!(lock.release(), Ok(()));
            assert!(!lock.locked());
            Python::attach(|py| {
                assert!(
                    lock.acquire(py, Some(Duration::ZERO)),
                    "free: taken at once"
                );
                assert_eq!(lock.release(), Ok(()));
                assert!(lock.acquire(py, Some(Duration::from_millis(20))));
            });
            let other = lock.clone();
            thread::spawn(move || other.release().unwrap())
                .join()
                .unwrap();
            assert_eq!(lock.release(), Err(ReleaseUnlocked));
        },
    );
}

#[test]
fn a_release_by_another_thread_than_the_holder_wakes_a_blocked_acquirer() {
    finishes("the blocked acquirer", || {
        let lock = Arc::new(Lock::new());
        assert!(lock.try_acquire());
        let acquirer = lock.clone();
        let acquirer = thread::spawn(move || Python::attach(|py| acquirer.acquire(py, None)));
        spin_until(|| lock.parked_waiters() == 1);
        let releaser = lock.clone();
        thread::spawn(move || Python::attach(|_py| releaser.release()))
            .join()
            .unwrap()
            .unwrap();
        assert!(acquirer.join().unwrap());
        assert!(
            lock.locked(),
            "held by the acquirer, which never released it"
        );
        assert_eq!(lock.release(), Ok(()));
    });
}

/// Many threads take one lock, some with timeouts (retrying when one runs out), some by
/// `try_acquire`, and bump a count that is not atomic as a whole (a load, then a store) inside:
/// two holders at once would lose a bump. The holds are empty, as in the `shared-lock`
/// workload, so that the threads keep colliding on the lock's fast and slow paths.
#[test]
fn many_threads_taking_one_lock_never_hold_it_at_once() {
    const THREADS: usize = 8;
    let per_thread = if cfg!(miri) { 50 } else { 20_000 };
    finishes("the threads taking the lock", move || {
        let lock = Lock::new();
        let count = AtomicUsize::new(0);
        thread::scope(|s| {
            for t in 0..THREADS {
                let (lock, count) = (&lock, &count);
                s.spawn(move || {
                    Python::attach(|py| {
                        for i in 0..per_thread {
                            let taken = match t % 3 {
                                0 => lock.acquire(py, None),
                                1 => lock.acquire(py, Some(Duration::from_micros(50))),
                                _ => lock.try_acquire(),
                            };
                            if !taken {
                                // Not taken: try again (after a checkpoint, as the eval loop
                                // would), so that every thread does its share.
                                py.check();
                                while !lock.acquire(py, Some(Duration::from_micros(50))) {}
                            }
                            let seen = count.load(Ordering::Relaxed);
                            count.store(seen + 1, Ordering::Relaxed);
                            lock.release().expect("held by this thread");
                            if i % 64 == 0 {
                                py.check();
                            }
                        }
                    })
                });
            }
        });
        assert_eq!(
            count.load(Ordering::Relaxed),
            THREADS * per_thread,
            "two threads held the lock at once"
        );
        assert!(!lock.locked());
    });
}

#[test]
fn an_event_wakes_every_waiter() {
    let event = Arc::new(Event::new());
    let woken = Arc::new(AtomicUsize::new(0));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (event, woken) = (event.clone(), woken.clone());
            thread::spawn(move || {
                if Python::attach(|py| event.wait(py, None)) {
                    woken.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    Python::attach(|_py| event.set());
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(woken.load(Ordering::SeqCst), 3);
    event.clear();
    assert!(!Python::attach(
        |py| event.wait(py, Some(Duration::from_millis(10)))
    ));
}

/// `set()` immediately followed by `clear()`, round after round: every thread waiting at the
/// time of a `set()` returns `true` from that wait.
#[test]
fn an_event_pulsed_by_set_and_clear_wakes_every_waiter_every_round() {
    const WAITERS: usize = 8;
    // Miri runs threads one at a time, slowly: a few rounds show the same thing there.
    const ROUNDS: usize = if cfg!(miri) { 3 } else { 50 };
    finishes("the pulsed waiters", || {
        let event = Arc::new(Event::new());
        let round_starts = Arc::new(std::sync::Barrier::new(WAITERS + 1));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let (event, round_starts) = (event.clone(), round_starts.clone());
                thread::spawn(move || {
                    for _ in 0..ROUNDS {
                        round_starts.wait();
                        assert!(Python::attach(|py| event.wait(py, None)));
                    }
                })
            })
            .collect();
        for _ in 0..ROUNDS {
            round_starts.wait();
            // Everyone left the last round's wait before the barrier, so these are this round's.
            spin_until(|| event.n_waiting() >= WAITERS);
            event.set();
            event.clear();
        }
        for waiter in waiters {
            waiter.join().unwrap();
        }
    });
}

#[test]
fn a_semaphore_released_without_bound_admits_every_waiter_and_saturates() {
    const WAITERS: usize = 8;
    finishes("the waiters", || {
        let semaphore = Arc::new(Semaphore::new(0));
        let waiters: Vec<_> = (0..WAITERS)
            .map(|_| {
                let semaphore = semaphore.clone();
                thread::spawn(move || Python::attach(|py| semaphore.acquire(py, None)))
            })
            .collect();
        spin_until(|| semaphore.n_waiting() >= WAITERS);
        semaphore.release(usize::MAX).unwrap();
        for waiter in waiters {
            assert!(waiter.join().unwrap());
        }
        assert_eq!(semaphore.value(), usize::MAX - WAITERS);
    });
}

#[test]
fn a_semaphore_admits_at_most_its_permits() {
    const PERMITS: usize = 2;
    let semaphore = Arc::new(Semaphore::new(PERMITS));
    let (inside, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let threads: Vec<_> = (0..6)
        .map(|_| {
            let (semaphore, inside, most) = (semaphore.clone(), inside.clone(), most.clone());
            thread::spawn(move || {
                Python::attach(|py| {
                    for _ in 0..100 {
                        assert!(semaphore.acquire(py, None));
                        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        py.allow_threads(thread::yield_now);
                        inside.fetch_sub(1, Ordering::SeqCst);
                        semaphore.release(1).unwrap();
                    }
                })
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(most.load(Ordering::SeqCst) <= PERMITS);
    assert_eq!(semaphore.value(), PERMITS);
}

#[test]
fn a_barrier_releases_its_parties_together_with_distinct_indices() {
    const PARTIES: usize = 4;
    assert!(matches!(Barrier::new(0), Err(NoParties)));
    let barrier = Arc::new(Barrier::new(PARTIES).unwrap());
    let before = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..PARTIES)
        .map(|_| {
            let (barrier, before) = (barrier.clone(), before.clone());
            thread::spawn(move || {
                Python::attach(|py| {
                    before.fetch_add(1, Ordering::SeqCst);
                    let index = barrier.wait(py);
                    // Nobody passes until everyone has arrived.
                    assert_eq!(before.load(Ordering::SeqCst), PARTIES);
                    index
                })
            })
        })
        .collect();
    let mut indices: Vec<usize> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    indices.sort_unstable();
    assert_eq!(indices, (0..PARTIES).collect::<Vec<_>>());
    assert_eq!(barrier.n_waiting(), 0);
}

/// A contended `Lock::acquire` takes the lock detached, and the attach after it pins the epoch,
/// which every 128th pin runs the deferred functions that are due: one that panics unwinds out
/// of `acquire`, whose caller never learns that it acquired. The lock is given back first, so
/// the panic leaves it free, not held by nobody (the next acquirer waited for ever). (The `gil`
/// build's attach pins nothing.)
#[cfg(not(feature = "gil"))]
#[cfg_attr(
    miri,
    ignore = "hundreds of contended rounds: one attach in 128 collects"
)]
#[test]
fn an_acquire_whose_attach_afterwards_panics_gives_the_lock_back() {
    /// How long the rounds may take until the panicking function runs in an acquire: it is due
    /// two epochs after it was deferred (other tests' pinned threads hold the epoch back), one
    /// attach in 128 collects, and it is deferred again where another thread collected it.
    const ROUNDS_FOR: Duration = Duration::from_secs(20);
    finishes("the rounds of contended acquires", || {
        let lock = Arc::new(Lock::new());
        let round_over = Arc::new(AtomicBool::new(false));
        Python::attach(|py| assert!(lock.acquire(py, None)));
        let (to_main, rounds) = mpsc::channel::<Result<(), ()>>();
        let (to_waiter, go) = mpsc::channel::<()>();
        let waiter = thread::spawn({
            let (lock, round_over) = (lock.clone(), round_over.clone());
            move || {
                let me = thread::current().id();
                // Whether a panicking function is deferred and has not run yet.
                let armed = Arc::new(AtomicBool::new(false));
                let arm = || {
                    armed.store(true, Ordering::SeqCst);
                    let armed = armed.clone();
                    // Due later, on whichever thread collects (another test's, maybe): it
                    // panics on this one alone, and is deferred again where it ran elsewhere.
                    crossbeam_epoch::pin().defer(move || {
                        armed.store(false, Ordering::SeqCst);
                        if thread::current().id() == me {
                            panic!("a deferred function panics");
                        }
                    });
                    crossbeam_epoch::pin().flush();
                };
                Python::attach(|py| {
                    while go.recv().is_ok() {
                        if !armed.load(Ordering::SeqCst) {
                            arm();
                        }
                        let acquired =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                lock.acquire(py, None)
                            }));
                        round_over.store(true, Ordering::SeqCst);
                        match acquired {
                            Ok(acquired) => {
                                assert!(acquired);
                                lock.release().unwrap();
                                to_main.send(Ok(())).unwrap();
                            }
                            Err(_) => to_main.send(Err(())).unwrap(),
                        }
                    }
                });
            }
        });
        let mut panicked = false;
        let started = std::time::Instant::now();
        while started.elapsed() < ROUNDS_FOR {
            round_over.store(false, Ordering::SeqCst);
            to_waiter.send(()).unwrap();
            // Released once the waiter is parked on it, so that it takes the lock detached.
            spin_until(|| lock.parked_waiters() == 1 || round_over.load(Ordering::SeqCst));
            let released = lock.release().is_ok();
            let result = rounds.recv().unwrap();
            assert!(released, "the lock was held by this thread");
            if result.is_err() {
                panicked = true;
                break;
            }
            assert!(lock.try_acquire(), "the waiter released the lock it took");
        }
        drop(to_waiter);
        waiter.join().unwrap();
        assert!(panicked, "the deferred function never ran in an acquire");
        assert!(
            !lock.locked(),
            "an acquire that panicked left the lock taken"
        );
    });
}

#[cfg(not(feature = "gil"))]
thread_local! {
    /// Makes the next quiescent-state hook run on this thread panic.
    static PANIC_IN_NEXT_HOOK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(not(feature = "gil"))]
fn panic_if_asked() {
    if PANIC_IN_NEXT_HOOK.with(|asked| asked.replace(false)) {
        panic!("a quiescent-state hook panics");
    }
}

/// `Barrier::wait` detaches to wait, and the detach runs the quiescent-state hooks first: one
/// that panics unwinds out of `wait` before the thread waits, and its arrival must not count
/// (the next lone caller of a barrier of two went through as if both had come). (The `gil`
/// build runs no hooks.)
#[cfg(not(feature = "gil"))]
#[test]
fn a_barrier_wait_that_panics_before_it_waits_does_not_count_its_arrival() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| ftrt_gil::on_quiescent_state(panic_if_asked));
    let barrier = Barrier::new(2).unwrap();
    Python::attach(|py| {
        PANIC_IN_NEXT_HOOK.with(|asked| asked.set(true));
        let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| barrier.wait(py)));
        assert!(waited.is_err(), "the hook's panic unwinds out of the wait");
        assert_eq!(
            barrier.n_waiting(),
            0,
            "an arrival that never waited was counted"
        );
    });
}
