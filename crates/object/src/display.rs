//! `Debug` output in Python's `repr` style.

use std::fmt::{self, Formatter};
use std::ptr::NonNull;

use crate::header::{header, payload, Header, Kind};
use crate::reclaim::with_guard;

/// Containers nested deeper than this print as `...` (Debug must not recurse without bound).
const MAX_DEPTH: usize = 8;

pub(crate) fn fmt_object(object: NonNull<Header>, f: &mut Formatter<'_>) -> fmt::Result {
    with_guard(|guard| fmt_at(object, f, guard, 0))
}

fn fmt_at(
    object: NonNull<Header>,
    f: &mut Formatter<'_>,
    guard: &crossbeam_epoch::Guard,
    depth: usize,
) -> fmt::Result {
    // SAFETY: the caller holds a reference, or loaded the pointer under `guard`.
    let kind = unsafe { header(object) }.ty.kind;
    let nested = |items: &[NonNull<Header>],
                  f: &mut Formatter<'_>,
                  open: &str,
                  close: &str|
     -> fmt::Result {
        if depth >= MAX_DEPTH {
            return write!(f, "{open}...{close}");
        }
        f.write_str(open)?;
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            fmt_at(*item, f, guard, depth + 1)?;
        }
        if items.len() == 1 && open == "(" {
            f.write_str(",")?;
        }
        f.write_str(close)
    };
    match kind {
        Kind::None => f.write_str("None"),
        Kind::Bool => {
            // SAFETY: the arm checked the kind; the object is alive per the caller.
            let value = unsafe { *read::<bool>(object) };
            f.write_str(if value { "True" } else { "False" })
        }
        // SAFETY: as above.
        Kind::Int => write!(f, "{}", unsafe { read::<i64>(object) }),
        // SAFETY: as above.
        Kind::Float => write!(f, "{:?}", unsafe { read::<f64>(object) }),
        Kind::Str => write!(
            f,
            "{:?}",
            crate::string::read_str(object).unwrap_or_default()
        ),
        Kind::Tuple => {
            // SAFETY: the kind says tuple; alive per the caller.
            let items: Vec<_> = unsafe { crate::tuple::items(object) }
                .iter()
                .map(|i| i.as_ptr())
                .collect();
            nested(&items, f, "(", ")")
        }
        Kind::List => nested(&crate::list::items_for_display(object, guard), f, "[", "]"),
        Kind::Dict => {
            // SAFETY: as above.
            let entries =
                unsafe { read::<crate::dict::DictPayload>(object) }.entries_for_display(guard);
            if depth >= MAX_DEPTH {
                return f.write_str("{...}");
            }
            f.write_str("{")?;
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                fmt_at(key, f, guard, depth + 1)?;
                f.write_str(": ")?;
                fmt_at(value, f, guard, depth + 1)?;
            }
            f.write_str("}")
        }
        Kind::Class => write!(f, "<class '{}'>", crate::namespace::class_name(object)),
        Kind::Instance => {
            // SAFETY: alive per the caller.
            let name = unsafe { header(object) }.ty.name;
            write!(f, "<{name} object at {object:p}>")
        }
        Kind::Module => write!(f, "<module '{}'>", crate::namespace::module_name(object)),
    }
}

/// The payload of an object.
///
/// # Safety
/// The object's kind holds a `P` and the object is alive for `'a`.
unsafe fn read<'a, P>(object: NonNull<Header>) -> &'a P {
    // SAFETY: per the contract.
    unsafe { payload::<P>(object) }
}
