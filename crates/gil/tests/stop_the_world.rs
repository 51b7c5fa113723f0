//! `stop_the_world`: while the stopper's closure runs, no other thread is attached. Attached
//! threads park at their checkpoints, detached ones cannot attach, and stoppers take turns.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

use ftrt_gil::world::{Presence, World};
use ftrt_gil::{stop_the_world, Python};

/// Threads that stay attached and keep reaching checkpoints; each step is counted while
/// attached. Inside the stop the count must not move.
#[test]
fn attached_threads_park_at_their_checkpoints() {
    let steps = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let started = Barrier::new(4);
    thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                Python::attach(|py| {
                    py.allow_threads(|| started.wait());
                    while !done.load(Ordering::Relaxed) {
                        steps.fetch_add(1, Ordering::Relaxed);
                        py.check();
                    }
                })
            });
        }
        started.wait();
        for _ in 0..20 {
            Python::attach(|py| {
                stop_the_world(py, || {
                    let before = steps.load(Ordering::Relaxed);
                    thread::sleep(Duration::from_millis(2));
                    assert_eq!(
                        steps.load(Ordering::Relaxed),
                        before,
                        "a thread ran in the stop"
                    );
                })
            });
        }
        done.store(true, Ordering::Relaxed);
    });
}

/// Inside its own stop the stopper is the only thread running, whatever its closure calls: a
/// checkpoint returns at once, a nested stop runs its closure at once, and `allow_threads` lets
/// no other thread run. (These used to park the stopper for its own stop, for ever, in the
/// free-threaded builds, and to let the other threads run in the `gil` build.)
#[test]
fn the_stoppers_own_checkpoints_nested_stops_and_detaches_run_inside_its_stop() {
    // Threads of their own, not scoped: should the stopper hang, the test fails rather than
    // waiting for it.
    static STEPS: AtomicUsize = AtomicUsize::new(0);
    static DONE: AtomicBool = AtomicBool::new(false);
    let started = std::sync::Arc::new(Barrier::new(2));
    let looper = {
        let started = started.clone();
        thread::spawn(move || {
            Python::attach(|py| {
                py.allow_threads(|| started.wait());
                while !DONE.load(Ordering::Relaxed) {
                    STEPS.fetch_add(1, Ordering::Relaxed);
                    py.check();
                }
            })
        })
    };
    started.wait();
    let (finished, result) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let ran = Python::attach(|py| {
            stop_the_world(py, || {
                let before = STEPS.load(Ordering::Relaxed);
                let mut ran = 0;
                for _ in 0..100 {
                    py.check();
                }
                ran += stop_the_world(py, || 1);
                ran += py.allow_threads(|| {
                    thread::sleep(Duration::from_millis(10));
                    1
                });
                py.check();
                let after = STEPS.load(Ordering::Relaxed);
                (ran, after - before)
            })
        });
        finished.send(ran).unwrap();
    });
    let ran = result.recv_timeout(Duration::from_secs(30));
    DONE.store(true, Ordering::Relaxed);
    assert_eq!(
        ran,
        Ok((2, 0)),
        "(closures run, steps of another thread) in the stop"
    );
    looper.join().unwrap();
}

/// The stopper's checkpoints inside its stop run no quiescent-state hooks (which may collect,
/// and so stop the world themselves); the first ones after it do.
#[cfg(not(feature = "gil"))]
#[test]
fn the_stoppers_checkpoints_run_no_hooks_inside_its_stop() {
    use common::hook_runs;
    hook_runs();
    thread::spawn(|| {
        Python::attach(|py| {
            let inside = stop_the_world(py, || {
                let before = hook_runs();
                for _ in 0..100 {
                    py.check();
                }
                hook_runs() - before
            });
            assert_eq!(inside, 0, "hooks ran inside the stop");
            let before = hook_runs();
            for _ in 0..100 {
                py.check();
            }
            assert!(hook_runs() > before, "no hooks ran after the stop");
        })
    })
    .join()
    .unwrap();
}

/// A thread that tries to attach during a stop waits for it to end.
#[test]
fn a_detached_thread_cannot_attach_during_a_stop() {
    let inside = AtomicBool::new(false);
    let attached_inside = AtomicBool::new(false);
    let go = Barrier::new(2);
    thread::scope(|s| {
        let waiter = s.spawn(|| {
            go.wait();
            Python::attach(|_| {
                attached_inside.store(inside.load(Ordering::SeqCst), Ordering::SeqCst)
            });
        });
        Python::attach(|py| {
            stop_the_world(py, || {
                inside.store(true, Ordering::SeqCst);
                go.wait();
                thread::sleep(Duration::from_millis(20));
                inside.store(false, Ordering::SeqCst);
            })
        });
        waiter.join().unwrap();
    });
    assert!(!attached_inside.load(Ordering::SeqCst));
}

