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
