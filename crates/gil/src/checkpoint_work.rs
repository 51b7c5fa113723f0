//! Work a crate asks the next attached thread to run at a checkpoint ([`Python::check`]):
//! CPython's "eval breaker", for work that must not run where it is noticed (an allocation
//! inside a critical section, with a container half-changed) but at a point where the thread
//! holds no object half-changed.
//!
//! Each crate registers its own work once and asks for it through the handle it got back, so
//! one crate's registration never takes the place of another's. A request runs its work once,
//! on the first thread to reach a checkpoint after it; requests made before that run merge
//! into one.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::OnceLock;
//! use ftrt_gil::{CheckpointWork, Python};
//!
//! static RAN: AtomicUsize = AtomicUsize::new(0);
//! static WORK: OnceLock<Option<CheckpointWork>> = OnceLock::new();
//!
//! let work = WORK
//!     .get_or_init(|| CheckpointWork::register(|_py| {
//!         RAN.fetch_add(1, Ordering::Relaxed);
//!     }))
//!     .expect("a free slot");
//! Python::attach(|py| {
//!     work.request();
//!     work.request();
//!     // Free-threaded builds look every 16th checkpoint.
//!     for _ in 0..16 {
//!         py.check();
//!     }
//! });
//! assert_eq!(RAN.load(Ordering::Relaxed), 1);
//! ```
//!
//! [`Python::check`]: crate::Python::check

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::Python;

/// How many works can be registered, over the whole process.
pub const MAX_CHECKPOINT_WORKS: usize = 8;

static WORKS: [OnceLock<for<'py> fn(Python<'py>)>; MAX_CHECKPOINT_WORKS] =
    [const { OnceLock::new() }; MAX_CHECKPOINT_WORKS];
/// Each work's request, raised by [`CheckpointWork::request`], lowered by the checkpoint that
/// runs it.
static WANTED: [AtomicBool; MAX_CHECKPOINT_WORKS] =
    [const { AtomicBool::new(false) }; MAX_CHECKPOINT_WORKS];
/// Raised after any work's own flag: the one flag a checkpoint reads.
static ANY_WANTED: AtomicBool = AtomicBool::new(false);

/// A registered checkpoint work: the handle that asks for it. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointWork {
    slot: usize,
}

impl CheckpointWork {
    /// Registers `work`, run on an attached thread at a checkpoint after each
    /// [`request`](Self::request). `None` (nothing registered) if [`MAX_CHECKPOINT_WORKS`]
    /// works are registered already. Registering the same function twice registers two works:
    /// register once, and keep the handle.
    ///
    /// `work` runs attached, outside any stop of the world (a checkpoint inside a stop runs
    /// nothing: the work waits for the first checkpoint after it), and may stop the world
    /// itself. A panic in it unwinds out of the checkpoint that ran it; the works requested
    /// after it in the table run at the next checkpoint.
    pub fn register(work: for<'py> fn(Python<'py>)) -> Option<Self> {
        // Slots fill in order: a `set` racing another on the same slot waits for it and moves on.
        WORKS.iter().enumerate().find_map(|(slot, cell)| {
            let mut registered = false;
            cell.get_or_init(|| {
                registered = true;
                work
            });
            registered.then_some(CheckpointWork { slot })
        })
    }

    /// Asks the next attached thread to reach a checkpoint to run this work, once. Cheap: two
    /// stores. In the free-threaded builds a checkpoint looks every 16th time (with its repin);
    /// in the `gil` build every time.
    pub fn request(self) {
        WANTED[self.slot].store(true, Ordering::Relaxed);
        // Release, and a read-modify-write: the checkpoint that lowers this flag (Acquire)
        // finds the work's own flag raised, so no request is lost between the two. A plain
        // store would not do: a checkpoint that read a later request's store would synchronise
        // with that request alone, and could miss this one's flag.
        ANY_WANTED.swap(true, Ordering::Release);
    }
}

/// Whether some work is wanted (a relaxed load: the checkpoint's test).
#[inline(always)]
pub(crate) fn wanted() -> bool {
    ANY_WANTED.load(Ordering::Relaxed)
}

/// Runs the works wanted, on the first thread to lower the flag. A work requested while they
/// run raises the flag again, for a later checkpoint.
pub(crate) fn run(py: Python<'_>) {
    if !(wanted() && ANY_WANTED.swap(false, Ordering::Acquire)) {
        return;
    }
    /// If a work panics, the works not yet run stay wanted, for the next checkpoint.
    struct AskAgainOnUnwind;
    impl Drop for AskAgainOnUnwind {
        fn drop(&mut self) {
            if std::thread::panicking() {
                // A read-modify-write, as in `request`: a plain store would end the release
                // sequence of other threads' requests, and a checkpoint that read it could miss
                // their works' flags.
                ANY_WANTED.swap(true, Ordering::Release);
            }
        }
    }
    let _again = AskAgainOnUnwind;
    for (slot, work) in WORKS.iter().enumerate() {
        let Some(work) = work.get() else { break };
        if WANTED[slot].swap(false, Ordering::Relaxed) {
            work(py);
        }
    }
}
