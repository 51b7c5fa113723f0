//! Building the runners and running the workloads, one process per run (N processes at once for
//! the machine's reference, `nogil-processes`), every run written to `runs.jsonl` as it finishes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::{in_the_reference, Plan, PROCESSES_BUILD, WORKLOADS};
use crate::steps::{run_steps, CargoStep, Failed, Toolchain, Workspace};
use crate::variants::Variant;

/// The runtime's runners keep the memory they free (mimalloc would hand it back to the kernel
/// 10 ms after, and fault it in again on the next use): the in-process warm-up pass then pays
/// the first-touch costs that would otherwise land on whichever measured run is unlucky. The
/// same for every build; a value the user sets wins. Python interpreters keep their own
/// allocators' settings.
pub const ALLOCATOR_PURGE: (&str, &str) = ("MIMALLOC_PURGE_DELAY", "-1");

/// What a runner is: a build of the runtime, or a Python interpreter.
#[derive(Debug, Clone, PartialEq)]
pub enum RunnerKind {
    Variant(Variant),
    Python {
        path: PathBuf,
        /// `3.14.0`, as `platform.python_version()` says.
        version: String,
        /// Built with `--disable-gil` (`Py_GIL_DISABLED`).
        free_threaded: bool,
    },
}

/// Something that runs workloads: a build of the runtime, or a Python interpreter running
/// `benches/python/workloads.py`.
pub struct Runner {
    /// The name in reports: a variant's name, or `python-<version>[t]` (with `#2`, `#3`... for
    /// a second interpreter of the same name).
    pub build: String,
    pub kind: RunnerKind,
    program: PathBuf,
    prefix: Vec<PathBuf>,
    /// What the runner says about itself (`--info`): header size, count strategy.
    pub info: Value,
    /// The workloads it can run (all for builds; those written in Python for interpreters).
    pub workloads: Vec<String>,
    /// Per workload: what one operation is, where the runner says.
    pub units: BTreeMap<String, String>,
    /// Runs N threads' work as N one-thread processes at once, 1/N of the work each: the
    /// machine's reference ([`PROCESSES_BUILD`]).
    pub processes: bool,
}

impl Runner {
    /// Whether this runs a build of the runtime (not a Python interpreter).
    pub fn is_variant(&self) -> bool {
        matches!(self.kind, RunnerKind::Variant(_))
    }

    /// Whether this runner has a GIL: the `gil` build, or a default (not free-threaded)
    /// interpreter.
    pub fn has_gil(&self) -> bool {
        match &self.kind {
            RunnerKind::Variant(variant) => *variant == Variant::Gil,
            RunnerKind::Python { free_threaded, .. } => !free_threaded,
        }
    }

    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.prefix);
        if self.is_variant() && std::env::var_os(ALLOCATOR_PURGE.0).is_none() {
            command.env(ALLOCATOR_PURGE.0, ALLOCATOR_PURGE.1);
        }
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
                self.program.display(),
                String::from_utf8_lossy(&output.stderr)
            ))
        })
    }

    /// Reads `--info` and `--list`; `every_workload`: the runner must offer every workload (a
    /// build of the runtime does; an interpreter offers those written in Python).
    fn with_self_description(mut self, every_workload: bool) -> Result<Runner, Failed> {
        self.info = self.query("--info")?;
        let list = self.query("--list")?;
        self.workloads = offered_workloads(&self.build, every_workload, &list)?;
        let entries = list.as_array().map(Vec::as_slice).unwrap_or_default();
        self.units = entries
            .iter()
            .filter_map(|w| {
                Some((
                    w["name"].as_str()?.to_owned(),
                    w["unit"].as_str()?.to_owned(),
                ))
            })
            .collect();
        Ok(self)
    }
}

/// The workloads a runner's `--list` names. A build of the runtime must offer every workload
/// the bench knows (an older runner, as `--no-build` takes it, would leave its rows out of a
/// run that still says it is full); an interpreter offers those written in Python.
fn offered_workloads(
    build: &str,
    every_workload: bool,
    list: &Value,
) -> Result<Vec<String>, Failed> {
    let entries = list
        .as_array()
        .ok_or_else(|| Failed(format!("{build} --list printed no array: {list}")))?;
    let names: Vec<String> = entries
        .iter()
        .map(|w| {
            w["name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| Failed(format!("{build} --list: an entry without a name: {w}")))
        })
        .collect::<Result<_, _>>()?;
    if every_workload {
        let lacking: Vec<&str> = WORKLOADS
            .iter()
            .copied()
            .filter(|w| !names.iter().any(|n| n == w))
            .collect();
        if !lacking.is_empty() {
            return Err(Failed(format!(
                "the {build} runner does not offer {} (built from older sources? run without \
                 --no-build)",
                lacking.join(", ")
            )));
        }
    }
    Ok(names)
}

/// Finds, for each runner, the runner whose times its `vs_gil` divides: the `gil` build for the
/// runtime's builds, and for a free-threaded interpreter a default interpreter of the same
/// version (the first given), so that CPython's cost of free-threading is reported the way
/// ours is. A runner with a GIL is its own reference; a free-threaded interpreter without a
/// partner has none, and neither has the machine's reference (processes are not a build).
pub fn gil_references(runners: &[Runner]) -> BTreeMap<String, String> {
    let mut references = BTreeMap::new();
    for runner in runners.iter().filter(|r| !r.processes) {
        let reference = match &runner.kind {
            RunnerKind::Variant(_) => runners
                .iter()
                .find(|r| r.kind == RunnerKind::Variant(Variant::Gil)),
            RunnerKind::Python { free_threaded: false, .. } => Some(runner),
            RunnerKind::Python {
                version,
                free_threaded: true,
                ..
            } => runners.iter().find(|r| {
                matches!(&r.kind, RunnerKind::Python { version: v, free_threaded: false, .. } if v == version)
            }),
        };
        if let Some(reference) = reference {
            references.insert(runner.build.clone(), reference.build.clone());
        }
    }
    references
}

/// One run's result.
#[derive(Debug, Clone)]
pub struct Run {
    /// The time the runner printed; `None` if it printed none.
    pub elapsed_s: Option<f64>,
    /// The operations it did.
    pub ops: Option<u64>,
    /// `ok`, what the workload's check found, or how the runner failed.
    pub check: String,
    pub metrics: BTreeMap<String, f64>,
    pub peak_rss_kib: Option<u64>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.check == "ok"
    }
}

