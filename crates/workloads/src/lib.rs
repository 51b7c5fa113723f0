//! The workloads `cargo xtask bench` runs: one source, compiled unchanged for every build
//! variant, each splitting a fixed total amount of work over N threads (strong scaling) and
//! verifying its own result on every run.
//!
//! Every workload sets up its objects attached, runs its threads (timed from the earliest
//! worker's start to the last join; the main thread stays detached so that the GIL build can run
//! them), then checks its result and that the live-object counts are back where they started. A
//! workload reports `ok` or a sentence saying what it found; `counter-race` reports the updates it
//! lost instead of failing, since losing them is what it demonstrates. It also reports how many
//! operations it did (one countdown step, one append, one lookup: the same unit as its Python
//! twin in `benches/python/workloads.py`), so that reports can give the time per operation.
//!
//! Sizes: at scale 1, a 1-thread run of the fastest build was sized to take 0.5 s or more on the
//! project's 2-core machine, long against that machine's noise (on a fast day the lock-bound
//! cells run shorter, and the report marks cells under half a second); containers that would
//! grow with the size start over instead (a fresh private list every 10,000 appends, shared
//! containers every 250,000 units, at most 100,000 instances held per thread), so that runs
//! measure the operations rather than the kernel handing out fresh pages.
//!
//! The `ftrt-runner` binary runs one workload (after an in-process warm-up pass,
//! [`Workload::measure`]) and prints a JSON line; `cargo xtask bench` runs it for every build,
//! workload, thread count and repeat.

use std::time::{Duration, Instant};

use ftrt_gil::Python;
use ftrt_object::stats::LiveObjects;
use ftrt_object::{collect, Kind, PyInt, PyNone};

mod containers;
mod counters;
mod cpu;
mod cycles;
mod gate;
pub use cpu::child_countdown;
use gate::Gate;
mod io;
mod replacing;
mod sharing;

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// From the earliest thread's start to the last join (process start-up included for
    /// `countdown-processes`).
    pub elapsed: Duration,
    /// The operations done, all threads together (the workload's unit: see its description).
    pub ops: u64,
    /// `Ok` or what the verification found.
    pub check: Result<(), String>,
    /// Extra measurements (lost updates, latencies), by name.
    pub metrics: Vec<(&'static str, f64)>,
}

