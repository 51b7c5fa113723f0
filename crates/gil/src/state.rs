//! The thread state: the one per-thread block that holds everything a thread carries in the
//! runtime, and the one place that says in which order attaching, detaching, checkpoints and
//! thread exit touch it.
//!
//! # What the block holds
//!
//! | part | type | from |
//! |---|---|---|
//! | the thread's id (the runtime's, and the biased counts' owner id: one id space) and merge queue | [`LocalCounts`] | `ftrt-refcount` |
//! | the claim on the thread's critical-section stack, which the object model's sections and `ftrt_lock`'s thread-local ones share | [`ThreadStack`] | `ftrt-lock` |
//! | the attach pin and the checkpoint (quiescence) counter (free-threaded builds) | `crossbeam_epoch::Guard`, `u32` | `state/quiescence.rs` |
//! | per-thread counters, summed over every thread (the object model's live-object counts) | [`counters`] | `state/counters.rs` |
//! | the crates above's per-thread values (the object model's interning cache and retired-reference batches) | [`local::Key`] slots | `state/local.rs` |
//! | the frame pointer (the object model's trashcan work list), in `CURRENT` itself | [`local::frame`] | `state/local.rs` |
//! | a copy of the owner id, in `CURRENT` itself, reset to the detached id before the exit retires the counts: what [`Python::count_token`](crate::Python::count_token) counts as, one load away (`Owner::assume_counting_as`) | `u32` | here |
//!
//! The leaf crates' per-thread state is plain values that this block owns; their own
//! thread-locals (`BiasedCount::new`, `ftrt_lock::section::with`) are only a convenience for
//! users without a runtime. The block knows nothing of objects: what the object model keeps
//! per thread goes in its generic parts ([`counters`], [`local`], the [`on_quiescent_state`]
//! hooks).
//!
//! # Reaching it
//!
//! One const thread-local without a destructor, `CURRENT`, holds a pointer to the block and the
//! attached flag: one thread-local access (a load at a fixed offset from the thread pointer, no
//! lazy-initialisation check) finds both, in every thread-local destructor too. The block itself
//! is owned by a second thread-local whose destructor runs the exit sequence, and is never
//! reached through it. A [`Python`](crate::Python) token proves the block outlives it and reaches
//! it with that one access (the object model's counts and sections do). The token stays
//! zero-sized: carrying the pointer in it doubled the size of every object handle and measured
//! no faster in the object bench.
//!
//! # The order of things
//!
//! - **First attach** of a thread: the block is made: a fresh id and merge queue are registered
//!   with `ftrt-refcount`, together with the thread's [`ThreadInfo`]. That registry is the one
//!   table of threads: it says whether an owner has exited, finds its queue, and lists the
//!   runtime's threads ([`threads`], [`registered_threads`] read the entries that carry a
//!   `ThreadInfo`; `ftrt-refcount`'s standalone owners carry none). The thread's `ftrt-lock`
//!   stack is told to wait for its locks detached (`thread::wait_for_section_detached`).
//! - **Attach** ([`Python::attach`](crate::Python::attach); an attached thread's nested `attach`
//!   just runs its closure, so these steps run only for a thread not attached): (0) unpark the
//!   biased counts (waiting for a thread merging on this one's behalf to finish: outside the
//!   world, since that merge runs a release, which may itself wait for a stop of the world to
//!   end; so a stop may run while the thread is unparked outside it, with objects queued to it,
//!   which a collection reads without the references their entries carry: see `docs/gc.md`,
//!   step 2), (1) enter the [`World`]
//!   (waiting while a stop, or another thread's hold on the world alone, lasts), (2) take the
//!   GIL, (3) mark the thread attached, (4) pin in the epoch, (5) with lock elision on
//!   ([`set_lock_elision`]), want a hold on the world at the next repin. Sections are left alone.
//! - **Detach** (the end of an attachment; [`Python::allow_threads`](crate::Python::allow_threads)
//!   first suspends the thread's sections behind a detach boundary): (1) run the quiescent-state
//!   hooks, still pinned, and flush what the thread retired since its last flush to the epoch's
//!   global queue, where the attached threads' flushes make it due while this one stays detached
//!   (neither while it unwinds, nor the flush when a stop of the world or checkpoint work is
//!   wanted), (2) unpin (with a read open, [`local::readers`], the pin is kept aside until the last
//!   one closes), (3) park the biased counts (from here until the next attach, a thread that drops
//!   the last reference to one of this thread's objects merges that object itself:
//!   [`park_counts`]), (4) mark the thread detached and leave the [`World`] (a thread holding it
//!   alone first makes its stack stop eliding, and drops the hold only after leaving), (5) release
//!   the GIL.
//! - **Reattach** (the end of `allow_threads`): (0) unpark, (1) enter the world, (2) take the
//!   GIL (first in line in fair mode), (3) mark attached, (4) pin, want a hold as an attach
//!   does, then (5) the detach boundary ends and the innermost section resumes. An
//!   `ftrt_lock` section (the thread-local functions') that has to wait, to begin or to resume,
//!   detaches around the wait while attached (but inside the thread's own stop of the world),
//!   once the stack has suspended its other sections: a lighter detach, (1) park the counts,
//!   (2) mark detached and leave the world, (3) release the GIL, and back in the order of an
//!   attach, still pinned and running no hooks (`thread::wait_for_section_detached`).
//! - **Waiting for a runtime section's lock** (the object model's, after a short spin): in
//!   place, attached and in the world, with the attach pin given up for the wait where no read
//!   is open (not inside the thread's own stop or the park's merge), and taken again once the
//!   section is recorded, before its body runs (`thread::wait_for_object_section`). It waits in
//!   tries of a millisecond, and between two lets a stop of the world through (holding none of
//!   the section's locks: the lighter detach below, and back once the stop is over), since the
//!   lock's holder may itself wait to attach (not inside the thread's own stop or the park's
//!   merge, where it waits for as long as it takes).
//! - **Checkpoint** ([`Python::check`](crate::Python::check)): (1) count it; every 16th: repin
//!   (only with no read open),
//!   run the hooks, defer a marker behind what the thread retired since its last one
//!   ([`note_retired`]) if that one has run, flush the thread's epoch garbage (only while a
//!   marker is outstanding, or on every 256th repin), with no read open and no
//!   section active: wait, unpinned, for the epoch to free what the thread retired, if it
//!   retires faster than that ([`reclamation`](crate::reclamation)), and try the hold on the
//!   world if one is wanted (free-threaded builds: it succeeds if no other thread is attached,
//!   and the stack elides from then on); (2) if a stop of the world is under way, or a thread waits
//!   for this one's hold to end (free-threaded builds): park, a detach that waits for the stop
//!   to end; if a waiter asked for the GIL (`gil` build): suspend the sections (as a detach),
//!   hand the GIL over, take it back, resume.
//! - **Exit** (the owning thread-local's destructor, panics included): (0) a thread that exits
//!   attached (`process::exit` inside an attachment, which never returns) ends that attachment
//!   first, as a detach at its end would; (1) the pointer in
//!   `CURRENT` is cleared, so whatever runs from here on (objects freed below, later
//!   thread-local destructors) attaches through the fallback below; (2) the [`local`] values
//!   are dropped (the object model hands its last retired batch to the epoch, closes its
//!   mailbox and leaves what the mailbox held to the next attached thread that settles: the
//!   exit attaches for nothing, so a stop of the world never waits on it); (3) the epoch pin, if
//!   any, is dropped; (4) the biased counts retire, still parked from the last detach: stop owning
//!   and leave the registry (and with it the runtime's list of threads); what other threads queued
//!   since the park they merge themselves, attached, so the exit frees nothing here; (5) the
//!   claim on the thread's section stack is let go (its sections have ended, as sections are
//!   scoped, unless the process exits inside one: the locks of those then stay held, and a later
//!   destructor's section on one of them waits for ever; step 0 abandoned them where the thread
//!   exited attached, and the thread's own hold on the stack does where its thread-local is
//!   torn down, `ftrt_lock::section::claim_thread_stack`).
//!   Before step 2 the thread's counters are folded into the retired sums, so the sums stay exact.
//!
//! # After exit: the one fallback
//!
//! Thread-locals die in the reverse order of their first use, so objects kept in other
//! thread-locals may die after the block (and attach to do so). With the pointer cleared, the
//! thread attaches without a block: it takes the GIL and sets the attached flag (which lives in
//! `CURRENT`, never torn down), owns nothing (the detached [`Owner`]: its counts are changed on
//! the shared side, as any non-owner's), runs unpinned (reads pin for themselves), takes its
//! sections on `ftrt_lock`'s thread-local stack (the same stack while any holder keeps it),
//! where they wait for their locks as a registered thread's do, in place, attached, letting
//! stops of the world through (the stackless hook the registration set,
//! `ftrt_lock::section::set_stackless_blocking_wait`; not as the thread-local functions'
//! sections, which wait detached and come back holding the lock), counts in the retired row,
//! and gets `None` for
//! every [`local`] value (the object model then interns through the shared table and retires each
//! reference on its own). The frame pointer lives in `CURRENT` and needs no fallback. It is not
//! registered again. Every use of the block goes through [`Python::state`](crate::Python) or
//! [`with_current`], which is where this fallback is decided, once.

