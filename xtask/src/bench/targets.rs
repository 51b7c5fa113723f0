//! The mission's targets (P2 to P13, and G1 for the cycle collector), evaluated on one report.
//!
//! Each target names the cells it read. A cell it needs that the run did not measure, or whose
//! check failed, makes the target "not measured"; and only a full run (every workload and build
//! at the default thread counts and full size) judges a target met or missed: a quick or partial
//! run shows the values and says it did not judge them.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::report::{ratio, Cell, Report, MEASURED_BY_LATENCY};
use super::{PRIVATE_WORKLOADS, PROCESSES_BUILD, WORKLOADS};

/// The workloads measured by their time (P2, P8 and P11 read every one of them).
fn timed_workloads() -> Vec<&'static str> {
    WORKLOADS
        .iter()
        .copied()
        .filter(|w| !MEASURED_BY_LATENCY.contains(w))
        .collect()
}

const SHARED_READS: &[&str] = &["dict-shared-read", "immortal-read", "string-intern"];
const CPU_BOUND: &[&str] = &[
    "countdown",
    "float-mult",
    "object-create",
    "list-append-private",
    "dict-private",
];
const RELEASING: &[&str] = &["io-sleep", "native-release"];
/// P13's workload: every thread replaces items of one shared list, each replaced item retired.
const REPLACE_HEAVY: &str = "list-replace-shared";
const SHARED_MORTAL: &[&str] = &[
    "shared-refcount",
    "shared-attribute-read",
    "shared-attribute-keep",
    "dict-shared-read",
];

/// P8: how much slower than biased counting plain atomic counting must be, at least, to count
/// as measurably slower (a smaller difference is within what repeats of one cell differ by).
const P8_MARGIN: f64 = 1.03;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Met,
    Missed,
    /// A cell it needs is missing or failed.
    NotMeasured,
    /// Measured, but on a quick or partial run.
    NotJudged,
}

impl Verdict {
    fn text(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "MISSED",
            Verdict::NotMeasured => "not measured",
            Verdict::NotJudged => "not judged (partial run)",
        }
    }
}

pub struct Target {
    pub id: &'static str,
    pub what: &'static str,
    pub goal: &'static str,
    /// The values found, or what is missing.
    pub measured: String,
    /// The cells read, as `workload build xN`.
    pub cells: Vec<String>,
    /// Cells needed that were not measured or failed.
    pub missing: Vec<String>,
    /// Whether the values meet the goal; `None` when not measured.
    pub meets: Option<bool>,
    pub verdict: Verdict,
}

pub struct Summary {
    pub targets: Vec<Target>,
    /// Per workload: the single-thread time of each free-threaded build over the gil build's.
    pub single_thread_cost: Vec<(String, Option<f64>, Option<f64>)>,
    /// Per free-threaded runner with a GIL twin: single-thread cost and `vs_gil` geometric means.
    pub pairs: Vec<PairSummary>,
}

/// How a free-threaded runner (ftrt's `nogil` builds, a free-threaded interpreter) compares
/// with its GIL twin over the workloads both ran.
pub struct PairSummary {
    pub build: String,
    pub reference: String,
    /// Geometric mean over workloads of (time at 1 thread / the twin's).
    pub single_thread_cost: Option<f64>,
    /// Per thread count ≥ 2: geometric mean of `vs_gil`, and how many workloads.
    pub vs_gil: Vec<(usize, f64, usize)>,
    pub workloads: usize,
}

