//! `cargo xtask lint`: the static checks, with warnings denied. Formatting once (it does not
//! depend on the variant); clippy over every target and the documentation once per build
//! variant, in the variant's own target dir (the `cfg(feature = "gil")` code differs, and
//! sharing the test builds' dirs keeps the dependencies from being built twice); clippy again
//! over each loom suite and its crate's library under `--cfg loom`, whose code no other build
//! compiles (the models, and the library's loom-only halves); last, the library crates packaged
//! as they would be published.
//!
//! The packaging step is `cargo package --workspace --exclude xtask --no-verify`: it packs each
//! library crate (the manifest rewritten for the registry, the README, only the files cargo
//! would upload) and resolves its dependencies as a user of the published crate would, the
//! workspace's unpublished path dependencies coming from a temporary local registry of the
//! crates it just packed. So a dependency declared only by path, a version that does not
//! resolve or a manifest the registry would refuse fails here rather than at publishing time.
//! It does not build the packed crates (`--no-verify`): cargo unpacks the temporary registry's
//! crates once per path and reuses them on the next run, so a verifying run after a change
//! builds against the previous run's sources and fails spuriously. Without that cache (a clean
//! `CARGO_HOME`), `cargo package --workspace --exclude xtask` also builds each crate from its
//! package; it passed when this step was added. It needs the crates.io index, as any first
//! build does; `--allow-dirty` lets it run on uncommitted work.

use crate::steps::{run_steps, CargoStep, Failed, TestSuite, Toolchain, Workspace};
use crate::test::LOOM_SUITES;
use crate::variants::Variant;

/// One static check: the cargo arguments, and how its warnings are made errors.
#[derive(Clone, Copy, Debug)]
pub struct Lint {
    pub name: &'static str,
    pub args: &'static [&'static str],
    pub deny_warnings: DenyWarnings,
    /// Run once per build variant (with its features and target dir), or once in all.
    pub per_variant: bool,
    /// The target dir of a check that runs once and builds (under the target root).
    pub target_dir: Option<&'static str>,
}

/// Where a check takes `-D warnings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DenyWarnings {
    /// The tool fails on any finding by itself (`cargo fmt --check`).
    Inherent,
    /// After `--`, for the linted crates only: the dependencies are neither linted nor rebuilt.
    AfterDashes,
    /// In `RUSTDOCFLAGS`, which only documentation builds read.
    Rustdocflags,
}

/// The checks, in the order they run: the cheap one that needs no build first.
pub const LINTS: &[Lint] = &[
    Lint {
        name: "fmt",
        args: &["fmt", "--all", "--check"],
        deny_warnings: DenyWarnings::Inherent,
        per_variant: false,
        target_dir: None,
    },
    Lint {
        name: "clippy",
        args: &["clippy", "--quiet", "--workspace", "--all-targets"],
        deny_warnings: DenyWarnings::AfterDashes,
        per_variant: true,
        target_dir: None,
    },
    Lint {
        name: "doc",
        args: &["doc", "--quiet", "--workspace", "--no-deps"],
        deny_warnings: DenyWarnings::Rustdocflags,
        per_variant: true,
        target_dir: None,
    },
    Lint {
        name: "package",
        args: &[
            "package",
            "--quiet",
            "--workspace",
            "--exclude",
            "xtask",
            "--allow-dirty",
            "--no-verify",
        ],
        // Warnings about the manifests (a missing field, say) are printed, not denied: cargo
        // has no switch for that; what fails is a crate that does not pack or does not build.
        deny_warnings: DenyWarnings::Inherent,
        per_variant: false,
        target_dir: Some("package"),
    },
];

