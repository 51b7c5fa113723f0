//! Threads attaching to the runtime: the GIL's switching, `allow_threads`, thread exit and the
//! `threading` objects, run in every build variant (and under ThreadSanitizer by
//! `cargo xtask tsan`).
//!
//! A few waits are bounded by a generous deadline so that a regression (a GIL that is never
//! released) fails the test instead of hanging it; no test asserts how fast anything is.

mod common;

#[cfg(feature = "gil")]
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
#[cfg(feature = "gil")]
use std::time::Instant;

use ftrt_gil::threading::{Barrier, Event, Lock, NoParties, ReleaseUnlocked, Semaphore};
use ftrt_gil::{registered_threads, threads, Python};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a test waits for something that must happen before calling it a hang.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on a new thread and fails if it does not finish within `HANG`.
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(f()).unwrap());
    result
        .recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not finish: the GIL was not released"))
}

#[test]
fn attach_is_reentrant_and_registers_the_thread() {
    let nested = Python::attach(|_py| {
        assert!(registered_threads() >= 1);
        Python::attach(|_py| ftrt_gil::is_attached())
    });
    assert!(nested);
    assert!(!ftrt_gil::is_attached());
}

#[test]
fn allow_threads_lets_another_thread_attach_while_one_blocks() {
    finishes("the blocked thread", || {
        let (tx, rx) = mpsc::channel::<u32>();
        let sender = thread::spawn(move || {
            // Needs the GIL (in the gil build) while the other thread blocks holding none.
            Python::attach(|_py| tx.send(42).unwrap());
        });
        let got = Python::attach(move |py| py.allow_threads(move || rx.recv().unwrap()));
        sender.join().unwrap();
        assert_eq!(got, 42);
    });
}

#[test]
fn a_panic_while_attached_releases_the_gil() {
    let panicked = thread::spawn(|| Python::attach(|_py| panic!("boom"))).join();
    assert!(panicked.is_err());
    finishes("attaching after a panic", || Python::attach(|_py| ()));
}

#[test]
fn a_panic_inside_allow_threads_reattaches_and_releases() {
    let result = thread::spawn(|| Python::attach(|py| py.allow_threads(|| panic!("boom")))).join();
    assert!(result.is_err());
    finishes("attaching after a panic", || Python::attach(|_py| ()));
}

#[test]
fn an_exiting_thread_leaves_the_registry_and_settles_its_objects_even_when_it_panics() {
    use ftrt_refcount::BiasedArc;

    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    let drops = Arc::new(AtomicUsize::new(0));
    let (to_main, from_thread) = mpsc::channel();
    let name = "exits-by-panicking".to_string();
    let worker = {
        let drops = drops.clone();
        thread::Builder::new()
            .name(name.clone())
            .spawn(move || {
                Python::attach(|_py| {
                    let object = BiasedArc::new(Counted(drops));
                    to_main.send(object.clone()).unwrap();
                    panic!("the owner dies with its object still referenced elsewhere");
                })
            })
            .unwrap()
    };
    let object = from_thread.recv().unwrap();
    assert!(worker.join().is_err());
    assert!(
        threads().iter().all(|t| t.name.as_deref() != Some(&name)),
        "the dead thread is still registered"
    );
    drop(object);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "the object of an exited owner was not freed by its last holder"
    );
}

/// Shared data that only the GIL protects (no lock, no atomics): the gil build's claim.
#[cfg(feature = "gil")]
struct GilProtected<T>(UnsafeCell<T>);

// SAFETY: only touched by attached threads, which the GIL serialises (gil build only).
#[cfg(feature = "gil")]
unsafe impl<T: Send> Sync for GilProtected<T> {}

