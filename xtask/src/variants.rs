//! The build variants of the runtime: the one table every subcommand reads.

use std::path::{Path, PathBuf};

/// A build of the `ftrt` umbrella crate, named as in reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Variant {
    /// Non-atomic reference counts guarded by a global interpreter lock.
    Gil,
    /// Free-threaded with biased reference counting (the default build).
    Nogil,
    /// Free-threaded with plain atomic reference counts (an ablation of biased counting).
    NogilAtomicRc,
}

impl Variant {
    /// Every variant, in the order tests and reports visit them.
    pub const ALL: [Variant; 3] = [Variant::Gil, Variant::Nogil, Variant::NogilAtomicRc];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Gil => "gil",
            Variant::Nogil => "nogil",
            Variant::NogilAtomicRc => "nogil-atomic-rc",
        }
    }

    /// The value of `--features` that selects this variant; `None` for the default build.
    pub fn cargo_features(self) -> Option<&'static str> {
        match self {
            Variant::Gil => Some("ftrt/gil"),
            Variant::Nogil => None,
            Variant::NogilAtomicRc => Some("ftrt/atomic-rc"),
        }
    }

    /// The features that select this variant for a `-p ftrt-workloads` build (the benchmark
    /// runner): those of `ftrt-gil`, the crate that decides the variant, a direct dependency.
    pub fn workload_features(self) -> Option<&'static str> {
        match self {
            Variant::Gil => Some("ftrt-gil/gil"),
            Variant::Nogil => None,
            Variant::NogilAtomicRc => Some("ftrt-gil/atomic-rc"),
        }
    }

    /// `--features X`, or nothing, ready to append to a cargo command line.
    pub fn feature_args(self) -> Vec<&'static str> {
        match self.cargo_features() {
            Some(features) => vec!["--features", features],
            None => Vec::new(),
        }
    }

    /// Each variant builds into its own target dir: switching features in one shared dir
    /// would rebuild the whole workspace every time.
    pub fn target_dir(self, target_root: &Path) -> PathBuf {
        target_root.join(format!("variant-{}", self.name()))
    }

    /// The variants of `ALL` that are in `selected`, in canonical order and without
    /// duplicates, or all of them when nothing was selected.
    pub fn in_canonical_order(selected: &[Variant]) -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|variant| selected.is_empty() || selected.contains(variant))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn command_line_names_match_report_names() {
        for variant in Variant::ALL {
            let value = variant.to_possible_value().expect("no variant is skipped");
            assert_eq!(value.get_name(), variant.name());
        }
    }

    #[test]
    fn selection_keeps_canonical_order() {
        let selected = [Variant::NogilAtomicRc, Variant::Gil, Variant::Gil];
        assert_eq!(
            Variant::in_canonical_order(&selected),
            [Variant::Gil, Variant::NogilAtomicRc]
        );
        assert_eq!(Variant::in_canonical_order(&[]), Variant::ALL);
    }
}