/// All runs of one workload by one runner at one thread count.
#[derive(Debug, Default, Clone)]
pub struct Measurements {
    /// The measured runs, in order.
    pub runs: Vec<Run>,
    /// Failures of the bench's warm-up run of this workload and runner (kept on its first
    /// thread count): the cell is failed even if every measured run passed.
    pub warm_up_failures: Vec<String>,
}

pub type Key = (String, String, usize);

/// Builds the runner of each variant in its own target dir (not the test dirs: a bench started
/// from a test must not wait on the test's own build lock), and finds the Python interpreters.
pub fn build_runners(
    workspace: &Workspace,
    builds: &[Variant],
    pythons: &[PathBuf],
    no_build: bool,
) -> Result<Vec<Runner>, Failed> {
    if !no_build {
        run_steps(workspace, |steps| {
            for &variant in builds {
                steps.run(build_step(workspace, variant))?;
            }
            Ok(())
        })?;
    }
    let mut runners = Vec::new();
    for &variant in builds {
        let program = runner_path(workspace, variant);
        if no_build && !program.is_file() {
            return Err(Failed(format!(
                "--no-build: no {} runner at {} (run the bench once without --no-build to build it)",
                variant.name(),
                program.display()
            )));
        }
        let runner = Runner {
            build: variant.name().to_owned(),
            kind: RunnerKind::Variant(variant),
            program,
            prefix: Vec::new(),
            info: Value::Null,
            workloads: Vec::new(),
            units: BTreeMap::new(),
            processes: false,
        };
        let runner = runner.with_self_description(true)?;
        check_reported_build(variant, &runner.info)?;
        runners.push(runner);
    }
    if let Some(nogil) = runners
        .iter()
        .find(|r| r.kind == RunnerKind::Variant(Variant::Nogil))
    {
        runners.push(processes_runner(nogil));
    }
    for python in pythons {
        let mut runner = python_runner(workspace, python)?;
        runner.build = unique_label(&runner.build, &runners);
        runners.push(runner);
    }
    Ok(runners)
}

/// The machine's reference ([`PROCESSES_BUILD`]): `nogil`'s binary, run as processes, on the
/// workloads it has [`in_the_reference`] (the private-data ones and `cycle-create`).
fn processes_runner(nogil: &Runner) -> Runner {
    Runner {
        build: PROCESSES_BUILD.to_owned(),
        kind: nogil.kind.clone(),
        program: nogil.program.clone(),
        prefix: nogil.prefix.clone(),
        info: nogil.info.clone(),
        workloads: nogil
            .workloads
            .iter()
            .filter(|w| in_the_reference(w))
            .cloned()
            .collect(),
        units: nogil.units.clone(),
        processes: true,
    }
}

/// A runner built as `variant` must say so (`--info`'s `build`, which is `ftrt_gil::BUILD`):
/// otherwise the features xtask passes ([`Variant::workload_features`]) no longer choose the
/// variant, and the report would put one build's times under another's name.
pub fn check_reported_build(variant: Variant, info: &Value) -> Result<(), Failed> {
    match info["build"].as_str() {
        Some(build) if build == variant.name() => Ok(()),
        reported => Err(Failed(format!(
            "the runner built as {} reports itself as {} (ftrt-runner --info: {info})",
            variant.name(),
            reported.unwrap_or("nothing")
        ))),
    }
}

/// `label`, or `label#2`, `label#3`... if a runner already has it: two interpreters of the same
/// version are two cells, never one.
fn unique_label(label: &str, runners: &[Runner]) -> String {
    let taken = |candidate: &str| runners.iter().any(|r| r.build == candidate);
    if !taken(label) {
        return label.to_owned();
    }
    (2..)
        .map(|n| format!("{label}#{n}"))
        .find(|candidate| !taken(candidate))
        .expect("an unused label")
}

fn build_step(workspace: &Workspace, variant: Variant) -> CargoStep {
    runner_build_step(variant, bench_target_dir(workspace, variant))
}

/// The cargo step that builds the runner of `variant` (release profile) into `target_dir`.
pub fn runner_build_step(variant: Variant, target_dir: PathBuf) -> CargoStep {
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
    .target_dir(target_dir);
    if let Some(features) = variant.workload_features() {
        step = step.args(["--features", features]);
    }
    step
}