fn geomean(values: &[f64]) -> Option<f64> {
    (!values.is_empty())
        .then(|| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

/// Reads cells for one target, noting which it used and which it lacked.
struct Reader<'a> {
    report: &'a Report,
    cells: Vec<String>,
    missing: Vec<String>,
    /// Cells read that the report flags: noisy (`~`), short (`<`) or suspect (`!`).
    flagged: Vec<String>,
}

impl<'a> Reader<'a> {
    /// The thread counts the targets judge: the run's default ones (a full run has them all).
    /// Counts a run adds are reported, not judged: the verdicts of two full runs read the same
    /// cells, whatever else either measured.
    fn judged_counts(&self) -> Vec<usize> {
        crate::bench::default_threads(self.report.cores)
            .into_iter()
            .filter(|n| self.report.threads.contains(n))
            .collect()
    }

    /// The judged thread counts of two or more, or `None` (and `what` at 2 or more threads
    /// missing) where it has none.
    fn counts_from_two(&mut self, what: &str) -> Option<Vec<usize>> {
        let counts: Vec<usize> = self
            .judged_counts()
            .into_iter()
            .filter(|&t| t >= 2)
            .collect();
        if counts.is_empty() {
            self.missing.push(format!("{what} at 2 or more threads"));
            return None;
        }
        Some(counts)
    }

    fn cell(&mut self, workload: &str, build: &str, threads: usize) -> Option<&'a Cell> {
        let name = format!("{workload} {build} x{threads}");
        match self.report.cell(workload, build, threads) {
            // A positive time: a zero would make every ratio built on it infinite (runs that
            // print one fail already, `runs::result_fault`; this holds for reports read back).
            Some(c) if c.ok() && c.median_s.is_finite() && c.median_s > 0.0 => {
                if !self.cells.contains(&name) {
                    let marks = flag_marks(c);
                    if !marks.is_empty() {
                        self.flagged.push(format!("{name}{marks}"));
                    }
                    self.cells.push(name);
                }
                Some(c)
            }
            Some(_) => {
                self.missing.push(format!("{name} (failed)"));
                None
            }
            None => {
                self.missing.push(name);
                None
            }
        }
    }

    /// The peak memory of a cell, `None` (and missing) where the runner could not read it: a
    /// runner prints 0 off Linux.
    fn peak_rss_kib(&mut self, workload: &str, build: &str, threads: usize) -> Option<u64> {
        let peak = self.cell(workload, build, threads)?.peak_rss_kib;
        if peak == 0 {
            self.missing.push(format!(
                "{workload} {build} x{threads} (peak memory unknown)"
            ));
            return None;
        }
        Some(peak)
    }

    /// Whether the machine can measure scaling: `false`, and missing, on one core, where a
    /// second thread shares the core and every speedup is the machine's.
    fn two_cores(&mut self) -> bool {
        let n = self.report.cores;
        if n < 2 {
            self.missing
                .push(format!("a machine with 2 or more cores (this one has {n})"));
        }
        n >= 2
    }

    /// A metric the runner reported for `cell` (read with [`cell`](Self::cell)), `None` (and
    /// missing, with its cell's name) where it reported none.
    fn metric(&mut self, cell: &Cell, name: &str) -> Option<f64> {
        let value = cell.metrics.get(name).copied();
        if value.is_none() {
            self.missing.push(format!(
                "{} {} x{} (no {name})",
                cell.workload, cell.build, cell.threads
            ));
        }
        value
    }

    fn time(&mut self, workload: &str, build: &str, threads: usize) -> Option<f64> {
        self.cell(workload, build, threads).map(|c| c.median_s)
    }

    /// `build`'s time at 1 thread / at `threads`.
    fn speedup(&mut self, workload: &str, build: &str, threads: usize) -> Option<f64> {
        let one = self.time(workload, build, 1);
        let n = self.time(workload, build, threads);
        Some(one? / n?)
    }

    /// Time of `slow` / time of `fast`, same workload and threads.
    fn time_ratio(
        &mut self,
        workload: &str,
        slow: &str,
        fast: &str,
        threads: usize,
    ) -> Option<f64> {
        let slow = self.time(workload, slow, threads);
        let fast = self.time(workload, fast, threads);
        Some(slow? / fast?)
    }

    /// The machine's reference beside a speedup ([`PROCESSES_BUILD`]'s speedup at `threads`), for
    /// the workloads it was measured on: shown, never required (the goal is the runtime's, and
    /// a run without it judges the same).
    fn as_processes(&mut self, workloads: &[&str], threads: usize) -> String {
        let measured = |report: &Report, workload: &str, n: usize| {
            report
                .cell(workload, PROCESSES_BUILD, n)
                .filter(|c| c.ok() && c.median_s.is_finite() && c.median_s > 0.0)
                .map(|c| c.median_s)
        };
        let mut values = Vec::new();
        for &workload in workloads {
            let one = measured(self.report, workload, 1);
            let n = measured(self.report, workload, threads);
            if let (Some(one), Some(n)) = (one, n) {
                for t in [1, threads] {
                    self.cells
                        .push(format!("{workload} {PROCESSES_BUILD} x{t}"));
                }
                values.push((workload.to_owned(), one / n));
            }
        }
        if values.is_empty() {
            String::new()
        } else {
            format!(
                "; the machine, as {threads} processes ({PROCESSES_BUILD}): {}",
                listing(&values)
            )
        }
    }

    /// `f` for each workload: every value, or `None` if any is missing (all are still read, so
    /// that every missing cell is listed).
    fn each(
        &mut self,
        workloads: &[&str],
        mut f: impl FnMut(&mut Self, &str) -> Option<f64>,
    ) -> Option<Vec<(String, f64)>> {
        let values: Vec<Option<(String, f64)>> = workloads
            .iter()
            .map(|w| f(self, w).map(|v| ((*w).to_owned(), v)))
            .collect();
        values.into_iter().collect()
    }
}

