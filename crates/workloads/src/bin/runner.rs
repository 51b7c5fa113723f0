//! Runs one workload once and prints the result as one JSON line; `cargo xtask bench` starts it
//! once per measurement, so every run has a fresh process.
//!
//! ```text
//! ftrt-runner WORKLOAD --threads N [--scale F] [--warm-up F] [--lock-elision on|off] [--start-gate]
//! ftrt-runner --list                               the catalogue, as JSON
//! ftrt-runner --info                               the build: variant, header size, count
//! ```
//!
//! A measured run is preceded by an untimed warm-up pass in the same process, at `--warm-up`
//! times the size (default [`WARM_UP_FRACTION`]; 0 for none, 1 at most). The exit status is 0
//! whenever a result was printed, whatever its check says; anything else is a failed run; bad
//! arguments exit with status 2 (`--threads` from 1 to 1024, `--scale` above 0 and at most 1000).
//!
//! With `--start-gate`, the runner prints `ready` on a line of its own after the warm-up and
//! waits for a line on its standard input (or its end) before the measured run: the bench
//! starts several one-thread runners this way and releases them together, so that their clocks
//! run at the same time.
//!
//! The runner runs its workloads as an interpreter would: every attached thread reaches
//! checkpoints and detaches around blocking (the `gil` build needs it too). So it turns on the
//! free-threaded builds' lock elision (`ftrt_gil::set_lock_elision`) unless `--lock-elision off`
//! says not to; the result line says which.
//!
//! For the bench's own tests, `FTRT_RUNNER_CRASH_BEFORE_PRINT=WORKLOAD` and
//! `FTRT_RUNNER_CRASH_AFTER_PRINT=WORKLOAD` make the runner abort before or after printing that
//! workload's result, as a crash in the run or at teardown would.

use std::io::{BufRead as _, Write as _};
use std::process::ExitCode;

use ftrt_workloads::{catalogue, find, Params, BUILD, WARM_UP_FRACTION};
use serde_json::json;

/// The largest `--scale`: a thousand times the default sizes is a run of minutes to hours, and
/// every count still fits (the sizes are at most 10^9 units).
const MAX_SCALE: f64 = 1000.0;

/// The most threads: `cargo xtask bench`'s limit too. Threads that the system cannot start
/// would leave the started ones waiting at the start barrier for ever.
const MAX_THREADS: usize = 1024;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage(problem: &str) -> ExitCode {
    let names: Vec<&str> = catalogue().iter().map(|w| w.name).collect();
    eprintln!("error: {problem}");
    eprintln!(
        "usage: ftrt-runner WORKLOAD --threads N [--scale F] [--warm-up F] [--lock-elision on|off] [--start-gate] | --list | --info"
    );
    eprintln!("workloads: {}", names.join(", "));
    ExitCode::from(2)
}

/// Peak resident memory of this process, from the kernel (Linux); 0 where unknown.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