fn bench_target_dir(workspace: &Workspace, variant: Variant) -> PathBuf {
    workspace.target_dir(&format!("bench-{}", variant.name()))
}

fn runner_path(workspace: &Workspace, variant: Variant) -> PathBuf {
    runner_in(&bench_target_dir(workspace, variant))
}

/// Where a release build into `target_dir` puts the runner.
pub fn runner_in(target_dir: &Path) -> PathBuf {
    target_dir
        .join("release")
        .join(format!("ftrt-runner{}", std::env::consts::EXE_SUFFIX))
}

fn python_runner(workspace: &Workspace, python: &Path) -> Result<Runner, Failed> {
    let script = workspace.root.join("benches/python/workloads.py");
    let runner = Runner {
        build: String::new(),
        kind: RunnerKind::Variant(Variant::Gil),
        program: python.to_path_buf(),
        prefix: vec![script],
        info: Value::Null,
        workloads: Vec::new(),
        units: BTreeMap::new(),
        processes: false,
    }
    .with_self_description(false)?;
    let label = runner.info["build"].as_str().unwrap_or("python").to_owned();
    let kind = RunnerKind::Python {
        path: python.to_path_buf(),
        version: runner.info["version"].as_str().unwrap_or("?").to_owned(),
        free_threaded: runner.info["free_threaded"].as_bool().unwrap_or(false),
    };
    Ok(Runner {
        build: label,
        kind,
        ..runner
    })
}

/// `runs.jsonl`: one line per run as it finishes, so that a run cut short leaves what it did.
pub struct RawLog {
    file: File,
    pub path: PathBuf,
}

impl RawLog {
    pub fn create(path: PathBuf) -> Result<RawLog, Failed> {
        let file = File::create(&path)
            .map_err(|e| Failed(format!("cannot create {}: {e}", path.display())))?;
        Ok(RawLog { file, path })
    }

    fn record(&mut self, entry: &Value) -> Result<(), Failed> {
        writeln!(self.file, "{entry}")
            .and_then(|()| self.file.flush())
            .map_err(|e| Failed(format!("cannot write {}: {e}", self.path.display())))
    }
}

/// The last lines of a child's stderr, for a failure message.
fn stderr_tail(output: &Output) -> String {
    let text = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<&str> = text.trim().lines().collect();
    lines[lines.len().saturating_sub(3)..].join(" / ")
}