#[cfg(feature = "gil")]
#[test]
fn under_the_gil_a_counter_bumped_between_checkpoints_is_exact_while_both_threads_progress() {
    const THREADS: usize = 2;
    /// Each thread keeps going until it has seen the other make progress this many times,
    /// which only switching can allow.
    const SWITCHES_SEEN: usize = 5;
    ftrt_gil::runtime_gil().set_switch_interval(Duration::from_micros(100));
    let counter = GilProtected(UnsafeCell::new(0_u64));
    let progress = GilProtected(UnsafeCell::new([0_u64; THREADS]));
    let bumps: Vec<u64> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|me| {
                let (counter, progress) = (&counter, &progress);
                s.spawn(move || {
                    Python::attach(|py| {
                        let deadline = Instant::now() + HANG;
                        let (mut mine, mut seen, mut last_other) = (0_u64, 0, 0_u64);
                        while seen < SWITCHES_SEEN {
                            assert!(
                                Instant::now() < deadline,
                                "thread {me} never saw the other run"
                            );
                            // SAFETY: attached, so this thread holds the GIL.
                            unsafe {
                                *counter.0.get() += 1;
                                (*progress.0.get())[me] += 1;
                                let other = (*progress.0.get())[1 - me];
                                if other != last_other {
                                    seen += 1;
                                    last_other = other;
                                }
                            }
                            mine += 1;
                            py.check();
                        }
                        mine
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    ftrt_gil::runtime_gil().set_switch_interval(ftrt_gil::DEFAULT_SWITCH_INTERVAL);
    assert_eq!(
        counter.0.into_inner(),
        bumps.iter().sum::<u64>(),
        "an update was lost under the GIL"
    );
}

/// Any switch interval is served, zero included. A holder that never releases the GIL on its
/// own, only at checkpoints, shares a GIL of its own with two threads that keep coming back for
/// it; each of the two must get all its turns (a starved one leaves the holder polling until the
/// test's deadline).
#[cfg(feature = "gil")]
#[test]
fn with_a_zero_interval_a_holder_that_only_reaches_checkpoints_serves_every_comer() {
    const COMERS: usize = 2;
    const TURNS: u64 = 200;
    finishes("the holder and the comers", || {
        let gil = ftrt_gil::Gil::new();
        gil.set_switch_interval(Duration::ZERO);
        let turns = GilProtected(UnsafeCell::new([0_u64; COMERS]));
        let all_served = || {
            // SAFETY: called holding `gil`, which guards `turns`.
            unsafe { (*turns.0.get()).iter().all(|&had| had == TURNS) }
        };
        thread::scope(|s| {
            gil.acquire();
            for me in 0..COMERS {
                let (gil, turns) = (&gil, &turns);
                s.spawn(move || {
                    for _ in 0..TURNS {
                        gil.acquire();
                        // SAFETY: this thread holds `gil`, which guards `turns`.
                        unsafe { (*turns.0.get())[me] += 1 };
                        // SAFETY: held.
                        unsafe { gil.release() };
                    }
                });
            }
            while !all_served() {
                // SAFETY: held at every checkpoint.
                unsafe { gil.check() };
            }
            // SAFETY: held.
            unsafe { gil.release() };
        });
    });
}

#[cfg(not(feature = "gil"))]
#[test]
fn without_a_gil_attached_threads_run_at_the_same_time() {
    // With a GIL this would deadlock: both threads must be attached at once to pass the barrier.
    finishes("two attached threads meeting", || {
        let meet = std::sync::Barrier::new(2);
        thread::scope(|s| {
            s.spawn(|| Python::attach(|_py| meet.wait()));
            Python::attach(|_py| meet.wait());
        });
    });
}

#[test]
fn allow_threads_suspends_critical_sections_and_resumes_the_innermost() {
    use ftrt_lock::{section, RawObjectLock};
    let lock = RawObjectLock::new();
    Python::attach(|py| {
        section::with(&lock, || {
            assert!(lock.is_locked());
            let locked_while_detached = py.allow_threads(|| lock.is_locked());
            assert!(!locked_while_detached);
            assert!(lock.is_locked());
        });
    });
}

#[test]
fn the_object_sections_lock_only_in_free_threaded_builds() {
    let (a, b) = (
        ftrt_lock::RawObjectLock::new(),
        ftrt_lock::RawObjectLock::new(),
    );
    let locks_expected = ftrt_gil::BUILD != "gil";
    Python::attach(|py| {
        ftrt_gil::section::with(py, &a, || assert_eq!(a.is_locked(), locks_expected));
        ftrt_gil::section::with_if(py, Some(&a), || assert_eq!(a.is_locked(), locks_expected));
        // No lock given, none taken, in any build.
        ftrt_gil::section::with_if(py, None, || assert!(!a.is_locked()));
        ftrt_gil::section::with2(py, &a, &b, || {
            assert_eq!(
                (a.is_locked(), b.is_locked()),
                (locks_expected, locks_expected)
            )
        });
        // `ftrt_lock`'s own sections are the user's, and lock in every build.
        ftrt_lock::section::with(&a, || assert!(a.is_locked()));
    });
    assert!(!a.is_locked() && !b.is_locked());
}

/// Whether another thread could take `lock` right now (and it gives it straight back).
fn free_to_another_thread(lock: &ftrt_lock::RawObjectLock) -> bool {
    thread::scope(|s| {
        s.spawn(|| {
            let took = lock.try_lock();
            if took {
                // SAFETY: taken just above.
                unsafe { lock.unlock() };
            }
            took
        })
        .join()
        .unwrap()
    })
}

#[test]
fn attaching_inside_a_critical_section_leaves_the_section_locked() {
    use ftrt_lock::{section, RawObjectLock};
    // A fresh thread, so that `attach` really attaches (and detaches at its end).
    thread::spawn(|| {
        let lock = RawObjectLock::new();
        section::with(&lock, || {
            assert!(!ftrt_gil::is_attached());
            Python::attach(|_py| ());
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 1,
                    elided: 0
                },
                "the attachment's end suspended a section it did not open"
            );
            assert!(
                !free_to_another_thread(&lock),
                "the section runs on without its lock"
            );
        });
        assert!(!lock.is_locked());
    })
    .join()
    .unwrap();
}

/// The attachment's inner section blocks, which suspends the outer one; the inner one's end
/// resumes it; and the attachment's end must leave it so.
#[test]
fn attaching_inside_a_critical_section_whose_inner_section_blocks_leaves_the_outer_one_locked() {
    use ftrt_lock::{section, RawObjectLock};
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    let (inner_taken, taken) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            inner.lock();
            inner_taken.send(()).unwrap();
            // The other thread blocks on `inner` only after suspending its section on `outer`.
            spin_until(|| !outer.is_locked());
            // SAFETY: locked above.
            unsafe { inner.unlock() };
        });
        let (outer, inner) = (&outer, &inner);
        s.spawn(move || {
            section::with(outer, || {
                taken.recv().unwrap();
                Python::attach(|_py| section::with(inner, || ()));
                assert_eq!(
                    section::depth(),
                    section::SectionDepth {
                        open: 1,
                        active: 1,
                        elided: 0
                    },
                    "the attachment's end suspended a section it did not open"
                );
                assert!(
                    !free_to_another_thread(outer),
                    "the section runs on without its lock"
                );
            });
        });
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

/// Two threads, each reading and writing a counter inside one lock's section with an
/// attachment in between: the section must exclude the other thread for its whole body.
#[test]
fn increments_inside_a_critical_section_that_attaches_are_exact() {
    use ftrt_lock::{section, RawObjectLock};
    const THREADS: u64 = 2;
    const PER_THREAD: u64 = if cfg!(miri) { 50 } else { 20_000 };
    let lock = RawObjectLock::new();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let start = std::sync::Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                for _ in 0..PER_THREAD {
                    section::with(&lock, || {
                        // A read-modify-write split in two: exact only under mutual exclusion.
                        let value = counter.load(Ordering::Relaxed);
                        Python::attach(|_py| ());
                        counter.store(value + 1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(
        counter.into_inner(),
        THREADS * PER_THREAD,
        "updates were lost"
    );
}

#[test]
fn a_section_that_begins_and_ends_while_detached_leaves_the_outer_section_suspended() {
    use ftrt_lock::{section, RawObjectLock};
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    Python::attach(|py| {
        section::with(&outer, || {
            let outer_free_while_detached = py.allow_threads(|| {
                section::with(&inner, || ());
                free_to_another_thread(&outer)
            });
            assert!(
                outer_free_while_detached,
                "a section ending while detached re-locked the outer section"
            );
            assert!(
                !free_to_another_thread(&outer),
                "the outer section was not resumed on re-attaching"
            );
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 1,
                    elided: 0
                }
            );
        });
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

/// The deadlock: a detached thread waits for a value that another thread delivers from
/// inside a section on the lock the first thread's outer section holds.
#[test]
fn a_detached_thread_that_opened_a_section_does_not_block_the_thread_it_waits_for() {
    use ftrt_lock::{section, RawObjectLock};
    finishes("the detached thread's wait", || {
        let (outer, inner) = (Arc::new(RawObjectLock::new()), RawObjectLock::new());
        let (deliver, delivered) = mpsc::channel();
        let (ask, asked) = mpsc::channel::<()>();
        let deliverer = {
            let outer = outer.clone();
            thread::spawn(move || {
                asked.recv().unwrap();
                section::with(&outer, || deliver.send(42).unwrap());
            })
        };
        let inner = &inner;
        Python::attach(|py| {
            section::with(&outer, || {
                py.allow_threads(move || {
                    section::with(inner, || ());
                    ask.send(()).unwrap();
                    delivered.recv().unwrap()
                })
            })
        });
        deliverer.join().unwrap();
    });
}

/// A section taken before attaching, suspended across `allow_threads`, is resumed without
/// holding the runtime up: while the thread waits for the section's lock it is detached, so
/// another thread that holds the lock and attaches before letting it go gets through, under the
/// GIL and past a stop of the world that begins meanwhile. (The resume used to wait attached:
/// holding the GIL, or holding the stop up, which the lock's holder waited for.)
#[test]
fn a_thread_that_waits_to_resume_a_section_after_allow_threads_is_detached_meanwhile() {
    use ftrt_lock::{section, RawObjectLock};
    static LOCK: RawObjectLock = RawObjectLock::new();
    static WAITED_FOR: AtomicBool = AtomicBool::new(false);
    static STOPPED: AtomicBool = AtomicBool::new(false);
    finishes("the resumed section", || {
        let (detached, wait_for_detached) = mpsc::channel();
        let (taken, wait_for_taken) = mpsc::channel();
        let holder = thread::spawn(move || {
            wait_for_detached.recv().unwrap();
            section::with(&LOCK, || {
                taken.send(()).unwrap();
                // The other thread re-attaches and blocks waiting for the lock; a stop begins
                // (and, unless that thread holds it up, may end). Another test's stop, raised
                // first, lets this thread go as well: the overlap is then that stop's, and the
                // stopper's comes after the lock is let go.
                spin_until(|| LOCK.parked_waiters() > 0);
                WAITED_FOR.store(true, Ordering::SeqCst);
                spin_until(|| ftrt_gil::stop_requested() || STOPPED.load(Ordering::SeqCst));
                Python::attach(|py| py.check());
            })
        });
        let stopper = thread::spawn(move || {
            // Once the holder has seen the waiter (which leaves the queue once let go).
            spin_until(|| WAITED_FOR.load(Ordering::SeqCst));
            Python::attach(|py| ftrt_gil::stop_the_world(py, || ()));
            STOPPED.store(true, Ordering::SeqCst);
        });
        section::with(&LOCK, move || {
            Python::attach(move |py| {
                py.allow_threads(move || {
                    detached.send(()).unwrap();
                    wait_for_taken.recv().unwrap();
                });
                assert!(LOCK.is_locked());
            })
        });
        holder.join().unwrap();
        stopper.join().unwrap();
    });
}

/// Locks `lock` on another thread, returning once it is held, and unlocks it once a thread
/// has blocked waiting for it.
#[cfg(not(feature = "gil"))]
fn hold_until_waited_for(lock: &'static ftrt_lock::RawObjectLock) -> thread::JoinHandle<()> {
    let (held, wait_for_held) = mpsc::channel();
    let holder = thread::spawn(move || {
        lock.lock();
        held.send(()).unwrap();
        spin_until(|| lock.parked_waiters() > 0);
        // SAFETY: locked above, on this thread.
        unsafe { lock.unlock() };
    });
    wait_for_held.recv().unwrap();
    holder
}

/// Yields until `done`: for a state another thread reaches (tests run under `finishes`, whose
/// deadline fails one that never comes).
fn spin_until(done: impl Fn() -> bool) {
    while !done() {
        thread::yield_now();
    }
}

/// The detach around a wait for a section's lock runs no quiescent-state hooks: nothing but the
/// wait runs in it, so nothing there can take a section and wait again (which, detaching again,
/// ran the same hooks again, without end).
#[cfg(not(feature = "gil"))]
#[test]
fn the_detach_around_a_wait_for_a_sections_lock_runs_no_hooks() {
    use common::hook_runs;
    use ftrt_lock::{section, RawObjectLock};
    static LOCK: RawObjectLock = RawObjectLock::new();
    hook_runs();
    finishes("the wait", || {
        let holder = hold_until_waited_for(&LOCK);
        let runs = Python::attach(|_py| {
            let before = hook_runs();
            section::with(&LOCK, || ());
            hook_runs() - before
        });
        holder.join().unwrap();
        assert_eq!(runs, 0, "hooks ran while the thread waited for the lock");
    });
}

/// The detach around a wait for a section's lock parks the biased counts, which merges what
/// other threads queued to this one; a release run there that waits for a section's lock too
/// waits in place. (It detached again, and its return waited for the merge it was part of: a
/// thread waiting for itself.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_waits_for_a_section_while_the_detach_parks_the_counts_waits_in_place() {
    use std::ptr::NonNull;

    use ftrt_lock::{section, RawObjectLock};
    use ftrt_refcount::BiasedCount;
    static LOCK: RawObjectLock = RawObjectLock::new();
    static RELEASED: AtomicUsize = AtomicUsize::new(0);
    /// Takes a section on the lock the thread is waiting for.
    unsafe fn release(_count: NonNull<BiasedCount>) {
        section::with(&LOCK, || ());
        RELEASED.fetch_add(1, Ordering::SeqCst);
    }
    finishes("the wait", || {
        Python::attach(|py| {
            // SAFETY: used at once, attached.
            let token = unsafe { py.new_object_token() };
            let count = Box::leak(Box::new(BiasedCount::new_for(token)));
            let address = std::ptr::from_mut(count) as usize;
            // Another thread drops the one reference: queued to this thread, its owner.
            thread::spawn(move || {
                let count = NonNull::new(address as *mut BiasedCount).unwrap();
                // SAFETY: the count's one reference, given up here; `release` frees nothing.
                assert!(!unsafe { BiasedCount::decref(count, release) });
            })
            .join()
            .unwrap();
            let holder = hold_until_waited_for(&LOCK);
            // Contended: the detach parks the counts, whose merge runs `release`.
            section::with(&LOCK, || ());
            holder.join().unwrap();
        });
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
    });
}

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

#[test]
fn the_runtime_lists_its_threads_from_the_one_registry_under_their_biased_ids() {
    // A standalone owner of `ftrt-refcount` registers in the same table, without runtime info:
    // it is not one of the runtime's threads.
    let standalone = ftrt_refcount::biased::LocalCounts::register();
    let standalone_id = standalone.id().unwrap();
    let info = std::thread::Builder::new()
        .name("listed".into())
        .spawn(|| {
            Python::attach(|py| {
                let id = py.thread_id().unwrap();
                let listed: Vec<_> = threads().into_iter().filter(|t| t.id == id).collect();
                assert_eq!(listed.len(), 1);
                (id, listed[0].name.clone())
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(info.1.as_deref(), Some("listed"));
    assert!(threads().iter().all(|t| t.id != info.0), "gone once exited");
    assert!(threads().iter().all(|t| t.id != standalone_id));
    drop(standalone);
}

/// Counts queued to a thread whose detach's park then runs their releases, and releases that
/// panic once they are told to.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
mod queued_releases {
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use ftrt_refcount::BiasedCount;

    pub static RELEASED: AtomicUsize = AtomicUsize::new(0);
    pub static PANIC_NEXT: AtomicBool = AtomicBool::new(false);
    /// One test at a time: they share the counters.
    pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    unsafe fn release(_count: NonNull<BiasedCount>) {
        RELEASED.fetch_add(1, Ordering::SeqCst);
        if PANIC_NEXT.swap(false, Ordering::SeqCst) {
            panic!("a release that fails");
        }
    }

    /// A count owned by the calling thread, with one reference (leaked: `release` frees nothing).
    pub fn owned_count(py: ftrt_gil::Python<'_>) -> usize {
        // SAFETY: used at once, attached (the token proves it, checked as it is made).
        let token = unsafe { py.new_object_token() };
        std::ptr::from_mut(Box::leak(Box::new(BiasedCount::new_for(token)))) as usize
    }

    /// Drops the count's one reference on another thread, with the releases above: queued to
    /// its owner, or merged there and then if the owner is parked.
    pub fn drop_elsewhere(address: usize) {
        drop_elsewhere_with(address, release);
    }

    /// [`drop_elsewhere`], with a release of the caller's (which must free nothing).
    pub fn drop_elsewhere_with(address: usize, release: ftrt_refcount::biased::Release) {
        std::thread::spawn(move || {
            let count = NonNull::new(address as *mut BiasedCount).unwrap();
            // SAFETY: the count's one reference, given up here; `release` frees nothing.
            let _ = unsafe { BiasedCount::decref(count, release) };
        })
        .join()
        .unwrap();
    }
}

/// A release that panics while `allow_threads` parks the counts unwinds out of it with the
/// thread attached as before: its counts unparked (another thread then queues to it rather
/// than merging for it) and the world entered. (The park's panic skipped the rest of the
/// detach and the re-attach: the thread went on counting with its counts parked, which other
/// threads' merges write meanwhile, a data race.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_panics_in_the_park_of_allow_threads_leaves_the_thread_attached_and_unparked() {
    use queued_releases::*;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        let (first, second) = (owned_count(py), owned_count(py));
        let released = RELEASED.load(Ordering::SeqCst);
        drop_elsewhere(first);
        assert_eq!(
            RELEASED.load(Ordering::SeqCst),
            released,
            "queued to its owner"
        );
        PANIC_NEXT.store(true, Ordering::SeqCst);
        let detach =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| py.allow_threads(|| ())));
        assert!(detach.is_err(), "the release's panic");
        assert_eq!(RELEASED.load(Ordering::SeqCst), released + 1);
        assert!(ftrt_gil::is_attached());
        drop_elsewhere(second);
        assert_eq!(
            RELEASED.load(Ordering::SeqCst),
            released + 1,
            "merged by another thread while its owner is attached"
        );
        py.merge_pending();
        assert_eq!(RELEASED.load(Ordering::SeqCst), released + 2);
        // Stops of the world find the thread as attached as it is.
        ftrt_gil::stop_the_world(py, || ());
    });
}

/// A release that panics while the end of an attachment parks the counts still detaches the
/// thread. (The rest of the detach was skipped: the thread stayed attached with no attachment
/// to end it, and stops waited for it for ever.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_panics_in_the_park_at_the_end_of_an_attachment_still_detaches() {
    use queued_releases::*;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let attachment = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            drop_elsewhere(owned_count(py));
            PANIC_NEXT.store(true, Ordering::SeqCst);
        })
    });
    assert!(attachment.is_err(), "the release's panic");
    assert!(
        !ftrt_gil::is_attached(),
        "attached after the attachment ended"
    );
    let stopped = finishes("a stop from another thread", || {
        Python::attach(|py| ftrt_gil::try_stop_the_world(py, Some(HANG), || ()).is_ok())
    });
    assert!(stopped);
}

