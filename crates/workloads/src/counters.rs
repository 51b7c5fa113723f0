//! `counter = counter + 1` on a module global from every thread: without a lock updates are
//! lost in both builds (S7), with a `threading.Lock` the count is exact (S8). And the lock alone:
//! every thread acquiring and releasing one shared `Lock` with only a count inside, the cost of the
//! lock itself (CPython issue 134761: 9–10× slower in the free-threaded 3.15 than in 3.14).

use std::sync::atomic::{AtomicUsize, Ordering};

use ftrt_gil::threading::Lock;
use ftrt_gil::Python;
use ftrt_object::{Bound, PyInt, PyModule, PyStr, Shared};

use crate::{checkpoint, run_threads, Outcome, Params, Workload};

const RACE_INCREMENTS_TOTAL: usize = 24_000_000;
const LOCKED_INCREMENTS_TOTAL: usize = 12_000_000;
const LOCK_ACQUISITIONS_TOTAL: usize = 21_000_000;

/// A module with `counter = 0`, and the interned name.
fn setup() -> (Shared<PyModule>, Shared<PyStr>) {
    Python::attach(|py| {
        let module = PyModule::new(py, "__main__");
        let name = PyStr::intern(py, "counter");
        module
            .set_attr(&name, PyInt::new(py, 0))
            .expect("a module has attributes");
        (module.unbind(), name.unbind())
    })
}

/// `counter = counter + 1`: a read, then a write, as separate steps (as in Python bytecode),
/// with the eval loop's checkpoint between them on every 16th increment (where the GIL may
/// switch threads, as CPython's may at a call inside the expression). Answers the value read.
fn increment(
    py: Python<'_>,
    module: &Bound<'_, PyModule>,
    name: &Bound<'_, PyStr>,
    i: usize,
) -> i64 {
    let value = module.get_attr(name).expect("counter exists");
    let read = value.to_i64().expect("counter is an int");
    let next = value.add(&PyInt::new(py, 1)).expect("no overflow");
    checkpoint(py, i);
    module
        .set_attr(name, next)
        .expect("a module has attributes");
    read
}

fn final_count(module: &Shared<PyModule>, name: &Shared<PyStr>) -> i64 {
    Python::attach(|py| {
        module
            .bind(py)
            .get_attr(&name.bind(py))
            .and_then(|v| v.to_i64())
            .expect("counter is an int")
    })
}

/// The increments after which a thread must have read one of its own writes back. Alone it
/// reads every one back. Under a GIL, whose only switch point here is the checkpoint between a
/// read and its write, a thread that resumes writes and then reads its own value back before
/// its next checkpoint. Free-threaded, reads take no lock: another thread's write must land in
/// the few instructions between this thread's write and its next read, which it does now and
/// then, not 64 times in a row.
const READ_BACK_AFTER: usize = 64;

fn counter_race(params: &Params) -> Outcome {
    let total = params.total(RACE_INCREMENTS_TOTAL);
    let (module, name) = setup();
    let (elapsed, read_back) = run_threads(params.threads, |t, py| {
        let (module, name) = (module.bind(py), name.bind(py));
        // Reads that found this thread's own previous write: the global it wrote is the one
        // every thread reads. And the increments made, each a read and a write done.
        let (mut read_back, mut wrote, mut made) = (0usize, None, 0usize);
        for i in 0..params.share(total, t) {
            let read = increment(py, &module, &name, i);
            read_back += usize::from(wrote == Some(read));
            wrote = Some(read + 1);
            made += 1;
        }
        (read_back, made)
    });
    let (read_back, made): (Vec<usize>, Vec<usize>) = read_back.into_iter().unzip();
    let counted = final_count(&module, &name);
    let mut outcome = Outcome::timed(elapsed, total);
    let lost = total as i64 - counted;
    // Lost updates are the point, so the count alone cannot tell them from writes that went
    // elsewhere or never happened: each thread says how many increments it made (a loop cut
    // short would otherwise read as lost updates at two threads or more), a thread whose share
    // is [`READ_BACK_AFTER`] increments or more reads one of its own writes back at least once,
    // and one thread alone loses none.
    outcome.expect_per_thread(made, |t| params.share(total, t));
    for (t, &read_back) in read_back.iter().enumerate() {
        let share = params.share(total, t);
        outcome.expect(share < READ_BACK_AFTER || read_back > 0, || {
            format!("thread {t} never read back one of its {share} writes")
        });
    }
    // Each read and each write of the global is one atomic step of the module's dict, and every
    // write stores 1 or more. The last write is one more than what its thread's last read found,
    // which is 1 or more once any write came before it, as that thread's own earlier increment
    // did if it made two or more. So the counter ends at 2 or more, or 1 if the last writer may
    // have made a single increment.
    let lowest = (0..params.threads)
        .map(|t| params.share(total, t))
        .filter(|&share| share > 0)
        .min()
        .map_or(0, |share| share.min(2)) as i64;
    outcome.expect((lowest..=total as i64).contains(&counted), || {
        format!("the counter ended at {counted}, outside {lowest}..={total}")
    });
    outcome.expect(params.threads > 1 || lost == 0, || {
        format!("one thread alone lost {lost} of {total} updates")
    });
    outcome.metrics = vec![
        ("lost_updates", lost as f64),
        ("lost_fraction", lost as f64 / total as f64),
    ];
    outcome
}