/// Reads the result of a run of `workload` at `threads` from the runner's output. A runner that
/// exits unsuccessfully failed its run even if it printed a result first (a crash at teardown is
/// a failure), and so did one whose result says `ok` but is not that run's, or did no work
/// ([`result_fault`]).
pub fn parse_run(output: &Output, workload: &str, threads: usize) -> Run {
    let line: Option<Value> = serde_json::from_slice(&output.stdout).ok();
    let printed = line
        .as_ref()
        .and_then(|l| l["elapsed_s"].as_f64())
        .is_some();
    let check = match (&line, output.status.success()) {
        (Some(line), true) if printed => match line["check"].as_str() {
            Some("ok") => result_fault(line, workload, threads).unwrap_or_else(|| "ok".to_owned()),
            Some(check) => check.to_owned(),
            None => "the runner printed no check".to_owned(),
        },
        (_, true) => format!(
            "the runner exited successfully without a result: {}",
            stderr_tail(output)
        ),
        (_, false) if printed => format!(
            "the runner printed a result, then failed ({}): {}",
            output.status,
            stderr_tail(output)
        ),
        (_, false) => format!(
            "the runner failed ({}) without a result: {}",
            output.status,
            stderr_tail(output)
        ),
    };
    let line = line.unwrap_or(Value::Null);
    let metrics = line["metrics"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    Run {
        elapsed_s: line["elapsed_s"].as_f64(),
        ops: line["ops"].as_u64(),
        check,
        metrics,
        peak_rss_kib: line["peak_rss_kib"].as_u64(),
    }
}

/// What is wrong with a result whose check says `ok`, if anything: it must name the run that was
/// asked for (a runner that ignored `--threads` would be filed under a thread count it did not
/// run at), and must have done some work in a positive time (a zero time would make every ratio
/// built on it infinite, and pass every target).
fn result_fault(line: &Value, workload: &str, threads: usize) -> Option<String> {
    if line["workload"].as_str() != Some(workload) {
        return Some(format!(
            "the runner was asked for {workload} and printed the result of {}",
            line["workload"]
        ));
    }
    if line["threads"].as_u64() != Some(threads as u64) {
        return Some(format!(
            "the runner was asked for {threads} threads and printed a result at {}",
            line["threads"]
        ));
    }
    let elapsed = line["elapsed_s"].as_f64().unwrap_or(f64::NAN);
    if !(elapsed.is_finite() && elapsed > 0.0) {
        return Some(format!(
            "the runner printed a time of {elapsed} s, not a positive one"
        ));
    }
    match line["ops"].as_u64() {
        Some(1..) => None,
        _ => Some(format!(
            "the runner printed {} operations, not a positive count",
            line["ops"]
        )),
    }
}

fn run_once(
    runner: &Runner,
    workload: &str,
    threads: usize,
    plan: &Plan,
    log: &mut RawLog,
    round: Option<u32>,
) -> Result<Run, Failed> {
    let (mut run, raw) = if runner.processes && threads > 1 {
        run_as_processes(runner, workload, threads, plan.scale, plan.run_limit)
    } else {
        run_in_one_process(runner, workload, threads, plan.scale, plan.run_limit)
    };
    if runner.processes {
        // At every count, as at N processes (`combine_processes`): the reference's tables
        // would otherwise show its one-process metrics alone, beside `nogil`'s own.
        run.metrics.clear();
    }
    log.record(&json!({
        "round": round,
        "warm_up": round.is_none(),
        "workload": workload,
        "build": runner.build,
        "threads": threads,
        "check": run.check,
        "runner": raw,
    }))?;
    Ok(run)
}

/// One run of the runner: its result, and what it printed (for `runs.jsonl`).
fn run_in_one_process(
    runner: &Runner,
    workload: &str,
    threads: usize,
    scale: f64,
    limit: Duration,
) -> (Run, Value) {
    let deadline = Instant::now() + limit;
    let mut command = runner.command();
    command.args([
        workload,
        "--threads",
        &threads.to_string(),
        "--scale",
        &scale.to_string(),
    ]);
    let result = WatchedChild::start(command, Stdio::null()).and_then(|c| c.wait(deadline));
    finished(runner, (workload, threads), result, limit)
}

/// The result of a run of `asked` (a workload and its thread count).
fn finished(
    runner: &Runner,
    asked: (&str, usize),
    result: std::io::Result<Finished>,
    limit: Duration,
) -> (Run, Value) {
    match &result {
        Ok(Finished { output, timed_out }) => {
            let mut run = parse_run(output, asked.0, asked.1);
            if *timed_out {
                run.check = format!(
                    "timed out: still running after the run limit ({} s), killed",
                    limit.as_secs_f64()
                );
            }
            (
                run,
                json!({
                    "status": output.status.to_string(),
                    "stdout": String::from_utf8_lossy(&output.stdout).trim(),
                    "stderr": stderr_tail(output),
                    "timed_out": timed_out,
                }),
            )
        }
        Err(e) => {
            let check = format!("cannot run the {} runner: {e}", runner.build);
            (
                Run {
                    elapsed_s: None,
                    ops: None,
                    check: check.clone(),
                    metrics: BTreeMap::new(),
                    peak_rss_kib: None,
                },
                json!({ "status": check }),
            )
        }
    }
}

/// `processes` one-thread runs of the runner at once, each at `scale / processes` (so that they
/// do the work of one `processes`-thread run between them), combined by [`combine_processes`];
/// what each printed goes to `runs.jsonl` as a list. Each warms up alone and waits at its start
/// gate (`ftrt-runner --start-gate`); once every one is there, all are released together, so
/// their clocks run at the same time.
fn run_as_processes(
    runner: &Runner,
    workload: &str,
    processes: usize,
    scale: f64,
    limit: Duration,
) -> (Run, Value) {
    let deadline = Instant::now() + limit;
    let share = (scale / processes as f64).to_string();
    let mut children: Vec<std::io::Result<WatchedChild>> = (0..processes)
        .map(|_| {
            let mut command = runner.command();
            command.args([
                workload,
                "--threads",
                "1",
                "--scale",
                &share,
                "--start-gate",
            ]);
            WatchedChild::start(command, Stdio::piped())
        })
        .collect();
    for child in children.iter_mut().flatten() {
        child.wait_until_ready(deadline);
    }
    for child in children.iter_mut().flatten() {
        child.release();
    }
    let (runs, raws): (Vec<Run>, Vec<Value>) = children
        .into_iter()
        .map(|child| {
            let result = child.and_then(|c| c.wait(deadline));
            finished(runner, (workload, 1), result, limit)
        })
        .unzip();
    (combine_processes(&runs), Value::Array(raws))
}

/// A runner's process whose output is read on threads of its own (a child must never block on
/// a full pipe while the bench waits for another), so that waiting for it can end at a
/// deadline: a runner that hangs (a deadlock in the build under test) is killed and fails its
/// run, and the bench goes on. Started with piped input, it is held at its start gate
/// (`--start-gate`) until [`release`](Self::release).
struct WatchedChild {
    child: Child,
    /// Standard output, line by line as it comes.
    lines: Receiver<Vec<u8>>,
    /// What was read from `lines` while waiting for `ready` (nothing, unless the child failed
    /// before its gate).
    before_ready: Vec<u8>,
    stdout: JoinHandle<()>,
    stderr: JoinHandle<Vec<u8>>,
}

/// How a [`WatchedChild`] ended: its output, and whether it ran past its deadline and was
/// killed.
struct Finished {
    output: Output,
    timed_out: bool,
}

/// How often a wait with a deadline looks at the child: short beside any run, long beside the
/// cost of a look.
const POLL: Duration = Duration::from_millis(5);

impl WatchedChild {
    fn start(mut command: Command, stdin: Stdio) -> std::io::Result<WatchedChild> {
        let mut child = command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (send, lines) = std::sync::mpsc::channel();
        let stdout = std::thread::spawn(move || loop {
            let mut line = Vec::new();
            match stdout.read_until(b'\n', &mut line) {
                Ok(1..) if send.send(line).is_ok() => {}
                _ => return,
            }
        });
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let stderr = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        Ok(WatchedChild {
            child,
            lines,
            before_ready: Vec::new(),
            stdout,
            stderr,
        })
    }

    /// Waits for the child's `ready`, for the end of its output if it stops first, or for the
    /// deadline (its result, or its failure, is read by [`wait`](Self::wait)).
    fn wait_until_ready(&mut self, deadline: Instant) {
        while let Ok(mut line) = self
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            if line.trim_ascii() == b"ready" {
                return;
            }
            self.before_ready.append(&mut line);
        }
    }

    /// Lets the child start its clock; closes its input.
    fn release(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            // A child that has exited already cannot read it: its result says why.
            let _ = stdin.write_all(b"go\n");
        }
    }

    /// Waits for the child to exit, killing it at the deadline.
    fn wait(mut self, deadline: Instant) -> std::io::Result<Finished> {
        self.release();
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            let now = Instant::now();
            if now >= deadline {
                // The whole process: a runner's threads die with it, and so do the processes
                // it started.
                kill_with_descendants(&mut self.child);
                timed_out = true;
                break self.child.wait()?;
            }
            std::thread::sleep(POLL.min(deadline - now));
        };
        let mut stdout = self.before_ready;
        let stderr = if timed_out {
            // Processes the runner started may still hold its pipes: take what came, and leave
            // the readers to end with them.
            stdout.extend(self.lines.try_iter().flatten());
            Vec::new()
        } else {
            let _ = self.stdout.join();
            stdout.extend(self.lines.try_iter().flatten());
            self.stderr.join().unwrap_or_default()
        };
        Ok(Finished {
            output: Output {
                status,
                stdout,
                stderr,
            },
            timed_out,
        })
    }
}