impl Outcome {
    fn timed(elapsed: Duration, ops: usize) -> Self {
        Outcome {
            elapsed,
            ops: ops as u64,
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
    /// `total` units of work scaled (at least one). The total does not depend on the thread
    /// count (strong scaling): with fewer units than threads, some threads get none.
    fn total(&self, total: usize) -> usize {
        ((total as f64 * self.scale) as usize).max(1)
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
    /// What one operation is (reports give the time per operation; the Python twin counts the
    /// same unit).
    pub unit: &'static str,
    run: fn(&Params) -> Outcome,
}

/// What share of the measured run's size [`Workload::measure`] runs first, untimed: enough to
/// touch all the memory a run uses (every container starts over well within a tenth of the
/// size) and to warm the caches, for a tenth more time.
pub const WARM_UP_FRACTION: f64 = 0.1;

impl Workload {
    /// Runs the workload once, then checks that every object it made was freed.
    pub fn run(&self, params: &Params) -> Outcome {
        let before = LiveCensus::baseline();
        let mut outcome = (self.run)(params);
        let leaked = LiveCensus::settled().leaks_since(&before);
        if !leaked.is_empty() {
            outcome.fail(format!(
                "live objects did not return to the baseline: {}",
                leaked.join(", ")
            ));
        }
        outcome
    }

    /// A measurement: an untimed warm-up pass in this process at `warm_up` times the size
    /// (same thread count; none if `warm_up` is 0), then the measured run. The warm-up pays the
    /// first-touch costs (fresh pages from the kernel, thread registries, lazily built tables)
    /// that would otherwise land on whichever measured run is unlucky. A failed warm-up check
    /// fails the measurement.
    pub fn measure(&self, params: &Params, warm_up: f64) -> Outcome {
        self.measure_after_warm_up(params, warm_up, || {})
    }

    /// [`measure`](Self::measure), calling `between` after the warm-up pass and before the
    /// measured run (the runner's start gate: processes that warm up apart start their clocks
    /// together).
    pub fn measure_after_warm_up(
        &self,
        params: &Params,
        warm_up: f64,
        between: impl FnOnce(),
    ) -> Outcome {
        let warmed = (warm_up > 0.0).then(|| {
            self.run(&Params {
                scale: params.scale * warm_up,
                ..*params
            })
        });
        between();
        let mut outcome = self.run(params);
        if let Some(Err(what)) = warmed.map(|w| w.check) {
            outcome.fail(format!("in the warm-up pass: {what}"));
        }
        outcome
    }
}

/// Live objects per kind, and how many strings are interned.
struct LiveCensus {
    live: LiveObjects,
    interned: usize,
}

impl LiveCensus {
    fn baseline() -> Self {
        Python::attach(|py| {
            // The immortal singletons exist from the first use on; make them before measuring.
            drop((PyNone::get(py), PyInt::new(py, 0)));
            collect(py);
            Self::now()
        })
    }

    fn settled() -> Self {
        Python::attach(|py| {
            collect(py);
            Self::now()
        })
    }

    fn now() -> Self {
        Self {
            live: LiveObjects::now(),
            interned: ftrt_object::interned_count(),
        }
    }

    /// Each kind whose live count is not back at `before`'s. Objects that are immortal by design
    /// stay: strings interned meanwhile (the interning table keeps them for good), and classes
    /// (every class is immortal). An ordinary string left alive is a leak like any other object.
    fn leaks_since(&self, before: &Self) -> Vec<String> {
        let newly_interned = self.interned as isize - before.interned as isize;
        before
            .live
            .0
            .iter()
            .zip(&self.live.0)
            .filter_map(|(&(kind, was), &(_, is))| {
                let kept = match kind {
                    Kind::Class => return None,
                    Kind::Str => newly_interned,
                    _ => 0,
                };
                (is - was != kept).then(|| {
                    if kept == 0 {
                        format!("{kind:?} {was} -> {is}")
                    } else {
                        format!("{kind:?} {was} -> {is} ({kept} newly interned)")
                    }
                })
            })
            .collect()
    }
}

/// The catalogue, in the mission's order.
pub fn catalogue() -> &'static [Workload] {
    &CATALOGUE
}

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    CATALOGUE.iter().find(|w| w.name == name)
}

static CATALOGUE: [Workload; 22] = [
    cpu::COUNTDOWN,
    cpu::COUNTDOWN_PROCESSES,
    io::IO_SLEEP,
    cpu::NATIVE_RELEASE,
    counters::COUNTER_RACE,
    counters::COUNTER_LOCKED,
    counters::SHARED_LOCK,
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
    sharing::SHARED_ATTRIBUTE_KEEP,
    sharing::IMMORTAL_READ,
    cycles::CYCLE_CREATE,
    replacing::LIST_REPLACE_SHARED,
    io::IO_LATENCY_UNDER_LOAD,
];

/// The build variant compiled in: `gil`, `nogil` or `nogil-atomic-rc`, as `ftrt-gil` decided it.
pub use ftrt_gil::BUILD;

/// Runs `work(t, py)` on `threads` threads, each attached, all released at once; returns the
/// time from the earliest thread's start to the last join, and their results. The calling
/// thread must not be attached (under the GIL it would keep the workers out).
fn run_threads<T: Send>(
    threads: usize,
    work: impl Fn(usize, Python<'_>) -> T + Sync,
) -> (Duration, Vec<T>) {
    run_threads_observed(threads, work, || {})
}

/// [`run_threads`], calling `after_release` on the calling thread once it passes the barrier
/// (tests use it to delay that thread, as busy cores do).
fn run_threads_observed<T: Send>(
    threads: usize,
    work: impl Fn(usize, Python<'_>) -> T + Sync,
    after_release: impl FnOnce(),
) -> (Duration, Vec<T>) {
    assert!(!ftrt_gil::is_attached(), "run_threads is called detached");
    assert!(threads >= 1, "at least one thread");
    // A gate, not a barrier: should a thread fail to start (the spawn panics) or a worker
    // panic, the others are released, and the panic ends the run instead of a hang.
    let ready = Gate::new(threads + 1);
    std::thread::scope(|s| {
        let _break = ready.break_on_unwind();
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (work, ready) = (&work, &ready);
                s.spawn(move || {
                    let _break = ready.break_on_unwind();
                    ready.wait();
                    // Each worker reads the clock as it starts: on busy cores the calling thread
                    // may wake from the barrier milliseconds after the workers began.
                    let started = Instant::now();
                    (started, Python::attach(|py| work(t, py)))
                })
            })
            .collect();
        ready.wait();
        after_release();
        let joined: Vec<(Instant, T)> = handles
            .into_iter()
            .map(|h| h.join().expect("a workload thread panicked"))
            .collect();
        let finished = Instant::now();
        let first_start = joined
            .iter()
            .map(|(started, _)| *started)
            .min()
            .expect("at least one thread");
        (
            finished.duration_since(first_start),
            joined.into_iter().map(|(_, result)| result).collect(),
        )
    })
}

/// How many loop iterations between eval-loop checkpoints (`Python::check`), as an interpreter
/// would check between bytecodes.
const CHECK_EVERY: usize = 16;

/// The `q` quantile of `durations` (nearest rank: the smallest value with at least a `q`
/// share of them at or below it); zero when there are none. The one definition every workload's
/// percentiles use (the Python twins' `percentile_ms` too).
fn percentile(durations: &[std::time::Duration], q: f64) -> std::time::Duration {
    let mut sorted = durations.to_vec();
    sorted.sort_unstable();
    match sorted.len() {
        0 => std::time::Duration::ZERO,
        n => sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1],
    }
}

