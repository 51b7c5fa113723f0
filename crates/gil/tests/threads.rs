//! Threads attaching to the runtime: the GIL's switching, `allow_threads`, thread exit and the
//! `threading` objects, run in every build variant (and under ThreadSanitizer by
//! `cargo xtask tsan`).
//!
//! A few waits are bounded by a generous deadline so that a regression (a GIL that is never
//! released) fails the test instead of hanging it; no test asserts how fast anything is.

mod common;
// The tests, in a folder: a `.rs` file beside this one would be a test target of its own.
#[path = "threads/exit.rs"]
mod exit;
#[path = "threads/gil.rs"]
mod gil;
#[path = "threads/sections.rs"]
mod sections;
#[path = "threads/threading.rs"]
mod threading;

#[cfg(feature = "gil")]
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;
#[cfg(feature = "gil")]
use std::time::Instant;

use ftrt_gil::threading::{Barrier, Event, Lock, NoParties, ReleaseUnlocked, Semaphore};
use ftrt_gil::{registered_threads, threads, Python};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long a test waits for something that must happen before calling it a hang.
const HANG: Duration = Duration::from_secs(30);

/// Runs `f` on a new thread and fails if it does not finish within `HANG`.
fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = mpsc::channel();
    thread::spawn(move || done.send(f()).unwrap());
    result
        .recv_timeout(HANG)
        .unwrap_or_else(|_| panic!("{what} did not finish: the GIL was not released"))
}

/// Yields until `done`: for a state another thread reaches (tests run under `finishes`, whose
/// deadline fails one that never comes).
fn spin_until(done: impl Fn() -> bool) {
    while !done() {
        thread::yield_now();
    }
}