use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use ftrt_lock::section::ThreadStack;
use ftrt_refcount::biased::{LocalCounts, Owner};

use crate::world::{Presence, World};

/// One thread's block. See the module docs for what each part is for and when it changes.
pub(crate) struct ThreadState {
    /// The id and merge queue: in every build, since the id is the runtime's thread id too.
    /// First: the hottest field (every allocation and free adds to it) at offset zero.
    counters: counters::Row,
    counts: LocalCounts,
    /// This thread's entry in the registry: its info and its presence in the [`World`] (`None`
    /// only if ids ran out: the thread then attaches as an anonymous one).
    #[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
    entry: Option<Arc<Registered>>,
    /// The thread's `ftrt-lock` stack, claimed: the object model's sections and those of
    /// `ftrt_lock` users on this thread go on one stack.
    pub(crate) sections: ThreadStack,
    /// While the thread holds the world alone (free-threaded builds, [`try_hold_alone`]): the
    /// hold, which the detach that ends it drops once the sections lock again.
    #[cfg(not(feature = "gil"))]
    alone: std::cell::RefCell<Option<Hold>>,
    /// The thread attached since its last try at a hold: its next repin tries.
    #[cfg(not(feature = "gil"))]
    hold_wanted: Cell<bool>,
    #[cfg(not(feature = "gil"))]
    quiescence: quiescence::Quiescence,
    /// The crates above's per-thread values ([`local::Key`]), made on first use.
    locals: local::Slots,
}

