//! What the integration tests cannot reach: a settling that finds a counting bug, a collection
//! whose garbage panics as it is freed, and the traffic a thread has seen, which a collection's
//! own references must not add to.

use std::panic::{catch_unwind, AssertUnwindSafe};

use ftrt_gil::BUILD_STRATEGY;
use ftrt_refcount::{RefCountValue, Strategy};

use super::*;
use crate::PyFloat;

/// Drops no thread took, counted for the deferred object `tag` on this thread: an imbalance
/// only a counting bug makes, which a settling refuses. Undone when the guard goes, a failing
/// assertion's unwinding included, so that no later settling in the process refuses it.
/// Meanwhile an automatic collection on another test's thread would refuse it too: the tests
/// that make one keep it only between two of their own settlings.
struct Imbalance {
    tag: u16,
    drops: usize,
}

impl Imbalance {
    /// Counts `drops` drops of `tag`'s object. The caller holds a reference to the object until
    /// the guard is gone.
    fn make(tag: u16, drops: usize) -> Self {
        for _ in 0..drops {
            // SAFETY: breaks the contract on purpose (drops of references never taken): the
            // settlings meanwhile must refuse the negative total and free nothing, and the
            // caller holds a reference to the object throughout.
            unsafe { count_in_thread_out_of_line(tag, DROPPED) };
        }
        Imbalance { tag, drops }
    }
}

impl Drop for Imbalance {
    fn drop(&mut self) {
        for _ in 0..self.drops {
            // SAFETY: breaks the contract on purpose too (a delta of one, neither `TAKEN` nor
            // `DROPPED` for a reference): it undoes one of the drops above, so that a settling
            // finds the true total; the object is alive (the caller's reference).
            unsafe { count_in_thread_out_of_line(self.tag, 1) };
        }
    }
}

#[test]
fn a_settling_that_finds_more_drops_than_references_keeps_the_id_with_the_object_that_carries_it() {
    if BUILD_STRATEGY != Strategy::Biased {
        return; // only the biased build defers
    }
    let _one = crate::one_stopping_test_at_a_time();
    Python::attach(|py| {
        let object = PyFloat::new(py, 1.5);
        assert!(object.defer_refcount());
        // Past the first settling, which a fresh deferral lasts through whatever it finds.
        settle_now(py);
        let tag = deferred_id(object.header());
        let deferred = deferred_count();
        let imbalance = Imbalance::make(tag, 3);
        let settled = catch_unwind(AssertUnwindSafe(|| settle_now(py)));
        assert!(settled.is_err(), "a negative total was settled");

        // The object is still deferred under its tag, and the registry still says so: the
        // next object deferred gets another id.
        assert_eq!(deferred_id(object.header()), tag);
        assert_eq!(deferred_count(), deferred);
        assert!(registry().objects[usize::from(tag)].is_some());
        let other = PyFloat::new(py, 2.5);
        assert!(other.defer_refcount());
        assert_ne!(deferred_id(other.header()), tag);

        // The imbalance undone (plain net counts, no traffic): both settle and count again (the
        // other past its fresh deferral's first settling).
        drop(imbalance);
        settle_now(py);
        settle_now(py);
        assert_eq!(deferred_id(object.header()), 0);
        assert_eq!(deferred_id(other.header()), 0);
        assert_eq!(object.value(), 1.5);
    });
}

