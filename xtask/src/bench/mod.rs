//! `cargo xtask bench`: the scaling report.
//!
//! Builds `ftrt-runner` for each selected build variant (release, mimalloc), then runs every
//! selected workload at every thread count, each run in its own process, `--repeat` times after
//! one warm-up run per build and workload. Each runner also warms up in-process before it starts
//! its clock. The runs are interleaved: every repeat visits every workload, build and thread
//! count before the next repeat starts, so drift on a shared machine hits all alike. Every run
//! is appended to `runs.jsonl` in the output folder as it finishes; a run that fails (a failed
//! check, a crash, even after printing its result, a runner still running at the run limit,
//! which is killed) fails its cell, and the bench goes on and
//! exits non-zero at the end. The report gives median, min and max times and their spread,
//! nanoseconds per operation, speedups against one thread and against the `gil` build (or a
//! free-threaded interpreter's default twin), peak memory and the workloads' own checks, and
//! closes with the mission's targets, judged only on a full run. With the `nogil` build comes
//! the machine's reference, `nogil-processes` ([`PROCESSES_BUILD`]): the private-data workloads
//! and `cycle-create` ([`in_the_reference`]) run as N one-thread processes instead of N
//! threads, so that a speedup short of N can be told apart into what the machine costs and
//! what the runtime does.

mod plots;
mod report;
mod runs;
mod targets;

pub use runs::{runner_build_step, runner_in, ALLOCATOR_PURGE};

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValuesParser;

use crate::steps::{write, Failed, Workspace};
use crate::variants::Variant;

/// The workload catalogue, by name (the runner has the same list; `ftrt-runner --list`).
pub const WORKLOADS: &[&str] = &[
    "countdown",
    "countdown-processes",
    "io-sleep",
    "native-release",
    "counter-race",
    "counter-locked",
    "shared-lock",
    "list-append-private",
    "list-append-shared",
    "dict-private",
    "dict-shared-read",
    "dict-shared-write",
    "object-create",
    "float-mult",
    "string-intern",
    "shared-refcount",
    "shared-attribute-read",
    "shared-attribute-keep",
    "immortal-read",
    "cycle-create",
    "list-replace-shared",
    "io-latency-under-load",
];

/// The private-data workloads (P3): each thread works on objects only it ever sees. What the
/// machine gives independent processes is measured for them too ([`PROCESSES_BUILD`]).
pub const PRIVATE_WORKLOADS: &[&str] = &[
    "countdown",
    "list-append-private",
    "dict-private",
    "object-create",
    "float-mult",
];

/// Whether the machine's reference ([`PROCESSES_BUILD`]) runs `workload`: the private-data
/// ones, and `cycle-create`, whose threads each build and collect their own cycles (G1).
pub fn in_the_reference(workload: &str) -> bool {
    PRIVATE_WORKLOADS.contains(&workload) || workload == "cycle-create"
}

/// The runner that measures the machine's reference for N-way private work: the `nogil` build
/// run as N one-thread processes released together after their warm-ups, each given 1/N of the
/// work, up to N = the cores. Processes share no memory, so whatever slows them is the
/// machine's (shared caches, memory bandwidth, first touches of fresh pages). A reference, not
/// a bound: a process's setup after the gate and its teardown run beside the others' clocks,
/// and threads share what processes each build, so threads may beat it. Run with the `nogil`
/// build, on the workloads [`in_the_reference`].
pub const PROCESSES_BUILD: &str = "nogil-processes";

/// The size multiplier of `--quick` runs.
const QUICK_SCALE: f64 = 0.05;

