//! Every object's header, its type, and allocation.
//!
//! ```text
//!  nogil (biased count)                    gil / nogil-atomic-rc
//!  +--------+--------+--------+----+---+    +--------+----+---+
//!  | owner  | local  | shared |lock|pad|    | count  |lock|pad|
//!  | u32    | u32    | i32    | u8 |   |    | u32    | u8 |   |
//!  +--------+--------+--------+----+---+    +--------+----+---+
//!  | type: &'static TypeObject         |    | type: &'static   |
//!  +-----------------------------------+    +------------------+
//!   24 bytes                                  16 bytes
//! ```
//!
//! CPython's default build has a 16-byte header (`ob_refcnt`, `ob_type`); its free-threaded
//! build 32 (`ob_tid`, padding, `ob_mutex`, `ob_gc_bits`, `ob_ref_local`, `ob_ref_shared`,
//! `ob_type`). ftrt's free-threaded header fits in 24 by using a 32-bit never-reused thread id
//! and a 32-bit shared count (see `docs/refcount.md`). The lock byte is present in every build;
//! the `gil` build never takes it.

use std::ptr::NonNull;

use ftrt_gil::BuildCount;
use ftrt_lock::RawObjectLock;
use ftrt_refcount::RefCount;

use crate::refs::Token;
use crate::slots::{Payload, Slots};
use crate::stats;

/// What kind of value an object holds; one per builtin type, plus instances of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool,
    /// A 64-bit integer.
    Int,
    /// A 64-bit float.
    Float,
    /// An immutable string.
    Str,
    /// An immutable sequence.
    Tuple,
    /// A mutable sequence.
    List,
    /// An insertion-ordered mapping.
    Dict,
    /// A user-defined class.
    Class,
    /// An instance of a user-defined class.
    Instance,
    /// A module: a named namespace of shared variables.
    Module,
}

impl Kind {
    /// Every kind, in a fixed order (the index of each in live-object statistics).
    pub const ALL: [Kind; 11] = [
        Kind::None,
        Kind::Bool,
        Kind::Int,
        Kind::Float,
        Kind::Str,
        Kind::Tuple,
        Kind::List,
        Kind::Dict,
        Kind::Class,
        Kind::Instance,
        Kind::Module,
    ];

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

/// A type: its name, its kind, and its objects' behaviour (the slots: repr, hash, eq, free,
/// traverse). Builtin types are statics; each user-defined class has one, leaked (classes live
/// as long as the program).
pub struct TypeObject {
    pub(crate) name: &'static str,
    pub(crate) kind: Kind,
    pub(crate) slots: Slots,
}

impl TypeObject {
    /// The type of objects whose payload is `P`, with `P`'s behaviour in its slots.
    pub(crate) const fn new<P: Payload>(name: &'static str, kind: Kind) -> Self {
        Self {
            name,
            kind,
            slots: Slots::of::<P>(),
        }
    }

    /// The type's name, e.g. `int` or a class's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The kind of the type's objects.
    pub fn kind(&self) -> Kind {
        self.kind
    }
}

impl std::fmt::Debug for TypeObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<class '{}'>", self.name)
    }
}

/// The header every object starts with.
#[repr(C)]
pub struct Header {
    /// First, so a pointer to the count is a pointer to the object (the biased count's merge
    /// queues hold count pointers and free through them).
    pub(crate) count: BuildCount,
    pub(crate) lock: RawObjectLock,
    pub(crate) ty: &'static TypeObject,
}

/// An object: the header, then the payload of its kind.
#[repr(C)]
pub(crate) struct Object<P> {
    pub(crate) header: Header,
    pub(crate) payload: P,
}

/// Allocates an object with one reference, owned by the caller.
pub(crate) fn allocate<P: Send + Sync>(
    ty: &'static TypeObject,
    payload: P,
    token: Token<'_>,
) -> NonNull<Header> {
    allocate_with_count(ty, payload, <BuildCount as RefCount>::new(token))
}

/// Allocates an object that is never freed and whose count is never written.
pub(crate) fn allocate_immortal<P: Send + Sync>(
    ty: &'static TypeObject,
    payload: P,
) -> NonNull<Header> {
    allocate_with_count(ty, payload, <BuildCount as RefCount>::immortal())
}

fn allocate_with_count<P>(
    ty: &'static TypeObject,
    payload: P,
    count: BuildCount,
) -> NonNull<Header> {
    stats::allocated(ty.kind);
    let object = Box::new(Object {
        header: Header {
            count,
            lock: RawObjectLock::new(),
            ty,
        },
        payload,
    });
    NonNull::from(Box::leak(object)).cast()
}

/// Frees an object of payload type `P`: the `free` slot.
///
/// # Safety
/// `header` heads an `Object<P>` allocated by `allocate*`, whose count has reached zero, and
/// which nothing can reach any more (lock-free readers included: see `reclaim`).
pub(crate) unsafe fn free_object<P>(header: NonNull<Header>) {
    // SAFETY: per the contract, this is the allocation `allocate` leaked, and it is unreachable.
    let object = unsafe { Box::from_raw(header.cast::<Object<P>>().as_ptr()) };
    stats::freed(object.header.ty.kind);
    drop(object);
}

/// The payload of the object at `header`.
///
/// # Safety
/// The object is alive for `'a` and its payload type is `P` (checked by the caller through the
/// object's kind).
pub(crate) unsafe fn payload<'a, P>(header: NonNull<Header>) -> &'a P {
    // SAFETY: per the contract.
    unsafe { &(*header.cast::<Object<P>>().as_ptr()).payload }
}

/// The header of a live object.
///
/// # Safety
/// The object is alive for `'a`.
pub(crate) unsafe fn header<'a>(object: NonNull<Header>) -> &'a Header {
    // SAFETY: per the contract.
    unsafe { object.as_ref() }
}

/// Size of the object header in this build.
pub const HEADER_SIZE: usize = std::mem::size_of::<Header>();

/// Checks at compile time that the count heads the header.
const _: () = assert!(std::mem::offset_of!(Header, count) == 0);

/// The count of a header, as the pointer the refcount strategies take.
pub(crate) fn count_ptr(object: NonNull<Header>) -> NonNull<BuildCount> {
    object.cast()
}

pub(crate) fn strategy_name() -> &'static str {
    <BuildCount as RefCount>::STRATEGY.name()
}
