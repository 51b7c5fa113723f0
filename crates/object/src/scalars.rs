//! None, booleans, integers and floats.
//!
//! `None`, `True`, `False` and the small integers −5..=256 are preallocated and immortal, as in
//! CPython: every thread uses them constantly, and immortal counts are only ever read, so they
//! cost no contention.

use std::fmt::{self, Formatter};
use std::ptr::NonNull;
use std::sync::LazyLock;

use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::Bound;
use crate::error::{Error, Result};
use crate::header::{allocate, allocate_immortal, payload, Header, Kind, TypeObject};
use crate::slots::{Payload, Repr};
use crate::types::{py_type, PyAny, PyTypeInfo};

py_type!(
    /// `None`.
    PyNone, "NoneType", Kind::None, ()
);
py_type!(
    /// `True` and `False`.
    PyBool, "bool", Kind::Bool, bool
);
py_type!(
    /// A 64-bit integer (overflow is an `OverflowError`, never a wrap).
    PyInt, "int", Kind::Int, i64
);
py_type!(
    /// A 64-bit float.
    PyFloat, "float", Kind::Float, f64
);

pub(crate) static NONE_TYPE: TypeObject = TypeObject::new::<()>("NoneType", Kind::None);
pub(crate) static BOOL_TYPE: TypeObject = TypeObject::new::<bool>("bool", Kind::Bool);
pub(crate) static INT_TYPE: TypeObject = TypeObject::new::<i64>("int", Kind::Int);
pub(crate) static FLOAT_TYPE: TypeObject = TypeObject::new::<f64>("float", Kind::Float);

impl Payload for () {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        f.write_str("None")
    }
}

impl Payload for bool {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        f.write_str(if *self { "True" } else { "False" })
    }

    fn hash(&self) -> Option<u64> {
        Some(hash_int(i64::from(*self)))
    }

    fn eq(&self, _: Borrowed<'_>, other: Borrowed<'_>) -> bool {
        int_equals(i64::from(*self), other)
    }
}

impl Payload for i64 {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write!(f, "{self}")
    }

    fn hash(&self) -> Option<u64> {
        Some(hash_int(*self))
    }

    fn eq(&self, _: Borrowed<'_>, other: Borrowed<'_>) -> bool {
        int_equals(*self, other)
    }
}

impl Payload for f64 {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write_float_repr(*self, f)
    }

    fn eq(&self, _: Borrowed<'_>, other: Borrowed<'_>) -> bool {
        let other = other.ptr();
        // SAFETY: `other` is alive for the call (a borrowed reference).
        match unsafe { try_i64(other) } {
            Some(int) => int_equals_float(int, *self),
            // SAFETY: as above; not an int, so a value here is a float's own.
            None => unsafe { try_f64(other) }.is_some_and(|other| other == *self),
        }
    }
}

/// Writes a float as Python's `repr` does. Rust's `Debug` already picks the shortest digits
/// that read back the same, and switches to an exponent at the same points (below 1e-4, from
/// 1e16 on); Python spells NaN `nan` and the exponent with its sign and at least two digits.
fn write_float_repr(value: f64, f: &mut Formatter<'_>) -> fmt::Result {
    if value.is_nan() {
        return f.write_str("nan");
    }
    let rust = format!("{value:?}");
    match rust.split_once('e') {
        None => f.write_str(&rust),
        Some((mantissa, exponent)) => {
            let (sign, digits) = match exponent.strip_prefix('-') {
                Some(digits) => ('-', digits),
                None => ('+', exponent),
            };
            write!(f, "{mantissa}e{sign}{digits:0>2}")
        }
    }
}

/// An integer equals an integer (or bool) of the same value, and a float equal to it.
fn int_equals(value: i64, other: Borrowed<'_>) -> bool {
    let other = other.ptr();
    // SAFETY: `other` is alive for the call (a borrowed reference).
    match unsafe { try_i64(other) } {
        Some(other) => other == value,
        // SAFETY: as above; not an int, so a value here is a float's own.
        None => unsafe { try_f64(other) }.is_some_and(|float| int_equals_float(value, float)),
    }
}

