//! Tuples: immutable sequences owning a reference to each item.

use std::ptr::NonNull;

use ftrt_gil::Python;

use crate::header::{allocate, payload, Header, Kind, TypeObject};
use crate::refs::{Obj, OwnedRef};

pub(crate) struct TuplePayload {
    pub(crate) items: Box<[OwnedRef]>,
}

pub(crate) static TUPLE_TYPE: TypeObject = TypeObject::new::<TuplePayload>("tuple", Kind::Tuple);

impl<'py> Obj<'py> {
    /// A tuple of `items`.
    pub fn tuple(py: Python<'py>, items: impl IntoIterator<Item = Obj<'py>>) -> Self {
        let items = items.into_iter().map(Obj::into_owned_ref).collect();
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe {
            Obj::from_owned(allocate(
                &TUPLE_TYPE,
                TuplePayload { items },
                py.count_token(),
            ))
        }
    }
}

/// The items of a live tuple.
///
/// # Safety
/// `object` is a live tuple for `'a`.
pub(crate) unsafe fn items<'a>(object: NonNull<Header>) -> &'a [OwnedRef] {
    // SAFETY: per the contract.
    unsafe { &payload::<TuplePayload>(object).items }
}
