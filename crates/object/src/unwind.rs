//! Loops that must reach every item even if one panics: the object model's frees and drops of
//! references a collection or a settling holds. Unwound half-way, they would keep the rest of
//! their objects alive for ever; so each item runs under `catch_unwind`, and the first panic is
//! passed on once all have run.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// A panic's payload, caught to be resumed later.
pub(crate) type Panic = Box<dyn Any + Send>;

/// Calls `f` on every item, going on past panics; returns the first panic, if any.
///
/// The items are the caller's to make unwind-safe: what a panicking call leaves behind must
/// not break the calls after it.
pub(crate) fn each_past_panics<T>(
    items: impl IntoIterator<Item = T>,
    mut f: impl FnMut(T),
) -> Option<Panic> {
    let mut first = None;
    for item in items {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(item))) {
            first.get_or_insert(panic);
        }
    }
    first
}

/// Resumes the first of `panics` that holds one; returns if none does.
pub(crate) fn resume_first(panics: impl IntoIterator<Item = Option<Panic>>) {
    if let Some(panic) = panics.into_iter().flatten().next() {
        resume_unwind(panic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_item_runs_and_the_first_panic_is_returned() {
        let mut ran = Vec::new();
        let panic = each_past_panics(1..=4, |i| {
            ran.push(i);
            if i % 2 == 0 {
                std::panic::panic_any(i);
            }
        });
        assert_eq!(ran, [1, 2, 3, 4]);
        assert_eq!(
            panic.and_then(|p| p.downcast::<i32>().ok()).map(|p| *p),
            Some(2)
        );
        assert!(each_past_panics(0..3, |_| {}).is_none());
    }

    #[test]
    fn the_first_panic_given_is_resumed() {
        let resumed = catch_unwind(|| {
            resume_first([None, Some(Box::new(7) as Panic), Some(Box::new(8) as Panic)]);
        });
        let payload = resumed.expect_err("a panic was given");
        assert_eq!(payload.downcast::<i32>().ok().map(|p| *p), Some(7));
        resume_first([None, None]);
    }
}
