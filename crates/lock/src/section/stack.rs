//! [`SectionStack`], a thread's stack of critical sections as a plain value: begin and end,
//! suspend and resume, detach boundaries, elision, and the waits of a section that has to
//! block. The thread's own stack, which the thread-local functions use and a runtime may claim,
//! is in `thread`.

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;

use super::SectionDepth;
use crate::RawObjectLock;

mod thread;

pub use thread::ThreadStack;
pub(super) use thread::{set_stackless_blocking_wait, set_thread_blocking_wait, with_thread_stack};
use thread::{stackless_blocking_wait, thread_blocking_wait, Hold};

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
