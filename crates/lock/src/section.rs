//! Critical sections over one or two objects' locks, in the style of PEP 703.
//!
//! A critical section locks an object's [`RawObjectLock`] for the duration of a closure. Unlike
//! plain mutexes, sections cannot deadlock, however they nest:
//!
//! - Each thread keeps a stack of its sections. When beginning a section would block, the thread
//!   first *suspends* every active section (unlocks their locks), then blocks. A blocked thread
//!   therefore holds at most the locks of the section it is entering, taken in address order,
//!   so no cycle of waiting threads can form.
//! - A suspended section is *resumed* (its locks retaken) when it becomes the innermost again,
//!   i.e. when the sections nested in it end. At that point the thread holds no other section
//!   lock, so resuming is just another blocking acquisition, as deadlock-free as the first.
//! - Detaching from the runtime (`allow_threads` in `ftrt-gil`) suspends all sections too, and
//!   attaching again resumes the innermost.
//!
//! The price, as in CPython: an outer section is atomic only between the points where an inner
//! section (or a detach) blocked. Code inside a section should treat nested sections and
//! blocking calls like releases of the outer objects.
//!
//! A two-object section locks both objects in address order and accepts the same object twice.
//! A panic inside a section ends it normally: its locks are released and the object stays usable.
//!
//! In the `gil` build every section is just a call of the closure: the GIL already serialises
//! everything the sections would protect.
//!
//! ```
//! use ftrt_lock::{section, RawObjectLock};
//!
//! let (from, to) = (RawObjectLock::new(), RawObjectLock::new());
//! let moved = section::with2(&from, &to, || "both objects are locked here");
//! assert_eq!(moved, "both objects are locked here");
//! ```

use crate::RawObjectLock;

/// Runs `f` inside a critical section on `lock`.
#[inline]
pub fn with<R>(lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    imp::with([lock, lock], f)
}

/// Runs `f` inside a critical section on two locks, taken in a consistent order. The same lock
/// may be passed twice.
#[inline]
pub fn with2<R>(a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    imp::with([a, b], f)
}

/// Unlocks every active section of the calling thread, before it blocks or detaches from the
/// runtime. They are resumed one by one as they become innermost; [`resume_innermost`] resumes
/// the innermost now.
pub fn suspend_all() {
    imp::suspend_all()
}

/// Re-locks the calling thread's innermost section if it is suspended, after it attaches again.
pub fn resume_innermost() {
    imp::resume_innermost()
}

/// How many sections the calling thread has open (active or suspended), and how many of them
/// hold their locks right now.
pub fn depth() -> SectionDepth {
    imp::depth()
}

/// The calling thread's sections: see [`depth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SectionDepth {
    /// Sections begun and not yet ended.
    pub open: usize,
    /// Of those, the ones holding their locks now.
    pub active: usize,
}

#[cfg(feature = "gil")]
mod imp {
    use super::SectionDepth;
    use crate::RawObjectLock;

    #[inline(always)]
    pub(super) fn with<R>(_locks: [&RawObjectLock; 2], f: impl FnOnce() -> R) -> R {
        f()
    }
    pub(super) fn suspend_all() {}
    pub(super) fn resume_innermost() {}
    pub(super) fn depth() -> SectionDepth {
        SectionDepth::default()
    }
}

#[cfg(not(feature = "gil"))]
mod imp {
    use std::cell::RefCell;

    use super::SectionDepth;
    use crate::RawObjectLock;

    /// One open section. The locks are raw pointers because the stack is thread-local; each is
    /// valid while its section is open, which `with` guarantees by borrowing the locks for the
    /// whole call.
    #[derive(Clone, Copy)]
    struct Section {
        /// Lower address first; both the same for a one-object section.
        locks: [*const RawObjectLock; 2],
        active: bool,
    }

    impl Section {
        fn locks(&self) -> [&RawObjectLock; 2] {
            // SAFETY: the section is open, so its locks are still borrowed by its `with` frame.
            self.locks.map(|lock| unsafe { &*lock })
        }
    }

