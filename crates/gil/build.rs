//! Names the build variant for the crates above: `cargo:variant=...` becomes
//! `DEP_FTRT_GIL_VARIANT` in the build scripts of the packages that depend on this one (see
//! `links` in Cargo.toml), so they follow this crate's features without features of their own.

use std::env;

// The crate's own naming function, so the name handed on is `ftrt_gil::BUILD` by construction.
#[path = "src/build_name.rs"]
mod build_name;

fn main() {
    let gil = env::var_os("CARGO_FEATURE_GIL").is_some();
    let atomic_rc = env::var_os("CARGO_FEATURE_ATOMIC_RC").is_some();
    println!("cargo:variant={}", build_name::build_name(gil, atomic_rc));
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/build_name.rs");
}
