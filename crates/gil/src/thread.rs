//! Thread states, the attach token and `allow_threads`.
//!
//! A thread *attaches* to the runtime to touch objects: [`Python::attach`] registers the thread
//! the first time, takes the GIL in the `gil` build, and hands the closure a [`Python`] token. The
//! token is the proof: it is `Copy` but neither `Send` nor `Sync`, and it lives only as long as
//! the closure, so it cannot outlive the attachment or move to another thread. Whatever needs the
//! GIL (the `gil` build's non-atomic reference counts) takes the token.
//!
//! [`Python::allow_threads`] detaches around blocking or native work: it suspends the thread's
//! critical sections, releases the GIL, runs the closure, then takes the GIL back and resumes the
//! innermost section. The sections stay suspended for the whole closure, even if it begins and
//! ends sections of its own (`ftrt_lock::section::detached`). The closure must be `Send`, which
//! keeps the token from being captured as such, though not from every way in (PyO3's known
//! hole); so every operation that relies on the attachment checks at run time that the thread
//! is attached ([`assert_attached`](crate::assert_attached)), and a token that got in anyway
//! panics at its first use (see [`Python::allow_threads`]). Attaching and the end of an
//! attachment leave the sections alone.
//!
//! In the free-threaded builds an attached thread also stays pinned in `crossbeam-epoch`, the
//! reclamation scheme behind the object model's lock-free reads: a read pins for free (a nested
//! pin), and memory retired by writers is reclaimed once every attached thread has passed a
//! checkpoint ([`Python::check`]) or detached. This is CPython's quiescent-state-based
//! reclamation (QSBR) expressed with epochs. Crates that keep garbage per thread before handing
//! it to the epoch run their part at those quiescent states through [`on_quiescent_state`].

use std::marker::PhantomData;
use std::sync::LazyLock;

use ftrt_lock::section::{AfterWait, SectionWait};
use ftrt_refcount::RefCount;

use crate::state::{self, ThreadState};
use crate::{BuildCount, Gil, RuntimeGil};

#[cfg(test)]
std::thread_local! {
    /// How many times this thread has detached through `allow_threads` (read by unit tests).
    pub(crate) static DETACHES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The runtime's GIL (a no-op in free-threaded builds): its settings and counters. Attaching
/// takes it; nothing else can.
pub fn runtime_gil() -> RuntimeGil {
    RuntimeGil::new(gil())
}

/// The runtime's GIL itself, which only attaching and detaching take and release.
fn gil() -> &'static Gil {
    static GIL: LazyLock<Gil> = LazyLock::new(Gil::new);
    &GIL
}

/// Proof that the calling thread is attached to the runtime (and, in the `gil` build, holds the
/// GIL) whenever code that holds the token runs, for the lifetime `'py`. (The thread detaches
/// inside [`allow_threads`](Python::allow_threads), whose closure is `Send` and so captures no
/// token as such; a token that reaches it by the known hole documented there panics at its
/// first use that relies on the attachment, as every such operation checks it first. It gives
/// the GIL to another thread inside a [`check`](Python::check), which blocks until it has the
/// GIL back.) Obtain one with [`Python::attach`].
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_gil::Python<'static>>();
/// ```
#[derive(Clone, Copy)]
pub struct Python<'py> {
    /// Zero-sized: every object handle carries a token, so a pointer here would double their
    /// size (measured: slower). The token reaches the thread state with one access to a const,
    /// destructor-less thread-local instead (`state::current`).
    _attached: PhantomData<(&'py (), *mut ())>,
}

impl std::fmt::Debug for Python<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Python")
    }
}

