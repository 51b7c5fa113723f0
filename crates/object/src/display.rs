//! `Debug` output in Python's `repr` style.

use std::fmt::{self, Formatter};
use std::ptr::NonNull;

use crossbeam_epoch::Guard;

use crate::header::{header, payload, Header, Kind};

/// Containers nested deeper than this print as `...` (Debug must not recurse without bound).
const MAX_DEPTH: usize = 8;

/// Writes `object` as Python's `repr`.
///
/// The whole print is one read: the writer behind `f` may be user code that mutates what is
/// being printed (pops the list, deletes a key) or lets other threads run, and nothing the print
/// has loaded may be freed before it ends. So it runs under one guard that keeps whatever writers
/// remove alive until the print is over:
///
/// - free-threaded builds: an epoch pin (reads need no attachment there, so a `Shared` may be
///   printed from any thread);
/// - `gil` build: attached (re-entrant, so free for an attached thread; a `Shared` printed from
///   another thread takes the GIL, since reading without it races with its holder's writes) and
///   under a [`ReadGuard`](crate::ReadGuard), which defers removals.
///
/// # Safety
/// `object` is alive for the call (the caller holds a reference to it).
pub(crate) unsafe fn fmt_object(object: NonNull<Header>, f: &mut Formatter<'_>) -> fmt::Result {
    #[cfg(ftrt_gil_build)]
    {
        ftrt_gil::Python::attach(|py| {
            let reader = crate::guard::ReadGuard::new(py);
            // SAFETY: alive per the caller; `reader` keeps removed items alive for the print.
            unsafe { fmt_at(object, f, reader.epoch(), 0) }
        })
    }
    #[cfg(not(ftrt_gil_build))]
    {
        let guard = crossbeam_epoch::pin();
        // SAFETY: alive per the caller; `guard` keeps removed items alive for the print.
        unsafe { fmt_at(object, f, &guard, 0) }
    }
}

/// # Safety
/// `object` is alive for the call: the caller holds a reference to it, or loaded it from a
/// container it keeps alive, under the print's guard (see `fmt_object`), and with that guard
/// still in place.
unsafe fn fmt_at(
    object: NonNull<Header>,
    f: &mut Formatter<'_>,
    guard: &Guard,
    depth: usize,
) -> fmt::Result {
    // SAFETY: alive per the contract.
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
            // SAFETY: loaded from `object` (alive) under the print's guard, which is still held.
            unsafe { fmt_at(*item, f, guard, depth + 1) }?;
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
            // SAFETY: alive for the call, which the text borrow does not outlive.
            unsafe { crate::string::read_str(object) }.unwrap_or_default()
        ),
        Kind::Tuple => {
            // SAFETY: the kind says tuple; alive per the caller.
            let items: Vec<_> = unsafe { crate::tuple::items(object) }
                .iter()
                .map(|i| i.as_ptr())
                .collect();
            nested(&items, f, "(", ")")
        }
        // SAFETY: the kind says list; alive per the contract.
        Kind::List => nested(
            &unsafe { crate::list::items_for_display(object, guard) },
            f,
            "[",
            "]",
        ),
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
                // SAFETY: loaded from the dict (alive) under the print's guard, still held.
                unsafe { fmt_at(key, f, guard, depth + 1) }?;
                f.write_str(": ")?;
                // SAFETY: as above.
                unsafe { fmt_at(value, f, guard, depth + 1) }?;
            }
            f.write_str("}")
        }
        // SAFETY: the kind says class.
        Kind::Class => write!(f, "<class '{}'>", unsafe {
            crate::namespace::class_name(object)
        }),
        Kind::Instance => {
            // SAFETY: alive per the caller.
            let name = unsafe { header(object) }.ty.name;
            write!(f, "<{name} object at {object:p}>")
        }
        // SAFETY: the kind says module; alive for the call.
        Kind::Module => write!(f, "<module '{}'>", unsafe {
            crate::namespace::module_name(object)
        }),
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
