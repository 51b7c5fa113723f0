//! `cargo xtask test`: the workspace tests of every build variant, then the loom models.

use crate::steps::{run_steps, CargoStep, Failed, StepRunner, TestSuite, Toolchain, Workspace};
use crate::variants::Variant;

/// The loom model suites: `RUSTFLAGS="--cfg loom"` integration tests. A crate that adds a
/// loom test file adds one line here.
pub const LOOM_SUITES: &[TestSuite] = &[
    TestSuite::new("ftrt-refcount", "loom"),
    TestSuite::new("ftrt-refcount", "loom_weak"),
    TestSuite::new("ftrt-lock", "loom"),
    TestSuite::new("ftrt-gil", "loom").with_features("gil"),
    TestSuite::new("ftrt-gil", "loom_world"),
    TestSuite::new("ftrt-object", "loom"),
];

/// Loom explores every interleaving up to this many preemptions; 3 finds the classic bugs
/// of two- and three-thread models while keeping the release-mode run to minutes.
const DEFAULT_LOOM_MAX_PREEMPTIONS: &str = "3";

pub fn run(workspace: &Workspace, variants: &[Variant], skip_loom: bool) -> Result<(), Failed> {
    run_steps(workspace, |runner| {
        for variant in Variant::in_canonical_order(variants) {
            runner.run(variant_tests(runner, variant))?;
        }
        if !skip_loom {
            for suite in LOOM_SUITES {
                runner.run(loom_models(runner, *suite))?;
            }
        }
        Ok(())
    })
}

fn variant_tests(runner: &StepRunner<'_>, variant: Variant) -> CargoStep {
    CargoStep::new(
        variant.name(),
        format!("{} tests", variant.name()),
        Toolchain::Current,
    )
    .args(["test", "--workspace"])
    .args(variant.feature_args())
    .target_dir(variant.target_dir(&runner.workspace().target_root))
}

/// Release mode because loom runs each model thousands of times; its own target dir
/// because `--cfg loom` changes every crate's build.
fn loom_models(runner: &StepRunner<'_>, suite: TestSuite) -> CargoStep {
    CargoStep::new(
        format!("loom {suite}"),
        format!("loom models of {}", suite.package),
        Toolchain::Current,
    )
    .env_flags("RUSTFLAGS", "--cfg loom")
    .env_default("LOOM_MAX_PREEMPTIONS", DEFAULT_LOOM_MAX_PREEMPTIONS)
    .args(["test", "--release"])
    .args(suite.cargo_args())
    .target_dir(runner.workspace().target_dir("loom"))
}
