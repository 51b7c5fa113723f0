//! The object model's behaviour, identical in every build variant. Each test checks that every
//! object it made was freed (the live-object counts return to where they started).

use std::cell::Cell;
use std::fmt::{self, Write as _};

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::RefCountValue;
use ftrt_object::{
    collect, Bound, Error, Kind, PyAny, PyBool, PyClass, PyDict, PyFloat, PyInt, PyList, PyModule,
    PyNone, PyStr, PyTuple, ReadGuard, HEADER_SIZE,
};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use common::{leak_checked, SERIAL};

#[test]
fn the_object_model_follows_the_variant_ftrt_gil_decided() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // What this crate's build script read from ftrt-gil's, and the cfg it derived from it.
    assert_eq!(env!("FTRT_OBJECT_BUILD_VARIANT"), ftrt_gil::BUILD);
    assert_eq!(cfg!(ftrt_gil_build), ftrt_gil::BUILD == "gil");
    assert_eq!(
        ftrt_object::count_strategy(),
        ftrt_gil::BUILD_STRATEGY.name()
    );
}

#[test]
fn the_header_is_as_small_as_the_build_allows() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // The biased count is 12 bytes, the others 4; lock byte and type pointer follow.
    let expected = if ftrt_gil::BUILD == "nogil" { 24 } else { 16 };
    assert_eq!(
        HEADER_SIZE,
        expected,
        "header of the {} count",
        ftrt_object::count_strategy()
    );
}

#[test]
fn small_ints_none_and_bools_are_shared_immortal_objects() {
    leak_checked(|py| {
        assert!(PyInt::new(py, 256).is(&PyInt::new(py, 256)));
        assert!(PyInt::new(py, -5).is(&PyInt::new(py, -5)));
        assert!(!PyInt::new(py, 257).is(&PyInt::new(py, 257)));
        assert!(PyNone::get(py).is_immortal() && PyBool::new(py, true).is_immortal());
        assert!(PyInt::new(py, 7).is_immortal());
        assert!(!PyInt::new(py, 1000).is_immortal());
    });
}

#[test]
fn taking_a_reference_raises_the_count_by_one_and_dropping_it_lowers_it() {
    leak_checked(|py| {
        let x = PyFloat::new(py, 1.5);
        assert_eq!(x.refcount(), RefCountValue::Mortal(1));
        let y = x.clone();
        assert_eq!(x.refcount(), RefCountValue::Mortal(2));
        let list = PyList::new(py, [y]);
        assert_eq!(
            x.refcount(),
            RefCountValue::Mortal(2),
            "the list owns the moved reference"
        );
        list.append(x.clone());
        assert_eq!(x.refcount(), RefCountValue::Mortal(3));
        drop(list);
        assert_eq!(x.refcount(), RefCountValue::Mortal(1));
    });
}

#[test]
fn integer_overflow_is_an_error_not_a_wrap() {
    leak_checked(|py| {
        let max = PyInt::new(py, i64::MAX);
        assert!(matches!(
            max.add(&PyInt::new(py, 1)),
            Err(Error::OverflowError(_))
        ));
        assert!(matches!(
            PyInt::new(py, i64::MIN).sub(&PyInt::new(py, 1)),
            Err(Error::OverflowError(_))
        ));
        assert!(matches!(
            max.mul(&PyInt::new(py, 2)),
            Err(Error::OverflowError(_))
        ));
        assert_eq!(
            PyInt::new(py, 40).add(&PyInt::new(py, 2)).unwrap().to_i64(),
            Ok(42)
        );
        assert_eq!(
            PyInt::new(py, 1)
                .add(&PyFloat::new(py, 0.5))
                .unwrap()
                .to_f64(),
            Ok(1.5)
        );
        assert_eq!(
            PyStr::new(py, "ab")
                .add(&PyStr::new(py, "cd"))
                .unwrap()
                .to_str()
                .unwrap(),
            "abcd"
        );
    });
}

