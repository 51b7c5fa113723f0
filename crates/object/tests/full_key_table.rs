//! The object model stays sound when other crates took every per-thread key slot of
//! `ftrt-gil` (`ftrt_gil::local::Key`) before the object model used all of its own. A thread
//! whose local objects were listed, but whose retired-reference batch had no slot, handed a
//! removed reference to the epoch on its own, as if the thread had exited: another thread then
//! dropped it, and freeing a local object off its thread panicked there ("a listed object's
//! thread has its list"), leaking it.
//!
//! The key table is process-wide: this file holds only this scenario.

use std::cell::Cell;
use std::sync::mpsc;

use ftrt_gil::local::{Key, MAX_KEYS};
use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{Kind, PyDict, PyList, PyStr, ReadGuard};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Another crate's keys: enough to take every slot left.
static OTHER_CRATES_KEYS: [Key<Cell<u8>>; MAX_KEYS] =
    [const { Key::new(|| Cell::new(0)) }; MAX_KEYS];

/// Live counts are process-wide: a test added beside this one takes this lock too.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_reference_retired_by_a_live_thread_without_a_batch_slot_is_freed_on_that_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = Python::attach(|py| {
        // The object model takes slots for its list of local objects first.
        drop(PyList::empty(py));
        for key in &OTHER_CRATES_KEYS {
            key.with(py, |_| ());
        }
        live_objects(Kind::List)
    });
    let (parked, wait_parked) = mpsc::channel();
    let (resume, wait_resume) = mpsc::channel::<()>();
    let owner = std::thread::spawn(move || {
        Python::attach(|py| {
            let dict = PyDict::new(py);
            let key = PyStr::intern(py, "k");
            // Local to this thread, and listed in its list of local objects.
            dict.set_item(&key, PyList::empty(py)).unwrap();
            let guard = ReadGuard::new(py);
            let read = dict.get_item_borrowed(&key, &guard).unwrap();
            // A read is open: the removed list is retired, not freed.
            assert_eq!(dict.del_item(&key), Ok(()));
            assert_eq!(read.kind(), Kind::List);
            drop(guard);
            drop(dict);
            // Repins, flushing what this thread retired to the epoch's global queue.
            for _ in 0..64 {
                py.check();
            }
            py.allow_threads(move || {
                parked.send(()).unwrap();
                wait_resume.recv().unwrap();
            });
        });
    });
    wait_parked.recv().unwrap();
    let collected = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            for _ in 0..8 {
                ftrt_object::collect(py);
            }
        })
    });
    resume.send(()).unwrap();
    owner.join().unwrap();
    assert!(
        collected.is_ok(),
        "another thread's collection panicked freeing the retired list"
    );
    Python::attach(ftrt_object::collect);
    assert_eq!(
        live_objects(Kind::List),
        lists,
        "the retired list was freed"
    );
}
