//! Typed views and type slots: downcasting, one item-access scheme for lists and dicts, and the
//! per-type behaviour (`repr`, `hash`, `eq`, `traverse`) every object reaches through its type.

use ftrt_object::{
    Bound, Error, PyAny, PyBool, PyClass, PyDict, PyFloat, PyInstance, PyInt, PyList, PyModule,
    PyNone, PyStr, PyTuple,
};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod common;
use common::leak_checked;

/// Whether `found` holds exactly `expected`, one for one and in order, by identity.
fn same_objects(found: &[Bound<'_, PyAny>], expected: &[&Bound<'_, PyAny>]) -> bool {
    found.len() == expected.len() && found.iter().zip(expected).all(|(f, e)| f.is(e))
}

#[test]
fn downcasting_to_the_right_type_gives_the_typed_view() {
    leak_checked(|py| {
        let any = PyList::new(py, [PyInt::new(py, 7)]).into_any();
        assert!(any.is_instance_of::<PyList>() && any.is_instance_of::<PyAny>());
        let list = any.downcast::<PyList>().expect("a list");
        assert_eq!(list.len(), 1);
        assert!(list.is(&any), "the same object, viewed as a list");
        let owned: Bound<'_, PyList> = any.clone().downcast_into().expect("a list");
        assert_eq!(owned.get_item(0).unwrap().to_i64(), Ok(7));
        let int = owned.get_item(0).unwrap().downcast_into::<PyInt>().unwrap();
        assert_eq!(int.value(), 7);
    });
}

#[test]
fn downcasting_to_the_wrong_type_is_a_type_error() {
    leak_checked(|py| {
        let int = PyInt::new(py, 1).into_any();
        for result in [
            int.downcast::<PyList>().map(|_| ()),
            int.downcast::<PyDict>().map(|_| ()),
            int.downcast::<PyStr>().map(|_| ()),
            int.downcast::<PyFloat>().map(|_| ()),
            int.downcast::<PyBool>().map(|_| ()),
            int.downcast::<PyInstance>().map(|_| ()),
        ] {
            assert!(matches!(result, Err(Error::TypeError(_))), "{result:?}");
        }
        let Err(Error::TypeError(message)) = int.clone().downcast_into::<PyList>() else {
            panic!("an int is not a list");
        };
        assert_eq!(message, "expected list, got 'int' object");
        // A bool is not an int view: the views read their own payload without checking again.
        assert!(PyBool::new(py, true).downcast::<PyInt>().is_err());
        // An instance's type is its class, and it is still an instance.
        let point = PyClass::new(py, "Point").unwrap().instantiate().into_any();
        assert_eq!(point.type_name(), "Point");
        assert!(point.downcast::<PyInstance>().is_ok());
        assert!(point.downcast::<PyModule>().is_err());
        assert!(matches!(int.to_str(), Err(Error::TypeError(_))));
    });
}

#[test]
fn lists_get_set_and_delete_items_by_index() {
    leak_checked(|py| {
        let list = PyList::new(py, (0..5).map(|i| PyInt::new(py, i * 10)));
        assert_eq!(list.get_item(1).unwrap().to_i64(), Ok(10));
        list.set_item(1, PyStr::new(py, "one")).unwrap();
        assert_eq!(list.get_item(1).unwrap().to_str(), Ok("one"));
        list.del_item(1).unwrap();
        assert_eq!(
            format!("{list:?}"),
            "[0, 20, 30, 40]",
            "later items move down"
        );
        list.del_item(-1).unwrap();
        list.del_item(0).unwrap();
        assert_eq!(format!("{list:?}"), "[20, 30]");
        for bad in [2, -3] {
            assert!(matches!(list.get_item(bad), Err(Error::IndexError(_))));
            assert!(matches!(
                list.set_item(bad, PyNone::get(py)),
                Err(Error::IndexError(_))
            ));
            assert!(matches!(list.del_item(bad), Err(Error::IndexError(_))));
        }
        assert_eq!(list.len(), 2, "failed operations change nothing");
        list.append(PyFloat::new(py, 0.5));
        assert_eq!(list.get_item(2).unwrap().to_f64(), Ok(0.5));
    });
}

