//! Reference cycles: each thread builds small cycles and drops them, which only the cycle
//! collector can free. The collector runs on its own (its threshold): in the free-threaded
//! builds each thread finds the cycles among its own local objects itself (local collections,
//! no stop), and stopped-world collections find the shared ones; the run reports both kinds'
//! pauses.

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{gc, Kind, PyClass, PyStr};

use crate::{checkpoint, percentile, run_threads, Outcome, Params, Workload};

const CYCLES_TOTAL: usize = 2_400_000;

fn cycle_create(params: &Params) -> Outcome {
    let total = params.total(CYCLES_TOTAL);
    let (class, name, instances) = Python::attach(|py| {
        gc::collect(py);
        let class = PyClass::new(py, "Node").expect("a name");
        let name = PyStr::intern(py, "other");
        (class.unbind(), name.unbind(), live_objects(Kind::Instance))
    });
    gc::clear_pauses();
    let collections = gc::collections();
    let local_collections = gc::local_collections();
    let collected = gc::collected();
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        let (class, name) = (class.bind(py), name.bind(py));
        for i in 0..params.share(total, t) {
            // a.other = b; b.other = a; both dropped: a cycle of two.
            let (a, b) = (class.instantiate(), class.instantiate());
            a.set_attr(&name, b.clone()).expect("attributes");
            b.set_attr(&name, a).expect("attributes");
            checkpoint(py, i);
        }
    });
    let pauses = gc::pauses();
    let local_pauses = gc::local_pauses();
    let automatic = gc::collections() - collections;
    let local = gc::local_collections() - local_collections;
    let mut outcome = Outcome::timed(elapsed, total);
    // Everything the threads made is garbage now: one collection frees what is left.
    let left = Python::attach(|py| {
        gc::collect(py);
        live_objects(Kind::Instance) - instances
    });
    outcome.expect(left == 0, || {
        format!("{left} instances left alive after a collection")
    });
    // And the collector freed them: nothing is left also when nothing was made.
    let found = gc::collected() - collected;
    outcome.expect(found >= 2 * total, || {
        format!(
            "the collections found {found} objects unreachable, fewer than the {} instances the cycles made",
            2 * total
        )
    });
    // Past a few thresholds' worth of cycles, collections must have run on their own.
    if total >= 10 * gc::THRESHOLD {
        outcome.expect(automatic + local > 0, || {
            "no collection ran during the run".to_string()
        });
    }
    let millis = |pauses: &[std::time::Duration], q: f64| percentile(pauses, q).as_secs_f64() * 1e3;
    outcome.metrics = vec![
        ("gc_collections", automatic as f64),
        ("gc_pause_p50_ms", millis(&pauses, 0.5)),
        ("gc_pause_p99_ms", millis(&pauses, 0.99)),
        ("gc_pause_max_ms", millis(&pauses, 1.0)),
        ("gc_local_collections", local as f64),
        ("gc_local_pause_p99_ms", millis(&local_pauses, 0.99)),
        ("gc_local_pause_max_ms", millis(&local_pauses, 1.0)),
    ];
    outcome
}

pub(crate) const CYCLE_CREATE: Workload = Workload {
    name: "cycle-create",
    unit: "cycle built and dropped",
    description: "builds two instances that point at each other and drops them; the cycle collector frees them",
    shows: "the cycle collector: its cost, its scaling, its pauses",
    run: cycle_create,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn past_ten_thresholds_the_collector_runs_on_its_own_and_the_run_checks_it() {
        let _turn = crate::tests::one_at_a_time();
        // The smallest scale at which the run checks that collections ran during it (the
        // every-workload test's scale is below it).
        let scale = (10 * gc::THRESHOLD) as f64 / CYCLES_TOTAL as f64;
        for threads in 1..=2 {
            let params = Params { threads, scale };
            assert!(params.total(CYCLES_TOTAL) >= 10 * gc::THRESHOLD);
            let outcome = CYCLE_CREATE.measure(&params, 0.0);
            assert_eq!(outcome.check, Ok(()), "at {threads} threads");
            let metric = |name| {
                outcome
                    .metrics
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| *v)
                    .expect("the run reports its collections")
            };
            let ran = metric("gc_collections") + metric("gc_local_collections");
            assert!(
                ran > 0.0,
                "no collection ran during {} cycles",
                params.total(CYCLES_TOTAL)
            );
        }
    }
}