/// A thread's exit does not wait for a stop of the world, so a thread that waits for an exit
/// while attached (a join without `allow_threads`), and so holds a stop up, sees it end. The
/// exit frees nothing itself (the counts stay parked from its last detach: what other threads
/// queue to it, they merge). It used to attach to merge its queue, and then this waited until
/// the timeout: the exit for the stop, the stop for the waiting thread, that thread for the exit.
/// (Free-threaded builds: under the GIL the waiting thread keeps the stopper from attaching.)
#[test]
#[cfg(not(feature = "gil"))]
fn a_thread_can_exit_while_a_stop_waits_for_a_thread_that_waits_for_it() {
    static EXITED: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>> =
        std::sync::Mutex::new(None);
    /// Sends when dropped: the last thread-local of its thread (the first one it used).
    struct SignalAtExit;
    impl Drop for SignalAtExit {
        fn drop(&mut self) {
            if let Some(exited) = EXITED.lock().unwrap().take() {
                let _ = exited.send(());
            }
        }
    }
    thread_local!(static SIGNAL_AT_EXIT: SignalAtExit = const { SignalAtExit });
    let (exited_send, exited) = std::sync::mpsc::channel();
    *EXITED.lock().unwrap() = Some(exited_send);
    let (go, go_receive) = std::sync::mpsc::channel::<()>();
    let (ready_send, ready) = std::sync::mpsc::channel::<()>();
    let exiting = thread::spawn(move || {
        SIGNAL_AT_EXIT.with(|_| ());
        // A thread state, whose exit sequence runs below.
        Python::attach(|_| {});
        ready_send.send(()).unwrap();
        go_receive.recv().unwrap();
    });
    // Attached and detached before the stop: a thread attaching during it would wait for it.
    ready.recv().unwrap();
    // The stopper attaches first and waits detached for this thread to attach: attaching, or
    // waiting attached for the stopper, could wait for another test's stop, which would wait
    // for this thread.
    let (stopper_attached_send, stopper_attached) = std::sync::mpsc::channel::<()>();
    let (attached_send, attached) = std::sync::mpsc::channel::<()>();
    let exit_seen = thread::scope(|s| {
        s.spawn(move || {
            Python::attach(|py| {
                stopper_attached_send.send(()).unwrap();
                py.allow_threads(move || attached.recv().unwrap());
                stop_the_world(py, || {});
            })
        });
        stopper_attached.recv().unwrap();
        Python::attach(|_| {
            attached_send.send(()).unwrap();
            // Until a stop waits for this attached thread (it reaches no checkpoint, so the
            // stop cannot end meanwhile): the stopper's, or another test's, which holds the
            // stopper up and waits for this thread all the same. Only a stop raises the flag
            // while this thread is attached (a hold on the world alone needs it detached).
            // Bounded: a stopper that failed before asking leaves a failure, not a hang.
            let asked = std::time::Instant::now();
            while !ftrt_gil::stop_requested() {
                assert!(
                    asked.elapsed() < Duration::from_secs(30),
                    "no stop was asked for"
                );
                std::hint::spin_loop();
            }
            go.send(()).unwrap();
            // Waiting attached, without a checkpoint: the stop cannot end before this does.
            exited.recv_timeout(Duration::from_secs(2)).is_ok()
        })
    });
    exiting.join().unwrap();
    assert!(
        exit_seen,
        "the exit waited for the stop that waited for the thread waiting for it"
    );
}

/// Several threads stop the world at once and over and over: never two stops at a time.
#[test]
fn stoppers_take_turns() {
    let in_stop = AtomicUsize::new(0);
    let stops = AtomicUsize::new(0);
    thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..50 {
                    Python::attach(|py| {
                        stop_the_world(py, || {
                            assert_eq!(in_stop.fetch_add(1, Ordering::SeqCst), 0);
                            stops.fetch_add(1, Ordering::SeqCst);
                            in_stop.fetch_sub(1, Ordering::SeqCst);
                        });
                        py.check();
                    })
                }
            });
        }
    });
    assert_eq!(stops.load(Ordering::SeqCst), 200);
}

// The protocol itself (`ftrt_gil::world`), one step at a time.

/// A thread that leaves while a stopper waits for it leaves suspended: attaching again waits
/// for the stop to end. (Leaving detached, it attached again before the stopper woke up, and
/// a thread parking in a loop held a stop off for tens of milliseconds.)
#[test]
fn a_thread_left_while_waited_for_attaches_only_after_the_stop() {
    let world = World::new();
    let (mutator, stopper) = (Presence::new(), Presence::new());
    let stop_ran = AtomicBool::new(false);
    world.enter(Some(&mutator));
    let ran_before_attaching = thread::scope(|s| {
        s.spawn(|| {
            world.enter(Some(&stopper));
            let stopped = world
                .try_stop(Some(&stopper), || vec![&mutator, &stopper], None)
                .expect("the only stopper");
            stop_ran.store(true, Ordering::SeqCst);
            drop(stopped);
            world.leave(Some(&stopper));
        });
        while !mutator.is_waited_for() {
            thread::yield_now();
        }
        world.leave(Some(&mutator));
        world.enter(Some(&mutator));
        let ran = stop_ran.load(Ordering::SeqCst);
        // Out of the world again, so that a stopper still waiting (the bug) can finish.
        world.leave(Some(&mutator));
        ran
    });
    assert!(
        ran_before_attaching,
        "the thread attached again before the stop it left for"
    );
}

