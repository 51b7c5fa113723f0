//! Tuples: immutable sequences owning a reference to each item.

use std::fmt::{self, Formatter};

use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::Bound;
use crate::error::{Error, Result};
use crate::header::{allocate, Kind, TypeObject};
use crate::list::position;
use crate::refs::OwnedRef;
use crate::slots::{Payload, Repr};
use crate::types::{py_type, PyAny, PyTypeInfo};

py_type!(
    /// An immutable sequence.
    PyTuple, "tuple", Kind::Tuple, TuplePayload
);

pub(crate) struct TuplePayload {
    items: Box<[OwnedRef]>,
}

pub(crate) static TUPLE_TYPE: TypeObject = TypeObject::new::<TuplePayload>("tuple", Kind::Tuple);

impl Payload for TuplePayload {
    fn repr(
        &self,
        this: Borrowed<'_>,
        f: &mut Formatter<'_>,
        nested: &mut Repr<'_>,
    ) -> fmt::Result {
        let items = self.items.iter().map(OwnedRef::as_ptr);
        // SAFETY: the tuple, alive for the call, holds its items.
        unsafe { nested.sequence(f, this, "(", items, ")") }
    }

    unsafe fn traverse(&self, visit: &mut dyn FnMut(Borrowed<'_>)) {
        for item in self.items.iter() {
            // SAFETY: the tuple holds the item for as long as the tuple is borrowed.
            visit(unsafe { Borrowed::new(item.as_ptr()) });
        }
    }

    const HOLDS_REFERENCES: bool = true;
}

impl PyTuple {
    /// A tuple of `items`.
    pub fn new<'py, T: PyTypeInfo>(
        py: Python<'py>,
        items: impl IntoIterator<Item = Bound<'py, T>>,
    ) -> Bound<'py, PyTuple> {
        let items = items.into_iter().map(Bound::into_owned_ref).collect();
        // SAFETY: a fresh tuple's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe {
            Bound::from_owned(allocate(
                &TUPLE_TYPE,
                TuplePayload { items },
                py.new_object_token(),
            ))
        }
    }
}

impl<'py> Bound<'py, PyTuple> {
    /// `len()`.
    #[inline]
    pub fn len(&self) -> usize {
        self.payload().items.len()
    }

    /// Whether the tuple is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `self[index]` (negative indices count from the end); `IndexError` outside.
    pub fn get_item(&self, index: i64) -> Result<Bound<'py, PyAny>> {
        let items = &self.payload().items;
        let at = position(index, items.len())
            .ok_or_else(|| Error::IndexError("tuple index out of range".into()))?;
        // SAFETY: the tuple holds the item.
        Ok(unsafe { Bound::from_borrowed(self.py(), items[at].as_ptr()) })
    }

    /// The items, as new references.
    pub fn to_vec(&self) -> Vec<Bound<'py, PyAny>> {
        let py = self.py();
        self.payload()
            .items
            .iter()
            // SAFETY: the tuple holds each item.
            .map(|item| unsafe { Bound::from_borrowed(py, item.as_ptr()) })
            .collect()
    }
}
