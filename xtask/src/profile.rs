//! `cargo xtask profile WORKLOAD`: where one workload's time goes, build beside build.
//!
//! For each build asked for (default `gil` and `nogil`), builds the workload runner with frame
//! pointers (in `target/profile-<build>`, so the bench's runners stay as they are), runs it under
//! `perf record -g`, folds the stacks with `inferno` and writes into the output folder:
//! - `<build>.svg`: the flame graph;
//! - `<build>.folded`: the folded stacks (`inferno-flamegraph` and other tools read them);
//! - `top.md`: the symbols with the most self time, one column pair per build, side by side.
//!
//! The runner is profiled whole: its in-process warm-up and its setup are in the samples too,
//! which is why the default size is the bench's full size (the timed part dominates). The run
//! must pass its own check, or the profile is refused.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use clap::builder::PossibleValuesParser;
use inferno::collapse::perf::{Folder, Options as FoldOptions};
use inferno::collapse::Collapse;
use inferno::flamegraph::{self, Options as GraphOptions};
use serde_json::Value;

use crate::bench::{runner_build_step, runner_in, ALLOCATOR_PURGE, WORKLOADS};
use crate::steps::{run_steps, write, Failed, Workspace};
use crate::variants::Variant;

#[derive(clap::Args, Debug)]
pub struct Options {
    /// The workload to profile.
    #[arg(value_parser = PossibleValuesParser::new(WORKLOADS))]
    pub workload: String,
    /// Comma-separated builds to profile.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST",
          default_values_t = [Variant::Gil, Variant::Nogil])]
    pub builds: Vec<Variant>,
    /// Worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: u16,
    /// Workload size relative to the bench's default.
    #[arg(long, default_value_t = 1.0, value_parser = parse_scale)]
    pub scale: f64,
    /// Samples per second and thread (`perf record -F`).
    #[arg(long, default_value_t = 1999, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub frequency: u32,
    /// How many symbols `top.md` lists per build.
    #[arg(long, default_value_t = 25)]
    pub top: usize,
    /// Output folder.
    #[arg(long, value_name = "DIR", default_value = "target/profile-report")]
    pub out: PathBuf,
}

fn parse_scale(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(scale) if scale > 0.0 && scale <= 100.0 => Ok(scale),
        _ => Err(format!(
            "'{value}' is not a size factor (a number above 0, at most 100)"
        )),
    }
}

/// What a build's profile came to: self samples per symbol, and where its files are.
struct Profile {
    build: Variant,
    self_samples: Vec<(String, u64)>,
    total: u64,
    svg: PathBuf,
}

pub fn run(workspace: &Workspace, options: Options) -> Result<(), Failed> {
    check_perf_installed()?;
    let builds = Variant::in_canonical_order(&options.builds);
    run_steps(workspace, |steps| {
        for &build in &builds {
            steps.run(profile_build_step(workspace, build))?;
        }
        Ok(())
    })?;
    let out = workspace.root.join(&options.out);
    fs::create_dir_all(&out)
        .map_err(|e| Failed(format!("cannot create {}: {e}", out.display())))?;
    let mut profiles = Vec::new();
    for &build in &builds {
        profiles.push(profile_one(workspace, build, &options, &out)?);
    }
    let table = top_table(&profiles, options.top, &options);
    write(&out.join("top.md"), &table)?;
    println!("{table}");
    for profile in &profiles {
        println!(
            "flame graph ({}): {}",
            profile.build.name(),
            profile.svg.display()
        );
    }
    Ok(())
}

/// The runner with frame pointers, so that `perf record -g` can walk the stacks; mimalloc (C)
/// keeps them too. A target dir of its own: the flags would rebuild the bench's runners.
fn profile_build_step(workspace: &Workspace, build: Variant) -> crate::steps::CargoStep {
    runner_build_step(build, profile_target_dir(workspace, build))
        .env_flags("RUSTFLAGS", "-C force-frame-pointers=yes")
        .env_flags("CFLAGS", "-fno-omit-frame-pointer")
}

