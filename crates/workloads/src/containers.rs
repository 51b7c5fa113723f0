//! Lists, dicts, instances and strings, private to each thread (they should scale, P3) or shared
//! by all (exact results under contention; shared reads should scale too, P3b).

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ftrt_gil::Python;
use ftrt_object::{
    Bound, PyClass, PyDict, PyFloat, PyInt, PyList, PyStr, PyTypeInfo, ReadGuard, Shared,
};

use crate::{checkpoint, run_threads, Gate, Outcome, Params, Workload};

const APPENDS_TOTAL: usize = 45_000_000;

/// Private lists start over at this length, so the workload measures appending rather than
/// the allocator's page faults (a 4M-item list is 160 MB).
const PRIVATE_LIST_CAP: usize = 10_000;

fn list_append_private(params: &Params) -> Outcome {
    let total = params.total(APPENDS_TOTAL);
    let (elapsed, counted) = run_threads(params.threads, |t, py| {
        let mut list = PyList::empty(py);
        let mut held = 0;
        for i in 0..params.share(total, t) {
            if i % PRIVATE_LIST_CAP == 0 && i > 0 {
                held += list.len();
                list = PyList::empty(py);
            }
            list.append(PyInt::new(py, (i % 1000) as i64));
            checkpoint(py, i);
        }
        held + list.len()
    });
    let mut outcome = Outcome::timed(elapsed, total);
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
    unit: "append",
    description: "appends ints to its own list (a fresh one every 10,000 items)",
    shows: "P3",
    run: list_append_private,
};

const SHARED_APPENDS_TOTAL: usize = 60_000_000;

/// A shared list or dict starts over after this many units of work (all threads together), so
/// that memory stays bounded however long the run: a container that grew for the whole run
/// would measure fresh pages from the kernel more than the appends and inserts.
const SHARED_ROUND: usize = 250_000;

/// What [`in_rounds`] found.
struct Rounds {
    /// The rounds' times together, and their containers' drops (not the checks between rounds).
    elapsed: Duration,
    /// What each round's check found wrong, by round.
    failures: Vec<String>,
}

