//! `try_stop_the_world`'s patience. The file's one test keeps a thread attached without
//! checkpoints on purpose, which would hold up any other test's stop of the world: it runs
//! alone in its own process.
#![cfg(not(feature = "gil"))] // the `gil` build's stop never waits

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use ftrt_gil::{stop_the_world, Python};

/// A stop that runs out of patience hands its work back unrun, and a later stop runs it. (A
/// thread stays attached without a checkpoint, blocked on a channel, so the first stop cannot
/// complete.)
#[test]
fn a_stop_that_gives_up_hands_its_work_back_unrun() {
    use std::sync::mpsc;
    let runs = AtomicUsize::new(0);
    let (attached_tx, attached_rx) = mpsc::channel();
    let (let_go_tx, let_go_rx) = mpsc::channel::<()>();
    let holder = thread::spawn(move || {
        Python::attach(|_py| {
            attached_tx.send(()).unwrap();
            let_go_rx.recv().unwrap();
        })
    });
    attached_rx.recv().unwrap();
    let work = || runs.fetch_add(1, Ordering::SeqCst);
    let not_stopped = Python::attach(|py| {
        ftrt_gil::try_stop_the_world(py, Some(Duration::from_millis(20)), work)
    })
    .expect_err("the world stopped with a thread attached and blocked");
    assert_eq!(not_stopped.why, ftrt_gil::world::StopFailed::TimedOut);
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the work ran");
    let_go_tx.send(()).unwrap();
    holder.join().unwrap();
    Python::attach(|py| stop_the_world(py, not_stopped.work));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