/// A release that detaches (`allow_threads`, from an attach nested in it) while the thread's
/// own detach parks the counts: the nested detach leaves the world and comes back, leaving the
/// counts to the park under way. (Its return waited for the merge it was part of: a thread
/// waiting for itself.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_detaches_while_the_detach_parks_the_counts_does_not_wait_for_itself() {
    use std::ptr::NonNull;

    use ftrt_refcount::BiasedCount;
    static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);
    unsafe fn release(_count: NonNull<BiasedCount>) {
        Python::attach(|py| {
            py.allow_threads(|| DETACHED_RUNS.fetch_add(1, Ordering::SeqCst));
        });
    }
    // Taken first: a thread blocked while attached would hold up the other tests' stops.
    let _serial = queued_releases::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    finishes("the detach", || {
        Python::attach(|py| {
            queued_releases::drop_elsewhere_with(queued_releases::owned_count(py), release);
            // The park merges the queued count: its release detaches.
            py.allow_threads(|| ());
            assert_eq!(DETACHED_RUNS.load(Ordering::SeqCst), 1);
            assert!(ftrt_gil::is_attached());
            // Unparked: what another thread drops now is queued, not merged for this thread.
            let released = queued_releases::RELEASED.load(Ordering::SeqCst);
            queued_releases::drop_elsewhere(queued_releases::owned_count(py));
            assert_eq!(queued_releases::RELEASED.load(Ordering::SeqCst), released);
            py.merge_pending();
            assert_eq!(
                queued_releases::RELEASED.load(Ordering::SeqCst),
                released + 1
            );
        });
    });
}

