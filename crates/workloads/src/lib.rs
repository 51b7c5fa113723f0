//! The workloads `cargo xtask bench` runs: one source, compiled unchanged for every build
//! variant, each splitting a fixed total amount of work over N threads (strong scaling) and
//! verifying its own result on every run.
//!
//! Every workload sets up its objects attached, runs its threads (timed from their start to
//! the last join; the main thread stays detached so that the GIL build can run them), then checks
//! its result and that the live-object counts are back where they started. A workload reports
//! `ok` or a sentence saying what it found; `counter-race` reports the updates it lost instead of
//! failing, since losing them is what it demonstrates.
//!
//! The `ftrt-runner` binary runs one workload once and prints a JSON line; `cargo xtask bench`
//! runs it for every build, workload, thread count and repeat.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use ftrt_gil::Python;
use ftrt_object::stats::LiveObjects;
use ftrt_object::{collect, Kind, Obj};

mod containers;
mod counters;
mod cpu;
pub use cpu::child_countdown;
mod io;
mod sharing;

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the threads' start to the last join (process start-up included for
    /// `countdown-processes`).
    pub elapsed: Duration,
    /// `Ok` or what the verification found.
    pub check: Result<(), String>,
    /// Extra measurements (lost updates, latencies), by name.
    pub metrics: Vec<(&'static str, f64)>,
}

impl Outcome {
    fn timed(elapsed: Duration) -> Self {
        Outcome {
            elapsed,
            check: Ok(()),
            metrics: Vec::new(),
        }
    }

    /// Records a failed check (the first one found wins).
    fn fail(&mut self, what: impl Into<String>) {
        if self.check.is_ok() {
            self.check = Err(what.into());
        }
    }

    fn expect(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.fail(what());
        }
    }

    /// Checks each thread's result against what thread `t` should have computed.
    fn expect_per_thread<T: PartialEq + std::fmt::Debug>(
        &mut self,
        results: impl IntoIterator<Item = T>,
        expected: impl Fn(usize) -> T,
    ) {
        for (t, got) in results.into_iter().enumerate() {
            let want = expected(t);
            self.expect(got == want, || {
                format!("thread {t} computed {got:?}, expected {want:?}")
            });
        }
    }
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Threads (or processes) to split the work over.
    pub threads: usize,
    /// Multiplies every workload's default size: 1.0 for measurements, smaller for smoke runs.
    pub scale: f64,
}

impl Params {
    /// `total` units of work scaled, at least one per thread.
    fn total(&self, total: usize) -> usize {
        ((total as f64 * self.scale) as usize).max(self.threads)
    }

    /// The share of `total` for thread `t` (the remainder spread over the first threads).
    fn share(&self, total: usize, t: usize) -> usize {
        total / self.threads + usize::from(t < total % self.threads)
    }
}

/// One workload of the catalogue.
pub struct Workload {
    /// The name (part of the interface: reports and `--workloads` use it).
    pub name: &'static str,
    /// What each thread does.
    pub description: &'static str,
    /// Which behaviours or targets of the mission it shows.
    pub shows: &'static str,
    run: fn(&Params) -> Outcome,
}

impl Workload {
    /// Runs the workload once, then checks that every object it made was freed.
    pub fn run(&self, params: &Params) -> Outcome {
        let before = baseline();
        let mut outcome = (self.run)(params);
        let after = settled();
        let leaked: Vec<String> = before
            .0
            .iter()
            .zip(&after.0)
            .filter(|((kind, b), (_, a))| a != b && !matches!(kind, Kind::Str | Kind::Class))
            .map(|((kind, b), (_, a))| format!("{kind:?} {b} -> {a}"))
            .collect();
        if !leaked.is_empty() {
            outcome.fail(format!(
                "live objects did not return to the baseline: {}",
                leaked.join(", ")
            ));
        }
        outcome
    }
}

fn baseline() -> LiveObjects {
    Python::attach(|py| {
        // The immortal singletons exist from the first use on; make them before measuring.
        drop((Obj::none(py), Obj::int(py, 0)));
        collect(py);
        LiveObjects::now()
    })
}

fn settled() -> LiveObjects {
    Python::attach(|py| {
        collect(py);
        LiveObjects::now()
    })
}

/// The catalogue, in the mission's order.
pub fn catalogue() -> &'static [Workload] {
    &CATALOGUE
}

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    CATALOGUE.iter().find(|w| w.name == name)
}

static CATALOGUE: [Workload; 18] = [
    cpu::COUNTDOWN,
    cpu::COUNTDOWN_PROCESSES,
    io::IO_SLEEP,
    cpu::NATIVE_RELEASE,
    counters::COUNTER_RACE,
    counters::COUNTER_LOCKED,
    containers::LIST_APPEND_PRIVATE,
    containers::LIST_APPEND_SHARED,
    containers::DICT_PRIVATE,
    containers::DICT_SHARED_READ,
    containers::DICT_SHARED_WRITE,
    containers::OBJECT_CREATE,
    cpu::FLOAT_MULT,
    containers::STRING_INTERN,
    sharing::SHARED_REFCOUNT,
    sharing::SHARED_ATTRIBUTE_READ,
    sharing::IMMORTAL_READ,
    io::IO_LATENCY_UNDER_LOAD,
];

/// The build variant compiled in: `gil`, `nogil` or `nogil-atomic-rc`.
pub const BUILD: &str = if cfg!(feature = "gil") {
    "gil"
} else if cfg!(feature = "atomic-rc") {
    "nogil-atomic-rc"
} else {
    "nogil"
};

/// Runs `work(t, py)` on `threads` threads, each attached, all released at once; returns the
/// time from their release to the last join, and their results. The calling thread must not be
/// attached (under the GIL it would keep the workers out).
fn run_threads<T: Send>(
    threads: usize,
    work: impl Fn(usize, Python<'_>) -> T + Sync,
) -> (Duration, Vec<T>) {
    assert!(!ftrt_gil::is_attached(), "run_threads is called detached");
    let ready = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (work, ready) = (&work, &ready);
                s.spawn(move || {
                    ready.wait();
                    Python::attach(|py| work(t, py))
                })
            })
            .collect();
        ready.wait();
        let start = Instant::now();
        let results: Vec<T> = handles
            .into_iter()
            .map(|h| h.join().expect("a workload thread panicked"))
            .collect();
        (start.elapsed(), results)
    })
}

/// How many loop iterations between eval-loop checkpoints (`Python::check`), as an interpreter
/// would check between bytecodes.
const CHECK_EVERY: usize = 16;

#[inline]
fn checkpoint(py: Python<'_>, i: usize) {
    if i % CHECK_EVERY == 0 {
        py.check();
    }
}