/// Kills `child` and, on Linux, every process it started that is still running
/// (`countdown-processes`' children), which would otherwise run on beside the next runs. They
/// are found before any is killed: a dead runner's children are handed to another parent.
/// (Not a process group of its own: the runner stays in the terminal's, so that an interrupt
/// reaches it with the bench.)
fn kill_with_descendants(child: &mut Child) {
    let descendants = descendants_of(child.id());
    if !descendants.is_empty() {
        let pids: Vec<String> = descendants.iter().map(u32::to_string).collect();
        // The shell's own `kill` (no `kill` program needed); a failure still kills the runner
        // below.
        let _ = Command::new("sh")
            .args(["-c", r#"kill -KILL "$@""#, "sh"])
            .args(&pids)
            .stderr(Stdio::null())
            .status();
    }
    let _ = child.kill();
}

/// The processes below `root` in the process tree, read from `/proc` (none where there is no
/// `/proc`).
fn descendants_of(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    // (pid, parent) of every process: the parent is the field after the name, which is in
    // parentheses and may hold spaces, so the line is read from its last ')'.
    let parents: Vec<(u32, u32)> = entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let (_, rest) = stat.rsplit_once(") ")?;
            let parent = rest.split(' ').nth(1)?.parse().ok()?;
            Some((pid, parent))
        })
        .collect();
    let mut found = vec![root];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(pid, _)| pid),
        );
        next += 1;
    }
    found.split_off(1)
}

/// The result of processes that ran at once, as one run: the longest time (each process times
/// its own share, and they leave their start gates together, so their clocks overlap), the
/// operations of all, their peak memory added up, and the first failure, if any (one failed
/// process fails the run). Metrics are per process and are left out.
fn combine_processes(runs: &[Run]) -> Run {
    let failure = runs.iter().enumerate().find(|(_, run)| !run.ok());
    let check = match failure {
        Some((i, run)) => format!("process {} of {}: {}", i + 1, runs.len(), run.check),
        None => "ok".to_owned(),
    };
    let times: Option<Vec<f64>> = runs.iter().map(|r| r.elapsed_s).collect();
    Run {
        elapsed_s: times.and_then(|times| times.into_iter().reduce(f64::max)),
        ops: runs.iter().map(|r| r.ops).sum(),
        check,
        metrics: BTreeMap::new(),
        peak_rss_kib: runs.iter().map(|r| r.peak_rss_kib).sum(),
    }
}

/// The thread counts `runner` runs at, of the plan's: all of them, except for the machine's
/// reference, which runs up to the cores (beyond them, processes only take turns).
fn thread_counts_of(runner: &Runner, threads: &[usize], cores: usize) -> Vec<usize> {
    threads
        .iter()
        .copied()
        .filter(|&t| !runner.processes || t <= cores)
        .collect()
}

