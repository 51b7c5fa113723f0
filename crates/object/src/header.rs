//! Every object's header, its type, and allocation.
//!
//! ```text
//!  nogil (biased count)                      gil / nogil-atomic-rc
//!  +--------+--------+--------+----+----+----+  +--------+----+----+----+
//!  | owner  | local  | shared |lock|flag|gvn |  | count  |lock|flag|gvn |
//!  | u32    | u32    | i32    | u8 | u8 | u8 |  | u32    | u8 | u8 | u8 |
//!  +--------+--------+--------+----+----+----+  +--------+----+----+----+
//!  | type: &'static TypeObject         |    | type: &'static   |
//!  +-----------------------------------+    +------------------+
//!   24 bytes                                  16 bytes
//! ```
//!
//! CPython's default build has a 16-byte header (`ob_refcnt`, `ob_type`); its free-threaded
//! build 32 (`ob_tid`, padding, `ob_mutex`, `ob_gc_bits`, `ob_ref_local`, `ob_ref_shared`,
//! `ob_type`). ftrt's free-threaded header fits in 24 by using a 32-bit never-reused thread id
//! and a 32-bit shared count (see `docs/refcount.md`). The lock byte is present in every build;
//! the `gil` build never takes it. `flag` is the `shared` flag, whether another thread may
//! reach the object (see [`Header::section`]); `gvn` marks an object given to a thread that
//! found it hot (`hot`). Both fit in what would be padding. A deferred object's per-thread counts
//! are named by the tag its biased count keeps (see `hot`), not by the header.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use ftrt_gil::{section, BuildCount, Python};
use ftrt_lock::RawObjectLock;
use ftrt_refcount::RefCount;

use crate::gc;
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
///
/// Objects start *local*: only the thread that made them can reach them. A local object needs no
/// lock, since no other thread can take one, so its critical sections are skipped, and in the
/// free-threaded builds that removes two atomic read-modify-writes from every list append or dict
/// store on private data.
///
/// The invariant: **a local object is reachable from its creating thread alone.** Every way a
/// reference reaches another thread goes through `publish` first, on the creating thread:
/// - [`Bound::unbind`](crate::Bound::unbind), the only way to a [`Shared`](crate::Shared) (the
///   only `Send` handle);
/// - a store into a shared container (list, dict, instance or module attributes), which
///   publishes the value (and a dict's key) before it takes the container's lock;
/// - immortal objects (`None`, small ints, interned strings, classes), which any thread reaches
///   through statics, are born shared.
///
/// Publishing is transitive: it marks everything the object reaches through local objects, so
/// **a shared object holds only shared objects**. Containers made of items, tuples included,
/// start local whatever their items are.
#[repr(C)]
pub struct Header {
    /// First, so a pointer to the count is a pointer to the object (the biased count's merge
    /// queues hold count pointers and free through them).
    pub(crate) count: BuildCount,
    pub(crate) lock: RawObjectLock,
    /// Whether a thread other than the one that made the object may reach it: see
    /// [`Header::section`]. Set once, never cleared.
    shared: AtomicBool,
    /// Whether the object has been given to a thread that found it hot (`hot`): the next
    /// request for it defers it. Set only in a stopped world. The object's own record, so a new
    /// object at a freed one's address starts unmarked. It fits in the padding.
    pub(crate) given: AtomicBool,
    pub(crate) ty: &'static TypeObject,
}

impl Header {
    /// Whether another thread may reach the object. Only the creating thread ever sees `false`,
    /// until it publishes the object.
    #[inline]
    pub(crate) fn is_shared(&self) -> bool {
        // Relaxed: the creating thread reads its own writes; any other thread got the reference
        // through a hand-over that `publish` precedes (see there).
        self.shared.load(Ordering::Relaxed)
    }

    /// Readies `item` to be stored in this object: publishes it first if this object is shared
    /// (a shared object holds only shared objects). Every store into a container calls it
    /// before taking the container's lock.
    #[inline]
    pub(crate) fn before_storing(&self, item: &Header) {
        if self.is_shared() {
            publish(item);
        }
    }

