//! CPU-bound workloads: the GIL serialises them (S1), free-threading runs them in parallel (S2),
//! processes side-step the GIL (S3), and native code that releases the GIL runs in parallel even
//! under it (S5).

use std::process::{Command, Stdio};
use std::time::Instant;

use ftrt_object::{PyFloat, PyInt};

use crate::{checkpoint, run_threads, Outcome, Params, Workload};

const COUNTDOWN_TOTAL: usize = 45_000_000;

/// Counts an int object down to zero (`n -= 1` in a loop); returns the final value.
fn count_down(py: ftrt_gil::Python<'_>, from: usize) -> i64 {
    let one = PyInt::new(py, 1);
    let mut n = PyInt::new(py, from as i64 + 1_000).into_any();
    let floor = PyInt::new(py, 1_000);
    for i in 0..from {
        n = n.sub(&one).expect("no overflow counting down");
        checkpoint(py, i);
    }
    n.sub(&floor)
        .expect("no overflow")
        .to_i64()
        .expect("an int")
}

fn countdown(params: &Params) -> Outcome {
    let total = params.total(COUNTDOWN_TOTAL);
    let (elapsed, finals) = run_threads(params.threads, |t, py| {
        count_down(py, params.share(total, t))
    });
    let mut outcome = Outcome::timed(elapsed, total);
    outcome.expect(finals.iter().all(|&f| f == 0), || {
        format!("a countdown ended at {finals:?}, not 0")
    });
    outcome
}

pub(crate) const COUNTDOWN: Workload = Workload {
    name: "countdown",
    unit: "countdown step",
    description: "counts an int object down to zero (n -= 1 in a loop)",
    shows: "S1, S2, P2-P4",
    run: countdown,
};

/// The same countdown, each share in its own OS process: this binary, run again as a child.
fn countdown_processes(params: &Params) -> Outcome {
    let total = params.total(COUNTDOWN_TOTAL);
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            let mut outcome = Outcome::timed(Default::default(), 0);
            outcome.fail(format!(
                "cannot find the runner binary to start processes: {e}"
            ));
            return outcome;
        }
    };
    let start = Instant::now();
    // Start every process first, then wait for them all: they run at the same time.
    let started: Vec<_> = (0..params.threads)
        .map(|t| {
            Command::new(&exe)
                .args(["--child-countdown", &params.share(total, t).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect();
    let children: Vec<_> = started
        .into_iter()
        .map(|child| child.and_then(|c| c.wait_with_output()))
        .collect();
    let mut outcome = Outcome::timed(start.elapsed(), total);
    for child in children {
        match child {
            Ok(out)
                if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "0" => {}
            Ok(out) => outcome.fail(format!(
                "a child process failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => outcome.fail(format!("could not start a child process: {e}")),
        }
    }
    outcome
}

/// What a child process of `countdown-processes` runs: prints the countdown's final value.
pub fn child_countdown(share: usize) -> i64 {
    ftrt_gil::Python::attach(|py| count_down(py, share))
}

pub(crate) const COUNTDOWN_PROCESSES: Workload = Workload {
    name: "countdown-processes",
    unit: "countdown step",
    description: "the countdown, each share in its own OS process (start-up included)",
    shows: "S3",
    run: countdown_processes,
};

const NATIVE_TOTAL: usize = 700_000_000;
const NATIVE_CHUNK: usize = 1_000_000;

/// A numeric kernel, as a native extension would run it: no objects touched.
fn kernel(from: usize, to: usize) -> u64 {
    let mut acc = 0_u64;
    for i in from..to {
        acc = acc.wrapping_add((i as u64).wrapping_mul(i as u64) ^ (acc >> 3));
    }
    acc
}

fn native_release(params: &Params) -> Outcome {
    let total = params.total(NATIVE_TOTAL);
    let (elapsed, sums) = run_threads(params.threads, |t, py| {
        let share = params.share(total, t);
        let mut sums = Vec::new();
        let mut done = 0;
        while done < share {
            let chunk = NATIVE_CHUNK.min(share - done);
            // The kernel runs detached: other threads may take the GIL meanwhile.
            sums.push(py.allow_threads(move || kernel(done, done + chunk)));
            done += chunk;
        }
        sums
    });
    let mut outcome = Outcome::timed(elapsed, total);
    for (t, sums) in sums.iter().enumerate() {
        let share = params.share(total, t);
        let expected: Vec<u64> = (0..share)
            .step_by(NATIVE_CHUNK)
            .map(|from| kernel(from, (from + NATIVE_CHUNK).min(share)))
            .collect();
        outcome.expect(*sums == expected, || {
            format!("thread {t}'s kernel results differ from a serial run")
        });
    }
    outcome
}

pub(crate) const NATIVE_RELEASE: Workload = Workload {
    name: "native-release",
    unit: "kernel iteration",
    description: "a native numeric kernel inside allow_threads",
    shows: "S5, S11, P5",
    run: native_release,
};

const FLOAT_TOTAL: usize = 56_000_000;

fn float_mult(params: &Params) -> Outcome {
    let total = params.total(FLOAT_TOTAL);
    let (elapsed, results) = run_threads(params.threads, |t, py| {
        let factor = PyFloat::new(py, 1.000_001);
        let mut x = PyFloat::new(py, 1.0).into_any();
        for i in 0..params.share(total, t) {
            x = x.mul(&factor).expect("floats multiply");
            checkpoint(py, i);
        }
        x.to_f64().expect("a float")
    });
    let mut outcome = Outcome::timed(elapsed, total);
    // Bit for bit: each thread's multiplications happen in the same order as a serial run's.
    outcome.expect_per_thread(results.iter().map(|x| x.to_bits()), |t| {
        (0..params.share(total, t))
            .fold(1.0_f64, |x, _| x * 1.000_001)
            .to_bits()
    });
    outcome
}

pub(crate) const FLOAT_MULT: Workload = Workload {
    name: "float-mult",
    unit: "multiplication",
    description: "x *= 1.000001 on floats, allocating as it goes",
    shows: "P3",
    run: float_mult,
};