impl ThreadState {
    fn register() -> Self {
        // First, so that a refusal leaves nothing registered behind.
        let sections = ftrt_lock::section::claim_thread_stack().expect(
            "this thread's ftrt-lock section stack is claimed already \
             (ftrt_lock::section::claim_thread_stack): a thread that attaches to ftrt-gil needs \
             it for its runtime's sections",
        );
        // The one registry: `ftrt-refcount`'s, which keeps this thread's entry beside its queue.
        let mut entry = None;
        let counts = LocalCounts::register_with(|id| {
            let name = std::thread::current().name().map(str::to_owned);
            let registered = Arc::new(Registered {
                info: ThreadInfo { id, name },
                presence: Presence::new(),
            });
            entry = Some(registered.clone());
            Some(registered as ftrt_refcount::biased::Info)
        });
        ThreadState {
            counters: counters::Row::new(),
            counts,
            entry,
            sections,
            #[cfg(not(feature = "gil"))]
            alone: std::cell::RefCell::new(None),
            #[cfg(not(feature = "gil"))]
            hold_wanted: Cell::new(false),
            #[cfg(not(feature = "gil"))]
            quiescence: quiescence::Quiescence::new(),
            locals: local::Slots::new(),
        }
    }

    /// The thread's id: the runtime's and its objects' biased owner id. `None` only if ids ran
    /// out.
    pub(crate) fn id(&self) -> Option<u32> {
        self.counts.id()
    }

    /// The biased counts' owner token (the objects' counts in the `nogil` build).
    #[cfg_attr(any(feature = "gil", feature = "atomic-rc"), allow(dead_code))]
    #[inline(always)]
    pub(crate) fn owner(&self) -> Owner<'_> {
        self.counts.owner()
    }

    pub(crate) fn merge_pending(&self) -> usize {
        self.counts.merge_pending()
    }

    /// The exit sequence, in the order the module docs give. `CURRENT` no longer points here.
    fn exit(self) {
        let ThreadState {
            counts,
            entry: _,
            sections,
            #[cfg(not(feature = "gil"))]
                alone: _,
            #[cfg(not(feature = "gil"))]
                hold_wanted: _,
            #[cfg(not(feature = "gil"))]
            quiescence,
            counters: _,
            locals,
        } = self;
        // The crates above's values first (the object model's retired batches are handed to the
        // epoch and its mailbox closed; the interning cache goes), while the thread still owns
        // its objects and is registered, so what they release settles below.
        drop(locals);
        #[cfg(not(feature = "gil"))]
        drop(quiescence);
        // Give up ownership of the thread's objects, so nothing waits on a thread that is gone.
        // Leaving `ftrt-refcount`'s registry is also leaving the runtime's: it is the same one.
        // The counts were parked by the last detach and stay parked: what other threads queue
        // to the thread until it leaves the registry, they merge themselves, attached, so the
        // exit frees nothing here and needs no attachment (it would wait for a stop of the world
        // under way, and a thread that joins this one attached holds such a stop up: deadlock).
        counts.retire();
        drop(sections);
    }
}

/// The one thread-local every access goes through. Const and without a destructor (only
/// `Cell`s of plain values), so std never tears it down.
struct Current {
    /// The block, while it lives; null before the first attach and after exit.
    state: Cell<*const ThreadState>,
    attached: Cell<bool>,
    /// Set when the block has been dropped: the thread is not registered again.
    exited: Cell<bool>,
    /// [`local::frame`]: never torn down, so it works in every thread-local destructor.
    frame: Cell<*mut ()>,
    /// [`local::readers`]: never torn down either.
    readers: Cell<usize>,
    /// [`local::attach_pinned`]: never torn down either.
    attach_pinned: Cell<bool>,
    /// Whether the block keeps an attach pin aside for the reads open on the thread
    /// (`Quiescence::kept_for_reads`): the last read to close lets it go.
    pin_kept: Cell<bool>,
    /// [`local::no_reads_elsewhere`]: set when a hold on the world alone begins and no thread
    /// left the world with a read open, cleared before the hold ends.
    no_reads_elsewhere: Cell<bool>,
    /// Whether this thread left the world with a read open: counted in
    /// `LEFT_WITH_READS` until it has entered again (free-threaded builds).
    #[cfg_attr(feature = "gil", allow(dead_code))]
    left_with_reads: Cell<bool>,
    /// The biased counts' owner id of the block (its `LocalCounts`' `counting_id`) while the
    /// block lives and has not begun its exit, the detached id otherwise: what
    /// [`Python::count_token`](crate::Python::count_token) counts as, one load away.
    owner_id: Cell<u32>,
    /// [`local::counts`]: never torn down either; beside the owner id, which every count that
    /// reads it has just read.
    counts: Cell<*const ()>,
    /// [`local::deferred_path`]: inline while `counts` is set, out of line while it is null.
    deferred_path: Cell<ftrt_refcount::biased::DeferredPath>,
    /// Whether the thread is running the closure of its own stop of the world: see
    /// [`StopRunning`].
    running_stop: Cell<bool>,
    /// Whether the thread is parking its counts: see [`parking_counts`].
    #[cfg_attr(any(feature = "gil", feature = "atomic-rc"), allow(dead_code))]
    parking_counts: Cell<bool>,
}

/// Owns the block; its destructor is the thread's exit. The block is owned through a raw
/// pointer rather than a `Box`: moving a `Box` (into `Owned`, then out of it) asserts that it is
/// unique, which would invalidate the pointers `CURRENT` and the counter registry keep into it
/// (Miri's aliasing models report it).
struct Owned(Option<NonNull<ThreadState>>);