    /// Runs `f` in the object's critical section: the lock (through `ftrt_gil::section`, which
    /// skips it under the GIL) once the object is shared, nothing while it is local. A local
    /// object cannot become shared inside `f`: publishing happens in the caller's own code
    /// (`unbind`, a store into another container), never inside an object's section.
    ///
    /// Always inlined, as the sections below it are (`ftrt_lock::section::with_on_unrecorded`).
    ///
    /// # Safety
    /// `f` runs no user code, and does not detach: no `allow_threads`, no checkpoint, no
    /// section that may have to wait (this runtime's, or one of `ftrt_lock`'s thread-local
    /// functions, which waits detached). While the thread holds the world alone the section is not
    /// even recorded (`ftrt_gil::section::with_if_undetached`), and a detach would let other
    /// threads in beside `f`. Nor does `f` collect, stop the world, or make this object
    /// reachable from another thread (no publish, no hand-over): a local object's section
    /// takes no lock. The object model's section bodies read and write one container's
    /// contents and drop what they remove; the slots they call run no user code
    /// (`slots::Payload`).
    #[inline(always)]
    pub(crate) unsafe fn section<R>(&self, py: Python<'_>, f: impl FnOnce() -> R) -> R {
        // One call of `f` for both cases (`with_if_undetached`), so it inlines here.
        // SAFETY: `f` does not detach (the caller's contract). What the object model's bodies
        // run besides their own code, destructors of removed references, frees objects,
        // retires what those held and at most asks for checkpoint work, and never detaches.
        // Their epoch pins are nested in the thread's attach pin (a holder is attach-pinned),
        // so none runs deferred functions inside `f`. (A section that had to wait gave the pin
        // up for the wait, and may have let a stop of the world through, a detach, holding none
        // of its locks; it took the pin back before `f`, once the section was recorded: that pin
        // may run deferred functions, any crate's, with the section on the stack and not
        // eliding, so the elision contract does not reach them.) On a thread attached after
        // its exit there is no attach pin, and a pin here may collect: it runs whatever expired
        // in the process-wide default collector, this crate's retired batches and arrays
        // (which free objects and never enter a section or detach) and any closure another
        // crate deferred there. Those are assumed not to enter this crate's sections nor
        // detach: an assumption about other crates, on that path only.
        unsafe { section::with_if_undetached(py, self.is_shared().then_some(&self.lock), f) }
    }
}

/// Marks `object` shared, with everything it reaches through local objects, before a reference
/// to it is handed to another thread (see [`Header`]'s invariant).
///
/// Called on the creating thread while `object` is local, or on any thread once it is shared
/// (then it returns at once). The writes are relaxed: the hand-over that follows (a release store
/// or lock release in the container, a channel or spawn for a `Shared`) orders them before any
/// other thread's first load of the object.
#[inline]
pub(crate) fn publish(object: &Header) {
    if !object.is_shared() {
        // Before the first write: a store detached (a handle carried into `allow_threads`)
        // fails here, the stored object still as local as it was.
        ftrt_gil::assert_attached();
        if object.ty.slots.holds_references {
            publish_local(object);
        } else {
            // A leaf (an int stored in a shared list): nothing to visit, nothing to track, and
            // the mark that `publish_local` would make, without its call.
            object.shared.store(true, Ordering::Relaxed);
        }
    }
}

#[cold]
#[inline(never)]
fn publish_local(root: &Header) {
    let on_published = |object| {
        // SAFETY: alive (being published), of a type that holds references; this is its
        // thread, which publishes it before any other thread can reach it.
        unsafe { gc::on_published(object) }
    };
    // SAFETY: the local objects `root` reaches are this thread's (local objects reach only
    // their own thread's), and `publish` is never called inside a section (a section's body
    // publishes nothing: `Header::section`'s contract).
    unsafe { publish_with(root, on_published) };
}

/// Publishes `root` and everything it reaches through local objects, calling `published` with
/// each newly shared object that may hold references (before its contents are visited).
///
/// Called on the objects' own thread (`publish`), or by a stopped-world collection on another
/// thread's behalf (its local garbage, before it is freed elsewhere).
///
/// # Safety
/// No thread but the caller's runs any code on the local objects `root` reaches while this
/// runs: they are the caller's own and it is in none of their sections, or the world is
/// stopped. The walk reads what each local object holds without its lock, through the type's
/// `traverse` slot.
pub(crate) unsafe fn publish_with(root: &Header, mut published: impl FnMut(NonNull<Header>)) {
    // Depth-first over the local objects, with an explicit stack: nesting may be deep. Only
    // objects that hold references go on it, so a leaf allocates nothing.
    let mut local = Vec::new();
    mark_shared(root, &mut local, &mut published);
    while let Some(object) = local.pop() {
        let mut visit = |held: crate::Borrowed<'_>| {
            // SAFETY: held by `object`, which is alive and, being local, unchanged meanwhile.
            let held = unsafe { header(held.ptr()) };
            if !held.is_shared() {
                mark_shared(held, &mut local, &mut published);
            }
        };
        // SAFETY: alive (held by the root's holder, or by an object on the stack); its own
        // type's slot; it was local until just now, so no other thread can change what it holds,
        // and its thread is in none of its sections (the caller's contract).
        unsafe { (header(object).ty.slots.traverse)(object, &mut visit) };
    }
}

