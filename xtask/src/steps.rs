//! Running cargo as a child process: banners, timings, the summary and failure messages.

use std::env;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// A step or a setup check failed; `main` prints `error: <message>` and exits 1.
#[derive(Debug)]
pub struct Failed(pub String);

/// One test target of one package, e.g. the `loom` test of `ftrt-refcount`, built with the
/// package's `features` (empty for none: some models only exist in one build variant).
#[derive(Clone, Copy, Debug)]
pub struct TestSuite {
    pub package: &'static str,
    pub test: &'static str,
    pub features: &'static str,
}

impl TestSuite {
    pub const fn new(package: &'static str, test: &'static str) -> Self {
        Self {
            package,
            test,
            features: "",
        }
    }

    pub const fn with_features(self, features: &'static str) -> Self {
        Self { features, ..self }
    }

    /// The cargo arguments that select this suite.
    pub fn cargo_args(&self) -> Vec<&'static str> {
        let mut args = vec!["-p", self.package, "--test", self.test];
        if !self.features.is_empty() {
            args.extend(["--features", self.features]);
        }
        args
    }
}

impl fmt::Display for TestSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.package, self.test)?;
        if !self.features.is_empty() {
            write!(f, "[{}]", self.features)?;
        }
        Ok(())
    }
}

/// The distinct packages of `suites`, in order, for `--crates` to choose from.
pub fn packages_of(suites: &[TestSuite]) -> Vec<&'static str> {
    let mut packages: Vec<&'static str> = Vec::new();
    for suite in suites {
        if !packages.contains(&suite.package) {
            packages.push(suite.package);
        }
    }
    packages
}

/// The entries of `all` that are in `selected` (every one when nothing was selected), in
/// the order of `all`, so that `--crates b,a` runs the same steps as `--crates a,b`.
pub fn select<'a>(all: &'a [&'static str], selected: &[String]) -> Vec<&'a str> {
    all.iter()
        .copied()
        .filter(|name| selected.is_empty() || selected.iter().any(|chosen| chosen == name))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Toolchain {
    /// The toolchain that runs xtask (`$CARGO`), so children match the user's `cargo xtask`.
    Current,
    /// `cargo +nightly` through the rustup proxy, for Miri and the sanitizers.
    Nightly,
}

/// A cargo invocation to run, described rather than built so the banner can show it.
pub struct CargoStep {
    /// Names the step in the summary, e.g. `gil` or `loom ftrt-refcount/loom`.
    pub label: String,
    /// Completes "error: ... failed", e.g. `gil tests`.
    pub what: String,
    pub toolchain: Toolchain,
    pub args: Vec<String>,
    /// Arguments for the test or bench binary, passed after `--`.
    pub binary_args: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    pub target_dir: Option<PathBuf>,
}

impl CargoStep {
    pub fn new(label: impl Into<String>, what: impl Into<String>, toolchain: Toolchain) -> Self {
        CargoStep {
            label: label.into(),
            what: what.into(),
            toolchain,
            args: Vec::new(),
            binary_args: Vec::new(),
            env: Vec::new(),
            target_dir: None,
        }
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn binary_args(mut self, args: &[String]) -> Self {
        self.binary_args.extend_from_slice(args);
        self
    }

    pub fn target_dir(mut self, dir: PathBuf) -> Self {
        self.target_dir = Some(dir);
        self
    }

    /// Sets `key` for the child, unless the user already set it: their value wins.
    pub fn env_default(mut self, key: &'static str, value: &str) -> Self {
        if env::var_os(key).is_none() {
            self.env.push((key, value.to_owned()));
        }
        self
    }

    /// Sets `key` for the child, whatever the user set: a value the step depends on.
    pub fn env(mut self, key: &'static str, value: &str) -> Self {
        self.env.push((key, value.to_owned()));
        self
    }

    /// Sets a flags variable (RUSTFLAGS, ...) to the user's flags followed by `ours`, so
    /// that neither theirs nor ours is silently dropped.
    pub fn env_flags(mut self, key: &'static str, ours: &str) -> Self {
        self.env
            .push(flags_with_ours(key, ours, |name| env::var(name).ok()));
        self
    }

    /// The command as a user would type it, for the banner.
    fn display_command(&self) -> String {
        let mut words: Vec<String> = self
            .env
            .iter()
            .map(|(key, value)| format!("{key}={}", shell_quote(value)))
            .collect();
        words.push("cargo".to_owned());
        if self.toolchain == Toolchain::Nightly {
            words.push("+nightly".to_owned());
        }
        words.extend(self.args.iter().map(|arg| shell_quote(arg)));
        if !self.binary_args.is_empty() {
            words.push("--".to_owned());
            words.extend(self.binary_args.iter().map(|arg| shell_quote(arg)));
        }
        words.join(" ")
    }
}

/// The variable cargo reads instead of `key` when it is set, even to nothing:
/// `CARGO_ENCODED_RUSTFLAGS` wins over `RUSTFLAGS`, which cargo then ignores.
fn encoded_flags_key(key: &str) -> Option<&'static str> {
    match key {
        "RUSTFLAGS" => Some("CARGO_ENCODED_RUSTFLAGS"),
        "RUSTDOCFLAGS" => Some("CARGO_ENCODED_RUSTDOCFLAGS"),
        _ => None,
    }
}

/// Cargo splits the `CARGO_ENCODED_*` flags at the ASCII unit separator, not at spaces.
const ENCODED_FLAGS_SEPARATOR: &str = "\x1f";

/// The variable to set and its value so that the child gets the user's flags (read through
/// `lookup`) followed by `ours`. Where the user set the encoded variable cargo reads in place
/// of `key`, ours go there: set in `key`, cargo would drop them.
fn flags_with_ours(
    key: &'static str,
    ours: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (&'static str, String) {
    if let Some(encoded_key) = encoded_flags_key(key) {
        if let Some(theirs) = lookup(encoded_key) {
            let mut flags: Vec<&str> = Vec::new();
            // Set but empty means no flags, not one empty flag.
            if !theirs.is_empty() {
                flags.push(&theirs);
            }
            flags.extend(ours.split_whitespace());
            return (encoded_key, flags.join(ENCODED_FLAGS_SEPARATOR));
        }
    }
    let flags = match lookup(key) {
        Some(theirs) if !theirs.trim().is_empty() => format!("{} {ours}", theirs.trim()),
        _ => ours.to_owned(),
    };
    (key, flags)
}

fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=+,:@".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("\"{}\"", word.replace('"', "\\\""))
    }
}

