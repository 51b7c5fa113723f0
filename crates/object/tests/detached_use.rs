//! Object handles carried into `allow_threads`' closure past its `Send` bound, the hole
//! `Python::allow_threads` documents (a `SendWrapper`, or a scoped thread-local set around the
//! call): every operation that reads or writes what other threads may change, counts, makes an
//! object or collects fails at once with one message, before it changes anything; what only
//! reads an object's fixed parts (its type, an int's value, a string's text) still works; and a
//! handle dropped there attaches for its decrement.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use ftrt_gil::{is_attached, Python};
use ftrt_object::{
    gc, Bound, Kind, PyAny, PyBool, PyClass, PyDict, PyFloat, PyInstance, PyInt, PyList, PyModule,
    PyNone, PyStr, PyTuple, ReadGuard, RefCountValue, Shared,
};
use scoped_tls_hkt::scoped_thread_local;
use send_wrapper::SendWrapper;

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// What every use of a token or handle on a detached thread panics with.
const USED_DETACHED: &str = "used on a thread that is not attached";

/// The message `f` panicked with, or `None` if it returned.
fn panic_message(f: impl FnOnce()) -> Option<String> {
    let payload = catch_unwind(AssertUnwindSafe(f)).err()?;
    Some(match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload
            .downcast::<&str>()
            .map_or_else(|_| "(not a string)".to_owned(), |m| (*m).to_owned()),
    })
}

/// One of each kind of object, made attached.
struct Handles<'py> {
    py: Python<'py>,
    list: Bound<'py, PyList>,
    dict: Bound<'py, PyDict>,
    class: Bound<'py, PyClass>,
    instance: Bound<'py, PyInstance>,
    module: Bound<'py, PyModule>,
    name: Bound<'py, PyStr>,
    int: Bound<'py, PyInt>,
    tuple: Bound<'py, PyTuple>,
    shared: Shared<PyList>,
    /// The shared list, bound.
    shared_list: Bound<'py, PyList>,
    guard: ReadGuard<'py>,
    /// Objects made attached, for operations that take one by value: each is a handle, which
    /// an operation turns into a reference it stores (and its panic's unwinding would drop).
    spares: RefCell<Vec<Bound<'py, PyAny>>>,
    /// A second handle to each spare, to see afterwards that none was published.
    kept_spares: Vec<Bound<'py, PyAny>>,
}

impl<'py> Handles<'py> {
    fn new(py: Python<'py>) -> Self {
        let name = PyStr::intern(py, "x");
        let int = PyInt::new(py, 7);
        let list = PyList::new(py, [int.clone(), int.clone()]);
        let dict = PyDict::new(py);
        dict.set_item(&name, int.clone()).unwrap();
        let class = PyClass::new(py, "Point").unwrap();
        let instance = class.instantiate();
        instance.set_attr(&name, int.clone()).unwrap();
        let module = PyModule::new(py, "m");
        module.set_attr(&name, int.clone()).unwrap();
        let tuple = PyTuple::new(py, [int.clone()]);
        let shared = PyList::empty(py).unbind();
        let shared_list = shared.bind(py);
        // Local lists, whose publication (stored in a shared container, or unbound) walks the
        // thread's list of local objects.
        let spares: Vec<_> = (0..64).map(|_| PyList::empty(py).into_any()).collect();
        Handles {
            py,
            list,
            dict,
            class,
            instance,
            module,
            name,
            int,
            tuple,
            shared,
            shared_list,
            guard: ReadGuard::new(py),
            kept_spares: spares.clone(),
            spares: RefCell::new(spares),
        }
    }

    fn spare(&self) -> Bound<'py, PyAny> {
        self.spares
            .borrow_mut()
            .pop()
            .expect("enough spare objects")
    }
}

/// An operation on carried handles.
type Operation = (&'static str, fn(&Handles<'_>));

