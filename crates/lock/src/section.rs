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
//! - Detaching from the runtime ([`detached`], which `allow_threads` in `ftrt-gil` uses)
//!   suspends all sections too and sets a *detach boundary*: the sections open at that point stay
//!   suspended until the detach ends, even when a section begun while detached ends (its end
//!   resumes only sections begun after the boundary). When the detach ends, the innermost
//!   section is resumed. So a detached thread holds no lock of the sections it was in, and a
//!   thread it waits for can take them.
//! - Attaching does not touch the sections: sections begun before an attachment (on a thread
//!   that was not attached) are left as they are, while it runs and when it ends.
//! - A runtime can have a stack block *its* way ([`SectionStack::set_blocking_wait`],
//!   [`set_blocking_wait`] for the sections of this module's thread-local functions, [`with`] and
//!   the rest, [`set_stackless_blocking_wait`] for a runtime's sections given no stack,
//!   [`with_on`]'s; with no hook a section waits in place): detached from
//!   the runtime, as CPython's `PyMutex` detaches a thread that blocks. Then a thread that waits
//!   for a section's lock never holds up other threads of the runtime (its GIL, or a stop of the
//!   world), so a thread that holds that lock and attaches before letting it go gets through.
//!
//! The price, as in CPython: an outer section is atomic only between the points where an inner
//! section (or a detach) blocked. Code inside a section should treat nested sections and
//! blocking calls like releases of the outer objects.
//!
//! A two-object section locks both objects in address order and accepts the same object twice.
//! A panic inside a section ends it normally: its locks are released and the object stays usable.
//!
//! Each thread's sections live in a [`SectionStack`], a plain value: a runtime keeps one in its
//! own per-thread state and calls its methods ([`SectionStack::with`], [`SectionStack::detached`]).
//! The free functions of this module ([`with`], [`with2`], [`detached`], [`depth`]) are the
//! thread-local convenience over the same mechanism: they use one stack per thread, the thread's
//! stack. A runtime whose threads may also take sections through them holds that stack
//! ([`claim_thread_stack`]) rather than a stack of its own, so that every section of a thread goes
//! on one stack: sections on two stacks suspend only their own stack's sections when they wait, and
//! a thread that nests the two on the same locks may wait for itself. [`with_on`] takes the stack
//! and the lock as options (a runtime's stack, or none where the runtime keeps none for the
//! thread; a lock, or none for an object that needs none) and calls its closure from one place
//! whichever they are.
//!
//! A section locks unless its stack was told, by an `unsafe` call, that no other thread can take
//! its locks ([`SectionStack::start_eliding`]): a runtime that knows it is the only thread touching
//! its objects skips the two atomic operations of every section, and the stack records the
//! *elided* sections so that they lock for real when it stops eliding (or, through the `unsafe`
//! [`with_on_unrecorded`], records nothing for a section whose caller promises the elision
//! outlasts it). This module knows nothing
//! of a GIL or of which threads run, and no feature changes it: the free functions below always
//! lock.
//!
//! ```
//! use ftrt_lock::{section, RawObjectLock};
//!
//! let (from, to) = (RawObjectLock::new(), RawObjectLock::new());
//! let moved = section::with2(&from, &to, || "both objects are locked here");
//! assert_eq!(moved, "both objects are locked here");
//! ```

use crate::RawObjectLock;

use imp::THREAD_API;
pub use imp::{SectionStack, ThreadStack};
pub use wait::SectionWait;

mod wait;

