//! Strings: immutable, hash computed once, and an interning table (`interned`).
//!
//! Interned strings are immortal: they are typically attribute names and dict keys that every
//! thread uses, so their counts must not be a point of contention (and the table keeps them
//! forever anyway). The shared table's lookups write nothing; each thread also keeps a cache of
//! the strings it has interned, which skips hashing into the shared table (and may hold the
//! pointers forever, since interned strings never die).

use std::fmt::{self, Formatter};
use std::sync::LazyLock;

use ftrt_gil::Python;

use crate::borrowed::Borrowed;
use crate::bound::Bound;
use crate::header::{allocate, allocate_immortal, Kind, TypeObject};
use crate::interned::InternTable;
use crate::scalars::Immortal;
use crate::slots::{Payload, Repr};
use crate::types::py_type;

py_type!(
    /// An immutable string, its hash computed once.
    PyStr, "str", Kind::Str, StrPayload
);

pub(crate) struct StrPayload {
    pub(crate) hash: u64,
    pub(crate) text: Box<str>,
}

impl StrPayload {
    pub(crate) fn new(text: &str) -> Self {
        Self {
            hash: hash_bytes(text.as_bytes()),
            text: text.into(),
        }
    }
}

impl Payload for StrPayload {
    fn repr(&self, _: Borrowed<'_>, f: &mut Formatter<'_>, _: &mut Repr<'_>) -> fmt::Result {
        write!(f, "{:?}", self.text)
    }

    fn hash(&self) -> Option<u64> {
        Some(self.hash)
    }

    fn eq(&self, _: Borrowed<'_>, other: Borrowed<'_>) -> bool {
        other.kind() == Kind::Str && other.to_str().is_ok_and(|other| other == &*self.text)
    }
}

pub(crate) static STR_TYPE: TypeObject = TypeObject::new::<StrPayload>("str", Kind::Str);

static INTERNED: LazyLock<InternTable> = LazyLock::new(InternTable::new);

/// A fast non-cryptographic hash (the FxHash recipe, 8 bytes at a time).
pub(crate) fn hash_bytes(bytes: &[u8]) -> u64 {
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

impl PyStr {
    /// A new string.
    pub fn new<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyStr> {
        let text = StrPayload::new(text);
        // SAFETY: a fresh string's one reference goes to the caller.
        // The count token is used at once, attached (checked as it is made).
        unsafe { Bound::from_owned(allocate(&STR_TYPE, text, py.new_object_token())) }
    }

    /// The interned (unique, immortal) string with this text.
    pub fn intern<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyStr> {
        // One look at the thread state: the cache is this thread's (none after its exit).
        let interned = INTERN_CACHE.with(py, |cache| match cache {
            Some(cache) => {
                let cached = cache.borrow().get(text).copied();
                cached.unwrap_or_else(|| {
                    let interned = intern_shared(text);
                    cache.borrow_mut().insert(text.into(), interned);
                    interned
                })
            }
            None => intern_shared(text),
        });
        // SAFETY: interned strings are immortal strings.
        unsafe { Bound::from_borrowed(py, interned.0) }
    }
}

impl Bound<'_, PyStr> {
    /// The text.
    #[inline]
    pub fn to_str(&self) -> &str {
        &self.payload().text
    }

    /// `len()`: the number of characters.
    pub fn len(&self) -> usize {
        self.to_str().chars().count()
    }

    /// Whether the string is empty.
    pub fn is_empty(&self) -> bool {
        self.to_str().is_empty()
    }
}

/// Each thread's interned strings by text, in its thread state: a lookup that reads only this
/// thread's memory, none of the shared table's. Dropped at the thread's exit (the strings are
/// immortal).
static INTERN_CACHE: ftrt_gil::local::Key<
    std::cell::RefCell<std::collections::HashMap<Box<str>, Immortal>>,
> = ftrt_gil::local::Key::new(Default::default);

impl PyStr {
    /// The same object as [`PyStr::intern`], looked up in the shared table every time (past
    /// this thread's cache): what a first interning costs, and what the `string-intern`
    /// workload measures.
    pub fn intern_in_shared_table<'py>(py: Python<'py>, text: &str) -> Bound<'py, PyStr> {
        ftrt_gil::assert_attached();
        // SAFETY: interned strings are immortal strings.
        unsafe { Bound::from_borrowed(py, intern_shared(text).0) }
    }
}

#[cold]
fn intern_shared(text: &str) -> Immortal {
    // SAFETY: `make` allocates an immortal string of `text`, whose hash is `hash_bytes`'s.
    unsafe {
        INTERNED.get_or_insert(text, hash_bytes(text.as_bytes()), || {
            allocate_immortal(&STR_TYPE, StrPayload::new(text))
        })
    }
}

/// How many strings are interned.
pub fn interned_count() -> usize {
    INTERNED.len()
}