impl Owned {
    fn new() -> Self {
        let state = NonNull::from(Box::leak(Box::new(ThreadState::register())));
        // SAFETY: just made; freed only by `Drop`, which clears the pointers first thing.
        let block = unsafe { state.as_ref() };
        // SAFETY: the block stays at its address until `Drop`, which retires its row first.
        unsafe { counters::Row::register(&block.counters) };
        // Sections of `ftrt_lock` users on this thread wait for their locks detached.
        ftrt_lock::section::set_blocking_wait(Some(crate::thread::wait_for_section_detached));
        // Its own sections (the object model's) wait in place, unpinned where no read is open,
        // letting stops of the world through; so do those it takes after its exit, which go on
        // the thread's stack given no stack of the runtime's.
        block
            .sections
            .set_blocking_wait(Some(crate::thread::wait_for_object_section));
        ftrt_lock::section::set_stackless_blocking_wait(Some(
            crate::thread::wait_for_object_section,
        ));
        CURRENT.with(|current| {
            current.state.set(block);
            current.owner_id.set(block.owner().counting_id());
        });
        Owned(Some(state))
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(state) = self.0 {
            end_attachment_at_exit(state);
        }
        CURRENT.with(|current| {
            // First: the exit sequence below retires the counts, and from then on this thread
            // must count as nobody's owner.
            current
                .owner_id
                .set(ftrt_refcount::biased::Owner::detached().counting_id());
            current.state.set(std::ptr::null());
            current.exited.set(true);
            // Reads after the exit must pin (a thread that exited attached has unpinned above).
            current.attach_pinned.set(false);
            // The block drops a pin it kept aside for reads (a leaked read's) with it.
            current.pin_kept.set(false);
            // A read this thread left the world with (a leaked one: a live one would borrow
            // from a frame still running) reads nothing once the thread is gone.
            #[cfg(not(feature = "gil"))]
            uncount_read_left_open(current);
        });
        if let Some(state) = self.0.take() {
            // Nothing adds to the row any more (the pointer is cleared): fold it into the
            // totals and unlist it first. Until then another thread's `counters::total` may
            // read it through the registry's pointer, and re-making the `Box` below asserts
            // that nothing else is reading the block.
            // SAFETY: made in `new` and not freed yet.
            counters::Row::retire(unsafe { &(*state.as_ptr()).counters });
            // SAFETY: made by `Box::leak` in `new` and taken out once; neither `CURRENT` nor
            // the counter registry points here any more.
            let state = unsafe { Box::from_raw(state.as_ptr()) };
            state.exit();
        }
    }
}

/// A thread that exits attached (`process::exit` inside `Python::attach` runs the thread-local
/// destructors, this one among them, from inside the attachment, whose frames never run again)
/// first ends that attachment as its end would have: parked, out of the world, the GIL released.
/// Left marked attached, its later thread-local destructors attached as nested attachments,
/// which enter no world: a stop of the world ran beside what they did, and in the `gil` build the
/// GIL stayed taken.
///
/// Inside the thread's own stop of the world it stays attached: the stop's guard, on a frame that
/// never runs again, keeps the world stopped, and the later destructors' attachments nest inside
/// it (left, they would wait for ever for the stop to end). And a panic of what the detach runs
/// (the quiescent-state hooks, the park's merge: user destructors) is dropped here: in a
/// thread-local destructor it would turn the exit into an abort.
fn end_attachment_at_exit(state: NonNull<ThreadState>) {
    let (attached, running_stop) =
        CURRENT.with(|current| (current.attached.get(), current.running_stop.get()));
    if !attached {
        return;
    }
    // The sections open inside the attachment stay as they stand, its own stop of the world's
    // included: their frames never run again, and what an elided one guards may already be gone
    // with a thread-local destroyed before this one, where ending the elision as a detach does
    // (`leave_world`), or as the claim on the stack does when it is let go below, would take its
    // lock, as would resuming it after a detach that what the detach runs makes (a release)
    // (`a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it` and the tests
    // beside it).
    // SAFETY: the block is alive (dropped after this), and the sections open on its stack were
    // opened inside or around the attachment, whose frames never return; what the exit still
    // runs on the stack nests above the boundary this sets.
    unsafe {
        state.as_ref().sections.abandon_open_sections();
    }
    if running_stop {
        return;
    }
    let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: the thread is attached, with this block (it has no other while it lives), and
        // the attachment's frames never run again: a thread's exit runs inside an attachment
        // only when `process::exit` is called there. The block is alive: it is dropped below.
        unsafe { crate::thread::end_attachment_at_exit(state.as_ref()) };
    }));
    // The detach's last steps run even when an earlier one panics (`leave`'s guards): the
    // thread is detached either way.
    drop(ended);
}

thread_local! {
    static CURRENT: Current = const {
        Current {
            state: Cell::new(std::ptr::null()),
            attached: Cell::new(false),
            exited: Cell::new(false),
            frame: Cell::new(std::ptr::null_mut()),
            readers: Cell::new(0),
            attach_pinned: Cell::new(false),
            pin_kept: Cell::new(false),
            no_reads_elsewhere: Cell::new(false),
            left_with_reads: Cell::new(false),
            owner_id: Cell::new(ftrt_refcount::biased::Owner::detached().counting_id()),
            counts: Cell::new(std::ptr::null()),
            deferred_path: Cell::new(ftrt_refcount::biased::DeferredPath::OUT_OF_LINE),
            running_stop: Cell::new(false),
            parking_counts: Cell::new(false),
        }
    };
    static OWNED: Owned = Owned::new();
}

