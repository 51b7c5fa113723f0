//! The `ftrt-runner` binary from the outside: one JSON line per run, with the operations done
//! and the check, and processes started as children for `countdown-processes`.

use std::process::Command;

use serde_json::Value;

fn runner(args: &[&str]) -> (std::process::ExitStatus, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_ftrt-runner"))
        .args(args)
        .output()
        .expect("the runner starts");
    let line = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?} printed no JSON ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status, line)
}

#[test]
fn a_run_prints_its_time_operations_and_check() {
    let (status, line) = runner(&["countdown", "--threads", "2", "--scale", "0.01"]);
    assert!(status.success());
    assert_eq!(line["check"], "ok", "{line}");
    assert!(line["elapsed_s"].as_f64().unwrap() > 0.0);
    let ops = line["ops"].as_u64().expect("ops");
    assert!(ops > 0, "{line}");
    // Strong scaling: the same work at any thread count.
    let (_, four) = runner(&["countdown", "--threads", "4", "--scale", "0.01"]);
    assert_eq!(four["ops"].as_u64(), Some(ops));
}

#[test]
fn countdown_processes_runs_its_share_in_child_processes() {
    let (status, line) = runner(&[
        "countdown-processes",
        "--threads",
        "2",
        "--scale",
        "0.01",
        "--warm-up",
        "0",
    ]);
    assert!(status.success());
    assert_eq!(line["check"], "ok", "{line}");
}

#[test]
fn bad_arguments_are_refused_with_status_2() {
    for args in [
        &["countdown", "--threads", "0"][..],
        &["countdown", "--warm-up", "-1"],
        // A warm-up larger than the run would get around the largest scale.
        &["countdown", "--scale", "1000", "--warm-up", "1e6"],
        // More threads than the bench ever asks for: the system may not start them all.
        &["countdown", "--threads", "100000"],
        // Past the largest scale: counts that overflow, or a run of days.
        &["countdown", "--scale", "1e12"],
        &["countdown", "--scale", "0"],
        &["nope"],
    ] {
        let status = Command::new(env!("CARGO_BIN_EXE_ftrt-runner"))
            .args(args)
            .output()
            .expect("the runner starts")
            .status;
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn a_misplaced_or_missing_value_is_named_in_the_error() {
    for (args, error) in [
        (&["countdown", "--threads"][..], "--threads needs a value"),
        (&["countdown", "--scale"], "--scale needs a value"),
        (&["--threads", "2", "countdown"], "the workload comes first"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_ftrt-runner"))
            .args(args)
            .output()
            .expect("the runner starts");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(error), "{args:?}: {stderr}");
    }
}

fn peak_rss_kib(args: &[&str]) -> u64 {
    let (status, line) = runner(args);
    assert!(status.success());
    assert_eq!(line["check"], "ok", "{line}");
    line["peak_rss_kib"].as_u64().expect("peak_rss_kib")
}

#[cfg(target_os = "linux")]
#[test]
fn object_create_holds_enough_objects_for_their_headers_to_show_in_peak_memory() {
    // 200,000 instances at one thread: enough to fill the 100,000 held at once.
    let with_objects = peak_rss_kib(&["object-create", "--scale", "0.05", "--warm-up", "0"]);
    let without = peak_rss_kib(&["io-sleep", "--scale", "0.01", "--warm-up", "0"]);
    // 100,000 objects of at least a header each (16 bytes), and far more in practice: the
    // difference between a 16- and a 24-byte header must be a visible part of the peak.
    let held_kib = 100_000 * 16 / 1024;
    assert!(
        with_objects > without + held_kib,
        "object-create peaked at {with_objects} KiB, a workload without objects at {without} KiB"
    );
}

#[test]
fn the_runner_reports_the_build_its_objects_were_compiled_for() {
    let (status, info) = runner(&["--info"]);
    assert!(status.success());
    let expected_build = match info["count_strategy"].as_str() {
        Some("non-atomic") => "gil",
        Some("biased") => "nogil",
        Some("atomic") => "nogil-atomic-rc",
        other => panic!("unknown count strategy {other:?}"),
    };
    assert_eq!(info["build"], expected_build, "{info}");
}