    #[cfg(not(loom))]
    thread_local! {
        static STACK: RefCell<Vec<Section>> = const { RefCell::new(Vec::new()) };
    }
    #[cfg(loom)]
    loom::thread_local! {
        static STACK: RefCell<Vec<Section>> = RefCell::new(Vec::new());
    }

    /// Lower address first: every thread takes a pair of locks in the same order.
    fn ordered([a, b]: [&RawObjectLock; 2]) -> [&RawObjectLock; 2] {
        if std::ptr::from_ref(a) <= std::ptr::from_ref(b) {
            [a, b]
        } else {
            [b, a]
        }
    }

    fn try_lock_all([first, second]: [&RawObjectLock; 2]) -> bool {
        if !first.try_lock() {
            return false;
        }
        if std::ptr::eq(first, second) || second.try_lock() {
            return true;
        }
        // SAFETY: taken just above.
        unsafe { first.unlock() };
        false
    }

    fn lock_all([first, second]: [&RawObjectLock; 2]) {
        first.lock();
        if !std::ptr::eq(first, second) {
            second.lock();
        }
    }

    /// # Safety
    /// The calling context holds both locks.
    unsafe fn unlock_all([first, second]: [&RawObjectLock; 2]) {
        if !std::ptr::eq(first, second) {
            // SAFETY: held, per the caller.
            unsafe { second.unlock() };
        }
        // SAFETY: held, per the caller.
        unsafe { first.unlock() };
    }

    /// Takes a section's locks, suspending the thread's other sections first if that would
    /// block.
    #[inline]
    fn acquire(locks: [&RawObjectLock; 2]) {
        if !try_lock_all(locks) {
            acquire_slow(locks);
        }
    }

    #[cold]
    #[inline(never)]
    fn acquire_slow(locks: [&RawObjectLock; 2]) {
        suspend_all();
        lock_all(locks);
    }

    /// Ends the innermost section on drop, panics included.
    struct End;

    impl Drop for End {
        fn drop(&mut self) {
            let section = STACK
                .with(|stack| stack.borrow_mut().pop())
                .expect("sections end innermost first");
            if section.active {
                // SAFETY: an active section holds its locks.
                unsafe { unlock_all(section.locks()) };
            }
            resume_innermost();
        }
    }

    #[inline]
    pub(super) fn with<R>(locks: [&RawObjectLock; 2], f: impl FnOnce() -> R) -> R {
        let locks = ordered(locks);
        acquire(locks);
        let locks = locks.map(std::ptr::from_ref);
        STACK.with(|stack| {
            stack.borrow_mut().push(Section {
                locks,
                active: true,
            })
        });
        let _end = End;
        f()
    }

    // `suspend_all`, `resume_innermost` and `depth` run when a thread detaches or attaches, which
    // also happens inside thread-local destructors (dropping a `Shared` kept in a thread-local
    // attaches), possibly after `STACK` was torn down. A torn-down stack holds no section:
    // sections are scoped to their `with` frames, which have all returned by then.

    pub(super) fn suspend_all() {
        let _ = STACK.try_with(|stack| {
            for section in stack.borrow_mut().iter_mut().filter(|s| s.active) {
                // SAFETY: an active section holds its locks.
                unsafe { unlock_all(section.locks()) };
                section.active = false;
            }
        });
    }

    pub(super) fn resume_innermost() {
        let suspended = STACK
            .try_with(|stack| stack.borrow().last().copied().filter(|s| !s.active))
            .ok()
            .flatten();
        if let Some(section) = suspended {
            // Every other section is suspended too, so this blocks holding nothing.
            acquire(section.locks());
            STACK.with(|stack| stack.borrow_mut().last_mut().expect("still open").active = true);
        }
    }

    pub(super) fn depth() -> SectionDepth {
        STACK
            .try_with(|stack| {
                let stack = stack.borrow();
                SectionDepth {
                    open: stack.len(),
                    active: stack.iter().filter(|s| s.active).count(),
                }
            })
            .unwrap_or_default()
    }
}
