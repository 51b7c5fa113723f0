//! None, booleans, integers and floats.
//!
//! `None`, `True`, `False` and the small integers −5..=256 are preallocated and immortal, as in
//! CPython: every thread uses them constantly, and immortal counts are only ever read, so they
//! cost no contention.

use std::ptr::NonNull;
use std::sync::LazyLock;

use ftrt_gil::Python;

use crate::error::{Error, Result};
use crate::header::{allocate, allocate_immortal, payload, Header, Kind, TypeObject};
use crate::refs::Obj;

pub(crate) static NONE_TYPE: TypeObject = TypeObject::new::<()>("NoneType", Kind::None);
pub(crate) static BOOL_TYPE: TypeObject = TypeObject::new::<bool>("bool", Kind::Bool);
pub(crate) static INT_TYPE: TypeObject = TypeObject::new::<i64>("int", Kind::Int);
pub(crate) static FLOAT_TYPE: TypeObject = TypeObject::new::<f64>("float", Kind::Float);

/// The smallest and largest preallocated integers.
pub const SMALL_INTS: std::ops::RangeInclusive<i64> = -5..=256;

/// A pointer to an immortal object, shareable between threads.
#[derive(Clone, Copy)]
pub(crate) struct Immortal(pub(crate) NonNull<Header>);
// SAFETY: immortal objects are never freed and their counts are never written.
unsafe impl Send for Immortal {}
// SAFETY: as above.
unsafe impl Sync for Immortal {}

struct Singletons {
    none: Immortal,
    false_: Immortal,
    true_: Immortal,
    small_ints: Vec<Immortal>,
}

static SINGLETONS: LazyLock<Singletons> = LazyLock::new(|| Singletons {
    none: Immortal(allocate_immortal(&NONE_TYPE, ())),
    false_: Immortal(allocate_immortal(&BOOL_TYPE, false)),
    true_: Immortal(allocate_immortal(&BOOL_TYPE, true)),
    small_ints: SMALL_INTS
        .map(|i| Immortal(allocate_immortal(&INT_TYPE, i)))
        .collect(),
});

fn immortal(py: Python<'_>, object: Immortal) -> Obj<'_> {
    // SAFETY: immortal objects are always alive; the increment is a no-op read.
    unsafe { Obj::from_borrowed(py, object.0) }
}

impl<'py> Obj<'py> {
    /// `None`.
    pub fn none(py: Python<'py>) -> Self {
        immortal(py, SINGLETONS.none)
    }

    /// `True` or `False`.
    pub fn bool(py: Python<'py>, value: bool) -> Self {
        immortal(
            py,
            if value {
                SINGLETONS.true_
            } else {
                SINGLETONS.false_
            },
        )
    }

    /// An integer; the small ones are shared immortal objects.
    pub fn int(py: Python<'py>, value: i64) -> Self {
        if SMALL_INTS.contains(&value) {
            return immortal(
                py,
                SINGLETONS.small_ints[(value - SMALL_INTS.start()) as usize],
            );
        }
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe { Obj::from_owned(allocate(&INT_TYPE, value, py.count_token())) }
    }

    /// A float.
    pub fn float(py: Python<'py>, value: f64) -> Self {
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe { Obj::from_owned(allocate(&FLOAT_TYPE, value, py.count_token())) }
    }

    /// Whether this is `None`.
    pub fn is_none(&self) -> bool {
        self.kind() == Kind::None
    }

    /// The value of an `int` (or `bool`).
    pub fn to_i64(&self) -> Result<i64> {
        // SAFETY: this reference keeps the object alive.
        unsafe { read_i64(self.ptr()) }
    }

    /// The value of a `float` (or `int`).
    pub fn to_f64(&self) -> Result<f64> {
        // SAFETY: this reference keeps the object alive.
        unsafe { read_f64(self.ptr()) }
    }

    /// `self + other` for numbers (and strings, see [`Obj::str`]).
    pub fn add(&self, other: &Obj<'py>) -> Result<Obj<'py>> {
        if self.kind() == Kind::Str && other.kind() == Kind::Str {
            let joined = [self.to_str()?, other.to_str()?].concat();
            return Ok(Obj::str(self.py(), &joined));
        }
        self.arithmetic(other, "+", i64::checked_add, |a, b| a + b)
    }

    /// `self - other` for numbers.
    pub fn sub(&self, other: &Obj<'py>) -> Result<Obj<'py>> {
        self.arithmetic(other, "-", i64::checked_sub, |a, b| a - b)
    }

    /// `self * other` for numbers.
    pub fn mul(&self, other: &Obj<'py>) -> Result<Obj<'py>> {
        self.arithmetic(other, "*", i64::checked_mul, |a, b| a * b)
    }

    fn arithmetic(
        &self,
        other: &Obj<'py>,
        op: &str,
        ints: fn(i64, i64) -> Option<i64>,
        floats: fn(f64, f64) -> f64,
    ) -> Result<Obj<'py>> {
        let py = self.py();
        match (self.kind(), other.kind()) {
            (Kind::Int | Kind::Bool, Kind::Int | Kind::Bool) => {
                ints(self.to_i64()?, other.to_i64()?)
                    .map(|v| Obj::int(py, v))
                    .ok_or_else(|| Error::OverflowError(format!("integer {op} overflows 64 bits")))
            }
            (Kind::Int | Kind::Bool | Kind::Float, Kind::Int | Kind::Bool | Kind::Float) => {
                Ok(Obj::float(py, floats(self.to_f64()?, other.to_f64()?)))
            }
            _ => Err(Error::TypeError(format!(
                "unsupported operand type(s) for {op}: '{}' and '{}'",
                self.type_name(),
                other.type_name()
            ))),
        }
    }
}

/// The value of an `int` or `bool`.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn read_i64(object: NonNull<Header>) -> Result<i64> {
    // SAFETY: alive per the caller; the kind selects the payload.
    unsafe {
        match crate::header::header(object).ty.kind {
            Kind::Int => Ok(*payload::<i64>(object)),
            Kind::Bool => Ok(i64::from(*payload::<bool>(object))),
            _ => Err(Error::TypeError(format!(
                "'{}' object cannot be interpreted as an integer",
                type_name(object)
            ))),
        }
    }
}

/// The value of a `float`, `int` or `bool`.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn read_f64(object: NonNull<Header>) -> Result<f64> {
    // SAFETY: as in `read_i64`.
    unsafe {
        match crate::header::header(object).ty.kind {
            Kind::Float => Ok(*payload::<f64>(object)),
            Kind::Int | Kind::Bool => Ok(read_i64(object)? as f64),
            _ => Err(Error::TypeError(format!(
                "must be real number, not {}",
                type_name(object)
            ))),
        }
    }
}

/// The name of an object's type.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn type_name(object: NonNull<Header>) -> &'static str {
    // SAFETY: alive per the caller; type objects are `'static`.
    unsafe { crate::header::header(object) }.ty.name
}