/// What one look at `CURRENT` finds.
#[derive(Clone, Copy)]
pub(crate) struct Here {
    /// The block, or null (after exit, or if it could not be made).
    pub(crate) state: *const ThreadState,
    pub(crate) attached: bool,
}

/// The calling thread's block and attached flag, making the block on first use (unless the
/// thread has exited: then the block stays null). One thread-local access when the block exists.
#[inline]
pub(crate) fn here() -> Here {
    let (state, attached, exited) =
        CURRENT.with(|c| (c.state.get(), c.attached.get(), c.exited.get()));
    if state.is_null() && !exited {
        return Here {
            state: make(),
            attached,
        };
    }
    Here { state, attached }
}

#[cold]
fn make() -> *const ThreadState {
    // During thread-local teardown std may refuse: the thread then runs without a block.
    OWNED
        .try_with(|owned| {
            owned
                .0
                .map_or(std::ptr::null(), |state| state.as_ptr().cast_const())
        })
        .unwrap_or(std::ptr::null())
}

/// The calling thread's block, or null (before its first attach, after its exit). One access to
/// a const thread-local without a destructor: the hot paths' way in.
#[inline(always)]
pub(crate) fn current() -> *const ThreadState {
    CURRENT.with(|c| c.state.get())
}

/// The owner id the calling thread counts as (see `Current::owner_id`). One access to a const
/// thread-local without a destructor.
#[cfg_attr(any(feature = "gil", feature = "atomic-rc"), allow(dead_code))]
#[inline(always)]
pub(crate) fn owner_id() -> u32 {
    CURRENT.with(|c| c.owner_id.get())
}

/// Runs `f` with the calling thread's block, or `None` (the fallback) when it has none: before
/// its first attach or after its exit. For callers without a token.
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&ThreadState>) -> R) -> R {
    let state = CURRENT.with(|c| c.state.get());
    // SAFETY: non-null only while `OWNED` owns the block, and `OWNED`'s destructor (which drops
    // it) clears the pointer first; no destructor runs inside `f` on this thread's `OWNED`
    // except through `f` itself, which holds no borrow of it across that (thread-local
    // destructors run one after another, never nested in a call that is still running).
    f(unsafe { state.as_ref() })
}

/// Marks the calling thread attached or not, for `Python::attach`'s fast path and
/// `local::is_attached`.
///
/// # Safety
/// Marked attached, the thread is attached: it has entered the world and holds the GIL
/// whenever it runs code of the attachment, until it is marked detached again (the fast path
/// hands out a token on this mark alone). A checkpoint's hand-over of the GIL leaves the mark:
/// the thread blocks until it has the GIL back.
pub(crate) unsafe fn set_attached(attached: bool) {
    CURRENT.with(|c| c.attached.set(attached));
}

/// Marks the calling thread as running the closure of its own stop of the world, until
/// dropped. Meanwhile it is the only thread running, and stays so: its checkpoints return at
/// once, a stop it asks for runs at once, and its `allow_threads` lets no other thread run (each
/// would otherwise wait for the stop, which only this thread's return ends, or end it early).
pub(crate) struct StopRunning(bool);

impl StopRunning {
    pub(crate) fn begin() -> Self {
        StopRunning(CURRENT.with(|c| c.running_stop.replace(true)))
    }
}

impl Drop for StopRunning {
    fn drop(&mut self) {
        CURRENT.with(|c| c.running_stop.set(self.0));
    }
}

/// Whether the calling thread is inside its own stop of the world ([`StopRunning`]).
pub(crate) fn running_own_stop() -> bool {
    CURRENT.with(|c| c.running_stop.get())
}

/// Whether the calling thread is attached right now.
#[inline]
pub fn is_attached() -> bool {
    CURRENT.with(|c| c.attached.get())
}

/// Panics unless the calling thread is attached: one load of a const thread-local and a
/// branch. Every operation that relies on the attachment a [`Python`](crate::Python) token
/// stands for checks it first: the tokens counts ask for, sections, checkpoints, detaches and
/// stops here, and the object model's reads, writes and read guards. A token, or a handle
/// tied to one, can still reach a closure running detached (the hole
/// [`Python::allow_threads`](crate::Python::allow_threads) documents); used there, it fails
/// here instead of racing the threads that run meanwhile. Runtimes built on this crate call it
/// where their own operations rely on the attachment.
#[inline(always)]
#[track_caller]
pub fn assert_attached() {
    if !is_attached() {
        used_detached();
    }
}

#[cold]
#[inline(never)]
#[track_caller]
fn used_detached() -> ! {
    panic!(
        "a `Python` token, or an object handle, used on a thread that is not attached (inside \
         `allow_threads`' closure, where it was carried in): attach again with `Python::attach` \
         inside the closure"
    );
}

/// A runtime thread's entry in the registry (`ftrt-refcount`'s, beside its queue).
pub(crate) struct Registered {
    info: ThreadInfo,
    /// Its standing in the runtime's [`World`], which stops read through the registry.
    #[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
    presence: Presence,
}

/// What the registry knows about a thread.
#[derive(Debug, Clone)]
pub struct ThreadInfo {
    /// The thread's id: the owner id its objects' biased counts record. Never reused.
    pub id: u32,
    /// The thread's name, if it has one.
    pub name: Option<String>,
}

/// Visits the runtime's threads: the entries of the one registry, `ftrt-refcount`'s (by the id
/// of their biased counts: one id space), that carry a [`ThreadInfo`]. Owners registered by
/// standalone users of `ftrt-refcount` carry none and are skipped.
fn for_each_thread(mut f: impl FnMut(&ThreadInfo)) {
    for_each_entry(|entry| f(&entry.info));
}