/// Works on a shared container in rounds of [`SHARED_ROUND`] units. In each round every thread
/// does its share on that round's container (`fill(py, container, first, threads, count)` does
/// units `first`, `first + threads`, ... `count` of them); then all meet, and thread 0 checks the
/// container (`check(container, units)` describes what is wrong with it after `units`, if
/// anything) and drops it before the next round starts. A round is timed from the earliest
/// thread's start to the last one's end, as [`run_threads`] times a whole run, and the drop of
/// its container (whose items other threads made) is timed too, as a program that kept one
/// container would pay for it at its end; the checks and the waits between rounds are not.
fn in_rounds<T: Container>(
    params: &Params,
    total: usize,
    fill: impl Fn(Python<'_>, &Bound<'_, T>, usize, usize, usize) + Sync,
    check: impl Fn(&Bound<'_, T>, Range<usize>) -> Option<String> + Sync,
) -> Rounds {
    let sizes: Vec<usize> = (0..total.div_ceil(SHARED_ROUND))
        .map(|r| SHARED_ROUND.min(total - r * SHARED_ROUND))
        .collect();
    let containers: Vec<Mutex<Option<Shared<T>>>> = Python::attach(|py| {
        sizes
            .iter()
            .map(|_| Mutex::new(Some(T::empty(py).unbind())))
            .collect()
    });
    let (round_start, round_end) = (Gate::new(params.threads), Gate::new(params.threads));
    let (_, per_thread) = run_threads(params.threads, |t, py| {
        // A thread that panics (its fill, or thread 0's check) releases the others' waits.
        let _breaks = (round_start.break_on_unwind(), round_end.break_on_unwind());
        let (mut spans, mut failures, mut drops) = (Vec::new(), Vec::new(), Duration::ZERO);
        let mut base = 0;
        for (r, &size) in sizes.iter().enumerate() {
            // Wait detached: under the GIL, waiting attached would keep the others out.
            py.allow_threads(|| round_start.wait());
            let started = Instant::now();
            let shared = containers[r]
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .expect("dropped only after its round")
                .bind(py);
            let round = Params {
                threads: params.threads,
                scale: 1.0,
            };
            fill(py, &shared, base + t, params.threads, round.share(size, t));
            drop(shared);
            spans.push((started, Instant::now()));
            py.allow_threads(|| round_end.wait());
            if t == 0 {
                let finished = containers[r]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .expect("dropped once");
                if let Some(wrong) = check(&finished.bind(py), base..base + size) {
                    failures.push(format!("round {r}: {wrong}"));
                }
                let dropping = Instant::now();
                // The handle that kept the container alive since its round: its drop frees
                // the container and its items, or hands them to their owners to free.
                drop(finished);
                drops += dropping.elapsed();
            }
            base += size;
        }
        (spans, failures, drops)
    });
    let rounds: Duration = (0..sizes.len())
        .map(|r| {
            let start = per_thread.iter().map(|(spans, _, _)| spans[r].0).min();
            let end = per_thread.iter().map(|(spans, _, _)| spans[r].1).max();
            end.zip(start)
                .map_or(Duration::ZERO, |(end, start)| end.duration_since(start))
        })
        .sum();
    let (failures, drops) = per_thread
        .into_iter()
        .next()
        .map(|(_, failures, drops)| (failures, drops))
        .unwrap_or_default();
    Rounds {
        elapsed: rounds + drops,
        failures,
    }
}

/// What is wrong with `values`, the ints a round's container held, if anything: each of `units`
/// must be there exactly once, and nothing else (a lost unit, or one written twice over another,
/// leaves one missing).
fn each_unit_once(
    values: impl IntoIterator<Item = Option<i64>>,
    units: Range<usize>,
) -> Option<String> {
    let mut seen = vec![false; units.len()];
    let mut held = 0;
    for value in values {
        held += 1;
        let slot = value
            .and_then(|v| usize::try_from(v).ok())
            .and_then(|v| v.checked_sub(units.start))
            .and_then(|offset| seen.get_mut(offset));
        match slot {
            Some(seen) if !*seen => *seen = true,
            Some(_) => return Some(format!("{value:?} held twice")),
            None => return Some(format!("{value:?} held, outside {units:?}")),
        }
    }
    (held != units.len()).then(|| format!("{held} held after {} units", units.len()))
}

/// The containers [`in_rounds`] shares: lists and dicts.
trait Container: PyTypeInfo {
    fn empty(py: Python<'_>) -> Bound<'_, Self>;
}

impl Container for PyList {
    fn empty(py: Python<'_>) -> Bound<'_, Self> {
        PyList::empty(py)
    }
}

impl Container for PyDict {
    fn empty(py: Python<'_>) -> Bound<'_, Self> {
        PyDict::new(py)
    }
}

fn list_append_shared(params: &Params) -> Outcome {
    let total = params.total(SHARED_APPENDS_TOTAL);
    let rounds = in_rounds::<PyList>(
        params,
        total,
        |py, list, first, step, count| {
            for i in 0..count {
                list.append(PyInt::new(py, (first + i * step) as i64));
                checkpoint(py, i);
            }
        },
        |list, appended| {
            let items = list.to_vec();
            each_unit_once(items.iter().map(|item| item.to_i64().ok()), appended)
                .map(|wrong| format!("the shared list: {wrong}"))
        },
    );
    let mut outcome = Outcome::timed(rounds.elapsed, total);
    for failure in rounds.failures {
        outcome.fail(failure);
    }
    outcome
}

pub(crate) const LIST_APPEND_SHARED: Workload = Workload {
    name: "list-append-shared",
    unit: "append",
    description:
        "appends to one list shared by all (a fresh one every 250,000 appends, the full one \
         checked untimed and dropped timed); each append there once",
    shows: "reliability",
    run: list_append_shared,
};

const DICT_OPS_TOTAL: usize = 27_000_000;
const KEYS: usize = 1_000;

fn keys(py: Python<'_>) -> Vec<Bound<'_, PyStr>> {
    (0..KEYS)
        .map(|k| PyStr::new(py, &format!("key-{k}")))
        .collect()
}

fn dict_private(params: &Params) -> Outcome {
    let total = params.total(DICT_OPS_TOTAL);
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let dict = PyDict::new(py);
        let keys = keys(py);
        let mut sum = 0_i64;
        for i in 0..params.share(total, t) {
            let key = &keys[i % KEYS];
            dict.set_item(key, PyInt::new(py, (i % KEYS) as i64))
                .expect("hashable");
            sum += dict
                .get_item(key)
                .and_then(|v| v.to_i64())
                .expect("just set");
            checkpoint(py, i);
        }
        (sum, dict.len())
    });
    let mut outcome = Outcome::timed(elapsed, total);
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
    unit: "set and get",
    description: "sets and gets keys of its own dict",
    shows: "P3",
    run: dict_private,
};

const SHARED_READS_TOTAL: usize = 72_000_000;

fn dict_shared_read(params: &Params) -> Outcome {
    let total = params.total(SHARED_READS_TOTAL);
    let (dict, key_handles): (Shared<PyDict>, Vec<Shared<PyStr>>) = Python::attach(|py| {
        let dict = PyDict::new(py);
        let keys = keys(py);
        for (k, key) in keys.iter().enumerate() {
            // Ordinary mortal values (floats), owned by the thread that made them.
            dict.set_item(key, PyFloat::new(py, k as f64))
                .expect("hashable");
        }
        (dict.unbind(), keys.into_iter().map(Bound::unbind).collect())
    });
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let dict = dict.bind(py);
        let keys: Vec<Bound<'_, PyStr>> = key_handles.iter().map(|k| k.bind(py)).collect();
        let mut sum = 0.0;
        for i in 0..params.share(total, t) {
            // The value is read the way an interpreter's evaluation stack would hold it: borrowed
            // under a read guard, not counted (see docs/objects.md, P9).
            let guard = ReadGuard::new(py);
            sum += dict
                .get_item_borrowed(&keys[i % KEYS], &guard)
                .and_then(|v| v.to_f64())
                .expect("present");
            checkpoint(py, i);
        }
        sum
    });
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect_per_thread(sums, |t| {
        (0..params.share(total, t))
            .map(|i| (i % KEYS) as f64)
            .sum::<f64>()
    });
    outcome
}

pub(crate) const DICT_SHARED_READ: Workload = Workload {
    name: "dict-shared-read",
    unit: "lookup",
    description: "looks keys up in one shared dict whose values are ordinary (mortal) objects",
    shows: "P3b, P9",
    run: dict_shared_read,
};

const SHARED_INSERTS_TOTAL: usize = 13_500_000;

fn dict_shared_write(params: &Params) -> Outcome {
    let total = params.total(SHARED_INSERTS_TOTAL);
    let rounds = in_rounds::<PyDict>(
        params,
        total,
        |py, dict, first, step, count| {
            for i in 0..count {
                let key = (first + i * step) as i64;
                dict.set_item(&PyInt::new(py, key), PyInt::new(py, key + 1))
                    .expect("hashable");
                checkpoint(py, i);
            }
        },
        |dict, inserted| {
            // Each key once, and each with its own value (a value is the key plus one).
            let items = dict.items();
            let keys = items.iter().map(|(key, value)| {
                let key = key.to_i64().ok()?;
                (value.to_i64().ok()? == key + 1).then_some(key)
            });
            each_unit_once(keys, inserted).map(|wrong| format!("the shared dict: {wrong}"))
        },
    );
    let mut outcome = Outcome::timed(rounds.elapsed, total);
    for failure in rounds.failures {
        outcome.fail(failure);
    }
    outcome
}

pub(crate) const DICT_SHARED_WRITE: Workload = Workload {
    name: "dict-shared-write",
    unit: "insert",
    description: "inserts distinct keys into one shared dict (a fresh one every 250,000 inserts, \
                  the full one checked untimed and dropped timed); each key there once, with its \
                  value",
    shows: "reliability",
    run: dict_shared_write,
};

const INSTANCES_TOTAL: usize = 7_400_000;

/// Each thread keeps up to this many of its instances alive at once, then drops them all and
/// starts again: enough that the objects, not the process, make up the peak memory, so that the
/// builds' header sizes show in it (P7).
const INSTANCES_HELD: usize = 100_000;

fn object_create(params: &Params) -> Outcome {
    let total = params.total(INSTANCES_TOTAL);
    let class: Shared<_> = Python::attach(|py| PyClass::new(py, "Point").expect("a name").unbind());
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let class = class.bind(py);
        let (x, y) = (PyStr::intern(py, "x"), PyStr::intern(py, "y"));
        let share = params.share(total, t);
        let mut held = Vec::with_capacity(share.min(INSTANCES_HELD));
        let mut sum = 0;
        for i in 0..share {
            if held.len() == INSTANCES_HELD {
                held.clear();
            }
            let point = class.instantiate();
            point
                .set_attr(&x, PyInt::new(py, (i % 100) as i64))
                .expect("attributes");
            point.set_attr(&y, PyInt::new(py, 1)).expect("attributes");
            sum += point
                .get_attr(&x)
                .and_then(|v| v.to_i64())
                .expect("just set");
            held.push(point);
            checkpoint(py, i);
        }
        drop(held);
        sum
    });
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect_per_thread(sums, |t| {
        (0..params.share(total, t))
            .map(|i| (i % 100) as i64)
            .sum::<i64>()
    });
    outcome
}

