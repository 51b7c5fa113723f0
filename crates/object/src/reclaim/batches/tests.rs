//! Where an expired batch goes: dropped where it expires, posted home to the mailbox of the thread
//! that retired it, or orphaned. The epoch runs [`expire`] on whichever thread collects; these
//! scenarios run it themselves, on a thread they choose, with the retiring thread attached, away
//! or gone as they choose, so each path is taken on purpose rather than when the epoch happens to.
//!
//! Every scenario keeps a reference of its own to a float and puts [`REFS`] more in the batch: the
//! float's count says whether, and where, the batch's references were dropped.

use std::ptr::NonNull;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use ftrt_gil::Python;
use ftrt_refcount::Strategy;

use super::{drain, expire, settle, Batch, Mailbox, ORPHANS, RETIRED};
use crate::header::publish;
use crate::{Bound, PyFloat, RefCountValue, Shared};

/// References to the float in each scenario's batch.
const REFS: usize = 8;

/// A batch of [`REFS`] references to `object`, published first (as an object taken out of a
/// shared container is), retired by the calling thread: the batch, and that thread's mailbox.
fn batch_of_references_to(object: &Bound<'_, PyFloat>, home_only: bool) -> (Batch, Arc<Mailbox>) {
    publish(object.header());
    let refs = (0..REFS).map(|_| object.clone().into_owned_ref()).collect();
    let home = RETIRED.with_current(|retired| {
        let retired = retired.expect("an attached thread has a batch");
        let mut retired = retired.borrow_mut();
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

/// `object`'s count, read through a handle bound for the occasion, on any attached thread.
fn refcount_of_shared(object: &Shared<PyFloat>, py: Python<'_>) -> usize {
    refcount(&object.bind(py))
}

/// Batches waiting in `home`'s mailbox.
fn posted(home: &Mailbox) -> usize {
    home.inbox.lock().unwrap().0.len()
}

/// Whether an orphaned batch holds a reference to the object at `address`.
fn orphaned(address: usize) -> bool {
    let orphans = ORPHANS.lock().unwrap();
    orphans.iter().any(|batch| {
        batch
            .refs
            .iter()
            .any(|r| r.as_ptr().as_ptr() as usize == address)
    })
}

/// Settles (as at a quiescent state) until `object` has one reference left: an orphaned batch
/// goes to whichever attached thread settles first, this one or another test's.
fn settle_until_only_this_reference_is_left(py: Python<'_>, object: &Bound<'_, PyFloat>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while refcount(object) != 1 {
        let left = refcount(object);
        assert!(
            Instant::now() < deadline,
            "the orphaned batch was not dropped: {left} references left"
        );
        settle();
        py.check();
        thread::yield_now();
    }
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
/// there (that thread may not drop it), for the next attached thread that settles.
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
            let held = refcount(&object);
            assert_eq!(
                held,
                1 + REFS,
                "the references wait in the mailbox, not dropped"
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
            settle_until_only_this_reference_is_left(py, &object);
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
        let shared = object.clone().unbind();
        let (batch, home) = batch_of_references_to(&object, false);
        py.allow_threads(|| {
            thread::scope(|s| {
                s.spawn(|| {
                    Python::attach(|py| {
                        let before = refcount_of_shared(&shared, py);
                        expire(batch, &home);
                        let after = refcount_of_shared(&shared, py);
                        assert_eq!(after, before - REFS, "dropped where it expired, at once");
                    })
                });
            });
        });
        assert_eq!(posted(&home), 0, "not posted home");
        drop(shared);
        assert_eq!(refcount(&object), 1);
    });
}

/// While the retiring thread is away, a batch of shared objects that expires on a thread that is
/// not attached either (the epoch runs its functions on whichever thread pins, an exiting one
/// included) is dropped by neither: counts change only on attached threads. It joins the
/// orphaned batches, and the next attached thread to settle drops it.
#[test]
fn a_batch_of_shared_objects_that_expires_where_no_thread_is_attached_is_orphaned() {
    // Another test's settle may adopt the orphan before this one looks: a few tries.
    let seen_orphaned = (0..5).any(|_| {
        Python::attach(|py| {
            let object = PyFloat::new(py, 6.5);
            let (batch, home) = batch_of_references_to(&object, false);
            // An address, to look for: a pointer may not cross to the other thread.
            let target = NonNull::from(object.header()).as_ptr() as usize;
            let seen = py.allow_threads(|| {
                thread::scope(|s| {
                    s.spawn(|| {
                        expire(batch, &home);
                        orphaned(target)
                    })
                    .join()
                    .unwrap()
                })
            });
            assert_eq!(posted(&home), 0, "not posted home");
            settle_until_only_this_reference_is_left(py, &object);
            seen
        })
    });
    assert!(seen_orphaned, "the batch was never found among the orphans");
}

/// A batch that would go home after its thread exited (the exit closed the mailbox) is handed
/// back, and dropped where it expired by an attached thread.
#[test]
fn a_batch_whose_thread_has_exited_is_dropped_where_it_expires() {
    let (shared, batch, home) = thread::spawn(|| {
        Python::attach(|py| {
            let object = PyFloat::new(py, 7.5);
            let shared = object.clone().unbind();
            // One that goes home whatever its thread's standing.
            let (batch, home) = batch_of_references_to(&object, true);
            (shared, batch, home)
        })
    })
    .join()
    .unwrap();
    Python::attach(|py| {
        let before = refcount_of_shared(&shared, py);
        expire(batch, &home);
        assert_eq!(posted(&home), 0, "a closed mailbox takes nothing");
        let after = refcount_of_shared(&shared, py);
        assert_eq!(after, before - REFS, "dropped where it expired");
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
