//! The workload catalogue has one source, this crate's registry, which `ftrt-runner --list`
//! prints, and two readers that cannot link to it and so keep a copy: `cargo xtask bench` (its
//! `WORKLOADS`, which it needs before any runner is built, to validate `--workloads`) and the
//! Python twins (`benches/python/workloads.py`). These tests fail when a copy drifts.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

fn repository_file(path: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The names `ftrt-runner --list` prints, in its order.
fn runner_catalogue() -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_ftrt-runner"))
        .arg("--list")
        .output()
        .expect("the runner starts");
    let list: Value = serde_json::from_slice(&output.stdout).expect("--list prints JSON");
    list.as_array()
        .expect("a JSON list")
        .iter()
        .map(|w| {
            w["name"]
                .as_str()
                .expect("every entry has a name")
                .to_owned()
        })
        .collect()
}

/// The string literals of the Rust item that starts at `start`, up to the first `end` after it.
fn quoted_between(text: &str, start: &str, end: &str) -> Vec<String> {
    let Some((_, rest)) = text.split_once(start) else {
        return Vec::new();
    };
    let body = rest.split_once(end).map_or(rest, |(body, _)| body);
    body.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// xtask's list: the literals of `pub const WORKLOADS: &[&str] = &[...];`.
fn xtask_workloads(source: &str) -> Vec<String> {
    quoted_between(source, "pub const WORKLOADS: &[&str] = &[", "];")
}

/// The Python twins: the keys of the `WORKLOADS = {` dict, one `"name": (...)` entry per line.
fn python_workloads(source: &str) -> Vec<String> {
    let Some((_, rest)) = source.split_once("\nWORKLOADS = {\n") else {
        return Vec::new();
    };
    rest.lines()
        .take_while(|line| line.trim() != "}")
        .filter_map(|line| line.trim().strip_prefix('"')?.split_once('"'))
        .map(|(name, _)| name.to_owned())
        .collect()
}

#[test]
fn xtask_lists_the_runners_workloads_in_the_same_order() {
    let xtask = xtask_workloads(&repository_file("xtask/src/bench/mod.rs"));
    assert_eq!(
        xtask,
        runner_catalogue(),
        "xtask/src/bench/mod.rs WORKLOADS"
    );
}

#[test]
fn every_workload_has_a_python_twin_in_the_same_order() {
    let python = python_workloads(&repository_file("benches/python/workloads.py"));
    assert_eq!(
        python,
        runner_catalogue(),
        "benches/python/workloads.py WORKLOADS"
    );
}

#[test]
fn the_readers_of_the_copies_find_every_name_and_nothing_else() {
    let rust = "const X: u8 = 0;\npub const WORKLOADS: &[&str] = &[\n    \"a\",\n    \"b-c\",\n];\nconst Y: &str = \"no\";";
    assert_eq!(xtask_workloads(rust), ["a", "b-c"]);
    let python = "X = {}\nWORKLOADS = {\n    \"a\": (a, 1, \"unit\"),\n    \"b-c\": (b, 2, \"u\"),\n}\nY = \"no\"\n";
    assert_eq!(python_workloads(python), ["a", "b-c"]);
    assert!(xtask_workloads("no list here").is_empty());
    assert!(python_workloads("no list here").is_empty());
}
