//! Lock elision under load (`ftrt_gil::set_lock_elision`): threads that take the world alone,
//! append to one shared list and a shared dict without locking, and are asked to let go by
//! threads that attach, at 2 to 16 threads. Every append and insert must land: a section that
//! ran unlocked beside another thread would lose some. Run under ThreadSanitizer by
//! `cargo xtask tsan`, which also sees the unlocked writes race if exclusion fails.
//!
//!
//! A thread that holds the world alone also frees what its writes remove from shared containers
//! at once, as a local container's writes do, unless a read is open on it or on a thread that
//! detached with one.
//!
//! Elision is a process-wide setting: this binary holds only these scenarios, one at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{Kind, PyDict, PyFloat, PyInt, PyList, PyStr, ReadGuard};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

static SERIAL: Mutex<()> = Mutex::new(());

const THREAD_COUNTS: &[usize] = if cfg!(miri) { &[2] } else { &[2, 4, 8, 16] };
/// Attachments per thread: each begins without the world, may take it at a checkpoint, and
/// ends it.
const ATTACHMENTS: usize = if cfg!(miri) { 2 } else { 40 };
/// Appends per attachment, with a checkpoint after each: many repins, so many holds tried.
const APPENDS: usize = if cfg!(miri) { 40 } else { 400 };

