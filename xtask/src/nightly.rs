//! `cargo xtask miri` and `cargo xtask tsan`: the checks that need the nightly toolchain.

use std::process::{Command, Stdio};

use crate::steps::{
    nightly_command, run_steps, select, CargoStep, Failed, StepRunner, TestSuite, Toolchain,
    Workspace,
};

/// The unsafe-heavy crates whose unit and integration tests run under Miri.
pub const MIRI_CRATES: &[&str] = &["ftrt-refcount", "ftrt-lock", "ftrt-gil", "ftrt-object"];

/// Crates whose tests end with memory that is never freed by design: immortal objects (classes,
/// interned strings, singletons) and `crossbeam-epoch`'s global collector live until the process
/// exits. Miri's leak check is off for them; their tests check for leaks with the object
/// model's live-object counts instead.
const MIRI_LEAKS_BY_DESIGN: &[&str] = &["ftrt-object"];

/// The stress tests that run under ThreadSanitizer.
pub const TSAN_SUITES: &[TestSuite] = &[
    TestSuite::new("ftrt-refcount", "stress"),
    TestSuite::new("ftrt-lock", "stress"),
    TestSuite::new("ftrt-gil", "threads"),
    TestSuite::new("ftrt-gil", "threads").with_features("gil"),
    TestSuite::new("ftrt-object", "concurrency"),
    TestSuite::new("ftrt-object", "concurrency").with_features("gil"),
];

/// Integer-to-pointer casts are allowed because `parking_lot_core`, where every contended lock
/// parks, stores its queue pointers in integers; the project's own code uses only the strict
/// provenance APIs (`byte_sub`, casts from references), so nothing of ours relies on this.
/// Tree Borrows rather than Stacked Borrows because `crossbeam-epoch`'s intrusive list of
/// participants breaks a Stacked Borrows rule that Tree Borrows (the model Miri is moving to)
/// accepts. (`ftrt-refcount` and `ftrt-lock`, which do not use it, also pass under Stacked
/// Borrows: `MIRIFLAGS=-Zmiri-permissive-provenance cargo xtask miri --crates ...`.)
const DEFAULT_MIRIFLAGS: &str = "-Zmiri-permissive-provenance -Zmiri-tree-borrows";

/// Stop at the first race so its report is not buried, and show where the other side of
/// a lock-order inversion took its lock.
const DEFAULT_TSAN_OPTIONS: &str = "halt_on_error=1 second_deadlock_stack=1";

/// The sanitizer runtime and `-Zbuild-std` are set up for this target only.
const TSAN_TARGET: &str = "x86_64-unknown-linux-gnu";

const MIRI_NEEDS: &str = "this needs the nightly toolchain with the miri and rust-src components: \
     rustup toolchain install nightly && rustup component add --toolchain nightly miri rust-src";

const TSAN_NEEDS: &str = "this needs the nightly toolchain with the rust-src component: \
     rustup toolchain install nightly && rustup component add --toolchain nightly rust-src";

pub fn run_miri(workspace: &Workspace, crates: &[String]) -> Result<(), Failed> {
    ensure_components(&["miri", "rust-src"], miri_works, MIRI_NEEDS)?;
    run_steps(workspace, |runner| {
        runner.run(miri_setup())?;
        for package in select(MIRI_CRATES, crates) {
            runner.run(miri_tests(runner, package))?;
        }
        Ok(())
    })
}

pub fn run_tsan(workspace: &Workspace, crates: &[String]) -> Result<(), Failed> {
    if !cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        return Err(Failed(format!(
            "ThreadSanitizer runs are only supported on x86_64 Linux ({TSAN_TARGET}); \
             this host is {} {}",
            std::env::consts::ARCH,
            std::env::consts::OS
        )));
    }
    ensure_components(&["rust-src"], rust_src_installed, TSAN_NEEDS)?;
    run_steps(workspace, |runner| {
        for suite in TSAN_SUITES {
            if crates.is_empty() || crates.iter().any(|chosen| chosen == suite.package) {
                runner.run(tsan_tests(runner, *suite))?;
            }
        }
        Ok(())
    })
}

fn miri_flags(package: &str) -> String {
    if MIRI_LEAKS_BY_DESIGN.contains(&package) {
        format!("{DEFAULT_MIRIFLAGS} -Zmiri-ignore-leaks")
    } else {
        DEFAULT_MIRIFLAGS.to_owned()
    }
}

/// Builds Miri's sysroot up front, so its output is not mixed into the first test run.
fn miri_setup() -> CargoStep {
    CargoStep::new("miri setup", "miri setup", Toolchain::Nightly).args(["miri", "setup"])
}

fn miri_tests(runner: &StepRunner<'_>, package: &str) -> CargoStep {
    CargoStep::new(
        format!("miri {package}"),
        format!("Miri tests of {package}"),
        Toolchain::Nightly,
    )
    .env_default("MIRIFLAGS", &miri_flags(package))
    .args(["miri", "test", "-p", package])
    .target_dir(runner.workspace().target_dir("miri"))
}

/// `-Zbuild-std` rebuilds std with the sanitizer too (otherwise races inside std go
/// unseen), and the explicit `--target` keeps the sanitizer flags off build scripts and
/// proc macros. `--cfg ftrt_tsan` tells the tests to keep the system allocator: the sanitizer
/// cannot see the synchronisation inside mimalloc's C code.
fn tsan_tests(runner: &StepRunner<'_>, suite: TestSuite) -> CargoStep {
    CargoStep::new(
        format!("tsan {suite}"),
        format!("ThreadSanitizer run of {suite}"),
        Toolchain::Nightly,
    )
    .env_flags("RUSTFLAGS", "-Zsanitizer=thread --cfg ftrt_tsan")
    .env_flags("RUSTDOCFLAGS", "-Zsanitizer=thread --cfg ftrt_tsan")
    .env_default("TSAN_OPTIONS", DEFAULT_TSAN_OPTIONS)
    .args(["test", "-Zbuild-std", "--target", TSAN_TARGET])
    .args(suite.cargo_args())
    .target_dir(runner.workspace().target_dir("tsan"))
}

/// Checks for nightly components with `is_ready`; installs them with rustup when missing,
/// and explains what is needed when that fails too (offline, no rustup, ...).
fn ensure_components(
    components: &[&str],
    is_ready: fn() -> bool,
    needs: &str,
) -> Result<(), Failed> {
    if is_ready() {
        return Ok(());
    }
    let list = components.join(" ");
    println!("==> installing the nightly components: {list}");
    let installed = nightly_command("rustup")
        .args(["component", "add", "--toolchain", "nightly"])
        .args(components)
        .status()
        .is_ok_and(|status| status.success());
    if installed && is_ready() {
        Ok(())
    } else {
        Err(Failed(needs.to_owned()))
    }
}

fn miri_works() -> bool {
    let mut command = nightly_command("cargo");
    command.args(["miri", "--version"]);
    succeeds_quietly(&mut command)
}

fn rust_src_installed() -> bool {
    let output = nightly_command("rustup")
        .args(["+nightly", "component", "list", "--installed"])
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(output) if output.status.success() => String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == "rust-src"),
        _ => false,
    }
}

fn succeeds_quietly(command: &mut Command) -> bool {
    command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}