/// Where the workspace lives and where the builds go.
/// Writes a report file, naming the path in the error.
pub fn write(path: &Path, text: &str) -> Result<(), Failed> {
    std::fs::write(path, text).map_err(|e| Failed(format!("cannot write {}: {e}", path.display())))
}

pub struct Workspace {
    pub root: PathBuf,
    pub target_root: PathBuf,
}

impl Workspace {
    /// A workspace at `/ws` for the unit tests that check command lines.
    #[cfg(test)]
    pub fn fixture() -> Self {
        Workspace {
            root: PathBuf::from("/ws"),
            target_root: PathBuf::from("/ws/target"),
        }
    }

    /// The workspace root is the parent of xtask's own manifest dir. Cargo sets
    /// `CARGO_MANIFEST_DIR` when it runs xtask; the compile-time value covers running the
    /// binary directly.
    pub fn locate() -> Workspace {
        let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .expect("xtask lives in a subdirectory of the workspace")
            .to_path_buf();
        let target_root = user_target_dir().unwrap_or_else(|| root.join("target"));
        Workspace { root, target_root }
    }

    pub fn target_dir(&self, name: &str) -> PathBuf {
        self.target_root.join(name)
    }

    fn command_for(&self, step: &CargoStep) -> Command {
        let mut command = match step.toolchain {
            Toolchain::Current => Command::new(current_cargo()),
            Toolchain::Nightly => nightly_command("cargo"),
        };
        command.current_dir(&self.root).args(&step.args);
        if let Some(dir) = &step.target_dir {
            command.arg("--target-dir").arg(dir);
        }
        if !step.binary_args.is_empty() {
            command.arg("--").args(&step.binary_args);
        }
        // What the test steps tell the tests they expect is each step's own: one exported in the
        // user's shell (copied from a banner) would hold every other step to it.
        for key in STEP_EXPECTATIONS {
            command.env_remove(key);
        }
        command.envs(step.env.iter().map(|(key, value)| (key, value)));
        command
    }
}

