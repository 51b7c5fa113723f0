//! What the command-line tests share: running the built xtask, and the usage-error contract.

use std::process::{Command, Output};

/// Runs the xtask binary built for these tests with `args`.
pub fn xtask(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs")
}

/// `args` must be refused as a usage error (status 2) whose message contains `listed` (the
/// valid values, or what is wrong).
pub fn refused_with(args: &[&str], listed: &str) {
    let output = xtask(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{args:?} should be a usage error: {stderr}"
    );
    assert!(
        stderr.contains(listed),
        "{args:?}: the error should list the valid values ({listed}): {stderr}"
    );
}
