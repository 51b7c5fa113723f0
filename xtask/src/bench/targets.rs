//! The mission's targets (P2 to P11), evaluated on one report.

use std::fmt::Write as _;

use serde_json::{json, Value};

use super::report::{ratio, Report};

const PRIVATE: &[&str] = &[
    "countdown",
    "list-append-private",
    "dict-private",
    "object-create",
    "float-mult",
];
const SHARED_READS: &[&str] = &["dict-shared-read", "immortal-read", "string-intern"];
const CPU_BOUND: &[&str] = &[
    "countdown",
    "float-mult",
    "object-create",
    "list-append-private",
    "dict-private",
];
const RELEASING: &[&str] = &["io-sleep", "native-release"];
const SHARED_MORTAL: &[&str] = &[
    "shared-refcount",
    "shared-attribute-read",
    "dict-shared-read",
];

pub struct Target {
    pub id: &'static str,
    pub what: &'static str,
    pub goal: &'static str,
    pub measured: String,
    /// `None` when this run did not include what the target needs.
    pub met: Option<bool>,
}

pub struct Summary {
    pub targets: Vec<Target>,
    /// Per workload: the single-thread time of each free-threaded build over the gil build's.
    pub single_thread_cost: Vec<(String, Option<f64>, Option<f64>)>,
}

fn geomean(values: &[f64]) -> Option<f64> {
    (!values.is_empty())
        .then(|| (values.iter().map(|v| v.ln()).sum::<f64>() / values.len() as f64).exp())
}

/// `f` over the listed workloads that were measured; `None` if none was.
fn over(workloads: &[&str], mut f: impl FnMut(&str) -> Option<f64>) -> Vec<(String, f64)> {
    workloads
        .iter()
        .filter_map(|w| f(w).map(|v| ((*w).to_owned(), v)))
        .collect()
}

