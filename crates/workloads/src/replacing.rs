//! Replacing the items of one shared list: the memory that deferred reclamation holds (P13).
//!
//! In the free-threaded builds an item replaced in a shared container cannot be freed at once,
//! since another thread may be reading it without a lock; it is retired, and freed once every
//! thread has passed a quiescent state. What waits meanwhile is memory the `gil` build does not
//! hold (it frees the replaced item on the spot). A runtime that retires faster than it frees
//! grows without bound: CPython's free-threaded build once held 6.7 GB where its default build
//! peaked at 135 MB on a replace-heavy program (CPython issue 132519). The bench compares the
//! peak memory of this workload between builds.

use ftrt_gil::Python;
use ftrt_object::{Bound, PyFloat, PyList, Shared};

use crate::{checkpoint, run_threads, Outcome, Params, Workload};

const REPLACEMENTS_TOTAL: usize = 60_000_000;

/// The shared list's length, or the thread count where that is larger, so that every thread
/// owns a slot. Each thread owns a run of adjacent slots (threads writing interleaved slots
/// would share cache lines), so each slot's last value is known and the check is exact.
const SLOTS: usize = 1024;

fn slots(n: usize) -> usize {
    SLOTS.max(n)
}

/// What slot `slot` holds before the run: negative, unlike every value a thread writes.
fn initial_value(slot: usize) -> f64 {
    -1.0 - slot as f64
}

/// The thread of `n` that owns `slot`.
fn owner(slot: usize, n: usize) -> usize {
    slot * n / slots(n)
}

/// The slots thread `t` of `n` owns ([`owner`] says `t`), in the order it writes them.
fn owned_slots(t: usize, n: usize) -> std::ops::Range<usize> {
    (t * slots(n)).div_ceil(n)..((t + 1) * slots(n)).div_ceil(n)
}

/// The value thread `t` of `n` writes at its `k`th replacement: distinct per thread and step,
/// exact in an `f64` far beyond any run's size.
fn written_value(t: usize, n: usize, k: usize) -> f64 {
    (k * n + t) as f64
}

/// What slot `slot` holds after the run, when its owner made `made` replacements.
fn final_value(slot: usize, n: usize, made: usize) -> f64 {
    let t = owner(slot, n);
    // The slot's place among its owner's, and how many slots its owner cycles through.
    let owned = owned_slots(t, n);
    let place = slot - owned.start;
    let owned = owned.len();
    if made <= place {
        return initial_value(slot);
    }
    let last = place + owned * ((made - 1 - place) / owned);
    written_value(t, n, last)
}

fn list_replace_shared(params: &Params) -> Outcome {
    let total = params.total(REPLACEMENTS_TOTAL);
    let n = params.threads;
    // Made on this thread and published (`unbind`): a shared list, whose replaced items are
    // retired in the free-threaded builds.
    let list: Shared<PyList> = Python::attach(|py| {
        PyList::new(
            py,
            (0..slots(n)).map(|slot| PyFloat::new(py, initial_value(slot))),
        )
        .unbind()
    });
    let (elapsed, _) = run_threads(n, |t, py| {
        let list: Bound<'_, PyList> = list.bind(py);
        for (k, slot) in owned_slots(t, n)
            .cycle()
            .take(params.share(total, t))
            .enumerate()
        {
            // A fresh float each time: the item it replaces dies (at once under the GIL,
            // retired in the free-threaded builds).
            list.set_item(slot as i64, PyFloat::new(py, written_value(t, n, k)))
                .expect("in range");
            checkpoint(py, k);
        }
    });
    let mut outcome = Outcome::timed(elapsed, total);
    // Each thread its own share: the slots' expected values follow from the shares, so a
    // thread that made fewer replacements, or none, leaves a slot that says so.
    Python::attach(|py| {
        let items = list.bind(py).to_vec();
        outcome.expect(items.len() == slots(n), || {
            format!(
                "the shared list holds {} items, {} expected",
                items.len(),
                slots(n)
            )
        });
        let wrong = items.iter().enumerate().find_map(|(slot, item)| {
            let want = final_value(slot, n, params.share(total, owner(slot, n)));
            let got = item.to_f64().ok();
            (got != Some(want)).then(|| format!("slot {slot} holds {got:?}, expected {want}"))
        });
        if let Some(wrong) = wrong {
            outcome.fail(format!("the shared list: {wrong}"));
        }
    });
    drop(list);
    outcome
}

pub(crate) const LIST_REPLACE_SHARED: Workload = Workload {
    name: "list-replace-shared",
    unit: "replacement",
    description: "replaces its own slots of one shared list with fresh floats (each replaced float retired in the free-threaded builds); each slot ends with its last write",
    shows: "P13",
    run: list_replace_shared,
};

#[cfg(test)]
mod tests {
    use super::*;

    /// The check's expectation, against a plain simulation of the writes.
    #[test]
    fn each_slot_ends_with_its_owners_last_write() {
        for n in [1, 2, 3, 7, 1024, 1500] {
            for made_per_thread in [0, 1, 5, SLOTS / n, SLOTS / n + 1, 3 * SLOTS + 17] {
                let mut simulated: Vec<f64> = (0..slots(n)).map(initial_value).collect();
                for t in 0..n {
                    for (k, slot) in owned_slots(t, n).cycle().take(made_per_thread).enumerate() {
                        simulated[slot] = written_value(t, n, k);
                    }
                }
                for (slot, value) in simulated.iter().enumerate() {
                    assert_eq!(
                        final_value(slot, n, made_per_thread),
                        *value,
                        "slot {slot}, {n} threads, {made_per_thread} replacements each"
                    );
                }
            }
        }
    }

    #[test]
    fn the_threads_own_every_slot_once_each_at_least_one() {
        for n in [1, 2, 3, 7, 16, 1000, 1024, 1500] {
            let mut next = 0;
            for t in 0..n {
                let owned = owned_slots(t, n);
                assert_eq!(owned.start, next, "{n} threads: thread {t}'s first slot");
                assert!(!owned.is_empty(), "{n} threads: thread {t} owns nothing");
                assert!(owned.clone().all(|slot| owner(slot, n) == t));
                next = owned.end;
            }
            assert_eq!(next, slots(n), "{n} threads");
        }
    }
}
