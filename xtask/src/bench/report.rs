//! Turning runs into the report: statistics per cell, the terminal table, JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

use super::runs::{Key, Measurements, Runner};
use super::targets::Summary;
use super::Plan;

/// A cell whose max − min exceeds this fraction of its median is flagged as noisy.
const NOISY_SPREAD: f64 = 0.25;

/// The statistics of one cell (workload × build × threads).
#[derive(Debug, Clone)]
pub struct Cell {
    pub workload: String,
    pub build: String,
    pub threads: usize,
    pub repeats: usize,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    pub speedup: Option<f64>,
    pub vs_gil: Option<f64>,
    pub peak_rss_kib: u64,
    pub check: String,
    pub metrics: BTreeMap<String, f64>,
}

impl Cell {
    pub fn noisy(&self) -> bool {
        self.median_s > 0.0 && (self.max_s - self.min_s) / self.median_s > NOISY_SPREAD
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

pub struct Report {
    pub cells: Vec<Cell>,
    pub builds: Vec<String>,
    pub threads: Vec<usize>,
    pub workloads: Vec<String>,
    /// Per build: what its runner said about itself.
    pub info: BTreeMap<String, Value>,
    pub scale: f64,
}

impl Report {
    pub fn new(
        plan: &Plan,
        runners: &[Runner],
        measurements: BTreeMap<Key, Measurements>,
    ) -> Report {
        let mut cells: Vec<Cell> = measurements
            .into_iter()
            .map(|((workload, build, threads), m)| {
                let mut times: Vec<f64> = m.runs.iter().map(|r| r.elapsed_s).collect();
                let mut rss: Vec<f64> = m.runs.iter().map(|r| r.peak_rss_kib as f64).collect();
                let check = m
                    .runs
                    .iter()
                    .map(|r| r.check.clone())
                    .find(|c| c != "ok")
                    .unwrap_or_else(|| "ok".into());
                let mut metric_names: Vec<&String> =
                    m.runs.iter().flat_map(|r| r.metrics.keys()).collect();
                metric_names.sort();
                metric_names.dedup();
                let metrics = metric_names
                    .into_iter()
                    .map(|name| {
                        let mut values: Vec<f64> = m
                            .runs
                            .iter()
                            .filter_map(|r| r.metrics.get(name).copied())
                            .collect();
                        (name.clone(), median(&mut values))
                    })
                    .collect();
                Cell {
                    workload,
                    build,
                    threads,
                    repeats: times.len(),
                    min_s: times.iter().copied().fold(f64::INFINITY, f64::min),
                    max_s: times.iter().copied().fold(0.0, f64::max),
                    median_s: median(&mut times),
                    speedup: None,
                    vs_gil: None,
                    peak_rss_kib: median(&mut rss) as u64,
                    check,
                    metrics,
                }
            })
            .collect();
        let medians: BTreeMap<(String, String, usize), f64> = cells
            .iter()
            .map(|c| ((c.workload.clone(), c.build.clone(), c.threads), c.median_s))
            .collect();
        for cell in &mut cells {
            let one = medians.get(&(cell.workload.clone(), cell.build.clone(), 1));
            cell.speedup = one.map(|one| one / cell.median_s);
            // Python interpreters run their own sizes (scaled down): only their speedups compare.
            let comparable = runners
                .iter()
                .any(|r| r.build == cell.build && r.is_variant());
            let gil = medians.get(&(cell.workload.clone(), "gil".to_owned(), cell.threads));
            cell.vs_gil = gil.filter(|_| comparable).map(|gil| gil / cell.median_s);
        }
        Report {
            cells,
            builds: runners.iter().map(|r| r.build.clone()).collect(),
            threads: plan.threads.clone(),
            workloads: plan.workloads.iter().map(|w| (*w).to_owned()).collect(),
            info: runners
                .iter()
                .map(|r| (r.build.clone(), r.info.clone()))
                .collect(),
            scale: plan.scale,
        }
    }

    pub fn cell(&self, workload: &str, build: &str, threads: usize) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.workload == workload && c.build == build && c.threads == threads)
    }