#[test]
fn wrong_types_are_type_errors() {
    leak_checked(|py| {
        let text = PyStr::new(py, "a");
        assert!(matches!(
            text.add(&PyInt::new(py, 1)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(text.to_i64(), Err(Error::TypeError(_))));
        let dict = PyDict::new(py);
        let unhashable = PyList::empty(py);
        assert!(matches!(
            dict.set_item(&unhashable, PyNone::get(py)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(
            dict.get_item(&unhashable),
            Err(Error::TypeError(_))
        ));
        assert_eq!(dict.len(), 0, "a failed operation changes nothing");
    });
}

#[test]
fn lists_index_from_both_ends_and_report_bad_indices() {
    leak_checked(|py| {
        let list = PyList::new(py, (0..10).map(|i| PyInt::new(py, i * 1000)));
        assert_eq!(list.len(), 10);
        assert_eq!(list.get_item(0).unwrap().to_i64(), Ok(0));
        assert_eq!(list.get_item(-1).unwrap().to_i64(), Ok(9000));
        assert!(matches!(list.get_item(10), Err(Error::IndexError(_))));
        assert!(matches!(list.get_item(-11), Err(Error::IndexError(_))));
        list.set_item(-2, PyStr::new(py, "eight")).unwrap();
        assert_eq!(list.get_item(8).unwrap().to_str().unwrap(), "eight");
        assert!(matches!(
            list.set_item(10, PyNone::get(py)),
            Err(Error::IndexError(_))
        ));
        assert_eq!(list.pop().unwrap().to_i64(), Ok(9000));
        for i in 0..100 {
            list.append(PyInt::new(py, i));
        }
        assert_eq!(list.len(), 109);
        while list.pop().is_ok() {}
        assert!(matches!(list.pop(), Err(Error::IndexError(_))));
        assert_eq!(list.len(), 0);
    });
}

#[test]
fn dicts_keep_insertion_order_and_report_missing_keys() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        for name in ["b", "a", "c"] {
            dict.set_item(&PyStr::new(py, name), PyInt::new(py, name.len() as i64))
                .unwrap();
        }
        dict.set_item(&PyStr::new(py, "b"), PyInt::new(py, 20))
            .unwrap();
        dict.del_item(&PyStr::new(py, "a")).unwrap();
        dict.set_item(&PyStr::new(py, "a"), PyInt::new(py, 10))
            .unwrap();
        let keys: Vec<String> = dict
            .items()
            .iter()
            .map(|(k, _)| k.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            ["b", "c", "a"],
            "replacing keeps the place; re-inserting moves to the end"
        );
        assert_eq!(
            dict.get_item(&PyStr::new(py, "b")).unwrap().to_i64(),
            Ok(20)
        );
        assert!(matches!(
            dict.get_item(&PyStr::new(py, "zz")),
            Err(Error::KeyError(_))
        ));
        assert!(matches!(
            dict.del_item(&PyStr::new(py, "zz")),
            Err(Error::KeyError(_))
        ));
        // int and bool keys are equal when their values are, as in Python.
        dict.set_item(&PyInt::new(py, 1), PyStr::new(py, "one"))
            .unwrap();
        assert_eq!(
            dict.get_item(&PyBool::new(py, true))
                .unwrap()
                .to_str()
                .unwrap(),
            "one"
        );
    });
}

#[test]
fn dicts_grow_without_losing_entries() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let n = if cfg!(miri) { 50 } else { 5_000 };
        for i in 0..n {
            dict.set_item(&PyInt::new(py, i), PyInt::new(py, i * 2))
                .unwrap();
            if i % 3 == 0 {
                dict.del_item(&PyInt::new(py, i)).unwrap();
            }
        }
        for i in 0..n {
            let found = dict.get_item(&PyInt::new(py, i));
            if i % 3 == 0 {
                assert!(found.is_err());
            } else {
                assert_eq!(found.unwrap().to_i64(), Ok(i * 2));
            }
        }
        assert_eq!(dict.len(), (n - (n + 2) / 3) as usize);
    });
}

#[test]
fn interned_strings_are_unique_and_immortal() {
    leak_checked(|py| {
        let a = PyStr::intern(py, "interned-name");
        let b = PyStr::intern(py, &String::from("interned-name"));
        assert!(a.is(&b));
        assert!(a.is_immortal());
        let plain = PyStr::new(py, "interned-name");
        assert!(!plain.is(&a) && plain.equals(&a));
    });
}

#[test]
fn instances_have_attributes_and_report_missing_ones() {
    leak_checked(|py| {
        let class = PyClass::new(py, "Point").unwrap();
        assert!(class.is_immortal());
        let point = class.instantiate();
        assert_eq!(point.type_name(), "Point");
        let (x, y) = (PyStr::intern(py, "x"), PyStr::intern(py, "y"));
        point.set_attr(&x, PyInt::new(py, 1)).unwrap();
        point.set_attr(&x, PyInt::new(py, 2)).unwrap();
        assert_eq!(point.get_attr(&x).unwrap().to_i64(), Ok(2));
        assert!(matches!(point.get_attr(&y), Err(Error::AttributeError(_))));
        assert!(matches!(PyClass::new(py, ""), Err(Error::ValueError(_))));
        point.del_attr(&x).unwrap();
        assert!(point.get_attr(&x).is_err());
    });
}

