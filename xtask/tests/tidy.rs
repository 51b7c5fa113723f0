//! The absences docs/ARCHITECTURE.md promises, checked from the manifests and the sources:
//! what each crate may depend on, which crates may have features, where the build variant may
//! be named, and what the workloads may import. Each rule is a function from text to the list
//! of its violations; the tests at the bottom feed each one a bad manifest or source and see it
//! complain, so none of them passes by finding nothing to look at. One rule keeps the tests
//! honest too: the tests that compare process-wide live-object counts run one at a time. And
//! two keep the sources readable: comments to the width of the code, modules to a length read
//! in one sitting.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use toml::Table;

/// Which of our crates each workspace package may depend on (in any dependency table: normal,
/// build, dev, target-specific). A package missing here is a violation: a new crate takes its
/// place in the layering explicitly.
const ALLOWED_DEPENDENCIES: &[(&str, &[&str])] = &[
    // The leaves know nothing of each other, of a runtime or of a GIL.
    ("ftrt-refcount", &[]),
    ("ftrt-lock", &[]),
    ("ftrt-gil", &["ftrt-refcount", "ftrt-lock"]),
    ("ftrt-object", &["ftrt-refcount", "ftrt-lock", "ftrt-gil"]),
    // The workloads know only the object model and the runtime's token.
    ("ftrt-workloads", &["ftrt-object", "ftrt-gil"]),
    (
        "ftrt",
        &["ftrt-refcount", "ftrt-lock", "ftrt-gil", "ftrt-object"],
    ),
    // xtask knows the crates only through cargo and the runner's command line.
    ("xtask", &[]),
];

/// The build-variant features, and the only packages that may declare them: the runtime layer
/// that decides the variant, and the umbrella that forwards to it.
const VARIANT_FEATURES: &[&str] = &["gil", "atomic-rc"];
const VARIANT_FEATURE_OWNERS: &[&str] = &["ftrt-gil", "ftrt"];

/// The packages with no features that change a mechanism: every mechanism side by side, whatever
/// the build.
const FEATURELESS: &[&str] = &["ftrt-refcount", "ftrt-lock"];
/// The features those packages may still have: integrations that only add implementations of
/// another crate's traits (serde's `Serialize` for `BiasedArc`), never change what exists.
const INTEGRATION_FEATURES: &[(&str, &str)] = &[("ftrt-refcount", "serde")];

/// The folders whose Rust sources may branch on a variant feature: `ftrt-gil`'s, and the
/// umbrella's (its sources, benches and tests are built with its features).
const VARIANT_CFG_ALLOWED: &[&str] = &["crates/gil", "src", "benches", "tests"];

/// Crates a folder's sources must not name, and why.
const FORBIDDEN_IMPORTS: &[(&str, &[&str], &str)] = &[(
    "crates/workloads/src",
    &["crossbeam_epoch", "ftrt_refcount", "ftrt_lock"],
    "the workloads know only the object model and the runtime token",
)];

/// The one spin policy (`ftrt_lock::spin`), and what spinning anywhere else would call.
const SPIN_POLICY: &str = "crates/lock/src/spin.rs";
const SPIN_PRIMITIVES: &[&str] = &["spin_loop", "SpinWait"];
/// The one other place a library may spin: `BiasedArc`'s weak-count lock, held by `get_mut` for
/// a few loads while it checks uniqueness (as `std::sync::Arc` spins on it), in `ftrt-refcount`,
/// which depends on no crate of ours and so cannot use the spin policy.
const SPIN_EXCEPTIONS: &[&str] = &["crates/refcount/src/sync.rs"];

/// The widest a comment line may be, in characters: the width the code is formatted to.
const COMMENT_WIDTH: usize = 100;

