//! Writes stay sound when other crates took every quiescent-state hook slot of `ftrt-gil`
//! before the object model needed its own. The object model registers its hooks on first need,
//! inside container writes; a registration that panicked there unwound out of a write that had
//! already taken a value out of its container, and dropped it under the readers that may still
//! hold it.
//!
//! The hook table is process-wide: this file holds only this scenario.

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{Kind, PyDict, PyFloat, PyList, PyStr, ReadGuard};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn another_crates_hook() {}

/// Live counts are process-wide: a test added beside this one takes this lock too.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn a_write_that_retires_with_the_hook_table_full_keeps_the_removed_value_for_its_readers() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // Registered until the table is full (the registration that finds it full panics).
    while std::panic::catch_unwind(|| ftrt_gil::on_quiescent_state(another_crates_hook)).is_ok() {}
    Python::attach(|py| {
        let dict = PyDict::new(py);
        let key = PyStr::intern(py, "k");
        dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
        // Shared, so that what a write removes is retired (a local dict frees it at once).
        let shared = dict.clone().unbind();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let value = dict.get_item_borrowed(&key, &guard).unwrap();
        // The first retirement: the object model's first need of its batches' hook.
        assert_eq!(dict.del_item(&key), Ok(()), "the write completes");
        assert_eq!(live_objects(Kind::Float), floats, "retired, not freed");
        assert_eq!(value.to_f64(), Ok(2.5));
        drop(guard);
        drop(shared);
    });
}

#[test]
fn cycles_are_collected_automatically_with_the_hook_table_full() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    while std::panic::catch_unwind(|| ftrt_gil::on_quiescent_state(another_crates_hook)).is_ok() {}
    // Ten automatic collections' worth; under Miri, where each costs seconds, two and a half.
    let made = if cfg!(miri) { 5_000 } else { 20_000 };
    Python::attach(|py| {
        let lists = live_objects(Kind::List);
        for _ in 0..made {
            let cycle = PyList::empty(py);
            cycle.append(cycle.clone());
            py.check();
        }
        // A thread's local collections run in a quiescent-state hook, which has no slot here:
        // its cycles must be left to the stopped-world collections, which run every 2,000 or
        // so new containers. Listed for the hook instead, every one of them stayed.
        let left = live_objects(Kind::List) - lists;
        assert!(
            left < made / 2,
            "{left} of {made} cycles left with no collection asked for"
        );
    });
}
