//! Turning runs into the report: statistics per cell, the terminal table, JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::Command;

use serde_json::{json, Value};

use super::runs::{gil_references, Key, Measurements, Runner, RunnerKind};
use super::targets::Summary;
use super::Plan;

/// A cell whose max − min exceeds this fraction of its median is flagged as noisy.
const NOISY_SPREAD: f64 = 0.25;

/// A runner with a GIL cannot run CPU-bound threads faster than one: a speedup above this (the
/// mission's P4 bound) says the measurement is wrong, not the GIL.
pub const SUSPECT_GIL_SPEEDUP: f64 = 1.15;

/// The workloads whose threads a GIL does not serialise: they sleep or compute detached, run in
/// processes, or measure latency. Every other workload is CPU-bound under a GIL.
pub const NOT_CPU_BOUND: &[&str] = &[
    "countdown-processes",
    "io-sleep",
    "native-release",
    "io-latency-under-load",
];

/// The workloads measured by the latencies they report, not by their time: their runs take as
/// long as the pings do, so speedups, `vs_gil` and time per operation mean nothing for them.
pub const MEASURED_BY_LATENCY: &[&str] = &["io-latency-under-load"];

/// The shortest median a full-size 1-thread cell should take, in seconds: shorter cells are
/// mostly noise on a shared machine. Python interpreters run their own (smaller) sizes.
const SHORTEST_RUN_S: f64 = 0.5;
const SHORTEST_PYTHON_RUN_S: f64 = 0.3;

/// The statistics of one cell (workload × build × threads).
#[derive(Debug, Clone)]
pub struct Cell {
    pub workload: String,
    pub build: String,
    pub threads: usize,
    /// Measured runs that printed a time.
    pub repeats: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Operations per run (the workload's unit), if the runner said.
    pub ops: Option<u64>,
    pub peak_rss_kib: u64,
    /// `ok`, or the first failure among the runs (a failed check, a crash).
    pub check: String,
    pub metrics: BTreeMap<String, f64>,
    /// Derived when the report is built ([`Report::new`]): the same build at 1 thread / this.
    pub speedup: Option<f64>,
    /// Derived: the GIL reference at the same thread count / this.
    pub vs_gil: Option<f64>,
    /// Derived: operations per second against the baseline build at 1 thread.
    pub relative_throughput: Option<f64>,
    /// Derived: why the cell cannot be right, if it cannot.
    pub suspect: Option<String>,
    /// Derived: a full-size 1-thread cell shorter than the minimum run length.
    pub short: bool,
}

impl Cell {
    /// A cell of measured values; the derived fields are filled in by [`Report::new`].
    pub fn measured(workload: &str, build: &str, threads: usize, times: &[f64]) -> Cell {
        let mut sorted = times.to_vec();
        Cell {
            workload: workload.to_owned(),
            build: build.to_owned(),
            threads,
            repeats: times.len(),
            min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
            max_s: times.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            median_s: median(&mut sorted),
            ops: None,
            peak_rss_kib: 0,
            check: "ok".to_owned(),
            metrics: BTreeMap::new(),
            speedup: None,
            vs_gil: None,
            relative_throughput: None,
            suspect: None,
            short: false,
        }
    }

    pub fn ok(&self) -> bool {
        self.check == "ok"
    }

    /// (max − min) / median: how far apart the repeats were.
    pub fn spread(&self) -> f64 {
        if self.median_s > 0.0 {
            (self.max_s - self.min_s) / self.median_s
        } else {
            f64::NAN
        }
    }

    pub fn noisy(&self) -> bool {
        self.spread() > NOISY_SPREAD
    }

    pub fn ns_per_op(&self) -> Option<f64> {
        if MEASURED_BY_LATENCY.contains(&self.workload.as_str()) {
            return None;
        }
        let ops = self.ops.filter(|&ops| ops > 0)? as f64;
        Some(self.median_s * 1e9 / ops).filter(|v| v.is_finite())
    }