/// Every operation that must not run detached, by the name of the function it calls.
const FAIL_DETACHED: &[Operation] = &[
    ("Bound::clone", |h| drop(h.list.clone())),
    ("Bound::refcount", |h| {
        let _ = h.list.refcount();
    }),
    ("Bound::is_immortal", |h| {
        let _ = h.list.is_immortal();
    }),
    ("Bound::defer_refcount", |h| {
        let _ = h.list.defer_refcount();
    }),
    ("Bound::unbind", |h| drop(h.spare().unbind())),
    ("Bound::referents", |h| drop(h.list.referents())),
    ("PyList::empty", |h| drop(PyList::empty(h.py))),
    ("PyList::new", |h| {
        drop(PyList::new(h.py, [h.spare(), h.spare()]))
    }),
    ("PyList::append", |h| h.list.append(h.spare())),
    ("PyList::append to a shared list", |h| {
        h.shared_list.append(h.spare())
    }),
    ("PyList::get_item", |h| drop(h.list.get_item(0))),
    ("PyList::set_item", |h| drop(h.list.set_item(0, h.spare()))),
    ("PyList::del_item", |h| drop(h.list.del_item(0))),
    ("PyList::pop", |h| drop(h.list.pop())),
    ("PyList::to_vec", |h| drop(h.list.to_vec())),
    ("PyDict::new", |h| drop(PyDict::new(h.py))),
    ("PyDict::set_item", |h| {
        drop(h.dict.set_item(&h.name, h.spare()))
    }),
    ("PyDict::get_item", |h| {
        drop(h.dict.get_item(h.name.as_any()))
    }),
    ("PyDict::get_item_borrowed", |h| {
        drop(h.dict.get_item_borrowed(h.name.as_any(), &h.guard))
    }),
    ("PyDict::del_item", |h| {
        drop(h.dict.del_item(h.name.as_any()))
    }),
    ("PyDict::contains", |h| {
        drop(h.dict.contains(h.name.as_any()))
    }),
    ("PyDict::items", |h| drop(h.dict.items())),
    ("PyClass::new", |h| drop(PyClass::new(h.py, "C"))),
    ("PyClass::instantiate", |h| drop(h.class.instantiate())),
    ("PyInstance::set_attr", |h| {
        drop(h.instance.set_attr(&h.name, h.spare()))
    }),
    ("PyInstance::get_attr", |h| {
        drop(h.instance.get_attr(&h.name))
    }),
    ("PyInstance::get_attr_borrowed", |h| {
        drop(h.instance.get_attr_borrowed(&h.name, &h.guard))
    }),
    ("PyInstance::del_attr", |h| {
        drop(h.instance.del_attr(&h.name))
    }),
    ("PyModule::new", |h| drop(PyModule::new(h.py, "n"))),
    ("PyModule::get_attr", |h| drop(h.module.get_attr(&h.name))),
    ("PyModule::set_attr", |h| {
        drop(h.module.set_attr(&h.name, h.spare()))
    }),
    ("PyInt::new", |h| drop(PyInt::new(h.py, 1 << 40))),
    ("PyInt::add", |h| drop(h.int.add(h.int.as_any()))),
    ("PyInt::sub", |h| drop(h.int.sub(h.int.as_any()))),
    ("PyInt::mul", |h| drop(h.int.mul(h.int.as_any()))),
    ("PyNone::get", |h| drop(PyNone::get(h.py))),
    ("PyFloat::new", |h| drop(PyFloat::new(h.py, 0.5))),
    ("PyBool::new", |h| drop(PyBool::new(h.py, true))),
    ("PyStr::new", |h| drop(PyStr::new(h.py, "y"))),
    ("PyStr::intern", |h| drop(PyStr::intern(h.py, "y"))),
    ("PyStr::intern_in_shared_table", |h| {
        drop(PyStr::intern_in_shared_table(h.py, "y"))
    }),
    ("PyTuple::new", |h| drop(PyTuple::new(h.py, [h.spare()]))),
    ("PyTuple::get_item", |h| drop(h.tuple.get_item(0))),
    ("PyTuple::to_vec", |h| drop(h.tuple.to_vec())),
    ("Shared::bind", |h| drop(h.shared.bind(h.py))),
    ("Shared::clone_ref", |h| drop(h.shared.clone_ref(h.py))),
    ("ReadGuard::new", |h| drop(ReadGuard::new(h.py))),
    ("Borrowed::to_owned", |h| {
        // The borrowed read fails first here; `to_owned` of a value borrowed attached and
        // carried in fails in `what_reads_only_an_objects_fixed_parts_works_on_a_carried_handle`.
        drop(
            h.dict
                .get_item_borrowed(h.name.as_any(), &h.guard)
                .map(|b| b.to_owned(h.py)),
        )
    }),
    ("ftrt_object::collect", |h| ftrt_object::collect(h.py)),
    ("gc::collect", |h| {
        let _ = gc::collect(h.py);
    }),
    ("gc::collect_shared", |h| {
        let _ = gc::collect_shared(h.py);
    }),
];

