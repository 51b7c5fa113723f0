//! Local objects: an object is local to the thread that made it, and takes no lock in its
//! critical sections, until a reference to it can reach another thread. Then it is shared, with
//! everything it holds, for good.

mod common;

use std::sync::Barrier;

use common::leak_checked;
use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{
    Bound, Kind, PyAny, PyBool, PyClass, PyDict, PyFloat, PyInt, PyList, PyModule, PyNone, PyStr,
    PyTuple, ReadGuard, SMALL_INTS,
};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A list holding a tuple holding a list holding a float, and the innermost list.
fn nested<'py>(py: Python<'py>) -> (Bound<'py, PyList>, Bound<'py, PyList>) {
    let innermost = PyList::new(py, [PyFloat::new(py, 1.5)]);
    let tuple = PyTuple::new(
        py,
        [innermost.clone().into_any(), PyStr::new(py, "t").into_any()],
    );
    (PyList::new(py, [tuple]), innermost)
}

/// Every object `object` reaches, itself included.
fn reachable<'py>(object: &Bound<'py, PyAny>) -> Vec<Bound<'py, PyAny>> {
    let mut found = vec![object.clone()];
    let mut next = 0;
    while next < found.len() {
        let referents = found[next].referents();
        found.extend(referents);
        next += 1;
    }
    found
}

fn all_shared(object: &Bound<'_, PyAny>) -> bool {
    reachable(object).iter().all(Bound::is_shared)
}

#[test]
fn a_new_object_is_local_to_the_thread_that_made_it() {
    leak_checked(|py| {
        let big = *SMALL_INTS.end() + 1;
        let (list, _) = nested(py);
        let fresh: [Bound<'_, PyAny>; 8] = [
            list.into_any(),
            PyDict::new(py).into_any(),
            PyFloat::new(py, 2.5).into_any(),
            PyInt::new(py, big).into_any(),
            PyStr::new(py, "not interned").into_any(),
            PyTuple::new(py, [PyFloat::new(py, 0.5)]).into_any(),
            PyModule::new(py, "m").into_any(),
            PyClass::new(py, "Local").unwrap().instantiate().into_any(),
        ];
        for object in &fresh {
            assert!(!object.is_shared(), "{object:?} starts shared");
        }
    });
}

#[test]
fn immortal_objects_are_shared_from_the_start() {
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        let immortal: [Bound<'_, PyAny>; 6] = [
            PyNone::get(py).into_any(),
            PyBool::new(py, true).into_any(),
            PyInt::new(py, 7).into_any(),
            PyStr::intern(py, "an interned name").into_any(),
            PyStr::intern_in_shared_table(py, "another interned name").into_any(),
            PyClass::new(py, "Immortal").unwrap().into_any(),
        ];
        for object in &immortal {
            assert!(object.is_shared(), "{object:?} starts local");
        }
    });
}

#[test]
fn unbinding_shares_the_object_and_everything_it_reaches() {
    leak_checked(|py| {
        let (list, innermost) = nested(py);
        assert!(!innermost.is_shared());
        let handle = list.clone().unbind();
        assert!(innermost.is_shared(), "publishing stopped at the tuple");
        assert!(all_shared(list.as_any()));
        drop(handle);
    });
}

#[test]
fn storing_into_a_local_container_keeps_the_value_local() {
    leak_checked(|py| {
        let (list, innermost) = nested(py);
        let dict = PyDict::new(py);
        let key = PyStr::new(py, "key");
        dict.set_item(key.as_any(), list.clone()).unwrap();
        let instance = PyClass::new(py, "Holder").unwrap().instantiate();
        instance
            .set_attr(&PyStr::intern(py, "held"), dict.clone())
            .unwrap();
        list.append(PyFloat::new(py, 3.5));
        list.set_item(0, innermost.clone()).unwrap();
        for object in [
            list.as_any(),
            innermost.as_any(),
            dict.as_any(),
            key.as_any(),
        ] {
            assert!(
                !object.is_shared(),
                "{object:?} was shared by a local store"
            );
        }
    });
}

/// Each way of storing into a shared container shares the value (and a dict's key) first.
#[test]
fn storing_into_a_shared_container_shares_the_value_first() {
    leak_checked(|py| {
        let list = PyList::empty(py);
        let dict = PyDict::new(py);
        let module = PyModule::new(py, "shared_module");
        let instance = PyClass::new(py, "Shared").unwrap().instantiate();
        let handles = (
            list.clone().unbind(),
            dict.clone().unbind(),
            module.clone().unbind(),
            instance.clone().unbind(),
        );

        let (appended, appended_inner) = nested(py);
        list.append(appended.clone());
        assert!(appended.is_shared() && appended_inner.is_shared(), "append");

        let (replacing, replacing_inner) = nested(py);
        list.set_item(0, replacing.clone()).unwrap();
        assert!(
            replacing.is_shared() && replacing_inner.is_shared(),
            "set_item"
        );

        let (key, (value, value_inner)) = (PyStr::new(py, "a key"), nested(py));
        dict.set_item(key.as_any(), value.clone()).unwrap();
        assert!(key.is_shared(), "dict key");
        assert!(value.is_shared() && value_inner.is_shared(), "dict value");

        let name = PyStr::new(py, "attribute");
        for holder in [module.as_any(), instance.as_any()] {
            let (value, value_inner) = nested(py);
            match holder.downcast::<PyModule>() {
                Ok(module) => module.set_attr(&name, value.clone()).unwrap(),
                Err(_) => holder
                    .downcast::<ftrt_object::PyInstance>()
                    .unwrap()
                    .set_attr(&name, value.clone())
                    .unwrap(),
            }
            assert!(name.is_shared(), "attribute name");
            assert!(
                value.is_shared() && value_inner.is_shared(),
                "attribute value"
            );
        }
        for container in [
            list.as_any(),
            dict.as_any(),
            module.as_any(),
            instance.as_any(),
        ] {
            assert!(all_shared(container), "{container:?} holds a local object");
        }
        drop(handles);
    });
}