    /// The markers the tables put after the time: `~` noisy, `!` suspect, `<` short,
    /// `FAILED`.
    fn markers(&self) -> String {
        let mut markers = String::new();
        if self.noisy() {
            markers.push('~');
        }
        if self.suspect.is_some() {
            markers.push('!');
        }
        if self.short {
            markers.push('<');
        }
        if !self.ok() {
            markers.push_str(" FAILED");
        }
        markers
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Whether a metric is a tail (a 99th percentile or a maximum, by its name: `p99_ms` or
/// `max_ms`, or ending in `_p99_ms` or `_max_ms`), which a cell reports as its worst run's
/// rather than as the median run's:
/// a target such as G1's "p99 under 10 ms" must not pass on the median of five runs when two
/// of them are five times over.
pub fn is_tail_metric(name: &str) -> bool {
    ["p99_ms", "max_ms"].iter().any(|tail| {
        name.strip_suffix(tail)
            .is_some_and(|rest| rest.is_empty() || rest.ends_with('_'))
    })
}

/// The value a cell reports for a metric over its runs: the worst (highest) for a tail
/// ([`is_tail_metric`]), else the median.
fn aggregate_metric(name: &str, values: &mut [f64]) -> f64 {
    if is_tail_metric(name) {
        values.iter().copied().reduce(f64::max).unwrap_or(f64::NAN)
    } else {
        median(values)
    }
}

fn cell_of(key: Key, m: Measurements) -> Cell {
    let (workload, build, threads) = key;
    let times: Vec<f64> = m.runs.iter().filter_map(|r| r.elapsed_s).collect();
    let mut cell = Cell::measured(&workload, &build, threads, &times);
    let mut rss: Vec<f64> = m
        .runs
        .iter()
        .filter_map(|r| r.peak_rss_kib)
        // 0: the runner could not read it.
        .filter(|&kib| kib > 0)
        .map(|kib| kib as f64)
        .collect();
    cell.peak_rss_kib = if rss.is_empty() {
        0
    } else {
        median(&mut rss) as u64
    };
    cell.ops = m.runs.iter().find_map(|r| r.ops);
    cell.check = m
        .warm_up_failures
        .iter()
        .map(|failure| format!("warm-up run: {failure}"))
        .chain(m.runs.iter().filter(|r| !r.ok()).map(|r| r.check.clone()))
        .next()
        .unwrap_or_else(|| {
            if m.runs.is_empty() {
                "no measured run".to_owned()
            } else {
                "ok".to_owned()
            }
        });
    let mut metric_names: Vec<&String> = m.runs.iter().flat_map(|r| r.metrics.keys()).collect();
    metric_names.sort();
    metric_names.dedup();
    cell.metrics = metric_names
        .into_iter()
        .map(|name| {
            let mut values: Vec<f64> = m
                .runs
                .iter()
                .filter_map(|r| r.metrics.get(name).copied())
                .collect();
            let value = aggregate_metric(name, &mut values);
            (name.clone(), value)
        })
        .collect();
    cell
}

/// What the report says about one runner.
#[derive(Debug, Clone)]
pub struct RunnerSummary {
    pub build: String,
    /// A build of the runtime (else a Python interpreter).
    pub variant: bool,
    pub has_gil: bool,
    /// Whose times this runner's `vs_gil` divides (itself for a runner with a GIL).
    pub gil_reference: Option<String>,
    /// The interpreter's path, for Python runners.
    pub path: Option<String>,
    /// The machine's reference: one-thread processes instead of threads (`PROCESSES_BUILD`).
    pub processes: bool,
    /// What the runner said about itself (`--info`).
    pub info: Value,
    /// Per workload: what one of its operations is, as this runner counts them (`--list`).
    pub units: BTreeMap<String, String>,
}

impl RunnerSummary {
    pub fn of(runners: &[Runner]) -> Vec<RunnerSummary> {
        let references = gil_references(runners);
        runners
            .iter()
            .map(|r| RunnerSummary {
                build: r.build.clone(),
                variant: r.is_variant(),
                has_gil: r.has_gil(),
                gil_reference: references.get(&r.build).cloned(),
                path: match &r.kind {
                    RunnerKind::Python { path, .. } => Some(path.display().to_string()),
                    RunnerKind::Variant(_) => None,
                },
                processes: r.processes,
                info: r.info.clone(),
                units: r.units.clone(),
            })
            .collect()
    }

    /// For tests: a runtime build.
    #[cfg(test)]
    pub fn variant(build: &str) -> RunnerSummary {
        RunnerSummary {
            build: build.to_owned(),
            variant: true,
            has_gil: build == "gil",
            gil_reference: Some("gil".to_owned()),
            path: None,
            processes: false,
            info: Value::Null,
            units: BTreeMap::new(),
        }
    }
}

pub struct Report {
    pub cells: Vec<Cell>,
    pub runners: Vec<RunnerSummary>,
    pub threads: Vec<usize>,
    pub workloads: Vec<String>,
    /// Per workload: what one operation is.
    pub units: BTreeMap<String, String>,
    pub scale: f64,
    pub repeat: u32,
    pub cores: usize,
    /// Why this is not a full run; empty for a full run.
    pub partial: Vec<String>,
    /// How its cells were measured, where a reader must know it (`Plan::caveats`).
    pub caveats: Vec<String>,
}

impl Report {
    pub fn new(
        plan: &Plan,
        runners: &[Runner],
        measurements: BTreeMap<Key, Measurements>,
    ) -> Report {
        let cells = measurements
            .into_iter()
            .map(|(key, m)| cell_of(key, m))
            .collect();
        let mut report = Report {
            cells,
            runners: RunnerSummary::of(runners),
            threads: plan.threads.clone(),
            workloads: plan.workloads.iter().map(|w| (*w).to_owned()).collect(),
            units: runners
                .iter()
                .find(|r| r.is_variant())
                .map(|r| r.units.clone())
                .unwrap_or_default(),
            scale: plan.scale,
            repeat: plan.repeat,
            cores: plan.cores,
            partial: plan.partial.clone(),
            caveats: plan.caveats.clone(),
        };
        report.derive();
        report
    }

    /// A report of already measured cells (tests build reports this way).
    #[cfg(test)]
    pub fn from_cells(
        cells: Vec<Cell>,
        runners: Vec<RunnerSummary>,
        threads: Vec<usize>,
        cores: usize,
        partial: Vec<String>,
    ) -> Report {
        let mut workloads: Vec<String> = Vec::new();
        for cell in &cells {
            if !workloads.contains(&cell.workload) {
                workloads.push(cell.workload.clone());
            }
        }
        let mut report = Report {
            cells,
            runners,
            threads,
            workloads,
            units: BTreeMap::new(),
            scale: 1.0,
            repeat: 5,
            cores,
            partial,
            caveats: Vec::new(),
        };
        report.derive();
        report
    }

    /// The build every plot's throughput is relative to: `gil`, or the first runner.
    pub fn baseline_build(&self) -> Option<&str> {
        self.runners
            .iter()
            .find(|r| r.build == "gil")
            .or(self.runners.first())
            .map(|r| r.build.as_str())
    }

    /// Speedups, `vs_gil`, relative throughput and the flags, from the cells' medians: of cells
    /// that passed, on both sides of every ratio (a crashed run may have printed a time, which
    /// is kept for the record, and must not stand as a reference).
    fn derive(&mut self) {
        let medians: BTreeMap<(String, String, usize), f64> = self
            .cells
            .iter()
            .filter(|c| c.ok())
            .map(|c| ((c.workload.clone(), c.build.clone(), c.threads), c.median_s))
            .collect();
        let ns_per_op: BTreeMap<(String, String, usize), f64> = self
            .cells
            .iter()
            .filter(|c| c.ok())
            .filter_map(|c| {
                Some((
                    (c.workload.clone(), c.build.clone(), c.threads),
                    c.ns_per_op()?,
                ))
            })
            .collect();
        let baseline = self.baseline_build().map(str::to_owned);
        let full_size = self.scale >= 1.0;
        let runners = self.runners.clone();
        let units = self.units.clone();
        for cell in &mut self.cells {
            if !cell.ok() || MEASURED_BY_LATENCY.contains(&cell.workload.as_str()) {
                continue;
            }
            let at =
                |build: &str, threads: usize| (cell.workload.clone(), build.to_owned(), threads);
            let runner = runners.iter().find(|r| r.build == cell.build);
            cell.speedup = medians
                .get(&at(&cell.build, 1))
                .map(|one| one / cell.median_s);
            cell.vs_gil = runner
                .and_then(|r| r.gil_reference.as_deref())
                .and_then(|reference| medians.get(&at(reference, cell.threads)))
                .map(|reference| reference / cell.median_s);
            // Times per operation compare only where the operation is the same one: a Python
            // twin may count another (`native-release` hashes bytes where the runtime's kernel
            // counts iterations).
            let same_unit = runner
                .and_then(|r| r.units.get(&cell.workload))
                .zip(units.get(&cell.workload))
                .is_none_or(|(mine, reference)| mine == reference);
            cell.relative_throughput = baseline
                .as_deref()
                .filter(|_| same_unit)
                .and_then(|b| ns_per_op.get(&at(b, 1)))
                .zip(cell.ns_per_op())
                .map(|(reference, mine)| reference / mine);
            let has_gil = runner.is_some_and(|r| r.has_gil);
            cell.suspect = cell
                .speedup
                .filter(|&s| {
                    has_gil
                        && cell.threads >= 2
                        && s > SUSPECT_GIL_SPEEDUP
                        && !NOT_CPU_BOUND.contains(&cell.workload.as_str())
                })
                .map(|s| {
                    format!(
                        "a GIL build ran CPU-bound threads {s:.2}x faster than one thread (> {SUSPECT_GIL_SPEEDUP}): the 1-thread runs were slowed by something else"
                    )
                });
            let shortest = if runner.is_none_or(|r| r.variant) {
                SHORTEST_RUN_S
            } else {
                SHORTEST_PYTHON_RUN_S
            };
            cell.short = full_size && cell.threads == 1 && cell.median_s < shortest;
        }
    }

    pub fn cell(&self, workload: &str, build: &str, threads: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.workload == workload && c.build == build && c.threads == threads)
    }

    pub fn builds(&self) -> impl Iterator<Item = &str> {
        self.runners.iter().map(|r| r.build.as_str())
    }

    pub fn failed_checks(&self) -> Vec<String> {
        self.cells
            .iter()
            .filter(|c| !c.ok())
            .map(|c| format!("{} {} x{}: {}", c.workload, c.build, c.threads, c.check))
            .collect()
    }

    /// The free-threaded runners that have a GIL reference other than themselves: (free-threaded,
    /// reference).
    pub fn pairs(&self) -> Vec<(&str, &str)> {
        self.runners
            .iter()
            .filter(|r| !r.has_gil)
            .filter_map(|r| Some((r.build.as_str(), r.gil_reference.as_deref()?)))
            .collect()
    }

    pub fn print_table(&self) {
        print!("{}", self.table());
    }

    /// One line per workload and build: median time and speedup at each thread count.
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = write!(out, "{:<24} {:<17}", "workload", "build");
        for t in &self.threads {
            let _ = write!(out, " {:>24}", format!("{t} thr: s ±% (x1, xgil)"));
        }
        out.push_str("  check\n");
        for workload in &self.workloads {
            for build in self.builds() {
                let row: Vec<&Cell> = self
                    .threads
                    .iter()
                    .filter_map(|&t| self.cell(workload, build, t))
                    .collect();
                if row.is_empty() {
                    continue;
                }
                let _ = write!(out, "{workload:<24} {build:<17}");
                for cell in &row {
                    let _ = write!(
                        out,
                        " {:>24}",
                        format!(
                            "{:.3}{} {} ({}, {})",
                            cell.median_s,
                            cell.markers(),
                            percent(cell.spread()),
                            ratio(cell.speedup),
                            ratio(cell.vs_gil)
                        )
                    );
                }
                let check = row.iter().find(|c| !c.ok()).map_or_else(
                    || "ok".to_owned(),
                    |c| format!("x{}: {}", c.threads, c.check),
                );
                let _ = writeln!(out, "  {check}");
            }
        }
        out.push_str(LEGEND);
        out.push('\n');
        out
    }

    pub fn to_json(&self, summary: &Summary) -> Value {
        let results: Vec<Value> = self
            .cells
            .iter()
            .map(|c| {
                json!({
                    "workload": c.workload, "build": c.build, "threads": c.threads, "repeats": c.repeats,
                    "median_s": finite(c.median_s), "min_s": finite(c.min_s), "max_s": finite(c.max_s),
                    "spread": finite(c.spread()), "ops": c.ops, "ns_per_op": c.ns_per_op(),
                    "speedup": c.speedup, "vs_gil": c.vs_gil,
                    "relative_throughput": c.relative_throughput,
                    "peak_rss_kib": c.peak_rss_kib, "check": c.check, "noisy": c.noisy(),
                    "suspect": c.suspect, "short": c.short, "metrics": c.metrics,
                })
            })
            .collect();
        let runners: Vec<Value> = self
            .runners
            .iter()
            .map(|r| {
                json!({
                    "name": r.build, "runtime_build": r.variant, "gil": r.has_gil,
                    "gil_reference": r.gil_reference, "path": r.path, "info": r.info,
                    "processes": r.processes,
                })
            })
            .collect();
        json!({
            "schema": 1,
            "machine": machine(),
            "scale": self.scale,
            "repeat": self.repeat,
            "threads": self.threads,
            "full_run": self.partial.is_empty(),
            "partial": self.partial,
            "caveats": self.caveats,
            "builds": self.runners.iter().map(|r| (r.build.clone(), r.info.clone())).collect::<BTreeMap<_, _>>(),
            "runners": runners,
            "units": self.units,
            "results": results,
            "targets": summary.to_json(),
        })
    }

    pub fn to_markdown(&self, summary: &Summary) -> String {
        let machine = machine();
        let mut md = String::from("# ftrt scaling report\n\n");
        if !self.partial.is_empty() {
            let _ = writeln!(
                md,
                "> **{} run: the targets are not judged.** {}.\n",
                if self.scale < 1.0 { "Quick" } else { "Partial" },
                self.partial.join("; ")
            );
        }
        for caveat in &self.caveats {
            let _ = writeln!(md, "> **Note:** {caveat}.\n");
        }
        let _ = writeln!(
            md,
            "Machine: {} CPUs ({}), {}, {}. Sizes x{}; {} measured repeat(s) per cell, \
             interleaved, after one untimed run per workload and runner; each runner warms up \
             in-process (a pass at a tenth of the size) before its clock starts, and ftrt's \
             runners keep the memory they free (`MIMALLOC_PURGE_DELAY=-1` unless the \
             environment sets it). Times run from the earliest thread's start to the last join \
             (`nogil-processes`: the longest of N one-thread processes released together after \
             their warm-ups; `list-append-shared`, `dict-shared-write`: their rounds, each from \
             its earliest thread's start to its last thread's end, and their containers' \
             drops). Medians of the repeats, ± the spread (max − min) / median; \
             speedup = the same build at 1 thread / at N; vs gil = the GIL reference at N / this \
             build at N (the `gil` build, or a free-threaded interpreter's default twin).\n",
            machine["cpus"],
            machine["cpu_model"].as_str().unwrap_or("?"),
            machine["os"].as_str().unwrap_or("?"),
            machine["rustc"].as_str().unwrap_or("?"),
            self.scale,
            self.repeat
        );
        md.push_str(&self.runners_markdown());
        md.push_str("\n## Summary\n\n");
        md.push_str(&summary.to_markdown());
        md.push_str(&self.results_markdown());
        md.push_str(&self.ns_per_op_markdown());
        md.push_str(&self.flags_markdown());
        md.push_str(&self.metrics_markdown());
        md.push_str("\n## Plots\n\n");
        md.push_str(
            "Throughput against threads, relative to the baseline build at 1 thread (log scale; \
             the ideal line runs to N = cores), one line per build and interpreter; \
             `io-latency-under-load` plots its ping latency instead. The heat map gives `vs_gil` \
             for every workload and thread count.\n\n![vs_gil](vs_gil.svg)\n\n",
        );
        for workload in &self.workloads {
            let _ = writeln!(md, "![{workload}]({workload}.svg)");
        }
        md
    }

    fn runners_markdown(&self) -> String {
        let mut md = String::from(
            "## Runners\n\n| name | what | header bytes | count strategy | vs_gil against |\n|---|---|---|---|---|\n",
        );
        for r in &self.runners {
            let what = match &r.path {
                Some(path) => format!(
                    "Python {} interpreter `{path}`",
                    if r.has_gil {
                        "(GIL)"
                    } else {
                        "(free-threaded)"
                    }
                ),
                None if r.processes => {
                    "`nogil` as N one-thread processes released together after their warm-ups, \
                     1/N of the work each: what the machine gives N independent workers"
                        .to_owned()
                }
                None => "ftrt build".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {} | {what} | {} | {} | {} |",
                r.build,
                r.info["header_size"]
                    .as_u64()
                    .map_or("-".to_owned(), |h| h.to_string()),
                r.info["count_strategy"].as_str().unwrap_or("-"),
                r.gil_reference.as_deref().unwrap_or(if r.processes {
                    "-"
                } else {
                    "- (no GIL twin given)"
                })
            );
        }
        md
    }

    fn results_markdown(&self) -> String {
        let mut md = String::from("\n## Results\n\n");
        md.push_str(LEGEND);
        md.push_str("\n\n| workload | build |");
        for t in &self.threads {
            let _ = write!(md, " {t} thread(s): s ±spread (speedup, vs gil) |");
        }
        md.push_str(" peak RSS (KiB, 1 thread) | check |\n|---|---|");
        for _ in &self.threads {
            md.push_str("---|");
        }
        md.push_str("---|---|\n");
        for workload in &self.workloads {
            for build in self.builds() {
                let row: Vec<Option<&Cell>> = self
                    .threads
                    .iter()
                    .map(|&t| self.cell(workload, build, t))
                    .collect();
                if row.iter().all(Option::is_none) {
                    continue;
                }
                let _ = write!(md, "| {workload} | {build} |");
                for cell in &row {
                    match cell {
                        Some(c) => {
                            let _ = write!(
                                md,
                                " {:.4}{} ±{} ({}, {}) |",
                                c.median_s,
                                c.markers(),
                                percent(c.spread()),
                                ratio(c.speedup),
                                ratio(c.vs_gil)
                            );
                        }
                        None => md.push_str(" - |"),
                    }
                }
                let rss = row
                    .iter()
                    .flatten()
                    .find(|c| c.threads == 1)
                    .map_or("-".into(), |c| c.peak_rss_kib.to_string());
                let check = row
                    .iter()
                    .flatten()
                    .map(|c| c.check.as_str())
                    .find(|c| *c != "ok")
                    .unwrap_or("ok");
                let _ = writeln!(md, " {rss} | {} |", check.replace('|', "/"));
            }
        }
        md
    }

    fn ns_per_op_markdown(&self) -> String {
        let builds: Vec<&str> = self
            .builds()
            .filter(|b| self.cells.iter().any(|c| c.build == *b))
            .collect();
        let mut md = String::from(
            "\n## Nanoseconds per operation\n\nMedian time / operations, at 1 thread and at the \
             largest thread count (wall time per operation, all threads together). Python \
             interpreters run their own sizes; an operation is the same unit in both.\n\n| workload | operation |",
        );
        let last = self.threads.iter().copied().max().unwrap_or(1);
        let counts: Vec<usize> = if last > 1 { vec![1, last] } else { vec![1] };
        for build in &builds {
            for t in &counts {
                let _ = write!(md, " {build} x{t} |");
            }
        }
        md.push_str("\n|---|---|");
        for _ in 0..builds.len() * counts.len() {
            md.push_str("---|");
        }
        md.push('\n');
        for workload in &self.workloads {
            let _ = write!(
                md,
                "| {workload} | {} |",
                self.units.get(workload).map_or("-", String::as_str)
            );
            for build in &builds {
                for &t in &counts {
                    let value = self
                        .cell(workload, build, t)
                        .and_then(Cell::ns_per_op)
                        .map_or("-".to_owned(), |ns| format!("{ns:.1}"));
                    let _ = write!(md, " {value} |");
                }
            }
            md.push('\n');
        }
        md
    }

    fn flags_markdown(&self) -> String {
        let mut md = String::new();
        let suspect: Vec<&Cell> = self.cells.iter().filter(|c| c.suspect.is_some()).collect();
        let short: Vec<&Cell> = self.cells.iter().filter(|c| c.short).collect();
        let failed: Vec<&Cell> = self.cells.iter().filter(|c| !c.ok()).collect();
        let noisy = self.cells.iter().filter(|c| c.noisy()).count();
        md.push_str("\n## Flags\n\n");
        let _ = writeln!(
            md,
            "- noisy cells (spread over {}): {noisy} of {}",
            percent(NOISY_SPREAD),
            self.cells.len()
        );
        let list = |cells: &[&Cell]| {
            if cells.is_empty() {
                "none".to_owned()
            } else {
                cells
                    .iter()
                    .map(|c| {
                        format!(
                            "{} {} x{} ({:.3} s, speedup {})",
                            c.workload,
                            c.build,
                            c.threads,
                            c.median_s,
                            ratio(c.speedup)
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        };
        let _ = writeln!(
            md,
            "- suspect (a GIL runner faster than {SUSPECT_GIL_SPEEDUP}x on CPU-bound work, which a GIL cannot do): {}",
            list(&suspect)
        );
        let _ = writeln!(
            md,
            "- short (a full-size 1-thread median under {SHORTEST_RUN_S} s, {SHORTEST_PYTHON_RUN_S} s for Python): {}",
            list(&short)
        );
        if failed.is_empty() {
            md.push_str("- failed cells: none\n");
        } else {
            md.push_str("- failed cells:\n");
            for c in failed {
                let _ = writeln!(
                    md,
                    "  - {} {} x{}: {}",
                    c.workload, c.build, c.threads, c.check
                );
            }
        }
        md
    }

    /// The cycle collector's pauses, for the cells that reported them (`gc_pause_*` metrics:
    /// the worst run's p99 and maximum, the median run's p50 and counts).
    fn gc_pauses_markdown(&self) -> String {
        let metric = |c: &Cell, name: &str| {
            c.metrics
                .get(name)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
        };
        let cells: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| c.metrics.contains_key("gc_pause_p99_ms"))
            .collect();
        if cells.is_empty() {
            return String::new();
        }
        let mut md = String::from(
            "\n## GC pauses\n\nThe cycle collector's stopped-world pauses in each run, and its local \
             collections (a thread searching its own local objects, no stop: only that thread \
             waits): the p99 and max columns are the worst run's, the p50 and counts the median \
             run's.\n\n| workload | build | threads | collections | \
             p50 ms | p99 ms | max ms | local collections | local p99 ms | local max ms |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
        );
        let count = |c: &Cell, name: &str| {
            c.metrics
                .get(name)
                .map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"))
        };
        for c in cells {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.workload,
                c.build,
                c.threads,
                count(c, "gc_collections"),
                metric(c, "gc_pause_p50_ms"),
                metric(c, "gc_pause_p99_ms"),
                metric(c, "gc_pause_max_ms"),
                count(c, "gc_local_collections"),
                metric(c, "gc_local_pause_p99_ms"),
                metric(c, "gc_local_pause_max_ms"),
            );
        }
        md
    }

    fn metrics_markdown(&self) -> String {
        let with_metrics: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| !c.metrics.is_empty())
            .collect();
        if with_metrics.is_empty() {
            return String::new();
        }
        let mut md = self.gc_pauses_markdown();
        md.push_str(
            "\n## Workload measurements\n\nMedians over the repeats, but the worst run's for a 99th \
             percentile or a maximum (`p99_ms`, `max_ms`, and names ending so).\n\n| workload | build | threads | \
             measurements |\n|---|---|---|---|\n",
        );
        for c in with_metrics {
            let values: Vec<String> = c
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} = {v:.4}"))
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                c.workload,
                c.build,
                c.threads,
                values.join(", ")
            );
        }
        md
    }
}

const LEGEND: &str = "Markers: `~` spread over 25 % of the median (noisy), `!` suspect (a GIL \
runner faster on CPU-bound threads than on one), `<` short (under the minimum run length), \
`FAILED` a failed check or a crashed runner.";

fn finite(value: f64) -> Option<f64> {
    value.is_finite().then_some(value)
}

pub fn ratio(value: Option<f64>) -> String {
    value
        .filter(|v| v.is_finite())
        .map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{:.0}%", value * 100.0)
    } else {
        "-".to_owned()
    }
}