#[test]
fn modules_hold_shared_variables() {
    leak_checked(|py| {
        let module = PyModule::new(py, "main");
        let counter = PyStr::intern(py, "counter");
        module.set_attr(&counter, PyInt::new(py, 0)).unwrap();
        let next = module
            .get_attr(&counter)
            .unwrap()
            .add(&PyInt::new(py, 1))
            .unwrap();
        module.set_attr(&counter, next).unwrap();
        assert_eq!(module.get_attr(&counter).unwrap().to_i64(), Ok(1));
        assert_eq!(format!("{module:?}"), "<module 'main'>");
    });
}

#[test]
fn borrowed_reads_take_no_reference() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let key = PyStr::intern(py, "k");
        let value = PyFloat::new(py, 2.5);
        dict.set_item(&key, value.clone()).unwrap();
        let guard = ReadGuard::new(py);
        let borrowed = dict.get_item_borrowed(&key, &guard).unwrap();
        assert!(borrowed.is(&value));
        assert_eq!(borrowed.to_f64(), Ok(2.5));
        assert_eq!(
            value.refcount(),
            RefCountValue::Mortal(2),
            "only the dict and `value` count"
        );
        let owned = borrowed.to_owned(py);
        assert_eq!(owned.refcount(), RefCountValue::Mortal(3));
    });
}

#[test]
fn a_value_deleted_from_a_dict_stays_alive_while_a_borrow_of_it_lives() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let key = PyStr::intern(py, "k");
        dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let value = dict.get_item_borrowed(&key, &guard).unwrap();
        dict.del_item(&key).unwrap();
        assert_eq!(
            live_objects(Kind::Float),
            floats,
            "the deleted value was freed under its borrow"
        );
        assert_eq!(value.to_f64(), Ok(2.5));
        drop(guard);
        collect(py);
        assert_eq!(
            live_objects(Kind::Float),
            floats - 1,
            "freed once the guard is gone"
        );
    });
}

