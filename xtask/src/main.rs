//! Developer tasks for the ftrt workspace, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test [--variants gil,nogil,nogil-atomic-rc] [--no-loom]`: runs
//!   `cargo test --workspace` once per build variant (each in its own
//!   `target/variant-<name>`, so switching features rebuilds nothing; with
//!   `FTRT_EXPECTED_BUILD=<name>`, which `tests/build_variant.rs` checks), then `cargo test -p
//!   PKG --features F` for each package feature that is not a build variant (from `cargo
//!   metadata`), then the loom models (`RUSTFLAGS="--cfg loom" cargo test --release`, in
//!   `target/loom`, with `LOOM_MAX_PREEMPTIONS=3` unless set, and `FTRT_LOOM_MODELS=1`, which
//!   fails the one test a loom file has when its models were compiled out). Stops at the first
//!   failure.
//! - `cargo xtask features`: checks every workspace package on its own (`cargo check -p PKG
//!   --all-targets`, in `target/features`) with none of its features, each alone, and all
//!   together unless they exclude each other (`gil` + `atomic-rc`); first it fails if a package
//!   other than `ftrt-gil` and the umbrella has a build-variant feature.
//! - `cargo xtask lint [--variants LIST]`: the static checks with warnings denied, steps in
//!   `lint::LINTS`: `cargo fmt --all --check` once, then for each build variant (in its
//!   `target/variant-<name>`) `cargo clippy --workspace --all-targets -- -D warnings`, then
//!   clippy on each loom suite and its crate's library with `--cfg loom` (in `target/loom`),
//!   then per variant `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings`; then
//!   `cargo package --workspace --exclude xtask --no-verify` (each library crate packed, its
//!   dependencies resolved as the registry would).
//! - `cargo xtask miri [--crates LIST] [--variants LIST]`: runs the tests of the unsafe-heavy
//!   crates under Miri (`cargo +nightly miri test`, the crates that depend on the variant once
//!   per chosen variant, by default the `nogil` build's alone; with Tree Borrows and permissive
//!   provenance unless `MIRIFLAGS` is set), installing the nightly `miri` and `rust-src`
//!   components if they are missing.
//! - `cargo xtask tsan [--crates LIST]`: runs the multi-threaded suites under ThreadSanitizer
//!   (`-Zsanitizer=thread -Zbuild-std`, x86_64 Linux only), installing the nightly
//!   `rust-src` component if it is missing.
//! - `cargo xtask bench [--workloads LIST] [--builds LIST] [--threads LIST] [--repeat N]
//!   [--quick] [--json FILE] [--out DIR] [--python PATH]...`: builds the workload runner of
//!   each variant, runs every workload at every thread count, interleaved (each run appended
//!   to `runs.jsonl` as it finishes), and writes the scaling report (terminal table,
//!   `report.json`, `report.md`, SVG plots and a `vs_gil` heat map, target summary). Exits 1
//!   if any cell failed.
//! - `cargo xtask profile WORKLOAD [--builds LIST] [--threads N] [--scale F] [--frequency HZ]
//!   [--top K] [--out DIR]`: builds the runner of each build (default `gil,nogil`) with frame
//!   pointers, runs the workload under `perf record -g`, and writes a flame graph (`inferno`)
//!   and the folded stacks per build, and `top.md`: the symbols with the most self time, the
//!   builds side by side.
//! - `cargo xtask criterion [--variant V] [CRITERION_ARGS...]`: runs the criterion
//!   micro-benchmarks of one variant (default `nogil`), passing the arguments to criterion.
//!
//! Children run in the workspace root with the cargo that runs xtask (`$CARGO`), except
//! the nightly ones, which go through the rustup proxy as `cargo +nightly`. Exit status:
//! 0 when every step passed, 1 when a step failed, 2 for a command-line usage error.

mod bench;
mod criterion;
mod features;
mod lint;
mod nightly;
mod profile;
mod steps;
mod test;
mod variants;

use std::process::ExitCode;

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand};