    pub fn failed_checks(&self) -> Vec<String> {
        self.cells
            .iter()
            .filter(|c| c.check != "ok")
            .map(|c| format!("{} {} x{}: {}", c.workload, c.build, c.threads, c.check))
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
            let _ = write!(out, " {:>20}", format!("{t} thr: s (x1, xgil)"));
        }
        out.push_str("  check\n");
        for workload in &self.workloads {
            for build in &self.builds {
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
                        " {:>20}",
                        format!(
                            "{:.3}{} ({}, {})",
                            cell.median_s,
                            if cell.noisy() { "~" } else { "" },
                            ratio(cell.speedup),
                            ratio(cell.vs_gil)
                        )
                    );
                }
                let check = row
                    .iter()
                    .map(|c| c.check.as_str())
                    .find(|c| *c != "ok")
                    .unwrap_or("ok");
                let _ = writeln!(out, "  {check}");
            }
        }
        out.push_str("~: max - min over 25% of the median (noisy cell)\n");
        out
    }

    pub fn to_json(&self, summary: &Summary) -> Value {
        let results: Vec<Value> = self
            .cells
            .iter()
            .map(|c| {
                json!({
                    "workload": c.workload, "build": c.build, "threads": c.threads, "repeats": c.repeats,
                    "median_s": c.median_s, "min_s": c.min_s, "max_s": c.max_s,
                    "speedup": c.speedup, "vs_gil": c.vs_gil, "peak_rss_kib": c.peak_rss_kib,
                    "check": c.check, "noisy": c.noisy(), "metrics": c.metrics,
                })
            })
            .collect();
        json!({
            "schema": 1,
            "machine": machine(),
            "scale": self.scale,
            "builds": self.info,
            "results": results,
            "targets": summary.to_json(),
        })
    }

    pub fn to_markdown(&self, summary: &Summary) -> String {
        let machine = machine();
        let mut md = String::from("# ftrt scaling report\n\n");
        let _ = writeln!(
            md,
            "Machine: {} CPUs, {}, {}. Sizes x{}. Medians of the repeats; speedup = the same build at 1 thread / at N; \
             vs gil = the gil build at N / this build at N. `~` marks a cell whose spread exceeds 25 %.\n",
            machine["cpus"], machine["os"].as_str().unwrap_or("?"), machine["rustc"].as_str().unwrap_or("?"), self.scale
        );
        md.push_str("## Summary\n\n");
        md.push_str(&summary.to_markdown());
        md.push_str("\n## Results\n\n| workload | build |");
        for t in &self.threads {
            let _ = write!(md, " {t} thread(s): s (speedup, vs gil) |");
        }
        md.push_str(" peak RSS (KiB, 1 thread) | check |\n|---|---|");
        for _ in &self.threads {
            md.push_str("---|");
        }
        md.push_str("---|---|\n");
        for workload in &self.workloads {
            for build in &self.builds {
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
                                " {:.4}{} ({}, {}) |",
                                c.median_s,
                                if c.noisy() { "~" } else { "" },
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
                let _ = writeln!(md, " {rss} | {check} |");
            }
        }
        let with_metrics: Vec<&Cell> = self
            .cells
            .iter()
            .filter(|c| !c.metrics.is_empty())
            .collect();
        if !with_metrics.is_empty() {
            md.push_str("\n## Workload measurements\n\n| workload | build | threads | measurements (medians) |\n|---|---|---|---|\n");
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
        }
        md.push_str("\n## Plots\n\n");
        for workload in &self.workloads {
            let _ = writeln!(md, "![{workload}]({workload}.svg)");
        }
        md
    }
}

pub fn ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
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
        "os": std::env::consts::OS,
        "rustc": rustc,
    })
}

use std::process::Command;