fn listing(values: &[(String, f64)]) -> String {
    values
        .iter()
        .map(|(w, v)| format!("{w} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One target: `read` returns what it measured and whether that meets the goal, or `None` if
/// it lacks cells.
fn target(
    report: &Report,
    id: &'static str,
    what: &'static str,
    goal: &'static str,
    read: impl FnOnce(&mut Reader) -> Option<(String, bool)>,
) -> Target {
    let mut reader = Reader {
        report,
        cells: Vec::new(),
        missing: Vec::new(),
        flagged: Vec::new(),
    };
    let found = read(&mut reader);
    let (measured, meets) = match found {
        Some((mut values, meets)) if reader.missing.is_empty() => {
            // A verdict that rests on cells the report flags says so beside its values.
            if !reader.flagged.is_empty() {
                let _ = write!(
                    values,
                    "; reads flagged cells: {}",
                    first_few(&reader.flagged)
                );
            }
            (values, Some(meets))
        }
        _ => {
            let text = if reader.missing.is_empty() {
                "not measured".to_owned()
            } else {
                format!("not measured: lacks {}", first_few(&reader.missing))
            };
            (text, None)
        }
    };
    let verdict = match meets {
        None => Verdict::NotMeasured,
        Some(_) if !report.partial.is_empty() => Verdict::NotJudged,
        Some(true) => Verdict::Met,
        Some(false) => Verdict::Missed,
    };
    Target {
        id,
        what,
        goal,
        measured,
        cells: reader.cells,
        missing: reader.missing,
        meets,
        verdict,
    }
}

/// The first four of `items`, and how many more there are: a verdict's line stays short.
fn first_few(items: &[String]) -> String {
    let shown = &items[..items.len().min(4)];
    let mut text = shown.join(", ");
    let more = items.len() - shown.len();
    if more > 0 {
        let _ = write!(text, " and {more} more");
    }
    text
}

/// The report's marks on a cell that a verdict reads (`~` noisy, `<` short, `!` suspect), or
/// nothing.
fn flag_marks(cell: &Cell) -> String {
    let mut marks = String::new();
    if cell.noisy() {
        marks.push('~');
    }
    if cell.short {
        marks.push('<');
    }
    if cell.suspect.is_some() {
        marks.push('!');
    }
    marks
}

pub fn evaluate(report: &Report) -> Summary {
    let mut targets = Vec::new();
    targets.push(target(
        report,
        "P2",
        "single-thread cost of nogil vs gil (time ratio at 1 thread, every timed workload)",
        "geometric mean <= 1.03, none > 1.10",
        |r| {
            let costs = r.each(&timed_workloads(), |r, w| {
                r.time_ratio(w, "nogil", "gil", 1)
            })?;
            let values: Vec<f64> = costs.iter().map(|(_, c)| *c).collect();
            let g = geomean(&values)?;
            let (worst, w) = costs
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(w, v)| (w.clone(), *v))?;
            Some((
                format!("geomean {g:.3}, worst {worst} {w:.2}"),
                g <= 1.03 && values.iter().all(|&c| c <= 1.10),
            ))
        },
    ));
    targets.push(target(
        report,
        "P3",
        "nogil 2-thread speedup, private-data workloads",
        ">= 1.85",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let v = r.each(PRIVATE_WORKLOADS, |r, w| r.speedup(w, "nogil", 2))?;
            let processes = r.as_processes(PRIVATE_WORKLOADS, 2);
            Some((
                format!("{}{processes}", listing(&v)),
                v.iter().all(|(_, s)| *s >= 1.85),
            ))
        },
    ));
    targets.push(target(
        report,
        "P3b",
        "nogil 2-thread speedup, shared-read workloads",
        ">= 1.7",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let v = r.each(SHARED_READS, |r, w| r.speedup(w, "nogil", 2))?;
            Some((listing(&v), v.iter().all(|(_, s)| *s >= 1.7)))
        },
    ));
    targets.push(target(
        report,
        "P4",
        "gil 2-thread speedup, CPU-bound workloads (S1)",
        "<= 1.15",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let v = r.each(CPU_BOUND, |r, w| r.speedup(w, "gil", 2))?;
            Some((listing(&v), v.iter().all(|(_, s)| *s <= 1.15)))
        },
    ));
    targets.push(target(
        report,
        "P5",
        "gil 2-thread speedup, io-sleep and native-release (S4, S5)",
        ">= 1.8",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let v = r.each(RELEASING, |r, w| r.speedup(w, "gil", 2))?;
            Some((listing(&v), v.iter().all(|(_, s)| *s >= 1.8)))
        },
    ));
    targets.push(target(
        report,
        "P6",
        "object header in nogil (bytes)",
        "<= 24",
        |r| {
            let header = report
                .runners
                .iter()
                .find(|runner| runner.build == "nogil")
                .and_then(|runner| runner.info["header_size"].as_f64());
            match header {
                Some(h) => {
                    r.cells.push("nogil --info".to_owned());
                    Some((format!("{h}"), h <= 24.0))
                }
                None => {
                    r.missing.push("nogil --info".to_owned());
                    None
                }
            }
        },
    ));
    targets.push(target(
        report,
        "P7",
        "peak memory nogil / gil on object-create (1 thread; 100,000 instances held at once)",
        "<= 1.10",
        |r| {
            let nogil = r.peak_rss_kib("object-create", "nogil", 1);
            let gil = r.peak_rss_kib("object-create", "gil", 1);
            let (nogil, gil) = (nogil? as f64, gil? as f64);
            let m = nogil / gil;
            Some((format!("{m:.3} ({nogil} KiB / {gil} KiB)"), m <= 1.10))
        },
    ));
    targets.push(target(
        report,
        "P8",
        "nogil-atomic-rc vs nogil at 1 thread (time ratio, geometric mean over every timed workload)",
        ">= 1.03 (measurably slower)",
        |r| {
            let v = r.each(&timed_workloads(), |r, w| {
                r.time_ratio(w, "nogil-atomic-rc", "nogil", 1)
            })?;
            let g = geomean(&v.iter().map(|(_, x)| *x).collect::<Vec<_>>())?;
            Some((format!("geomean {g:.3}"), g >= P8_MARGIN))
        },
    ));
    targets.push(target(
        report,
        "P9",
        "nogil speedup / N at N = cores, every thread reading one shared mortal object",
        ">= 0.8",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let n = report.cores;
            let v = r.each(SHARED_MORTAL, |r, w| {
                r.speedup(w, "nogil", n).map(|s| s / n as f64)
            })?;
            Some((
                format!("N = {n}: {}", listing(&v)),
                v.iter().all(|(_, s)| *s >= 0.8),
            ))
        },
    ));
    targets.push(target(
        report,
        "P10",
        "gil fair mode: I/O ping latency under CPU load vs no load (p50)",
        "<= 2 (fair)",
        |r| {
            // Under the default run's heaviest load (twice the cores), where it was measured;
            // else the heaviest measured.
            let heaviest_default = crate::bench::default_threads(report.cores).into_iter().max();
            let loaded_threads = heaviest_default
                .filter(|n| report.threads.contains(n))
                .or_else(|| report.threads.iter().copied().filter(|&t| t >= 2).max());
            let Some(n) = loaded_threads else {
                r.missing
                    .push("io-latency-under-load gil at 2 or more threads".to_owned());
                return None;
            };
            // Each cell read once, so that each missing one is listed once.
            let idle = r.cell("io-latency-under-load", "gil", 1);
            let loaded = r.cell("io-latency-under-load", "gil", n);
            let idle = idle.and_then(|c| r.metric(c, "p50_ms"));
            let (fair, interval) = match loaded {
                Some(c) => (r.metric(c, "fair_p50_ms"), r.metric(c, "p50_ms")),
                None => (None, None),
            };
            let baseline = idle?.max(1e-3);
            let (fair, interval) = (fair? / baseline, interval? / baseline);
            Some((
                format!("{n} threads: fair {fair:.2}, interval {interval:.2} (x idle p50 {baseline:.3} ms)"),
                fair <= 2.0,
            ))
        },
    ));
    targets.push(target(
        report,
        "P11",
        "nogil vs gil at the same thread count, N >= 2, every timed workload",
        "vs_gil >= 1.0",
        |r| {
            let counts = r.counts_from_two("every workload")?;
            let mut all = Vec::new();
            for &n in &counts {
                let v = r.each(&timed_workloads(), |r, w| {
                    r.time_ratio(w, "gil", "nogil", n)
                });
                all.extend(
                    v.into_iter()
                        .flatten()
                        .map(|(w, x)| (format!("{w} x{n}"), x)),
                );
            }
            let losers: Vec<(String, f64)> =
                all.iter().filter(|(_, v)| *v < 1.0).cloned().collect();
            let lowest = all.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min);
            Some(if losers.is_empty() {
                (
                    format!("all {} cells >= 1.0 (lowest {lowest:.2})", all.len()),
                    true,
                )
            } else {
                (format!("below 1.0: {}", listing(&losers)), false)
            })
        },
    ));
    targets.push(target(
        report,
        "P13",
        "memory held by deferred reclamation: peak memory nogil / gil on list-replace-shared, \
         at every thread count >= 2 (one thread frees at once in both builds)",
        "<= 1.5",
        |r| {
            let counts = r.counts_from_two(REPLACE_HEAVY)?;
            let mut ratios = Vec::new();
            for &n in &counts {
                let nogil = r.peak_rss_kib(REPLACE_HEAVY, "nogil", n);
                let gil = r.peak_rss_kib(REPLACE_HEAVY, "gil", n);
                if let (Some(nogil), Some(gil)) = (nogil, gil) {
                    ratios.push((format!("x{n}"), nogil as f64 / gil as f64));
                }
            }
            let worst = ratios.iter().map(|(_, m)| *m).fold(0.0, f64::max);
            Some((
                format!("{} (worst {worst:.2})", listing(&ratios)),
                worst <= 1.5,
            ))
        },
    ));
    targets.push(target(
        report,
        "G1",
        "cycle-create nogil: speedup at 2 threads, and the GC pause p99 at every default thread \
         count (the worse of the stopped-world pauses and the local collections, which stall \
         their own thread; each the worst run's)",
        "speedup >= 1.7, p99 < 10 ms",
        |r| {
            if !r.two_cores() {
                return None;
            }
            let speedup = r.speedup("cycle-create", "nogil", 2);
            let mut worst: Option<(usize, f64)> = None;
            let mut every_count = true;
            for n in r.judged_counts() {
                // Every count is read, so that every missing cell or metric is listed.
                let cell = r.cell("cycle-create", "nogil", n);
                // Both are required: a runner that stopped reporting one would be judged on
                // the other alone.
                let stopped = cell.and_then(|c| r.metric(c, "gc_pause_p99_ms"));
                let local = cell.and_then(|c| r.metric(c, "gc_local_pause_p99_ms"));
                match stopped
                    .zip(local)
                    .map(|(stopped, local)| stopped.max(local))
                {
                    Some(p99) if worst.is_none_or(|(_, w)| p99 > w) => worst = Some((n, p99)),
                    Some(_) => {}
                    None => every_count = false,
                }
            }
            if !every_count {
                return None;
            }
            let (speedup, (at, p99)) = (speedup?, worst?);
            let processes = r.as_processes(&["cycle-create"], 2);
            Some((
                format!("speedup {speedup:.2}, worst p99 {p99:.2} ms (x{at}){processes}"),
                speedup >= 1.7 && p99 < 10.0,
            ))
        },
    ));

    let cost = |w: &str, b: &str| {
        let ok = |b: &str| report.cell(w, b, 1).filter(|c| c.ok());
        Some(ok(b)?.median_s / ok("gil")?.median_s)
    };
    let single_thread_cost = report
        .workloads
        .iter()
        .filter(|w| !MEASURED_BY_LATENCY.contains(&w.as_str()))
        .map(|w| (w.clone(), cost(w, "nogil"), cost(w, "nogil-atomic-rc")))
        .collect();
    Summary {
        targets,
        single_thread_cost,
        pairs: pairs(report),
    }
}