fn listing(values: &[(String, f64)]) -> String {
    values
        .iter()
        .map(|(w, v)| format!("{w} {v:.2}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn target(
    id: &'static str,
    what: &'static str,
    goal: &'static str,
    values: &[(String, f64)],
    met: impl Fn(&[(String, f64)]) -> bool,
) -> Target {
    Target {
        id,
        what,
        goal,
        measured: if values.is_empty() {
            "not measured".into()
        } else {
            listing(values)
        },
        met: (!values.is_empty()).then(|| met(values)),
    }
}

pub fn evaluate(report: &Report) -> Summary {
    let time = |w: &str, b: &str, t: usize| report.cell(w, b, t).map(|c| c.median_s);
    let speedup = |w: &str, b: &str, t: usize| report.cell(w, b, t).and_then(|c| c.speedup);
    let cost = |w: &str, b: &str| Some(time(w, b, 1)? / time(w, "gil", 1)?);
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let parallel_n = report
        .threads
        .iter()
        .copied()
        .filter(|&t| t >= 2 && t <= cpus)
        .max();

    let single_thread_cost: Vec<(String, Option<f64>, Option<f64>)> = report
        .workloads
        .iter()
        .map(|w| (w.clone(), cost(w, "nogil"), cost(w, "nogil-atomic-rc")))
        .collect();
    let nogil_costs: Vec<(String, f64)> = single_thread_cost
        .iter()
        .filter_map(|(w, c, _)| Some((w.clone(), (*c)?)))
        .collect();
    let mut targets = Vec::new();

    let p2_values: Vec<f64> = nogil_costs.iter().map(|(_, c)| *c).collect();
    let worst = nogil_costs
        .iter()
        .cloned()
        .fold(None::<(String, f64)>, |a, b| match a {
            Some(a) if a.1 >= b.1 => Some(a),
            _ => Some(b),
        });
    targets.push(Target {
        id: "P2",
        what: "single-thread cost of nogil vs gil (time ratio at 1 thread)",
        goal: "geometric mean <= 1.03, none > 1.10",
        measured: match (geomean(&p2_values), &worst) {
            (Some(g), Some((w, v))) => format!("geomean {g:.3}, worst {w} {v:.2}"),
            _ => "not measured".into(),
        },
        met: geomean(&p2_values).map(|g| g <= 1.03 && p2_values.iter().all(|&c| c <= 1.10)),
    });
    targets.push(target(
        "P3",
        "nogil 2-thread speedup, private-data workloads",
        ">= 1.85",
        &over(PRIVATE, |w| speedup(w, "nogil", 2)),
        |v| v.iter().all(|(_, s)| *s >= 1.85),
    ));
    targets.push(target(
        "P3b",
        "nogil 2-thread speedup, shared-read workloads",
        ">= 1.7",
        &over(SHARED_READS, |w| speedup(w, "nogil", 2)),
        |v| v.iter().all(|(_, s)| *s >= 1.7),
    ));
    targets.push(target(
        "P4",
        "gil 2-thread speedup, CPU-bound workloads (S1)",
        "<= 1.15",
        &over(CPU_BOUND, |w| speedup(w, "gil", 2)),
        |v| v.iter().all(|(_, s)| *s <= 1.15),
    ));
    targets.push(target(
        "P5",
        "gil 2-thread speedup, io-sleep and native-release (S4, S5)",
        ">= 1.8",
        &over(RELEASING, |w| speedup(w, "gil", 2)),
        |v| v.iter().all(|(_, s)| *s >= 1.8),
    ));
    let header = report
        .info
        .get("nogil")
        .and_then(|i| i["header_size"].as_f64());
    targets.push(target(
        "P6",
        "object header in nogil (bytes)",
        "<= 24",
        &header
            .map(|h| ("nogil".to_owned(), h))
            .into_iter()
            .collect::<Vec<_>>(),
        |v| v[0].1 <= 24.0,
    ));
    let memory = || {
        let nogil = report.cell("object-create", "nogil", 1)?.peak_rss_kib as f64;
        let gil = report.cell("object-create", "gil", 1)?.peak_rss_kib as f64;
        Some(nogil / gil)
    };
    targets.push(target(
        "P7",
        "peak memory nogil / gil on object-create (1 thread)",
        "<= 1.10",
        &memory()
            .map(|m| ("object-create".to_owned(), m))
            .into_iter()
            .collect::<Vec<_>>(),
        |v| v[0].1 <= 1.10,
    ));
    let atomic_over_biased: Vec<f64> = report
        .workloads
        .iter()
        .filter_map(|w| Some(time(w, "nogil-atomic-rc", 1)? / time(w, "nogil", 1)?))
        .collect();
    targets.push(Target {
        id: "P8",
        what: "nogil-atomic-rc vs nogil at 1 thread (time ratio, geometric mean)",
        goal: "> 1 (measurably slower)",
        measured: geomean(&atomic_over_biased)
            .map_or("not measured".into(), |g| format!("geomean {g:.3}")),
        met: geomean(&atomic_over_biased).map(|g| g > 1.0),
    });
    let p9 = parallel_n.map_or_else(Vec::new, |n| {
        over(SHARED_MORTAL, |w| {
            speedup(w, "nogil", n).map(|s| s / n as f64)
        })
    });
    targets.push(target(
        "P9",
        "nogil speedup / N, every thread reading one shared mortal object (N = cores)",
        ">= 0.8",
        &p9,
        |v| v.iter().all(|(_, s)| *s >= 0.8),
    ));
    let latency = || {
        let max_threads = *report.threads.iter().max()?;
        if max_threads < 2 {
            return None;
        }
        let loaded = report.cell("io-latency-under-load", "gil", max_threads)?;
        let idle = report.cell("io-latency-under-load", "gil", 1)?;
        let baseline = idle.metrics.get("p50_ms")?.max(1e-3);
        Some(vec![
            (
                "fair p50 / idle p50".to_owned(),
                loaded.metrics.get("fair_p50_ms")? / baseline,
            ),
            (
                "interval p50 / idle p50".to_owned(),
                loaded.metrics.get("p50_ms")? / baseline,
            ),
        ])
    };
    targets.push(target(
        "P10",
        "gil fair mode: I/O ping latency under CPU load vs no load",
        "<= 2 (fair)",
        &latency().unwrap_or_default(),
        |v| v[0].1 <= 2.0,
    ));
    let vs_gil: Vec<(String, f64)> = report
        .cells
        .iter()
        .filter(|c| c.build == "nogil" && c.threads >= 2)
        .filter_map(|c| Some((format!("{} x{}", c.workload, c.threads), c.vs_gil?)))
        .collect();
    let losers: Vec<(String, f64)> = vs_gil.iter().filter(|(_, v)| *v < 1.0).cloned().collect();
    targets.push(Target {
        id: "P11",
        what: "nogil vs gil at the same thread count, N >= 2, every workload",
        goal: "vs_gil >= 1.0",
        measured: if vs_gil.is_empty() {
            "not measured".into()
        } else if losers.is_empty() {
            format!(
                "all {} cells >= 1.0 (lowest {:.2})",
                vs_gil.len(),
                vs_gil.iter().map(|(_, v)| *v).fold(f64::INFINITY, f64::min)
            )
        } else {
            format!("below 1.0: {}", listing(&losers))
        },
        met: (!vs_gil.is_empty()).then_some(losers.is_empty()),
    });
    Summary {
        targets,
        single_thread_cost,
    }
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
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
    println!("\ntargets:");
    for t in &summary.targets {
        println!(
            "  {:<4} {:<7} {} (goal {}): {}",
            t.id,
            verdict(t.met),
            t.what,
            t.goal,
            t.measured
        );
    }
}

impl Summary {
    pub fn to_json(&self) -> Value {
        Value::Array(
            self.targets
                .iter()
                .map(|t| json!({"id": t.id, "what": t.what, "goal": t.goal, "measured": t.measured, "met": t.met}))
                .collect(),
        )
    }

    pub fn to_markdown(&self) -> String {
        let mut md =
            String::from("| target | what | goal | measured | verdict |\n|---|---|---|---|---|\n");
        for t in &self.targets {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} |",
                t.id,
                t.what,
                t.goal,
                t.measured,
                verdict(t.met)
            );
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
