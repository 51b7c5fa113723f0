//! Freeing garbage when a `clear` slot panics. No type of this object model panics there (its
//! types are sealed and their slots do not call out), so the tests make one panic through a
//! test-only hook: what the panic must not do is leave the rest of the garbage unfreed.

use ftrt_refcount::RefCountValue;

use super::*;
use crate::{Bound, PyFloat, PyList, PyTuple};

/// A list that holds itself: garbage once dropped.
fn self_holding_list<'py>(py: Python<'py>) -> (Bound<'py, PyList>, usize) {
    let list = PyList::empty(py);
    list.append(list.clone());
    let address = list.header() as *const Header as usize;
    (list, address)
}

/// Garbage whose freeing shows: a list and a tuple holding each other, the tuple holding
/// `item` too. Clearing the list drops the tuple from it; only the tuple's freeing (the
/// collection's reference dropped) drops `item`.
fn garbage_holding(py: Python<'_>, item: &Bound<'_, PyFloat>) {
    let list = PyList::empty(py);
    let tuple = PyTuple::new(py, [list.clone().into_any(), item.clone().into_any()]);
    list.append(tuple);
}

#[test]
fn a_clear_slot_that_panics_leaves_the_rest_of_the_garbage_freed() {
    let _one = crate::one_stopping_test_at_a_time();
    Python::attach(|py| {
        let item = PyFloat::new(py, 0.25);
        let (panicking, address) = self_holding_list(py);
        garbage_holding(py, &item);
        drop(panicking);
        assert_eq!(item.refcount(), RefCountValue::Mortal(2));

        assert!(
            panics_with_a_clear_that_panics_at(address, || {
                collect(py);
            }),
            "the clear slot's panic reaches the caller"
        );
        // Whether the panicking list came before the other garbage or after it, the other
        // garbage was cleared and freed.
        assert_eq!(
            item.refcount(),
            RefCountValue::Mortal(1),
            "the garbage beside the panicking object was not freed"
        );
        // The list whose clear panicked still holds itself: the next collection frees it.
        let again = collect(py);
        assert!(
            again.unreachable >= 1,
            "the uncleared list was not found again"
        );
    });
}