/// How a stack blocks for a section's locks, if it has to ([`SectionStack::set_blocking_wait`]):
/// called with the section's wait ([`SectionWait`]), through which it takes the locks, around
/// whatever the runtime does while its thread blocks (detaching from it, and attaching again
/// after): at once ([`SectionWait::wait`]), or in tries by a deadline
/// ([`SectionWait::wait_until`]), doing what the runtime needs between two tries (letting a
/// stop of the world through). By then the stack's other sections are suspended, behind a
/// detach boundary (as in [`detached`]): sections the hook begins and ends on the same stack do
/// not resume them. They must end before the hook takes the locks: run inside one, the wait
/// blocks holding its lock, and the thread that holds the lock waited for may be waiting for
/// that one (the deadlock the suspension is there to rule out).
///
/// A hook that returns without the locks costs nothing but the detour: the stack takes them itself
/// afterwards. While the wait holds any of them (all, or the first of two, which a try that gave up
/// on the second keeps until [`SectionWait::give_back`]), the hook holds them, and the stack
/// records them only once the hook returns: meanwhile it must not begin a section (one that blocks
/// there suspends nothing, and waits holding those locks, which no other thread's section can then
/// take), only come back to the runtime (attach again), which is what the part after the wait is
/// for. Work that may begin sections or detach goes in the [`AfterWait`]
/// the hook returns, which runs once the section is recorded. A hook that panics aborts the
/// process: a section's wait has no way to fail (a resume runs in the drop of a section that ended,
/// perhaps while unwinding, and the section around it would go on without its lock).
pub type BlockingWait = fn(wait: &mut SectionWait<'_>) -> Option<AfterWait>;

/// What a [`BlockingWait`] hook leaves to run once the section that waited is recorded (begun,
/// or resumed) and holds its locks, before its body runs on: it may do what a section's body
/// may, begin sections and detach (a detach suspends the section, which the stack now knows
/// of). A panic in it aborts the process, as one in the hook does.
pub type AfterWait = fn();

/// Sets how the sections of this module's thread-local functions ([`with`], [`with2`]; not a
/// runtime's sections given no stack, [`with_on`]'s: [`set_stackless_blocking_wait`]) block on the
/// calling thread, replacing the hook set before: see [`SectionStack::set_blocking_wait`], which
/// sets the hook of the stack's own sections apart from this one ([`claim_thread_stack`]). (A
/// runtime sets it for its threads: `ftrt-gil` does for every thread it registers.) The hook stays
/// the thread's for the whole of its exit: a stack made after the thread's first one is freed (by a
/// section in a thread-local destructor late in the thread's exit) blocks through it too.
pub fn set_blocking_wait(hook: Option<BlockingWait>) {
    imp::set_thread_blocking_wait(hook);
}

/// Sets how a runtime's sections given no stack ([`with_on`], [`with2_on`] given `None`) block
/// on the calling thread, replacing the hook set before: with none (the default) they wait in
/// place; through a hook, as a stack's own sections wait through
/// [`SectionStack::set_blocking_wait`]'s. Apart from the thread-local functions' hook
/// ([`set_blocking_wait`]): the runtime's sections and its users' may have to wait differently
/// (see [`with_on`]). A runtime sets it for its threads (`ftrt-gil` does for every thread it
/// registers, for the sections it takes after the thread's exit), and it stays the thread's for
/// the whole of its exit, as [`set_blocking_wait`]'s does.
pub fn set_stackless_blocking_wait(hook: Option<BlockingWait>) {
    imp::set_stackless_blocking_wait(hook);
}

/// Runs `f` inside a critical section on `lock`, on the calling thread's stack.
#[inline]
pub fn with<R>(lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    imp::with_thread_stack(|stack| stack.section::<THREAD_API, R>([lock, lock], f))
}

/// Runs `f` inside a critical section on two locks, taken in a consistent order. The same lock
/// may be passed twice.
#[inline]
pub fn with2<R>(a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
    imp::with_thread_stack(|stack| stack.section::<THREAD_API, R>([a, b], f))
}

/// Runs `f` inside a critical section on `lock` when one is given, recorded on `stack` as one of
/// its own sections; runs `f` as it is when `lock` is `None`. With no `stack`, the section is
/// recorded on the calling thread's stack (the thread-local functions' one), but it is still the
/// runtime's own: if it has to wait for its lock it waits through the thread's stackless hook
/// ([`set_stackless_blocking_wait`]; in place if none is set), not through
/// [`set_blocking_wait`]'s, and it never elides.
///
/// For a runtime that locks only some objects (it skips the lock of an object no other thread
/// can reach) or keeps its stack in its own per-thread state only where that state exists. The
/// point is that `f` is called from one place whichever case holds: a closure called from two
/// branches (a locked one, an unlocked one) is usually compiled as a function of its own, and on
/// a short section that call, and reloading the closure's captures, cost more than the lock.
///
/// Why not the thread-local functions' hook, where the runtime has no stack: that hook may wait
/// detached from the runtime (as `ftrt-gil`'s does, so that a thread waiting for a user's lock
/// never holds up a thread that attaches holding it), and so come back holding the lock and wait
/// to attach meanwhile (for a stop of the world, say). A runtime whose threads wait for the
/// locks of its own sections attached, because a holder gives them up where it detaches, would
/// then have holders that cannot give a lock up until the stop ends, and more of them the more
/// of its sections wait that way.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let lock = RawObjectLock::new();
/// assert!(section::with_on(None, Some(&lock), || lock.is_locked()));
/// assert!(!section::with_on(None, None, || lock.is_locked()));
/// ```
#[inline]
pub fn with_on<R>(
    stack: Option<&SectionStack>,
    lock: Option<&RawObjectLock>,
    f: impl FnOnce() -> R,
) -> R {
    imp::with_on::<true, R>(stack, lock, f)
}

/// [`with_on`], except that a section begun while its stack elides is not recorded at all: it
/// would take no lock, and with the caller's promise that the stack elides until `f` returns
/// nothing can need it to lock later, so there is nothing to record. That saves the push and pop
/// of the record and the end's check for a suspended section to resume, which on a short section
/// cost about as much as the two atomic operations elision saves. A section begun while the
/// stack does not elide is recorded and locks as [`with_on`]'s does. An unrecorded section does
/// not show in [`SectionStack::depth`].
///
/// ```
/// use ftrt_lock::section::{self, SectionStack};
/// use ftrt_lock::RawObjectLock;
///
/// let (stack, lock) = (SectionStack::new(), RawObjectLock::new());
/// // SAFETY: no other thread sees the lock; `f` below never stops the elision.
/// unsafe { stack.start_eliding() };
/// let f = || (lock.is_locked(), stack.depth().open);
/// assert_eq!(unsafe { section::with_on_unrecorded(Some(&stack), Some(&lock), f) }, (false, 0));
/// stack.stop_eliding();
/// assert_eq!(unsafe { section::with_on_unrecorded(Some(&stack), Some(&lock), f) }, (true, 1));
/// ```
///
/// Debug builds check the contract below where the section ends, and panic if it was broken.
///
/// # Safety
/// If `stack` is given (with `None` the section is on the thread's stack and never elides) and
/// elides when this is called, it keeps eliding until `f` returns: nothing `f` does, directly or
/// through what it calls, calls [`SectionStack::stop_eliding`] on it. (A runtime stops eliding
/// where its thread detaches, so `f` must not detach.) The exclusion the section then relies on
/// is the one [`SectionStack::start_eliding`]'s caller promised; were the elision to end inside
/// `f`, the section would run on without its lock once other threads may take it.
///
/// Always inlined, like the layers a runtime puts above it: a section wraps one short
/// container operation, and where the inliner kept one layer out of line, that call and its
/// saved registers cost a list append a twentieth of its time.
#[inline(always)]
pub unsafe fn with_on_unrecorded<R>(
    stack: Option<&SectionStack>,
    lock: Option<&RawObjectLock>,
    f: impl FnOnce() -> R,
) -> R {
    imp::with_on::<false, R>(stack, lock, f)
}

/// [`with_on`] on two locks, taken in a consistent order (the same lock may be passed twice),
/// always locked: recorded on `stack` as one of its own sections, or, with no `stack`, on the
/// calling thread's stack, waiting as [`with_on`]'s sections given no stack do.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
/// assert!(section::with2_on(None, &a, &b, || a.is_locked() && b.is_locked()));
/// ```
#[inline]
pub fn with2_on<R>(
    stack: Option<&SectionStack>,
    a: &RawObjectLock,
    b: &RawObjectLock,
    f: impl FnOnce() -> R,
) -> R {
    imp::with2_on(stack, [a, b], f)
}

/// Runs `f` with the calling thread's sections suspended, as a thread detaching from the runtime
/// must (`allow_threads` in `ftrt-gil`, and a GIL switch at a checkpoint).
///
/// Every active section is unlocked before `f` starts, and the ones open now stay suspended
/// until `f` returns: sections that `f` begins and ends never resume them (their end resumes
/// only sections begun inside `f`). When `f` returns, or panics, the innermost section outside
/// is locked again; the others as they become innermost, as usual.
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
/// section::with(&outer, || {
///     section::detached(|| {
///         section::with(&inner, || ());
///         // Detached: the section on `outer` stays suspended after the inner one ended.
///         assert!(!outer.is_locked());
///     });
///     assert!(outer.is_locked());
/// });
/// ```
#[inline]
pub fn detached<R>(f: impl FnOnce() -> R) -> R {
    imp::with_thread_stack(|stack| stack.detached(f))
}

/// How many sections the calling thread has open (active or suspended) on its thread-local
/// stack, and how many of them are active right now.
pub fn depth() -> SectionDepth {
    imp::with_thread_stack(SectionStack::depth)
}

/// The claim on the calling thread's stack, the one the functions of this module use, for a
/// runtime that keeps it in its own per-thread state instead of a stack of its own: its sections
/// (the stack's own methods, [`with_on`] given the stack) and those of this module's users on the
/// same thread then go on one stack, so a section that has to wait suspends all of them, and
/// sections of the two kinds nest on the same locks, in any order, without deadlock, as far as
/// this crate goes: a runtime whose hooks wait differently must keep them from adding a wait of
/// their own to the cycle (`ftrt-gil`'s in-place waits let a stop of the world through, since a
/// holder of a lock taken through this module's functions may wait to attach, holding it).
///
/// The two kinds differ in two ways. Each waits through its own hook: the stack's own sections
/// through [`SectionStack::set_blocking_wait`]'s, this module's through [`set_blocking_wait`]'s
/// (and a third kind, a runtime's sections given no stack, [`with_on`]'s, through
/// [`set_stackless_blocking_wait`]'s). And only the stack's own sections elide
/// ([`SectionStack::start_eliding`]): a runtime's promise covers the locks of its own objects, not
/// those of other users of this module.
///
/// There is one claim at a time (`None` while another lives on this thread): the stack's own
/// sections, its elision and its own hook are the claimant's, since its promise to
/// [`SectionStack::start_eliding`] covers every section of the stack's own. Two runtimes cannot
/// both claim one thread's stack.
///
/// The stack lives while the thread or a claim keeps it: a runtime that claims it through the
/// thread's exit keeps it, and keeps it the thread's, while the thread-locals around it are torn
/// down, in whatever order. When the thread's own hold goes (its thread-locals torn down), the
/// sections still open on the stack, which only a process exiting inside them leaves
/// (`std::process::exit` runs the calling thread's thread-local destructors from inside the
/// call), are abandoned ([`SectionStack::abandon_open_sections`]): their locks stay as they are,
/// and nothing the exit still runs on the stack unlocks or takes them again. (What the exit runs
/// before that teardown finds them as they were: a detach suspends a held one.)
///
/// ```
/// use ftrt_lock::{section, RawObjectLock};
///
/// let (mine, theirs) = (RawObjectLock::new(), RawObjectLock::new());
/// let stack = section::claim_thread_stack().expect("no other claim on this thread");
/// assert!(section::claim_thread_stack().is_none());
/// stack.with(&mine, || {
///     section::with(&theirs, || assert_eq!(stack.depth().open, 2));
///     // A section on a lock the thread holds already suspends the outer one, and resumes it.
///     section::with(&mine, || assert!(mine.is_locked()));
/// });
/// ```
pub fn claim_thread_stack() -> Option<ThreadStack> {
    ThreadStack::claim()
}

/// The calling thread's sections: see [`depth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SectionDepth {
    /// Sections begun and not yet ended.
    pub open: usize,
    /// Of those, the ones active now: holding their locks, or eliding them.
    pub active: usize,
    /// Of the active ones, those that took no lock: begun or resumed while the stack elides
    /// ([`SectionStack::start_eliding`]), by its own methods (never the functions of this
    /// module).
    pub elided: usize,
}