#[test]
fn the_references_a_collection_takes_to_its_garbage_are_not_traffic_that_asks_for_a_deferral() {
    if BUILD_STRATEGY != Strategy::Biased {
        return; // only the biased build counts shared traffic
    }
    let _one = crate::one_stopping_test_at_a_time();
    // A shared self-referencing list that another thread made, and dropped before it exited:
    // garbage this thread does not own, whose references it counts in the shared half.
    let address = std::thread::spawn(|| {
        Python::attach(|py| {
            let list = crate::PyList::empty(py);
            list.append(list.clone());
            let shared = list.unbind();
            let address = shared.bind(py).header() as *const Header as usize;
            drop(shared);
            address
        })
    })
    .join()
    .unwrap();
    Python::attach(|py| {
        // This thread has seen one increment short of a deferral in a row at that address, as
        // a thread does that counts the object on the shared side and then lets it go.
        let slot = recent_slot(address);
        RECENTLY_SHARED.with(|recent| recent[slot].set((address, PROMOTE_AFTER - 1)));
        // The collection's own reference to the garbage is not one more in that row: a
        // deferral asked for then would keep the list alive past the collection that found it.
        let _ = crate::gc::collect_shared(py);
        assert!(
            lock_requests().is_empty(),
            "the collection asked for its garbage to be deferred"
        );
        assert_eq!(
            RECENTLY_SHARED.with(|recent| recent[slot].get()),
            (address, PROMOTE_AFTER - 1)
        );
    });
}

#[test]
fn a_settling_that_refuses_one_object_still_frees_the_dead_ones() {
    if BUILD_STRATEGY != Strategy::Biased {
        return; // only the biased build defers
    }
    let _one = crate::one_stopping_test_at_a_time();
    Python::attach(|py| {
        // A list that dies deferred, and what it holds: the list's freeing drops the item's
        // count back to the test's own reference.
        let item = PyFloat::new(py, 0.5);
        let dying = crate::PyList::empty(py);
        dying.append(item.clone());
        assert!(dying.defer_refcount());
        // An object whose threads' counts hold more drops than references: the settling
        // refuses it (a counting bug).
        let refused = PyFloat::new(py, 1.5);
        assert!(refused.defer_refcount());
        // Past the first settling, which a fresh deferral lasts through whatever it finds.
        settle_now(py);
        let tag = deferred_id(refused.header());
        let imbalance = Imbalance::make(tag, 3);
        drop(dying);
        assert_eq!(item.refcount(), RefCountValue::Mortal(2));

        // Whichever of the two the settling reaches first, the dead list is freed, and the
        // refusal still reaches the caller.
        let settled = catch_unwind(AssertUnwindSafe(|| settle_now(py)));
        assert!(settled.is_err(), "a negative total was settled");
        assert_eq!(
            item.refcount(),
            RefCountValue::Mortal(1),
            "the dead list was not freed"
        );
        assert_eq!(deferred_id(refused.header()), tag);

        drop(imbalance);
        settle_now(py);
        settle_now(py);
        assert_eq!(deferred_id(refused.header()), 0);
    });
}

#[test]
fn a_collection_whose_garbage_panics_as_it_is_freed_still_frees_the_dead_deferred_objects() {
    if BUILD_STRATEGY != Strategy::Biased {
        return; // only the biased build defers
    }
    let _one = crate::one_stopping_test_at_a_time();
    // Garbage for the stopped-world collection: a self-holding list another thread made and
    // dropped before it exited (its exit unlisted it, so no local collection finds it).
    let garbage = std::thread::spawn(|| {
        Python::attach(|py| {
            let list = crate::PyList::empty(py);
            list.append(list.clone());
            list.header() as *const Header as usize
        })
    })
    .join()
    .unwrap();
    Python::attach(|py| {
        // A list that dies deferred, found dead by the collection's settling.
        let item = PyFloat::new(py, 0.5);
        let dying = crate::PyList::empty(py);
        dying.append(item.clone());
        assert!(dying.defer_refcount());
        // Past the first settling, which a fresh deferral lasts through whatever it finds.
        settle_now(py);
        drop(dying);
        assert_eq!(item.refcount(), RefCountValue::Mortal(2));

        assert!(
            crate::gc::panics_with_a_clear_that_panics_at(garbage, || {
                crate::gc::collect_shared(py);
            }),
            "the clear slot's panic reaches the caller"
        );
        assert_eq!(
            item.refcount(),
            RefCountValue::Mortal(1),
            "the dead deferred list was not freed"
        );
    });
}
