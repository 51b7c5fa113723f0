//! `cargo xtask bench` from the outside: a quick run's JSON honours the report contract, and bad
//! options are refused with the valid values and exit status 2.

use std::process::{Command, Output};

use serde_json::Value;

fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

fn refused_with(args: &[&str], listed: &str) {
    let output = xtask(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?} should be a usage error: {stderr}"
    );
    assert!(
        stderr.contains(listed),
        "{args:?}: the error should list the valid values ({listed}): {stderr}"
    );
}

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
    let results = report["results"].as_array().expect("results");
    assert_eq!(
        results.len(),
        2 * 2 * 2,
        "every workload x build x thread count"
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
        ] {
            assert!(result.get(key).is_some(), "{key} missing from {result}");
        }
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
        "countdown.svg",
        "counter-race.svg",
    ] {
        assert!(out.join(file).exists(), "{file} not written");
    }
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains("| P2 |") && markdown.contains("| P11 |"),
        "the summary lists the targets"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
