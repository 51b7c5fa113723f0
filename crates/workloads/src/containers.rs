//! Lists, dicts, instances and strings, private to each thread (they should scale, P3) or shared
//! by all (exact results under contention; shared reads should scale too, P3b).

use ftrt_gil::Python;
use ftrt_object::{Obj, ReadGuard, Shared};

use crate::{checkpoint, run_threads, Outcome, Params, Workload};

const APPENDS_TOTAL: usize = 4_000_000;

/// Private lists start over at this length, so the workload measures appending rather than
/// the allocator's page faults (a 4M-item list is 160 MB).
const PRIVATE_LIST_CAP: usize = 10_000;

fn list_append_private(params: &Params) -> Outcome {
    let total = params.total(APPENDS_TOTAL);
    let (elapsed, counted) = run_threads(params.threads, |t, py| {
        let mut list = Obj::list(py, []);
        let mut held = 0;
        for i in 0..params.share(total, t) {
            if i % PRIVATE_LIST_CAP == 0 && i > 0 {
                held += list.len().expect("a list");
                list = Obj::list(py, []);
            }
            list.append(Obj::int(py, (i % 1000) as i64))
                .expect("a list");
            checkpoint(py, i);
        }
        held + list.len().expect("a list")
    });
    let mut outcome = Outcome::timed(elapsed);
    for (t, counted) in counted.into_iter().enumerate() {
        let share = params.share(total, t);
        outcome.expect(share == counted, || {
            format!("thread {t}'s lists held {counted} items after {share} appends")
        });
    }
    outcome
}

pub(crate) const LIST_APPEND_PRIVATE: Workload = Workload {
    name: "list-append-private",
    description: "appends ints to its own list (a fresh one every 10,000 items)",
    shows: "P3",
    run: list_append_private,
};

const SHARED_APPENDS_TOTAL: usize = 1_000_000;

fn list_append_shared(params: &Params) -> Outcome {
    let total = params.total(SHARED_APPENDS_TOTAL);
    let list: Shared = Python::attach(|py| Obj::list(py, []).unbind());
    let offsets: Vec<usize> = (0..params.threads)
        .scan(0, |at, t| {
            Some(std::mem::replace(at, *at + params.share(total, t)))
        })
        .collect();
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        let list = list.bind(py);
        for i in 0..params.share(total, t) {
            list.append(Obj::int(py, (offsets[t] + i) as i64))
                .expect("a list");
            checkpoint(py, i);
        }
    });
    let mut outcome = Outcome::timed(elapsed);
    Python::attach(|py| {
        let mut seen: Vec<i64> = list
            .bind(py)
            .to_vec()
            .expect("a list")
            .iter()
            .map(|o| o.to_i64().expect("ints"))
            .collect();
        seen.sort_unstable();
        let exact = seen.len() == total && seen.iter().enumerate().all(|(i, &v)| v == i as i64);
        outcome.expect(exact, || {
            format!(
                "the shared list holds {} items, expected each of 0..{total} once",
                seen.len()
            )
        });
    });
    outcome
}

pub(crate) const LIST_APPEND_SHARED: Workload = Workload {
    name: "list-append-shared",
    description: "appends to one list shared by all; exact final length",
    shows: "reliability",
    run: list_append_shared,
};

const DICT_OPS_TOTAL: usize = 1_000_000;
const KEYS: usize = 1_000;

fn keys(py: Python<'_>) -> Vec<Obj<'_>> {
    (0..KEYS)
        .map(|k| Obj::str(py, &format!("key-{k}")))
        .collect()
}

fn dict_private(params: &Params) -> Outcome {
    let total = params.total(DICT_OPS_TOTAL);
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let dict = Obj::dict(py);
        let keys = keys(py);
        let mut sum = 0_i64;
        for i in 0..params.share(total, t) {
            let key = &keys[i % KEYS];
            dict.dict_set(key, Obj::int(py, (i % KEYS) as i64))
                .expect("hashable");
            sum += dict
                .dict_get(key)
                .and_then(|v| v.to_i64())
                .expect("just set");
            checkpoint(py, i);
        }
        (sum, dict.len().expect("a dict"))
    });
    let mut outcome = Outcome::timed(elapsed);
    for (t, (sum, len)) in sums.into_iter().enumerate() {
        let share = params.share(total, t);
        let expected: i64 = (0..share).map(|i| (i % KEYS) as i64).sum();
        outcome.expect(sum == expected && len == share.min(KEYS), || {
            format!("thread {t}: read sum {sum}, expected {expected}")
        });
    }
    outcome
}

pub(crate) const DICT_PRIVATE: Workload = Workload {
    name: "dict-private",
    description: "sets and gets keys of its own dict",
    shows: "P3",
    run: dict_private,
};

const SHARED_READS_TOTAL: usize = 4_000_000;