/// The most lines a module of the crates' or xtask's sources may have outside its tests (an
/// inline `mod tests`, wherever it stands, or a `tests.rs` of its own), so that it can be read in
/// one sitting: past it, a module splits into submodules by what its parts do. A test module
/// (`tests.rs`, a file under a `tests` folder, a bench) may have as many, its tests included.
const MODULE_LINES: usize = 1000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// Every workspace manifest, by package name.
fn manifests() -> BTreeMap<String, Table> {
    let root = root();
    let mut paths = vec![root.join("Cargo.toml"), root.join("xtask/Cargo.toml")];
    for entry in fs::read_dir(root.join("crates")).expect("crates/") {
        let manifest = entry.expect("a directory entry").path().join("Cargo.toml");
        if manifest.is_file() {
            paths.push(manifest);
        }
    }
    paths
        .iter()
        .map(|path| {
            let text = fs::read_to_string(path).expect("a readable manifest");
            let manifest: Table = text.parse().unwrap_or_else(|e| panic!("{path:?}: {e}"));
            (package_name(&manifest).to_owned(), manifest)
        })
        .collect()
}

fn package_name(manifest: &Table) -> &str {
    manifest["package"]["name"]
        .as_str()
        .expect("a package name")
}

/// The dependency tables of a manifest or of one of its `[target.'cfg(..)']` sections.
fn dependency_tables(section: &Table) -> impl Iterator<Item = &Table> {
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .into_iter()
        .filter_map(move |kind| section.get(kind)?.as_table())
}

/// The packages a manifest depends on, from every dependency table (renames resolved).
fn dependencies(manifest: &Table) -> Vec<String> {
    let targets = manifest
        .get("target")
        .and_then(|t| t.as_table())
        .into_iter()
        .flat_map(|targets| targets.values())
        .filter_map(|target| target.as_table());
    std::iter::once(manifest)
        .chain(targets)
        .flat_map(dependency_tables)
        .flat_map(|table| {
            table.iter().map(|(key, spec)| {
                let renamed = spec.get("package").and_then(|p| p.as_str());
                renamed.unwrap_or(key).to_owned()
            })
        })
        .collect()
}

fn features(manifest: &Table) -> Vec<String> {
    manifest
        .get("features")
        .and_then(|f| f.as_table())
        .map(|f| f.keys().filter(|k| *k != "default").cloned().collect())
        .unwrap_or_default()
}

/// Our crates a package depends on but may not, or the package itself if the layering does not
/// place it.
fn dependency_violations(manifest: &Table) -> Vec<String> {
    let name = package_name(manifest);
    let Some((_, allowed)) = ALLOWED_DEPENDENCIES.iter().find(|(n, _)| *n == name) else {
        return vec![format!("{name} has no place in ALLOWED_DEPENDENCIES")];
    };
    dependencies(manifest)
        .into_iter()
        .filter(|dep| {
            (dep == "ftrt" || dep.starts_with("ftrt-")) && !allowed.contains(&dep.as_str())
        })
        .map(|dep| format!("{name} depends on {dep}"))
        .collect()
}

fn feature_violations(manifest: &Table) -> Vec<String> {
    let name = package_name(manifest);
    let features = features(manifest);
    let mut violations = Vec::new();
    let mechanism_features: Vec<&String> = features
        .iter()
        .filter(|f| !INTEGRATION_FEATURES.contains(&(name, f.as_str())))
        .collect();
    if FEATURELESS.contains(&name) && !mechanism_features.is_empty() {
        violations.push(format!("{name} has features {mechanism_features:?}"));
    }
    if !VARIANT_FEATURE_OWNERS.contains(&name) {
        for feature in features
            .iter()
            .filter(|f| VARIANT_FEATURES.contains(&f.as_str()))
        {
            violations.push(format!("{name} declares the variant feature {feature}"));
        }
        // Under another name, a feature that turns a variant on does the same.
        for (feature, value) in variant_enablers(manifest) {
            violations.push(format!(
                "{name}'s feature {feature} enables the variant feature {value}"
            ));
        }
    }
    violations
}

/// The manifest's features that enable a build variant's feature of a dependency (`dep/gil`,
/// `dep?/atomic-rc`), with the value that does.
fn variant_enablers(manifest: &Table) -> Vec<(String, String)> {
    let Some(table) = manifest.get("features").and_then(|f| f.as_table()) else {
        return Vec::new();
    };
    table
        .iter()
        .flat_map(|(feature, enabled)| {
            enabled
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|value| value.as_str())
                .filter(|value| {
                    value
                        .rsplit_once('/')
                        .is_some_and(|(_, f)| VARIANT_FEATURES.contains(&f))
                })
                .map(move |value| (feature.clone(), value.to_owned()))
        })
        .collect()
}

