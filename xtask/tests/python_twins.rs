//! The Python twins of the workloads (`benches/python/workloads.py`) check their own results:
//! each check passes on an honest run and fails when the work was done wrong.
//!
//! `FTRT_PY_SABOTAGE=1` makes every twin do its work wrong in one place (thread 0 does one unit
//! of work too many, or keeps a reference it should drop); every check must notice. Needs a
//! `python3` on the PATH; without one the test says so and checks nothing, unless
//! `FTRT_REQUIRE_PYTHON` is set, which makes it fail.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

mod python;

use python::python3_or_skip;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/python/workloads.py")
}

fn run(python: &str, workload: &str, threads: usize, sabotage: bool) -> Value {
    let mut command = Command::new(python);
    command.arg(script()).args([
        workload,
        "--threads",
        &threads.to_string(),
        "--scale",
        "0.02",
    ]);
    if sabotage {
        command.env("FTRT_PY_SABOTAGE", "1");
    }
    let output = command.output().expect("python runs");
    assert!(
        output.status.success(),
        "{workload}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON line")
}

fn workloads(python: &str) -> Vec<String> {
    let output = Command::new(python)
        .arg(script())
        .arg("--list")
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "--list failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let list: Value = serde_json::from_slice(&output.stdout).expect("a JSON list");
    let names: Vec<String> = list
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|w| w["name"].as_str().expect("a workload name").to_owned())
        .collect();
    // An empty list would check nothing and pass.
    assert!(!names.is_empty(), "--list names no workload");
    names
}

#[test]
fn every_python_check_passes_an_honest_run_and_fails_a_sabotaged_one() {
    let Some(python) = python3_or_skip("the Python twins") else {
        return;
    };
    let mut blind = Vec::new();
    for workload in workloads(python) {
        for threads in [1, 2] {
            let honest = run(python, &workload, threads, false);
            assert_eq!(honest["check"], "ok", "{workload} x{threads}: {honest}");
        }
        let sabotaged = run(python, &workload, 1, true);
        if sabotaged["check"] == "ok" {
            blind.push(workload);
        }
    }
    assert!(
        blind.is_empty(),
        "these checks cannot fail: they pass work done wrong: {blind:?}"
    );
}