pub(crate) const OBJECT_CREATE: Workload = Workload {
    name: "object-create",
    unit: "instance",
    description: "creates instances of a class with two attributes, holding up to 100,000 at a time, and drops them",
    shows: "P3, P7",
    run: object_create,
};

const INTERNS_TOTAL: usize = 56_000_000;
const POOL: usize = 500;

/// Each thread interns texts drawn from one pool, every lookup through the shared interning
/// table (not the thread's own cache, which would read nothing shared); the check: each text
/// gave one object, the same on every thread and the same `PyStr::intern` gives.
fn string_intern(params: &Params) -> Outcome {
    let total = params.total(INTERNS_TOTAL);
    let pool: Vec<String> = (0..POOL).map(|i| format!("identifier_{i}")).collect();
    let (elapsed, per_thread) = run_threads(params.threads, |t, py| {
        let first: Vec<Bound<'_, PyStr>> = pool
            .iter()
            .map(|text| PyStr::intern_in_shared_table(py, text))
            .collect();
        // Lookups that gave the text's first object: all of them, and so as many as the
        // thread's share (a count a skipped lookup would not reach).
        let mut matched = 0;
        for i in 0..params.share(total, t) {
            let j = (i * 7 + t) % POOL;
            if PyStr::intern_in_shared_table(py, &pool[j]).is(&first[j]) {
                matched += 1;
            }
            checkpoint(py, i);
        }
        let first: Vec<Shared<PyStr>> = first.into_iter().map(Bound::unbind).collect();
        (matched, first)
    });
    let mut outcome = Outcome::timed(elapsed, total);
    for (t, (matched, _)) in per_thread.iter().enumerate() {
        let share = params.share(total, t);
        outcome.expect(*matched == share, || {
            format!("thread {t}: {matched} of {share} lookups gave the text's first object")
        });
    }
    Python::attach(|py| {
        for (j, text) in pool.iter().enumerate() {
            let unique = PyStr::intern(py, text);
            let threads_agree = per_thread
                .iter()
                .all(|(_, first)| first[j].bind(py).is(&unique));
            outcome.expect(threads_agree, || {
                format!("threads interned '{text}' as different objects")
            });
        }
    });
    outcome
}

