//! The calling thread's own section stack: a heap block its holders share (the thread's
//! thread-local, each call of the thread-local functions, and a runtime's [`ThreadStack`]
//! claim), so it stays the thread's through its thread-locals' teardown; and the thread-local
//! blocking-wait hooks.

use super::*;

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
pub(super) struct Hold(NonNull<Shared>);

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
/// ([`with`](crate::section::with) and the rest) use: see
/// [`claim_thread_stack`](crate::section::claim_thread_stack).
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
    pub(in crate::section) fn claim() -> Option<Self> {
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
    /// The blocking wait that [`set_blocking_wait`](crate::section::set_blocking_wait) last set for
    /// this thread: const and without a destructor too, so a section in the thread's last
    /// destructors still waits through it.
    static THREAD_BLOCKING_WAIT: Cell<Option<crate::section::BlockingWait>> = const { Cell::new(None) };
    /// The blocking wait that
    /// [`set_stackless_blocking_wait`](crate::section::set_stackless_blocking_wait) last set for
    /// this thread, as long-lived.
    static STACKLESS_BLOCKING_WAIT: Cell<Option<crate::section::BlockingWait>> = const { Cell::new(None) };
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
pub(super) fn thread_blocking_wait() -> Option<crate::section::BlockingWait> {
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
pub(in crate::section) fn set_thread_blocking_wait(hook: Option<crate::section::BlockingWait>) {
    THREAD_BLOCKING_WAIT.set(hook);
}

/// How a runtime's sections given no stack block on the calling thread.
#[cfg(not(loom))]
pub(super) fn stackless_blocking_wait() -> Option<crate::section::BlockingWait> {
    STACKLESS_BLOCKING_WAIT.get()
}

#[cfg(not(loom))]
pub(in crate::section) fn set_stackless_blocking_wait(hook: Option<crate::section::BlockingWait>) {
    STACKLESS_BLOCKING_WAIT.set(hook);
}

// Under loom the thread-locals are loom's (its threads share one OS thread), which are
// made lazily and may be torn down in any order; its models take no sections in
// thread-local destructors, where a torn-down `THREAD_STACK` makes a fresh stack per call.
#[cfg(loom)]
loom::thread_local! {
    static THREAD_STACK: Cell<*const Shared> = Cell::new(std::ptr::null());
    static THREAD_BLOCKING_WAIT: Cell<Option<crate::section::BlockingWait>> = Cell::new(None);
    static STACKLESS_BLOCKING_WAIT: Cell<Option<crate::section::BlockingWait>> = Cell::new(None);
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
pub(super) fn thread_blocking_wait() -> Option<crate::section::BlockingWait> {
    THREAD_BLOCKING_WAIT.try_with(Cell::get).unwrap_or(None)
}

#[cfg(loom)]
fn give_to_a_holder(shared: NonNull<Shared>) {
    let _torn_down = HOLDER.try_with(|holder| holder.take(shared));
}

#[cfg(loom)]
pub(in crate::section) fn set_thread_blocking_wait(hook: Option<crate::section::BlockingWait>) {
    let _torn_down = THREAD_BLOCKING_WAIT.try_with(|wait| wait.set(hook));
}

#[cfg(loom)]
pub(super) fn stackless_blocking_wait() -> Option<crate::section::BlockingWait> {
    STACKLESS_BLOCKING_WAIT.try_with(Cell::get).unwrap_or(None)
}

#[cfg(loom)]
pub(in crate::section) fn set_stackless_blocking_wait(hook: Option<crate::section::BlockingWait>) {
    let _torn_down = STACKLESS_BLOCKING_WAIT.try_with(|wait| wait.set(hook));
}

/// Runs `f` on the calling thread's stack, held for the call.
#[inline]
pub(in crate::section) fn with_thread_stack<R>(f: impl FnOnce(&SectionStack) -> R) -> R {
    f(&Hold::current())
}
