//! `stop_the_world`: while the stopper's closure runs, no other thread is attached. Attached
//! threads park at their checkpoints, detached ones cannot attach, and stoppers take turns.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Barrier;
use std::thread;
use std::time::Duration;

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