/// Runs `operation` on `handles` carried into `allow_threads`' closure in a `SendWrapper`
/// (`Send` whatever it holds, checked at run time to be used on the thread that made it, which
/// the closure runs on); `None` if it panicked as a detached use, else what went wrong.
fn carried_in(handles: &Handles<'_>, operation: fn(&Handles<'_>)) -> Option<String> {
    let carried = SendWrapper::new(handles);
    let message = panic_message(|| handles.py.allow_threads(move || operation(*carried)));
    if !is_attached() {
        return Some("the thread is not attached again".to_owned());
    }
    match message {
        Some(message) if message.contains(USED_DETACHED) => None,
        Some(message) => Some(format!("panicked with another message: {message}")),
        None => Some("ran detached".to_owned()),
    }
}

#[test]
fn every_operation_on_a_handle_carried_into_allow_threads_fails_before_it_touches_anything() {
    Python::attach(|py| {
        let handles = Handles::new(py);
        let before = (
            handles.list.len(),
            handles.dict.len(),
            handles.instance.attr_count(),
        );
        let failures: Vec<String> = FAIL_DETACHED
            .iter()
            .filter_map(|&(name, operation)| {
                carried_in(&handles, operation).map(|why| format!("{name}: {why}"))
            })
            .collect();
        assert!(failures.is_empty(), "{failures:#?}");
        // Nothing was changed, and the handles work attached.
        let after = (
            handles.list.len(),
            handles.dict.len(),
            handles.instance.attr_count(),
        );
        assert_eq!(before, after);
        assert!(handles.shared_list.is_empty() && handles.module.attr_count() == 1);
        assert!(handles.kept_spares.iter().all(|spare| !spare.is_shared()));
        assert_eq!(handles.list.get_item(1).unwrap().to_i64(), Ok(7));
        assert_eq!(handles.list.refcount(), RefCountValue::Mortal(1));
    });
}

#[test]
fn what_reads_only_an_objects_fixed_parts_works_on_a_carried_handle() {
    Python::attach(|py| {
        let handles = Handles::new(py);
        let borrowed = handles
            .dict
            .get_item_borrowed(handles.name.as_any(), &handles.guard)
            .unwrap();
        let name_hash = handles.name.hash().unwrap();
        let carried = SendWrapper::new((&handles, borrowed));
        py.allow_threads(move || {
            let (h, borrowed) = *carried;
            // Counting it is no fixed part.
            let counted = panic_message(|| drop(borrowed.to_owned(h.py)));
            assert!(counted.is_some_and(|message| message.contains(USED_DETACHED)));
            assert_eq!(h.list.kind(), Kind::List);
            assert_eq!(h.dict.type_name(), "dict");
            assert!(h.int.is(h.int.as_any()));
            // Containers compare by identity, scalars and strings by their fixed values.
            assert!(h.list.equals(h.list.as_any()) && !h.list.equals(h.tuple.as_any()));
            assert_eq!(h.name.hash(), Ok(name_hash));
            assert_eq!(h.int.value(), 7);
            assert_eq!(h.name.to_str(), "x");
            assert_eq!(h.tuple.len(), 1);
            assert_eq!(borrowed.to_i64(), Ok(7));
            assert!(h.list.downcast::<PyAny>().is_ok());
            assert_eq!(format!("{:?}", h.list), "[7, 7]");
        });
        // A guard made attached may close its read detached.
        let guard = SendWrapper::new(ReadGuard::new(py));
        py.allow_threads(move || drop(guard));
    });
}

#[test]
fn a_handle_dropped_in_allow_threads_attaches_for_its_decrement() {
    Python::attach(|py| {
        let list = PyList::empty(py);
        let carried = SendWrapper::new(list.clone());
        assert_eq!(list.refcount(), RefCountValue::Mortal(2));
        let quiescent_before = quiescent_states();
        py.allow_threads(|| ());
        let detach_alone = quiescent_states() - quiescent_before;
        py.allow_threads(move || drop(carried));
        let detach_and_drop = quiescent_states() - quiescent_before - detach_alone;
        assert_eq!(list.refcount(), RefCountValue::Mortal(1));
        // The drop's attachment ended inside: one more quiescent state than a detach alone
        // (free-threaded builds, where they are reported).
        if ftrt_gil::BUILD != "gil" {
            assert_eq!(detach_and_drop, detach_alone + 1, "the drop did not attach");
        }
        // And unwinding from a failed use drops it cleanly, attached.
        let carried = SendWrapper::new((list.clone(), PyList::empty(py)));
        let message = panic_message(|| {
            py.allow_threads(move || {
                let (list, item) = carried.take();
                list.append(item);
            })
        });
        assert!(message.unwrap().contains(USED_DETACHED));
        assert_eq!(list.refcount(), RefCountValue::Mortal(1));
        assert!(list.is_empty());
    });
}