#[test]
fn a_feature_that_enables_a_variant_under_another_name_is_a_violation() {
    let manifest: Table = r#"
        [package]
        name = "ftrt-object"
        [features]
        fast = ["ftrt-gil/gil"]
        serde = ["dep:serde", "ftrt-refcount/serde"]
    "#
    .parse()
    .expect("a manifest");
    assert_eq!(
        feature_violations(&manifest),
        ["ftrt-object's feature fast enables the variant feature ftrt-gil/gil"]
    );
}

/// A Rust source with comments removed, line by line (`//` to the end of the line; block
/// comments are not used for code here), and spaces dropped, so `feature = "gil"` and
/// `feature="gil"` read alike.
fn code_lines(source: &str) -> impl Iterator<Item = (usize, String)> + '_ {
    source.lines().enumerate().map(|(i, line)| {
        let code = line.split("//").next().unwrap_or("");
        (i + 1, code.chars().filter(|c| !c.is_whitespace()).collect())
    })
}

/// Lines of `source` that branch on a variant feature.
fn variant_cfg_lines(source: &str) -> Vec<usize> {
    let needles: Vec<String> = VARIANT_FEATURES
        .iter()
        .map(|feature| format!("feature=\"{feature}\""))
        .collect();
    code_lines(source)
        .filter(|(_, code)| needles.iter().any(|needle| code.contains(needle.as_str())))
        .map(|(line, _)| line)
        .collect()
}

/// Lines of `source` that name one of `crates` as a path (`name::` or `use name`).
fn import_lines(source: &str, crates: &[&str]) -> Vec<(usize, String)> {
    code_lines(source)
        .flat_map(|(line, code)| {
            crates
                .iter()
                .filter(move |name| {
                    code.contains(&format!("{name}::"))
                        || code.contains(&format!("use{name}"))
                        || code.contains(&format!("externcrate{name}"))
                })
                .map(move |name| (line, (*name).to_owned()))
        })
        .collect()
}

/// Lines of `source` that spin on their own (a pause hint or another crate's spin policy).
fn spin_lines(source: &str) -> Vec<usize> {
    code_lines(source)
        .filter(|(_, code)| SPIN_PRIMITIVES.iter().any(|p| code.contains(p)))
        .map(|(line, _)| line)
        .collect()
}

/// Lines of `source` that are comments (`//`, `///`, `//!`) wider than [`COMMENT_WIDTH`]
/// characters, but for the lines of a fenced code block in a doc comment (code, kept as it is)
/// and the rows of a markdown table (a row cannot be wrapped).
fn long_comment_lines(source: &str) -> Vec<usize> {
    let mut in_code_block = false;
    let mut long = Vec::new();
    for (i, line) in source.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix("//") else {
            in_code_block = false;
            continue;
        };
        let text = comment.trim_start_matches(['/', '!']).trim_start();
        if text.starts_with("```") {
            in_code_block = !in_code_block;
        } else if !in_code_block && !text.starts_with('|') && line.chars().count() > COMMENT_WIDTH {
            long.push(i + 1);
        }
    }
    long
}

/// The `.rs` files under `dir`, recursively.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Every Rust source of the workspace outside `target/`, relative to the root.
fn workspace_sources() -> Vec<PathBuf> {
    let root = root();
    ["src", "benches", "tests", "crates", "xtask"]
        .iter()
        .flat_map(|dir| rust_files(&root.join(dir)))
        .map(|path| {
            path.strip_prefix(&root)
                .expect("under the root")
                .to_path_buf()
        })
        .collect()
}

/// The length of a module's source outside its tests: every line but those of an inline
/// `mod tests { .. }` (wherever it stands; its body is indented, so the first line back at the
/// margin closes it) and of the attributes and comments right above it.
fn module_lines(source: &str) -> usize {
    let lines: Vec<&str> = source.lines().collect();
    let Some(start) = lines
        .iter()
        .position(|line| line.starts_with("mod tests {"))
    else {
        return lines.len();
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| *line == "}")
        .map_or(lines.len(), |closing| start + 1 + closing + 1);
    let mut first = start;
    while first > 0 && {
        let above = lines[first - 1].trim_start();
        above.starts_with("#[") || above.starts_with("//")
    } {
        first -= 1;
    }
    lines.len() - (end - first)
}

