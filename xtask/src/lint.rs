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
    /// What the check runs over: the workspace once, each build variant, or each loom suite.
    pub scope: Scope,
    /// The target dir of a check that does not run per variant and builds (under the target
    /// root).
    pub target_dir: Option<&'static str>,
}

/// What one check runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Once in all.
    Once,
    /// Once per build variant, with its features, in its own target dir.
    PerVariant,
    /// Once per loom suite, over the suite and its crate's library, with `--cfg loom` (the
    /// suites' models and the libraries' loom-only halves, which no other build compiles;
    /// the crates' other tests are not written to compile under it).
    PerLoomSuite,
}

/// One run of a check: over everything, one variant, or one loom suite.
#[derive(Clone, Copy, Debug)]
pub enum Over {
    All,
    Variant(Variant),
    LoomSuite(TestSuite),
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
        scope: Scope::Once,
        target_dir: None,
    },
    Lint {
        name: "clippy",
        args: &["clippy", "--quiet", "--workspace", "--all-targets"],
        deny_warnings: DenyWarnings::AfterDashes,
        scope: Scope::PerVariant,
        target_dir: None,
    },
    Lint {
        name: "clippy loom",
        args: &["clippy", "--quiet", "--lib"],
        deny_warnings: DenyWarnings::AfterDashes,
        scope: Scope::PerLoomSuite,
        // The loom steps' own, so the loom build of the dependencies is shared.
        target_dir: Some("loom"),
    },
    Lint {
        name: "doc",
        args: &["doc", "--quiet", "--workspace", "--no-deps"],
        deny_warnings: DenyWarnings::Rustdocflags,
        scope: Scope::PerVariant,
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
        // has no switch for that; what fails is a crate that does not pack (`--no-verify`: the
        // packed crates are not built here, the build steps build them).
        deny_warnings: DenyWarnings::Inherent,
        scope: Scope::Once,
        target_dir: Some("package"),
    },
];

/// The step that runs `lint` over `over` (which matches the check's scope).
pub fn step(workspace: &Workspace, lint: &Lint, over: Over) -> CargoStep {
    let label = match over {
        Over::All => lint.name.to_owned(),
        Over::Variant(variant) => format!("{} {}", lint.name, variant.name()),
        Over::LoomSuite(suite) => format!("{} {suite}", lint.name),
    };
    let mut step =
        CargoStep::new(label.clone(), label, Toolchain::Current).args(lint.args.iter().copied());
    match over {
        Over::Variant(variant) => {
            step = step
                .args(variant.feature_args())
                .target_dir(variant.target_dir(&workspace.target_root));
        }
        Over::LoomSuite(suite) => {
            step = step
                .args(suite.cargo_args())
                .env_flags("RUSTFLAGS", "--cfg loom");
        }
        Over::All => {}
    }
    // (A per-variant check has none: it builds in the variant's.)
    if let Some(dir) = lint.target_dir {
        step = step.target_dir(workspace.target_dir(dir));
    }
    match lint.deny_warnings {
        DenyWarnings::Inherent => step,
        DenyWarnings::AfterDashes => step.binary_args(&["-D".to_owned(), "warnings".to_owned()]),
        DenyWarnings::Rustdocflags => step.env_flags("RUSTDOCFLAGS", "-D warnings"),
    }
}

/// Each run of `lint`, in order.
fn runs(lint: &Lint, variants: &[Variant]) -> Vec<Over> {
    match lint.scope {
        Scope::Once => vec![Over::All],
        Scope::PerVariant => Variant::in_canonical_order(variants)
            .into_iter()
            .map(Over::Variant)
            .collect(),
        Scope::PerLoomSuite => LOOM_SUITES.iter().copied().map(Over::LoomSuite).collect(),
    }
}

pub fn run(workspace: &Workspace, variants: &[Variant]) -> Result<(), Failed> {
    run_steps(workspace, |runner| {
        for lint in LINTS {
            for over in runs(lint, variants) {
                runner.run(step(workspace, lint, over))?;
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
        let step = step(
            &Workspace::fixture(),
            lint("clippy"),
            Over::Variant(Variant::Gil),
        );
        assert_eq!(step.args[step.args.len() - 2..], ["--features", "ftrt/gil"]);
        assert_eq!(step.binary_args, ["-D", "warnings"]);
        assert_eq!(
            step.target_dir,
            Some(PathBuf::from("/ws/target/variant-gil"))
        );
    }

    #[test]
    fn documentation_warnings_are_errors() {
        let step = step(
            &Workspace::fixture(),
            lint("doc"),
            Over::Variant(Variant::Nogil),
        );
        let rustdocflags = step.env.iter().find(|(key, _)| *key == "RUSTDOCFLAGS");
        assert!(rustdocflags.is_some_and(|(_, flags)| flags.ends_with("-D warnings")));
    }

    #[test]
    fn packaging_covers_every_library_crate_in_a_target_dir_of_its_own() {
        let step = step(&Workspace::fixture(), lint("package"), Over::All);
        assert!(step.args.iter().any(|arg| arg == "--workspace"));
        assert_eq!(step.target_dir, Some(PathBuf::from("/ws/target/package")));
    }

    #[test]
    fn every_loom_suite_is_linted_under_its_cfg_with_warnings_denied() {
        let loom = lint("clippy loom");
        assert_eq!(runs(loom, &[]).len(), LOOM_SUITES.len());
        for suite in LOOM_SUITES {
            let step = step(&Workspace::fixture(), loom, Over::LoomSuite(*suite));
            assert_eq!(step.args[..3], ["clippy", "--quiet", "--lib"]);
            assert_eq!(step.args[3..], suite.cargo_args());
            assert_eq!(step.binary_args, ["-D", "warnings"]);
            let rustflags = step.env.iter().find(|(key, _)| *key == "RUSTFLAGS");
            assert!(rustflags.is_some_and(|(_, flags)| flags.ends_with("--cfg loom")));
            assert_eq!(step.target_dir, Some(PathBuf::from("/ws/target/loom")));
        }
    }

    #[test]
    fn a_per_variant_check_builds_in_the_variants_target_dir_only() {
        for lint in LINTS.iter().filter(|lint| lint.scope == Scope::PerVariant) {
            assert_eq!(lint.target_dir, None, "{}", lint.name);
        }
    }

    #[test]
    fn formatting_runs_once_and_checks_only() {
        let fmt = lint("fmt");
        assert_eq!(fmt.scope, Scope::Once);
        assert!(fmt.args.contains(&"--check"));
    }
}
