//! Where an expired batch goes: dropped where it expires, posted home to the mailbox of the thread
//! that retired it, or orphaned. The epoch runs [`expire`] on whichever thread collects; these
//! scenarios run it themselves, on a thread they choose, with the retiring thread attached or
//! away as they choose, so each path is taken on purpose rather than when the epoch happens to.
//!
//! Every scenario keeps one reference of its own to a float and puts [`REFS`] more in the batch:
//! the float's count says whether the batch's references were dropped.

use std::sync::Arc;
use std::thread;

use ftrt_gil::Python;
use ftrt_refcount::Strategy;

use super::{drain, expire, settle, Batch, Mailbox, RETIRED};
use crate::header::publish;
use crate::{Bound, PyFloat, RefCountValue};

/// References to the float in each scenario's batch.
const REFS: usize = 8;

/// A batch of [`REFS`] references to `object`, published first (as an object taken out of a
/// shared container is), retired by the calling thread: the batch, and that thread's mailbox.
fn batch_of_references_to(object: &Bound<'_, PyFloat>, home_only: bool) -> (Batch, Arc<Mailbox>) {
    publish(object.header());
    let refs = (0..REFS).map(|_| object.clone().into_owned_ref()).collect();
    let home = RETIRED.with_current(|retired| {
        let mut retired = retired
            .expect("an attached thread has a batch")
            .borrow_mut();
        retired
            .mailbox
            .get_or_insert_with(|| Arc::new(Mailbox::new()))
            .clone()
    });
    (Batch { refs, home_only }, home)
}

fn refcount(object: &Bound<'_, PyFloat>) -> usize {
    match object.refcount() {
        RefCountValue::Mortal(count) => count,
        other => panic!("a fresh float counts its references, not {other:?}"),
    }
}

/// Batches waiting in `home`'s mailbox.
fn posted(home: &Mailbox) -> usize {
    home.inbox.lock().unwrap().0.len()
}

/// Whether the build drops a retiring thread's own objects on the owner's path, so that a batch
/// of shared objects goes home while its thread is attached.
fn has_owners_path() -> bool {
    ftrt_gil::BUILD_STRATEGY == Strategy::Biased
}

/// The post-back: the epoch ran the batch on a thread that is not the retiring one (here one that
/// never attached, as an exiting thread's last pin may be), while the retiring thread is attached.
/// In the biased build the batch waits in the retiring thread's mailbox, untouched, and that
/// thread drops it, on the owner's path, when it drains its mailbox (at its next quiescent
/// state). The `atomic-rc` build has no owner's path: the batch never goes home, and is orphaned
/// here (this thread may not drop it), for the next attached thread that settles.
#[test]
fn a_batch_that_expires_elsewhere_while_its_thread_is_attached_is_posted_home_and_dropped_there() {
    Python::attach(|py| {
        let object = PyFloat::new(py, 1.5);
        let (batch, home) = batch_of_references_to(&object, false);
        // Attached throughout, and no checkpoint before the checks: nothing drains the mailbox
        // in between. (The other thread never attaches, so a stop of the world that waits for
        // this one while it joins waits only for that thread's few instructions.)
        thread::scope(|s| {
            s.spawn(|| expire(batch, &home));
        });
        if has_owners_path() {
            assert_eq!(posted(&home), 1, "the batch went home");
            assert_eq!(
                refcount(&object),
                1 + REFS,
                "the batch's references wait in the mailbox, not dropped where the batch expired"
            );
            drain();
            assert_eq!(posted(&home), 0, "draining takes the batch");
            assert_eq!(
                refcount(&object),
                1,
                "the retiring thread dropped the batch"
            );
        } else {
            assert_eq!(
                posted(&home),
                0,
                "without an owner's path nothing goes home"
            );
            // Orphaned: this thread's settle adopts it, unless another test's settle already
            // took it and is dropping it now.
            let adopted = (0..1_000_000).any(|_| {
                settle();
                refcount(&object) == 1 || {
                    thread::yield_now();
                    false
                }
            });
            assert!(
                adopted,
                "the orphaned batch was dropped by a settling thread"
            );
        }
    });
}

/// While the retiring thread is away (detached: an `allow_threads` around a blocking call), a
/// batch of shared objects that expires on another attached thread is dropped there at once:
/// posted home, it would wait for the retiring thread to attach again.
#[test]
fn a_batch_of_shared_objects_that_expires_elsewhere_while_its_thread_is_away_is_dropped_there() {
    Python::attach(|py| {
        let object = PyFloat::new(py, 2.5);
        let (batch, home) = batch_of_references_to(&object, false);
        py.allow_threads(|| {
            thread::scope(|s| {
                s.spawn(|| Python::attach(|_| expire(batch, &home)));
            });
        });
        assert_eq!(posted(&home), 0, "not posted home");
        assert_eq!(refcount(&object), 1, "dropped where it expired");
    });
}

/// A batch that may hold local objects (a reference taken out of a local container) goes home
/// even while its thread is away: a local object is freed only on its own thread.
#[test]
fn a_batch_that_may_hold_local_objects_goes_home_even_while_its_thread_is_away() {
    Python::attach(|py| {
        let object = PyFloat::new(py, 3.5);
        let (batch, home) = batch_of_references_to(&object, true);
        py.allow_threads(|| {
            thread::scope(|s| {
                s.spawn(|| Python::attach(|_| expire(batch, &home)));
            });
            assert_eq!(posted(&home), 1, "the batch went home");
        });
        // Attached again; a detach drains the mailbox, an attach need not.
        drain();
        assert_eq!(posted(&home), 0, "draining takes the batch");
        assert_eq!(
            refcount(&object),
            1,
            "the retiring thread dropped the batch"
        );
    });
}

/// A batch that expires at home while its thread is detached (`collect` flushes the epoch
/// detached) waits in the thread's own mailbox: counts change only on attached threads.
#[test]
fn a_batch_that_expires_at_home_while_its_thread_is_detached_waits_in_its_own_mailbox() {
    Python::attach(|py| {
        let object = PyFloat::new(py, 4.5);
        let (batch, home) = batch_of_references_to(&object, false);
        py.allow_threads(|| {
            expire(batch, &home);
            assert_eq!(
                posted(&home),
                1,
                "the batch waits in its own thread's mailbox"
            );
        });
        drain();
        assert_eq!(
            refcount(&object),
            1,
            "dropped once its thread attached again"
        );
    });
}

/// Attached at home, an expired batch is dropped at once: the common case, where the retiring
/// thread collects its own garbage.
#[test]
fn a_batch_that_expires_at_home_while_its_thread_is_attached_is_dropped_at_once() {
    Python::attach(|py| {
        let object = PyFloat::new(py, 5.5);
        let (batch, home) = batch_of_references_to(&object, false);
        expire(batch, &home);
        assert_eq!(posted(&home), 0, "not posted");
        assert_eq!(refcount(&object), 1, "dropped at once");
    });
}