impl<'py> Python<'py> {
    /// Runs `f` attached to the runtime. Re-entrant: an attached thread just calls `f`.
    ///
    /// In the `gil` build this takes the GIL for the duration (minus any `allow_threads`), and
    /// releases it even if `f` panics.
    ///
    /// In the free-threaded builds an attached thread never waits for another attached thread to
    /// detach (as a GIL makes it wait), except during a stop of the world
    /// ([`stop_the_world`](crate::stop_the_world)); it may wait for a lock another holds. Lock
    /// elision, off by default ([`set_lock_elision`](crate::set_lock_elision)), trades that for
    /// single-thread speed: with it on, a thread that reaches a checkpoint
    /// ([`check`](Self::check), the first that repins after it attached or came back from
    /// `allow_threads`) while no other thread is attached *holds the world alone*
    /// ([`holds_world_alone`]): its critical sections take no lock, which saves the two atomic
    /// operations of every section on a shared object. A thread that attaches meanwhile waits
    /// until the holder reaches its next checkpoint, at most 16 checks later, or detaches; the
    /// holder then lets go, its suspended sections lock again as they resume, and every thread
    /// locks until one finds itself alone again at a repin after its next attachment. A thread
    /// that never reaches a checkpoint never holds the world; one that does and then stays
    /// attached without checks (blocked in a join or on a barrier, a long native call) keeps
    /// every other thread out, as under the GIL.
    ///
    /// [`holds_world_alone`]: Self::holds_world_alone
    pub fn attach<R>(f: impl for<'any> FnOnce(Python<'any>) -> R) -> R {
        let here = state::here();
        if here.attached {
            // SAFETY: the thread is attached (and holds the GIL) for the whole call, and `here`
            // is its state.
            return f(unsafe { Python::assume_attached_here() });
        }
        // The order of attaching, detaching and the rest: see the `state` module.
        // SAFETY: `here.state` is this thread's block (or null after its exit), alive while
        // this thread runs outside its thread-local destructors, as here.
        let block = unsafe { here.state.as_ref() };
        // Unparked outside the world: the unpark may wait for a merge another thread runs for
        // this one, whose release may wait for a stop of the world to end, which would wait
        // for this thread if it were in the world.
        state::unpark_counts(block);
        state::enter_world(block);
        gil().acquire();
        // SAFETY: in the world, holding the GIL, until `_detach` below ends the attachment.
        unsafe { state::set_attached(true) };
        // SAFETY: attached just above, until `_detach` runs at the end of this call.
        let py = unsafe { Python::assume_attached_here() };
        // Before the pin, which may run deferred destructors: a panic there ends the
        // attachment too.
        let _detach = Detach(here.state);
        state::pin(py.state());
        state::want_hold(py.state());
        f(py)
    }

    /// A token for a thread the caller knows to be attached.
    ///
    /// # Safety
    /// The calling thread is attached (holds the GIL in the `gil` build) whenever code that
    /// holds the token runs, for all of `'py`: as for a token [`attach`](Self::attach) makes
    /// (short of `allow_threads`' hole, where the token's every use that relies on the
    /// attachment checks it and panics). And `'py` ends before the attachment does: what the
    /// token hands out relies on the
    /// attachment for all of `'py` (the biased build's [`count_token`](Self::count_token)
    /// counts without atomics on counts an attachment keeps unparked, and parks when it ends),
    /// so a `'py` the caller picks longer (`'static`) would let those outlive it.
    ///
    /// Free: it touches no thread state, because every `Bound::py()` makes one. A thread that
    /// never attached has no block, and the token then answers as after the thread's exit (the
    /// fallback in `state`): it owns nothing (`count_token` gives a detached owner), and its
    /// per-thread values answer `None`.
    #[inline(always)]
    pub unsafe fn assume_attached() -> Self {
        // SAFETY: forwarded from the caller.
        unsafe { Python::assume_attached_here() }
    }

    /// # Safety
    /// As for [`assume_attached`](Self::assume_attached).
    #[inline(always)]
    unsafe fn assume_attached_here() -> Self {
        Python {
            _attached: PhantomData,
        }
    }

    /// The thread's state, or `None` when it attached after its exit (the fallback described in
    /// the `state` module).
    #[inline(always)]
    pub(crate) fn state(self) -> Option<&'py ThreadState> {
        // SAFETY: the state lives until its owning thread-local's destructor, which clears the
        // pointer before dropping it; the token cannot outlive the attachment it was made in, nor
        // leave the thread, and no thread-local destructor of this thread runs while an
        // attachment made outside it is still on the stack, but for a `process::exit` inside an
        // attachment: its frames never run again (the exit ends that attachment first, see
        // `state::end_attachment_at_exit`), and the destructors make tokens of their own. So
        // the state outlives `'py`.
        unsafe { state::current().as_ref() }
    }

    /// Whether this thread holds the world alone (free-threaded builds, see
    /// [`attach`](Self::attach)): no other thread is attached, none attaches before this thread
    /// reaches a checkpoint or detaches, and its critical sections take no lock meanwhile.
    /// Inside the thread's own [`stop_the_world`](crate::stop_the_world) it answers `false`:
    /// the stop holds the world then, through detaches too. Always `false` in the `gil` build,
    /// where holding the GIL has the same effect.
    pub fn holds_world_alone(self) -> bool {
        state::assert_attached();
        state::holds_world_alone(self.state())
    }

    /// The calling thread's id in the runtime: the owner id its objects' biased counts record,
    /// never reused (one id space for the runtime and the counts). `None` for a thread attached
    /// after its exit, or should ids ever run out.
    pub fn thread_id(self) -> Option<u32> {
        self.state().and_then(ThreadState::id)
    }

    /// Merges every object other threads have handed back to this thread's biased-count queue
    /// (their last references, dropped elsewhere), freeing those that died. Returns how many
    /// were merged. Object creation merges on its own when something is pending; this is for
    /// threads that want to settle now (a collection). Always 0 in builds whose counts are not
    /// biased (nothing is ever queued).
    pub fn merge_pending(self) -> usize {
        state::assert_attached();
        self.state().map_or(0, ThreadState::merge_pending)
    }

    /// Detaches around `f`: suspends the thread's critical sections and releases the GIL, so
    /// other threads run while `f` blocks or computes; then re-attaches (in fair mode, ahead of
    /// threads that never left) and resumes the innermost section. Sections `f` begins and ends
    /// do not resume the suspended ones. `f` is `Send`, so it cannot capture this token, nor a
    /// handle tied to it, as such.
    ///
    /// **PyO3's known hole (its issues 2141 and 3640), closed at run time.** The bound does
    /// not keep the token out of `f` by every route. `Send` keeps a value from other threads,
    /// and `f` runs on this one: a wrapper that is `Send` whatever it holds and checks at run
    /// time that it is used on the thread that made it (`send_wrapper::SendWrapper`,
    /// `fragile::Fragile`) carries the token in; and a thread-local that can hold a type with a
    /// free lifetime (a scoped thread-local, set around the call) hands it to a closure that
    /// captures nothing. No bound on closures rules out the second route. Used there, the token
    /// would count, read objects and begin sections while the thread is detached: in the `gil`
    /// build without the GIL; in the free-threaded builds without the epoch pin, beside a stop
    /// of the world, and on the owner's counts while they are parked, which other threads merge
    /// into. So every operation that relies on the attachment checks it first
    /// ([`assert_attached`](crate::assert_attached): one thread-local load and a branch), and
    /// panics on a detached thread before it changes anything: counting, making objects,
    /// sections, checkpoints, detaches and stops here, and the object model's reads, writes,
    /// read guards and collections. What reads only an object's fixed parts (its type, an int's
    /// value, a string's text) works, and a handle dropped there attaches for its decrement.
    /// A count token made before the detach ([`count_token`](Self::count_token)) and carried in
    /// would count unchecked, which is why making one is `unsafe`. Inside `f`, attach again with
    /// [`Python::attach`] to use the runtime.
    ///
    /// # Panics
    /// On a thread that is not attached (this token carried into another `allow_threads`).
    ///
    /// Inside the thread's own stop of the world ([`stop_the_world`](crate::stop_the_world))
    /// it only suspends the sections: no other thread may run, so the thread stays attached.
    pub fn allow_threads<T, F>(self, f: F) -> T
    where
        F: Send + FnOnce() -> T,
        T: Send,
    {
        state::assert_attached();
        if state::running_own_stop() {
            // Inside this thread's own stop no other thread may run: the sections are
            // suspended, but the thread stays attached (and the world stopped).
            return crate::section::detached(self, f);
        }
        // The sections stay suspended for the whole detach, sections begun inside `f`
        // included; the innermost outside is resumed once `Reattach` has re-attached.
        crate::section::detached(self, || self.leave_and_run(f))
    }

    /// The detach of [`allow_threads`](Self::allow_threads), once the sections are suspended:
    /// leaves the runtime, runs `f`, and attaches again (panics included).
    fn leave_and_run<T>(self, f: impl FnOnce() -> T) -> T {
        #[cfg(test)]
        DETACHES.with(|detaches| detaches.set(detaches.get() + 1));
        // Inside the park of this thread's own detach (a release its merge runs, attached
        // again through a nested `attach`), the counts stay with the park under way (`leave`
        // and `come_back` leave them alone); and if that detach unpinned already (the end of
        // an attachment, an `allow_threads`: its hooks ran), there is no pin to drop or take
        // back. (A light detach, the wait for a section's lock, keeps its pin; a full attach
        // nested further in has a pin of its own.)
        let unpinned_already = state::parking_counts() && !state::local::attach_pinned();
        if !unpinned_already {
            state::unpin(self.state());
        }
        // Before the leave: a release the park of the counts runs may panic, and the leave
        // then ends all the same (see `leave`), so the thread must come back.
        let _reattach = Reattach {
            block: state::current(),
            repin: !unpinned_already,
        };
        // SAFETY: attached (checked by `allow_threads`); nothing below relies on it, or counts
        // (a token `f` gets through the hole `allow_threads` documents fails its checks),
        // until `Reattach` attaches again.
        unsafe { leave(self.state()) };
        f()
    }

    /// An eval-loop checkpoint, the point where a thread may be asked to wait for others: in the
    /// `gil` build, hands the GIL to a thread that asked for it and waits for its turn again; in
    /// the free-threaded builds, parks while another thread stops the world
    /// ([`stop_the_world`](crate::stop_the_world)). Runs the work asked for with
    /// [`CheckpointWork::request`](crate::CheckpointWork::request). Returns whether it switched
    /// the GIL.
    #[inline]
    pub fn check(self) -> bool {
        state::assert_attached();
        // The checkpoint counter lives in the free-threaded builds only; in the `gil` build the
        // thread state is not even looked up.
        #[cfg(not(feature = "gil"))]
        if state::checkpoint(self.state()) {
            self.safe_point();
        }
        #[cfg(feature = "gil")]
        if crate::checkpoint_work::wanted() {
            self.safe_point();
        }
        // Free-threaded builds have no GIL to hand over, and `runtime_gil` is a call (its lazy
        // initialisation) that the always-false answer would not remove.
        #[cfg(not(feature = "gil"))]
        return false;
        #[cfg(feature = "gil")]
        {
            if !gil().drop_requested() {
                return false;
            }
            self.hand_over_gil()
        }
    }

    /// The rare half of [`check`](Self::check) that stops: park while the world is stopped, then
    /// run the work asked for.
    #[cold]
    #[inline(never)]
    fn safe_point(self) {
        if state::running_own_stop() {
            // The world is stopped by this very thread: nothing to park for, and the work
            // asked for waits for the first checkpoint after the stop.
            return;
        }
        #[cfg(not(feature = "gil"))]
        if state::world().stop_requested() {
            self.park();
        }
        crate::checkpoint_work::run(self);
    }

    /// Parks while a stop of the world is under way (`World::park`): a detach (sections
    /// suspended, counts parked, left the world) that waits for the stop to end before it
    /// attaches again, even if the stopper has not reached this thread yet.
    #[cfg(not(feature = "gil"))]
    fn park(self) {
        self.allow_threads(|| state::world().wait_while_stopping());
    }

    /// The rare half of [`check`](Self::check), kept out of line so that the common half (two
    /// loads and a branch) inlines into loops: inlined together, `check` grew too big to inline
    /// and cost the object bench's `dict_get` 24 %.
    #[cfg(feature = "gil")]
    #[cold]
    #[inline(never)]
    fn hand_over_gil(self) -> bool {
        if state::running_own_stop() {
            return false; // no other thread runs inside this thread's stop
        }
        // The GIL changes hands in between, a detach like `allow_threads`: the sections are
        // suspended across it. In the gil build the object model's sections take no lock, but
        // sections of `ftrt_lock` users do, and another holder of the GIL may need them.
        // SAFETY: the token proves this thread holds the GIL; the thread holds nothing else
        // another holder could need (its sections are suspended).
        crate::section::detached(self, || unsafe { gil().check() })
    }

    /// The token the build's reference count asks for to count: the GIL proof in the `gil`
    /// build, nothing with atomic counts, the thread's owner id with biased ones (the detached
    /// owner after the thread's exit). Make objects with
    /// [`new_object_token`](Self::new_object_token).
    ///
    /// # Safety
    /// The count token is used only while the calling thread is attached: not carried into
    /// the closure of an `allow_threads` of this attachment (its `'py` covers those, and the
    /// counts' own operations cannot see the detach: `GilHeld` there would count without the
    /// GIL). A `Python` token carried in is checked here; a count token made before is not.
    ///
    /// # Panics
    /// On a thread that is not attached: a `Python` token carried into `allow_threads`' closure
    /// (see there) and used to count ([`assert_attached`](crate::assert_attached)).
    #[inline(always)]
    #[track_caller]
    pub unsafe fn count_token(self) -> <BuildCount as RefCount>::Token<'py> {
        state::assert_attached();
        // SAFETY: attached, checked just above.
        unsafe { self.count_token_unchecked() }
    }

    /// [`count_token`](Self::count_token) without its check, for a path that checked within
    /// the same operation (a read or a write of the object model, which checks as it begins).
    ///
    /// # Safety
    /// The calling thread is attached, and stays attached while the token is used.
    #[inline(always)]
    pub unsafe fn count_token_unchecked(self) -> <BuildCount as RefCount>::Token<'py> {
        #[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
        // SAFETY: `owner_id` is the id of this thread's block's `LocalCounts` from its
        // registration until the exit sequence, which resets it to the detached id before it
        // retires them; the exit runs in a thread-local destructor, never while an attachment
        // (and so `'py`) is still running on this thread (a `process::exit` inside one ends it
        // first, and its frames never run again). After the exit it is the detached id.
        // The counts are unparked while the thread is attached (the caller's contract): an
        // attachment unparks them before it marks the thread attached and parks them only as
        // it ends, and `allow_threads` parks them before it marks the thread detached.
        return unsafe { ftrt_refcount::biased::Owner::assume_counting_as(state::owner_id()) };
        #[cfg(any(feature = "gil", feature = "atomic-rc"))]
        // SAFETY: attached (the caller's contract).
        return unsafe { self.new_object_token_unchecked() };
    }

    /// The token for a new object's count: [`count_token`](Self::count_token)'s, and with
    /// biased counts also the thread's merge queue, which creation merges when other threads
    /// have handed objects back (the safe point that keeps them from piling up). One more load
    /// than `count_token`.
    ///
    /// # Safety
    /// As for [`count_token`](Self::count_token): the token is used only while the calling
    /// thread is attached.
    ///
    /// # Panics
    /// On a thread that is not attached, as `count_token`.
    #[inline(always)]
    #[track_caller]
    pub unsafe fn new_object_token(self) -> <BuildCount as RefCount>::Token<'py> {
        state::assert_attached();
        // SAFETY: attached, checked just above.
        unsafe { self.new_object_token_unchecked() }
    }

    /// # Safety
    /// As for [`count_token_unchecked`](Self::count_token_unchecked).
    #[inline(always)]
    unsafe fn new_object_token_unchecked(self) -> <BuildCount as RefCount>::Token<'py> {
        #[cfg(feature = "gil")]
        // SAFETY: in the gil build an attached thread (the caller's contract) holds the GIL
        // whenever its code runs (it gives the GIL up only where none runs: a checkpoint's
        // hand-over, which blocks until the GIL is back; `allow_threads` marks the thread
        // detached before it lets the GIL go), and the GIL's hand-overs synchronise as a
        // mutex's do.
        return unsafe { ftrt_refcount::GilHeld::assume_held() };
        #[cfg(all(feature = "atomic-rc", not(feature = "gil")))]
        return Default::default();
        // The thread's owner, or none at all after its exit.
        #[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
        return match self.state() {
            Some(state) => state.owner(),
            None => ftrt_refcount::biased::Owner::detached(),
        };
    }
}