/// Runs everything: one warm-up run per (workload, runner), then `repeat` interleaved rounds.
/// A failed run is recorded as failed and the bench goes on.
pub fn measure(
    runners: &[Runner],
    plan: &Plan,
    log: &mut RawLog,
) -> Result<BTreeMap<Key, Measurements>, Failed> {
    let mut cells: Vec<(&str, &Runner)> = plan
        .workloads
        .iter()
        .flat_map(|&w| {
            runners
                .iter()
                .filter(move |r| r.workloads.iter().any(|n| n == w))
                .map(move |r| (w, r))
        })
        .collect();
    let thread_counts = |runner: &Runner| thread_counts_of(runner, &plan.threads, plan.cores);
    // A runner with no thread count left (the reference, when every count is above the cores)
    // has no cell at all, not even a warm-up.
    cells.retain(|(_, runner)| !thread_counts(runner).is_empty());
    let total: u64 = cells
        .iter()
        .map(|(_, runner)| 1 + u64::from(plan.repeat) * thread_counts(runner).len() as u64)
        .sum();
    let progress = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} runs, {elapsed} elapsed, ~{eta} left  {msg}",
        )
        .expect("a valid template"),
    );
    let mut results: BTreeMap<Key, Measurements> = BTreeMap::new();
    for &(workload, runner) in &cells {
        progress.set_message(format!("warm-up {} {workload}", runner.build));
        let first = thread_counts(runner)[0];
        let run = run_once(runner, workload, first, plan, log, None)?;
        let entry = results
            .entry((workload.to_owned(), runner.build.clone(), first))
            .or_default();
        if !run.ok() {
            progress.println(format!(
                "FAILED warm-up {} {workload} x{first}: {}",
                runner.build, run.check
            ));
            entry.warm_up_failures.push(run.check);
        }
        progress.inc(1);
    }
    for round in 1..=plan.repeat {
        for &(workload, runner) in &cells {
            for threads in thread_counts(runner) {
                progress.set_message(format!(
                    "round {round}: {} {workload} x{threads}",
                    runner.build
                ));
                let run = run_once(runner, workload, threads, plan, log, Some(round))?;
                if !run.ok() {
                    progress.println(format!(
                        "FAILED {} {workload} x{threads}: {}",
                        runner.build, run.check
                    ));
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_whose_runner_lacks_a_workload_is_refused_not_left_out() {
        let list = |names: &[&str]| {
            serde_json::Value::Array(
                names
                    .iter()
                    .map(|n| serde_json::json!({"name": n, "unit": "op"}))
                    .collect(),
            )
        };
        let all = list(WORKLOADS);
        assert_eq!(
            offered_workloads("nogil", true, &all).unwrap().len(),
            WORKLOADS.len()
        );
        let older = list(&WORKLOADS[..WORKLOADS.len() - 1]);
        let Failed(message) = offered_workloads("nogil", true, &older).unwrap_err();
        assert!(
            message.contains(WORKLOADS[WORKLOADS.len() - 1]),
            "names what is lacking: {message}"
        );
        // An interpreter runs the workloads written in Python, whichever those are.
        assert_eq!(
            offered_workloads("python-3.14", false, &older)
                .unwrap()
                .len(),
            WORKLOADS.len() - 1
        );
        let Failed(message) = offered_workloads("nogil", true, &serde_json::json!({})).unwrap_err();
        assert!(message.contains("no array"), "{message}");
    }

    #[test]
    fn a_runner_must_report_the_variant_it_was_built_as() {
        let info = |build: &str| serde_json::json!({"build": build, "header_size": 16});
        assert!(check_reported_build(Variant::Gil, &info("gil")).is_ok());
        let Failed(message) = check_reported_build(Variant::Gil, &info("nogil")).unwrap_err();
        assert!(
            message.contains("built as gil reports itself as nogil"),
            "{message}"
        );
        assert!(check_reported_build(Variant::NogilAtomicRc, &Value::Null).is_err());
    }

    fn runner(build: &str, kind: RunnerKind) -> Runner {
        Runner {
            build: build.to_owned(),
            kind,
            program: PathBuf::new(),
            prefix: Vec::new(),
            info: Value::Null,
            workloads: Vec::new(),
            units: BTreeMap::new(),
            processes: false,
        }
    }

    fn python(build: &str, version: &str, free_threaded: bool) -> Runner {
        runner(
            build,
            RunnerKind::Python {
                path: PathBuf::from(format!("/opt/{build}/python3")),
                version: version.to_owned(),
                free_threaded,
            },
        )
    }

    #[test]
    fn a_free_threaded_interpreter_is_paired_with_a_default_one_of_its_version() {
        let runners = [
            runner("gil", RunnerKind::Variant(Variant::Gil)),
            runner("nogil", RunnerKind::Variant(Variant::Nogil)),
            python("python-3.13.5t", "3.13.5", true),
            python("python-3.14.0", "3.14.0", false),
            python("python-3.14.0t", "3.14.0", true),
        ];
        let references = gil_references(&runners);
        let of = |b: &str| references.get(b).map(String::as_str);
        assert_eq!(of("nogil"), Some("gil"));
        assert_eq!(of("gil"), Some("gil"));
        assert_eq!(of("python-3.14.0t"), Some("python-3.14.0"));
        assert_eq!(of("python-3.14.0"), Some("python-3.14.0"));
        assert_eq!(of("python-3.13.5t"), None, "no default 3.13.5 was given");
    }

    #[test]
    fn two_interpreters_of_one_version_get_two_names() {
        let mut runners = vec![python("python-3.14.0", "3.14.0", false)];
        let second = unique_label("python-3.14.0", &runners);
        assert_eq!(second, "python-3.14.0#2");
        runners.push(python(&second, "3.14.0", false));
        assert_eq!(unique_label("python-3.14.0", &runners), "python-3.14.0#3");
        assert_eq!(unique_label("python-3.14.0t", &runners), "python-3.14.0t");
    }

    #[test]
    fn the_reference_runs_up_to_the_cores_and_not_at_all_above_them() {
        let nogil = runner("nogil", RunnerKind::Variant(Variant::Nogil));
        let reference = processes_runner(&nogil);
        assert_eq!(thread_counts_of(&reference, &[1, 2, 4], 2), [1, 2]);
        assert_eq!(thread_counts_of(&nogil, &[1, 2, 4], 2), [1, 2, 4]);
        assert!(
            thread_counts_of(&reference, &[4], 2).is_empty(),
            "no cell, and so no warm-up above the cores"
        );
    }

    fn timed_run(elapsed_s: f64, ops: u64, check: &str) -> Run {
        Run {
            elapsed_s: Some(elapsed_s),
            ops: Some(ops),
            check: check.to_owned(),
            metrics: BTreeMap::from([("pause_p99_ms".to_owned(), 0.1)]),
            peak_rss_kib: Some(1000),
        }
    }

    #[test]
    fn processes_run_at_once_take_the_longest_time_and_all_the_work() {
        let run = combine_processes(&[timed_run(0.5, 10, "ok"), timed_run(0.7, 11, "ok")]);
        assert!(run.ok(), "{}", run.check);
        assert_eq!(run.elapsed_s, Some(0.7));
        assert_eq!(run.ops, Some(21));
        assert_eq!(
            run.peak_rss_kib,
            Some(2000),
            "each process's memory is its own"
        );
        assert!(
            run.metrics.is_empty(),
            "per-process metrics are not added up"
        );
    }

    #[test]
    fn one_failed_process_fails_the_run_and_is_named() {
        let mut crashed = timed_run(0.5, 10, "the runner failed (signal: 6) without a result");
        crashed.elapsed_s = None;
        let run = combine_processes(&[timed_run(0.5, 10, "ok"), crashed]);
        assert!(!run.ok());
        assert!(
            run.check.starts_with("process 2 of 2: the runner failed"),
            "{}",
            run.check
        );
        assert_eq!(run.elapsed_s, None, "no time without every process's");
    }

    #[test]
    fn the_machines_reference_runs_nogil_on_the_reference_workloads_and_has_no_gil_twin() {
        let mut nogil = runner("nogil", RunnerKind::Variant(Variant::Nogil));
        nogil.workloads = vec![
            "countdown".into(),
            "counter-race".into(),
            "object-create".into(),
            "cycle-create".into(),
        ];
        let reference = processes_runner(&nogil);
        assert_eq!(reference.build, PROCESSES_BUILD);
        assert!(reference.processes);
        assert_eq!(
            reference.workloads,
            ["countdown", "object-create", "cycle-create"]
        );
        let runners = [
            runner("gil", RunnerKind::Variant(Variant::Gil)),
            nogil,
            reference,
        ];
        let references = gil_references(&runners);
        assert_eq!(references.get("nogil").map(String::as_str), Some("gil"));
        assert_eq!(references.get(PROCESSES_BUILD), None);
    }

    /// A stand-in for `ftrt-runner --start-gate`: the later the slot it claims, the longer its
    /// warm-up (0, 0.3 and 0.6 s); at the gate it leaves a mark; once released, it finds every
    /// sibling's mark, or its result says how many it found.
    #[cfg(unix)]
    const GATED_STAND_IN: &str = r#"
dir="$1"
slot=0
while ! mkdir "$dir/slot$slot" 2>/dev/null; do slot=$((slot + 1)); done
sleep "0.$((slot * 3))"
touch "$dir/mark$slot"
echo ready
read -r go
found=$(ls "$dir" | grep -c '^mark')
check=ok
[ "$found" -eq 3 ] || check="released with $found of 3 at the gate"
printf '{"workload": "countdown", "threads": 1, "elapsed_s": 0.1, "ops": 5, "check": "%s", "metrics": {}}\n' "$check"
"#;

    #[cfg(unix)]
    #[test]
    fn a_runner_that_hangs_is_killed_at_the_run_limit_and_fails_its_run() {
        let mut hung = runner("nogil", RunnerKind::Variant(Variant::Nogil));
        hung.program = PathBuf::from("sh");
        // Prints a result, then never exits: a deadlock at teardown.
        hung.prefix = [
            "-c",
            r#"echo '{"elapsed_s": 0.1, "ops": 5, "check": "ok", "metrics": {}}'; exec sleep 60"#,
        ]
        .map(PathBuf::from)
        .to_vec();
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let (run, raw) = run_in_one_process(&hung, "countdown", 1, 1.0, limit);
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "waited for the runner"
        );
        assert!(!run.ok());
        assert!(run.check.contains("timed out"), "{}: {raw}", run.check);
        assert_eq!(raw["timed_out"], true);
        // The same for processes started together, hung before their start gate.
        hung.processes = true;
        hung.prefix = ["-c", "exec sleep 60"].map(PathBuf::from).to_vec();
        let (run, _) = run_as_processes(&hung, "countdown", 2, 1.0, limit);
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(run.check.contains("timed out"), "{}", run.check);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_hung_runner_is_killed_with_the_processes_it_started() {
        let pid_file = std::env::temp_dir().join(format!("ftrt-grandchild-{}", std::process::id()));
        let _ = std::fs::remove_file(&pid_file);
        let mut hung = runner("nogil", RunnerKind::Variant(Variant::Nogil));
        hung.program = PathBuf::from("sh");
        // Starts a process of its own (as countdown-processes does), then hangs.
        hung.prefix = [
            "-c",
            r#"sleep 60 & echo $! > "$0"; exec sleep 60"#,
            pid_file.to_str().unwrap(),
        ]
        .map(PathBuf::from)
        .to_vec();
        // Long enough for the shell to start its child and write its pid on a busy machine.
        let (run, _) = run_in_one_process(&hung, "countdown", 1, 1.0, Duration::from_secs(2));
        assert!(run.check.contains("timed out"), "{}", run.check);
        let pid = std::fs::read_to_string(&pid_file).expect("the runner wrote its child's pid");
        let _ = std::fs::remove_file(&pid_file);
        // A process left running would spend the cores the next runs are timed on.
        // Running unless its /proc entry is gone or a zombie (dead, waiting to be reaped).
        let running = || {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())).is_ok_and(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, s)| !s.starts_with('Z'))
            })
        };
        let gone = (0..100).any(|_| {
            let alive = running();
            if alive {
                std::thread::sleep(Duration::from_millis(20));
            }
            !alive
        });
        assert!(gone, "the runner's child {} outlived it", pid.trim());
    }

    #[cfg(unix)]
    #[test]
    fn processes_are_released_together_once_every_one_has_warmed_up() {
        let dir = std::env::temp_dir().join(format!("ftrt-start-gate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut stand_in = runner(PROCESSES_BUILD, RunnerKind::Variant(Variant::Nogil));
        stand_in.program = PathBuf::from("sh");
        stand_in.prefix = ["-c", GATED_STAND_IN, "sh", dir.to_str().unwrap()]
            .map(PathBuf::from)
            .to_vec();
        stand_in.processes = true;
        let (run, raw) = run_as_processes(&stand_in, "countdown", 3, 1.0, Duration::from_secs(60));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(run.ok(), "{}: {raw}", run.check);
        assert_eq!(run.ops, Some(15));
        assert_eq!(raw.as_array().map(Vec::len), Some(3));
    }

    #[cfg(unix)]
    fn output(code_or_signal: Result<i32, i32>, stdout: &str) -> Output {
        use std::os::unix::process::ExitStatusExt;
        let status = match code_or_signal {
            Ok(code) => std::process::ExitStatus::from_raw(code << 8),
            Err(signal) => std::process::ExitStatus::from_raw(signal),
        };
        Output {
            status,
            stdout: stdout.as_bytes().to_vec(),
            stderr: b"free(): double free detected".to_vec(),
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_result_followed_by_a_crash_is_a_failed_run() {
        let printed = r#"{"workload": "countdown", "threads": 2, "elapsed_s": 0.5, "ops": 10, "check": "ok", "metrics": {}}"#;
        let parse_run = |output: &Output| parse_run(output, "countdown", 2);
        let crashed = parse_run(&output(Err(6), printed));
        assert!(!crashed.ok(), "{}", crashed.check);
        assert!(crashed.check.contains("signal"), "{}", crashed.check);
        assert_eq!(
            crashed.elapsed_s,
            Some(0.5),
            "the time is kept for the record"
        );
        assert!(parse_run(&output(Ok(0), printed)).ok());
        assert!(!parse_run(&output(Ok(1), printed)).ok());
        assert!(!parse_run(&output(Ok(0), "")).ok());
    }

    /// The usual way a workload's check fails: the runner prints what the check found and
    /// exits successfully. The run fails, with that text as its check.
    #[cfg(unix)]
    #[test]
    fn a_check_that_found_a_fault_fails_its_run_though_the_runner_exits_successfully() {
        let printed = r#"{"workload": "countdown", "threads": 2, "elapsed_s": 0.5, "ops": 10, "check": "thread 1 computed 3, expected 4", "metrics": {}}"#;
        let parse_run = |output: &Output| parse_run(output, "countdown", 2);
        let failed = parse_run(&output(Ok(0), printed));
        assert!(!failed.ok());
        assert_eq!(failed.check, "thread 1 computed 3, expected 4");
        let without_check = r#"{"elapsed_s": 0.5, "ops": 10, "metrics": {}}"#;
        assert!(!parse_run(&output(Ok(0), without_check)).ok());
    }

    /// A result that says `ok` fails its run where it is not the run asked for, or where it
    /// did no work: otherwise a zero time would pass every target, and a runner that ignored
    /// `--threads` would be filed under a thread count it never ran at.
    #[cfg(unix)]
    #[test]
    fn an_ok_result_of_another_run_or_of_no_work_fails_its_run() {
        let result = |workload: &str, threads: u32, elapsed: &str, ops: &str| {
            let printed = format!(
                r#"{{"workload": "{workload}", "threads": {threads}, "elapsed_s": {elapsed}, "ops": {ops}, "check": "ok"}}"#
            );
            parse_run(&output(Ok(0), &printed), "countdown", 2).check
        };
        assert_eq!(result("countdown", 2, "0.5", "10"), "ok");
        for (check, says) in [
            (
                result("float-mult", 2, "0.5", "10"),
                "printed the result of \"float-mult\"",
            ),
            (result("countdown", 1, "0.5", "10"), "printed a result at 1"),
            (result("countdown", 2, "0.0", "10"), "a time of 0 s"),
            (result("countdown", 2, "-1.0", "10"), "a time of -1 s"),
            (result("countdown", 2, "0.5", "0"), "0 operations"),
            (result("countdown", 2, "0.5", "null"), "null operations"),
        ] {
            assert!(check.contains(says), "{check:?} should say {says:?}");
        }
    }
}