/// How many quiescent states this thread reported to hooks (free-threaded builds: every
/// detach and every attachment's end passes one; the `gil` build reports none).
fn quiescent_states() -> u64 {
    thread_local! {
        static PASSED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }
    fn count_pass() {
        PASSED.set(PASSED.get() + 1);
    }
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| ftrt_gil::on_quiescent_state(count_pass));
    PASSED.get()
}

scoped_thread_local!(static CARRIED: for<'a> &'a Bound<'a, PyList>);

/// The second route: a scoped thread-local, set around `allow_threads`, hands the handle to a
/// closure that captures nothing.
#[test]
fn a_handle_from_a_scoped_thread_local_fails_in_allow_threads() {
    fn read() {
        CARRIED.with(|list| drop(list.get_item(0)));
    }
    Python::attach(|py| {
        let list = PyList::new(py, [PyInt::new(py, 1)]);
        let message = CARRIED.set(&list, || panic_message(|| py.allow_threads(read)));
        let message = message.expect("a handle from a scoped thread-local was used detached");
        assert!(message.contains(USED_DETACHED), "another panic: {message}");
        assert_eq!(list.refcount(), RefCountValue::Mortal(1));
    });
}

/// What an operation may do on a carried handle without a check: read the object's fixed parts
/// (its type, identity, an int's value, a string's text, a tuple's length, comparisons and
/// hashes made of those), read a snapshot a writer publishes atomically (a container's length,
/// the shared flag, the owner id, the deferred mark), convert a handle without counting, or
/// take no token or handle at all (statistics). By function name.
const ALLOWED_DETACHED: &[&str] = &[
    // Fixed parts and conversions.
    "as_any",
    "into_any",
    "downcast",
    "downcast_into",
    "equals",
    "hash",
    "get_type",
    "id",
    "is",
    "is_instance_of",
    "is_none",
    "kind",
    "type_name",
    "name",
    "value",
    "to_i64",
    "to_f64",
    "to_str",
    "py",
    "into_bound",
    // Snapshots.
    "len",
    "is_empty",
    "attr_count",
    "is_shared",
    "owner_thread_id",
    "is_deferred",
    // No token, no handle.
    "count_strategy",
    "interned_count",
    "live_objects",
    "live_total",
    "now",
    "pauses",
    "clear_pauses",
    "collections",
    "collected",
    "collections_given_up",
    "local_collections",
    "local_pauses",
    "deferrals_given_up",
    "deferred_count",
];

/// Adds the names of the public functions in `dir`'s sources to `names`.
fn public_function_names(dir: &Path, names: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).expect("the crate's sources") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            public_function_names(&path, names);
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            let source = std::fs::read_to_string(&path).expect("a source file");
            for line in source.lines() {
                let line = line.trim_start();
                let Some(rest) = ["pub fn ", "pub unsafe fn ", "pub const fn "]
                    .iter()
                    .find_map(|prefix| line.strip_prefix(prefix))
                else {
                    continue;
                };
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                names.insert(name);
            }
        }
    }
}

/// A new public function is classified here before it lands: run detached by
/// `FAIL_DETACHED` (it must check), or named in `ALLOWED_DETACHED` (it touches nothing another
/// thread changes). A name in both lists is fine (`new` of a type that fails, `len` of one that
/// does not); a name in neither fails this test.
#[test]
#[cfg_attr(
    miri,
    ignore = "reads the crate's sources, which Miri's isolation forbids"
)]
fn every_public_function_of_the_crate_is_run_detached_or_allowed_to_be() {
    let mut names = BTreeSet::new();
    public_function_names(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut names,
    );
    assert!(
        names.contains("append") && names.contains("collect"),
        "{names:?}"
    );
    // "PyList::append to a shared list" runs `append`.
    let run: BTreeSet<&str> = FAIL_DETACHED
        .iter()
        .map(|(name, _)| {
            let function = name.rsplit("::").next().unwrap_or(name);
            function.split(' ').next().unwrap_or(function)
        })
        .collect();
    let unclassified: Vec<&String> = names
        .iter()
        .filter(|name| !run.contains(name.as_str()) && !ALLOWED_DETACHED.contains(&name.as_str()))
        .collect();
    assert!(
        unclassified.is_empty(),
        "not run detached, nor allowed: {unclassified:?}"
    );
}