/// How a registered thread blocks for a lock of `ftrt_lock`'s thread-local functions' sections
/// (the sections of its users beside the runtime, on the thread's stack, which the thread state
/// holds; see `ftrt_lock::section::set_blocking_wait`): detached, if the thread is attached. A
/// thread may hold such a lock while it attaches (a section begun before `Python::attach`, or
/// resumed before a detach ends), and so wait for the GIL, or for a stop of the world, holding it:
/// a thread that waited for the lock attached would hold up what the holder waits for.
///
/// A lighter detach than [`allow_threads`](Python::allow_threads)': the stack's sections are
/// already suspended, behind a detach boundary (every section of the thread: the object
/// model's and the thread-local functions' are on one stack), the counts parked, the thread
/// leaves the world and releases the GIL, and comes back in the order of an attach; it stays
/// pinned and runs no quiescent-state hooks. So no code that could itself take a section (a
/// hook, the epoch's deferred work) runs in between, nor finds the thread's epoch guard borrowed
/// (the wait may begin inside a flush), but for the releases the park's merge runs: a wait
/// inside those waits in place (see `state::parking_counts`). A pinned thread that is not
/// in the world only holds back reclamation until it returns.
///
/// Inside its own stop of the world the thread cannot detach (no other thread may run): it
/// blocks in place, so a stop's closure must not wait for a lock a thread outside holds.
pub(crate) fn wait_for_section_detached(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
    if !state::is_attached() || state::running_own_stop() || state::parking_counts() {
        wait.wait();
        return None;
    }
    // SAFETY: attached, checked above; the wait only locks.
    unsafe { detached_for_a_wait(|| wait.wait()) };
    None
}