/// The thread counts of a default run on `cores` cores: 1, 2, the cores (where P9 reads) and
/// twice the cores.
fn default_threads(cores: usize) -> Vec<usize> {
    let mut threads = vec![1, 2, cores, 2 * cores];
    threads.sort_unstable();
    threads.dedup();
    threads
}

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Comma-separated workloads to run (default: all).
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = PossibleValuesParser::new(WORKLOADS))]
    pub workloads: Vec<String>,
    /// Comma-separated builds to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
    pub builds: Vec<Variant>,
    /// Comma-separated thread counts (default: 1, 2, the number of cores and twice that).
    #[arg(long, value_delimiter = ',', value_name = "LIST", value_parser = parse_threads)]
    pub threads: Vec<usize>,
    /// Measured runs of each cell after the warm-up (default: 5; 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub repeat: Option<u32>,
    /// Small sizes, for smoke runs and tests (no target is judged).
    #[arg(long)]
    pub quick: bool,
    /// Also write the JSON report to this file (relative to the workspace root; its folder must
    /// exist, which is checked before the first run).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where the report, its JSON and the plots go (relative to the workspace root).
    #[arg(long, value_name = "DIR", default_value = "target/bench-report")]
    pub out: PathBuf,
    /// Also run the Python versions of the workloads (`benches/python/`) on this interpreter;
    /// repeatable.
    #[arg(long = "python", value_name = "PATH")]
    pub pythons: Vec<PathBuf>,
    /// Use the runners an earlier bench built (`target/bench-<build>/release/ftrt-runner`)
    /// instead of building them: for a machine with the binaries but no toolchain.
    #[arg(long)]
    pub no_build: bool,
    /// Seconds one run may take, up to a day: a runner still running then (a deadlock) is
    /// killed, and its run fails.
    #[arg(long, value_name = "SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..=RUN_LIMIT_MAX_S))]
    pub run_limit: u64,
}

/// The longest `--run-limit`: a day, far beyond any run, and far from the largest deadline a
/// clock can hold (a limit past that would panic at the first run instead of failing to parse).
const RUN_LIMIT_MAX_S: u64 = 24 * 60 * 60;

fn parse_threads(value: &str) -> Result<usize, String> {
    value
        .trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=1024).contains(n))
        .ok_or_else(|| {
            "valid values: whole numbers from 1 to 1024 (e.g. --threads 1,2,4)".to_owned()
        })
}

/// What one run is made of, after defaults.
pub struct Plan {
    pub workloads: Vec<&'static str>,
    pub builds: Vec<Variant>,
    pub threads: Vec<usize>,
    pub repeat: u32,
    pub scale: f64,
    /// The machine's cores (what P9's N and the plots' ideal line go up to).
    pub cores: usize,
    /// Why this is not a full run (quick sizes, workloads, builds or default thread counts
    /// left out); empty for a full run. Only a full run judges the targets.
    pub partial: Vec<String>,
    /// How long one run may take before its runner is killed and the run fails.
    pub run_limit: Duration,
    /// What a reader of the report must know about how its cells were measured, though the
    /// targets are judged: runners taken as found (`--no-build`), one repeat per cell.
    pub caveats: Vec<String>,
}

impl Plan {
    fn from(options: &Options) -> Plan {
        let known_cores = std::thread::available_parallelism().ok().map(|n| n.get());
        let cores = known_cores.unwrap_or(2);
        let workloads: Vec<&'static str> = WORKLOADS
            .iter()
            .copied()
            .filter(|w| {
                options.workloads.is_empty() || options.workloads.iter().any(|chosen| chosen == w)
            })
            .collect();
        let mut threads = if options.threads.is_empty() {
            default_threads(cores)
        } else {
            options.threads.clone()
        };
        threads.sort_unstable();
        threads.dedup();
        let builds = Variant::in_canonical_order(&options.builds);
        let scale = if options.quick { QUICK_SCALE } else { 1.0 };
        let repeat = options.repeat.unwrap_or(if options.quick { 1 } else { 5 });
        let mut partial = partial_because(&workloads, &builds, &threads, scale, cores);
        if known_cores.is_none() {
            // P9 reads N = the cores exactly: two cores assumed would judge it at the wrong N.
            partial.push("the machine's core count could not be read (2 assumed)".to_owned());
        }
        Plan {
            partial,
            workloads,
            builds,
            threads,
            repeat,
            scale,
            cores,
            run_limit: Duration::from_secs(options.run_limit),
            caveats: caveats(options.no_build, repeat),
        }
    }
}