pub(crate) const STRING_INTERN: Workload = Workload {
    name: "string-intern",
    unit: "interning",
    description: "interns strings drawn from a shared pool, through the shared interning table",
    shows: "P3b",
    run: string_intern,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_containers_start_over_each_round_and_every_round_is_checked() {
        let _turn = crate::tests::one_at_a_time();
        for (workload, total) in [
            (&LIST_APPEND_SHARED, SHARED_APPENDS_TOTAL),
            (&DICT_SHARED_WRITE, SHARED_INSERTS_TOTAL),
        ] {
            // Two and a half rounds.
            let params = Params {
                threads: 3,
                scale: 2.5 * SHARED_ROUND as f64 / total as f64,
            };
            let outcome = workload.run(&params);
            assert_eq!(outcome.check, Ok(()), "{}", workload.name);
            assert_eq!(outcome.ops as usize, params.total(total));
        }
    }

    #[test]
    fn a_round_holds_each_of_its_units_once_and_nothing_else() {
        let some = |values: &[i64]| values.iter().map(|&v| Some(v)).collect::<Vec<_>>();
        assert_eq!(each_unit_once(some(&[12, 10, 11]), 10..13), None);
        assert_eq!(each_unit_once(Vec::new(), 10..10), None);
        let wrong = |values: Vec<Option<i64>>| each_unit_once(values, 10..13).unwrap_or_default();
        assert!(wrong(some(&[10, 11])).contains("2 held after 3"));
        assert!(wrong(some(&[10, 11, 11])).contains("held twice"));
        assert!(wrong(some(&[10, 11, 12, 13])).contains("outside"));
        assert!(wrong(some(&[9, 10, 11])).contains("outside"));
        assert!(wrong(some(&[-1])).contains("outside"));
        assert!(wrong(vec![Some(10), None, Some(12)]).contains("outside"));
    }
}