#[test]
fn dicts_get_set_and_delete_items_by_key() {
    leak_checked(|py| {
        let dict = PyDict::new(py);
        let key = PyStr::new(py, "k");
        dict.set_item(&key, PyInt::new(py, 1)).unwrap();
        dict.set_item(&PyStr::new(py, "k"), PyInt::new(py, 2))
            .unwrap();
        assert_eq!(dict.len(), 1, "an equal key replaces the value");
        assert_eq!(dict.get_item(&key).unwrap().to_i64(), Ok(2));
        assert!(dict.contains(&key).unwrap());
        dict.del_item(&key).unwrap();
        assert!(!dict.contains(&key).unwrap());
        assert!(matches!(dict.get_item(&key), Err(Error::KeyError(_))));
        assert!(matches!(dict.del_item(&key), Err(Error::KeyError(_))));
        let unhashable = PyList::empty(py);
        assert!(matches!(
            dict.set_item(&unhashable, PyNone::get(py)),
            Err(Error::TypeError(_))
        ));
        assert!(matches!(
            dict.del_item(&unhashable),
            Err(Error::TypeError(_))
        ));
        assert!(dict.is_empty());
    });
}

#[test]
fn the_hash_slot_makes_str_int_and_bool_hashable_and_nothing_else() {
    leak_checked(|py| {
        let text = PyStr::new(py, "key");
        assert_eq!(text.hash(), PyStr::intern(py, "key").hash(), "by value");
        assert_eq!(PyBool::new(py, true).hash(), PyInt::new(py, 1).hash());
        assert!(PyInt::new(py, 1_000_000).hash().is_ok());
        for unhashable in [
            PyFloat::new(py, 1.5).into_any(),
            PyList::empty(py).into_any(),
            PyDict::new(py).into_any(),
            PyNone::get(py).into_any(),
            PyTuple::new::<PyAny>(py, []).into_any(),
        ] {
            let Err(Error::TypeError(message)) = unhashable.hash() else {
                panic!("{unhashable:?} is hashable");
            };
            assert!(message.starts_with("unhashable type"), "{message}");
        }
    });
}

#[test]
fn the_eq_slot_compares_numbers_and_strings_by_value_and_the_rest_by_identity() {
    leak_checked(|py| {
        let one = PyInt::new(py, 1);
        assert!(one.equals(&PyFloat::new(py, 1.0)) && PyFloat::new(py, 1.0).equals(&one));
        assert!(one.equals(&PyBool::new(py, true)) && PyBool::new(py, true).equals(&one));
        assert!(!one.equals(&PyInt::new(py, 2)) && !one.equals(&PyStr::new(py, "1")));
        assert!(PyStr::new(py, "ab").equals(&PyStr::new(py, "ab")));
        assert!(!PyStr::new(py, "ab").equals(&PyStr::new(py, "ba")));
        let nan = PyFloat::new(py, f64::NAN);
        assert!(!nan.equals(&nan), "NaN equals nothing, itself included");
        let list = PyList::empty(py);
        assert!(list.equals(&list) && !list.equals(&PyList::empty(py)));
        let point = PyClass::new(py, "Point").unwrap().instantiate();
        assert!(point.equals(&point) && !point.equals(&one));
    });
}

/// CPython compares an int with a float exactly: 2**53 + 1 is not 2.0**53, although the int
/// rounds to it as a float (equality stays transitive).
#[test]
fn an_int_equals_a_float_only_when_their_values_are_the_same_number() {
    leak_checked(|py| {
        let two_53 = 9_007_199_254_740_992_i64;
        let float = PyFloat::new(py, two_53 as f64);
        assert!(PyInt::new(py, two_53).equals(&float) && float.equals(&PyInt::new(py, two_53)));
        let next = PyInt::new(py, two_53 + 1);
        assert!(!next.equals(&float) && !float.equals(&next));
        // i64::MAX rounds to 2.0**63, which no i64 reaches.
        let two_63 = PyFloat::new(py, 9_223_372_036_854_775_808.0);
        assert!(
            !PyInt::new(py, i64::MAX).equals(&two_63) && !two_63.equals(&PyInt::new(py, i64::MAX))
        );
        let min = PyFloat::new(py, i64::MIN as f64);
        assert!(PyInt::new(py, i64::MIN).equals(&min) && min.equals(&PyInt::new(py, i64::MIN)));
        for not_whole in [0.5, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let float = PyFloat::new(py, not_whole);
            assert!(!PyInt::new(py, 0).equals(&float) && !float.equals(&PyInt::new(py, 0)));
        }
        assert!(PyBool::new(py, true).equals(&PyFloat::new(py, 1.0)));
    });
}