/// What the report says of its own cells besides what it leaves out.
pub fn caveats(no_build: bool, repeat: u32) -> Vec<String> {
    let mut caveats = Vec::new();
    if no_build {
        caveats.push(
            "the runners were taken as found (`--no-build`), not built from this checkout: \
             they may be of other sources"
                .to_owned(),
        );
    }
    if repeat < 2 {
        caveats.push(
            "one measured run per cell: no spread is measured (every cell reads ±0 %, and none \
             can be flagged noisy)"
                .to_owned(),
        );
    }
    caveats
}

/// What a run leaves out of the full default run: every workload, every build, the default
/// thread counts (more are fine), full sizes.
pub fn partial_because(
    workloads: &[&str],
    builds: &[Variant],
    threads: &[usize],
    scale: f64,
    cores: usize,
) -> Vec<String> {
    let mut reasons = Vec::new();
    if scale < 1.0 {
        reasons.push(format!("sizes x{scale} (--quick)"));
    }
    let missing: Vec<&str> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| !workloads.contains(w))
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("workloads left out: {}", missing.join(", ")));
    }
    let missing: Vec<&str> = Variant::ALL
        .iter()
        .filter(|v| !builds.contains(v))
        .map(|v| v.name())
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("builds left out: {}", missing.join(", ")));
    }
    let missing: Vec<String> = default_threads(cores)
        .into_iter()
        .filter(|t| !threads.contains(t))
        .map(|t| t.to_string())
        .collect();
    if !missing.is_empty() {
        reasons.push(format!("thread counts left out: {}", missing.join(", ")));
    }
    reasons
}

pub fn run(workspace: &Workspace, options: Options) -> Result<(), Failed> {
    let plan = Plan::from(&options);
    // The output folder first: every run is written to it as it finishes.
    let out = workspace.root.join(&options.out);
    std::fs::create_dir_all(&out)
        .map_err(|e| Failed(format!("cannot create {}: {e}", out.display())))?;
    // Before any run: a bad path found after a long run would have lost its report.
    let json_copy = options.json.as_ref().map(|path| workspace.root.join(path));
    if let Some(path) = &json_copy {
        let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
        if folder.is_some_and(|folder| !folder.is_dir()) {
            return Err(Failed(format!(
                "--json {}: no folder {} to write it in",
                path.display(),
                folder.map_or_else(String::new, |f| f.display().to_string())
            )));
        }
        if path.is_dir() {
            return Err(Failed(format!(
                "--json {}: a folder, not a file to write the report in",
                path.display()
            )));
        }
    }
    let mut log = runs::RawLog::create(out.join("runs.jsonl"))?;
    for reason in &plan.partial {
        println!("note: {reason}; the targets will not be judged");
    }
    let runners = runs::build_runners(workspace, &plan.builds, &options.pythons, options.no_build)?;
    let measurements = runs::measure(&runners, &plan, &mut log)?;
    let report = report::Report::new(&plan, &runners, measurements);
    report.print_table();
    let summary = targets::evaluate(&report);
    targets::print(&summary);
    let json = report.to_json(&summary);
    let json_text = serde_json::to_string_pretty(&json).expect("JSON values serialise");
    write(&out.join("report.json"), &json_text)?;
    write(&out.join("report.md"), &report.to_markdown(&summary))?;
    plots::draw_all(&report, &out)?;
    if let Some(path) = &json_copy {
        write(path, &json_text)?;
    }
    println!(
        "report: {} (raw runs: {})",
        out.display(),
        log.path.display()
    );
    let failed: Vec<String> = report.failed_checks();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failed(format!(
            "{} cell(s) failed: {}",
            failed.len(),
            failed.join("; ")
        )))
    }
}