/// Each thread attaches `ATTACHMENTS` times, appends to the shared list and inserts distinct
/// keys into the shared dict, reaching a checkpoint after each, and detaches between
/// attachments (half of them inside an `allow_threads` too).
#[test]
fn every_append_lands_while_threads_take_and_give_up_the_world() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ftrt_gil::set_lock_elision(true);
    // Checkpoints after which a thread held the world: the scenario must exercise holds.
    let held = AtomicUsize::new(0);
    for &threads in THREAD_COUNTS {
        let (list, dict) =
            Python::attach(|py| (PyList::empty(py).unbind(), PyDict::new(py).unbind()));
        thread::scope(|s| {
            for t in 0..threads {
                let (list, dict, held) = (&list, &dict, &held);
                s.spawn(move || {
                    for a in 0..ATTACHMENTS {
                        Python::attach(|py| {
                            let (list, dict) = (list.bind(py), dict.bind(py));
                            for i in 0..APPENDS {
                                list.append(PyInt::new(py, i as i64));
                                let key = ((t * ATTACHMENTS + a) * APPENDS + i) as i64;
                                dict.set_item(&PyInt::new(py, key).into_any(), PyInt::new(py, 1))
                                    .unwrap();
                                if i == APPENDS / 2 && a % 2 == 0 {
                                    py.allow_threads(thread::yield_now);
                                }
                                py.check();
                                if py.holds_world_alone() {
                                    held.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        });
                    }
                });
            }
        });
        let expected = threads * ATTACHMENTS * APPENDS;
        Python::attach(|py| {
            assert_eq!(
                list.bind(py).len(),
                expected,
                "{threads} threads: appends lost"
            );
            assert_eq!(
                dict.bind(py).len(),
                expected,
                "{threads} threads: inserts lost"
            );
        });
    }
    ftrt_gil::set_lock_elision(false);
    let held = held.into_inner();
    eprintln!("checkpoints after which a thread held the world: {held}");
    // Under the GIL no thread holds the world in this sense (the GIL serialises the sections).
    assert_eq!(
        held > 0,
        !cfg!(ftrt_gil_build),
        "threads held the world {held} times"
    );
}

/// More checks than the 16 that make one repin, where a thread tries to take the world.
fn repin(py: Python<'_>) {
    for _ in 0..16 {
        py.check();
    }
}

/// Runs `scenario` alone in this binary with elision on, and turns it off again.
fn with_elision(scenario: impl FnOnce()) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ftrt_gil::set_lock_elision(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(scenario));
    ftrt_gil::set_lock_elision(false);
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

/// A thread that holds the world alone frees a shared list's removal at once: no other thread
/// is attached to be reading it. A read guard alive on the thread, borrowed from or not, sends
/// removals back to the epoch, and what it borrowed stays readable.
#[test]
fn a_thread_holding_the_world_frees_a_shared_removal_at_once_unless_a_read_is_open() {
    with_elision(|| {
        thread::scope(|s| {
            s.spawn(|| {
                Python::attach(|py| {
                    let floats = || live_objects(Kind::Float);
                    let list = PyList::new(py, [PyFloat::new(py, 0.5), PyFloat::new(py, 1.5)]);
                    let list = list.unbind().bind(py);
                    repin(py);
                    assert_eq!(py.holds_world_alone(), !cfg!(ftrt_gil_build));
                    let before = floats();
                    list.del_item(0).unwrap();
                    assert_eq!(floats(), before - 1, "a removal under the hold waited");

                    let dict = PyDict::new(py).unbind().bind(py);
                    let key = PyStr::intern(py, "k");
                    dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
                    let guard = ReadGuard::new(py);
                    let before = floats();
                    list.del_item(0).unwrap();
                    assert_eq!(floats(), before, "freed at once under a guard");
                    let borrowed = dict.get_item_borrowed(&key, &guard).unwrap();
                    dict.del_item(&key).unwrap();
                    assert_eq!(floats(), before, "freed at once under a borrow");
                    assert_eq!(borrowed.to_f64(), Ok(2.5));
                });
            });
        });
    });
}

/// A thread away in `allow_threads` with a borrowed value under its read guard keeps another
/// thread's hold on the world from freeing at once: the holder sees no thread attached, but the
/// value it removes is still the reader's to use when it comes back.
#[test]
fn a_hold_frees_nothing_at_once_while_a_thread_is_away_with_a_read_open() {
    with_elision(|| {
        let (dict, key) = Python::attach(|py| {
            let dict = PyDict::new(py);
            let key = PyStr::intern(py, "k");
            dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
            (dict.unbind(), key.unbind())
        });
        // The reader is away from `away` until `back`; the holder works in between.
        let (away, back) = (Barrier::new(2), Barrier::new(2));
        thread::scope(|s| {
            s.spawn(|| {
                Python::attach(|py| {
                    let guard = ReadGuard::new(py);
                    let (dict, key) = (dict.bind(py), key.bind(py));
                    let borrowed = dict.get_item_borrowed(&key, &guard).unwrap();
                    py.allow_threads(|| {
                        away.wait();
                        back.wait();
                    });
                    assert_eq!(borrowed.to_f64(), Ok(2.5), "the borrowed value changed");
                });
            });
            s.spawn(|| {
                away.wait();
                let (held, freed) = Python::attach(|py| {
                    repin(py);
                    let held = py.holds_world_alone();
                    let before = live_objects(Kind::Float);
                    dict.bind(py).del_item(&key.bind(py)).unwrap();
                    (held, before - live_objects(Kind::Float))
                });
                // Before asserting, so that a failure does not leave the reader waiting.
                back.wait();
                assert_eq!(held, !cfg!(ftrt_gil_build));
                assert_eq!(
                    freed, 0,
                    "the holder freed a value a detached thread still borrows"
                );
            });
        });
    });
}

/// A read leaked on a thread (a forgotten `OpenRead`) is counted when that thread detaches, and
/// keeps holds from freeing at once; once the thread has exited it reads nothing, and holds free
/// at once again.
#[test]
fn a_read_leaked_by_a_thread_that_exited_no_longer_keeps_holds_from_freeing_at_once() {
    with_elision(|| {
        thread::spawn(|| Python::attach(|_| std::mem::forget(ftrt_gil::local::OpenRead::new())))
            .join()
            .unwrap();
        let freed = thread::spawn(|| {
            Python::attach(|py| {
                let list = PyList::new(py, [PyFloat::new(py, 0.5)]).unbind().bind(py);
                repin(py);
                assert_eq!(py.holds_world_alone(), !cfg!(ftrt_gil_build));
                let before = live_objects(Kind::Float);
                list.del_item(0).unwrap();
                before - live_objects(Kind::Float)
            })
        })
        .join()
        .unwrap();
        assert_eq!(
            freed, 1,
            "a removal under the hold waited for a leaked read"
        );
    });
}