/// A thread that parks before the stopper has reached it waits for the stop all the same.
#[test]
fn a_thread_parked_before_the_stopper_reached_it_waits_for_the_stop() {
    let world = World::new();
    let (mutator, stopper) = (Presence::new(), Presence::new());
    let stop_ran = AtomicBool::new(false);
    world.enter(Some(&mutator));
    let ran_before_attaching = thread::scope(|s| {
        s.spawn(|| {
            world.enter(Some(&stopper));
            let stopped = world
                .try_stop(
                    Some(&stopper),
                    || {
                        // The stop is raised; list the threads only once the mutator parked.
                        while mutator.is_attached() {
                            thread::yield_now();
                        }
                        vec![&mutator, &stopper]
                    },
                    None,
                )
                .expect("the only stopper");
            stop_ran.store(true, Ordering::SeqCst);
            drop(stopped);
            world.leave(Some(&stopper));
        });
        while !world.stop_requested() {
            thread::yield_now();
        }
        world.park(Some(&mutator));
        let ran = stop_ran.load(Ordering::SeqCst);
        // Out of the world before the check, so that a stopper still waiting for this thread
        // (the bug) can finish, and the test fails instead of hanging.
        world.leave(Some(&mutator));
        ran
    });
    assert!(ran_before_attaching, "the park ended before the stop");
}

/// The stopper's own critical sections are suspended while its closure runs, in every build
/// (in the `gil` build the stop ran with them held), and resumed after it.
#[test]
fn the_stoppers_own_sections_are_suspended_inside_its_stop_in_every_build() {
    let lock = ftrt_lock::RawObjectLock::new();
    Python::attach(|py| {
        ftrt_lock::section::with(&lock, || {
            assert!(lock.is_locked());
            stop_the_world(py, || assert!(!lock.is_locked(), "held inside the stop"));
            assert!(lock.is_locked(), "not resumed after the stop");
        })
    });
}

/// An anonymous thread that leaves a world it never entered is a bug the world reports: the
/// count of anonymous threads attached wrapped around before, and every later stop waited for
/// threads that did not exist.
#[test]
fn an_anonymous_leave_without_an_enter_panics_and_leaves_the_count_alone() {
    let world = World::new();
    let left = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| world.leave(None)));
    assert!(left.is_err(), "leaving without entering passed");
    let stopper = Presence::new();
    world.enter(Some(&stopper));
    let stopped = world.try_stop(
        Some(&stopper),
        || vec![&stopper],
        Some(Duration::from_secs(10)),
    );
    assert!(
        stopped.is_ok(),
        "no thread is attached, yet the stop failed"
    );
    drop(stopped);
    world.leave(Some(&stopper));
}

/// A patience too long for the clock to add (`Duration::MAX`: "as long as it takes") waits
/// without a deadline, in `try_stop_the_world` and `World::try_stop` alike. The deadline's sum
/// used to panic after the stop was raised and before anything could lower it: every other
/// thread then waited for that stop for ever.
#[test]
fn a_patience_past_the_clocks_end_waits_without_a_deadline() {
    let ran = Python::attach(|py| {
        let mut work = || 7;
        loop {
            match ftrt_gil::try_stop_the_world(py, Some(Duration::MAX), work) {
                Ok(ran) => break ran,
                // Another test's stop (this binary's tests run at once): this one parked
                // until it ended.
                Err(not) if not.why == ftrt_gil::world::StopFailed::Busy => work = not.work,
                Err(not) => panic!("no deadline, yet the stop failed: {:?}", not.why),
            }
        }
    });
    assert_eq!(ran, 7);
    // Another stop runs, and threads attach: the first one's stop was lowered.
    let other = thread::spawn(|| Python::attach(|py| stop_the_world(py, || 8)));
    assert_eq!(other.join().unwrap(), 8);

    let world = World::new();
    let stopper = Presence::new();
    world.enter(Some(&stopper));
    let stopped = world.try_stop(Some(&stopper), || vec![&stopper], Some(Duration::MAX));
    assert!(
        stopped.is_ok(),
        "no other thread is attached, yet the stop failed"
    );
    drop(stopped);
    assert!(!world.stop_requested(), "the world's stop was left raised");
    world.leave(Some(&stopper));
}