mod imp {
    use std::cell::{Cell, RefCell};
    use std::ptr::NonNull;

    use super::SectionDepth;
    use crate::RawObjectLock;

    /// One open section. The locks are raw pointers because the stack outlives the borrows; each
    /// is valid while its section is open, which `with` guarantees by borrowing the locks for the
    /// whole call.
    #[derive(Clone, Copy)]
    struct Section {
        /// Lower address first; both the same for a one-object section.
        locks: [*const RawObjectLock; 2],
        state: State,
        /// Which API began it, which decides how it waits and whether it may elide: see [`Api`].
        api: Api,
    }

    /// [`Api::Thread`] as the constant the generic functions take (`THREAD_API`).
    pub(super) const THREAD_API: bool = true;
    /// [`Api::Stack`] as that constant.
    pub(super) const STACK_API: bool = false;

    /// Which API began a section: the stack's own methods (a runtime's sections, on a stack it
    /// holds), the thread-local functions ([`with`](super::with) and the rest, on the thread's
    /// stack, which a runtime may hold too: [`claim_thread_stack`](super::claim_thread_stack)),
    /// or a runtime with no stack for the thread ([`with_on`](super::with_on) given none). A
    /// section waits through its API's hook (in place where none is set), and only the stack's
    /// own sections elide: the promise [`SectionStack::start_eliding`]'s caller makes covers the
    /// locks of its own sections, not those of the thread-local functions' users beside it.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum Api {
        /// [`SectionStack::with`], [`SectionStack::with2`], [`with_on`](super::with_on) given a
        /// stack: waits through [`SectionStack::set_blocking_wait`]'s hook, and may elide.
        Stack,
        /// The thread-local functions: wait through the thread's hook
        /// ([`set_blocking_wait`](super::set_blocking_wait)), and always lock.
        Thread,
        /// A runtime's own sections on the thread's stack, begun with no stack of the runtime's
        /// ([`with_on`](super::with_on) and [`with2_on`](super::with2_on) given none): wait
        /// through the thread's stackless hook
        /// ([`set_stackless_blocking_wait`](super::set_stackless_blocking_wait)), in place if
        /// none is set, and always lock.
        Stackless,
    }

    /// Whether a section holds its locks.
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    enum State {
        /// Active, holding its locks.
        Held,
        /// Active without its locks, begun or resumed while the stack elides: no other thread
        /// can take them until the stack stops eliding, which locks them.
        Elided,
        /// Not holding its locks: suspended until it is the innermost again.
        Suspended,
    }

    impl Section {
        fn is_active(&self) -> bool {
            self.state != State::Suspended
        }
    }

    impl Section {
        fn locks(&self) -> [&RawObjectLock; 2] {
            // SAFETY: the `with` frame that began the section has not returned (an open
            // section, or one just popped by that frame's end), so its locks are still
            // borrowed by that frame.
            self.locks.map(|lock| unsafe { &*lock })
        }
    }

    /// A thread's sections and detach boundaries.
    ///
    /// The active sections are always the innermost ones (a suffix of `open`): suspending
    /// suspends them all, and resuming only ever re-locks the innermost. So a thread that
    /// resumes a section holds no other section lock.
    struct Sections {
        /// Open sections, outermost first.
        open: Vec<Section>,
        /// One entry per `detached` call in progress, innermost last: how many sections were
        /// open when it began. Those stay suspended until it ends; ending a section resumes the
        /// next one only if that one was begun after the innermost boundary.
        boundaries: Vec<usize>,
    }

    impl Sections {
        /// The innermost section, if it is suspended and may be resumed now (it is not cut
        /// off by a detach boundary).
        fn resumable_innermost(&self) -> Option<Section> {
            let detached_below = self.boundaries.last().copied().unwrap_or(0);
            if self.open.len() <= detached_below {
                return None;
            }
            self.open.last().copied().filter(|s| !s.is_active())
        }
    }

    /// One thread's critical sections: the stack of open sections and detach boundaries that the
    /// deadlock-avoidance rules of [this module](super) work on.
    ///
    /// A plain value, so a runtime can keep it in its own per-thread state. It is neither `Send`
    /// nor `Sync`: it belongs to the thread whose sections it records. Every section of a thread
    /// should go through one stack: entering a section suspends only the sections of the stack it
    /// is entered on, so a thread that nests sections of two stacks may block holding the outer
    /// stack's locks.
    ///
    /// ```
    /// use ftrt_lock::section::SectionStack;
    /// use ftrt_lock::RawObjectLock;
    ///
    /// let stack = SectionStack::new();
    /// let lock = RawObjectLock::new();
    /// stack.with(&lock, || assert_eq!(stack.depth().active, 1));
    /// assert_eq!(stack.depth().open, 0);
    /// ```
    pub struct SectionStack {
        sections: RefCell<Sections>,
        /// Sections begun or resumed now take no lock: see [`start_eliding`](Self::start_eliding).
        eliding: Cell<bool>,
        /// How many times the stack began eliding: an unrecorded section checks, in debug
        /// builds, that the elision it began in is the one still under way when it ends
        /// (release builds do not check, and keep the stack as small as before).
        #[cfg(debug_assertions)]
        elisions: Cell<u32>,
        /// How this stack's own sections block: see [`set_blocking_wait`](Self::set_blocking_wait).
        /// (The thread-local functions' sections, which only the thread's stack holds, block
        /// through the thread's hook: [`set_blocking_wait`](super::set_blocking_wait).)
        blocking_wait: Cell<Option<super::BlockingWait>>,
    }

    impl Default for SectionStack {
        fn default() -> Self {
            Self::new()
        }
    }

    impl std::fmt::Debug for SectionStack {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("SectionStack")
                .field("depth", &self.depth())
                .finish()
        }
    }

    impl SectionStack {
        /// An empty stack.
        pub const fn new() -> Self {
            Self {
                sections: RefCell::new(Sections {
                    open: Vec::new(),
                    boundaries: Vec::new(),
                }),
                eliding: Cell::new(false),
                #[cfg(debug_assertions)]
                elisions: Cell::new(0),
                blocking_wait: Cell::new(None),
            }
        }

        /// From now on, a section of this stack that has to block for its locks (beginning, or
        /// resuming) spins a little, and then calls `hook` with the wait, once its other
        /// sections are suspended; `None` blocks in place, as a new stack does. For a runtime
        /// whose threads must not block while they take part in it: its hook detaches around
        /// the wait. Replaces the hook set before.
        pub fn set_blocking_wait(&self, hook: Option<super::BlockingWait>) {
            self.blocking_wait.set(hook);
        }

        /// From now on, sections begun or resumed on this stack take no lock (they are recorded
        /// as *elided*), until [`stop_eliding`](Self::stop_eliding). Sections holding their locks
        /// now keep them. For a runtime that knows, for a while, that it is the only thread
        /// touching the objects these locks guard: it skips two atomic operations per section.
        ///
        /// # Safety
        /// From this call until `stop_eliding` returns, no other thread touches what a
        /// [`RawObjectLock`] guards while a section of this stack that elided it runs: a section
        /// begun on this stack meanwhile, recorded or not
        /// ([`with_on_unrecorded`](super::with_on_unrecorded)), or one begun before that is
        /// suspended and resumed meanwhile (a resume while eliding comes back elided: it does
        /// not take the lock again). The caller keeps every other thread away from those
        /// objects (a runtime does it by keeping every other thread detached, and by calling
        /// `stop_eliding` before they may attach). Another thread may take such a lock meanwhile
        /// as long as it touches nothing under it until `stop_eliding` has returned: a detached
        /// thread's [`BlockingWait`](super::BlockingWait) takes the locks it waited for, and
        /// runs the section's body only once it has attached again.
        pub unsafe fn start_eliding(&self) {
            let _was_eliding = self.eliding.replace(true);
            #[cfg(debug_assertions)]
            if !_was_eliding {
                self.elisions.set(self.elisions.get().wrapping_add(1));
            }
        }

        /// Sections lock again, from now on and for the sections still open. If some active
        /// section is elided, this is a point where the sections are suspended, as when a nested
        /// section blocks: every active section gives up its locks, and the innermost takes its
        /// locks back (blocking holding no other section lock; the others as they become
        /// innermost). Locking the elided sections where they stand instead could deadlock: one
        /// may be nested on a lock that an outer section took before the stack began eliding.
        /// A stack that suspended its sections first (a runtime detaching) has nothing to lock.
        /// Does nothing on a stack that is not eliding.
        pub fn stop_eliding(&self) {
            if !self.eliding.replace(false) {
                return;
            }
            let elided = self
                .sections
                .borrow()
                .open
                .iter()
                .any(|s| s.state == State::Elided);
            if elided {
                self.suspend_all();
                self.resume_innermost();
            }
        }

        /// Leaves every open section as it stands, for good, and stops eliding: for a stack
        /// whose open sections never run on, their thread exiting inside them (`process::exit`).
        /// The elided sections keep holding no lock and the held ones keep theirs, as any section
        /// left open by an exit does, and a detach boundary above them all keeps whatever the
        /// exit still runs on this stack (a release that detaches, say) from suspending or
        /// resuming them: neither takes nor releases their locks again. Ending the elision with
        /// [`stop_eliding`](Self::stop_eliding) would take the innermost section's locks, and a
        /// lock guarding what the exit has already destroyed (a thread-local's) may be gone by
        /// then.
        ///
        /// What an elided section guards is open to other threads from the moment the caller
        /// lets them in (a runtime that held the world alone, once it leaves), its body half
        /// run: the price of not touching a lock that may be gone.
        ///
        /// # Safety
        /// No section open on this stack runs on or ends: their frames never return (an elided
        /// section's end would release a lock it does not hold, and a held one's would pop
        /// records past the boundary).
        pub unsafe fn abandon_open_sections(&self) {
            self.eliding.set(false);
            let mut sections = self.sections.borrow_mut();
            for section in &mut sections.open {
                // Not unlocked: a held section keeps its locks, an elided one has none.
                section.state = State::Suspended;
            }
            let open = sections.open.len();
            sections.boundaries.push(open);
        }

        /// Whether sections begun now take no lock (see [`start_eliding`](Self::start_eliding)).
        pub fn is_eliding(&self) -> bool {
            self.eliding.get()
        }

        /// Runs `f` inside a critical section on `lock`, recorded on this stack. Call it only on
        /// the thread the stack belongs to (the stack is not `Send`).
        #[inline]
        pub fn with<R>(&self, lock: &RawObjectLock, f: impl FnOnce() -> R) -> R {
            self.section::<STACK_API, R>([lock, lock], f)
        }

        /// Runs `f` inside a critical section on two locks, taken in a consistent order. The same
        /// lock may be passed twice.
        #[inline]
        pub fn with2<R>(&self, a: &RawObjectLock, b: &RawObjectLock, f: impl FnOnce() -> R) -> R {
            self.section::<STACK_API, R>([a, b], f)
        }

        /// Runs `f` with this stack's sections suspended behind a detach boundary: see
        /// [`detached`](super::detached).
        pub fn detached<R>(&self, f: impl FnOnce() -> R) -> R {
            self.suspend_all();
            self.push_boundary();
            let _reattach = Reattach(self);
            f()
        }

        /// How many sections are open on this stack (active or suspended), and how many of them
        /// are active, and elided, right now.
        pub fn depth(&self) -> SectionDepth {
            let sections = self.sections.borrow();
            SectionDepth {
                open: sections.open.len(),
                active: sections.open.iter().filter(|s| s.is_active()).count(),
                elided: sections
                    .open
                    .iter()
                    .filter(|s| s.state == State::Elided)
                    .count(),
            }
        }

        /// A section on this stack, of the thread-local functions if `THREAD_API` (see [`Api`]).
        #[inline]
        pub(super) fn section<const THREAD_API: bool, R>(
            &self,
            locks: [&RawObjectLock; 2],
            f: impl FnOnce() -> R,
        ) -> R {
            let _end = self.begin::<THREAD_API>(locks);
            f()
        }

        /// Begins a section on `locks`; it ends when the returned value drops. Private because
        /// the stack records the locks as raw pointers: the caller keeps `locks` borrowed until
        /// then, and drops the value in its own frame (never leaked, sections ending innermost
        /// first), as `section` and `with_on` do.
        ///
        /// The API is a constant, so that the stack's own sections' begin checks nothing of it.
        #[inline]
        fn begin<const THREAD_API: bool>(&self, locks: [&RawObjectLock; 2]) -> End<'_> {
            self.begin_as(locks, if THREAD_API { Api::Thread } else { Api::Stack })
        }

        /// [`begin`](Self::begin) for a section of `api`: inlined into it, so that a constant
        /// `api` costs no test.
        #[inline(always)]
        fn begin_as(&self, locks: [&RawObjectLock; 2], api: Api) -> End<'_> {
            let locks = ordered(locks);
            let (state, after_wait) = self.take(locks, api);
            let locks = locks.map(std::ptr::from_ref);
            self.sections
                .borrow_mut()
                .open
                .push(Section { locks, state, api });
            // Made first: the section is recorded, and ends with it.
            let end = End(self);
            // `None` on every path but the hook's wait, so the fast path drops the check.
            if let Some(after_wait) = after_wait {
                run_after_wait(after_wait);
            }
            end
        }

        /// Takes a section's locks, or elides them while the stack elides (the stack's own
        /// sections only); the section's state, and what its API's hook left to run once the
        /// section is recorded, if it waited through the hook ([`AfterWait`](super::AfterWait)).
        #[inline]
        fn take(&self, locks: [&RawObjectLock; 2], api: Api) -> (State, Option<super::AfterWait>) {
            if self.eliding.get() && api == Api::Stack {
                return (State::Elided, None);
            }
            (State::Held, self.acquire(locks, api))
        }

        /// Takes a section's locks, suspending the stack's other sections first if that would
        /// block; what the hook left to run, if it waited through one.
        #[inline]
        fn acquire(&self, locks: [&RawObjectLock; 2], api: Api) -> Option<super::AfterWait> {
            if try_lock_all(locks) {
                None
            } else {
                self.acquire_slow(locks, api)
            }
        }

        #[cold]
        #[inline(never)]
        fn acquire_slow(&self, locks: [&RawObjectLock; 2], api: Api) -> Option<super::AfterWait> {
            self.suspend_all();
            let hook = match api {
                Api::Stack => self.blocking_wait.get(),
                // Begun by the thread-local functions, so on the calling thread's stack.
                Api::Thread => thread_blocking_wait(),
                Api::Stackless => stackless_blocking_wait(),
            };
            match hook {
                // Taken the one way a hook's wait takes them too.
                None => {
                    super::SectionWait::new(locks).wait();
                    None
                }
                // The lock spins before it parks; the hook's detour costs more than parking, so
                // spin before it too.
                Some(_) if crate::spin::retry(|| try_lock_all(locks)) => None,
                Some(hook) => self.wait_in(hook, locks),
            }
        }

        /// Takes `locks` inside `hook`, exactly once whatever the hook does (see
        /// [`BlockingWait`](super::BlockingWait)), behind a detach boundary; what the hook
        /// left to run once the section is recorded.
        fn wait_in(
            &self,
            hook: super::BlockingWait,
            locks: [&RawObjectLock; 2],
        ) -> Option<super::AfterWait> {
            self.push_boundary();
            let unwinding = AbortOnUnwind("a critical section's blocking wait");
            let mut wait = super::SectionWait::new(locks);
            let after_wait = hook(&mut wait);
            std::mem::forget(unwinding);
            // The boundary goes without resuming anything: the section that waits resumes (or
            // begins) once the locks are taken.
            self.sections.borrow_mut().boundaries.pop();
            wait.wait();
            after_wait
        }

        /// Sets a detach boundary above the sections open now: they stay suspended until it
        /// is removed (see [`Sections::resumable_innermost`]).
        fn push_boundary(&self) {
            let mut sections = self.sections.borrow_mut();
            let open = sections.open.len();
            sections.boundaries.push(open);
        }

        /// Unlocks every active section, before the thread blocks or detaches.
        fn suspend_all(&self) {
            let mut sections = self.sections.borrow_mut();
            for section in sections.open.iter_mut().filter(|s| s.is_active()) {
                if section.state == State::Held {
                    // SAFETY: a held section holds its locks.
                    unsafe { unlock_all(section.locks()) };
                }
                section.state = State::Suspended;
            }
        }

        /// Re-locks the innermost section if it is suspended and not cut off by a detach
        /// boundary.
        fn resume_innermost(&self) {
            // Not borrowed across `acquire`: if it has to block, it suspends the stack's sections
            // first, which borrows them.
            let suspended = self.sections.borrow().resumable_innermost();
            if let Some(section) = suspended {
                // Every other section is suspended too (the active ones are a suffix), so this
                // blocks holding no section lock: as deadlock-free as beginning a section.
                let (state, after_wait) = self.take(section.locks(), section.api);
                self.sections
                    .borrow_mut()
                    .open
                    .last_mut()
                    .expect("still open")
                    .state = state;
                if let Some(after_wait) = after_wait {
                    run_after_wait(after_wait);
                }
            }
        }
    }

    /// Aborts the process if dropped while unwinding out of what it guards (it is forgotten on
    /// the way out otherwise): a section's wait has no way to fail (see
    /// [`BlockingWait`](super::BlockingWait)).
    struct AbortOnUnwind(&'static str);

    impl Drop for AbortOnUnwind {
        fn drop(&mut self) {
            eprintln!("{} panicked; aborting", self.0);
            std::process::abort();
        }
    }

    /// Runs a hook's [`AfterWait`](super::AfterWait), aborting if it panics.
    #[cold]
    #[inline(never)]
    fn run_after_wait(after_wait: super::AfterWait) {
        let unwinding = AbortOnUnwind("the work after a critical section's blocking wait");
        after_wait();
        std::mem::forget(unwinding);
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

    /// # Safety
    /// The calling context holds both locks.
    pub(super) unsafe fn unlock_all([first, second]: [&RawObjectLock; 2]) {
        if !std::ptr::eq(first, second) {
            // SAFETY: held, per the caller.
            unsafe { second.unlock() };
        }
        // SAFETY: held, per the caller.
        unsafe { first.unlock() };
    }

    /// Ends the innermost section on drop, panics included.
    struct End<'s>(&'s SectionStack);

    impl Drop for End<'_> {
        fn drop(&mut self) {
            let section = self
                .0
                .sections
                .borrow_mut()
                .open
                .pop()
                .expect("sections end innermost first");
            if section.state == State::Held {
                // SAFETY: a held section holds its locks.
                unsafe { unlock_all(section.locks()) };
            }
            self.0.resume_innermost();
        }
    }

    /// Checks, in debug builds, that an unrecorded section ends in the elision it began in:
    /// `with_on_unrecorded`'s contract, which a body that ended the elision (a runtime's body
    /// that detached) breaks, leaving the section to run on without its lock.
    #[cfg(debug_assertions)]
    struct ElisionKept<'s>(&'s SectionStack, u32);

    #[cfg(debug_assertions)]
    impl Drop for ElisionKept<'_> {
        fn drop(&mut self) {
            let kept = self.0.eliding.get() && self.0.elisions.get() == self.1;
            if !kept && !std::thread::panicking() {
                panic!("an unrecorded section outlived the elision it began in");
            }
        }
    }

    /// Removes the innermost detach boundary and resumes the section under it, on drop, panics
    /// included.
    struct Reattach<'s>(&'s SectionStack);

    impl Drop for Reattach<'_> {
        fn drop(&mut self) {
            {
                let mut sections = self.0.sections.borrow_mut();
                let boundary = sections
                    .boundaries
                    .pop()
                    .expect("detaches end innermost first");
                // Sections nest inside `detached`'s closure, so the ones it began have ended.
                debug_assert_eq!(boundary, sections.open.len());
            }
            self.0.resume_innermost();
        }
    }

    /// See [`with_on`](super::with_on); without `RECORD_ELIDED`, a section of the stack's own
    /// begun while the stack elides is not recorded
    /// ([`with_on_unrecorded`](super::with_on_unrecorded), whose caller promises the elision
    /// outlasts it).
    #[inline(always)]
    pub(super) fn with_on<const RECORD_ELIDED: bool, R>(
        stack: Option<&SectionStack>,
        lock: Option<&RawObjectLock>,
        f: impl FnOnce() -> R,
    ) -> R {
        // A hold on the thread's stack, for a section of the thread-local functions.
        let thread;
        #[cfg(debug_assertions)]
        let mut _kept = None;
        let _end = match lock {
            None => None,
            Some(lock) => {
                // Not a second call of `f` for these cases (see `with_on`): the call stays below.
                match stack {
                    Some(stack) if !RECORD_ELIDED && stack.eliding.get() => {
                        #[cfg(debug_assertions)]
                        {
                            _kept = Some(ElisionKept(stack, stack.elisions.get()));
                        }
                        None
                    }
                    Some(stack) => Some(stack.begin::<STACK_API>([lock, lock])),
                    None => {
                        thread = Hold::current();
                        Some(thread.begin_as([lock, lock], Api::Stackless))
                    }
                }
            }
        };
        f()
    }

    /// See [`with2_on`](super::with2_on).
    #[inline]
    pub(super) fn with2_on<R>(
        stack: Option<&SectionStack>,
        locks: [&RawObjectLock; 2],
        f: impl FnOnce() -> R,
    ) -> R {
        match stack {
            Some(stack) => stack.section::<STACK_API, R>(locks, f),
            None => {
                let thread = Hold::current();
                let _end = thread.begin_as(locks, Api::Stackless);
                f()
            }
        }
    }

    /// A thread's stack in the heap block its holders share: the thread itself (a thread-local
    /// whose destructor lets go), the thread-local functions for each call, and the
    /// [`ThreadStack`] claim. So a runtime that claims the stack keeps it, and keeps it the
    /// thread's, for the whole of the thread's exit, whatever order the thread's thread-locals
    /// are torn down in.
    struct Shared {
        stack: SectionStack,
        holders: Cell<usize>,
        /// Whether a [`ThreadStack`] claims the stack's own sections now.
        claimed: Cell<bool>,
    }

    /// One hold on the calling thread's stack (see [`Shared`]).
    struct Hold(NonNull<Shared>);

    impl Hold {
        /// A hold on the calling thread's stack, made on first use (and made again where a
        /// section is begun after the last holder let go of the one before, late in the thread's
        /// exit).
        #[inline]
        pub(super) fn current() -> Self {
            let shared = match NonNull::new(thread_stack_pointer().cast_mut()) {
                Some(shared) => shared,
                None => make_thread_stack(),
            };
            // SAFETY: the thread's current stack is alive: it is freed only by the release of
            // its last hold, which takes it out of `THREAD_STACK` first.
            unsafe { hold(shared) };
            Hold(shared)
        }

        fn shared(&self) -> &Shared {
            // SAFETY: this hold keeps the block alive, and only its thread touches it (a hold
            // is neither `Send` nor `Sync`).
            unsafe { self.0.as_ref() }
        }
    }

    impl std::ops::Deref for Hold {
        type Target = SectionStack;

        #[inline]
        fn deref(&self) -> &SectionStack {
            &self.shared().stack
        }
    }

    impl Drop for Hold {
        #[inline]
        fn drop(&mut self) {
            // SAFETY: this hold, let go once.
            unsafe { release(self.0) };
        }
    }

    /// The claim on the calling thread's section stack, the one the thread-local functions
    /// ([`with`](super::with) and the rest) use: see
    /// [`claim_thread_stack`](super::claim_thread_stack).
    ///
    /// Dereferences to the [`SectionStack`], whose own methods begin the claimant's sections
    /// beside the thread-local functions' ones; there is one claim at a time, so the stack's own
    /// sections, its elision and its own hook are the claimant's alone. Neither `Send` nor
    /// `Sync`: it belongs to the thread whose stack it claims.
    ///
    /// Dropped, it stops the stack's elision ([`SectionStack::stop_eliding`]) and clears the
    /// stack's own hook, so that the next claimant starts from a stack of its own. A claimant
    /// whose thread exits inside sections it began (`process::exit`) abandons them first
    /// ([`SectionStack::abandon_open_sections`]), as the thread's own hold does at its teardown.
    pub struct ThreadStack(Hold);

    impl ThreadStack {
        /// The claim, unless one is held already.
        pub(super) fn claim() -> Option<Self> {
            let hold = Hold::current();
            let claimed = &hold.shared().claimed;
            if claimed.replace(true) {
                return None;
            }
            Some(ThreadStack(hold))
        }
    }

    impl std::ops::Deref for ThreadStack {
        type Target = SectionStack;

        #[inline]
        fn deref(&self) -> &SectionStack {
            &self.0
        }
    }

    impl Drop for ThreadStack {
        fn drop(&mut self) {
            // Its sections borrow this handle, so none of them is open here but where its
            // thread exits inside them, which the claimant must abandon first (see above).
            self.0.stop_eliding();
            self.0.set_blocking_wait(None);
            self.0.shared().claimed.set(false);
        }
    }

    impl std::fmt::Debug for ThreadStack {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_tuple("ThreadStack").field(&**self).finish()
        }
    }

    /// Takes one more hold on `shared`.
    ///
    /// # Safety
    /// `shared` is alive, and this is its thread.
    #[inline]
    unsafe fn hold(shared: NonNull<Shared>) {
        // SAFETY: per the caller.
        let holders = unsafe { &shared.as_ref().holders };
        // Aborts as `Rc` does: only a leak loop could get here.
        let more = holders
            .get()
            .checked_add(1)
            .unwrap_or_else(|| std::process::abort());
        holders.set(more);
    }

    /// Lets a hold on `shared` go. The last one frees the stack (as records only: a section
    /// still open, which a process exiting inside it leaves, keeps its lock, and its frame never
    /// returns to pop it), and the thread's next section makes a new one.
    ///
    /// # Safety
    /// The caller has a hold on `shared`, on its thread, and gives it up here.
    #[inline]
    unsafe fn release(shared: NonNull<Shared>) {
        // SAFETY: held by the caller.
        let holders = unsafe { &shared.as_ref().holders };
        let left = holders.get() - 1;
        holders.set(left);
        if left == 0 {
            // SAFETY: the last hold, let go just above.
            unsafe { free_thread_stack(shared) };
        }
    }

    /// Frees a stack whose last hold was let go.
    ///
    /// # Safety
    /// `shared` was made by [`make_thread_stack`], on this thread, and no hold on it is left.
    #[cold]
    unsafe fn free_thread_stack(shared: NonNull<Shared>) {
        if thread_stack_pointer() == shared.as_ptr().cast_const() {
            set_thread_stack_pointer(std::ptr::null());
        }
        // SAFETY: made by `Box::leak` in `make_thread_stack`; no hold is left (the caller), and
        // every reference to it is made through a hold ([`Hold`]), so none is left either.
        drop(unsafe { Box::from_raw(shared.as_ptr()) });
    }

    /// Makes the calling thread's stack, and gives the thread's own hold on it to the first
    /// holder thread-local that can still take it (one torn down takes none: a stack made so
    /// late in the thread's exit that none can is freed by the last hold a call or a claim lets
    /// go).
    #[cold]
    #[inline(never)]
    fn make_thread_stack() -> NonNull<Shared> {
        let shared = NonNull::from(Box::leak(Box::new(Shared {
            stack: SectionStack::new(),
            holders: Cell::new(0),
            claimed: Cell::new(false),
        })));
        set_thread_stack_pointer(shared.as_ptr());
        give_to_a_holder(shared);
        shared
    }

    /// The thread's own hold on its stack: let go when its thread-locals are torn down.
    struct Holder(Cell<Option<NonNull<Shared>>>);

    impl Holder {
        /// Takes the thread's hold on `shared`, unless this holder has one already.
        fn take(&self, shared: NonNull<Shared>) -> bool {
            if self.0.get().is_some() {
                return false;
            }
            // SAFETY: just made, alive, on this thread.
            unsafe { hold(shared) };
            self.0.set(Some(shared));
            true
        }
    }

    impl Drop for Holder {
        fn drop(&mut self) {
            if let Some(shared) = self.0.take() {
                // The thread is exiting. Its sections still open are a process's that exits
                // inside them: their records must not lead what the exit still runs on the stack
                // (a later destructor's detach) to unlock or take their locks, which may be gone
                // with a thread-local destroyed before this one.
                // SAFETY: thread-local destructors run one after another, once every frame of
                // the thread has returned or from inside `process::exit`, whose callers' frames
                // never run again, so no section open now runs on or ends; and the block is
                // alive, held by this holder.
                unsafe { shared.as_ref().stack.abandon_open_sections() };
                // SAFETY: the hold taken in `take`, let go once.
                unsafe { release(shared) };
            }
        }
    }

    #[cfg(not(loom))]
    thread_local! {
        /// The thread's stack while a holder keeps it; null before its first use and once its
        /// last holder lets go. Const and without a destructor, so never torn down: the
        /// thread's exit finds its stack through it until the end.
        static THREAD_STACK: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
        /// The blocking wait that [`set_blocking_wait`](super::set_blocking_wait) last set for
        /// this thread: const and without a destructor too, so a section in the thread's last
        /// destructors still waits through it.
        static THREAD_BLOCKING_WAIT: Cell<Option<super::BlockingWait>> = const { Cell::new(None) };
        /// The blocking wait that
        /// [`set_stackless_blocking_wait`](super::set_stackless_blocking_wait) last set for this
        /// thread, as long-lived.
        static STACKLESS_BLOCKING_WAIT: Cell<Option<super::BlockingWait>> = const { Cell::new(None) };
        /// The thread's hold on its first stack.
        static HOLDER: Holder = const { Holder(Cell::new(None)) };
        /// The thread's hold on a stack made after `HOLDER` was torn down (a section in a
        /// later thread-local destructor): registered as it is made, so its destructor runs
        /// after the destructor that made it.
        static LATE_HOLDER: Holder = const { Holder(Cell::new(None)) };
    }

    #[cfg(not(loom))]
    #[inline]
    fn thread_stack_pointer() -> *const Shared {
        THREAD_STACK.get()
    }

    #[cfg(not(loom))]
    fn set_thread_stack_pointer(shared: *const Shared) {
        THREAD_STACK.set(shared);
    }

    /// How the thread-local functions' sections block on the calling thread.
    #[cfg(not(loom))]
    fn thread_blocking_wait() -> Option<super::BlockingWait> {
        THREAD_BLOCKING_WAIT.get()
    }

    #[cfg(not(loom))]
    fn give_to_a_holder(shared: NonNull<Shared>) {
        for holder in [&HOLDER, &LATE_HOLDER] {
            if holder.try_with(|holder| holder.take(shared)) == Ok(true) {
                return;
            }
        }
    }

    #[cfg(not(loom))]
    pub(super) fn set_thread_blocking_wait(hook: Option<super::BlockingWait>) {
        THREAD_BLOCKING_WAIT.set(hook);
    }

    /// How a runtime's sections given no stack block on the calling thread.
    #[cfg(not(loom))]
    fn stackless_blocking_wait() -> Option<super::BlockingWait> {
        STACKLESS_BLOCKING_WAIT.get()
    }

    #[cfg(not(loom))]
    pub(super) fn set_stackless_blocking_wait(hook: Option<super::BlockingWait>) {
        STACKLESS_BLOCKING_WAIT.set(hook);
    }

    // Under loom the thread-locals are loom's (its threads share one OS thread), which are
    // made lazily and may be torn down in any order; its models take no sections in
    // thread-local destructors, where a torn-down `THREAD_STACK` makes a fresh stack per call.
    #[cfg(loom)]
    loom::thread_local! {
        static THREAD_STACK: Cell<*const Shared> = Cell::new(std::ptr::null());
        static THREAD_BLOCKING_WAIT: Cell<Option<super::BlockingWait>> = Cell::new(None);
        static STACKLESS_BLOCKING_WAIT: Cell<Option<super::BlockingWait>> = Cell::new(None);
        static HOLDER: Holder = Holder(Cell::new(None));
    }

    #[cfg(loom)]
    fn thread_stack_pointer() -> *const Shared {
        THREAD_STACK.try_with(Cell::get).unwrap_or(std::ptr::null())
    }

    #[cfg(loom)]
    fn set_thread_stack_pointer(shared: *const Shared) {
        let _torn_down = THREAD_STACK.try_with(|stack| stack.set(shared));
    }

    #[cfg(loom)]
    fn thread_blocking_wait() -> Option<super::BlockingWait> {
        THREAD_BLOCKING_WAIT.try_with(Cell::get).unwrap_or(None)
    }

    #[cfg(loom)]
    fn give_to_a_holder(shared: NonNull<Shared>) {
        let _torn_down = HOLDER.try_with(|holder| holder.take(shared));
    }

    #[cfg(loom)]
    pub(super) fn set_thread_blocking_wait(hook: Option<super::BlockingWait>) {
        let _torn_down = THREAD_BLOCKING_WAIT.try_with(|wait| wait.set(hook));
    }

    #[cfg(loom)]
    fn stackless_blocking_wait() -> Option<super::BlockingWait> {
        STACKLESS_BLOCKING_WAIT.try_with(Cell::get).unwrap_or(None)
    }

    #[cfg(loom)]
    pub(super) fn set_stackless_blocking_wait(hook: Option<super::BlockingWait>) {
        let _torn_down = STACKLESS_BLOCKING_WAIT.try_with(|wait| wait.set(hook));
    }

    /// Runs `f` on the calling thread's stack, held for the call.
    #[inline]
    pub(super) fn with_thread_stack<R>(f: impl FnOnce(&SectionStack) -> R) -> R {
        f(&Hold::current())
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
