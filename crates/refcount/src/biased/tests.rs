//! The biased protocol, step by step, observed through the header fields: one submodule per part
//! of it, and here the helpers they share.

use std::sync::{mpsc, Mutex};
use std::thread;

use super::thread::{current, DEFERRED_OWNER, NO_OWNER};
use super::*;
use crate::test_util::{Drops, Tracked};
use crate::BiasedArc;

mod counting;
mod deferred;
mod immortal;
mod owners;
mod parked;
mod uniqueness;

fn fields(count: &BiasedCount) -> (u32, u32, i32) {
    (
        count.owner.load(Ordering::Relaxed),
        count.local.load(Ordering::Relaxed),
        count.shared.load(Ordering::Relaxed),
    )
}

fn header<T>(arc: &BiasedArc<T>) -> &BiasedCount {
    BiasedArc::header(arc)
}

unsafe fn never_called(_: NonNull<BiasedCount>) {
    panic!("release called for an object that is still referenced");
}

/// The `deferred` argument of the halves, for a count that is not deferred.
fn not_deferred(tag: u16) {
    panic!("a count that is not deferred handed out tag {tag}");
}

/// The `deferred` argument of the first halves, for a count that is not deferred: neither its
/// path nor its count may be asked for.
fn not_deferred_on_either_path() -> impl CountDeferred {
    struct NotDeferred;
    impl CountDeferred for NotDeferred {
        fn path(&self) -> DeferredPath {
            panic!("the path asked for a count that is not deferred")
        }
        fn count(self, tag: u16) {
            panic!("a count that is not deferred handed out tag {tag}")
        }
    }
    NotDeferred
}

/// The `deferred` argument of the first halves that takes the out-of-line path.
fn out_of_line(count: impl FnOnce(u16)) -> impl CountDeferred {
    CountOnPath {
        path: DeferredPath::OUT_OF_LINE,
        count,
    }
}

/// The tag the tests defer counts with.
const TAG: u16 = 7;

/// An id no test thread will reach.
const LAST_TEST_OWNER: u32 = u32::MAX - 3;

/// Unreachable release function for counts the tests settle by hand.
unsafe fn never_released(_: NonNull<BiasedCount>) {
    unreachable!("the test keeps a reference")
}

thread_local! {
    static RELEASED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Frees a `Box<BiasedCount>` made by `boxed_count` and counts the release on this thread.
pub(in crate::biased) unsafe fn release_boxed(count: NonNull<BiasedCount>) {
    // SAFETY: made by `Box::into_raw` in `boxed_count`; released exactly once.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
    RELEASED.with(|r| r.set(r.get() + 1));
}

pub(in crate::biased) fn boxed_count(owner: Owner<'_>) -> NonNull<BiasedCount> {
    NonNull::from(Box::leak(Box::new(BiasedCount::new_for(owner))))
}

pub(in crate::biased) fn released() -> usize {
    RELEASED.with(|r| r.get())
}

/// Panics in its release instead of freeing (a value whose destructor panics), after counting
/// the release.
pub(in crate::biased) unsafe fn release_panicking(count: NonNull<BiasedCount>) {
    // SAFETY: as in `release_boxed`.
    unsafe { release_boxed(count) };
    panic!("a destructor panicked");
}

/// A count handed to another thread, whose protocol touches it from any thread.
pub(in crate::biased) struct SendPtr(pub(in crate::biased) NonNull<BiasedCount>);
// SAFETY: the count is only touched through the biased protocol, from any thread.
unsafe impl Send for SendPtr {}