/// Marks one local object shared, and queues it for its contents if it may hold any.
fn mark_shared(
    object: &Header,
    local: &mut Vec<NonNull<Header>>,
    published: &mut impl FnMut(NonNull<Header>),
) {
    object.shared.store(true, Ordering::Relaxed);
    if object.ty.slots.holds_references {
        let object = NonNull::from(object);
        published(object);
        local.push(object);
    }
}

/// An object: the header, then the payload of its kind.
#[repr(C)]
pub(crate) struct Object<P> {
    pub(crate) header: Header,
    pub(crate) payload: P,
}

/// Allocates an object with one reference, owned by the caller.
pub(crate) fn allocate<P: Payload>(
    ty: &'static TypeObject,
    payload: P,
    token: Token<'_>,
) -> NonNull<Header> {
    allocate_with_count(ty, payload, <BuildCount as RefCount>::new(token), false)
}

/// Allocates an object that is never freed and whose count is never written.
pub(crate) fn allocate_immortal<P: Payload>(
    ty: &'static TypeObject,
    payload: P,
) -> NonNull<Header> {
    allocate_with_count(ty, payload, <BuildCount as RefCount>::immortal(), true)
}

fn allocate_with_count<P: Payload>(
    ty: &'static TypeObject,
    payload: P,
    count: BuildCount,
    immortal: bool,
) -> NonNull<Header> {
    stats::allocated(ty.kind);
    let object = Object {
        header: Header {
            count,
            lock: RawObjectLock::new(),
            // Immortal objects are reachable from every thread through statics.
            shared: AtomicBool::new(immortal),
            given: AtomicBool::new(false),
            ty,
        },
        payload,
    };
    if !P::HOLDS_REFERENCES {
        return NonNull::from(Box::leak(Box::new(object))).cast();
    }
    const { assert!(std::mem::offset_of!(Tracked<P>, object) == GC_HEAD) };
    // Objects that may hold references can form cycles: they carry the collector's head and
    // are tracked (immortal ones are never freed, so never garbage: untracked).
    // Raw, not a reference: the header pointer handed out is the one `free_object` frees the
    // allocation through, so it must carry write permission over all of it (a pointer derived
    // from `&tracked.object` is read-only where the object has no interior mutability, and
    // Miri's Tree Borrows rejected the free).
    let tracked = Box::into_raw(Box::new(Tracked {
        gc: GcHead::untracked(),
        object,
    }));
    // SAFETY: `tracked` is the allocation just made, not null.
    let header = unsafe { NonNull::new_unchecked(std::ptr::addr_of_mut!((*tracked).object)) }
        .cast::<Header>();
    if !immortal {
        // SAFETY: alive, and nobody else can reach it yet; of a tracked type (it has the
        // collector's head); `free_object` untracks it before it is freed. Allocations run
        // attached (the token).
        unsafe { (*tracked).gc.set(gc::track(header)) };
    }
    header
}

/// An object that may hold references, behind the cycle collector's head. The header pointer
/// everyone holds points at `object`; the head sits [`GC_HEAD`] bytes before it.
#[repr(C)]
pub(crate) struct Tracked<P> {
    gc: GcHead,
    object: Object<P>,
}

/// How far before the header of an object that may hold references its [`GcHead`] sits.
const GC_HEAD: usize = std::mem::size_of::<GcHead>();

/// The collector's part of a tracked object: its index in the registry of tracked objects, and
/// its place in its thread's list of local objects (`gc::local`), if it is listed. Eight bytes,
/// so the object behind it stays aligned.
#[repr(C, align(8))]
pub(crate) struct GcHead {
    index: AtomicU32,
    listed: AtomicU32,
}

/// The place of an object that is in no thread's list of local objects.
pub(crate) const NOT_LISTED: u32 = u32::MAX;

/// The place of an object a stopped-world collection found unreachable: in no list either, and
/// its free does not count down the young count, which the collection reset when it found it
/// (shared garbage dies later, when the epoch drops what retired it). Every place below it is
/// a real one.
pub(crate) const FOUND_GARBAGE: u32 = u32::MAX - 1;

impl GcHead {
    fn untracked() -> Self {
        GcHead {
            index: AtomicU32::new(gc::UNTRACKED),
            listed: AtomicU32::new(NOT_LISTED),
        }
    }