/// The step that runs `lint`, for `variant` when the check is per variant.
pub fn step(workspace: &Workspace, lint: &Lint, variant: Option<Variant>) -> CargoStep {
    let label = match variant {
        Some(variant) => format!("{} {}", lint.name, variant.name()),
        None => lint.name.to_owned(),
    };
    let mut step =
        CargoStep::new(label.clone(), label, Toolchain::Current).args(lint.args.iter().copied());
    if let Some(variant) = variant {
        step = step
            .args(variant.feature_args())
            .target_dir(variant.target_dir(&workspace.target_root));
    } else if let Some(dir) = lint.target_dir {
        step = step.target_dir(workspace.target_dir(dir));
    }
    match lint.deny_warnings {
        DenyWarnings::Inherent => step,
        DenyWarnings::AfterDashes => step.binary_args(&["-D".to_owned(), "warnings".to_owned()]),
        DenyWarnings::Rustdocflags => step.env_flags("RUSTDOCFLAGS", "-D warnings"),
    }
}

/// Clippy over a loom suite and its crate's library, built as the loom step builds them (in the
/// same target dir), with warnings denied. Only the suite's own test target: the crates' other
/// tests are not written to compile under `--cfg loom`.
pub fn loom_clippy_step(workspace: &Workspace, suite: TestSuite) -> CargoStep {
    let label = format!("clippy loom {suite}");
    CargoStep::new(label.clone(), label, Toolchain::Current)
        .env_flags("RUSTFLAGS", "--cfg loom")
        .args(["clippy", "--quiet", "--lib"])
        .args(suite.cargo_args())
        .target_dir(workspace.target_dir("loom"))
        .binary_args(&["-D".to_owned(), "warnings".to_owned()])
}

pub fn run(workspace: &Workspace, variants: &[Variant]) -> Result<(), Failed> {
    run_steps(workspace, |runner| {
        for lint in LINTS {
            if lint.per_variant {
                for variant in Variant::in_canonical_order(variants) {
                    runner.run(step(workspace, lint, Some(variant)))?;
                }
            } else {
                runner.run(step(workspace, lint, None))?;
            }
            if lint.name == "clippy" {
                for suite in LOOM_SUITES {
                    runner.run(loom_clippy_step(workspace, *suite))?;
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn lint(name: &str) -> &'static Lint {
        LINTS.iter().find(|lint| lint.name == name).unwrap()
    }

    #[test]
    fn clippy_denies_warnings_for_the_variant_in_its_own_target_dir() {
        let step = step(&Workspace::fixture(), lint("clippy"), Some(Variant::Gil));
        assert_eq!(step.args[step.args.len() - 2..], ["--features", "ftrt/gil"]);
        assert_eq!(step.binary_args, ["-D", "warnings"]);
        assert_eq!(
            step.target_dir,
            Some(PathBuf::from("/ws/target/variant-gil"))
        );
    }

    #[test]
    fn documentation_warnings_are_errors() {
        let step = step(&Workspace::fixture(), lint("doc"), Some(Variant::Nogil));
        let rustdocflags = step.env.iter().find(|(key, _)| *key == "RUSTDOCFLAGS");
        assert!(rustdocflags.is_some_and(|(_, flags)| flags.ends_with("-D warnings")));
    }

    #[test]
    fn packaging_covers_every_library_crate_in_a_target_dir_of_its_own() {
        let step = step(&Workspace::fixture(), lint("package"), None);
        assert!(step.args.iter().any(|arg| arg == "--workspace"));
        assert_eq!(step.target_dir, Some(PathBuf::from("/ws/target/package")));
    }

    #[test]
    fn every_loom_suite_is_linted_under_its_cfg_with_warnings_denied() {
        for suite in LOOM_SUITES {
            let step = loom_clippy_step(&Workspace::fixture(), *suite);
            assert_eq!(step.args[..3], ["clippy", "--quiet", "--lib"]);
            assert_eq!(step.args[3..], suite.cargo_args());
            assert_eq!(step.binary_args, ["-D", "warnings"]);
            let rustflags = step.env.iter().find(|(key, _)| *key == "RUSTFLAGS");
            assert!(rustflags.is_some_and(|(_, flags)| flags.ends_with("--cfg loom")));
        }
    }

    #[test]
    fn formatting_runs_once_and_checks_only() {
        let fmt = lint("fmt");
        assert!(!fmt.per_variant);
        assert!(fmt.args.contains(&"--check"));
    }
}
