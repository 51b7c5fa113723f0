//! The lock and the sections, as specifications of behaviour.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::raw::wait_log::{self, WaitLog, WaitStep};
use crate::raw::{fairness, LOCKED, PARKED};
use crate::section::{AfterWait, SectionWait};
use crate::{section, Mutex, NotLocked, RawObjectLock, RawThreadingLock, Spin, HANDOFF_AFTER};

mod lock;
mod sections;
mod threading;

/// Waits until a thread is parked on `lock` and returns when it started waiting.
fn parked_waiter_since(lock: &RawObjectLock) -> usize {
    loop {
        if let Some(&since) = lock.parked_waiters_since().first() {
            return since;
        }
        thread::yield_now();
    }
}

/// Holds `lock` on another thread until `release` is raised, then lets it go.
pub(crate) fn hold_until(
    lock: &'static RawObjectLock,
    release: &'static AtomicBool,
) -> thread::JoinHandle<()> {
    release.store(false, Ordering::SeqCst);
    let (held, wait_for_held) = std::sync::mpsc::channel();
    let holder = thread::spawn(move || {
        lock.lock();
        held.send(()).unwrap();
        while !release.load(Ordering::SeqCst) {
            thread::yield_now();
        }
        // SAFETY: locked above, on this thread.
        unsafe { lock.unlock() };
    });
    wait_for_held.recv().unwrap();
    holder
}