fn for_each_entry(mut f: impl FnMut(&Arc<Registered>)) {
    ftrt_refcount::biased::for_each_registered(|_, info| {
        if let Some(entry) = info.and_then(|info| info.clone().downcast::<Registered>().ok()) {
            f(&entry);
        }
    });
}

/// Whether attached threads should park at their next checkpoint: a stop of the world is under
/// way, or a thread waits to attach while another holds the world alone (lock elision,
/// [`set_lock_elision`]). Free-threaded builds; always `false` under the GIL, where holding it
/// is the stop. A hint, read relaxed. For quiescent-state hooks ([`on_quiescent_state`]) that
/// can put long work off: a hook runs before its thread leaves the world to park, so another
/// thread may be waiting for it.
pub fn stop_requested() -> bool {
    #[cfg(not(feature = "gil"))]
    return world().stop_requested();
    #[cfg(feature = "gil")]
    false
}

/// The runtime's one [`World`]: what [`crate::stop_the_world`] stops.
#[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
pub(crate) fn world() -> &'static World {
    static WORLD: LazyLock<World> = LazyLock::new(World::new);
    &WORLD
}

/// A registered thread's presence, kept alive for a stop.
#[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
pub(crate) struct EntryPresence(Arc<Registered>);

impl AsRef<Presence> for EntryPresence {
    fn as_ref(&self) -> &Presence {
        &self.0.presence
    }
}

/// The presences of every registered runtime thread, for a stop.
#[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
pub(crate) fn presences() -> Vec<EntryPresence> {
    let mut entries = Vec::new();
    for_each_entry(|entry| entries.push(EntryPresence(entry.clone())));
    entries
}

/// The thread's presence in the [`World`]: `None` for a thread without a block or an entry,
/// which the world counts as anonymous.
#[cfg_attr(feature = "gil", allow(dead_code))] // the GIL stops the world there
pub(crate) fn presence(state: Option<&ThreadState>) -> Option<&Presence> {
    state
        .and_then(|state| state.entry.as_deref())
        .map(|entry| &entry.presence)
}

/// Enters the [`World`] as a thread attaches (free-threaded builds: under the GIL, holding it
/// is what keeps a stopper's world still), waiting while a stop is under way.
#[inline]
pub(crate) fn enter_world(state: Option<&ThreadState>) {
    #[cfg(not(feature = "gil"))]
    {
        world().enter(presence(state));
        // Only once entered: no hold on the world can begin now until this thread leaves
        // again, so none can miss the read this thread kept open while it was out.
        CURRENT.with(uncount_read_left_open);
    }
    #[cfg(feature = "gil")]
    let _ = state;
}