/// A store into a shared container that fails (an index out of range, an unhashable key)
/// leaves the value as it was: local, with everything it reaches. Only a stored value is
/// shared for good.
#[test]
fn a_store_that_fails_leaves_the_value_local() {
    leak_checked(|py| {
        let list = PyList::new(py, [PyFloat::new(py, 0.5)]);
        let dict = PyDict::new(py);
        let handles = (list.clone().unbind(), dict.clone().unbind());

        let (value, inner) = nested(py);
        for index in [1, 5, -2] {
            assert!(
                list.set_item(index, value.clone()).is_err(),
                "index {index}"
            );
        }
        assert!(
            !value.is_shared() && !inner.is_shared(),
            "a failed set_item shared its value"
        );

        let (value, inner) = nested(py);
        let unhashable = PyList::empty(py);
        assert!(dict.set_item(unhashable.as_any(), value.clone()).is_err());
        assert!(
            !value.is_shared() && !inner.is_shared() && !unhashable.is_shared(),
            "a failed dict store shared its key or value"
        );
        drop(handles);
    });
}

/// A list made on one thread and then put where another thread finds it: both threads append
/// at once, and the first thread's appends, which took no lock while the list was local, now
/// lock. Every append survives.
#[test]
fn a_list_made_local_then_shared_loses_no_append_to_a_second_writer() {
    // Under Miri 200 appends a thread: the list still grows through several reallocations
    // while all four writers append.
    const APPENDS: usize = if cfg!(miri) { 200 } else { 20_000 };
    const WRITERS: usize = 4;
    // Live counts are process-wide: the leak-checked tests must not see these objects.
    let _serial = common::SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let registry = Python::attach(|py| PyDict::new(py).unbind());
    let key = Python::attach(|py| PyStr::intern(py, "list").unbind());
    let start = Barrier::new(WRITERS);
    common::scope(|s| {
        s.spawn(|| {
            Python::attach(|py| {
                let list = PyList::empty(py);
                for i in 0..APPENDS {
                    list.append(PyInt::new(py, i as i64));
                }
                assert!(!list.is_shared());
                // The hand-over: from here on other threads may reach it.
                registry
                    .bind(py)
                    .set_item(key.bind(py).as_any(), list.clone())
                    .unwrap();
                assert!(list.is_shared());
                start.wait();
                for i in 0..APPENDS {
                    list.append(PyInt::new(py, i as i64));
                }
            })
        });
        for _ in 1..WRITERS {
            s.spawn(|| {
                start.wait();
                Python::attach(|py| {
                    let found = registry.bind(py).get_item(key.bind(py).as_any()).unwrap();
                    let list = found.downcast::<PyList>().unwrap();
                    for i in 0..APPENDS {
                        list.append(PyFloat::new(py, i as f64));
                    }
                })
            });
        }
    });
    Python::attach(|py| {
        let found = registry.bind(py).get_item(key.bind(py).as_any()).unwrap();
        let list = found.downcast::<PyList>().unwrap();
        assert_eq!(list.len(), (WRITERS + 1) * APPENDS);
        assert_eq!(list.to_vec().len(), list.len());
    });
}

/// What a write removes from a local container dies at once: no other thread can read the
/// container, and no read is open on this one.
#[test]
fn a_write_to_a_local_container_frees_what_it_removes_at_once() {
    leak_checked(|py| {
        let floats = || live_objects(Kind::Float);
        let list = PyList::new(py, (0..3).map(|i| PyFloat::new(py, f64::from(i) + 0.5)));
        let dict = PyDict::new(py);
        let key = PyStr::new(py, "key").into_any();
        dict.set_item(&key, PyFloat::new(py, 9.5)).unwrap();
        let name = PyStr::intern(py, "x");
        let instance = PyClass::new(py, "Holder").unwrap().instantiate();
        instance.set_attr(&name, PyFloat::new(py, 7.5)).unwrap();
        let removals: [(&str, &dyn Fn()); 5] = [
            ("list del", &|| list.del_item(0).unwrap()),
            ("list pop", &|| drop(list.pop().unwrap())),
            ("list set", &|| list.set_item(0, PyNone::get(py)).unwrap()),
            ("dict del", &|| dict.del_item(&key).unwrap()),
            ("attribute replace", &|| {
                instance.set_attr(&name, PyNone::get(py)).unwrap()
            }),
        ];
        for (what, remove) in removals {
            let before = floats();
            remove();
            assert_eq!(floats(), before - 1, "{what} kept the removed float alive");
        }
    });
}

