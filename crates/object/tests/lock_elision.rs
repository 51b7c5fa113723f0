//! Lock elision under load (`ftrt_gil::set_lock_elision`): threads that take the world alone,
//! append to one shared list and a shared dict without locking, and are asked to let go by
//! threads that attach, at 2 to 16 threads. Every append and insert must land: a section that
//! ran unlocked beside another thread would lose some. Run under ThreadSanitizer by
//! `cargo xtask tsan`, which also sees the unlocked writes race if exclusion fails.
//!
//! Elision is a process-wide setting: this binary holds only these scenarios, one at a time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;

use ftrt_gil::Python;
use ftrt_object::{PyDict, PyInt, PyList};

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
