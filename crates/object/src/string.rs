//! Strings: immutable, hash computed once, and an interning table on `dashmap`.
//!
//! Interned strings are immortal: they are typically attribute names and dict keys that every
//! thread uses, so their counts must not be a point of contention (and the table keeps them
//! forever anyway). Each thread also keeps a cache of the strings it has interned: a `dashmap`
//! lookup takes a shard's read lock, an atomic write to a cache line every interning thread
//! shares, while the cache is private (and may hold the pointers forever, since interned strings
//! never die).

use std::ptr::NonNull;
use std::sync::LazyLock;

use dashmap::DashMap;
use ftrt_gil::Python;

use crate::error::{Error, Result};
use crate::header::{allocate, allocate_immortal, header, payload, Header, Kind, TypeObject};
use crate::refs::Obj;
use crate::scalars::{read_i64, type_name, Immortal};

pub(crate) struct StrPayload {
    pub(crate) hash: u64,
    pub(crate) text: Box<str>,
}

impl StrPayload {
    fn new(text: &str) -> Self {
        Self {
            hash: hash_bytes(text.as_bytes()),
            text: text.into(),
        }
    }
}

pub(crate) static STR_TYPE: TypeObject = TypeObject::new::<StrPayload>("str", Kind::Str);

static INTERNED: LazyLock<DashMap<Box<str>, Immortal>> = LazyLock::new(DashMap::new);

/// A fast non-cryptographic hash (the FxHash recipe, 8 bytes at a time).
fn hash_bytes(bytes: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut hash = bytes.len() as u64;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        hash = (hash.rotate_left(5) ^ word).wrapping_mul(K);
    }
    for &byte in chunks.remainder() {
        hash = (hash.rotate_left(5) ^ u64::from(byte)).wrapping_mul(K);
    }
    hash
}

fn hash_int(value: i64) -> u64 {
    (value as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .rotate_left(29)
}

impl<'py> Obj<'py> {
    /// A new string.
    pub fn str(py: Python<'py>, text: &str) -> Self {
        // SAFETY: a fresh object's one reference goes to the caller.
        unsafe { Obj::from_owned(allocate(&STR_TYPE, StrPayload::new(text), py.count_token())) }
    }

    /// The interned (unique, immortal) string with this text.
    pub fn intern(py: Python<'py>, text: &str) -> Self {
        let cached = INTERN_CACHE
            .try_with(|cache| cache.borrow().get(text).copied())
            .ok()
            .flatten();
        let interned = cached.unwrap_or_else(|| {
            let interned = intern_shared(text);
            let _ = INTERN_CACHE.try_with(|cache| cache.borrow_mut().insert(text.into(), interned));
            interned
        });
        // SAFETY: interned strings are immortal.
        unsafe { Obj::from_borrowed(py, interned.0) }
    }

    /// The text of a `str`.
    pub fn to_str(&self) -> Result<&str> {
        // SAFETY: this reference keeps the object alive for as long as `self` is borrowed.
        unsafe { read_str(self.ptr()) }
    }
}

thread_local! {
    static INTERN_CACHE: std::cell::RefCell<std::collections::HashMap<Box<str>, Immortal>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

impl<'py> Obj<'py> {
    /// The same object as [`Obj::intern`], looked up in the shared table every time (past this
    /// thread's cache): what a first interning costs, and what the `string-intern` workload
    /// measures.
    pub fn intern_in_shared_table(py: Python<'py>, text: &str) -> Self {
        // SAFETY: interned strings are immortal.
        unsafe { Obj::from_borrowed(py, intern_shared(text).0) }
    }
}

#[cold]
fn intern_shared(text: &str) -> Immortal {
    match INTERNED.get(text) {
        Some(found) => *found,
        None => *INTERNED
            .entry(text.into())
            .or_insert_with(|| Immortal(allocate_immortal(&STR_TYPE, StrPayload::new(text)))),
    }
}

/// How many strings are interned.
pub fn interned_count() -> usize {
    INTERNED.len()
}

/// The text of a `str`.
///
/// # Safety
/// The object is alive for `'a` (the caller ties `'a` to a reference or guard that keeps it so).
pub(crate) unsafe fn read_str<'a>(object: NonNull<Header>) -> Result<&'a str> {
    // SAFETY: alive for `'a` per the caller; the kind selects the payload; the text is immutable.
    unsafe {
        if header(object).ty.kind != Kind::Str {
            return Err(Error::TypeError(format!(
                "expected str, got '{}'",
                type_name(object)
            )));
        }
        Ok(&payload::<StrPayload>(object).text)
    }
}

/// The hash of a dict key: `str` and `int` (and `bool`) are hashable.
///
/// # Safety
/// The object is alive for the call.
pub(crate) unsafe fn key_hash(object: NonNull<Header>) -> Result<u64> {
    // SAFETY: alive per the caller.
    let kind = unsafe { header(object) }.ty.kind;
    match kind {
        // SAFETY: kind checked; alive.
        Kind::Str => Ok(unsafe { payload::<StrPayload>(object) }.hash),
        // SAFETY: alive.
        Kind::Int | Kind::Bool => Ok(hash_int(unsafe { read_i64(object) }?)),
        _ => Err(Error::TypeError(format!(
            "unhashable type: '{}'",
            // SAFETY: alive.
            unsafe { type_name(object) }
        ))),
    }
}

/// Key equality, given equal hashes: same object, or equal text, or equal integer values.
///
/// # Safety
/// Both objects are alive for the call.
pub(crate) unsafe fn key_eq(a: NonNull<Header>, b: NonNull<Header>) -> bool {
    if a == b {
        return true;
    }
    // SAFETY: both alive per the caller (for the whole call, so the texts compared too).
    unsafe {
        match (header(a).ty.kind, header(b).ty.kind) {
            (Kind::Str, Kind::Str) => read_str(a).ok() == read_str(b).ok(),
            (Kind::Int | Kind::Bool, Kind::Int | Kind::Bool) => {
                read_i64(a).ok() == read_i64(b).ok()
            }
            _ => false,
        }
    }
}