/// Runs `wait` in the lighter detach of a section's wait (see [`wait_for_section_detached`]):
/// leave (park the counts, leave the world, release the GIL), run it, come back in the order of
/// an attach, panics included. A release that panics in the park aborts: the hooks run under
/// `ftrt_lock`'s abort-on-unwind guard.
///
/// # Safety
/// The thread is attached, and `wait` neither counts a reference nor touches an object.
unsafe fn detached_for_a_wait(wait: impl FnOnce()) {
    let block = state::current();
    // Nothing counts until `BackFromSectionWait` unparks.
    let _back = BackFromSectionWait(block);
    // SAFETY: the thread is attached (the contract), and `block` the state of its attachment
    // (or null after its exit), alive for all of it; nothing below relies on the attachment,
    // or counts (the contract), until `BackFromSectionWait` attaches again.
    unsafe { leave(block.as_ref()) };
    wait();
}

/// How a registered thread blocks for the locks of its runtime sections (the object model's,
/// and every [`section`](crate::section) user's: the stack's own sections on the thread's
/// stack, which the thread state holds): in place, attached
/// (a holder gives the lock up where its body detaches or stops at a checkpoint, as that
/// suspends its sections, so the wait ends without this thread taking part in anything
/// meanwhile), but with its attach pin given up for the wait where no read is open on the
/// thread: a quiescent state, so the epoch advances past a thread that waits for a contended
/// object, as CPython's QSBR goes past a thread that blocks on a `PyMutex` (its wait detaches).
/// Waiting pinned held every other thread's retired objects until the lock came
/// (`list-replace-shared`, in `docs/results.md`).
///
/// In the free-threaded builds it waits in tries of [`STOP_LOOKOUT`], and lets a stop of the world
/// through before the first and between two (a detach that waits for the stop to end, holding none
/// of the section's locks: [`let_a_stop_through`]). A try that gives up leaves the lock's queue and
/// parks again at its tail, keeping its place in time for the handoff, so a long wait costs a
/// wake-up a millisecond; a stop that found it would otherwise have to wake it, through a registry
/// of the locks waited for that no thread keeps. A holder that is not attached does not give the
/// lock up at a stop: a thread that took it through `ftrt_lock`'s thread-local functions before it
/// attached, or in their detached wait ([`wait_for_section_detached`]), and now waits to attach
/// because a stop is under way. Waiting for such a holder attached, this thread would hold up the
/// stop the holder waits for.
///
/// The pin comes back once the section is recorded ([`pin_after_section_wait`], the
/// `ftrt_lock::section::AfterWait`), not here: an outer pin may collect, running deferred
/// functions, which may begin sections or detach, as a section's body may, and here the lock
/// just taken is not yet the stack's to suspend.
///
/// So a section's begin (or its resume after a nested one) may be a quiescent state, and, where
/// it lets a stop through, a detach: nothing read under the attach pin alone
/// ([`local::attach_pinned`](crate::local::attach_pinned)) may be used after a section begins.
/// An open read ([`local::OpenRead`](crate::local::OpenRead)) keeps the pin, as it does across a
/// detach.
///
/// It waits pinned, and for as long as it takes, inside the thread's own stop of the world (no
/// other thread runs, so none retires anything, nor stops the world) and inside the park's merge
/// (a detach under way, see `state::parking_counts`).
pub(crate) fn wait_for_object_section(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
    let in_place_for_good = state::running_own_stop() || state::parking_counts();
    let pinned_wait = crate::local::readers() > 0 || in_place_for_good;
    // SAFETY: this thread's state; no read is open, and the pin is not the one
    // `wait_for_section_detached` keeps across its detach (inside which a runtime section can
    // only wait in the park's merge; `pinned_wait` checked both); it is taken back once the
    // section is recorded (`pin_after_section_wait`), before its body.
    let unpin =
        |state: Option<&ThreadState>| state.is_some_and(|s| unsafe { state::unpin_for_wait(s) });
    let unpinned = !pinned_wait && state::with_current(unpin);
    if in_place_for_good || !state::is_attached() {
        wait.wait();
    } else {
        loop {
            if state::stop_requested() {
                // Holding none of the section's locks: a try that gave up on the second of two
                // kept the first.
                wait.give_back();
                // SAFETY: attached, checked above.
                unsafe { let_a_stop_through() };
            }
            if wait.wait_until(std::time::Instant::now() + STOP_LOOKOUT) {
                break;
            }
        }
    }
    unpinned.then_some(pin_after_section_wait)
}