use crate::steps::{packages_of, Failed, Workspace};
use crate::variants::Variant;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Developer tasks for the ftrt workspace"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Run the workspace tests of each build variant, then the loom models.
    Test {
        /// Comma-separated variants to test (default: all, in the order gil, nogil,
        /// nogil-atomic-rc).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
        variants: Vec<Variant>,
        /// Skip the loom models.
        #[arg(long)]
        no_loom: bool,
    },
    /// Check formatting, run clippy and rustdoc on each build variant (warnings denied), package.
    Lint {
        /// Comma-separated variants to lint (default: all).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
        variants: Vec<Variant>,
    },
    /// Check every package alone with each of its features, none, and all that go together.
    Features,
    /// Run the tests of the unsafe-heavy crates under Miri (needs nightly).
    Miri {
        /// Comma-separated crates to test (default: all of them).
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "LIST",
            value_parser = PossibleValuesParser::new(nightly::MIRI_CRATES.iter().copied())
        )]
        crates: Vec<String>,
        /// Comma-separated build variants for the crates whose code depends on the variant
        /// (`ftrt-gil`, `ftrt-object`; default: nogil).
        #[arg(long, value_enum, value_delimiter = ',', value_name = "LIST")]
        variants: Vec<Variant>,
    },
    /// Run the multi-threaded suites under ThreadSanitizer (needs nightly; x86_64 Linux only).
    Tsan {
        /// Comma-separated crates whose suites to run (default: all of them).
        #[arg(
            long,
            value_delimiter = ',',
            value_name = "LIST",
            value_parser = PossibleValuesParser::new(packages_of(nightly::TSAN_SUITES))
        )]
        crates: Vec<String>,
    },
    /// Run the workloads on every build and report how they scale.
    Bench(bench::Options),
    /// Profile one workload under `perf` on each build: flame graphs and top symbols side by side.
    Profile(profile::Options),
    /// Run the criterion micro-benchmarks.
    Criterion {
        /// The build variant to benchmark.
        #[arg(long, value_enum, default_value_t = Variant::Nogil)]
        variant: Variant,
        /// Arguments passed through to criterion (a filter, `--save-baseline NAME`, ...).
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CRITERION_ARGS"
        )]
        criterion_args: Vec<String>,
    },
}

fn main() -> ExitCode {
    // `parse` prints usage errors and exits with status 2 itself.
    let cli = Cli::parse();
    let workspace = Workspace::locate();
    let result = match cli.command {
        Task::Test { variants, no_loom } => test::run(&workspace, &variants, no_loom),
        Task::Lint { variants } => lint::run(&workspace, &variants),
        Task::Features => features::run(&workspace),
        Task::Miri { crates, variants } => nightly::run_miri(&workspace, &crates, &variants),
        Task::Tsan { crates } => nightly::run_tsan(&workspace, &crates),
        Task::Bench(options) => bench::run(&workspace, options),
        Task::Profile(options) => profile::run(&workspace, options),
        Task::Criterion {
            variant,
            criterion_args,
        } => criterion::run(&workspace, variant, &criterion_args),
    };
    report(result)
}

fn report(result: Result<(), Failed>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failed(message)) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn unknown_variant_is_a_usage_error() {
        let error = Cli::try_parse_from(["xtask", "test", "--variants", "gil,bogus"])
            .err()
            .expect("bogus is not a variant");
        assert_eq!(error.exit_code(), 2);
    }

    /// A limit past what a deadline can hold used to parse, then panic at the first run.
    #[test]
    fn a_run_limit_beyond_a_day_is_a_usage_error() {
        let parse = |limit: &str| Cli::try_parse_from(["xtask", "bench", "--run-limit", limit]);
        assert!(parse("86400").is_ok());
        for bad in ["0", "86401", "10000000000000000000"] {
            let error = parse(bad).err().expect("out of range");
            assert_eq!(error.exit_code(), 2, "--run-limit {bad}");
        }
    }

    #[test]
    fn bench_passes_hyphenated_arguments_to_criterion() {
        let cli = Cli::try_parse_from([
            "xtask",
            "criterion",
            "--variant",
            "gil",
            "--save-baseline",
            "x",
        ])
        .expect("valid command line");
        let Task::Criterion {
            variant,
            criterion_args,
        } = cli.command
        else {
            panic!("parsed as another task");
        };
        assert_eq!(variant, Variant::Gil);
        assert_eq!(criterion_args, ["--save-baseline", "x"]);
    }
}
