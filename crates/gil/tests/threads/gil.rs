//! Attaching and detaching: reentrancy, `allow_threads`, panics, thread exit, and the GIL's
//! switching (or its absence).

use super::*;

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