/// The start gate: says `ready` and waits for the bench's line (or the end of the input).
fn wait_at_start_gate() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready").and_then(|()| out.flush());
    let _ = std::io::stdin().lock().read_line(&mut String::new());
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // Before anything attaches; `--lock-elision off` turns it off again below.
    ftrt_gil::set_lock_elision(true);
    match args.first().map(String::as_str) {
        None => usage("no workload given"),
        Some("--list") => {
            let list: Vec<_> = catalogue()
                .iter()
                .map(|w| json!({"name": w.name, "description": w.description, "shows": w.shows, "unit": w.unit}))
                .collect();
            println!("{}", serde_json::Value::Array(list));
            ExitCode::SUCCESS
        }
        Some("--info") => {
            println!(
                "{}",
                json!({"build": BUILD, "header_size": ftrt_object::HEADER_SIZE, "count_strategy": ftrt_object::count_strategy()})
            );
            ExitCode::SUCCESS
        }
        Some("--child-countdown") => match args.get(1).and_then(|s| s.parse().ok()) {
            Some(share) => {
                println!("{}", ftrt_workloads::child_countdown(share));
                ExitCode::SUCCESS
            }
            None => usage("--child-countdown needs a count"),
        },
        Some(name) if name.starts_with("--") => usage(&format!(
            "the workload comes first, before '{name}': ftrt-runner WORKLOAD [OPTIONS]"
        )),
        Some(name) => {
            let Some(workload) = find(name) else {
                return usage(&format!("unknown workload '{name}'"));
            };
            let mut params = Params {
                threads: 1,
                scale: 1.0,
            };
            let mut warm_up = WARM_UP_FRACTION;
            let mut start_gate = false;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                if flag == "--start-gate" {
                    start_gate = true;
                    continue;
                }
                let value = rest.next();
                match (flag.as_str(), value.map(|v| v.as_str())) {
                    ("--threads", Some(v)) => match v.parse() {
                        Ok(n) if (1..=MAX_THREADS).contains(&n) => params.threads = n,
                        _ => {
                            return usage(&format!(
                                "bad thread count '{v}': a whole number from 1 to {MAX_THREADS}"
                            ))
                        }
                    },
                    ("--scale", Some(v)) => match v.parse::<f64>() {
                        Ok(s) if s > 0.0 && s <= MAX_SCALE => params.scale = s,
                        _ => {
                            return usage(&format!(
                                "bad scale '{v}': a positive number, at most {MAX_SCALE}"
                            ))
                        }
                    },
                    ("--lock-elision", Some("on")) => ftrt_gil::set_lock_elision(true),
                    ("--lock-elision", Some("off")) => ftrt_gil::set_lock_elision(false),
                    ("--lock-elision", Some(v)) => {
                        return usage(&format!("bad lock elision '{v}': on or off"))
                    }
                    ("--warm-up", Some(v)) => match v.parse::<f64>() {
                        Ok(w) if (0.0..=1.0).contains(&w) => warm_up = w,
                        _ => {
                            return usage(&format!(
                                "bad warm-up '{v}': a fraction of the size from 0 (none) to 1"
                            ))
                        }
                    },
                    ("--threads" | "--scale" | "--lock-elision" | "--warm-up", None) => {
                        return usage(&format!("{flag} needs a value"))
                    }
                    _ => return usage(&format!("unexpected argument '{flag}'")),
                }
            }
            if std::env::var("FTRT_RUNNER_CRASH_BEFORE_PRINT").as_deref() == Ok(workload.name) {
                std::process::abort();
            }
            let outcome = workload.measure_after_warm_up(&params, warm_up, || {
                if start_gate {
                    wait_at_start_gate();
                }
            });
            let metrics: serde_json::Map<String, serde_json::Value> = outcome
                .metrics
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            // Over the whole process, warm-up included: the waits' counts are process-wide.
            let waits = ftrt_gil::reclamation::waits();
            let check = match &outcome.check {
                Ok(()) => "ok".to_owned(),
                Err(what) => what.clone(),
            };
            println!(
                "{}",
                json!({
                    "workload": workload.name,
                    "build": BUILD,
                    "threads": params.threads,
                    "elapsed_s": outcome.elapsed.as_secs_f64(),
                    "ops": outcome.ops,
                    "warm_up": warm_up,
                    "lock_elision": ftrt_gil::lock_elision(),
                    "check": check,
                    "metrics": metrics,
                    "peak_rss_kib": peak_rss_kib(),
                    "reclamation_waits": {
                        "begun": waits.begun,
                        "caught_up": waits.caught_up,
                        "timed_out": waits.timed_out,
                        "interrupted": waits.interrupted,
                    },
                })
            );
            if std::env::var("FTRT_RUNNER_CRASH_AFTER_PRINT").as_deref() == Ok(workload.name) {
                std::process::abort();
            }
            ExitCode::SUCCESS
        }
    }
}
