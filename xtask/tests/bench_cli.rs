//! `cargo xtask bench` from the outside: a quick run's JSON honours the report contract and judges
//! no target, a runner that fails (even after printing its result) fails its cell and the bench
//! without losing the other cells, and bad options are refused with the valid values and exit
//! status 2.

use std::process::{Command, Output};

use serde_json::Value;

mod common;
mod python;

use common::{refused_with, xtask};
use python::python3_or_skip;

#[test]
fn unknown_workloads_builds_and_bad_thread_counts_are_refused_with_status_2() {
    refused_with(
        &["bench", "--workloads", "countdown,nope"],
        "dict-shared-read",
    );
    refused_with(&["bench", "--builds", "gil,bogus"], "nogil-atomic-rc");
    refused_with(
        &["bench", "--threads", "1,0"],
        "whole numbers from 1 to 1024",
    );
    refused_with(
        &["bench", "--threads", "two"],
        "whole numbers from 1 to 1024",
    );
    refused_with(&["bench", "--repeat", "0"], "1..=100");
}

/// A `--json` path the report could not be written to is refused before any run, not after the
/// whole bench: a folder that exists is not a file.
#[test]
fn a_json_path_that_names_a_folder_is_refused_before_the_runs() {
    let dir = std::env::temp_dir().join(format!("ftrt-bench-json-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a folder");
    let output = xtask(&[
        "bench",
        "--quick",
        "--workloads",
        "countdown",
        "--builds",
        "gil",
        "--json",
        dir.to_str().unwrap(),
        "--out",
        dir.join("report").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "accepted: {stderr}");
    assert!(stderr.contains("a folder, not a file"), "{stderr}");
    assert!(
        !dir.join("report").join("runs.jsonl").exists(),
        "a run was logged first"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_quick_run_writes_a_report_that_honours_the_contract() {
    let dir = std::env::temp_dir().join(format!("ftrt-bench-test-{}", std::process::id()));
    let json = dir.join("out.json");
    let out = dir.join("report");
    let output = xtask(&[
        "bench",
        "--quick",
        "--workloads",
        "countdown,counter-race",
        "--builds",
        "gil,nogil",
        "--threads",
        "1,2",
        "--json",
        json.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("--json written"))
            .expect("valid JSON");
    assert_eq!(report["schema"], 1);
    assert!(report["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert!(report["machine"]["rustc"]
        .as_str()
        .unwrap()
        .starts_with("rustc"));
    // The machine's reference runs up to the cores: at 2 processes only on 2 cores or more.
    let reference_counts = if report["machine"]["cpus"].as_u64().unwrap() >= 2 {
        2
    } else {
        1
    };
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        2 * 2 * 2 + reference_counts,
        "every workload x build x thread count, and the machine's reference for the private \
         workload (countdown) at each thread count"
    );
    for result in results {
        for key in [
            "workload",
            "build",
            "threads",
            "repeats",
            "median_s",
            "min_s",
            "max_s",
            "speedup",
            "vs_gil",
            "peak_rss_kib",
            "check",
            "spread",
            "ops",
            "ns_per_op",
            "relative_throughput",
        ] {
            assert!(result.get(key).is_some(), "{key} missing from {result}");
        }
        assert!(result["ns_per_op"].as_f64().unwrap() > 0.0, "{result}");
        assert_eq!(result["check"], "ok", "{result}");
        let (min, median, max) = (
            result["min_s"].as_f64().unwrap(),
            result["median_s"].as_f64().unwrap(),
            result["max_s"].as_f64().unwrap(),
        );
        assert!(min <= median && median <= max && min > 0.0);
        if result["threads"] == 1 {
            assert_eq!(result["speedup"].as_f64(), Some(1.0));
        }
        if result["build"] == "gil" {
            assert_eq!(result["vs_gil"].as_f64(), Some(1.0));
        }
    }
    for file in [
        "report.json",
        "report.md",
        "runs.jsonl",
        "countdown.svg",
        "counter-race.svg",
        "vs_gil.svg",
    ] {
        assert!(out.join(file).exists(), "{file} not written");
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("| P2 |") && markdown.contains("| P11 |"),
        "the summary lists the targets"
    );
    assert!(
        markdown.lines().take(4).any(|l| l.contains("Quick run")),
        "a quick run says so at the top"
    );
    assert_eq!(report["full_run"], false);
    for target in report["targets"].as_array().unwrap() {
        assert_ne!(target["verdict"], "met", "a quick run judged {target}");
    }
    let raw_runs = std::fs::read_to_string(out.join("runs.jsonl")).unwrap();
    assert_eq!(
        raw_runs.lines().count(),
        (2 * 2 + 1) + (2 * 2 * 2 + reference_counts),
        "every run, warm-ups included, one line each"
    );
    if reference_counts == 2 {
        the_processes_ran_at_once_doing_the_work_of_the_threads(&report, &raw_runs);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `nogil-processes` at 2 threads is two one-thread `nogil` runners at once, which between them
/// did the operations of `nogil`'s 2-thread run, and its report entry says what it is.
fn the_processes_ran_at_once_doing_the_work_of_the_threads(report: &Value, raw_runs: &str) {
    let measured: Vec<Value> = raw_runs
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .filter(|run: &Value| {
            run["build"] == "nogil-processes" && run["threads"] == 2 && run["warm_up"] == false
        })
        .collect();
    assert_eq!(measured.len(), 1, "{raw_runs}");
    let children = measured[0]["runner"]
        .as_array()
        .expect("one entry per process");
    assert_eq!(children.len(), 2, "{children:?}");
    let printed: Vec<Value> = children
        .iter()
        .map(|c| serde_json::from_str(c["stdout"].as_str().unwrap()).expect("the child's JSON"))
        .collect();
    assert!(printed.iter().all(|p| p["threads"] == 1), "{printed:?}");
    let result = |build: &str| {
        report["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["workload"] == "countdown" && r["build"] == build && r["threads"] == 2)
            .unwrap_or_else(|| panic!("countdown {build} x2 in the report"))
            .clone()
    };
    let (threads, processes) = (result("nogil"), result("nogil-processes"));
    let children_ops: u64 = printed.iter().map(|p| p["ops"].as_u64().unwrap()).sum();
    assert_eq!(processes["ops"].as_u64(), Some(children_ops));
    let (a, b) = (threads["ops"].as_f64().unwrap(), children_ops as f64);
    assert!(
        (a - b).abs() <= a * 0.01,
        "the same work: {a} and {b} operations"
    );
    assert!(processes["vs_gil"].is_null(), "processes are not a build");
    let runner = report["runners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "nogil-processes")
        .expect("listed among the runners");
    assert_eq!(runner["processes"], true);
}

/// Runs a quick bench of `countdown` and `counter-race` on the nogil build at 1 thread, with
/// `env` set for the runners; returns the exit status and the JSON report.
fn quick_bench_with(name: &str, env: (&str, &str)) -> (Output, Option<Value>, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ftrt-bench-{name}-{}", std::process::id()));
    let out = dir.join("report");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--quick",
            "--workloads",
            "countdown,counter-race",
            "--builds",
            "nogil",
            "--threads",
            "1",
            "--out",
            out.to_str().unwrap(),
        ])
        .env(env.0, env.1)
        .output()
        .expect("xtask runs");
    let report = std::fs::read_to_string(out.join("report.json"))
        .ok()
        .map(|text| serde_json::from_str(&text).expect("valid JSON"));
    (output, report, dir)
}

fn check_of(report: &Value, workload: &str) -> String {
    report["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["workload"] == workload)
        .unwrap_or_else(|| panic!("{workload} missing from the report"))["check"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_runner_that_crashes_after_printing_fails_its_cell_and_the_bench() {
    let (output, report, dir) = quick_bench_with(
        "crash-after",
        ("FTRT_RUNNER_CRASH_AFTER_PRINT", "counter-race"),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "a crashed runner must fail the bench: {stderr}"
    );
    let report = report.expect("the report is written despite the crash");
    let check = check_of(&report, "counter-race");
    assert!(
        check.contains("signal") || check.contains("exit"),
        "the crashed cell says how the runner died: {check}"
    );
    assert_eq!(check_of(&report, "countdown"), "ok");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_failing_runner_does_not_lose_the_other_cells() {
    let (output, report, dir) = quick_bench_with(
        "crash-before",
        ("FTRT_RUNNER_CRASH_BEFORE_PRINT", "countdown"),
    );
    assert!(!output.status.success());
    let report = report.expect("the report is written despite the failure");
    assert_ne!(check_of(&report, "countdown"), "ok");
    assert_eq!(check_of(&report, "counter-race"), "ok");
    assert!(
        dir.join("report/runs.jsonl").exists(),
        "raw runs are written as they come"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_python_interpreters_of_the_same_version_are_two_cells() {
    let Some(python) = python3_or_skip("two interpreters of one version in one bench") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("ftrt-bench-pythons-{}", std::process::id()));
    let out = dir.join("report");
    let output = xtask(&[
        "bench",
        "--quick",
        "--workloads",
        "countdown",
        "--builds",
        "gil",
        "--threads",
        "1",
        "--python",
        python,
        "--python",
        python,
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let pythons: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["build"].as_str().filter(|b| b.starts_with("python")))
        .collect();
    assert_eq!(pythons.len(), 2, "{pythons:?}");
    assert_ne!(pythons[0], pythons[1]);
    for r in report["results"].as_array().unwrap() {
        assert_eq!(r["repeats"], 1, "one run per cell, not merged: {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn no_build_without_built_runners_fails_and_says_how_to_build_them() {
    let empty = std::env::temp_dir().join(format!("ftrt-bench-no-build-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "bench",
            "--no-build",
            "--quick",
            "--workloads",
            "countdown",
            "--builds",
            "nogil",
        ])
        .args(["--out", &empty.join("report").to_string_lossy()])
        .env("CARGO_TARGET_DIR", &empty)
        .output()
        .expect("xtask runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let _ = std::fs::remove_dir_all(&empty);
    assert!(
        !output.status.success(),
        "a bench with no runner cannot pass"
    );
    assert!(
        stderr.contains("--no-build: no nogil runner") && stderr.contains("without --no-build"),
        "the error should name the missing runner and how to build it: {stderr}"
    );
}