pub(crate) const COUNTER_RACE: Workload = Workload {
    name: "counter-race",
    unit: "increment",
    description: "counter = counter + 1 on a shared global, no lock; reports lost updates",
    shows: "S7",
    run: counter_race,
};

fn counter_locked(params: &Params) -> Outcome {
    let total = params.total(LOCKED_INCREMENTS_TOTAL);
    let (module, name) = setup();
    let lock = Lock::new();
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        let (module, name) = (module.bind(py), name.bind(py));
        for i in 0..params.share(total, t) {
            lock.hold(py, || {
                increment(py, &module, &name, i);
            });
        }
    });
    let counted = final_count(&module, &name);
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect(counted == total as i64, || {
        format!("the locked counter ended at {counted}, expected {total}")
    });
    outcome
}

pub(crate) const COUNTER_LOCKED: Workload = Workload {
    name: "counter-locked",
    unit: "locked increment",
    description: "the same increments under a threading Lock; exact",
    shows: "S8",
    run: counter_locked,
};

/// The lock, and a count kept by whoever holds it, on one cache line: the holder has just
/// brought that line to its core by acquiring the lock, so counting inside adds no cache miss.
#[repr(align(64))]
struct CountedLock {
    lock: Lock,
    /// Sections entered, counted only while holding the lock.
    entered: AtomicUsize,
}

fn shared_lock(params: &Params) -> Outcome {
    let total = params.total(LOCK_ACQUISITIONS_TOTAL);
    let shared = CountedLock {
        lock: Lock::new(),
        entered: AtomicUsize::new(0),
    };
    let (elapsed, counts) = run_threads(params.threads, |t, py| {
        let (mut acquired, mut released) = (0, 0);
        for i in 0..params.share(total, t) {
            if shared.lock.acquire(py, None) {
                acquired += 1;
                // All but empty: a load, then a store, a count that is not atomic as a whole.
                // Two holders at once could lose a count, which the check would see: a cheap
                // tripwire for mutual exclusion, if not a proof (an overlap must fall between
                // the load and the store). An atomic increment would hide the overlap; more
                // work inside would measure the work rather than the lock.
                let entered = shared.entered.load(Ordering::Relaxed);
                shared.entered.store(entered + 1, Ordering::Relaxed);
                if shared.lock.release().is_ok() {
                    released += 1;
                }
            }
            checkpoint(py, i);
        }
        (acquired, released)
    });
    let mut outcome = Outcome::timed(elapsed, total);
    let acquisitions: usize = counts.iter().map(|&(acquired, _)| acquired).sum();
    outcome.expect_per_thread(counts, |t| {
        let share = params.share(total, t);
        (share, share)
    });
    let entered = shared.entered.load(Ordering::Relaxed);
    outcome.expect(entered == acquisitions, || {
        format!(
            "{entered} sections counted for {acquisitions} acquisitions: two threads held the lock at once"
        )
    });
    outcome.expect(!shared.lock.locked(), || {
        "the lock is still held after every thread released it".to_owned()
    });
    outcome
}

pub(crate) const SHARED_LOCK: Workload = Workload {
    name: "shared-lock",
    unit: "lock acquired and released",
    description: "acquires and releases one shared threading Lock, with only a count inside",
    shows: "S8, P11",
    run: shared_lock,
};
