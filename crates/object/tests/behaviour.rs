//! The object model's behaviour, identical in every build variant. Each test checks that every
//! object it made was freed (the live-object counts return to where they started).

use std::cell::Cell;
use std::fmt::{self, Write as _};
use std::sync::Mutex;

use ftrt_gil::Python;
use ftrt_object::stats::{live_objects, LiveObjects};
use ftrt_object::{collect, Error, Kind, Obj, ReadGuard, HEADER_SIZE};
use ftrt_refcount::RefCountValue;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Live counts are process-wide, so the tests that compare them run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` attached and checks that it freed everything it allocated, immortal objects aside
/// (singletons and interned strings are made once and kept).
fn leak_checked(f: impl for<'py> FnOnce(Python<'py>)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        // Materialise the immortal singletons first, so they do not count as allocated by `f`.
        drop((Obj::none(py), Obj::int(py, 0)));
        collect(py);
        let before = LiveObjects::now();
        f(py);
        collect(py);
        let after = LiveObjects::now();
        let leaked: Vec<_> = before
            .0
            .iter()
            .zip(&after.0)
            .filter(|((kind, b), (_, a))| a != b && *kind != Kind::Str && *kind != Kind::Class)
            .collect();
        assert!(leaked.is_empty(), "live objects changed: {leaked:?}");
    });
}

#[test]
fn the_object_model_follows_the_variant_ftrt_gil_decided() {
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
        assert!(Obj::int(py, 256).is(&Obj::int(py, 256)));
        assert!(Obj::int(py, -5).is(&Obj::int(py, -5)));
        assert!(!Obj::int(py, 257).is(&Obj::int(py, 257)));
        assert!(Obj::none(py).is_immortal() && Obj::bool(py, true).is_immortal());
        assert!(Obj::int(py, 7).is_immortal());
        assert!(!Obj::int(py, 1000).is_immortal());
    });
}

#[test]
fn taking_a_reference_raises_the_count_by_one_and_dropping_it_lowers_it() {
    leak_checked(|py| {
        let x = Obj::float(py, 1.5);
        assert_eq!(x.refcount(), RefCountValue::Mortal(1));
        let y = x.clone();
        assert_eq!(x.refcount(), RefCountValue::Mortal(2));
        let list = Obj::list(py, [y]);
        assert_eq!(
            x.refcount(),
            RefCountValue::Mortal(2),
            "the list owns the moved reference"
        );
        list.append(x.clone()).unwrap();
        assert_eq!(x.refcount(), RefCountValue::Mortal(3));
        drop(list);
        assert_eq!(x.refcount(), RefCountValue::Mortal(1));
    });
}

#[test]
fn integer_overflow_is_an_error_not_a_wrap() {
    leak_checked(|py| {
        let max = Obj::int(py, i64::MAX);
        assert!(matches!(
            max.add(&Obj::int(py, 1)),
            Err(Error::OverflowError(_))
        ));
        assert!(matches!(
            Obj::int(py, i64::MIN).sub(&Obj::int(py, 1)),
            Err(Error::OverflowError(_))
        ));
        assert!(matches!(
            max.mul(&Obj::int(py, 2)),
            Err(Error::OverflowError(_))
        ));
        assert_eq!(
            Obj::int(py, 40).add(&Obj::int(py, 2)).unwrap().to_i64(),
            Ok(42)
        );
        assert_eq!(
            Obj::int(py, 1).add(&Obj::float(py, 0.5)).unwrap().to_f64(),
            Ok(1.5)
        );
        assert_eq!(
            Obj::str(py, "ab")
                .add(&Obj::str(py, "cd"))
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
        let text = Obj::str(py, "a");
        assert!(matches!(
            text.add(&Obj::int(py, 1)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(
            Obj::int(py, 1).get_item(0),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(Obj::int(py, 1).len(), Err(Error::TypeError(_))));
        assert!(matches!(
            Obj::int(py, 1).append(Obj::none(py)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(text.to_i64(), Err(Error::TypeError(_))));
        let dict = Obj::dict(py);
        let unhashable = Obj::list(py, []);
        assert!(matches!(
            dict.dict_set(&unhashable, Obj::none(py)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(
            dict.dict_get(&unhashable),
            Err(Error::TypeError(_))
        ));
        assert_eq!(dict.len(), Ok(0), "a failed operation changes nothing");
    });
}

#[test]
fn lists_index_from_both_ends_and_report_bad_indices() {
    leak_checked(|py| {
        let list = Obj::list(py, (0..10).map(|i| Obj::int(py, i * 1000)));
        assert_eq!(list.len(), Ok(10));
        assert_eq!(list.get_item(0).unwrap().to_i64(), Ok(0));
        assert_eq!(list.get_item(-1).unwrap().to_i64(), Ok(9000));
        assert!(matches!(list.get_item(10), Err(Error::IndexError(_))));
        assert!(matches!(list.get_item(-11), Err(Error::IndexError(_))));
        list.set_item(-2, Obj::str(py, "eight")).unwrap();
        assert_eq!(list.get_item(8).unwrap().to_str().unwrap(), "eight");
        assert!(matches!(
            list.set_item(10, Obj::none(py)),
            Err(Error::IndexError(_))
        ));
        assert_eq!(list.pop().unwrap().to_i64(), Ok(9000));
        for i in 0..100 {
            list.append(Obj::int(py, i)).unwrap();
        }
        assert_eq!(list.len(), Ok(109));
        while list.pop().is_ok() {}
        assert!(matches!(list.pop(), Err(Error::IndexError(_))));
        assert_eq!(list.len(), Ok(0));
    });
}

#[test]
fn dicts_keep_insertion_order_and_report_missing_keys() {
    leak_checked(|py| {
        let dict = Obj::dict(py);
        for name in ["b", "a", "c"] {
            dict.dict_set(&Obj::str(py, name), Obj::int(py, name.len() as i64))
                .unwrap();
        }
        dict.dict_set(&Obj::str(py, "b"), Obj::int(py, 20)).unwrap();
        dict.dict_del(&Obj::str(py, "a")).unwrap();
        dict.dict_set(&Obj::str(py, "a"), Obj::int(py, 10)).unwrap();
        let keys: Vec<String> = dict
            .dict_items()
            .unwrap()
            .iter()
            .map(|(k, _)| k.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            keys,
            ["b", "c", "a"],
            "replacing keeps the place; re-inserting moves to the end"
        );
        assert_eq!(dict.dict_get(&Obj::str(py, "b")).unwrap().to_i64(), Ok(20));
        assert!(matches!(
            dict.dict_get(&Obj::str(py, "zz")),
            Err(Error::KeyError(_))
        ));
        assert!(matches!(
            dict.dict_del(&Obj::str(py, "zz")),
            Err(Error::KeyError(_))
        ));
        // int and bool keys are equal when their values are, as in Python.
        dict.dict_set(&Obj::int(py, 1), Obj::str(py, "one"))
            .unwrap();
        assert_eq!(
            dict.dict_get(&Obj::bool(py, true))
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
        let dict = Obj::dict(py);
        let n = if cfg!(miri) { 50 } else { 5_000 };
        for i in 0..n {
            dict.dict_set(&Obj::int(py, i), Obj::int(py, i * 2))
                .unwrap();
            if i % 3 == 0 {
                dict.dict_del(&Obj::int(py, i)).unwrap();
            }
        }
        for i in 0..n {
            let found = dict.dict_get(&Obj::int(py, i));
            if i % 3 == 0 {
                assert!(found.is_err());
            } else {
                assert_eq!(found.unwrap().to_i64(), Ok(i * 2));
            }
        }
        assert_eq!(dict.len(), Ok((n - (n + 2) / 3) as usize));
    });
}

#[test]
fn interned_strings_are_unique_and_immortal() {
    leak_checked(|py| {
        let a = Obj::intern(py, "interned-name");
        let b = Obj::intern(py, &String::from("interned-name"));
        assert!(a.is(&b));
        assert!(a.is_immortal());
        let plain = Obj::str(py, "interned-name");
        assert!(!plain.is(&a) && plain.equals(&a));
    });
}

#[test]
fn instances_have_attributes_and_report_missing_ones() {
    leak_checked(|py| {
        let class = Obj::class(py, "Point").unwrap();
        assert!(class.is_immortal());
        let point = class.instantiate().unwrap();
        assert_eq!(point.type_name(), "Point");
        let (x, y) = (Obj::intern(py, "x"), Obj::intern(py, "y"));
        point.set_attr(&x, Obj::int(py, 1)).unwrap();
        point.set_attr(&x, Obj::int(py, 2)).unwrap();
        assert_eq!(point.get_attr(&x).unwrap().to_i64(), Ok(2));
        assert!(matches!(point.get_attr(&y), Err(Error::AttributeError(_))));
        assert!(matches!(
            Obj::int(py, 3).get_attr(&x),
            Err(Error::AttributeError(_))
        ));
        assert!(matches!(
            point.get_attr(&Obj::int(py, 3)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(point.instantiate(), Err(Error::TypeError(_))));
        assert!(matches!(Obj::class(py, ""), Err(Error::ValueError(_))));
        point.del_attr(&x).unwrap();
        assert!(point.get_attr(&x).is_err());
    });
}

#[test]
fn modules_hold_shared_variables() {
    leak_checked(|py| {
        let module = Obj::module(py, "main");
        let counter = Obj::intern(py, "counter");
        module.set_attr(&counter, Obj::int(py, 0)).unwrap();
        let next = module
            .get_attr(&counter)
            .unwrap()
            .add(&Obj::int(py, 1))
            .unwrap();
        module.set_attr(&counter, next).unwrap();
        assert_eq!(module.get_attr(&counter).unwrap().to_i64(), Ok(1));
        assert_eq!(format!("{module:?}"), "<module 'main'>");
    });
}

#[test]
fn borrowed_reads_take_no_reference() {
    leak_checked(|py| {
        let dict = Obj::dict(py);
        let key = Obj::intern(py, "k");
        let value = Obj::float(py, 2.5);
        dict.dict_set(&key, value.clone()).unwrap();
        let guard = ReadGuard::new(py);
        let borrowed = dict.dict_get_borrowed(&key, &guard).unwrap();
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
        let dict = Obj::dict(py);
        let key = Obj::intern(py, "k");
        dict.dict_set(&key, Obj::float(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let value = dict.dict_get_borrowed(&key, &guard).unwrap();
        dict.dict_del(&key).unwrap();
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
        let point = Obj::class(py, "Point").unwrap().instantiate().unwrap();
        let x = Obj::intern(py, "x");
        point.set_attr(&x, Obj::float(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let old = point.get_attr_borrowed(&x, &guard).unwrap();
        point.set_attr(&x, Obj::int(py, 7)).unwrap();
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
        let dict = Obj::dict(py);
        let key = Obj::intern(py, "k");
        dict.dict_set(&key, Obj::float(py, 2.5)).unwrap();
        let floats = live_objects(Kind::Float);
        let guard = ReadGuard::new(py);
        let value = dict.dict_get_borrowed(&key, &guard).unwrap();
        let handle = dict.clone().unbind();
        // The reader lets other threads run (in the gil build: gives up the GIL) while it still
        // holds the borrow; another thread deletes the value and collects.
        py.allow_threads(|| {
            std::thread::spawn(move || {
                Python::attach(|py| {
                    let dict = handle.into_bound(py);
                    dict.dict_del(&Obj::intern(py, "k")).unwrap();
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
        let list = Obj::list(py, (0..4).map(|i| Obj::float(py, i as f64 + 0.5)));
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
        assert_eq!(list.len(), Ok(0), "the writer popped every item");
        collect(py);
        assert_eq!(live_objects(Kind::Float), floats - 4);
    });
}

#[test]
fn debug_prints_a_dicts_entries_even_if_the_writer_deletes_them_meanwhile() {
    leak_checked(|py| {
        let dict = Obj::dict(py);
        let keys: Vec<_> = ["a", "b", "c"].iter().map(|k| Obj::str(py, k)).collect();
        for (i, key) in keys.iter().enumerate() {
            dict.dict_set(key, Obj::float(py, i as f64 + 0.5)).unwrap();
        }
        let floats = live_objects(Kind::Float);
        let fewest_alive = Cell::new(floats);
        let mut writer = MeddlingWriter {
            out: String::new(),
            after_each_write: || {
                for key in &keys {
                    let _ = dict.dict_del(key);
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
        assert_eq!(dict.len(), Ok(0));
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
    let list = Python::attach(|py| Obj::list(py, [Obj::int(py, 1000), Obj::none(py)]).unbind());
    let probe = std::thread::scope(|s| {
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
        let tuple = Obj::tuple(py, [Obj::int(py, 1)]);
        let dict = Obj::dict(py);
        dict.dict_set(&Obj::str(py, "t"), tuple).unwrap();
        let list = Obj::list(
            py,
            [
                Obj::none(py),
                Obj::bool(py, false),
                Obj::float(py, 2.0),
                dict,
            ],
        );
        assert_eq!(format!("{list:?}"), r#"[None, False, 2.0, {"t": (1,)}]"#);
    });
}

#[test]
fn dropping_a_list_nested_a_million_deep_does_not_overflow_the_stack() {
    leak_checked(|py| {
        let depth = if cfg!(miri) { 1_000 } else { 1_000_000 };
        let mut nested = Obj::list(py, []);
        for _ in 0..depth {
            nested = Obj::list(py, [nested]);
        }
        drop(nested);
    });
}