/// Floats print as Python's `repr` spells them: `nan`, and an exponent with its sign and at
/// least two digits.
#[test]
fn floats_print_as_pythons_repr() {
    leak_checked(|py| {
        for (value, python) in [
            (0.25, "0.25"),
            (1.0, "1.0"),
            (-0.0, "-0.0"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e300, "1.5e+300"),
            (0.0001, "0.0001"),
            (1e-5, "1e-05"),
            (-2.5e-7, "-2.5e-07"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(format!("{:?}", PyFloat::new(py, value)), python, "{value}");
        }
    });
}

/// As in Python's `repr`, a container met again inside its own print prints as `[...]`,
/// `{...}` or `(...)`, and containers nested without a cycle print in full.
#[test]
fn a_container_inside_itself_prints_as_an_ellipsis_and_deep_nesting_in_full() {
    leak_checked(|py| {
        let list = PyList::empty(py);
        list.append(list.clone());
        assert_eq!(format!("{list:?}"), "[[...]]");
        let dict = PyDict::new(py);
        dict.set_item(&PyStr::new(py, "me"), dict.clone()).unwrap();
        let tuple = PyTuple::new(py, [dict.clone().into_any()]);
        dict.set_item(&PyStr::new(py, "t"), tuple.clone()).unwrap();
        assert_eq!(format!("{tuple:?}"), r#"({"me": {...}, "t": (...)},)"#);
        // Break the cycles, so the objects go with their last references.
        list.pop().unwrap();
        dict.del_item(&PyStr::new(py, "me")).unwrap();
        dict.del_item(&PyStr::new(py, "t")).unwrap();

        let mut nested = PyList::new(py, [PyInt::new(py, 1)]);
        for _ in 0..20 {
            nested = PyList::new(py, [nested]);
        }
        assert_eq!(
            format!("{nested:?}"),
            format!("{}1{}", "[".repeat(21), "]".repeat(21))
        );
    });
}

#[test]
fn the_repr_slot_writes_each_type_as_python_does() {
    leak_checked(|py| {
        let module = PyModule::new(py, "main");
        let class = PyClass::new(py, "Point").unwrap();
        let nested = PyList::new(py, [PyTuple::new(py, [PyInt::new(py, 1)])]);
        let items = PyList::new(
            py,
            [
                PyNone::get(py).into_any(),
                PyBool::new(py, true).into_any(),
                PyInt::new(py, -3).into_any(),
                PyFloat::new(py, 0.25).into_any(),
                PyStr::new(py, "a\"b").into_any(),
                nested.into_any(),
                PyTuple::new::<PyAny>(py, []).into_any(),
                PyDict::new(py).into_any(),
                class.clone().into_any(),
                module.into_any(),
            ],
        );
        assert_eq!(
            format!("{items:?}"),
            r#"[None, True, -3, 0.25, "a\"b", [(1,)], (), {}, <class 'Point'>, <module 'main'>]"#
        );
        let point = class.instantiate();
        assert!(format!("{point:?}").starts_with("<Point object at 0x"));
    });
}

#[test]
fn traverse_visits_exactly_the_references_a_container_holds() {
    leak_checked(|py| {
        let (a, b) = (
            PyFloat::new(py, 1.5).into_any(),
            PyStr::new(py, "b").into_any(),
        );

        let list = PyList::new(py, [a.clone(), b.clone(), a.clone()]);
        assert!(
            same_objects(&list.referents(), &[&a, &b, &a]),
            "one visit per reference"
        );
        list.del_item(0).unwrap();
        assert!(same_objects(&list.referents(), &[&b, &a]));

        let tuple = PyTuple::new(py, [b.clone(), a.clone()]);
        assert!(same_objects(&tuple.referents(), &[&b, &a]));

        let dict = PyDict::new(py);
        dict.set_item(&b, a.clone()).unwrap();
        let key = PyInt::new(py, 300).into_any();
        dict.set_item(&key, b.clone()).unwrap();
        dict.del_item(&b).unwrap();
        assert!(
            same_objects(&dict.referents(), &[&key, &b]),
            "keys and values, live only"
        );

        let name = PyStr::intern(py, "x").into_any();
        let point = PyClass::new(py, "Point").unwrap().instantiate();
        point
            .set_attr(name.downcast::<PyStr>().unwrap(), list.clone())
            .unwrap();
        let list_any = list.clone().into_any();
        assert!(same_objects(&point.referents(), &[&name, &list_any]));

        let module = PyModule::new(py, "main");
        module
            .set_attr(name.downcast::<PyStr>().unwrap(), a.clone())
            .unwrap();
        assert!(same_objects(&module.referents(), &[&name, &a]));

        for leaf in [
            a.clone(),
            b.clone(),
            PyNone::get(py).into_any(),
            key.clone(),
        ] {
            assert!(leaf.referents().is_empty(), "{leaf:?} holds nothing");
        }
        let class = PyClass::new(py, "Empty").unwrap();
        assert!(class.referents().is_empty(), "a class holds no objects");
    });
}