/// Whether an integer and a float are the same number. Exact, as CPython compares them: the
/// integer is not rounded to a float first (2**53 + 1 would equal 2.0**53, and equality would
/// stop being transitive).
fn int_equals_float(int: i64, float: f64) -> bool {
    /// 2**63, exactly a float: the whole floats in `[-2**63, 2**63)` convert to `i64` exactly.
    const TWO_TO_63: f64 = 9_223_372_036_854_775_808.0;
    // NaN and the infinities have no fraction of 0.
    float.fract() == 0.0 && (-TWO_TO_63..TWO_TO_63).contains(&float) && float as i64 == int
}

/// The hash of an integer (and of a bool, so that `True` and `1` are the same key).
pub(crate) fn hash_int(value: i64) -> u64 {
    (value as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

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

/// A new reference to an immortal object of type `T`.
///
/// # Safety
/// The object's type is one `T` accepts.
unsafe fn immortal<T: PyTypeInfo>(py: Python<'_>, object: Immortal) -> Bound<'_, T> {
    // SAFETY: immortal objects are always alive (the increment is a no-op read); the type is
    // the caller's to match.
    unsafe { Bound::from_borrowed(py, object.0) }
}

impl PyNone {
    /// `None`.
    #[inline]
    pub fn get(py: Python<'_>) -> Bound<'_, PyNone> {
        // SAFETY: the `None` singleton.
        unsafe { immortal(py, SINGLETONS.none) }
    }
}

impl PyBool {
    /// `True` or `False`.
    #[inline]
    pub fn new(py: Python<'_>, value: bool) -> Bound<'_, PyBool> {
        let object = if value {
            SINGLETONS.true_
        } else {
            SINGLETONS.false_
        };
        // SAFETY: a bool singleton.
        unsafe { immortal(py, object) }
    }
}

impl Bound<'_, PyBool> {
    /// The value.
    #[inline]
    pub fn value(&self) -> bool {
        *self.payload()
    }
}

impl PyInt {
    /// An integer; the small ones ([`SMALL_INTS`]) are shared immortal objects.
    ///
    /// Always inlined: in the free-threaded builds the inliner left it a call in workloads'
    /// loops, with its own saved registers (`list-append-private` 263 -> 253 instructions an
    /// append inlined).
    #[inline(always)]
    pub fn new(py: Python<'_>, value: i64) -> Bound<'_, PyInt> {
        if SMALL_INTS.contains(&value) {
            let small = SINGLETONS.small_ints[(value - SMALL_INTS.start()) as usize];
            // SAFETY: a small int.
            return unsafe { immortal(py, small) };
        }
        // SAFETY: a fresh int's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe { Bound::from_owned(allocate(&INT_TYPE, value, py.new_object_token())) }
    }
}

impl Bound<'_, PyInt> {
    /// The value.
    #[inline]
    pub fn value(&self) -> i64 {
        *self.payload()
    }
}

impl PyFloat {
    /// A float.
    #[inline]
    pub fn new(py: Python<'_>, value: f64) -> Bound<'_, PyFloat> {
        // SAFETY: a fresh float's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe { Bound::from_owned(allocate(&FLOAT_TYPE, value, py.new_object_token())) }
    }
}

impl Bound<'_, PyFloat> {
    /// The value.
    #[inline]
    pub fn value(&self) -> f64 {
        *self.payload()
    }
}

/// The numeric protocol, on every object: conversions and arithmetic between `int`, `bool` and
/// `float` (and `+` on strings), as Python's binary operators dispatch on both operands.
impl<'py> Bound<'py, PyAny> {
    /// The value of an `int` (or `bool`).
    #[inline]
    pub fn to_i64(&self) -> Result<i64> {
        // SAFETY: this reference keeps the object alive.
        unsafe { read_i64(self.ptr()) }
    }

    /// The value of a `float` (or `int`, or `bool`).
    #[inline]
    pub fn to_f64(&self) -> Result<f64> {
        // SAFETY: this reference keeps the object alive.
        unsafe { read_f64(self.ptr()) }
    }

    /// The text of a `str`.
    #[inline]
    pub fn to_str(&self) -> Result<&str> {
        Ok(self.downcast::<crate::PyStr>()?.to_str())
    }

    /// `self + other` for numbers, and for two strings.
    pub fn add(&self, other: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
        // A type test first: `downcast`'s error formats a message, too slow for every number.
        if self.is_instance_of::<crate::PyStr>() && other.is_instance_of::<crate::PyStr>() {
            let (a, b) = (
                self.downcast::<crate::PyStr>()?,
                other.downcast::<crate::PyStr>()?,
            );
            let joined = [a.to_str(), b.to_str()].concat();
            return Ok(crate::PyStr::new(self.py(), &joined).into_any());
        }
        self.arithmetic(other, "+", i64::checked_add, |a, b| a + b)
    }

    /// `self - other` for numbers.
    pub fn sub(&self, other: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
        self.arithmetic(other, "-", i64::checked_sub, |a, b| a - b)
    }

    /// `self * other` for numbers.
    pub fn mul(&self, other: &Bound<'py, PyAny>) -> Result<Bound<'py, PyAny>> {
        self.arithmetic(other, "*", i64::checked_mul, |a, b| a * b)
    }

    /// Generic over the operations (not `fn` pointers), so that each operator gets its own copy
    /// with the integer operation inlined instead of called through a pointer.
    #[inline(always)]
    fn arithmetic(
        &self,
        other: &Bound<'py, PyAny>,
        op: &str,
        ints: impl FnOnce(i64, i64) -> Option<i64>,
        floats: impl FnOnce(f64, f64) -> f64,
    ) -> Result<Bound<'py, PyAny>> {
        let py = self.py();
        match (self.kind(), other.kind()) {
            (Kind::Int | Kind::Bool, Kind::Int | Kind::Bool) => {
                ints(self.to_i64()?, other.to_i64()?)
                    .map(|v| PyInt::new(py, v).into_any())
                    .ok_or_else(|| Error::OverflowError(format!("integer {op} overflows 64 bits")))
            }
            (Kind::Int | Kind::Bool | Kind::Float, Kind::Int | Kind::Bool | Kind::Float) => {
                Ok(PyFloat::new(py, floats(self.to_f64()?, other.to_f64()?)).into_any())
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
    // SAFETY: alive per the caller.
    unsafe { try_i64(object) }.ok_or_else(|| {
        // SAFETY: alive per the caller.
        let name = unsafe { type_name(object) };
        Error::TypeError(format!(
            "'{name}' object cannot be interpreted as an integer"
        ))
    })
}

/// The value of an `int` or `bool`, or `None`: for comparisons, which must not format an
/// error they would throw away.
///
/// # Safety
/// The object is alive for the call.
#[inline]
pub(crate) unsafe fn try_i64(object: NonNull<Header>) -> Option<i64> {
    // SAFETY: alive per the caller; the kind selects the payload.
    unsafe {
        match crate::header::header(object).ty.kind {
            Kind::Int => Some(*payload::<i64>(object)),
            Kind::Bool => Some(i64::from(*payload::<bool>(object))),
            _ => None,
        }
    }
}

/// The value of a `float`, `int` or `bool`, or `None` (as [`try_i64`]).
///
/// # Safety
/// The object is alive for the call.
#[inline]
pub(crate) unsafe fn try_f64(object: NonNull<Header>) -> Option<f64> {
    // SAFETY: alive per the caller; the kind selects the payload.
    unsafe {
        match crate::header::header(object).ty.kind {
            Kind::Float => Some(*payload::<f64>(object)),
            _ => try_i64(object).map(|value| value as f64),
        }
    }
}

/// The value of a `float`, `int` or `bool`.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn read_f64(object: NonNull<Header>) -> Result<f64> {
    // SAFETY: alive per the caller.
    unsafe { try_f64(object) }.ok_or_else(|| {
        // SAFETY: alive per the caller.
        let name = unsafe { type_name(object) };
        Error::TypeError(format!("must be real number, not {name}"))
    })
}

/// The name of an object's type.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn type_name(object: NonNull<Header>) -> &'static str {
    // SAFETY: alive per the caller; type objects are `'static`.
    unsafe { crate::header::header(object) }.ty.name
}
