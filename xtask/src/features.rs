//! `cargo xtask features`: every workspace package checked on its own (`cargo check -p PKG
//! --all-targets`) with none of its features, with each alone, and with all of them where they
//! may go together, so that no crate builds only because cargo unified a feature in from
//! elsewhere in the graph. Before that, the manifests are held to the rule that only the crate
//! that decides the build variant, and the umbrella that forwards to it, have variant features.

use std::process::Command;

use serde_json::Value;

use crate::steps::{current_cargo, run_steps, CargoStep, Failed, Toolchain, Workspace};

/// Features that exclude each other (together they are a compile error): the build variants.
pub const EXCLUSIVE_FEATURES: &[[&str; 2]] = &[["gil", "atomic-rc"]];

/// The packages that may have those features: `ftrt-gil`, the one crate that decides the
/// build variant, and the umbrella `ftrt`, which forwards its features to it.
pub const VARIANT_FEATURE_OWNERS: &[&str] = &["ftrt-gil", "ftrt"];

/// Whether `feature` is a build variant's (one of [`EXCLUSIVE_FEATURES`]).
pub fn is_variant_feature(feature: &str) -> bool {
    EXCLUSIVE_FEATURES
        .iter()
        .flatten()
        .any(|variant| *variant == feature)
}

/// One workspace package, as `cargo metadata` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    /// Its features other than `default`, sorted.
    pub features: Vec<String>,
    /// Whether `default` enables anything.
    pub has_default_features: bool,
    /// Its features that select a build variant: named as one, or enabling one (a dependency's,
    /// `ftrt-gil/gil`, or another of its own that does), sorted.
    pub variant_features: Vec<String>,
}

/// Which of a package's features one check enables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    None,
    Default,
    Only(String),
    All,
}

impl Selection {
    fn cargo_args(&self) -> Vec<String> {
        match self {
            Selection::None => vec!["--no-default-features".to_owned()],
            Selection::Default => Vec::new(),
            Selection::Only(feature) => vec![
                "--no-default-features".to_owned(),
                "--features".to_owned(),
                feature.clone(),
            ],
            Selection::All => vec!["--all-features".to_owned()],
        }
    }

    fn label(&self) -> String {
        match self {
            Selection::None => "none".to_owned(),
            Selection::Default => "default".to_owned(),
            Selection::Only(feature) => feature.clone(),
            Selection::All => "all".to_owned(),
        }
    }
}

/// The checks of one package: none, its defaults (if they enable anything), each feature
/// alone, and all together unless that is the only new combination or an exclusive pair is in it.
pub fn selections(package: &Package) -> Vec<Selection> {
    let mut selections = vec![Selection::None];
    if package.has_default_features {
        selections.push(Selection::Default);
    }
    selections.extend(package.features.iter().cloned().map(Selection::Only));
    let exclusive = EXCLUSIVE_FEATURES.iter().any(|pair| {
        pair.iter()
            .all(|feature| package.features.iter().any(|own| own == feature))
    });
    let all_is_new = package.features.len() >= 2 || package.has_default_features;
    if all_is_new && !exclusive {
        selections.push(Selection::All);
    }
    selections
}

/// The packages outside [`VARIANT_FEATURE_OWNERS`] that have a variant feature, each with
/// those features: a leaf or a crate above the runtime that would change the variant, or what
/// a safe API promises, for everyone in a graph where cargo unifies it in. A feature under
/// another name that turns a variant on counts too: it does the same.
pub fn variant_feature_violations(packages: &[Package]) -> Vec<(String, Vec<String>)> {
    packages
        .iter()
        .filter(|package| !VARIANT_FEATURE_OWNERS.contains(&package.name.as_str()))
        .filter(|package| !package.variant_features.is_empty())
        .map(|package| (package.name.clone(), package.variant_features.clone()))
        .collect()
}