    fn set(&self, index: u32) {
        // Relaxed: written by the object's thread while it is local (or in a stopped world); a
        // collector reads it in a stopped world, which the stop orders after every thread's
        // writes.
        self.index.store(index, Ordering::Relaxed);
    }
}

/// The registry index of an object that may hold references (`gc::UNTRACKED` for an immortal
/// one, and for a local object listed for its thread's collections until it takes a slot:
/// see `gc::track`).
///
/// # Safety
/// The object is alive and its type's payload holds references (`slots.holds_references`),
/// so it was allocated behind a [`GcHead`]; the head is written only while it is allocated.
pub(crate) unsafe fn gc_index(object: NonNull<Header>) -> u32 {
    // SAFETY: per the contract the object is a live `Tracked` allocation; the head is its first
    // field whatever the payload, so `()` stands in for it.
    unsafe { (*tracked::<()>(object)).gc.index.load(Ordering::Relaxed) }
}

/// Sets the index [`gc_index`] reads: a listed object's first registry slot.
///
/// # Safety
/// As for [`gc_index`], and the caller is the object's thread, or the world is stopped.
#[cfg_attr(ftrt_gil_build, allow(dead_code))] // the free-threaded builds' local objects
pub(crate) unsafe fn set_gc_index(object: NonNull<Header>, index: u32) {
    // SAFETY: as in `gc_index`.
    unsafe { (*tracked::<()>(object)).gc.set(index) };
}

/// The place of an object that may hold references in its thread's list of local objects, or
/// [`NOT_LISTED`] or [`FOUND_GARBAGE`].
///
/// # Safety
/// As for [`gc_index`].
#[inline]
pub(crate) unsafe fn listed_at(object: NonNull<Header>) -> u32 {
    // Relaxed: written by the object's own thread, or by a collector in a stopped world; the
    // stopped-world collection reads it after the stop, which orders every thread's writes
    // before, and the owner reads it after the restart, which orders the collector's.
    // SAFETY: as in `gc_index`.
    unsafe { (*tracked::<()>(object)).gc.listed.load(Ordering::Relaxed) }
}

/// Sets the place [`listed_at`] reads.
///
/// # Safety
/// As for [`gc_index`], and the caller is the object's thread, keeping its list (`gc::local`),
/// or the world is stopped.
pub(crate) unsafe fn set_listed_at(object: NonNull<Header>, place: u32) {
    // SAFETY: as in `gc_index`.
    unsafe {
        (*tracked::<()>(object))
            .gc
            .listed
            .store(place, Ordering::Relaxed)
    };
}

/// The `Tracked` allocation whose object `header` heads.
///
/// # Safety
/// `header` heads the object of a `Tracked` allocation (its payload holds references).
unsafe fn tracked<P>(header: NonNull<Header>) -> *mut Tracked<P> {
    // SAFETY: per the contract the head sits `GC_HEAD` bytes before the header, in the same
    // allocation.
    unsafe { header.cast::<u8>().as_ptr().sub(GC_HEAD).cast() }
}

/// Frees an object of payload type `P`: the `free` slot.
///
/// # Safety
/// `header` heads an `Object<P>` allocated by `allocate*`, whose count has reached zero, and
/// which nothing can reach any more (lock-free readers included: see `reclaim`).
pub(crate) unsafe fn free_object<P: Payload>(header: NonNull<Header>) {
    let kind = {
        // SAFETY: alive until freed below.
        unsafe { header.as_ref() }.ty.kind
    };
    stats::freed(kind);
    if !P::HOLDS_REFERENCES {
        // SAFETY: per the contract, this is the allocation `allocate` leaked, and it is
        // unreachable.
        drop(unsafe { Box::from_raw(header.cast::<Object<P>>().as_ptr()) });
        return;
    }
    // SAFETY: allocated behind its head (`P` holds references); alive until freed below; freed
    // on this thread.
    unsafe { gc::untrack(header) };
    // SAFETY: as above: the `Tracked` allocation `allocate` leaked, and it is unreachable.
    drop(unsafe { Box::from_raw(tracked::<P>(header)) });
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
/// The object follows its head with no padding in between, whatever the payload (every
/// header is 8-aligned, as the head is), so `gc_index` finds the head from the header.
const _: () = assert!(std::mem::offset_of!(Tracked<()>, object) == GC_HEAD);
const _: () = assert!(std::mem::align_of::<Header>() == GC_HEAD);

/// The count of a header, as the pointer the refcount strategies take.
pub(crate) fn count_ptr(object: NonNull<Header>) -> NonNull<BuildCount> {
    object.cast()
}

pub(crate) fn strategy_name() -> &'static str {
    <BuildCount as RefCount>::STRATEGY.name()
}