#[test]
fn a_replaced_attribute_stays_alive_while_a_borrow_of_it_lives() {
    leak_checked(|py| {
        let point = PyClass::new(py, "Point").unwrap().instantiate();
        let x = PyStr::intern(py, "x");
        point.set_attr(&x, PyFloat::new(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let old = point.get_attr_borrowed(&x, &guard).unwrap();
        point.set_attr(&x, PyInt::new(py, 7)).unwrap();
        point.del_attr(&x).unwrap();
        assert_eq!(
            live_objects(Kind::Float),
            floats,
            "the replaced value was freed under its borrow"
        );
        assert_eq!(old.to_f64(), Ok(2.5));
        assert_eq!(format!("{old:?}"), "2.5");
        drop(guard);
        collect(py);
        assert_eq!(live_objects(Kind::Float), floats - 1);
    });
}

#[test]
fn a_value_another_thread_removes_while_the_reader_is_detached_lives_until_the_guard_is_gone() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let key = PyStr::intern(py, "k");
        dict.set_item(&key, PyFloat::new(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let value = dict.get_item_borrowed(&key, &guard).unwrap();
        let handle = dict.clone().unbind();
        // The reader lets other threads run (in the gil build: gives up the GIL) while it still
        // holds the borrow; another thread deletes the value and collects.
        py.allow_threads(|| {
            std::thread::spawn(move || {
                Python::attach(|py| {
                    let dict = handle.into_bound(py);
                    dict.del_item(&PyStr::intern(py, "k")).unwrap();
                    drop(dict);
                    collect(py);
                })
            })
            .join()
            .unwrap()
        });
        assert_eq!(
            live_objects(Kind::Float),
            floats,
            "another thread freed the value under its borrow"
        );
        assert_eq!(value.to_f64(), Ok(2.5));
        drop(guard);
        collect(py);
        assert_eq!(live_objects(Kind::Float), floats - 1);
    });
}

/// A list's and a dict's reads take one reference, whichever path counts it: the owner's inline
/// one, another thread's (the shared count), a deferred object's (every thread's own array), or
/// none for an immortal item; errors take none.
#[test]
fn a_read_takes_exactly_one_reference_on_the_owner_on_another_thread_and_none_for_immortals() {
    leak_checked(|py| {
        let owned = PyFloat::new(py, 1.5).into_any();
        let deferred = PyFloat::new(py, 2.5).into_any();
        // Builds without biased counts defer nothing: there it is one more owned item.
        assert_eq!(deferred.defer_refcount(), ftrt_gil::BUILD == "nogil");
        let list = PyList::new(
            py,
            [owned.clone(), PyNone::get(py).into_any(), deferred.clone()],
        );
        let dict = PyDict::new(py);
        dict.set_item(&PyStr::intern(py, "owned"), owned.clone())
            .unwrap();
        dict.set_item(&PyStr::intern(py, "deferred"), deferred.clone())
            .unwrap();
        let held = |item: &Bound<'_, PyAny>| match item.refcount() {
            RefCountValue::Mortal(n) => n,
            RefCountValue::Immortal => panic!("a float made here is mortal"),
        };
        let before = [held(&owned), held(&deferred)];
        let reads_count_one =
            |py: Python<'_>, list: &Bound<'_, PyList>, dict: &Bound<'_, PyDict>| {
                for (n, (index, key)) in [(0, "owned"), (2, "deferred")].into_iter().enumerate() {
                    let read = list.get_item(index).unwrap();
                    assert_eq!(
                        held(&read),
                        before[n] + 1,
                        "list[{index}] took one reference"
                    );
                    let again = list.get_item(index - 3).unwrap();
                    assert_eq!(
                        held(&read),
                        before[n] + 2,
                        "list[{}] took one more",
                        index - 3
                    );
                    drop((read, again));
                    let value = dict.get_item(&PyStr::intern(py, key)).unwrap();
                    assert_eq!(
                        held(&value),
                        before[n] + 1,
                        "dict[{key}] took one reference"
                    );
                    drop(value);
                }
                assert!(list.get_item(1).unwrap().is_immortal());
                assert!(matches!(list.get_item(3), Err(Error::IndexError(_))));
                assert!(matches!(list.get_item(-4), Err(Error::IndexError(_))));
                let absent = dict.get_item(&PyStr::intern(py, "absent"));
                assert!(matches!(absent, Err(Error::KeyError(_))));
            };
        reads_count_one(py, &list, &dict);
        let after = [held(&owned), held(&deferred)];
        assert_eq!(after, before, "the owner's reads gave back what they took");
        let (list_handle, dict_handle) = (list.clone().unbind(), dict.clone().unbind());
        py.allow_threads(|| {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    Python::attach(|py| {
                        let (list, dict) = (list_handle.bind(py), dict_handle.bind(py));
                        reads_count_one(py, &list, &dict);
                    })
                });
            })
        });
        drop((list_handle, dict_handle));
        let after = [held(&owned), held(&deferred)];
        assert_eq!(
            after, before,
            "another thread's reads gave back what they took"
        );
    });
}

/// A `fmt::Write` that runs user code after every piece it is given, the way a writer that
/// logs, flushes or calls back into the program would.
struct MeddlingWriter<F: FnMut()> {
    out: String,
    after_each_write: F,
}

impl<F: FnMut()> fmt::Write for MeddlingWriter<F> {
    fn write_str(&mut self, piece: &str) -> fmt::Result {
        self.out.push_str(piece);
        (self.after_each_write)();
        Ok(())
    }
}

#[test]
fn debug_prints_a_lists_items_even_if_the_writer_pops_them_meanwhile() {
    leak_checked(|py| {
        let list = PyList::new(py, (0..4).map(|i| PyFloat::new(py, i as f64 + 0.5)));
        let floats = live_objects(Kind::Float);
        let fewest_alive = Cell::new(floats);
        let mut writer = MeddlingWriter {
            out: String::new(),
            after_each_write: || {
                drop(list.pop());
                fewest_alive.set(fewest_alive.get().min(live_objects(Kind::Float)));
            },
        };
        write!(writer, "{list:?}").unwrap();
        assert_eq!(
            fewest_alive.get(),
            floats,
            "an item was freed while it was being printed"
        );
        assert_eq!(writer.out, "[0.5, 1.5, 2.5, 3.5]");
        assert_eq!(list.len(), 0, "the writer popped every item");
        collect(py);
        assert_eq!(live_objects(Kind::Float), floats - 4);
    });
}