/// Variables a step sets for the tests it runs, never inherited.
const STEP_EXPECTATIONS: &[&str] = &[
    crate::test::LOOM_MODELS_EXPECTED,
    crate::test::EXPECTED_BUILD,
];

/// A `CARGO_TARGET_DIR` the user set moves all of our target dirs under it.
fn user_target_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env::var_os("CARGO_TARGET_DIR")?);
    let cwd = env::current_dir().ok()?;
    Some(cwd.join(dir))
}

/// Cargo sets `$CARGO` to the binary that runs xtask: using it keeps the children on the
/// same toolchain as the user's `cargo xtask`.
pub fn current_cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

/// Variables that pin a child to the toolchain that runs xtask. `$CARGO` and `$RUSTC` name
/// stable binaries that do not understand `+nightly`, and rustup sets `RUSTUP_TOOLCHAIN`
/// for everything under `cargo xtask`; our target dirs are passed explicitly.
const TOOLCHAIN_PINS: &[&str] = &[
    "CARGO",
    "RUSTC",
    "RUSTDOC",
    "RUSTUP_TOOLCHAIN",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTDOC",
    "CARGO_TARGET_DIR",
    "CARGO_BUILD_TARGET_DIR",
];

/// `program` (a rustup proxy: `cargo` or `rustup`) freed from the toolchain pins, for
/// `+nightly` runs.
pub fn nightly_command(program: &str) -> Command {
    let mut command = Command::new(program);
    if program == "cargo" {
        command.arg("+nightly");
    }
    for key in TOOLCHAIN_PINS {
        command.env_remove(key);
    }
    command
}

/// Runs steps one after the other and remembers how long each took.
pub struct StepRunner<'w> {
    workspace: &'w Workspace,
    passed: Vec<(String, Duration)>,
    started: Instant,
}

impl<'w> StepRunner<'w> {
    pub fn new(workspace: &'w Workspace) -> Self {
        StepRunner {
            workspace,
            passed: Vec::new(),
            started: Instant::now(),
        }
    }

    pub fn workspace(&self) -> &Workspace {
        self.workspace
    }

    /// Prints the banner, runs the step with inherited stdio, and records its wall time.
    pub fn run(&mut self, step: CargoStep) -> Result<(), Failed> {
        println!("==> [{}] {}", step.label, step.display_command());
        let started = Instant::now();
        let status = self
            .workspace
            .command_for(&step)
            .status()
            .map_err(|error| Failed(format!("could not start cargo for {}: {error}", step.what)))?;
        if !status.success() {
            return Err(Failed(format!(
                "{} failed ({})",
                step.what,
                describe_exit(status)
            )));
        }
        self.passed.push((step.label, started.elapsed()));
        Ok(())
    }

    /// One `ok` line per passed step and the total, printed even after a failure so the
    /// user sees how far the run got.
    pub fn print_summary(&self) {
        if self.passed.is_empty() {
            return;
        }
        let width = self
            .passed
            .iter()
            .map(|(label, _)| label.len())
            .max()
            .unwrap_or(0);
        println!();
        for (label, elapsed) in &self.passed {
            println!("ok  {label:<width$}  ({:.1} s)", elapsed.as_secs_f64());
        }
        println!("elapsed: {:.1} s", self.started.elapsed().as_secs_f64());
    }
}

fn describe_exit(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("cargo exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            return format!("cargo was killed by signal {signal}");
        }
    }
    format!("cargo ended abnormally: {status}")
}

