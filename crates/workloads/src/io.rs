//! I/O-bound workloads: blocking calls release the GIL, so they overlap even under it (S4), and
//! the GIL's scheduling delays a thread returning from I/O behind CPU-bound threads (S12).

use std::time::{Duration, Instant};

use ftrt_gil::{runtime_gil, Python, Scheduling};
use ftrt_object::PyInt;

use crate::{checkpoint, percentile, run_threads, Outcome, Params, Workload};

const SLEEPS_TOTAL: usize = 300;
const SLEEP: Duration = Duration::from_millis(2);

fn io_sleep(params: &Params) -> Outcome {
    let total = params.total(SLEEPS_TOTAL);
    let (elapsed, _) = run_threads(params.threads, |t, py| {
        for _ in 0..params.share(total, t) {
            py.allow_threads(|| std::thread::sleep(SLEEP));
        }
    });
    let mut outcome = Outcome::timed(elapsed, total);
    // A sleep lasts at least its time, so the run lasts at least its longest share's sleeps
    // (a count of the loop's turns would pass sleeps that returned at once, or were skipped).
    let longest = (0..params.threads)
        .map(|t| params.share(total, t))
        .max()
        .unwrap_or(0);
    let least = SLEEP * longest as u32;
    outcome.expect(elapsed >= least, || {
        format!("the run took {elapsed:?}, less than its longest share's sleeps ({least:?})")
    });
    outcome
}

pub(crate) const IO_SLEEP: Workload = Workload {
    name: "io-sleep",
    unit: "2 ms sleep",
    description: "blocking sleeps inside allow_threads",
    shows: "S4, P5",
    run: io_sleep,
};

const PINGS: usize = 300;
const PING_IO: Duration = Duration::from_millis(1);

/// What one round of pings under load saw.
struct PingRound {
    elapsed: Duration,
    /// How long re-attaching took beyond the I/O itself, one per ping answered.
    delays: Vec<Duration>,
    /// The steps the loading threads took while the pings ran, all together.
    load_steps: usize,
}

/// One thread answers pings (a short blocking call, then re-attach) while the others count down
/// until it is done.
fn ping_under_load(params: &Params, pings: usize) -> PingRound {
    pings_beside_load(params, pings, |py| {
        py.allow_threads(|| std::thread::sleep(PING_IO));
    })
}

/// [`ping_under_load`] with the ping's blocking call given as `ping` (tests make it fail).
fn pings_beside_load(params: &Params, pings: usize, ping: impl Fn(Python<'_>) + Sync) -> PingRound {
    let done = std::sync::atomic::AtomicBool::new(false);
    let (elapsed, mut results) = run_threads(params.threads, |t, py| {
        if t == 0 {
            // The loading threads stop however this thread ends: a panicking ping would
            // otherwise leave them counting for ever, and the join waiting on them.
            let _stop_the_load = SetOnDrop(&done);
            let mut delays = Vec::with_capacity(pings);
            for _ in 0..pings {
                let asked = Instant::now();
                ping(py);
                // Attached again: the ping is answered.
                delays.push(asked.elapsed().saturating_sub(PING_IO));
                py.check();
            }
            (delays, 0)
        } else {
            (Vec::new(), busy_until(py, &done))
        }
    });
    PingRound {
        elapsed,
        delays: std::mem::take(&mut results[0].0),
        load_steps: results.iter().map(|&(_, steps)| steps).sum(),
    }
}

/// Sets its flag when dropped, by a return or an unwind alike.
struct SetOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// CPU-bound work with eval-loop checkpoints until `done`; returns the steps taken.
fn busy_until(py: Python<'_>, done: &std::sync::atomic::AtomicBool) -> usize {
    let one = PyInt::new(py, 1);
    let start = 1_000_000;
    let mut n = PyInt::new(py, start).into_any();
    let mut i = 0;
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        n = n.add(&one).expect("no overflow");
        checkpoint(py, i);
        i += 1;
    }
    // The steps are read from the count, not the loop: each one was computed.
    usize::try_from(n.to_i64().expect("an int") - start).expect("counted up")
}

fn percentile_ms(delays: &[Duration], q: f64) -> f64 {
    percentile(delays, q).as_secs_f64() * 1e3
}

fn io_latency_under_load(params: &Params) -> Outcome {
    let pings = params.total(PINGS).max(10);
    let gil = runtime_gil();
    let previous = gil.scheduling();
    let mut elapsed = Duration::ZERO;
    let (mut metrics, mut rounds) = (Vec::new(), Vec::new());
    for (mode, p50, p99) in [
        (Scheduling::Interval, "p50_ms", "p99_ms"),
        (Scheduling::Fair, "fair_p50_ms", "fair_p99_ms"),
    ] {
        gil.set_scheduling(mode);
        let round = ping_under_load(params, pings);
        elapsed += round.elapsed;
        rounds.push((mode, round.elapsed, round.load_steps));
        metrics.push((p50, percentile_ms(&round.delays, 0.5)));
        metrics.push((p99, percentile_ms(&round.delays, 0.99)));
    }
    gil.set_scheduling(previous);
    let mut outcome = Outcome::timed(elapsed, 2 * pings);
    outcome.metrics = metrics;
    for (mode, round_elapsed, load_steps) in rounds {
        // Each ping blocks for `PING_IO` at least: a round shorter than its pings' blocking
        // calls skipped some (or calls that returned at once; a share skipped among calls that
        // wait for the GIL on their way back may pass).
        let least = PING_IO * pings as u32;
        outcome.expect(round_elapsed >= least, || {
            format!(
                "{pings} pings took {round_elapsed:?}, less than their calls' {least:?} \
                 ({mode:?} scheduling)"
            )
        });
        // A latency measured with no load beside it says nothing about the load.
        outcome.expect(params.threads == 1 || load_steps > 0, || {
            format!("the loading threads took no step while the pings ran ({mode:?} scheduling)")
        });
    }
    outcome
}

pub(crate) const IO_LATENCY_UNDER_LOAD: Workload = Workload {
    name: "io-latency-under-load",
    unit: "ping",
    description: "one thread answers pings while the others count down; reports ping latency",
    shows: "S12, P10",
    run: io_latency_under_load,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_that_panics_stops_the_load_and_fails_the_run() {
        // Its loading threads make and free ints, which other tests count.
        let _turn = crate::tests::one_at_a_time();
        let (finished, outcome) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let params = Params {
                threads: 2,
                scale: 1.0,
            };
            let run = std::panic::catch_unwind(|| {
                pings_beside_load(&params, 10, |_| panic!("the ping's call failed"))
            });
            finished.send(run.is_err()).expect("the test waits");
        });
        // Without the stop on unwind the loading thread counts for ever and the join hangs.
        let panicked = outcome
            .recv_timeout(Duration::from_secs(30))
            .expect("the run ended instead of hanging");
        assert!(panicked, "the ping's panic reached the caller");
    }
}
