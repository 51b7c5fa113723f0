//! `cargo xtask test`: the workspace tests of every build variant, then each package feature
//! that is not a build variant, then the loom models.

use crate::features::{workspace_packages, Package};
use crate::steps::{run_steps, CargoStep, Failed, TestSuite, Toolchain, Workspace};
use crate::variants::Variant;

/// The loom model suites: `RUSTFLAGS="--cfg loom"` integration tests. A crate that adds a
/// loom test file adds one line here.
pub const LOOM_SUITES: &[TestSuite] = &[
    TestSuite::new("ftrt-refcount", "loom"),
    TestSuite::new("ftrt-refcount", "loom_weak"),
    TestSuite::new("ftrt-lock", "loom"),
    TestSuite::new("ftrt-gil", "loom").with_features("gil"),
    TestSuite::new("ftrt-gil", "loom_world"),
    TestSuite::new("ftrt-gil", "loom_checkpoint_work"),
    TestSuite::new("ftrt-object", "loom"),
];

/// Set for the loom steps. Without its cfg (`--cfg loom`, and for some files a feature) a loom
/// test file compiles to one test only, which fails when this is set: a step whose flags went
/// missing fails instead of passing with no model run.
pub const LOOM_MODELS_EXPECTED: &str = "FTRT_LOOM_MODELS";

/// Set for each variant's tests to the variant's name, which `tests/build_variant.rs` holds
/// `ftrt::BUILD` to: a step whose features went missing tests another build and fails.
pub const EXPECTED_BUILD: &str = "FTRT_EXPECTED_BUILD";

/// Loom explores every interleaving up to this many preemptions; 3 finds the classic bugs
/// of two- and three-thread models while keeping the release-mode run to minutes.
const DEFAULT_LOOM_MAX_PREEMPTIONS: &str = "3";

pub fn run(workspace: &Workspace, variants: &[Variant], skip_loom: bool) -> Result<(), Failed> {
    let packages = workspace_packages(workspace)?;
    let steps = plan(workspace, &packages, variants, skip_loom);
    run_steps(workspace, |runner| {
        for step in steps {
            runner.run(step)?;
        }
        Ok(())
    })
}

/// The steps of a run, in the order they run.
fn plan(
    workspace: &Workspace,
    packages: &[Package],
    variants: &[Variant],
    skip_loom: bool,
) -> Vec<CargoStep> {
    let mut steps: Vec<CargoStep> = Variant::in_canonical_order(variants)
        .into_iter()
        .map(|variant| variant_tests(workspace, variant))
        .collect();
    steps.extend(
        feature_tests(packages)
            .into_iter()
            .map(|(package, feature)| feature_test(workspace, package, feature)),
    );
    if !skip_loom {
        steps.extend(
            LOOM_SUITES
                .iter()
                .map(|suite| loom_models(workspace, *suite)),
        );
    }
    steps
}

fn variant_tests(workspace: &Workspace, variant: Variant) -> CargoStep {
    CargoStep::new(
        variant.name(),
        format!("{} tests", variant.name()),
        Toolchain::Current,
    )
    .env(EXPECTED_BUILD, variant.name())
    .args(["test", "--workspace"])
    .args(variant.feature_args())
    .target_dir(variant.target_dir(&workspace.target_root))
}

/// Each feature of each package that the variant runs never enable (those that select no build
/// variant, such as `ftrt-refcount`'s `serde`), as (package, feature), read from the
/// manifests so that a new feature is tested without being listed anywhere.
fn feature_tests(packages: &[Package]) -> Vec<(&str, &str)> {
    packages
        .iter()
        .flat_map(|package| {
            package
                .features
                .iter()
                .filter(|feature| !package.variant_features.contains(feature))
                .map(|feature| (package.name.as_str(), feature.as_str()))
        })
        .collect()
}

/// The package's tests with the feature on, in the default build's target dir, where the
/// variant run already built the rest.
fn feature_test(workspace: &Workspace, package: &str, feature: &str) -> CargoStep {
    CargoStep::new(
        format!("{package}[{feature}]"),
        format!("tests of {package} with feature {feature}"),
        Toolchain::Current,
    )
    .args(["test", "-p", package, "--features", feature])
    .target_dir(Variant::Nogil.target_dir(&workspace.target_root))
}