/// How long a runtime section's wait for its lock goes between two looks for a stop of the
/// world to let through ([`wait_for_object_section`]): the longest a stop waits for a thread
/// whose section waits for a lock that the stop keeps its holder from giving up. A try that
/// gives up keeps its place in time for the lock's handoff (`ftrt_lock::HANDOFF_AFTER`), so a
/// long wait is handed the lock as soon as one that stayed parked.
pub(crate) const STOP_LOOKOUT: std::time::Duration = std::time::Duration::from_millis(1);

/// Lets a stop of the world through a thread that waits, attached, for a runtime section's
/// lock, holding none (`ftrt_lock` suspended its sections, and the hook gave back what a try
/// kept): the lighter detach of [`wait_for_section_detached`], until the stop is over.
///
/// # Safety
/// The thread is attached.
#[cold]
unsafe fn let_a_stop_through() {
    // SAFETY: attached (the contract); waiting for the stop touches no object.
    unsafe { detached_for_a_wait(|| state::world().wait_while_stopping()) };
}

/// Takes the attach pin again after [`wait_for_object_section`] gave it up, once the section
/// that waited is recorded.
fn pin_after_section_wait() {
    state::with_current(state::pin);
}

/// Ends [`wait_for_section_detached`]'s detach, panics included: the counts, the world, the GIL,
/// in the order of an attach.
struct BackFromSectionWait(*const ThreadState);

