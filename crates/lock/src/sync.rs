//! std or loom atomics, so the loom models run the real lock code.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU8, Ordering};