fn dict_shared_read(params: &Params) -> Outcome {
    let total = params.total(SHARED_READS_TOTAL);
    let (dict, key_handles): (Shared, Vec<Shared>) = Python::attach(|py| {
        let dict = Obj::dict(py);
        let keys = keys(py);
        for (k, key) in keys.iter().enumerate() {
            // Ordinary mortal values (floats), owned by the thread that made them.
            dict.dict_set(key, Obj::float(py, k as f64))
                .expect("hashable");
        }
        (dict.unbind(), keys.into_iter().map(Obj::unbind).collect())
    });
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let dict = dict.bind(py);
        let keys: Vec<Obj> = key_handles.iter().map(|k| k.bind(py)).collect();
        let mut sum = 0.0;
        for i in 0..params.share(total, t) {
            // The value is read the way an interpreter's evaluation stack would hold it: borrowed
            // under a read guard, not counted (see docs/objects.md, P9).
            let guard = ReadGuard::new(py);
            sum += dict
                .dict_get_borrowed(&keys[i % KEYS], &guard)
                .and_then(|v| v.to_f64())
                .expect("present");
            checkpoint(py, i);
        }
        sum
    });
    let mut outcome = Outcome::timed(elapsed);
    outcome.expect_per_thread(sums, |t| {
        (0..params.share(total, t))
            .map(|i| (i % KEYS) as f64)
            .sum::<f64>()
    });
    outcome
}

pub(crate) const DICT_SHARED_READ: Workload = Workload {
    name: "dict-shared-read",
    description: "looks keys up in one shared dict whose values are ordinary (mortal) objects",
    shows: "P3b, P9",
    run: dict_shared_read,
};

const SHARED_INSERTS_TOTAL: usize = 400_000;

fn dict_shared_write(params: &Params) -> Outcome {
    let total = params.total(SHARED_INSERTS_TOTAL);
    let dict: Shared = Python::attach(|py| Obj::dict(py).unbind());
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        let dict = dict.bind(py);
        for i in 0..params.share(total, t) {
            let key = (i * params.threads + t) as i64;
            dict.dict_set(&Obj::int(py, key), Obj::int(py, key + 1))
                .expect("hashable");
            checkpoint(py, i);
        }
    });
    let mut outcome = Outcome::timed(elapsed);
    Python::attach(|py| {
        let dict = dict.bind(py);
        let len = dict.len().expect("a dict");
        let all_there = (0..total as i64)
            .all(|k| dict.dict_get(&Obj::int(py, k)).and_then(|v| v.to_i64()) == Ok(k + 1));
        outcome.expect(len == total && all_there, || {
            format!("the shared dict holds {len} of {total} keys, or a wrong value")
        });
    });
    outcome
}

pub(crate) const DICT_SHARED_WRITE: Workload = Workload {
    name: "dict-shared-write",
    description: "inserts distinct keys into one shared dict; nothing lost",
    shows: "reliability",
    run: dict_shared_write,
};

const INSTANCES_TOTAL: usize = 1_000_000;

fn object_create(params: &Params) -> Outcome {
    let total = params.total(INSTANCES_TOTAL);
    let class: Shared = Python::attach(|py| Obj::class(py, "Point").expect("a name").unbind());
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let class = class.bind(py);
        let (x, y) = (Obj::intern(py, "x"), Obj::intern(py, "y"));
        let mut sum = 0;
        for i in 0..params.share(total, t) {
            let point = class.instantiate().expect("a class");
            point
                .set_attr(&x, Obj::int(py, (i % 100) as i64))
                .expect("attributes");
            point.set_attr(&y, Obj::int(py, 1)).expect("attributes");
            sum += point
                .get_attr(&x)
                .and_then(|v| v.to_i64())
                .expect("just set");
            checkpoint(py, i);
        }
        sum
    });
    let mut outcome = Outcome::timed(elapsed);
    outcome.expect_per_thread(sums, |t| {
        (0..params.share(total, t))
            .map(|i| (i % 100) as i64)
            .sum::<i64>()
    });
    outcome
}

pub(crate) const OBJECT_CREATE: Workload = Workload {
    name: "object-create",
    description: "creates and drops instances of a class with two attributes",
    shows: "P3, P7",
    run: object_create,
};

const INTERNS_TOTAL: usize = 2_000_000;
const POOL: usize = 500;

fn string_intern(params: &Params) -> Outcome {
    let total = params.total(INTERNS_TOTAL);
    let pool: Vec<String> = (0..POOL).map(|i| format!("identifier_{i}")).collect();
    let (elapsed, mismatches) = run_threads(params.threads, |t, py| {
        let first: Vec<Obj> = pool.iter().map(|s| Obj::intern(py, s)).collect();
        let mut mismatches = 0;
        for i in 0..params.share(total, t) {
            let interned = Obj::intern(py, &pool[(i * 7 + t) % POOL]);
            if !interned.is(&first[(i * 7 + t) % POOL]) {
                mismatches += 1;
            }
            checkpoint(py, i);
        }
        mismatches
    });
    let mut outcome = Outcome::timed(elapsed);
    let mismatches: usize = mismatches.iter().sum();
    outcome.expect(mismatches == 0, || {
        format!("{mismatches} interned strings were not the unique object")
    });
    outcome
}

pub(crate) const STRING_INTERN: Workload = Workload {
    name: "string-intern",
    description: "interns strings drawn from a shared pool",
    shows: "P3b",
    run: string_intern,
};
