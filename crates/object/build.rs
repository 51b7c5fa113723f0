//! Follows the build variant `ftrt-gil` decided (its build script publishes it as
//! `DEP_FTRT_GIL_VARIANT`): the code that only the `gil` build has is `#[cfg(ftrt_gil_build)]`.

use std::env;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_FTRT_GIL_VARIANT");
    let variant = env::var("DEP_FTRT_GIL_VARIANT")
        .expect("ftrt-gil's build script names the build variant (its `links` metadata)");
    // Only `gil` is named here; the other names are ftrt-gil's alone (a test checks that this
    // cfg and `ftrt_gil::BUILD` agree).
    if variant == "gil" {
        println!("cargo:rustc-cfg=ftrt_gil_build");
    }
    // For the test that checks this script and ftrt-gil agree.
    println!("cargo:rustc-env=FTRT_OBJECT_BUILD_VARIANT={variant}");
}