/// Whether `path` (relative to the root) is a library module: under a `src` folder, and not a
/// test module (`tests.rs`, or a file under a `tests` folder).
fn is_library_module(path: &Path) -> bool {
    let parts: Vec<_> = path.iter().collect();
    parts.iter().any(|part| *part == "src")
        && !parts
            .iter()
            .any(|part| *part == "tests" || *part == "tests.rs")
}

/// The library modules of the workspace.
fn library_modules() -> Vec<PathBuf> {
    workspace_sources()
        .into_iter()
        .filter(|path| is_library_module(path))
        .collect()
}

/// The object model's integration tests that compare live-object counts. The counts are
/// process-wide and a test binary runs its tests on several threads at once, so every test in
/// such a binary takes the serial lock (`SERIAL`), directly or through a helper that does
/// (`leak_checked`): one that allocates beside another's count makes it fail now and then.
const LIVE_COUNT_TESTS: &str = "crates/object/tests";
/// Where the shared helpers of those tests live.
const LIVE_COUNT_HELPERS: &str = "crates/object/tests/common/mod.rs";
/// Binaries that run each test in a process of its own, where no count is shared.
const ONE_PROCESS_PER_TEST: &[&str] = &["crates/object/tests/thread_exit.rs"];

/// `source` with `//` comments removed.
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each function of `source`: its name, whether a `#[test]` attribute precedes it, and its body
/// (braces matched; the sources here keep their braces balanced in strings too).
fn functions(source: &str) -> Vec<(String, bool, String)> {
    let code = without_comments(source);
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("fn ") {
        let before = &rest[..at];
        let is_word_start = before
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        let after = &rest[at + 3..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let Some(open) = after.find('{') else { break };
        if !is_word_start || name.is_empty() || after[..open].contains(';') {
            rest = after;
            continue;
        }
        let is_test = before
            .rsplit_once('}')
            .map_or(before, |(_, tail)| tail)
            .contains("#[test]");
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        found.push((name, is_test, after[open..end].to_owned()));
        rest = &after[open + 1..];
    }
    found
}

/// Whether `body` calls the function `name`.
fn calls(body: &str, name: &str) -> bool {
    body.match_indices(&format!("{name}(")).any(|(at, _)| {
        body[..at]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
    })
}

/// The tests of `source` that run without the serial lock: neither they nor a function they
/// call (of `source` or of `helpers`, transitively) take `SERIAL`. Empty for a source that
/// compares no live counts.
fn unserialised_tests(source: &str, helpers: &str) -> Vec<String> {
    let code = without_comments(source);
    // Calls, not names: a list of the crate's function names (`detached_use.rs`) compares none.
    let compares_counts = ["live_objects(", "LiveObjects", "leak_checked("]
        .iter()
        .any(|needle| code.contains(needle));
    if !compares_counts {
        return Vec::new();
    }
    let own = functions(source);
    let all: Vec<_> = own.iter().chain(&functions(helpers)).cloned().collect();
    let mut serialising: Vec<&str> = Vec::new();
    loop {
        let before = serialising.len();
        for (name, _, body) in &all {
            if !serialising.contains(&name.as_str())
                && (body.contains("SERIAL.lock()")
                    || serialising.iter().any(|callee| calls(body, callee)))
            {
                serialising.push(name);
            }
        }
        if serialising.len() == before {
            break;
        }
    }
    own.iter()
        .filter(|(name, is_test, _)| *is_test && !serialising.contains(&name.as_str()))
        .map(|(name, _, _)| name.clone())
        .collect()
}

fn assert_none(what: &str, violations: Vec<String>) {
    assert!(
        violations.is_empty(),
        "{what}:\n  {}",
        violations.join("\n  ")
    );
}

/// The lines `rule` finds in each of `paths` (relative to the root), as `path:line`.
fn lines_found<'a>(
    paths: impl IntoIterator<Item = &'a PathBuf>,
    rule: fn(&str) -> Vec<usize>,
) -> Vec<String> {
    let root = root();
    paths
        .into_iter()
        .flat_map(|path| {
            let source = fs::read_to_string(root.join(path)).expect("a readable source");
            rule(&source)
                .into_iter()
                .map(move |line| format!("{}:{line}", path.display()))
        })
        .collect()
}

