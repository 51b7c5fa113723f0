//! `cargo xtask criterion`: the criterion micro-benchmarks of the umbrella crate, for one
//! build variant.

use crate::steps::{run_steps, CargoStep, Failed, StepRunner, Toolchain, Workspace};
use crate::variants::Variant;

/// The criterion benches of the `ftrt` package (`benches/<name>.rs`).
pub const CRITERION_BENCHES: &[&str] = &["refcount", "sync", "object"];

const BENCH_PACKAGE: &str = "ftrt";

pub fn run(
    workspace: &Workspace,
    variant: Variant,
    criterion_args: &[String],
) -> Result<(), Failed> {
    run_steps(workspace, |runner| {
        for bench in CRITERION_BENCHES {
            runner.run(criterion_bench(runner, variant, bench, criterion_args))?;
        }
        Ok(())
    })
}

/// Builds in the variant's own target dir, as `cargo xtask test` does, so benchmarking the
/// variants one after another does not rebuild each from scratch every time.
fn criterion_bench(
    runner: &StepRunner<'_>,
    variant: Variant,
    bench: &str,
    criterion_args: &[String],
) -> CargoStep {
    CargoStep::new(
        format!("{} bench {bench}", variant.name()),
        format!("{} bench {bench}", variant.name()),
        Toolchain::Current,
    )
    .args(["bench", "-p", BENCH_PACKAGE, "--bench", bench])
    .args(variant.feature_args())
    .target_dir(variant.target_dir(&runner.workspace().target_root))
    .binary_args(criterion_args)
}
