//! The build variant: this crate is the one that decides it, from its features `gil` and
//! `atomic-rc`; everything above asks here (or, for code that must be compiled out, reads the
//! `DEP_FTRT_GIL_VARIANT` this crate's build script hands it).
//!
//! The leaf crates offer every mechanism side by side and know nothing of the variant:
//! `ftrt-refcount` has all three counts, `ftrt-lock` sections that always lock.

use ftrt_refcount::{RefCount, Strategy};

use crate::build_name::build_name;

#[cfg(all(feature = "gil", feature = "atomic-rc"))]
compile_error!(
    "features `gil` and `atomic-rc` are exclusive: `gil` builds the runtime around a global \
     interpreter lock with non-atomic counts, `atomic-rc` is a free-threaded build with atomic \
     counts; enable at most one"
);

/// The build variant compiled in: `"gil"`, `"nogil"` or `"nogil-atomic-rc"`. The one source
/// of the name: the umbrella and the workloads re-export it, the build script hands the same
/// name to dependents, and the benchmark runner reports it (`ftrt-runner --info`).
pub const BUILD: &str = build_name(cfg!(feature = "gil"), cfg!(feature = "atomic-rc"));

/// The count the runtime's objects use in this build: [`NonAtomicCount`] (reached only through
/// [`Python::count_token`], the GIL's proof) in the `gil` build, [`AtomicCount`] with
/// `atomic-rc`, [`BiasedCount`] otherwise.
///
/// [`NonAtomicCount`]: ftrt_refcount::NonAtomicCount
/// [`AtomicCount`]: ftrt_refcount::AtomicCount
/// [`BiasedCount`]: ftrt_refcount::BiasedCount
/// [`Python::count_token`]: crate::Python::count_token
#[cfg(feature = "gil")]
pub type BuildCount = ftrt_refcount::NonAtomicCount;
/// The count the runtime's objects use in this build: [`NonAtomicCount`] (reached only through
/// [`Python::count_token`], the GIL's proof) in the `gil` build, [`AtomicCount`] with
/// `atomic-rc`, [`BiasedCount`] otherwise.
///
/// [`NonAtomicCount`]: ftrt_refcount::NonAtomicCount
/// [`AtomicCount`]: ftrt_refcount::AtomicCount
/// [`BiasedCount`]: ftrt_refcount::BiasedCount
/// [`Python::count_token`]: crate::Python::count_token
#[cfg(all(feature = "atomic-rc", not(feature = "gil")))]
pub type BuildCount = ftrt_refcount::AtomicCount;
/// The count the runtime's objects use in this build: [`NonAtomicCount`] (reached only through
/// [`Python::count_token`], the GIL's proof) in the `gil` build, [`AtomicCount`] with
/// `atomic-rc`, [`BiasedCount`] otherwise.
///
/// [`NonAtomicCount`]: ftrt_refcount::NonAtomicCount
/// [`AtomicCount`]: ftrt_refcount::AtomicCount
/// [`BiasedCount`]: ftrt_refcount::BiasedCount
/// [`Python::count_token`]: crate::Python::count_token
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
pub type BuildCount = ftrt_refcount::BiasedCount;

/// The strategy of [`BuildCount`].
pub const BUILD_STRATEGY: Strategy = <BuildCount as RefCount>::STRATEGY;