fn profile_target_dir(workspace: &Workspace, build: Variant) -> PathBuf {
    workspace.target_dir(&format!("profile-{}", build.name()))
}

fn check_perf_installed() -> Result<(), Failed> {
    match Command::new("perf").arg("--version").output() {
        Ok(output) if output.status.success() => Ok(()),
        _ => Err(Failed(
            "`perf` is not installed or does not run: install it (Debian: `apt install \
             linux-perf`; Ubuntu: `apt install linux-tools-generic linux-tools-$(uname -r)`)"
                .to_owned(),
        )),
    }
}

fn profile_one(
    workspace: &Workspace,
    build: Variant,
    options: &Options,
    out: &Path,
) -> Result<Profile, Failed> {
    let name = build.name();
    let data = out.join(format!("{name}.perf.data"));
    let runner = runner_in(&profile_target_dir(workspace, build));
    let mut record = Command::new("perf");
    record
        .args(["record", "--quiet", "-g", "-F"])
        .arg(options.frequency.to_string())
        .arg("-o")
        .arg(&data)
        .arg("--")
        .arg(&runner)
        .args([&options.workload, "--threads"])
        .arg(options.threads.to_string())
        .arg("--scale")
        .arg(options.scale.to_string());
    if std::env::var_os(ALLOCATOR_PURGE.0).is_none() {
        record.env(ALLOCATOR_PURGE.0, ALLOCATOR_PURGE.1);
    }
    eprintln!(
        "==> [profile {name}] perf record ... {} {}",
        runner.display(),
        options.workload
    );
    let output = record
        .output()
        .map_err(|e| Failed(format!("cannot start perf: {e}")))?;
    check_recorded(&output, name)?;

    let script = Command::new("perf")
        .args(["script", "--no-inline", "-i"])
        .arg(&data)
        .output()
        .map_err(|e| Failed(format!("cannot start perf script: {e}")))?;
    if !script.status.success() {
        return Err(Failed(format!(
            "perf script failed on {}: {}",
            data.display(),
            String::from_utf8_lossy(&script.stderr).trim()
        )));
    }
    let mut folded = Vec::new();
    Folder::from(FoldOptions::default())
        .collapse(BufReader::new(&script.stdout[..]), &mut folded)
        .map_err(|e| Failed(format!("cannot fold the {name} stacks: {e}")))?;
    let folded = String::from_utf8_lossy(&folded).into_owned();
    if folded.trim().is_empty() {
        return Err(Failed(format!(
            "perf recorded no samples of the {name} runner (is the run too short? try a larger --scale)"
        )));
    }
    write(&out.join(format!("{name}.folded")), &folded)?;

    let svg = out.join(format!("{name}.svg"));
    let mut graph = GraphOptions::default();
    graph.title = format!(
        "{} on {name}, {} thread(s), size x{}",
        options.workload, options.threads, options.scale
    );
    let file = fs::File::create(&svg)
        .map_err(|e| Failed(format!("cannot create {}: {e}", svg.display())))?;
    flamegraph::from_lines(&mut graph, folded.lines(), BufWriter::new(file))
        .map_err(|e| Failed(format!("cannot draw the {name} flame graph: {e}")))?;

    let (self_samples, total) = self_samples(&folded);
    Ok(Profile {
        build,
        self_samples,
        total,
        svg,
    })
}

/// A failed record is an error with perf's own words and, where the kernel is the reason, what
/// to change; a runner whose check failed or that crashed fails the profile too.
fn check_recorded(output: &Output, build: &str) -> Result<(), Failed> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Option<Value> = stdout
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line).ok());
    let check = result
        .as_ref()
        .and_then(|r| r["check"].as_str().map(str::to_owned));
    if output.status.success() && check.as_deref() == Some("ok") {
        return Ok(());
    }
    if check.is_none() && perf_refused(&stderr) {
        return Err(Failed(format!(
            "perf cannot profile here: {}\n{}",
            stderr.trim(),
            kernel_advice()
        )));
    }
    Err(Failed(format!(
        "the {build} run under perf failed ({}; check: {}): {}",
        output.status,
        check.as_deref().unwrap_or("no result"),
        stderr.trim()
    )))
}

