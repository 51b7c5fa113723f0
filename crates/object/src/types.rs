//! The type markers of typed views: `Bound<'py, PyList>` is a counted reference known to be a
//! list. Each builtin type's marker is declared with its payload in the type's own module
//! (`py_type!`), so a view's methods can reach the payload without checking the kind again.

use crate::header::TypeObject;

/// A type an object can be viewed as: [`PyAny`] or one of the builtin types. Implemented only
/// in this crate.
pub trait PyTypeInfo: sealed::Sealed + Sized + 'static {
    /// The type's name in messages (`list`, `int`, `object`).
    const NAME: &'static str;

    /// Whether an object of type `ty` may be viewed as `Self`.
    fn is_type_of(ty: &TypeObject) -> bool;
}

pub(crate) mod sealed {
    /// Keeps [`PyTypeInfo`](super::PyTypeInfo) to this crate's types, whose views rely on it.
    pub trait Sealed {}
}

/// Any object: the view for the generic case (identity, counting, `repr`, hashing, equality,
/// numbers, and downcasting to a typed view). Every typed view dereferences to it.
pub enum PyAny {}

impl sealed::Sealed for PyAny {}

impl PyTypeInfo for PyAny {
    const NAME: &'static str = "object";

    #[inline]
    fn is_type_of(_: &TypeObject) -> bool {
        true
    }
}

/// Declares a builtin type's marker: its [`PyTypeInfo`], the dereference of its views to
/// `Bound<PyAny>`, and `payload()`, the typed access to what its objects hold.
macro_rules! py_type {
    ($(#[$doc:meta])* $marker:ident, $name:literal, $kind:pat, $payload:ty) => {
        $(#[$doc])*
        pub enum $marker {}

        impl $crate::types::sealed::Sealed for $marker {}

        impl $crate::types::PyTypeInfo for $marker {
            const NAME: &'static str = $name;

            #[inline]
            fn is_type_of(ty: &$crate::header::TypeObject) -> bool {
                matches!(ty.kind, $kind)
            }
        }

        impl<'py> ::std::ops::Deref for $crate::bound::Bound<'py, $marker> {
            type Target = $crate::bound::Bound<'py, $crate::types::PyAny>;

            #[inline]
            fn deref(&self) -> &Self::Target {
                self.as_any()
            }
        }

        impl<'py> $crate::bound::Bound<'py, $marker> {
            /// What the object holds.
            #[inline]
            #[allow(dead_code)]
            pub(crate) fn payload(&self) -> &$payload {
                // SAFETY: a view of this type is made only for objects whose kind matches (by
                // downcasting, or by the constructor), and every type of that kind holds this
                // payload; this reference keeps the object alive while `self` is borrowed.
                unsafe { $crate::header::payload::<$payload>(self.ptr()) }
            }
        }
    };
}
pub(crate) use py_type;