#[test]
fn each_crate_depends_only_on_the_crates_below_it() {
    let manifests = manifests();
    for (name, _) in ALLOWED_DEPENDENCIES {
        assert!(
            manifests.contains_key(*name),
            "no package {name} in the workspace"
        );
    }
    assert_none(
        "dependencies across the layering",
        manifests.values().flat_map(dependency_violations).collect(),
    );
}

#[test]
fn only_the_runtime_and_the_umbrella_have_variant_features_and_the_leaves_have_none() {
    let manifests = manifests();
    for owner in VARIANT_FEATURE_OWNERS {
        let declared = features(&manifests[*owner]);
        for feature in VARIANT_FEATURES {
            assert!(
                declared.iter().any(|f| f == feature),
                "{owner} lacks {feature}"
            );
        }
    }
    assert_none(
        "features",
        manifests.values().flat_map(feature_violations).collect(),
    );
}

#[test]
fn only_the_runtime_and_the_umbrella_branch_on_the_build_variant() {
    let sources = workspace_sources();
    assert!(
        sources.iter().any(|p| p.starts_with("crates/gil")),
        "found the sources"
    );
    let violations = lines_found(
        sources
            .iter()
            .filter(|path| !VARIANT_CFG_ALLOWED.iter().any(|dir| path.starts_with(dir))),
        variant_cfg_lines,
    );
    assert_none(
        "variant features named outside ftrt-gil and the umbrella",
        violations,
    );
}

#[test]
fn the_workloads_import_only_the_object_model_and_the_runtime() {
    let root = root();
    let mut violations = Vec::new();
    for (dir, crates, why) in FORBIDDEN_IMPORTS {
        let files = rust_files(&root.join(dir));
        assert!(!files.is_empty(), "no sources under {dir}");
        for path in files {
            let source = fs::read_to_string(&path).expect("a readable source");
            for (line, name) in import_lines(&source, crates) {
                violations.push(format!("{}:{line} names {name} ({why})", path.display()));
            }
        }
    }
    assert_none("forbidden imports", violations);
}

#[test]
fn threads_spin_only_under_the_one_spin_policy() {
    let sources = workspace_sources();
    assert!(
        sources.iter().any(|p| p == Path::new(SPIN_POLICY)),
        "found {SPIN_POLICY}"
    );
    // Library code only: tests and benches busy-wait on purpose (load, pacing), not as policy.
    let is_library = |path: &Path| {
        let crate_src = path.starts_with("crates")
            && path
                .components()
                .nth(2)
                .is_some_and(|c| c.as_os_str() == "src");
        crate_src || path.starts_with("src")
    };
    let violations = lines_found(
        sources.iter().filter(|path| {
            is_library(path)
                && *path != Path::new(SPIN_POLICY)
                && !SPIN_EXCEPTIONS.iter().any(|e| *path == Path::new(e))
        }),
        spin_lines,
    );
    assert_none("spinning outside ftrt_lock::spin", violations);
}

#[test]
fn every_test_that_shares_a_binary_with_a_live_count_comparison_runs_alone() {
    let root = root();
    let helpers = fs::read_to_string(root.join(LIVE_COUNT_HELPERS)).expect("the helpers");
    let binaries = rust_files(&root.join(LIVE_COUNT_TESTS));
    assert!(binaries.len() > 3, "found the object tests");
    let mut violations = Vec::new();
    for path in binaries {
        let relative = path.strip_prefix(&root).expect("under the root");
        if ONE_PROCESS_PER_TEST
            .iter()
            .any(|p| relative == Path::new(p))
        {
            continue;
        }
        let source = fs::read_to_string(&path).expect("a readable source");
        for test in unserialised_tests(&source, &helpers) {
            violations.push(format!("{}: {test}", relative.display()));
        }
    }
    assert_none(
        "tests beside live-count comparisons that do not take SERIAL",
        violations,
    );
}