fn perf_refused(stderr: &str) -> bool {
    [
        "perf_event_paranoid",
        "Permission denied",
        "perf_event_open",
        "Access to performance monitoring",
    ]
    .iter()
    .any(|sign| stderr.contains(sign))
}

fn kernel_advice() -> String {
    let paranoid = fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|_| "unreadable".to_owned());
    format!(
        "kernel.perf_event_paranoid is {paranoid}; profiling your own processes needs 2 or \
         less (`sudo sysctl kernel.perf_event_paranoid=2`). In a container, perf_event_open may \
         be blocked by its seccomp profile or missing CAP_PERFMON: run it with \
         `--cap-add PERFMON` (or `--privileged`), or profile on the host."
    )
}

/// Self samples per symbol (the innermost frame of each folded stack), most first, and the total.
fn self_samples(folded: &str) -> (Vec<(String, u64)>, u64) {
    let mut by_symbol: BTreeMap<&str, u64> = BTreeMap::new();
    let mut total = 0;
    for line in folded.lines() {
        let Some((stack, count)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse::<u64>() else {
            continue;
        };
        let leaf = stack.rsplit(';').next().unwrap_or(stack);
        *by_symbol.entry(leaf).or_default() += count;
        total += count;
    }
    let mut ranked: Vec<(String, u64)> = by_symbol
        .into_iter()
        .map(|(symbol, count)| (symbol.to_owned(), count))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    (ranked, total)
}

/// The `top` symbols by self time of each build, side by side.
fn top_table(profiles: &[Profile], top: usize, options: &Options) -> String {
    let mut table = format!(
        "# Self time: {}, {} thread(s), size x{}\n\nShare of each build's samples spent in the symbol itself (not in what it calls).\n\n| # |",
        options.workload, options.threads, options.scale
    );
    for profile in profiles {
        table += &format!(" {} | % |", profile.build.name());
    }
    table += "\n|---|";
    table += &"---|---|".repeat(profiles.len());
    table += "\n";
    for rank in 0..top {
        if profiles.iter().all(|p| rank >= p.self_samples.len()) {
            break;
        }
        table += &format!("| {} |", rank + 1);
        for profile in profiles {
            match profile.self_samples.get(rank) {
                Some((symbol, count)) => {
                    let share = 100.0 * *count as f64 / profile.total.max(1) as f64;
                    table += &format!(" `{}` | {share:.1} |", shorten(symbol));
                }
                None => table += " | |",
            }
        }
        table += "\n";
    }
    table
}

/// Long generic and closure names cut to a readable width (the SVG has them whole).
fn shorten(symbol: &str) -> String {
    const WIDTH: usize = 80;
    let symbol = symbol.replace('|', "/").replace('`', "'");
    if symbol.chars().count() <= WIDTH {
        return symbol;
    }
    let cut: String = symbol.chars().take(WIDTH - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_time_goes_to_the_innermost_frame() {
        let folded = "main;a;b 5\nmain;a 3\nmain;c;b 2\nbad line\n";
        let (ranked, total) = self_samples(folded);
        assert_eq!(total, 10);
        assert_eq!(ranked, [("b".to_owned(), 7), ("a".to_owned(), 3)]);
    }

    #[test]
    fn a_refusal_by_the_kernel_is_told_apart_from_a_failed_run() {
        assert!(perf_refused(
            "Error:\nAccess to performance monitoring and observability operations is limited."
        ));
        assert!(!perf_refused("thread 'main' panicked at src/lib.rs"));
    }

    #[test]
    fn long_symbols_are_shortened_and_table_characters_escaped() {
        assert_eq!(shorten("a|b"), "a/b");
        let long = "x".repeat(200);
        assert_eq!(shorten(&long).chars().count(), 80);
    }
}
