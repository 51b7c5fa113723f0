//! Finding `python3` for the tests that run the Python twins of the workloads.

use std::process::Command;

/// `python3` when it runs here. Without one, the calling test says what it leaves unchecked and
/// skips (`None`), unless `FTRT_REQUIRE_PYTHON` is set (CI sets it after installing python3):
/// then the missing interpreter fails the test, so the twins cannot go unchecked unnoticed.
pub fn python3_or_skip(unchecked: &str) -> Option<&'static str> {
    let found = Command::new("python3").arg("--version").output();
    if found.is_ok_and(|o| o.status.success()) {
        return Some("python3");
    }
    assert!(
        std::env::var_os("FTRT_REQUIRE_PYTHON").is_none(),
        "FTRT_REQUIRE_PYTHON is set but no python3 runs from the PATH: {unchecked} cannot be checked"
    );
    eprintln!("skipped (no python3 on the PATH): {unchecked}");
    None
}
