//! Names the build variant for the crates above: `cargo:variant=...` becomes
//! `DEP_FTRT_GIL_VARIANT` in the build scripts of the packages that depend on this one (see
//! `links` in Cargo.toml), so they follow this crate's features without features of their own.

use std::env;

fn main() {
    let gil = env::var_os("CARGO_FEATURE_GIL").is_some();
    let atomic_rc = env::var_os("CARGO_FEATURE_ATOMIC_RC").is_some();
    // Both at once is a compile error in lib.rs, with the explanation; name something here so
    // that error is the one the user sees.
    let variant = match (gil, atomic_rc) {
        (true, _) => "gil",
        (false, true) => "nogil-atomic-rc",
        (false, false) => "nogil",
    };
    println!("cargo:variant={variant}");
    println!("cargo:rerun-if-changed=build.rs");
}
