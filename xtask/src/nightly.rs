//! `cargo xtask miri` and `cargo xtask tsan`: the checks that need the nightly toolchain.

use std::io::{self, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::steps::{
    nightly_command, run_steps, select, CargoStep, Failed, StepRunner, TestSuite, Toolchain,
    Workspace,
};
use crate::variants::Variant;

/// The unsafe-heavy crates whose unit and integration tests run under Miri.
pub const MIRI_CRATES: &[&str] = &["ftrt-refcount", "ftrt-lock", "ftrt-gil", "ftrt-object"];

/// Crates whose tests end with memory that is never freed by design: immortal objects (classes,
/// interned strings, singletons) and `crossbeam-epoch`'s global collector live until the process
/// exits. Miri's leak check is off for them; their tests check for leaks with the object
/// model's live-object counts instead. `ftrt-gil` is one because an attached thread pins
/// `crossbeam-epoch` in the free-threaded builds, so any test that attaches ends with the
/// collector's garbage bags still queued.
const MIRI_LEAKS_BY_DESIGN: &[&str] = &["ftrt-gil", "ftrt-object"];

/// The suites that run under ThreadSanitizer: the stress tests, and the suites that drive the
/// runtime's protocols between threads (most start threads of their own).
pub const TSAN_SUITES: &[TestSuite] = &[
    TestSuite::new("ftrt-refcount", "stress"),
    TestSuite::new("ftrt-lock", "stress"),
    // Sections begun in thread-local destructors after the thread's stack is gone, on threads
    // the tests start.
    TestSuite::new("ftrt-lock", "thread_exit"),
    TestSuite::new("ftrt-gil", "threads"),
    TestSuite::new("ftrt-gil", "threads").with_features("gil"),
    TestSuite::new("ftrt-object", "concurrency"),
    TestSuite::new("ftrt-object", "concurrency").with_features("ftrt-gil/gil"),
    TestSuite::new("ftrt-object", "local_objects"),
    TestSuite::new("ftrt-object", "hot"),
    // Stopping the world, and the collector that stops it, with threads attaching, parking and
    // exiting meanwhile.
    TestSuite::new("ftrt-gil", "stop_the_world"),
    TestSuite::new("ftrt-object", "gc"),
    // Local collections beside a thread that keeps the world from stopping, and beside
    // stopped-world collections on other threads.
    TestSuite::new("ftrt-object", "local_collections"),
    // Lock elision: threads holding the world alone, and the threads that make them let go.
    TestSuite::new("ftrt-object", "lock_elision"),
    TestSuite::new("ftrt-gil", "lock_elision"),
    // Sections begun after a thread's exit, beside a stop of the world; sections of both APIs
    // on one stack; checkpoint work, the stop's patience, and thread states' attach, detach
    // and exit.
    TestSuite::new("ftrt-gil", "sections_after_exit"),
    TestSuite::new("ftrt-gil", "sections_of_both_apis"),
    TestSuite::new("ftrt-gil", "checkpoint_work"),
    TestSuite::new("ftrt-gil", "stop_patience"),
    TestSuite::new("ftrt-gil", "thread_states"),
    // Reclamation: retired batches expiring on other threads, posted home, orphaned at exits,
    // and the back-pressure that makes a retiring thread wait for the epoch.
    TestSuite::new("ftrt-gil", "reclamation_pace"),
    TestSuite::new("ftrt-object", "reclamation"),
    TestSuite::new("ftrt-object", "thread_exit"),
    // The object model's behaviour and sections, with the threads their tests start.
    TestSuite::new("ftrt-object", "behaviour"),
    TestSuite::new("ftrt-object", "sections"),
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

/// How long rustup may take to download and install missing components (a few megabytes).
/// Downloads hang on some networks; past this rustup is stopped and the task fails with the
/// command to run by hand, instead of hanging with it.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a check for installed components may take; it downloads nothing, but the rustup
/// proxy could try to install a missing toolchain.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a bounded child is polled for its exit.
const POLL: Duration = Duration::from_millis(50);

/// The crates of [`MIRI_CRATES`] whose code differs between the build variants: those that
/// depend on `ftrt-gil`, which decides the variant. The others build the same in every one.
const MIRI_CRATES_PER_VARIANT: &[&str] = &["ftrt-gil", "ftrt-object"];

/// The variants `cargo xtask miri` runs when none is chosen: the default build alone, the one
/// whose tests are sized for Miri (`cfg!(miri)`: smaller counts, and the tests whose point is
/// volume ignored there). (The `gil` build's `ftrt-gil` tests pass too; its `ftrt-object`
/// tests, and the `nogil-atomic-rc` build's, have not yet run to the end there.)
pub const MIRI_DEFAULT_VARIANTS: &[Variant] = &[Variant::Nogil];

pub fn run_miri(
    workspace: &Workspace,
    crates: &[String],
    variants: &[Variant],
) -> Result<(), Failed> {
    ensure_components(&["miri", "rust-src"], miri_works, MIRI_NEEDS)?;
    let steps = miri_steps(workspace, crates, variants);
    run_steps(workspace, |runner| {
        runner.run(miri_setup())?;
        for step in steps {
            runner.run(step)?;
        }
        Ok(())
    })
}

/// One Miri test run per selected crate, and per selected variant for the crates whose code
/// depends on it (each variant in its own target dir, as `cargo xtask test` keeps them).
fn miri_steps(workspace: &Workspace, crates: &[String], variants: &[Variant]) -> Vec<CargoStep> {
    let variants = if variants.is_empty() {
        MIRI_DEFAULT_VARIANTS.to_vec()
    } else {
        Variant::in_canonical_order(variants)
    };
    let mut steps = Vec::new();
    for package in select(MIRI_CRATES, crates) {
        if MIRI_CRATES_PER_VARIANT.contains(&package) {
            steps.extend(
                variants
                    .iter()
                    .map(|&variant| miri_tests(workspace, package, Some(variant))),
            );
        } else {
            steps.push(miri_tests(workspace, package, None));
        }
    }
    steps
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

/// Miri runs `package`'s tests, in `variant` for a crate that depends on it (`None`: one that
/// does not, in the default build).
fn miri_tests(workspace: &Workspace, package: &str, variant: Option<Variant>) -> CargoStep {
    let (name, dir) = match variant {
        // The default build keeps the target dir it always had.
        None | Some(Variant::Nogil) => (package.to_owned(), "miri".to_owned()),
        Some(variant) => (
            format!("{package} {}", variant.name()),
            format!("miri-{}", variant.name()),
        ),
    };
    let step = CargoStep::new(
        format!("miri {name}"),
        format!("Miri tests of {name}"),
        Toolchain::Nightly,
    )
    .env_default("MIRIFLAGS", &miri_flags(package))
    .args(["miri", "test", "-p", package]);
    // Through `ftrt-gil`, which decides the variant: a dependency of every crate that has one,
    // and the package itself for `ftrt-gil`.
    let step = match variant.and_then(Variant::workload_features) {
        Some(features) => step.args(["--features", features]),
        None => step,
    };
    step.target_dir(workspace.target_dir(&dir))
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
/// and explains what is needed when that fails too (offline, no rustup, a hung download, ...).
fn ensure_components(
    components: &[&str],
    is_ready: fn() -> bool,
    needs: &str,
) -> Result<(), Failed> {
    if is_ready() {
        return Ok(());
    }
    let mut rustup = nightly_command("rustup");
    rustup
        .args(["component", "add", "--toolchain", "nightly"])
        .args(components);
    install(rustup, components, INSTALL_TIMEOUT, is_ready, needs)
}

/// Runs `installer` for at most `limit` (killing it after that), then checks with `is_ready`.
/// Every failure is one line that names the components and ends with `needs`, the commands
/// that install them by hand.
fn install(
    mut installer: Command,
    components: &[&str],
    limit: Duration,
    is_ready: impl Fn() -> bool,
    needs: &str,
) -> Result<(), Failed> {
    let what = match components {
        [one] => format!("nightly component {one}"),
        many => format!("nightly components {}", many.join(", ")),
    };
    println!(
        "==> installing the {what} (giving up after {} s)",
        limit.as_secs()
    );
    let failure = match status_within(&mut installer, limit) {
        Ok(status) if status.success() && is_ready() => return Ok(()),
        Ok(status) if status.success() => format!("the {what} is still missing after rustup"),
        Ok(status) => format!("rustup could not install the {what} ({status})"),
        Err(Unfinished::TimedOut) => format!(
            "installing the {what} did not finish within {} s, so rustup was stopped",
            limit.as_secs()
        ),
        Err(Unfinished::CouldNotRun(error)) => {
            format!("could not run rustup to install the {what} ({error})")
        }
    };
    Err(Failed(format!("{failure}; {needs}")))
}

fn miri_works() -> bool {
    let mut command = nightly_command("cargo");
    command
        .args(["miri", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    status_within(&mut command, PROBE_TIMEOUT).is_ok_and(|status| status.success())
}

fn rust_src_installed() -> bool {
    let mut command = nightly_command("rustup");
    command
        .args(["+nightly", "component", "list", "--installed"])
        .stderr(Stdio::null());
    match stdout_within(&mut command, PROBE_TIMEOUT) {
        Ok((status, stdout)) if status.success() => {
            stdout.lines().any(|line| line.trim() == "rust-src")
        }
        _ => false,
    }
}

/// Why a child bounded in time did not give an exit status.
#[derive(Debug)]
enum Unfinished {
    /// It could not be started (no such program, ...) or waited for.
    CouldNotRun(io::Error),
    /// It was still running at the limit, so it was killed.
    TimedOut,
}

/// Runs `command` (with the stdio it was given) for at most `limit`.
fn status_within(command: &mut Command, limit: Duration) -> Result<ExitStatus, Unfinished> {
    let mut child = command.spawn().map_err(Unfinished::CouldNotRun)?;
    wait_within(&mut child, limit)
}

/// Runs `command` for at most `limit` and returns its exit status and standard output.
fn stdout_within(
    command: &mut Command,
    limit: Duration,
) -> Result<(ExitStatus, String), Unfinished> {
    let mut child = command
        .stdout(Stdio::piped())
        .spawn()
        .map_err(Unfinished::CouldNotRun)?;
    let mut pipe = child.stdout.take().expect("stdout is piped");
    // Read on another thread, so a child that fills the pipe is not blocked while we poll.
    let (send, output) = mpsc::channel();
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        let _ = send.send(text);
    });
    let status = wait_within(&mut child, limit)?;
    // The pipe closes when the child exits; a grandchild it left behind could keep it open,
    // so even this wait is bounded.
    let text = output.recv_timeout(limit).unwrap_or_default();
    Ok((status, text))
}

/// Waits for `child` for at most `limit`; kills it (and reaps it) if it is still running then.
fn wait_within(child: &mut Child, limit: Duration) -> Result<ExitStatus, Unfinished> {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(Unfinished::CouldNotRun)? {
            return Ok(status);
        }
        let waited = started.elapsed();
        if waited >= limit {
            // If it exited just now, `kill` fails harmlessly; `wait` reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
            return Err(Unfinished::TimedOut);
        }
        thread::sleep(POLL.min(limit - waited));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::process::ExitStatusExt;

    use super::*;

    const SHORT: Duration = Duration::from_millis(200);

    fn labelled(steps: &[CargoStep]) -> Vec<(&str, String, Option<&str>)> {
        steps
            .iter()
            .map(|step| {
                let features = step
                    .args
                    .iter()
                    .position(|arg| arg == "--features")
                    .map(|at| step.args[at + 1].as_str());
                let dir = step.target_dir.as_ref().expect("a target dir");
                (step.label.as_str(), dir.display().to_string(), features)
            })
            .collect()
    }

    #[test]
    fn miri_runs_the_default_build_alone_unless_variants_are_chosen() {
        let workspace = Workspace::fixture();
        assert_eq!(
            labelled(&miri_steps(&workspace, &[], &[])),
            [
                ("miri ftrt-refcount", "/ws/target/miri".to_owned(), None),
                ("miri ftrt-lock", "/ws/target/miri".to_owned(), None),
                ("miri ftrt-gil", "/ws/target/miri".to_owned(), None),
                ("miri ftrt-object", "/ws/target/miri".to_owned(), None),
            ]
        );
    }

    #[test]
    fn miri_runs_each_chosen_variant_of_the_crates_that_depend_on_it_in_its_own_target_dir() {
        let workspace = Workspace::fixture();
        let crates = ["ftrt-lock".to_owned(), "ftrt-gil".to_owned()];
        assert_eq!(
            labelled(&miri_steps(
                &workspace,
                &crates,
                &[Variant::NogilAtomicRc, Variant::Gil, Variant::Nogil]
            )),
            [
                // Built the same in every variant: once.
                ("miri ftrt-lock", "/ws/target/miri".to_owned(), None),
                (
                    "miri ftrt-gil gil",
                    "/ws/target/miri-gil".to_owned(),
                    Some("ftrt-gil/gil")
                ),
                ("miri ftrt-gil", "/ws/target/miri".to_owned(), None),
                (
                    "miri ftrt-gil nogil-atomic-rc",
                    "/ws/target/miri-nogil-atomic-rc".to_owned(),
                    Some("ftrt-gil/atomic-rc")
                ),
            ]
        );
    }

    fn sleeper() -> Command {
        let mut command = Command::new("sleep");
        command.arg("60");
        command
    }

    #[test]
    fn a_child_still_running_at_the_limit_is_killed_and_reported_as_timed_out() {
        let mut child = sleeper().spawn().unwrap();
        assert!(matches!(
            wait_within(&mut child, SHORT),
            Err(Unfinished::TimedOut)
        ));
        // Reaped already, and by the kill rather than by its own exit.
        let status = child.try_wait().unwrap().expect("the child was reaped");
        assert_eq!(status.signal(), Some(9));
    }

    #[test]
    fn a_child_that_finishes_in_time_gives_its_exit_status_and_output() {
        let mut exits = Command::new("sh");
        exits.args(["-c", "exit 3"]);
        let status = status_within(&mut exits, PROBE_TIMEOUT).unwrap();
        assert_eq!(status.code(), Some(3));
        let mut lists = Command::new("sh");
        lists.args(["-c", "echo miri; echo rust-src"]);
        let (status, stdout) = stdout_within(&mut lists, PROBE_TIMEOUT).unwrap();
        assert!(status.success());
        assert_eq!(stdout, "miri\nrust-src\n");
    }

    #[test]
    fn a_program_that_does_not_exist_is_reported_not_waited_for() {
        let mut missing = Command::new("./no-such-program-here");
        assert!(matches!(
            status_within(&mut missing, PROBE_TIMEOUT),
            Err(Unfinished::CouldNotRun(_))
        ));
    }

    #[test]
    fn an_install_that_hangs_fails_with_one_line_naming_the_component_and_the_manual_command() {
        let Failed(message) =
            install(sleeper(), &["rust-src"], SHORT, || false, TSAN_NEEDS).unwrap_err();
        assert!(!message.contains('\n'), "{message}");
        assert!(
            message.contains("component rust-src did not finish"),
            "{message}"
        );
        assert!(
            message.contains("rustup component add --toolchain nightly rust-src"),
            "{message}"
        );
    }

    #[test]
    fn an_install_that_fails_or_leaves_components_missing_says_so() {
        let Failed(failed) = install(
            Command::new("false"),
            &["miri", "rust-src"],
            SHORT,
            || true,
            MIRI_NEEDS,
        )
        .unwrap_err();
        assert!(
            failed.starts_with("rustup could not install the nightly components miri, rust-src")
        );
        let Failed(missing) = install(
            Command::new("true"),
            &["rust-src"],
            SHORT,
            || false,
            TSAN_NEEDS,
        )
        .unwrap_err();
        assert!(missing.contains("still missing"), "{missing}");
        assert!(install(
            Command::new("true"),
            &["rust-src"],
            SHORT,
            || true,
            TSAN_NEEDS
        )
        .is_ok());
    }
}