/// A thread that attaches while another thread merges one of its counts for it (dropped while
/// it was detached) waits for that merge outside the world, so a stop of the world that begins
/// meanwhile does not wait for it. (It entered the world first: when the merge's release
/// attached during a stop, the stopper waited for the attaching thread, that thread for the
/// merge, and the merge for the stop.)
///
/// The stop begins once the owner waits for the merge (a probe of `ftrt_refcount` says so); a
/// run where another test's stop let the release go on first tests nothing, and passes.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn an_attaching_thread_waits_for_a_merge_on_its_behalf_outside_the_world() {
    use std::ptr::NonNull;
    use std::sync::atomic::AtomicBool;

    use ftrt_refcount::BiasedCount;
    static IN_RELEASE: AtomicBool = AtomicBool::new(false);
    static RELEASED: AtomicBool = AtomicBool::new(false);
    static STOP_RAN: AtomicBool = AtomicBool::new(false);
    /// Attaches once a stop of the world is asked for, so it waits for the stop to end (the
    /// dropping thread attaches for the first time here: a new thread waits for a stop under
    /// way, whether the stopper listed it or not); or once the stop has run, if it came and
    /// went between two looks.
    unsafe fn release(_count: NonNull<BiasedCount>) {
        IN_RELEASE.store(true, Ordering::SeqCst);
        spin_until(|| ftrt_gil::stop_requested() || STOP_RAN.load(Ordering::SeqCst));
        Python::attach(|_py| ());
        RELEASED.store(true, Ordering::SeqCst);
    }
    // Taken first: a thread blocked while attached would hold up the other tests' stops.
    let _serial = queued_releases::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (send_owner_id, owner_id) = mpsc::channel();
    let owner = thread::spawn(move || {
        Python::attach(|py| {
            send_owner_id.send(py.thread_id().expect("an id")).unwrap();
            let address = queued_releases::owned_count(py);
            py.allow_threads(|| {
                // The owner is parked: the drop merges the count on the dropping thread.
                thread::spawn(move || {
                    let count = NonNull::new(address as *mut BiasedCount).unwrap();
                    // SAFETY: the count's one reference, given up here; `release` frees nothing.
                    let _ = unsafe { BiasedCount::decref(count, release) };
                });
                spin_until(|| IN_RELEASE.load(Ordering::SeqCst));
            });
            // Attached again only once the merge for this thread was over.
            RELEASED.load(Ordering::SeqCst)
        })
    });
    let owner_id = owner_id.recv().unwrap();
    // Until the owner, attaching, waits for the merge under way for it; or until the release
    // is over (another test's stop let it go on first: this run then tests nothing).
    spin_until(|| {
        ftrt_refcount::biased::unpark_waiting_for_merges(owner_id)
            || RELEASED.load(Ordering::SeqCst)
    });
    let stopped = Python::attach(|py| {
        let mut work = || STOP_RAN.store(true, Ordering::SeqCst);
        loop {
            match ftrt_gil::try_stop_the_world(py, Some(HANG), work) {
                // Another test's stop: this one parked until it ended.
                Err(ftrt_gil::NotStopped {
                    why: ftrt_gil::world::StopFailed::Busy,
                    work: back,
                }) => work = back,
                result => break result.is_ok(),
            }
        }
    });
    assert!(stopped, "the stop waited for the attaching thread");
    assert!(owner.join().unwrap(), "attached during the merge for it");
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
