//! Every thread reading the same object: one mortal object counted by all (the case CPython
//! 3.14t still serialises), one shared instance's attribute, and immortal objects.

use std::sync::{Barrier, OnceLock};

use ftrt_gil::Python;
use ftrt_object::RefCountValue;
use ftrt_object::{PyClass, PyFloat, PyInt, PyNone, PyStr, ReadGuard, Shared};

use crate::{checkpoint, run_threads, Outcome, Params, Workload};

const SHARED_REFS_TOTAL: usize = 700_000_000;

fn shared_refcount(params: &Params) -> Outcome {
    let total = params.total(SHARED_REFS_TOTAL);
    // Thread 0 makes the object and shares it, as a program's threads share what one of them
    // made: at one thread the object never leaves its owner, at N the others count atomically.
    let published = OnceLock::<Shared<PyFloat>>::new();
    let ready = Barrier::new(params.threads);
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        if t == 0 {
            let _ = published.set(PyFloat::new(py, 1.5).unbind());
        }
        // Wait detached: under the GIL, waiting attached would keep thread 0 out.
        py.allow_threads(|| ready.wait());
        let value = published
            .get()
            .expect("published before the barrier")
            .bind(py);
        for i in 0..params.share(total, t) {
            // Takes and drops a counted reference, every time.
            drop(std::hint::black_box(value.clone()));
            checkpoint(py, i);
        }
    });
    let mut outcome = Outcome::timed(elapsed, total);
    let shared = published.into_inner().expect("published");
    Python::attach(|py| {
        ftrt_object::collect(py);
        // The handle, and the binding made here.
        let after = shared.bind(py).refcount();
        outcome.expect(after == RefCountValue::Mortal(2), || {
            format!("the shared object's count is {after:?}, expected 2")
        });
    });
    outcome
}

pub(crate) const SHARED_REFCOUNT: Workload = Workload {
    name: "shared-refcount",
    unit: "reference taken and dropped",
    description: "takes and drops references to one shared mortal object",
    shows: "P9",
    run: shared_refcount,
};

const ATTR_READS_TOTAL: usize = 88_000_000;

fn shared_attribute_read(params: &Params) -> Outcome {
    let total = params.total(ATTR_READS_TOTAL);
    let (instance, name) = Python::attach(|py| {
        let instance = PyClass::new(py, "Config").expect("a name").instantiate();
        let name = PyStr::intern(py, "scale");
        instance
            .set_attr(&name, PyFloat::new(py, 0.5))
            .expect("attributes");
        (instance.unbind(), name.unbind())
    });
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let (instance, name) = (instance.bind(py), name.bind(py));
        let mut sum = 0.0;
        for i in 0..params.share(total, t) {
            let guard = ReadGuard::new(py);
            sum += instance
                .get_attr_borrowed(&name, &guard)
                .and_then(|v| v.to_f64())
                .expect("present");
            checkpoint(py, i);
        }
        sum
    });
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect_per_thread(sums, |t| params.share(total, t) as f64 * 0.5);
    drop((instance, name));
    outcome
}

pub(crate) const SHARED_ATTRIBUTE_READ: Workload = Workload {
    name: "shared-attribute-read",
    unit: "attribute read",
    description: "reads an attribute of one shared instance",
    shows: "P9",
    run: shared_attribute_read,
};

const IMMORTAL_REFS_TOTAL: usize = 240_000_000;

fn immortal_read(params: &Params) -> Outcome {
    let total = params.total(IMMORTAL_REFS_TOTAL);
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let (none, small) = (PyNone::get(py), PyInt::new(py, 42));
        let mut sum = 0;
        for i in 0..params.share(total, t) {
            let (a, b) = (none.clone(), small.clone());
            sum += i64::from(a.is_none()) + b.to_i64().expect("an int");
            checkpoint(py, i);
        }
        sum
    });
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect_per_thread(sums, |t| params.share(total, t) as i64 * 43);
    outcome
}

pub(crate) const IMMORTAL_READ: Workload = Workload {
    name: "immortal-read",
    unit: "two references taken and dropped",
    description: "takes and drops references to None and small ints",
    shows: "P3b",
    run: immortal_read,
};
