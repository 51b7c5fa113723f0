//! Building the runners and running the workloads, one process per run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::Plan;
use crate::steps::{run_steps, CargoStep, Failed, Toolchain, Workspace};
use crate::variants::Variant;

/// Something that runs workloads: a build of the runtime, or a Python interpreter running
/// `benches/python/workloads.py`.
pub struct Runner {
    /// The name in reports: a variant's name, or `python-<version>`.
    pub build: String,
    program: PathBuf,
    prefix: Vec<PathBuf>,
    /// What the runner says about itself (`--info`): header size, count strategy.
    pub info: Value,
    /// The workloads it can run (all for builds; those written in Python for interpreters).
    pub workloads: Vec<String>,
}

impl Runner {
    /// Whether this runs a build of the runtime (not a Python interpreter).
    pub fn is_variant(&self) -> bool {
        self.prefix.is_empty()
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix);
        command
    }

    fn query(&self, flag: &str) -> Result<Value, Failed> {
        let output = self
            .command()
            .arg(flag)
            .output()
            .map_err(|e| Failed(format!("cannot start {}: {e}", self.program.display())))?;
        serde_json::from_slice(&output.stdout).map_err(|e| {
            Failed(format!(
                "{} {flag} printed no JSON ({e}): {}",
                self.build,
                String::from_utf8_lossy(&output.stderr)
            ))
        })
    }

    fn with_self_description(mut self) -> Result<Runner, Failed> {
        self.info = self.query("--info")?;
        self.workloads = self
            .query("--list")?
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|w| w["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        Ok(self)
    }
}

/// One run's result, as the runner printed it.
#[derive(Debug, Clone)]
pub struct Run {
    pub elapsed_s: f64,
    pub check: String,
    pub metrics: BTreeMap<String, f64>,
    pub peak_rss_kib: u64,
}

/// All runs of one workload by one build at one thread count.
#[derive(Debug, Default, Clone)]
pub struct Measurements {
    pub runs: Vec<Run>,
}

pub type Key = (String, String, usize);

/// Builds the runner of each variant in its own target dir (not the test dirs: a bench started
/// from a test must not wait on the test's own build lock), and finds the Python interpreters.
pub fn build_runners(
    workspace: &Workspace,
    builds: &[Variant],
    pythons: &[PathBuf],
) -> Result<Vec<Runner>, Failed> {
    run_steps(workspace, |steps| {
        for &variant in builds {
            steps.run(build_step(workspace, variant))?;
        }
        Ok(())
    })?;
    let mut runners = Vec::new();
    for &variant in builds {
        let program = runner_path(workspace, variant);
        let runner = Runner {
            build: variant.name().to_owned(),
            program,
            prefix: Vec::new(),
            info: Value::Null,
            workloads: Vec::new(),
        };
        runners.push(runner.with_self_description()?);
    }
    for python in pythons {
        runners.push(python_runner(workspace, python)?);
    }
    Ok(runners)
}

fn build_step(workspace: &Workspace, variant: Variant) -> CargoStep {
    let mut step = CargoStep::new(
        format!("build {}", variant.name()),
        format!("the {} runner build", variant.name()),
        Toolchain::Current,
    )
    .args([
        "build",
        "--release",
        "--quiet",
        "-p",
        "ftrt-workloads",
        "--bin",
        "ftrt-runner",
    ])
    .target_dir(bench_target_dir(workspace, variant));
    if let Some(features) = variant.workload_features() {
        step = step.args(["--features", features]);
    }
    step
}

fn bench_target_dir(workspace: &Workspace, variant: Variant) -> PathBuf {
    workspace.target_dir(&format!("bench-{}", variant.name()))
}

fn runner_path(workspace: &Workspace, variant: Variant) -> PathBuf {
    bench_target_dir(workspace, variant)
        .join("release")
        .join(format!("ftrt-runner{}", std::env::consts::EXE_SUFFIX))
}

fn python_runner(workspace: &Workspace, python: &Path) -> Result<Runner, Failed> {
    let script = workspace.root.join("benches/python/workloads.py");
    let runner = Runner {
        build: String::new(),
        program: python.to_path_buf(),
        prefix: vec![script],
        info: Value::Null,
        workloads: Vec::new(),
    }
    .with_self_description()?;
    let label = runner.info["build"].as_str().unwrap_or("python").to_owned();
    Ok(Runner {
        build: label,
        ..runner
    })
}

fn run_once(runner: &Runner, workload: &str, threads: usize, scale: f64) -> Result<Run, Failed> {
    let output = runner
        .command()
        .args([
            workload,
            "--threads",
            &threads.to_string(),
            "--scale",
            &scale.to_string(),
        ])
        .output()
        .map_err(|e| Failed(format!("cannot start the {} runner: {e}", runner.build)))?;
    let line: Value = serde_json::from_slice(&output.stdout).map_err(|_| {
        Failed(format!(
            "{} {workload} at {threads} threads failed ({}): {}",
            runner.build,
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    })?;
    let metrics = line["metrics"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Ok(Run {
        elapsed_s: line["elapsed_s"].as_f64().unwrap_or(f64::NAN),
        check: line["check"]
            .as_str()
            .unwrap_or("the runner printed no check")
            .to_owned(),
        metrics,
        peak_rss_kib: line["peak_rss_kib"].as_u64().unwrap_or(0),
    })
}

/// Runs everything: one warm-up per (workload, runner), then `repeat` interleaved rounds.
pub fn measure(runners: &[Runner], plan: &Plan) -> Result<BTreeMap<Key, Measurements>, Failed> {
    let cells: Vec<(&str, &Runner)> = plan
        .workloads
        .iter()
        .flat_map(|&w| {
            runners
                .iter()
                .filter(move |r| r.workloads.iter().any(|n| n == w))
                .map(move |r| (w, r))
        })
        .collect();
    let total = cells.len() as u64 * (1 + u64::from(plan.repeat) * plan.threads.len() as u64);
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs, {elapsed} elapsed, ~{eta} left  {msg}",
        )
        .expect("a valid template"),
    );
    let mut results: BTreeMap<Key, Measurements> = BTreeMap::new();
    for &(workload, runner) in &cells {
        progress.set_message(format!("warm-up {} {workload}", runner.build));
        run_once(runner, workload, plan.threads[0], plan.scale)?;
        progress.inc(1);
    }
    for round in 1..=plan.repeat {
        for &(workload, runner) in &cells {
            for &threads in &plan.threads {
                progress.set_message(format!(
                    "round {round}: {} {workload} x{threads}",
                    runner.build
                ));
                let run = run_once(runner, workload, threads, plan.scale)?;
                results
                    .entry((workload.to_owned(), runner.build.clone(), threads))
                    .or_default()
                    .runs
                    .push(run);
                progress.inc(1);
            }
        }
    }
    progress.finish_and_clear();
    Ok(results)
}