/// The processor's name as Linux reports it (`model name` in `/proc/cpuinfo`), so that reports
/// from different machines say which is which; `?` where there is none.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| model_name(&info))
        .unwrap_or_else(|| "?".to_owned())
}

/// The first `model name` in the text of `/proc/cpuinfo`.
fn model_name(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
        .map(|(_, name)| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

pub fn machine() -> Value {
    let rustc = Command::new(std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into()))
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    json!({
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu_model": cpu_model(),
        "os": std::env::consts::OS,
        "rustc": rustc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::runs::Run;

    #[test]
    fn the_machine_line_names_the_first_processor_model() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Processor\n\nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            model_name(cpuinfo).as_deref(),
            Some("Intel(R) Xeon(R) Processor")
        );
        assert_eq!(model_name("processor\t: 0\nmodel name\t:\n"), None);
        assert_eq!(model_name(""), None);
    }

    fn python(build: &str, free_threaded: bool, reference: Option<&str>) -> RunnerSummary {
        RunnerSummary {
            build: build.to_owned(),
            variant: false,
            has_gil: !free_threaded,
            gil_reference: reference.map(str::to_owned),
            path: Some(format!("/opt/{build}/bin/python3")),
            processes: false,
            info: Value::Null,
            units: BTreeMap::new(),
        }
    }

    fn timed(workload: &str, build: &str, threads: usize, s: f64, ops: u64) -> Cell {
        let mut cell = Cell::measured(workload, build, threads, &[s]);
        cell.ops = Some(ops);
        cell
    }

    /// The report of a full run at 1 and 2 threads on 2 cores.
    fn report_at_one_and_two_threads(cells: Vec<Cell>, runners: Vec<RunnerSummary>) -> Report {
        Report::from_cells(cells, runners, vec![1, 2], 2, Vec::new())
    }

    /// A cell's tail metrics are its worst run's: G1 judges the pause p99 of a cell, and two
    /// runs in five at five times the goal must not hide behind the median's 0.1 ms.
    #[test]
    fn a_cell_reports_the_worst_runs_tails_and_the_median_of_the_rest() {
        let run = |p99: f64, max: f64, p50: f64| Run {
            elapsed_s: Some(1.0),
            ops: Some(100),
            check: "ok".to_owned(),
            metrics: BTreeMap::from([
                ("gc_pause_p99_ms".to_owned(), p99),
                ("gc_local_pause_max_ms".to_owned(), max),
                ("gc_pause_p50_ms".to_owned(), p50),
                ("p99_ms".to_owned(), p99),
            ]),
            peak_rss_kib: None,
        };
        let measurements = Measurements {
            runs: vec![
                run(0.1, 1.0, 0.05),
                run(50.0, 2.0, 0.06),
                run(0.1, 70.0, 0.07),
                run(50.0, 3.0, 0.08),
                run(0.1, 4.0, 0.09),
            ],
            warm_up_failures: Vec::new(),
        };
        let cell = cell_of(
            ("cycle-create".to_owned(), "nogil".to_owned(), 2),
            measurements,
        );
        assert_eq!(cell.metrics["gc_pause_p99_ms"], 50.0);
        assert_eq!(cell.metrics["gc_local_pause_max_ms"], 70.0);
        assert_eq!(cell.metrics["gc_pause_p50_ms"], 0.07);
        assert_eq!(
            cell.metrics["p99_ms"], 50.0,
            "io-latency's interval-mode p99"
        );
    }

    #[test]
    fn a_free_threaded_interpreter_gets_vs_gil_against_its_default_twin() {
        let cells = vec![
            timed("countdown", "python-3.14.0", 2, 2.0, 100),
            timed("countdown", "python-3.14.0t", 2, 1.0, 100),
        ];
        let report = Report::from_cells(
            cells,
            vec![
                python("python-3.14.0", false, Some("python-3.14.0")),
                python("python-3.14.0t", true, Some("python-3.14.0")),
            ],
            vec![2],
            2,
            Vec::new(),
        );
        assert_eq!(
            report
                .cell("countdown", "python-3.14.0t", 2)
                .unwrap()
                .vs_gil,
            Some(2.0)
        );
        assert_eq!(
            report.cell("countdown", "python-3.14.0", 2).unwrap().vs_gil,
            Some(1.0)
        );
        assert_eq!(report.pairs(), [("python-3.14.0t", "python-3.14.0")]);
    }

    /// A crashed run keeps the time it printed, for the record; no ratio may be built on it,
    /// on either side.
    #[test]
    fn no_ratio_is_derived_from_a_failed_cell() {
        let crashed = |workload: &str, build: &str, threads: usize| {
            let mut cell = timed(workload, build, threads, 0.1, 1000);
            cell.check = "the runner printed a result, then failed (signal 6)".to_owned();
            cell
        };
        let cells = vec![
            // gil x2 crashed: nogil x2's vs_gil has no reference.
            timed("countdown", "gil", 1, 1.0, 1000),
            crashed("countdown", "gil", 2),
            timed("countdown", "nogil", 1, 1.0, 1000),
            timed("countdown", "nogil", 2, 0.5, 1000),
            // nogil x1 crashed: no speedup for nogil x2; gil x1 is the throughput's baseline.
            timed("float-mult", "gil", 1, 1.0, 1000),
            timed("float-mult", "gil", 2, 1.0, 1000),
            crashed("float-mult", "nogil", 1),
            timed("float-mult", "nogil", 2, 0.5, 1000),
        ];
        let report = report_at_one_and_two_threads(
            cells,
            vec![
                RunnerSummary::variant("gil"),
                RunnerSummary::variant("nogil"),
            ],
        );
        let cell = |w: &str, b: &str, t: usize| report.cell(w, b, t).unwrap();
        assert_eq!(cell("countdown", "nogil", 2).vs_gil, None);
        assert_eq!(cell("countdown", "nogil", 2).speedup, Some(2.0));
        assert_eq!(cell("float-mult", "nogil", 2).speedup, None);
        assert_eq!(cell("float-mult", "nogil", 2).vs_gil, Some(2.0));
        for failed in [cell("countdown", "gil", 2), cell("float-mult", "nogil", 1)] {
            assert_eq!(
                (failed.speedup, failed.vs_gil, failed.relative_throughput),
                (None, None, None)
            );
        }
    }

    #[test]
    fn throughput_is_relative_to_the_gil_build_at_one_thread_by_time_per_operation() {
        let cells = vec![
            timed("countdown", "gil", 1, 1.0, 1000),
            timed("countdown", "nogil", 2, 0.5, 1000),
            // Another size, the same time per operation as gil at 1 thread.
            timed("countdown", "python-3.11.7", 1, 0.1, 100),
        ];
        let report = report_at_one_and_two_threads(
            cells,
            vec![
                RunnerSummary::variant("gil"),
                RunnerSummary::variant("nogil"),
                python("python-3.11.7", false, Some("python-3.11.7")),
            ],
        );
        let relative =
            |b: &str, t: usize| report.cell("countdown", b, t).unwrap().relative_throughput;
        assert_eq!(relative("gil", 1), Some(1.0));
        assert_eq!(relative("nogil", 2), Some(2.0));
        assert_eq!(relative("python-3.11.7", 1), Some(1.0));
        assert_eq!(
            report.cell("countdown", "nogil", 2).unwrap().ns_per_op(),
            Some(500_000.0)
        );
    }

    /// A Python twin that counts another operation than the runtime's (`native-release`: bytes
    /// hashed, not kernel iterations) gets no relative throughput: the two times per operation
    /// do not compare.
    #[test]
    fn throughput_compares_only_times_per_operation_of_the_same_unit() {
        let units = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(w, u)| ((*w).to_owned(), (*u).to_owned()))
                .collect()
        };
        let runtime = units(&[
            ("countdown", "countdown step"),
            ("native-release", "kernel iteration"),
        ]);
        let mut gil = RunnerSummary::variant("gil");
        gil.units = runtime.clone();
        let mut interpreter = python("python-3.11.7", false, Some("python-3.11.7"));
        interpreter.units = units(&[
            ("countdown", "countdown step"),
            ("native-release", "byte hashed"),
        ]);
        let cells = vec![
            timed("countdown", "gil", 1, 1.0, 1000),
            timed("countdown", "python-3.11.7", 1, 1.0, 100),
            timed("native-release", "gil", 1, 1.0, 1000),
            timed("native-release", "python-3.11.7", 1, 1.0, 100),
        ];
        let mut report = Report::from_cells(cells, vec![gil, interpreter], vec![1], 2, Vec::new());
        report.units = runtime;
        report.derive();
        let relative = |w: &str| {
            report
                .cell(w, "python-3.11.7", 1)
                .unwrap()
                .relative_throughput
        };
        assert_eq!(relative("countdown"), Some(0.1));
        assert_eq!(relative("native-release"), None);
    }

    #[test]
    fn a_gil_speedup_on_cpu_bound_work_is_suspect_but_not_on_io() {
        let cells = vec![
            timed("dict-shared-write", "gil", 1, 1.0, 1),
            timed("dict-shared-write", "gil", 2, 0.5, 1),
            timed("io-sleep", "gil", 1, 1.0, 1),
            timed("io-sleep", "gil", 2, 0.5, 1),
            timed("countdown", "gil", 1, 1.0, 1),
            timed("countdown", "gil", 2, 0.95, 1),
        ];
        let report = report_at_one_and_two_threads(cells, vec![RunnerSummary::variant("gil")]);
        assert!(report
            .cell("dict-shared-write", "gil", 2)
            .unwrap()
            .suspect
            .is_some());
        assert!(report.cell("io-sleep", "gil", 2).unwrap().suspect.is_none());
        assert!(report
            .cell("countdown", "gil", 2)
            .unwrap()
            .suspect
            .is_none());
    }

    #[test]
    fn a_partial_run_says_so_at_the_top_of_the_markdown() {
        let report = Report::from_cells(
            vec![timed("countdown", "gil", 1, 1.0, 1)],
            vec![RunnerSummary::variant("gil")],
            vec![1],
            2,
            vec!["builds left out: nogil".to_owned()],
        );
        let summary = crate::bench::targets::evaluate(&report);
        let md = report.to_markdown(&summary);
        let top: String = md.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(top.contains("Partial run"), "{top}");
        assert!(top.contains("builds left out: nogil"), "{top}");
    }

    #[test]
    fn runners_taken_as_found_and_single_repeats_are_noted_in_both_reports() {
        let mut report = Report::from_cells(
            vec![timed("countdown", "gil", 1, 1.0, 1)],
            vec![RunnerSummary::variant("gil")],
            vec![1],
            2,
            Vec::new(),
        );
        report.caveats = crate::bench::caveats(true, 1);
        let summary = crate::bench::targets::evaluate(&report);
        let md = report.to_markdown(&summary);
        assert!(md.contains("taken as found (`--no-build`)"), "{md}");
        assert!(md.contains("no spread is measured"), "{md}");
        assert_eq!(
            report.to_json(&summary)["caveats"].as_array().map(Vec::len),
            Some(2)
        );
        assert!(crate::bench::caveats(false, 2).is_empty());
    }
}