fn pairs(report: &Report) -> Vec<PairSummary> {
    report
        .pairs()
        .into_iter()
        .map(|(build, reference)| {
            let both = |w: &str, t: usize| {
                let mine = report.cell(w, build, t).filter(|c| c.ok())?;
                let theirs = report.cell(w, reference, t).filter(|c| c.ok())?;
                Some(mine.median_s / theirs.median_s)
            };
            let timed: Vec<&String> = report
                .workloads
                .iter()
                .filter(|w| !MEASURED_BY_LATENCY.contains(&w.as_str()))
                .collect();
            let costs: Vec<f64> = timed.iter().filter_map(|w| both(w, 1)).collect();
            let vs_gil = report
                .threads
                .iter()
                .filter(|&&t| t >= 2)
                .filter_map(|&t| {
                    let v: Vec<f64> = timed
                        .iter()
                        .filter_map(|w| both(w, t).map(|r| 1.0 / r))
                        .collect();
                    Some((t, geomean(&v)?, v.len()))
                })
                .collect();
            PairSummary {
                build: build.to_owned(),
                reference: reference.to_owned(),
                single_thread_cost: geomean(&costs),
                vs_gil,
                workloads: costs.len(),
            }
        })
        .collect()
}

pub fn print(summary: &Summary) {
    println!("\nsingle-thread cost against gil (time at 1 thread / gil's):");
    for (workload, nogil, atomic) in &summary.single_thread_cost {
        println!(
            "  {workload:<24} nogil {:>6}  nogil-atomic-rc {:>6}",
            ratio(*nogil),
            ratio(*atomic)
        );
    }
    if !summary.pairs.is_empty() {
        println!("\nfree-threading against its GIL twin (geometric means):");
        for p in &summary.pairs {
            println!("  {}", p.describe());
        }
    }
    println!("\ntargets:");
    for t in &summary.targets {
        println!(
            "  {:<4} {:<12} {} (goal {}): {}",
            t.id,
            t.verdict.text(),
            t.what,
            t.goal,
            t.measured
        );
    }
}

impl PairSummary {
    fn describe(&self) -> String {
        let vs_gil: Vec<String> = self
            .vs_gil
            .iter()
            .map(|(t, g, n)| format!("vs_gil at {t} threads {g:.2} ({n} workloads)"))
            .collect();
        format!(
            "{} / {}: single-thread cost {} ({} workloads); {}",
            self.build,
            self.reference,
            ratio(self.single_thread_cost),
            self.workloads,
            vs_gil.join(", ")
        )
    }
}