/// The eval loop's checkpoint at iteration `i`: every [`CHECK_EVERY`]th iteration checks.
/// Answers whether this one did.
#[inline]
fn checkpoint(py: Python<'_>, i: usize) -> bool {
    let due = i % CHECK_EVERY == 0;
    if due {
        py.check();
    }
    due
}

/// How many of a loop's first `times` iterations [`checkpoint`] checks at.
fn checkpoints_in(times: usize) -> usize {
    times.div_ceil(CHECK_EVERY)
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_take_the_nearest_rank() {
        use std::time::Duration;
        let pauses: Vec<_> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile(&pauses, 0.5), Duration::from_millis(50));
        assert_eq!(percentile(&pauses, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&pauses, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&pauses, 0.0), Duration::from_millis(1));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    use std::sync::Mutex;

    use super::*;
    use ftrt_object::PyStr;

    /// Live-object counts are process-wide: tests that check them take turns.
    static CENSUS: Mutex<()> = Mutex::new(());

    pub(crate) fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
        CENSUS.lock().unwrap_or_else(|e| e.into_inner())
    }

    #[test]
    fn the_clock_covers_work_that_ran_before_the_main_thread_woke() {
        let work = Duration::from_millis(50);
        // The main thread wakes late from the barrier (as on busy cores): the workers have
        // finished their work by the time it looks at the clock.
        let (elapsed, _) = run_threads_observed(
            2,
            |_, py| py.allow_threads(|| std::thread::sleep(work)),
            || std::thread::sleep(4 * work),
        );
        assert!(
            elapsed >= work,
            "measured {elapsed:?}, but each worker worked {work:?}"
        );
    }

    fn test_workload(run: fn(&Params) -> Outcome) -> Workload {
        Workload {
            name: "test",
            description: "a test of the framework",
            shows: "the leak check",
            unit: "run",
            run,
        }
    }

    fn leaks_an_ordinary_string(_: &Params) -> Outcome {
        Python::attach(|py| std::mem::forget(PyStr::new(py, "a leaked ordinary string")));
        Outcome::timed(Duration::ZERO, 1)
    }

    #[test]
    fn a_leaked_ordinary_string_fails_the_check() {
        let _turn = one_at_a_time();
        let outcome = test_workload(leaks_an_ordinary_string).run(&Params {
            threads: 1,
            scale: 1.0,
        });
        let check = outcome.check.expect_err("a leaked string is a leak");
        assert!(check.contains("Str"), "{check}");
    }

    fn interns_a_new_string(_: &Params) -> Outcome {
        static FRESH: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = FRESH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Python::attach(|py| drop(PyStr::intern(py, &format!("interned by a test, {n}"))));
        Outcome::timed(Duration::ZERO, 1)
    }

    #[test]
    fn interning_a_new_string_is_not_a_leak() {
        let _turn = one_at_a_time();
        let outcome = test_workload(interns_a_new_string).run(&Params {
            threads: 1,
            scale: 1.0,
        });
        assert_eq!(outcome.check, Ok(()));
    }

    fn fails_when_small(params: &Params) -> Outcome {
        let mut outcome = Outcome::timed(Duration::ZERO, 1);
        if params.scale < 1.0 {
            outcome.fail("failed at a small size");
        }
        outcome
    }

    #[test]
    fn a_failed_warm_up_fails_the_measurement() {
        let _turn = one_at_a_time();
        let params = Params {
            threads: 1,
            scale: 1.0,
        };
        let outcome = test_workload(fails_when_small).measure(&params, 0.5);
        let check = outcome.check.expect_err("the warm-up failed");
        assert!(check.contains("warm-up"), "{check}");
        assert_eq!(
            test_workload(fails_when_small).measure(&params, 0.0).check,
            Ok(())
        );
    }

    #[test]
    fn work_does_not_grow_with_the_thread_count() {
        let params = Params {
            threads: 8,
            scale: 1.0,
        };
        assert_eq!(params.total(3), 3);
        let shares: Vec<usize> = (0..8).map(|t| params.share(3, t)).collect();
        assert_eq!(shares.iter().sum::<usize>(), 3, "{shares:?}");
    }

    #[test]
    fn every_workload_passes_its_own_checks_at_1_to_3_threads() {
        let _turn = one_at_a_time();
        // countdown-processes starts this executable again as its children: it is tested
        // through the runner binary (tests/runner.rs).
        for workload in catalogue()
            .iter()
            .filter(|w| w.name != "countdown-processes")
        {
            for threads in 1..=3 {
                let outcome = workload.measure(
                    &Params {
                        threads,
                        scale: 0.002,
                    },
                    WARM_UP_FRACTION,
                );
                assert_eq!(
                    outcome.check,
                    Ok(()),
                    "{} at {threads} threads",
                    workload.name
                );
                assert!(outcome.ops >= 1, "{} counts its operations", workload.name);
            }
        }
    }
}

// The README's examples run as doctests, so the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
