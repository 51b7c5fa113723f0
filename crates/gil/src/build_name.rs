//! The name of the build variant the features choose. The one spelling of the names: `variant.rs`
//! makes it [`BUILD`](crate::BUILD), and the build script, which cannot see the crate, includes
//! this file (`#[path]`) to hand the same name to dependent build scripts.

/// `"gil"`, `"nogil-atomic-rc"` or `"nogil"`, from the features `gil` and `atomic-rc` (both at
/// once is a compile error elsewhere; the name is `"gil"` so that error is the one reported).
pub const fn build_name(gil: bool, atomic_rc: bool) -> &'static str {
    match (gil, atomic_rc) {
        (true, _) => "gil",
        (false, true) => "nogil-atomic-rc",
        (false, false) => "nogil",
    }
}