#[test]
fn comment_lines_are_at_most_100_characters_wide() {
    let sources = workspace_sources();
    assert!(
        sources.iter().any(|p| p.starts_with("xtask")),
        "found the sources"
    );
    assert_none(
        &format!("comment lines wider than {COMMENT_WIDTH} characters"),
        lines_found(&sources, long_comment_lines),
    );
}

#[test]
fn modules_are_at_most_1000_lines_outside_their_tests() {
    let modules = library_modules();
    assert!(
        modules.iter().any(|p| p.starts_with("crates/lock/src")),
        "found the modules"
    );
    let root = root();
    let long: Vec<String> = modules
        .iter()
        .filter_map(|path| {
            let source = fs::read_to_string(root.join(path)).expect("a readable source");
            let lines = module_lines(&source);
            (lines > MODULE_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert_none(
        &format!("modules longer than {MODULE_LINES} lines outside their tests"),
        long,
    );
}

// The rules themselves, on bad input: each must complain.

fn manifest(text: &str) -> Table {
    text.parse().expect("a test manifest")
}

#[test]
fn a_leaf_that_depends_on_another_crate_of_ours_is_a_violation() {
    let lock = manifest(
        "[package]\nname = \"ftrt-lock\"\n[target.'cfg(unix)'.dependencies]\nfoo = { package = \"ftrt-gil\", path = \"../gil\" }\n",
    );
    assert_eq!(
        dependency_violations(&lock),
        ["ftrt-lock depends on ftrt-gil"]
    );
    let workloads = manifest(
        "[package]\nname = \"ftrt-workloads\"\n[dependencies]\nftrt-object = \"0.1\"\nftrt-refcount = \"0.1\"\nserde_json = \"1\"\n",
    );
    assert_eq!(
        dependency_violations(&workloads),
        ["ftrt-workloads depends on ftrt-refcount"]
    );
    let unplaced = manifest("[package]\nname = \"ftrt-new\"\n");
    assert_eq!(dependency_violations(&unplaced).len(), 1);
}

#[test]
fn a_variant_feature_outside_the_runtime_or_any_feature_on_a_leaf_is_a_violation() {
    let object = manifest("[package]\nname = \"ftrt-object\"\n[features]\ngil = []\nserde = []\n");
    assert_eq!(
        feature_violations(&object),
        ["ftrt-object declares the variant feature gil"]
    );
    let refcount = manifest("[package]\nname = \"ftrt-refcount\"\n[features]\nfast = []\n");
    assert_eq!(feature_violations(&refcount).len(), 1);
    let gil = manifest("[package]\nname = \"ftrt-gil\"\n[features]\ngil = []\natomic-rc = []\n");
    assert!(feature_violations(&gil).is_empty());
}

#[test]
fn a_cfg_on_a_variant_feature_is_found_however_it_is_spaced_but_not_in_comments() {
    let gil = VARIANT_FEATURES[0];
    let source = format!(
        "fn a() {{}}\n#[cfg(feature = \"{gil}\")]\nfn b() {{}}\n// cfg(feature = \"{gil}\")\nconst C: bool = cfg!(feature=\"{gil}\");\n"
    );
    assert_eq!(variant_cfg_lines(&source), [2, 5]);
}

#[test]
fn a_forbidden_crate_is_found_in_use_declarations_and_paths_but_not_in_comments() {
    let source = "use ftrt_refcount::RefCountValue;\n// ftrt_lock::section\nlet g = crossbeam_epoch::pin();\nuse ftrt_object::Obj;\n";
    let found = import_lines(source, &["crossbeam_epoch", "ftrt_refcount", "ftrt_lock"]);
    assert_eq!(
        found,
        [
            (1, "ftrt_refcount".to_owned()),
            (3, "crossbeam_epoch".to_owned())
        ]
    );
}

#[test]
fn a_spin_of_its_own_is_found() {
    let source = "for _ in 0..100 {\n    std::hint::spin_loop();\n}\nlet mut s = parking_lot_core::SpinWait::new();\nftrt_lock::spin::retry(f);\n";
    assert_eq!(spin_lines(source), [2, 4]);
}

#[test]
fn a_test_beside_a_live_count_comparison_without_the_serial_lock_is_found() {
    let helpers =
        "pub fn leak_checked(f: impl FnOnce()) {\n    let _s = SERIAL.lock();\n    f();\n}\n";
    let source = "#[test]\nfn checked() {\n    leak_checked(|| {});\n}\n\n\
        fn alone(f: impl FnOnce()) {\n    let _s = SERIAL.lock();\n    f();\n}\n\n\
        #[test]\nfn through_a_helper() {\n    alone(|| { let x = { 1 }; });\n}\n\n\
        #[test]\nfn allocates_beside() {\n    // leak_checked(|| {}) in a comment does not count\n    \
        let _ = live_objects(Kind::Float);\n    not_alone(|| {});\n}\n";
    assert_eq!(unserialised_tests(source, helpers), ["allocates_beside"]);
    let no_counts = "#[test]\nfn anything() {\n    let _ = 1;\n}\n";
    assert!(unserialised_tests(no_counts, helpers).is_empty());
}

#[test]
fn a_comment_line_too_wide_is_found_but_not_in_code_blocks_or_tables() {
    let words = "word ".repeat(20);
    let source = format!(
        "// {words}\n    /// {words}\n//! {words}\nlet s = \"{words}\";\n\
        /// ```\n/// {words}\n/// ```\n/// | {words} |\n/// short\n/// {words}\n"
    );
    assert_eq!(long_comment_lines(&source), [1, 2, 3, 10]);
    let fits = format!("{}\n", "/".repeat(COMMENT_WIDTH));
    assert!(long_comment_lines(&fits).is_empty());
}

#[test]
fn a_module_is_measured_without_its_inline_tests_wherever_they_stand() {
    let code = "fn f() {}\n".repeat(MODULE_LINES + 1);
    assert_eq!(module_lines(&code), MODULE_LINES + 1);
    let tests = "    #[test]\n    fn t() {\n    }\n".repeat(MODULE_LINES);
    let tests_at_the_end = format!(
        "{}\n// The tests.\n#[cfg(test)]\nmod tests {{\n{tests}}}\n",
        "fn f() {}\n".repeat(10)
    );
    assert_eq!(module_lines(&tests_at_the_end), 11);
    let code_after_the_tests = format!(
        "{}#[cfg(test)]\nmod tests {{\n{tests}}}\n{}",
        "fn f() {}\n".repeat(10),
        "fn g() {}\n".repeat(MODULE_LINES)
    );
    assert_eq!(module_lines(&code_after_the_tests), 10 + MODULE_LINES);
}

/// Test modules (a `tests.rs`, a file under a `tests` folder, a bench) read as specifications, and
/// a specification read in one sitting too: past `MODULE_LINES`, one splits into submodules by
/// what they specify.
#[test]
fn test_modules_are_at_most_1000_lines() {
    let tests: Vec<PathBuf> = workspace_sources()
        .into_iter()
        .filter(|path| !is_library_module(path))
        .collect();
    assert!(
        tests
            .iter()
            .any(|p| p.ends_with("crates/refcount/src/biased/tests.rs"))
            && tests
                .iter()
                .any(|p| p.ends_with("crates/gil/tests/threads.rs")),
        "found the test modules"
    );
    let root = root();
    let long: Vec<String> = tests
        .iter()
        .filter_map(|path| {
            let source = fs::read_to_string(root.join(path)).expect("a readable source");
            let lines = source.lines().count();
            (lines > MODULE_LINES).then(|| format!("{}: {lines} lines", path.display()))
        })
        .collect();
    assert_none(
        &format!("test modules longer than {MODULE_LINES} lines"),
        long,
    );
}

#[test]
fn library_modules_are_the_sources_under_src_but_test_modules() {
    assert!(is_library_module(Path::new("crates/lock/src/raw.rs")));
    assert!(is_library_module(Path::new(
        "crates/refcount/src/arc/inner.rs"
    )));
    assert!(is_library_module(Path::new("xtask/src/bench/report.rs")));
    assert!(!is_library_module(Path::new(
        "crates/refcount/src/arc/tests.rs"
    )));
    assert!(!is_library_module(Path::new("crates/gil/tests/threads.rs")));
    assert!(!is_library_module(Path::new("xtask/tests/tidy.rs")));
    assert!(!is_library_module(Path::new("benches/sync.rs")));
}