/// Release mode because loom runs each model thousands of times; its own target dir
/// because `--cfg loom` changes every crate's build.
fn loom_models(workspace: &Workspace, suite: TestSuite) -> CargoStep {
    CargoStep::new(
        format!("loom {suite}"),
        format!("loom models of {}", suite.package),
        Toolchain::Current,
    )
    .env_flags("RUSTFLAGS", "--cfg loom")
    .env_default("LOOM_MAX_PREEMPTIONS", DEFAULT_LOOM_MAX_PREEMPTIONS)
    .env(LOOM_MODELS_EXPECTED, "1")
    .args(["test", "--release"])
    .args(suite.cargo_args())
    .target_dir(workspace.target_dir("loom"))
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::features::is_variant_feature;

    fn env_of<'s>(step: &'s CargoStep, key: &str) -> Option<&'s str> {
        step.env
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.as_str())
    }

    #[test]
    fn each_variant_step_expects_its_own_build() {
        let steps = plan(&Workspace::fixture(), &[], &[], true);
        let expected: Vec<Option<&str>> = steps
            .iter()
            .map(|step| env_of(step, EXPECTED_BUILD))
            .collect();
        assert_eq!(
            expected,
            [Some("gil"), Some("nogil"), Some("nogil-atomic-rc")]
        );
    }

    #[test]
    fn every_loom_step_expects_models() {
        let steps = plan(&Workspace::fixture(), &[], &[Variant::Nogil], false);
        let loom_steps: Vec<&CargoStep> = steps
            .iter()
            .filter(|step| step.label.starts_with("loom "))
            .collect();
        assert_eq!(loom_steps.len(), LOOM_SUITES.len());
        for step in loom_steps {
            assert_eq!(
                env_of(step, LOOM_MODELS_EXPECTED),
                Some("1"),
                "{}",
                step.label
            );
        }
    }

    #[test]
    fn the_plan_tests_every_package_feature_that_is_not_a_variant() {
        let workspace = Workspace::locate();
        let packages = workspace_packages(&workspace).expect("cargo metadata");
        let features = feature_tests(&packages);
        assert!(
            features.contains(&("ftrt-refcount", "serde")),
            "{features:?}"
        );
        assert!(
            features
                .iter()
                .all(|(_, feature)| !is_variant_feature(feature)),
            "{features:?}"
        );
        let steps = plan(&workspace, &packages, &[Variant::Gil], true);
        assert!(
            steps
                .iter()
                .any(|step| step.args == ["test", "-p", "ftrt-refcount", "--features", "serde"]),
            "no step tests ftrt-refcount with serde"
        );
    }

    /// The package that `crate_dir/Cargo.toml` names.
    fn package_name(crate_dir: &Path) -> String {
        let text = fs::read_to_string(crate_dir.join("Cargo.toml")).expect("a manifest");
        let manifest: toml::Table = text.parse().expect("a valid manifest");
        manifest["package"]["name"]
            .as_str()
            .expect("a package name")
            .to_owned()
    }

    #[test]
    fn every_loom_test_file_is_a_loom_suite_and_every_loom_suite_has_its_file() {
        let crates = Workspace::locate().root.join("crates");
        let mut files: Vec<(String, String)> = Vec::new();
        for entry in fs::read_dir(&crates).expect("crates/") {
            let crate_dir = entry.expect("a directory entry").path();
            let Ok(tests) = fs::read_dir(crate_dir.join("tests")) else {
                continue;
            };
            for test in tests {
                let name = test.expect("a directory entry").file_name();
                let name = name.to_string_lossy();
                if let Some(test) = name.strip_suffix(".rs").filter(|t| t.starts_with("loom")) {
                    files.push((package_name(&crate_dir), test.to_owned()));
                }
            }
        }
        assert!(
            !files.is_empty(),
            "found no loom test file under {crates:?}"
        );
        let suites: Vec<(String, String)> = LOOM_SUITES
            .iter()
            .map(|suite| (suite.package.to_owned(), suite.test.to_owned()))
            .collect();
        let unlisted: Vec<_> = files.iter().filter(|f| !suites.contains(f)).collect();
        let missing: Vec<_> = suites.iter().filter(|s| !files.contains(s)).collect();
        assert!(
            unlisted.is_empty() && missing.is_empty(),
            "loom test files not in LOOM_SUITES: {unlisted:?}; \
             LOOM_SUITES entries without a file: {missing:?}"
        );
    }
}