impl Drop for BackFromSectionWait {
    fn drop(&mut self) {
        // SAFETY: as in `wait_for_section_detached`.
        come_back(unsafe { self.0.as_ref() });
    }
}

/// The part every detach shares (the end of an attachment, `allow_threads`, a wait for a
/// section's lock), after what each does first (suspending sections, unpinning): park the counts,
/// mark the thread detached, leave the world, release the GIL.
///
/// The park runs other threads' releases (merging what they queued to this one), which may
/// panic: the rest of the leave runs all the same, so the panic unwinds out of a complete
/// detach (the counts parked, the merge finished: it goes on past a panicking release), and each
/// caller comes back, or not, exactly as after a leave that returned.
///
/// # Safety
/// The thread is attached (it holds the GIL), and `state` is its attachment's. From here until
/// [`come_back`] (or the next attach) the thread counts no reference and touches no object:
/// a detached thread has no token to count with.
unsafe fn leave(state: Option<&ThreadState>) {
    /// The steps after the park, panics included.
    struct RestOfLeave<'a>(Option<&'a ThreadState>);
    impl Drop for RestOfLeave<'_> {
        fn drop(&mut self) {
            // SAFETY: marked detached, the fast path no longer hands out tokens.
            unsafe { state::set_attached(false) };
            // SAFETY: this thread's state, marked detached just above; it counts and touches
            // nothing until it enters again (`leave`'s contract).
            unsafe { state::leave_world(self.0) };
            // SAFETY: an attached thread holds the GIL, per `leave`'s caller.
            unsafe { gil().release() };
        }
    }
    let _rest = RestOfLeave(state);
    // SAFETY: this thread's state, attached (the contract), which counts nothing until
    // `come_back` unparks (the contract too).
    unsafe { state::park_counts(state) };
}