/// Runs `body` with a fresh runner, then prints the summary whether or not it succeeded.
pub fn run_steps(
    workspace: &Workspace,
    body: impl FnOnce(&mut StepRunner<'_>) -> Result<(), Failed>,
) -> Result<(), Failed> {
    let mut runner = StepRunner::new(workspace);
    let result = body(&mut runner);
    runner.print_summary();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_args_come_after_cargo_args() {
        let step = CargoStep::new("nogil", "nogil bench", Toolchain::Current)
            .args(["bench", "--bench", "refcount"])
            .target_dir(PathBuf::from("/ws/target/variant-nogil"))
            .binary_args(&["--save-baseline".to_owned(), "before".to_owned()]);
        let command = Workspace::fixture().command_for(&step);
        let args: Vec<_> = command
            .get_args()
            .map(|arg| arg.to_string_lossy())
            .collect();
        assert_eq!(
            args,
            [
                "bench",
                "--bench",
                "refcount",
                "--target-dir",
                "/ws/target/variant-nogil",
                "--",
                "--save-baseline",
                "before"
            ]
        );
        assert_eq!(
            step.display_command(),
            "cargo bench --bench refcount -- --save-baseline before"
        );
    }

    #[test]
    fn nightly_steps_go_through_the_rustup_proxy() {
        let step = CargoStep::new("miri", "miri", Toolchain::Nightly).args(["miri", "setup"]);
        let command = Workspace::fixture().command_for(&step);
        assert_eq!(command.get_program(), "cargo");
        assert_eq!(command.get_args().next().unwrap(), "+nightly");
        let removed: Vec<_> = command
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(key, _)| key.to_string_lossy().into_owned())
            .collect();
        assert!(removed.iter().any(|key| key == "RUSTUP_TOOLCHAIN"));
        assert!(removed.iter().any(|key| key == "CARGO"));
    }

    #[test]
    fn a_step_sets_its_own_expectations_and_inherits_none() {
        let env_of = |step: &CargoStep| -> Vec<(String, Option<String>)> {
            let command = Workspace::fixture().command_for(step);
            command
                .get_envs()
                .map(|(key, value)| {
                    let value = value.map(|value| value.to_string_lossy().into_owned());
                    (key.to_string_lossy().into_owned(), value)
                })
                .collect()
        };
        let plain = CargoStep::new("nogil", "nogil tests", Toolchain::Current);
        let env = env_of(&plain);
        for key in STEP_EXPECTATIONS {
            assert!(env.contains(&(key.to_string(), None)), "{key} inherited");
        }
        let gil = plain.env(crate::test::EXPECTED_BUILD, "gil");
        let env = env_of(&gil);
        let expected = (
            crate::test::EXPECTED_BUILD.to_owned(),
            Some("gil".to_owned()),
        );
        assert!(env.contains(&expected), "{env:?}");
    }

    /// A lookup of the user's environment that finds only `vars`.
    fn user_env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn our_flags_follow_the_users_flags() {
        assert_eq!(
            flags_with_ours("RUSTFLAGS", "--cfg loom", user_env(&[])),
            ("RUSTFLAGS", "--cfg loom".to_owned())
        );
        assert_eq!(
            flags_with_ours(
                "RUSTFLAGS",
                "--cfg loom",
                user_env(&[("RUSTFLAGS", " -C opt-level=2 ")])
            ),
            ("RUSTFLAGS", "-C opt-level=2 --cfg loom".to_owned())
        );
    }

    #[test]
    fn our_flags_join_encoded_flags_which_cargo_reads_instead() {
        let user = [
            ("CARGO_ENCODED_RUSTFLAGS", "-C\x1fopt-level=2"),
            ("RUSTFLAGS", "ignored by cargo"),
        ];
        assert_eq!(
            flags_with_ours("RUSTFLAGS", "--cfg loom", user_env(&user)),
            (
                "CARGO_ENCODED_RUSTFLAGS",
                "-C\x1fopt-level=2\x1f--cfg\x1floom".to_owned()
            )
        );
        assert_eq!(
            flags_with_ours(
                "RUSTDOCFLAGS",
                "-D warnings",
                user_env(&[("CARGO_ENCODED_RUSTDOCFLAGS", "")])
            ),
            ("CARGO_ENCODED_RUSTDOCFLAGS", "-D\x1fwarnings".to_owned())
        );
    }

    #[test]
    fn selection_keeps_the_listed_order() {
        let all = ["a", "b", "c"];
        let chosen = ["c".to_owned(), "a".to_owned()];
        assert_eq!(select(&all, &chosen), ["a", "c"]);
        assert_eq!(select(&all, &[]), all);
    }
}