/// A `Shared` printed from a thread that is not attached is an attached read: a thread holding
/// the world alone (lock elision) frees what its writes remove at once, so a reader beside it,
/// detached, could see the items it prints freed under it.
#[test]
fn a_print_from_a_detached_thread_attaches_for_the_print() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let list = Python::attach(|py| PyList::new(py, [PyFloat::new(py, 0.5)]).unbind());
    let attached_while_printing = Cell::new(true);
    let mut writer = MeddlingWriter {
        out: String::new(),
        after_each_write: || {
            let attached = attached_while_printing.get() && ftrt_gil::is_attached();
            attached_while_printing.set(attached);
        },
    };
    assert!(!ftrt_gil::is_attached());
    write!(writer, "{list:?}").unwrap();
    assert_eq!(writer.out, "[0.5]");
    assert!(
        attached_while_printing.get(),
        "the print read the list detached"
    );
    assert!(
        !ftrt_gil::is_attached(),
        "the print left the thread attached"
    );
    Python::attach(|py| drop(list.into_bound(py)));
}

#[test]
fn debug_prints_a_dicts_entries_even_if_the_writer_deletes_them_meanwhile() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let keys: Vec<_> = ["a", "b", "c"].iter().map(|k| PyStr::new(py, k)).collect();
        for (i, key) in keys.iter().enumerate() {
            dict.set_item(key, PyFloat::new(py, i as f64 + 0.5))
                .unwrap();
        }
        let floats = live_objects(Kind::Float);
        let fewest_alive = Cell::new(floats);
        let mut writer = MeddlingWriter {
            out: String::new(),
            after_each_write: || {
                for key in &keys {
                    let _ = dict.del_item(key);
                }
                fewest_alive.set(fewest_alive.get().min(live_objects(Kind::Float)));
            },
        };
        write!(writer, "{dict:?}").unwrap();
        assert_eq!(
            fewest_alive.get(),
            floats,
            "a value was freed while it was being printed"
        );
        assert_eq!(writer.out, r#"{"a": 0.5, "b": 1.5, "c": 2.5}"#);
        assert_eq!(dict.len(), 0);
    });
}

#[test]
fn debug_of_a_shared_on_a_thread_that_never_attached_reads_with_the_right_to() {
    // A writer that records whether the thread was attached while the object was being read.
    struct AttachedProbe {
        out: String,
        always_attached: bool,
    }
    impl fmt::Write for AttachedProbe {
        fn write_str(&mut self, piece: &str) -> fmt::Result {
            self.out.push_str(piece);
            self.always_attached &= ftrt_gil::is_attached();
            Ok(())
        }
    }
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let list = Python::attach(|py| {
        PyList::new(
            py,
            [PyInt::new(py, 1000).into_any(), PyNone::get(py).into_any()],
        )
        .unbind()
    });
    let probe = common::scope(|s| {
        s.spawn(|| {
            assert!(!ftrt_gil::is_attached());
            let mut probe = AttachedProbe {
                out: String::new(),
                always_attached: true,
            };
            write!(probe, "{list:?}").unwrap();
            probe
        })
        .join()
        .unwrap()
    });
    assert_eq!(probe.out, "[1000, None]");
    if cfg!(ftrt_gil_build) {
        // Reading without the GIL would race with its holder's writes.
        assert!(
            probe.always_attached,
            "the gil build read a Shared without attaching"
        );
    }
    drop(list);
}

#[test]
fn objects_print_like_python_reprs() {
    leak_checked(|py| {
        let tuple = PyTuple::new(py, [PyInt::new(py, 1)]);
        let dict = PyDict::new(py);
        dict.set_item(&PyStr::new(py, "t"), tuple).unwrap();
        let list = PyList::new(
            py,
            [
                PyNone::get(py).into_any(),
                PyBool::new(py, false).into_any(),
                PyFloat::new(py, 2.0).into_any(),
                dict.into_any(),
            ],
        );
        assert_eq!(format!("{list:?}"), r#"[None, False, 2.0, {"t": (1,)}]"#);
    });
}

#[test]
fn dropping_a_list_nested_a_million_deep_does_not_overflow_the_stack() {
    leak_checked(|py| {
        let depth = if cfg!(miri) { 1_000 } else { 1_000_000 };
        let mut nested = PyList::empty(py);
        for _ in 0..depth {
            nested = PyList::new(py, [nested]);
        }
        drop(nested);
    });
}
