//! Every thread reading the same object: one mortal object counted by all (the case CPython
//! 3.14t still serialises), one shared instance's attribute (borrowed, or kept: counted), and
//! immortal objects.

use std::sync::OnceLock;

use ftrt_gil::Python;
use ftrt_object::RefCountValue;
use ftrt_object::{PyClass, PyFloat, PyInstance, PyInt, PyList, PyNone, PyStr, ReadGuard, Shared};

use crate::{checkpoint, checkpoints_in, run_threads, Gate, Outcome, Params, Workload};

const SHARED_REFS_TOTAL: usize = 700_000_000;

/// The clones each thread of `shared-refcount` holds at the end: twice as many as the bindings
/// and the handle together, so that clones counted for nothing read too low, with a margin for
/// a count read low (`Bound::refcount` of an object not yet deferred leaves out the references
/// of hot-object requests, which other threads may make between its two reads).
fn held_clones(params: &Params) -> usize {
    2 * (params.threads + 1)
}

fn shared_refcount(params: &Params) -> Outcome {
    let total = params.total(SHARED_REFS_TOTAL);
    // Thread 0 makes the object and shares it, as a program's threads share what one of them
    // made: at one thread the object never leaves its owner, at N the others count atomically.
    let published = OnceLock::<Shared<PyFloat>>::new();
    let ready = Gate::new(params.threads);
    let (elapsed, held_counts) = run_threads(params.threads, |t, py| {
        let _break = ready.break_on_unwind();
        if t == 0 {
            let _ = published.set(PyFloat::new(py, 1.5).unbind());
        }
        // Wait detached: under the GIL, waiting attached would keep thread 0 out.
        py.allow_threads(|| ready.wait());
        let value = published
            .get()
            .expect("published before the barrier")
            .bind(py);
        let taken = take_and_drop(&value, params.share(total, t));
        // The references the loop takes are counted: held together, more of them than there
        // are bindings, they show in the count, which other threads' references only raise.
        // (A clone and a drop that both skipped counting would leave the count right at the
        // end, and the loop would time nothing.)
        let _held: Vec<_> = (0..held_clones(params)).map(|_| value.clone()).collect();
        (taken, value.refcount())
    });
    let (taken, held_counts): (Vec<usize>, Vec<RefCountValue>) = held_counts.into_iter().unzip();
    let mut outcome = Outcome::timed(elapsed, total);
    // The loop ran its share on every thread: the count comes back to where it was whether or
    // not the loop took a reference, so only the references it saw tell.
    outcome.expect_per_thread(taken, |t| checkpoints_in(params.share(total, t)));
    // More than every binding and the handle together, which is all a count of uncounted
    // clones could read.
    let uncounted = params.threads + 1;
    for (t, count) in held_counts.into_iter().enumerate() {
        outcome.expect(
            matches!(count, RefCountValue::Mortal(n) if n > uncounted),
            || {
                let clones = held_clones(params);
                format!("thread {t} held {clones} clones and its binding, and read {count:?}")
            },
        );
    }
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

/// `shared-refcount`'s timed loop: takes and drops a counted reference to `value`, `times`
/// times, and answers how many of the references it held at its checkpoints were to `value`:
/// one every 16 references (`checkpoints_in`), unless the loop was cut short. (Counting at every
/// reference would add a compare and an add to a loop of about thirty instructions.) Out of
/// line, so that the code after the loop (the check) cannot change how the loop is compiled:
/// the check's `Bound::refcount`, inlined beside it, moved the 2-thread time from 0.38-0.39 s
/// to 0.44-0.47 s when its code changed, the loop's own source unchanged.
#[inline(never)]
fn take_and_drop(value: &ftrt_object::Bound<'_, PyFloat>, times: usize) -> usize {
    let py = value.py();
    let mut seen = 0;
    for i in 0..times {
        // Takes and drops a counted reference, every time.
        let reference = std::hint::black_box(value.clone());
        if checkpoint(py, i) {
            // A handle the compiler cannot see through, compared where the loop checkpoints.
            seen += usize::from(reference.is(value.as_any()));
        }
        drop(reference);
    }
    seen
}

pub(crate) const SHARED_REFCOUNT: Workload = Workload {
    name: "shared-refcount",
    unit: "reference taken and dropped",
    description: "takes and drops references to one shared mortal object",
    shows: "P9",
    run: shared_refcount,
};

const ATTR_READS_TOTAL: usize = 88_000_000;
const ATTR_KEEPS_TOTAL: usize = 60_000_000;

/// A `Config` instance made on the calling thread, with `scale = 0.5` (a mortal float); the
/// interned name.
fn shared_config() -> (Shared<PyInstance>, Shared<PyStr>) {
    Python::attach(|py| {
        let instance = PyClass::new(py, "Config").expect("a name").instantiate();
        let name = PyStr::intern(py, "scale");
        instance
            .set_attr(&name, PyFloat::new(py, 0.5))
            .expect("attributes");
        (instance.unbind(), name.unbind())
    })
}

fn shared_attribute_read(params: &Params) -> Outcome {
    let total = params.total(ATTR_READS_TOTAL);
    let (instance, name) = shared_config();
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

/// `shared-attribute-read`, keeping what it reads: `kept[0] = config.scale`, the value counted
/// into the thread's own one-slot list and the one it replaces dropped, as a program that
/// stores what it read pays. Every thread counts the same mortal float.
fn shared_attribute_keep(params: &Params) -> Outcome {
    let total = params.total(ATTR_KEEPS_TOTAL);
    let (instance, name) = shared_config();
    // The value's count before the run, read as after it: through a binding of this handle.
    let (value, baseline) = Python::attach(|py| {
        let value = instance
            .bind(py)
            .get_attr(&name.bind(py))
            .expect("present")
            .unbind();
        ftrt_object::collect(py);
        let baseline = value.bind(py).refcount();
        (value, baseline)
    });
    let (elapsed, results) = run_threads(params.threads, |t, py| {
        let (instance, name) = (instance.bind(py), name.bind(py));
        let kept = PyList::new(py, [PyNone::get(py)]);
        let mut sum = 0.0;
        for i in 0..params.share(total, t) {
            let read = instance.get_attr(&name).expect("present");
            sum += read.to_f64().expect("a float");
            // Stores the counted reference, dropping the one kept before.
            kept.set_item(0, read).expect("one slot");
            checkpoint(py, i);
        }
        let holds_value = kept.get_item(0).expect("one slot").is(&value.bind(py));
        (sum, holds_value)
    });
    let mut outcome = Outcome::timed(elapsed, total);
    // A thread with no share keeps the `None` it started with.
    outcome.expect_per_thread(results, |t| {
        let share = params.share(total, t);
        (share as f64 * 0.5, share > 0)
    });
    Python::attach(|py| {
        // Every list that kept the value is gone: its count is back where it was.
        ftrt_object::collect(py);
        let after = value.bind(py).refcount();
        outcome.expect(after == baseline, || {
            format!(
                "the shared value's count is {after:?}, expected {baseline:?} as before the run"
            )
        });
    });
    drop((value, instance, name));
    outcome
}

pub(crate) const SHARED_ATTRIBUTE_KEEP: Workload = Workload {
    name: "shared-attribute-keep",
    unit: "attribute read and kept",
    description: "reads an attribute of one shared instance and keeps it (a counted reference in its own one-slot list)",
    shows: "P9",
    run: shared_attribute_keep,
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
    // Still immortal: a build that counted them would pass the sums above.
    Python::attach(|py| {
        let counts = (PyNone::get(py).refcount(), PyInt::new(py, 42).refcount());
        outcome.expect(
            counts == (RefCountValue::Immortal, RefCountValue::Immortal),
            || format!("None and 42 count {counts:?}, expected both immortal"),
        );
    });
    outcome
}

pub(crate) const IMMORTAL_READ: Workload = Workload {
    name: "immortal-read",
    unit: "two references taken and dropped",
    description: "takes and drops references to None and small ints",
    shows: "P3b",
    run: immortal_read,
};