/// Once the container is shared, a reader on another thread may hold what a write removes, so
/// it waits for the epoch; while a read guard lives on this thread, so do a local container's
/// removals, borrowed from or not (in every build), until the guard is gone.
#[test]
fn a_removal_waits_for_readers_once_the_container_is_shared_or_a_read_is_open() {
    leak_checked(|py| {
        let floats = || live_objects(Kind::Float);
        let gil_build = ftrt_gil::BUILD == "gil";
        let shared = PyList::new(py, [PyFloat::new(py, 0.5)]).unbind().bind(py);
        let before = floats();
        shared.del_item(0).unwrap();
        // Under the GIL no other thread reads while this one writes: only read guards count.
        let freed = if gil_build { 1 } else { 0 };
        assert_eq!(
            floats(),
            before - freed,
            "a shared list's removal was freed at once"
        );

        let local = PyDict::new(py);
        let (one, two) = (PyStr::intern(py, "one"), PyStr::intern(py, "two"));
        local.set_item(&one, PyFloat::new(py, 1.5)).unwrap();
        local.set_item(&two, PyFloat::new(py, 2.5)).unwrap();
        let before = floats();
        local.del_item(&one).unwrap();
        assert_eq!(floats(), before - 1, "freed at once with no guard alive");
        let guard = ReadGuard::new(py);
        let borrowed = local.get_item_borrowed(&two, &guard).unwrap();
        let before = floats();
        local.del_item(&two).unwrap();
        assert_eq!(floats(), before, "a removal was freed under a borrow");
        assert_eq!(borrowed.to_f64(), Ok(2.5));
        drop(guard);
    });
}

/// `pop` gives the caller the list's own reference only when no reader can hold the item;
/// otherwise the caller gets a new one and the list's is retired, so dropping what was popped
/// does not free the item under a reader: one on another thread of a shared list (the
/// free-threaded builds' lock-free `get_item`), or a read open on this thread (every build).
#[test]
fn a_popped_item_outlives_the_popped_reference_while_a_reader_may_hold_it() {
    leak_checked(|py| {
        let floats = || live_objects(Kind::Float);
        let local = PyList::new(py, [PyFloat::new(py, 0.5)]);
        let before = floats();
        drop(local.pop().unwrap());
        assert_eq!(
            floats(),
            before - 1,
            "a local pop with no read open kept the item"
        );

        let shared = PyList::new(py, [PyFloat::new(py, 1.5)]).unbind().bind(py);
        let before = floats();
        drop(shared.pop().unwrap());
        // Under the GIL no other thread reads while this one writes: only read guards count.
        let freed = if ftrt_gil::BUILD == "gil" { 1 } else { 0 };
        assert_eq!(
            floats(),
            before - freed,
            "a shared pop freed the item at once"
        );

        let local = PyList::new(py, [PyFloat::new(py, 2.5)]);
        let guard = ReadGuard::new(py);
        let before = floats();
        drop(local.pop().unwrap());
        assert_eq!(floats(), before, "a pop freed the item under an open read");
        drop(guard);
    });
}

/// Safe code can only raise the count of reads open on a thread: a forgotten `OpenRead` keeps
/// it up, which sends a local container's removals back to the epoch instead of freeing them
/// under a reader it cannot see, and keeps the thread's epoch pin until the thread exits (an
/// open read relies on it); the exit ends the read, and what it deferred is freed.
#[test]
fn a_forgotten_open_read_only_defers_removals() {
    leak_checked(|py| {
        // Detached while it waits: in the gil build the thread needs the GIL.
        py.allow_threads(|| {
            std::thread::spawn(|| {
                Python::attach(|py| {
                    let floats = || live_objects(Kind::Float);
                    let list = PyList::new(py, [PyFloat::new(py, 0.5), PyFloat::new(py, 1.5)]);
                    let before = floats();
                    list.del_item(0).unwrap();
                    assert_eq!(floats(), before - 1, "freed at once with no read open");
                    let readers = ftrt_gil::local::readers();
                    std::mem::forget(ftrt_gil::local::OpenRead::new());
                    assert_eq!(ftrt_gil::local::readers(), readers + 1);
                    let before = floats();
                    list.del_item(0).unwrap();
                    // Under the GIL only read guards count, so the removal is freed at once there.
                    let freed = if ftrt_gil::BUILD == "gil" { 1 } else { 0 };
                    assert_eq!(floats(), before - freed, "freed at once under an open read");
                })
            })
            // The whole thread, its exit included (which ends the forgotten read): the leak
            // check then finds the deferred removal freed.
            .join()
            .unwrap()
        });
    });
}