impl Summary {
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.targets
                .iter()
                .map(|t| {
                    json!({
                        "id": t.id, "what": t.what, "goal": t.goal, "measured": t.measured,
                        "cells": t.cells, "missing": t.missing, "meets": t.meets,
                        "met": (t.verdict == Verdict::Met).then_some(true)
                            .or((t.verdict == Verdict::Missed).then_some(false)),
                        "verdict": t.verdict.text(),
                    })
                })
                .collect(),
        )
    }

    pub fn to_markdown(&self) -> String {
        let mut md = String::from(
            "| target | what | goal | measured | verdict | cells read |\n|---|---|---|---|---|---|\n",
        );
        for t in &self.targets {
            let cells = if t.cells.len() > 6 {
                format!(
                    "{} cells: {}, ... (all below)",
                    t.cells.len(),
                    t.cells[..3].join(", ")
                )
            } else {
                t.cells.join(", ")
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                t.id,
                t.what,
                t.goal,
                t.measured,
                t.verdict.text(),
                cells
            );
        }
        // Every cell of the verdicts whose lists the table cuts short.
        for t in self.targets.iter().filter(|t| t.cells.len() > 6) {
            let _ = writeln!(
                md,
                "\nCells {} read ({}): {}.",
                t.id,
                t.cells.len(),
                t.cells.join(", ")
            );
        }
        if !self.pairs.is_empty() {
            md.push_str("\nFree-threading against its GIL twin (geometric means over the workloads both ran):\n\n");
            for p in &self.pairs {
                let _ = writeln!(md, "- {}", p.describe());
            }
        }
        md.push_str("\nSingle-thread cost against `gil` (time at 1 thread divided by the gil build's):\n\n| workload | nogil | nogil-atomic-rc |\n|---|---|---|\n");
        for (workload, nogil, atomic) in &self.single_thread_cost {
            let _ = writeln!(
                md,
                "| {workload} | {} | {} |",
                ratio(*nogil),
                ratio(*atomic)
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::RunnerSummary;

    fn cell(workload: &str, build: &str, threads: usize, median_s: f64) -> Cell {
        let mut cell = Cell::measured(workload, build, threads, &[median_s]);
        cell.ops = Some(1000);
        cell.peak_rss_kib = 1000;
        cell
    }

    fn runners(builds: &[&str]) -> Vec<RunnerSummary> {
        builds.iter().map(|b| RunnerSummary::variant(b)).collect()
    }

    /// A full run (every workload, build and default thread count on 2 cores) in which every
    /// build takes 1 s at 1 thread and `at_2(workload, build)` at 2 threads.
    fn full_run(at_2: impl Fn(&str, &str) -> f64) -> Vec<Cell> {
        let mut cells = Vec::new();
        for w in WORKLOADS {
            for b in ["gil", "nogil", "nogil-atomic-rc"] {
                cells.push(cell(w, b, 1, 1.0));
                cells.push(cell(w, b, 2, at_2(w, b)));
                cells.push(cell(w, b, 4, at_2(w, b)));
            }
        }
        cells
    }

    /// The report of a full run's cells (every build, at 1, 2 and 4 threads, on 2 cores).
    fn full_report(cells: Vec<Cell>) -> Report {
        Report::from_cells(
            cells,
            runners(&["gil", "nogil", "nogil-atomic-rc"]),
            vec![1, 2, 4],
            2,
            Vec::new(),
        )
    }

    fn find<'a>(summary: &'a Summary, id: &str) -> &'a Target {
        summary.targets.iter().find(|t| t.id == id).unwrap()
    }

    /// A thread count the run adds to the defaults is reported, not judged: P11 met at the
    /// default counts stays met with a count where `nogil` loses, and reads no cell of it.
    #[test]
    fn added_thread_counts_are_not_judged() {
        let mut cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 });
        for w in WORKLOADS {
            cells.push(cell(w, "gil", 64, 1.0));
            cells.push(cell(w, "nogil", 64, 3.0));
            cells.push(cell(w, "nogil-atomic-rc", 64, 3.0));
        }
        let report = Report::from_cells(
            cells,
            runners(&["gil", "nogil", "nogil-atomic-rc"]),
            vec![1, 2, 4, 64],
            2,
            Vec::new(),
        );
        let summary = evaluate(&report);
        let p11 = find(&summary, "P11");
        assert_eq!(p11.verdict, Verdict::Met, "{:?}", p11.measured);
        assert!(
            !p11.cells.iter().any(|c| c.ends_with("x64")),
            "{:?}",
            p11.cells
        );
    }

    #[test]
    fn a_partial_run_marks_no_target_met() {
        // Only io-sleep and native-release, only the gil build: what P5 looks at, and it
        // would pass.
        let cells = vec![
            cell("io-sleep", "gil", 1, 1.0),
            cell("io-sleep", "gil", 2, 0.5),
            cell("native-release", "gil", 1, 1.0),
            cell("native-release", "gil", 2, 0.5),
        ];
        let partial = crate::bench::partial_because(
            &["io-sleep", "native-release"],
            &[crate::variants::Variant::Gil],
            &[1, 2],
            1.0,
            2,
        );
        assert!(!partial.is_empty());
        let report = Report::from_cells(cells, runners(&["gil"]), vec![1, 2], 2, partial);
        let summary = evaluate(&report);
        let met: Vec<&str> = summary
            .targets
            .iter()
            .filter(|t| t.verdict == Verdict::Met)
            .map(|t| t.id)
            .collect();
        assert!(met.is_empty(), "a partial run claimed {met:?}");
        let p5 = find(&summary, "P5");
        assert_eq!(p5.meets, Some(true), "the values are still shown");
        assert_eq!(p5.verdict, Verdict::NotJudged);
        assert_eq!(find(&summary, "P3").verdict, Verdict::NotMeasured);
    }

    #[test]
    fn a_default_run_measures_at_the_core_count_which_p9_reads() {
        assert_eq!(crate::bench::default_threads(2), [1, 2, 4]);
        assert_eq!(crate::bench::default_threads(4), [1, 2, 4, 8]);
        assert_eq!(crate::bench::default_threads(16), [1, 2, 16, 32]);
        assert_eq!(crate::bench::default_threads(1), [1, 2]);
        let all: Vec<&str> = WORKLOADS.to_vec();
        let without_cores =
            crate::bench::partial_because(&all, &crate::variants::Variant::ALL, &[1, 2, 8], 1.0, 4);
        assert!(
            without_cores.iter().any(|r| r.contains('4')),
            "a run without x4 on 4 cores cannot judge P9, so it is partial: {without_cores:?}"
        );
    }

    #[test]
    fn p7_is_not_measured_when_a_runner_could_not_read_its_peak_memory() {
        let mut cells = full_run(|_, _| 1.0);
        for c in &mut cells {
            if c.workload == "object-create" && c.build == "nogil" && c.threads == 1 {
                // What a runner prints where it cannot read its peak (not Linux).
                c.peak_rss_kib = 0;
            }
        }
        let summary = evaluate(&full_report(cells));
        let p7 = find(&summary, "P7");
        assert_eq!(p7.verdict, Verdict::NotMeasured, "{}", p7.measured);
        assert!(
            p7.missing
                .iter()
                .any(|m| m.contains("object-create nogil x1")),
            "{:?}",
            p7.missing
        );
    }

    /// P13 compares the peak memory of the replace-heavy workload at every count of two threads
    /// or more, judged by the worst; one thread (which frees at once in every build) is not read.
    #[test]
    fn p13_judges_the_worst_peak_memory_ratio_from_two_threads_on() {
        let with_peaks = |x1: u64, x2: u64, x4: u64| {
            let mut cells = full_run(|_, _| 0.5);
            for c in &mut cells {
                if c.workload == REPLACE_HEAVY && c.build == "nogil" {
                    c.peak_rss_kib = match c.threads {
                        1 => x1,
                        2 => x2,
                        _ => x4,
                    };
                }
            }
            evaluate(&full_report(cells))
        };
        let summary = with_peaks(9000, 1500, 1400);
        let p13 = find(&summary, "P13");
        assert_eq!(p13.verdict, Verdict::Met, "{}", p13.measured);
        assert!(p13.measured.contains("worst 1.50"), "{}", p13.measured);
        assert!(
            !p13.cells.iter().any(|c| c.ends_with("x1")),
            "{:?}",
            p13.cells
        );
        let summary = with_peaks(1000, 1000, 1600);
        let p13 = find(&summary, "P13");
        assert_eq!(p13.verdict, Verdict::Missed, "{}", p13.measured);
        assert!(p13.measured.contains("x4 1.60"), "{}", p13.measured);
        let summary = with_peaks(1000, 0, 1000);
        let p13 = find(&summary, "P13");
        assert_eq!(p13.verdict, Verdict::NotMeasured, "{}", p13.measured);
        assert!(
            p13.missing
                .iter()
                .any(|m| m.contains("list-replace-shared nogil x2")),
            "{:?}",
            p13.missing
        );
    }

    /// A zero time (a clock that did not move, a workload that did nothing) would make every
    /// ratio built on it infinite, or NaN, and pass: the cell counts as missing instead.
    #[test]
    fn a_cell_with_a_zero_time_is_not_measured_and_passes_nothing() {
        let mut cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 });
        for c in &mut cells {
            let at_2 = c.workload == "countdown" && c.build != "nogil-atomic-rc" && c.threads == 2;
            let at_1 = c.workload == "float-mult" && c.build == "nogil" && c.threads == 1;
            if at_1 || at_2 {
                c.median_s = 0.0;
            }
        }
        let summary = evaluate(&full_report(cells));
        for id in ["P2", "P3", "P11"] {
            let t = find(&summary, id);
            assert_ne!(t.verdict, Verdict::Met, "{id}: {}", t.measured);
        }
        let p3 = find(&summary, "P3");
        assert_eq!(p3.verdict, Verdict::NotMeasured, "{}", p3.measured);
        assert!(
            p3.missing.iter().any(|m| m.contains("countdown nogil x2")),
            "{:?}",
            p3.missing
        );
    }

    /// P10 reads the default run's heaviest load (x4 on 2 cores) even where more threads were
    /// measured, and a missing latency names its cell and metric.
    #[test]
    fn p10_reads_the_default_heaviest_load_and_names_a_missing_metric() {
        let latency = |threads: usize, metrics: &[(&str, f64)]| {
            let mut c = cell("io-latency-under-load", "gil", threads, 1.0);
            c.metrics = metrics.iter().map(|&(k, v)| (k.to_owned(), v)).collect();
            c
        };
        let with = |x4: &[(&str, f64)]| {
            let mut cells = full_run(|_, _| 1.0);
            cells.retain(|c| c.workload != "io-latency-under-load" || c.build != "gil");
            cells.push(latency(1, &[("p50_ms", 1.0)]));
            cells.push(latency(2, &[("fair_p50_ms", 1.5), ("p50_ms", 3.0)]));
            cells.push(latency(4, x4));
            // Far beyond the default counts, and over the target.
            cells.push(latency(64, &[("fair_p50_ms", 9.0), ("p50_ms", 9.0)]));
            let report = Report::from_cells(
                cells,
                runners(&["gil", "nogil", "nogil-atomic-rc"]),
                vec![1, 2, 4, 64],
                2,
                Vec::new(),
            );
            evaluate(&report)
        };
        let summary = with(&[("fair_p50_ms", 1.5), ("p50_ms", 4.0)]);
        let p10 = find(&summary, "P10");
        assert_eq!(p10.meets, Some(true), "{}", p10.measured);
        assert!(p10.measured.starts_with("4 threads"), "{}", p10.measured);
        let summary = with(&[("p50_ms", 4.0)]);
        let p10 = find(&summary, "P10");
        assert_eq!(p10.verdict, Verdict::NotMeasured);
        let listed = p10
            .missing
            .iter()
            .filter(|m| m.starts_with("io-latency-under-load gil x4"))
            .collect::<Vec<_>>();
        assert_eq!(
            listed,
            ["io-latency-under-load gil x4 (no fair_p50_ms)"],
            "each missing thing once: {:?}",
            p10.missing
        );
    }

    /// G1 reads every thread count's pause, and lists each one that is missing.
    #[test]
    fn g1_lists_every_thread_count_without_a_pause() {
        let mut cells = full_run(|_, _| 0.5);
        for c in &mut cells {
            if c.workload == "cycle-create" && c.build == "nogil" && c.threads == 1 {
                c.metrics.insert("gc_pause_p99_ms".to_owned(), 1.0);
                c.metrics.insert("gc_local_pause_p99_ms".to_owned(), 1.0);
            }
            if c.workload == "cycle-create" && c.build == "nogil" && c.threads == 2 {
                // The stopped world's pauses alone: the local collections' are missing.
                c.metrics.insert("gc_pause_p99_ms".to_owned(), 1.0);
            }
        }
        let summary = evaluate(&full_report(cells));
        let g1 = find(&summary, "G1");
        assert_eq!(g1.verdict, Verdict::NotMeasured);
        for missing in [
            "cycle-create nogil x2 (no gc_local_pause_p99_ms)",
            "cycle-create nogil x4 (no gc_pause_p99_ms)",
        ] {
            assert!(g1.missing.iter().any(|m| m == missing), "{:?}", g1.missing);
        }
    }

    #[test]
    fn the_single_thread_cost_table_leaves_out_failed_cells() {
        let mut cells = full_run(|_, _| 1.0);
        for c in &mut cells {
            if c.workload == "countdown" && c.build == "nogil" && c.threads == 1 {
                c.median_s = 2.0;
                c.check = "crashed: signal 11".to_owned();
            }
        }
        let summary = evaluate(&full_report(cells));
        let countdown = summary
            .single_thread_cost
            .iter()
            .find(|(w, _, _)| w == "countdown")
            .unwrap();
        assert_eq!(countdown.1, None, "a crashed cell's time is no cost");
        assert_eq!(countdown.2, Some(1.0));
    }

    #[test]
    fn on_one_core_the_scaling_targets_are_not_measured() {
        let cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 });
        let report = Report::from_cells(
            cells,
            runners(&["gil", "nogil", "nogil-atomic-rc"]),
            vec![1, 2, 4],
            1,
            Vec::new(),
        );
        let summary = evaluate(&report);
        for id in ["P3", "P3b", "P4", "P5", "P9", "G1"] {
            let t = find(&summary, id);
            assert_eq!(t.verdict, Verdict::NotMeasured, "{id}: {}", t.measured);
            assert!(
                t.missing.iter().any(|m| m.contains("2 or more cores")),
                "{id}: {:?}",
                t.missing
            );
        }
    }

    #[test]
    fn a_quick_run_is_partial() {
        let all: Vec<&str> = WORKLOADS.to_vec();
        let partial = crate::bench::partial_because(
            &all,
            &crate::variants::Variant::ALL,
            &[1, 2, 4],
            0.05,
            2,
        );
        assert_eq!(partial.len(), 1, "{partial:?}");
        assert!(partial[0].contains("quick"));
        let full = crate::bench::partial_because(
            &all,
            &crate::variants::Variant::ALL,
            &[1, 2, 4, 8],
            1.0,
            2,
        );
        assert!(
            full.is_empty(),
            "more thread counts are still a full run: {full:?}"
        );
    }

    #[test]
    fn a_full_run_judges_the_targets_and_lists_the_cells_it_read() {
        let cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 });
        let report = full_report(cells);
        let summary = evaluate(&report);
        let p3 = find(&summary, "P3");
        assert_eq!(p3.verdict, Verdict::Met, "{}", p3.measured);
        assert!(
            p3.cells.contains(&"countdown nogil x2".to_owned()),
            "{:?}",
            p3.cells
        );
        assert!(
            p3.cells.contains(&"countdown nogil x1".to_owned()),
            "{:?}",
            p3.cells
        );
        assert_eq!(find(&summary, "P5").verdict, Verdict::Missed);
        assert_eq!(find(&summary, "P8").verdict, Verdict::Missed, "equal times");
        // The markdown lists every cell of a verdict that reads many, below the table.
        let p2 = find(&summary, "P2");
        assert!(p2.cells.len() > 6, "{:?}", p2.cells);
        let markdown = summary.to_markdown();
        let listed = format!(
            "Cells P2 read ({}): {}.",
            p2.cells.len(),
            p2.cells.join(", ")
        );
        assert!(markdown.contains(&listed), "{markdown}");
    }

    /// The report of a full run's cells and the machine's reference (`nogil-processes`, whose
    /// cells `cells` includes).
    fn with_the_machines_reference(cells: Vec<Cell>) -> Report {
        let mut runners = runners(&["gil", "nogil", "nogil-atomic-rc"]);
        runners.push(RunnerSummary {
            processes: true,
            gil_reference: None,
            ..RunnerSummary::variant(PROCESSES_BUILD)
        });
        Report::from_cells(cells, runners, vec![1, 2, 4], 2, Vec::new())
    }

    #[test]
    fn p3_shows_the_machines_reference_beside_the_speedup_and_judges_without_it() {
        // nogil reaches 1.25 at 2 threads; two processes reach 1.25 too: the machine's limit.
        let cells = full_run(|_, b| if b == "nogil" { 0.8 } else { 0.5 });
        let without = find(&evaluate(&full_report(cells.clone())), "P3").verdict;
        let mut with = cells;
        for w in PRIVATE_WORKLOADS {
            with.push(cell(w, PROCESSES_BUILD, 1, 1.0));
            with.push(cell(w, PROCESSES_BUILD, 2, 0.8));
        }
        let report = with_the_machines_reference(with);
        let summary = evaluate(&report);
        let p3 = find(&summary, "P3");
        assert_eq!(p3.verdict, Verdict::Missed, "the goal is the runtime's");
        assert_eq!(
            without,
            Verdict::Missed,
            "and a run without it judges the same"
        );
        assert!(
            p3.measured
                .contains("the machine, as 2 processes (nogil-processes): countdown 1.25"),
            "{}",
            p3.measured
        );
        assert!(
            p3.cells
                .contains(&"object-create nogil-processes x2".to_owned()),
            "{:?}",
            p3.cells
        );
        assert!(p3.missing.is_empty(), "{:?}", p3.missing);
        assert!(
            summary.pairs.iter().all(|p| p.build != PROCESSES_BUILD),
            "processes are not a free-threaded build with a GIL twin"
        );
    }

    #[test]
    fn a_failed_cell_leaves_its_target_not_measured() {
        let mut cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 });
        for c in &mut cells {
            if c.workload == "countdown" && c.build == "nogil" && c.threads == 2 {
                c.check = "a countdown ended at 1, not 0".into();
            }
        }
        let report = full_report(cells);
        let p3 = find(&evaluate(&report), "P3").verdict;
        assert_eq!(p3, Verdict::NotMeasured);
    }

    #[test]
    fn p8_needs_a_margin_over_noise() {
        let cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 })
            .into_iter()
            .map(|mut c| {
                if c.build == "nogil-atomic-rc" && c.threads == 1 {
                    c.median_s = 1.01;
                }
                c
            })
            .collect();
        let report = full_report(cells);
        let summary = evaluate(&report);
        let p8 = find(&summary, "P8");
        assert_eq!(
            p8.meets,
            Some(false),
            "1 % slower is noise, not measurably slower"
        );
    }

    /// G1 reads the speedup at 2 threads and every count's pause p99: met, missed on a long
    /// pause, and not measured when the runner reported no pauses.
    #[test]
    fn g1_judges_speedup_and_the_worst_pause() {
        let evaluate_with = |p99_at_4: Option<f64>| {
            let cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 })
                .into_iter()
                .map(|mut c| {
                    if c.workload == "cycle-create" && c.build == "nogil" {
                        let p99 = if c.threads == 4 { p99_at_4 } else { Some(0.2) };
                        if let Some(p99) = p99 {
                            c.metrics.insert("gc_pause_p99_ms".into(), p99);
                            c.metrics.insert("gc_local_pause_p99_ms".into(), 0.1);
                        }
                    }
                    c
                })
                .collect();
            let report = full_report(cells);
            let summary = evaluate(&report);
            let g1 = find(&summary, "G1");
            (g1.verdict, g1.measured.clone())
        };
        let (met, measured) = evaluate_with(Some(0.3));
        assert_eq!(met, Verdict::Met, "{measured}");
        assert!(measured.contains("speedup 2.00"), "{measured}");
        let (missed, measured) = evaluate_with(Some(12.0));
        assert_eq!(missed, Verdict::Missed, "{measured}");
        assert!(measured.contains("12.00 ms (x4)"), "{measured}");
        assert_eq!(evaluate_with(None).0, Verdict::NotMeasured);
    }

    /// G1 shows what two processes reach on `cycle-create` beside the runtime's speedup, as P3
    /// does for the private workloads, and judges without it.
    #[test]
    fn g1_shows_the_machines_reference_beside_the_speedup() {
        let mut cells: Vec<Cell> = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 })
            .into_iter()
            .map(|mut c| {
                if c.workload == "cycle-create" && c.build == "nogil" {
                    c.metrics.insert("gc_pause_p99_ms".into(), 0.2);
                    c.metrics.insert("gc_local_pause_p99_ms".into(), 0.1);
                }
                c
            })
            .collect();
        cells.push(cell("cycle-create", PROCESSES_BUILD, 1, 1.0));
        cells.push(cell("cycle-create", PROCESSES_BUILD, 2, 0.625));
        let report = with_the_machines_reference(cells);
        let summary = evaluate(&report);
        let g1 = find(&summary, "G1");
        assert_eq!(g1.verdict, Verdict::Met, "{}", g1.measured);
        assert!(
            g1.measured.contains(
                "speedup 2.00, worst p99 0.20 ms (x1); the machine, as 2 processes \
                 (nogil-processes): cycle-create 1.60"
            ),
            "{}",
            g1.measured
        );
        assert!(
            g1.cells
                .contains(&"cycle-create nogil-processes x2".to_owned()),
            "{:?}",
            g1.cells
        );
    }

    /// A local collection stalls its own thread: G1's pause is the worse of the two kinds.
    #[test]
    fn g1_counts_a_long_local_collection_as_a_long_pause() {
        let cells = full_run(|_, b| if b == "gil" { 1.0 } else { 0.5 })
            .into_iter()
            .map(|mut c| {
                if c.workload == "cycle-create" && c.build == "nogil" {
                    c.metrics.insert("gc_pause_p99_ms".into(), 0.2);
                    let local = if c.threads == 2 { 15.0 } else { 0.1 };
                    c.metrics.insert("gc_local_pause_p99_ms".into(), local);
                }
                c
            })
            .collect();
        let summary = evaluate(&full_report(cells));
        let g1 = find(&summary, "G1");
        assert_eq!(g1.verdict, Verdict::Missed, "{}", g1.measured);
        assert!(g1.measured.contains("15.00 ms (x2)"), "{}", g1.measured);
    }

    #[test]
    fn a_verdict_names_the_flagged_cells_it_rests_on() {
        // P9 on 2 cores, from clean cells but one: a noisy two-thread cell (0.5 s median,
        // repeats 0.3 to 0.9 s).
        let cells = SHARED_MORTAL
            .iter()
            .flat_map(|&w| {
                let two = if w == SHARED_MORTAL[0] {
                    let mut noisy = Cell::measured(w, "nogil", 2, &[0.3, 0.5, 0.9]);
                    noisy.ops = Some(1000);
                    noisy.peak_rss_kib = 1000;
                    noisy
                } else {
                    cell(w, "nogil", 2, 0.5)
                };
                [cell(w, "nogil", 1, 1.0), two]
            })
            .collect();
        let report = Report::from_cells(cells, runners(&["nogil"]), vec![1, 2], 2, Vec::new());
        let p9 = find(&evaluate(&report), "P9").measured.clone();
        let flagged = format!("reads flagged cells: {} nogil x2~", SHARED_MORTAL[0]);
        assert!(p9.contains(&flagged), "{p9}");
        assert_eq!(p9.matches("flagged").count(), 1, "{p9}");
    }

    #[test]
    fn p9_reads_n_equal_to_the_cores_or_is_not_measured() {
        // Measured at 1 and 2 threads on a 4-core machine: no cell at N = cores.
        let cells = SHARED_MORTAL
            .iter()
            .flat_map(|w| [cell(w, "nogil", 1, 1.0), cell(w, "nogil", 2, 0.5)])
            .collect();
        let report = Report::from_cells(cells, runners(&["nogil"]), vec![1, 2], 4, Vec::new());
        let summary = evaluate(&report);
        let p9 = find(&summary, "P9");
        assert_eq!(p9.verdict, Verdict::NotMeasured, "{}", p9.measured);
        assert!(
            p9.missing.iter().any(|m| m.ends_with("x4")),
            "{:?}",
            p9.missing
        );
    }
}