/// Undoes [`leave`], in the order of an attach: unpark the counts, enter the world, take the
/// GIL (first in line in fair mode), mark the thread attached.
fn come_back(state: Option<&ThreadState>) {
    state::unpark_counts(state);
    state::enter_world(state);
    gil().acquire_after_blocking();
    // SAFETY: in the world, holding the GIL.
    unsafe { state::set_attached(true) };
}

/// Ends an attachment, panics included.
///
/// It leaves the thread's critical sections alone: the ones open now were open when the
/// attachment began (the sections it began have ended, as closures nest), so they belong to
/// the code around it, which expects them as it left them.
struct Detach(*const ThreadState);

impl Drop for Detach {
    fn drop(&mut self) {
        // SAFETY: the state of this attachment, alive for all of it (see `Python::state`).
        let block = unsafe { self.0.as_ref() };
        // Leaves even when the unpin panics (a quiescent-state hook, or a deferred destructor
        // the unpin runs): the panic then unwinds out of `attach` with the thread detached, not
        // attached for good with no attachment to end it.
        let _leave = LeaveAtTheEnd(block);
        state::unpin_at_the_end(block);
    }
}

/// [`leave`], as a guard: the last step of [`Detach`], panics included.
struct LeaveAtTheEnd<'a>(Option<&'a ThreadState>);

impl Drop for LeaveAtTheEnd<'_> {
    fn drop(&mut self) {
        // SAFETY: the thread is attached (`attach` took the GIL), and this is the end of its
        // attachment, whose state this is: the thread counts nothing until it attaches again
        // (`attach`'s closure has returned, and its token with it).
        unsafe { leave(self.0) };
    }
}

/// Ends the attachment of a thread that exits attached, as [`Detach`] would have: unpins, parks
/// the counts, leaves the world, releases the GIL.
///
/// # Safety
/// The thread is attached, `block` is its attachment's state, and the attachment's frames never
/// run again (`process::exit` inside it is running the thread's exit).
pub(crate) unsafe fn end_attachment_at_exit(block: &ThreadState) {
    drop(Detach(block));
}

/// Ends an `allow_threads`, panics included. The sections are resumed after it, by the end of
/// the detach boundary.
struct Reattach {
    block: *const ThreadState,
    /// Whether the detach unpinned (see `leave_and_run`).
    repin: bool,
}

impl Drop for Reattach {
    fn drop(&mut self) {
        // SAFETY: the state of the attachment this detach is part of, alive for all of it.
        let block = unsafe { self.block.as_ref() };
        come_back(block);
        if self.repin {
            state::pin(block);
            state::want_hold(block);
        }
    }
}

