//! The umbrella names the variant it was built as, and forwards it to the crate that decides it.

use ftrt::gil::BUILD_STRATEGY;
use ftrt::refcount::Strategy;

#[test]
fn build_name_matches_the_count_strategy_the_crates_were_built_with() {
    let expected = match ftrt::BUILD {
        "gil" => Strategy::NonAtomic,
        "nogil" => Strategy::Biased,
        "nogil-atomic-rc" => Strategy::Atomic,
        other => panic!("unknown build name {other:?}"),
    };
    assert_eq!(BUILD_STRATEGY, expected);
}

#[test]
fn build_name_matches_the_enabled_features() {
    let expected = if cfg!(feature = "gil") {
        "gil"
    } else if cfg!(feature = "atomic-rc") {
        "nogil-atomic-rc"
    } else {
        "nogil"
    };
    assert_eq!(ftrt::BUILD, expected);
}

/// `cargo xtask test` names the variant each step means to build in `FTRT_EXPECTED_BUILD`: a
/// step whose features went missing builds another variant, and fails here instead of testing
/// the wrong build under the right name.
#[test]
fn build_name_is_the_variant_the_test_run_expects() {
    if let Ok(expected) = std::env::var("FTRT_EXPECTED_BUILD") {
        assert_eq!(ftrt::BUILD, expected, "built another variant than expected");
    }
}