/// Takes this thread out of [`LEFT_WITH_READS`] if `leave_world` counted it there: as it enters
/// the world again, or exits.
#[cfg(not(feature = "gil"))]
fn uncount_read_left_open(current: &Current) {
    if current.left_with_reads.replace(false) {
        LEFT_WITH_READS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Threads that left the world with a read open ([`local::readers`] above zero: a borrowed read
/// held across `allow_threads`), and have not entered it again. A hold on the world alone that
/// begins while any has frees nothing at once (see [`local::no_reads_elsewhere`]). A thread
/// whose exit ran already, whose last attachment through the fallback ended with a read leaked
/// (`mem::forget`), never enters again and stays counted: from then on holds free late, never
/// early (only speed is lost; not counting it would let a hold free what the read still sees).
#[cfg(not(feature = "gil"))]
static LEFT_WITH_READS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Leaves the [`World`] as a thread detaches; a thread that held it alone lets go, once its
/// sections lock again.
///
/// # Safety
/// `state` is the calling thread's, which is marked detached ([`set_attached`]) and neither
/// counts references nor touches objects until it enters the world again: a stopper goes ahead
/// once it has left.
#[inline]
pub(crate) unsafe fn leave_world(state: Option<&ThreadState>) {
    #[cfg(not(feature = "gil"))]
    {
        CURRENT.with(|c| {
            // Before the hold ends: once another thread may attach, reads may open elsewhere.
            c.no_reads_elsewhere.set(false);
            if c.readers.get() > 0 {
                // Before leaving: a thread that then holds the world alone sees this thread's
                // presence leave (its suspension is a compare-and-swap on it) after this count,
                // and reads the count after that (SeqCst: one order for both).
                LEFT_WITH_READS.fetch_add(1, Ordering::SeqCst);
                c.left_with_reads.set(true);
            }
        });
        let hold = state.and_then(|state| state.alone.borrow_mut().take());
        if let (Some(state), Some(_)) = (state, &hold) {
            // Before any other thread may attach. A detach suspended every section first, and at
            // the end of an attachment only sections of the code around it are open (held, for the
            // thread-local functions' sections begun before it, which never elide, or suspended):
            // none is elided, the only kind this gives a lock to take. (An exit inside the
            // attachment, whose sections are still open, gave the elision up before:
            // `end_attachment_at_exit`.)
            state.sections.stop_eliding();
        }
        world().leave(presence(state));
        // Last: the threads waiting to attach come in beside no one.
        drop(hold);
    }
    #[cfg(feature = "gil")]
    let _ = state;
}

/// Whether attachments may hold the world alone: see [`set_lock_elision`].
#[cfg_attr(feature = "gil", allow(dead_code))] // the GIL elides the object model's locks anyway
static LOCK_ELISION: AtomicBool = AtomicBool::new(false);

/// Whether a thread that reaches a checkpoint while no other thread is attached may hold the
/// world alone, so that its critical sections take no lock until it detaches or parks
/// (free-threaded builds; off by default). See [`Python::attach`](crate::Python::attach) for
/// what it asks of every thread: turn it on only where every attached thread keeps reaching
/// checkpoints and detaches around blocking, as an interpreter's threads do, and as the `gil`
/// build requires anyway. A change applies from each thread's next attachment; a thread
/// holding the world keeps it until it detaches. In the `gil` build the object model's sections
/// take no lock in any case, and this changes nothing.
pub fn set_lock_elision(enabled: bool) {
    LOCK_ELISION.store(enabled, Ordering::Relaxed);
}

/// Whether [`set_lock_elision`] last turned elision on (off by default).
pub fn lock_elision() -> bool {
    LOCK_ELISION.load(Ordering::Relaxed)
}

/// As an attachment begins, or comes back from `allow_threads` (free-threaded builds): the
/// thread's next repin (a checkpoint) tries to hold the world alone. At a checkpoint rather
/// than here, so that a thread that never reaches one (busy in native code, attached) never
/// holds it, and never keeps other threads from attaching.
#[inline]
pub(crate) fn want_hold(state: Option<&ThreadState>) {
    #[cfg(not(feature = "gil"))]
    if let Some(state) = state {
        state.hold_wanted.set(LOCK_ELISION.load(Ordering::Relaxed));
    }
    #[cfg(feature = "gil")]
    let _ = state;
}

/// At a repin, once per attachment ([`want_hold`]): if no other thread is attached, holds the
/// world alone, and the thread's sections elide their locks until it leaves the world
/// ([`leave_world`]). Sections holding their locks now keep them until they end.
#[cfg(not(feature = "gil"))]
fn try_hold_alone(state: &ThreadState) {
    let Some(me) = presence(Some(state)) else {
        return;
    };
    if let Some(hold) = world().try_hold_alone(me, presences) {
        *state.alone.borrow_mut() = Some(hold);
        note_reads_elsewhere();
        // SAFETY: the locks this stack's sections take are taken by attached threads only (the
        // object model's are private, and `section` asks the same of every lock taken through
        // it). While the hold lasts no other thread is attached, and none can attach before
        // `leave_world` drops it, which it does only after `stop_eliding`.
        unsafe { state.sections.start_eliding() };
    }
}

/// A thread's hold on the world alone.
#[cfg(not(feature = "gil"))]
pub(crate) type Hold = crate::world::Stopped<'static, EntryPresence>;

/// Takes the thread's hold on the world out of its state, for its own stop of the world: while
/// the stop runs, a detach (which ends the state's hold) keeps the world stopped. Give it back
/// with [`restore_hold`].
///
/// # Safety
/// `state` is the calling thread's. The hold, which keeps the world stopped while the thread's
/// stack elides its locks, stays alive, out of the state, while the stack elides (the stop's
/// closure runs elided sections meanwhile), and goes back with [`restore_hold`], or is dropped
/// only once nothing on that stack elides: dropping it lets other threads attach.
#[cfg(not(feature = "gil"))]
pub(crate) unsafe fn take_hold(state: Option<&ThreadState>) -> Option<Hold> {
    CURRENT.with(|c| c.no_reads_elsewhere.set(false));
    state.and_then(|state| state.alone.borrow_mut().take())
}

/// Gives back the hold [`take_hold`] took, once the stop has run (the thread is attached again,
/// and its stack still elides).
#[cfg(not(feature = "gil"))]
pub(crate) fn restore_hold(state: Option<&ThreadState>, hold: Hold) {
    if let Some(state) = state {
        *state.alone.borrow_mut() = Some(hold);
        note_reads_elsewhere();
    }
}

/// As a hold on the world alone begins or comes back: no other thread is attached or can
/// attach until it ends, so reads can be open elsewhere only if a thread left with one.
#[cfg(not(feature = "gil"))]
fn note_reads_elsewhere() {
    // SeqCst: after the hold's compare-and-swaps on every other presence, which follow each
    // leaving thread's increment (see `leave_world`).
    let none_left_open = LEFT_WITH_READS.load(Ordering::SeqCst) == 0;
    CURRENT.with(|c| c.no_reads_elsewhere.set(none_left_open));
}

/// Whether the thread holds the world alone (free-threaded builds; never under the GIL).
#[cfg_attr(feature = "gil", allow(dead_code))]
pub(crate) fn holds_world_alone(state: Option<&ThreadState>) -> bool {
    #[cfg(not(feature = "gil"))]
    return state.is_some_and(|state| state.alone.borrow().is_some());
    #[cfg(feature = "gil")]
    {
        let _ = state;
        false
    }
}

/// The number of threads registered with the runtime (attached at least once and not exited).
pub fn registered_threads() -> usize {
    let mut count = 0;
    for_each_thread(|_| count += 1);
    count
}

/// A snapshot of the registered threads.
pub fn threads() -> Vec<ThreadInfo> {
    let mut threads = Vec::new();
    for_each_thread(|info| threads.push(info.clone()));
    threads
}

/// Tells the runtime that the calling thread has just handed something to the epoch scheme
/// (`crossbeam-epoch`'s default collector) to free once no reader can hold it: the thread's next
/// repin defers a marker behind it (or the first after the thread's last marker has run), and
/// the repins from there flush the thread's epoch bag to
/// the global queue and try to advance the epoch until the marker has run, so what it retired
/// is freed at the pace it is made, as soon as the epoch lets it even if the thread retires
/// nothing more. A thread that retires nothing flushes only now and then, which spares threads
/// that only read and count the flush's walk over the global queue. A detach flushes what the
/// thread retired since its last flush. A thread that retires
/// faster than the epoch frees waits for it now and then ([`reclamation`](crate::reclamation)).
/// Cheap (a thread-local increment); free in the `gil` build, which reclaims nothing late.
#[inline]
pub fn note_retired() {
    with_current(quiescence::note_retired);
}

/// Whether a checkpoint should stop at a safe point: a stop of the world or checkpoint work is
/// wanted.
#[cfg(not(feature = "gil"))]
pub(crate) fn safe_point_wanted() -> bool {
    world().stop_requested() || crate::checkpoint_work::wanted()
}

mod hooks;

#[cfg(not(feature = "gil"))]
use hooks::run_hooks;
pub use hooks::{on_quiescent_state, try_on_quiescent_state, MAX_QUIESCENT_STATE_HOOKS};

/// Keeps attached threads pinned in the epoch scheme (free-threaded builds only).
#[cfg(not(feature = "gil"))]
mod quiescence;

/// The GIL build needs no reclamation scheme: the GIL orders every read before any free.
#[cfg(feature = "gil")]
mod quiescence {
    use super::ThreadState;

    #[inline(always)]
    pub(crate) fn pin(_: Option<&ThreadState>) {}
    #[inline(always)]
    pub(crate) fn unpin(_: Option<&ThreadState>) {}
    #[inline(always)]
    pub(crate) fn unpin_at_the_end(_: Option<&ThreadState>) {}
    #[inline(always)]
    pub(crate) fn note_retired(_: Option<&ThreadState>) {}
    /// Never called: no pin is ever kept.
    ///
    /// # Safety
    /// As the free-threaded builds' (`quiescence::release_kept_pin`).
    pub(crate) unsafe fn release_kept_pin() {}
    /// No pin to give up.
    ///
    /// # Safety
    /// As the free-threaded builds' (`quiescence::unpin_for_wait`), whose callers are these.
    pub(crate) unsafe fn unpin_for_wait(_: &ThreadState) -> bool {
        false
    }
}

#[cfg(not(feature = "gil"))]
pub(crate) use quiescence::checkpoint;
pub(crate) use quiescence::{pin, unpin, unpin_at_the_end, unpin_for_wait};

/// Parks the thread's biased counts for a detach (merging its queue first): until
/// [`unpark_counts`], a thread that drops the last reference to one of its objects merges that
/// object itself, so objects whose last reference is dropped
/// elsewhere while this thread waits detached (a main thread joining its workers) are freed
/// then, not when it attaches again. Only the biased build queues anything.
///
/// # Safety
/// `state` is the calling thread's, the thread is attached, and from here it creates, counts
/// or merges nothing through its counts until [`unpark_counts`]: other threads merge the
/// parked counts meanwhile, writing what the owner writes without atomics.
#[inline]
pub(crate) unsafe fn park_counts(state: Option<&ThreadState>) {
    #[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
    if let Some(state) = state.filter(|_| !parking_counts()) {
        // (Inside a park under way, a detach nested in a release it runs: parked already.)
        // The park merges what other threads queued to this one, running their releases: a
        // release that waits for a section's lock meanwhile waits in place (see
        // `parking_counts`).
        let _parking = Parking::begin();
        // SAFETY: the thread counts nothing through its counts until `unpark_counts` (the
        // caller's contract; a detached thread has no token to count with).
        unsafe { state.counts.park() };
    }
    #[cfg(any(feature = "gil", feature = "atomic-rc"))]
    let _ = state;
}

/// Marks the calling thread as parking its counts, until dropped (panics included).
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
struct Parking(bool);

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
impl Parking {
    fn begin() -> Self {
        Parking(CURRENT.with(|c| c.parking_counts.replace(true)))
    }
}

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
impl Drop for Parking {
    fn drop(&mut self) {
        CURRENT.with(|c| c.parking_counts.set(self.0));
    }
}

/// Whether the calling thread is inside [`park_counts`]: merging its queue as it parks, with its
/// counts not parked until that merge is over. A detach from inside it leaves the counts to the
/// park under way, and a wait for a section's lock there waits in place
/// (`thread::wait_for_section_detached`): detached, the thread would leave the world half-way
/// through its park, its counts neither in use nor parked, and a stop could run between two of
/// the park's merges, with a release under way: a collector in that stop could find what died
/// in it (in `ftrt-object`, objects on the release's work list, with a count of 0) and free it
/// a second time. `ftrt-object`'s releases never detach (`docs/gc.md`, step 2); a wait for a
/// lock is the one detach a release could run into without calling for it, so it waits in
/// place.
pub(crate) fn parking_counts() -> bool {
    CURRENT.with(|c| c.parking_counts.get())
}

/// Ends [`park_counts`], before anything of the attachment counts, and before the thread enters
/// the world (see the order of things in the module docs).
#[inline]
pub(crate) fn unpark_counts(state: Option<&ThreadState>) {
    #[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
    if let Some(state) = state.filter(|_| !parking_counts()) {
        // (Inside a park under way: the park goes on, and the attach after it unparks. The
        // outermost detach parks the counts, and the attach after it unparks them.)
        state.counts.unpark();
    }
    #[cfg(any(feature = "gil", feature = "atomic-rc"))]
    let _ = state;
}

pub mod counters;

pub mod local;