/// Runs `f` with every other thread of the runtime stopped: each attached thread parks at its
/// next checkpoint ([`Python::check`]), and detached threads (in
/// [`allow_threads`](Python::allow_threads), or not attached at all) cannot attach until `f`
/// returns. `f` runs attached on the calling thread, with its own critical sections suspended
/// (so no stopped thread waits on a lock it holds). While it runs no other thread changes an
/// object's count or contents.
///
/// In the `gil` build holding the GIL already stops every other thread: `f` just runs. In the
/// free-threaded builds one thread stops the world at a time; a second one parks until the
/// first is done, then stops it again. A thread that stays attached without reaching a
/// checkpoint (blocked without detaching, or a loop without checks) holds the stop up: the same
/// rule the `gil` build's switching already asks of attached threads. A thread waiting for the
/// lock of a [`section`](crate::section) does not: it lets the stop through within a
/// millisecond, holding none of the section's locks, and so is a stopped thread too.
///
/// Inside `f` the calling thread stays the only one running, in every build: a checkpoint
/// ([`Python::check`]) neither parks nor switches, repins nor runs hooks (the work asked for
/// with [`CheckpointWork::request`](crate::CheckpointWork::request) waits for the first
/// checkpoint after the stop), a nested stop runs its closure at once, and
/// [`allow_threads`](Python::allow_threads) suspends the thread's sections but lets no other
/// thread run (so its closure must not wait for one, nor for a lock a thread outside holds).
/// That includes a lock the caller's own suspended sections held: the stop gives it up, a
/// thread waiting for it may take it before it parks, and a section on it inside `f` then waits
/// for ever.
pub fn stop_the_world<R>(py: Python<'_>, mut f: impl FnOnce() -> R) -> R {
    loop {
        match try_stop_the_world(py, None, f) {
            Ok(result) => return result,
            Err(not_stopped) => f = not_stopped.work,
        }
    }
}

/// Why [`try_stop_the_world`] did not run its work, and the work, handed back for another try.
pub struct NotStopped<F> {
    /// Why the world did not stop.
    pub why: crate::world::StopFailed,
    /// The work, not run.
    pub work: F,
}

impl<F> std::fmt::Debug for NotStopped<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotStopped")
            .field("why", &self.why)
            .finish_non_exhaustive()
    }
}

/// [`stop_the_world`], giving up if the world does not stop within `patience` (the threads
/// stopped so far are let go), or if another thread is stopping it (this thread then parks
/// until that stop ends). For work that can wait for a better moment, such as a collection
/// triggered by a threshold. When it gives up, `f` comes back unrun in the error.
pub fn try_stop_the_world<R, F: FnOnce() -> R>(
    py: Python<'_>,
    patience: Option<std::time::Duration>,
    f: F,
) -> Result<R, NotStopped<F>> {
    state::assert_attached();
    if state::running_own_stop() {
        // Nested in this thread's own stop: the world is stopped already.
        return Ok(f());
    }
    #[cfg(feature = "gil")]
    {
        // Holding the GIL stops every other thread already; the sections are suspended as in
        // the free-threaded builds, so that `f` sees the same world in every build.
        let _ = patience;
        crate::section::detached(py, || {
            let _running = state::StopRunning::begin();
            Ok(f())
        })
    }
    #[cfg(not(feature = "gil"))]
    crate::section::detached(py, || {
        // SAFETY: this thread's state; the hold stays alive in `_restore` while `f` runs (its
        // sections are elided, as the stack's eliding goes on), and goes back when that drops.
        if let Some(hold) = unsafe { state::take_hold(py.state()) } {
            // The hold is this stop: no other thread is attached, and none attaches until it is
            // dropped. Kept out of the thread state while `f` runs, so that a detach inside `f`
            // (which drops the state's hold) leaves the world stopped, as a stopper's does.
            struct Restore(Option<state::Hold>, *const ThreadState);
            impl Drop for Restore {
                fn drop(&mut self) {
                    // SAFETY: the state of the attachment this stop runs in, alive for all of it.
                    let state = unsafe { self.1.as_ref() };
                    if let Some(hold) = self.0.take() {
                        state::restore_hold(state, hold);
                    }
                }
            }
            let _restore = Restore(Some(hold), state::current());
            let _running = state::StopRunning::begin();
            return Ok(f());
        }
        let world = state::world();
        match world.try_stop(state::presence(py.state()), state::presences, patience) {
            Ok(stopped) => {
                let running = state::StopRunning::begin();
                let result = f();
                drop(running);
                drop(stopped);
                Ok(result)
            }
            Err(why) => {
                if why == crate::world::StopFailed::Busy {
                    // Another thread is stopping the world and waits for this one: park.
                    py.park();
                }
                Err(NotStopped { why, work: f })
            }
        }
    })
}