/// The features of a `cargo metadata` feature table that select a build variant: named as one,
/// or enabling one, directly (`dep/gil`, `dep?/gil`) or through another such feature of the
/// table, `default` included. Sorted.
fn variant_features(table: &serde_json::Map<String, Value>) -> Vec<String> {
    let enabled = |values: &Value| -> Vec<String> {
        values
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    // A feature selects a variant if it is named as one, or enables a dependency's (`dep/gil`)
    // or one of the table's found so far: repeated until nothing more is found.
    let mut found: Vec<String> = Vec::new();
    loop {
        let more: Vec<String> = table
            .iter()
            .filter(|(name, _)| !found.contains(name))
            .filter(|(name, values)| {
                is_variant_feature(name)
                    || enabled(values).iter().any(|value| {
                        found.contains(value)
                            || value
                                .rsplit_once('/')
                                .is_some_and(|(_, feature)| is_variant_feature(feature))
                    })
            })
            .map(|(name, _)| name.clone())
            .collect();
        if more.is_empty() {
            break;
        }
        found.extend(more);
    }
    found.sort();
    found
}

/// The workspace packages in `cargo metadata --no-deps --format-version 1` output.
pub fn parse_packages(metadata: &Value) -> Result<Vec<Package>, Failed> {
    let packages = metadata["packages"]
        .as_array()
        .ok_or_else(|| Failed("cargo metadata printed no package list".to_owned()))?;
    packages
        .iter()
        .map(|package| {
            let name = package["name"]
                .as_str()
                .ok_or_else(|| Failed("a package in cargo metadata has no name".to_owned()))?;
            let features = package["features"].as_object().ok_or_else(|| {
                Failed(format!(
                    "package {name} in cargo metadata has no feature table"
                ))
            })?;
            let mut own: Vec<String> = features
                .keys()
                .filter(|feature| *feature != "default")
                .cloned()
                .collect();
            own.sort();
            let has_default_features = features
                .get("default")
                .and_then(Value::as_array)
                .is_some_and(|enabled| !enabled.is_empty());
            Ok(Package {
                name: name.to_owned(),
                features: own,
                has_default_features,
                variant_features: variant_features(features),
            })
        })
        .collect()
}

pub fn workspace_packages(workspace: &Workspace) -> Result<Vec<Package>, Failed> {
    let output = Command::new(current_cargo())
        .current_dir(&workspace.root)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .map_err(|error| Failed(format!("could not run cargo metadata: {error}")))?;
    if !output.status.success() {
        return Err(Failed(format!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    let metadata: Value = serde_json::from_slice(&output.stdout)
        .map_err(|error| Failed(format!("cargo metadata printed no JSON: {error}")))?;
    parse_packages(&metadata)
}

pub fn run(workspace: &Workspace) -> Result<(), Failed> {
    let packages = workspace_packages(workspace)?;
    let violations = variant_feature_violations(&packages);
    if !violations.is_empty() {
        let listed: Vec<String> = violations
            .iter()
            .map(|(package, features)| format!("{package} ({})", features.join(", ")))
            .collect();
        return Err(Failed(format!(
            "only {} may have build-variant features; found them on {}",
            VARIANT_FEATURE_OWNERS.join(" and "),
            listed.join(", ")
        )));
    }
    run_steps(workspace, |runner| {
        for package in &packages {
            for selection in selections(package) {
                // One target dir for all: the dependencies are checked once.
                let step = CargoStep::new(
                    format!("features {}[{}]", package.name, selection.label()),
                    format!(
                        "the check of {} with features {}",
                        package.name,
                        selection.label()
                    ),
                    Toolchain::Current,
                )
                .args([
                    "check",
                    "--quiet",
                    "-p",
                    package.name.as_str(),
                    "--all-targets",
                ])
                .args(selection.cargo_args())
                .target_dir(runner.workspace().target_dir("features"));
                runner.run(step)?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn package(name: &str, features: &[&str]) -> Package {
        let features: Vec<String> = features.iter().map(|f| (*f).to_owned()).collect();
        Package {
            name: name.to_owned(),
            variant_features: features
                .iter()
                .filter(|f| is_variant_feature(f))
                .cloned()
                .collect(),
            features,
            has_default_features: false,
        }
    }

    #[test]
    fn a_package_without_features_is_checked_once() {
        assert_eq!(selections(&package("leaf", &[])), [Selection::None]);
    }

    #[test]
    fn exclusive_features_are_checked_alone_but_never_together() {
        assert_eq!(
            selections(&package("ftrt-gil", &["atomic-rc", "gil"])),
            [
                Selection::None,
                Selection::Only("atomic-rc".to_owned()),
                Selection::Only("gil".to_owned()),
            ]
        );
    }

    #[test]
    fn features_that_go_together_are_also_checked_together() {
        let selected = selections(&package("p", &["a", "b"]));
        assert_eq!(selected.first(), Some(&Selection::None));
        assert_eq!(selected.last(), Some(&Selection::All));
        assert_eq!(selected.len(), 4);
    }

    #[test]
    fn only_the_runtime_and_the_umbrella_may_have_variant_features() {
        let packages = [
            package("ftrt", &["atomic-rc", "gil"]),
            package("ftrt-gil", &["atomic-rc", "gil"]),
            package("ftrt-lock", &["gil"]),
            package("ftrt-object", &["serde"]),
        ];
        assert_eq!(
            variant_feature_violations(&packages),
            [("ftrt-lock".to_owned(), vec!["gil".to_owned()])]
        );
    }

    #[test]
    fn packages_come_from_cargo_metadata() {
        let metadata = serde_json::json!({
            "packages": [
                {"name": "ftrt", "features": {"default": [], "gil": ["ftrt-gil/gil"], "atomic-rc": []}},
                {"name": "ftrt-lock", "features": {}},
                {"name": "with-defaults", "features": {"default": ["x"], "x": []}},
            ]
        });
        let packages = parse_packages(&metadata).unwrap();
        assert_eq!(packages[0], package("ftrt", &["atomic-rc", "gil"]));
        assert_eq!(packages[1], package("ftrt-lock", &[]));
        assert!(packages[2].has_default_features);
        assert_eq!(packages[2].features, ["x"]);
    }

    /// A feature under another name that turns a variant on changes the build for everyone in
    /// the graph as much as one named `gil` would.
    #[test]
    fn a_feature_that_enables_a_variant_under_another_name_is_a_variant_feature() {
        let metadata = serde_json::json!({
            "packages": [
                {"name": "ftrt-object", "features": {
                    "default": ["ftrt-gil/gil"],
                    "fast": ["ftrt-gil/gil"],
                    "faster": ["fast"],
                    "optional": ["ftrt-gil?/atomic-rc"],
                    "serde": ["dep:serde", "ftrt-refcount/serde"],
                }},
            ]
        });
        let packages = parse_packages(&metadata).unwrap();
        assert_eq!(
            variant_feature_violations(&packages),
            [(
                "ftrt-object".to_owned(),
                vec![
                    "default".to_owned(),
                    "fast".to_owned(),
                    "faster".to_owned(),
                    "optional".to_owned()
                ]
            )]
        );
    }
}
