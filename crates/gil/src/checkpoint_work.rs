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
/// The works' requests.
static REQUESTS: Requests<AtomicBool, MAX_CHECKPOINT_WORKS> = Requests {
    wanted: [const { AtomicBool::new(false) }; MAX_CHECKPOINT_WORKS],
    any: AtomicBool::new(false),
};

/// An atomic flag: std's in the runtime, loom's in the models of [`Requests`].
#[doc(hidden)]
pub trait Flag {
    fn load(&self, order: Ordering) -> bool;
    fn swap(&self, value: bool, order: Ordering) -> bool;
}

impl Flag for AtomicBool {
    #[inline(always)]
    fn load(&self, order: Ordering) -> bool {
        AtomicBool::load(self, order)
    }
    fn swap(&self, value: bool, order: Ordering) -> bool {
        AtomicBool::swap(self, value, order)
    }
}

#[cfg(loom)]
impl Flag for loom::sync::atomic::AtomicBool {
    fn load(&self, order: Ordering) -> bool {
        loom::sync::atomic::AtomicBool::load(self, order)
    }
    fn swap(&self, value: bool, order: Ordering) -> bool {
        loom::sync::atomic::AtomicBool::swap(self, value, order)
    }
}

/// The request protocol alone, public for its loom models (`tests/loom_checkpoint_work.rs`):
/// each work's flag, raised by a request and lowered by the checkpoint that runs the work, and
/// the one flag a checkpoint reads, raised after any work's own.
#[doc(hidden)]
pub struct Requests<F, const N: usize> {
    wanted: [F; N],
    any: F,
}

impl<F: Flag, const N: usize> Requests<F, N> {
    /// Requests made of these flags, all lowered.
    pub fn from_flags(wanted: [F; N], any: F) -> Self {
        Requests { wanted, any }
    }

    /// Asks for work `slot`: two swaps.
    pub fn request(&self, slot: usize) {
        // A swap, not a store: every access to a work's flag is a read-modify-write, which
        // reads the flag's latest value, so its history is one line; loom checks such histories
        // exactly (it may order a plain store beside a racing swap, both last).
        self.wanted[slot].swap(true, Ordering::Relaxed);
        // Release, and a read-modify-write: the checkpoint that lowers this flag (Acquire)
        // finds the work's own flag raised, so no request is lost between the two. A plain
        // store would not do: a checkpoint that read a later request's store would synchronise
        // with that request alone, and could miss this one's flag.
        self.any.swap(true, Ordering::Release);
    }

    /// Whether some work is wanted (a relaxed load: the checkpoint's test).
    #[inline(always)]
    pub fn wanted(&self) -> bool {
        self.any.load(Ordering::Relaxed)
    }

    /// Runs `run` for each work wanted, on the first thread to lower the flag; `false` if none
    /// was. Works asked for while it runs raise the flag again, for a later call. Should `run`
    /// panic, the works not yet run stay wanted, and the flag is raised again for them.
    pub fn run_wanted(&self, mut run: impl FnMut(usize)) -> bool {
        if !(self.wanted() && self.any.swap(false, Ordering::Acquire)) {
            return false;
        }
        /// If a work panics, the works not yet run stay wanted, for the next checkpoint.
        struct AskAgainOnUnwind<'a, F: Flag>(&'a F);
        impl<F: Flag> Drop for AskAgainOnUnwind<'_, F> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    // A read-modify-write, as in `request`: a plain store would end the release
                    // sequence of other threads' requests, and a checkpoint that read it could
                    // miss their works' flags.
                    self.0.swap(true, Ordering::Release);
                }
            }
        }
        let _again = AskAgainOnUnwind(&self.any);
        for (slot, wanted) in self.wanted.iter().enumerate() {
            if wanted.swap(false, Ordering::Relaxed) {
                run(slot);
            }
        }
        true
    }
}

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
    /// swaps. In the free-threaded builds a checkpoint looks every 16th time (with its repin);
    /// in the `gil` build every time.
    pub fn request(self) {
        REQUESTS.request(self.slot);
    }
}

/// Whether some work is wanted (a relaxed load: the checkpoint's test).
#[inline(always)]
pub(crate) fn wanted() -> bool {
    REQUESTS.wanted()
}

/// Runs the works wanted, on the first thread to lower the flag. A work requested while they
/// run raises the flag again, for a later checkpoint.
pub(crate) fn run(py: Python<'_>) {
    REQUESTS.run_wanted(|slot| {
        // Requested only through a handle, which only a registration makes.
        if let Some(work) = WORKS[slot].get() {
            work(py);
        }
    });
}
