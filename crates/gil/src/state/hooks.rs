//! The quiescent-state hooks: code of the crates above (the object model's retired-reference
//! batches) that runs on every attached thread at each of its quiescent states.

use std::sync::OnceLock;

/// How many hooks [`on_quiescent_state`] accepts (`ftrt-object` takes up to 3, on first need).
pub const MAX_QUIESCENT_STATE_HOOKS: usize = 8;

static QUIESCENT_STATE_HOOKS: [OnceLock<fn()>; MAX_QUIESCENT_STATE_HOOKS] =
    [const { OnceLock::new() }; MAX_QUIESCENT_STATE_HOOKS];

/// Registers `hook` to run on every attached thread at each of its quiescent states: every 16th
/// checkpoint ([`Python::check`](crate::Python::check)), after the thread repinned and before it
/// flushes its epoch garbage, and whenever it detaches
/// ([`Python::allow_threads`](crate::Python::allow_threads), the end of
/// [`Python::attach`](crate::Python::attach)), before it unpins.
///
/// This is for crates that keep garbage per thread before handing it to `crossbeam-epoch`, or
/// that get expired garbage handed back: the hook hands the thread's share over and frees what
/// came back, so the memory held for lock-free readers stays bounded, in objects and in time, on
/// every thread that keeps reaching checkpoints, not only on threads that keep making garbage.
/// `ftrt-object` registers its retired-reference batches here.
///
/// A hook runs on the thread whose quiescent state it is, attached and pinned (unpinned only when
/// the thread attaches after its exit, see the thread state's docs, `state.rs`), without a token.
/// It should be short: it must not block and must not detach. It may drop objects. Hooks run in
/// registration order, and not while the thread unwinds (a panic of a hook run from the drop that
/// detaches would abort the process): a thread's next quiescent state with no panic under way runs
/// them. In the `gil` build nothing is reclaimed late: there are no quiescent states and hooks
/// never run.
///
/// Registering the same hook twice runs it twice: register once (behind a `std::sync::Once`).
///
/// # Panics
/// If [`MAX_QUIESCENT_STATE_HOOKS`] hooks are registered already.
pub fn on_quiescent_state(hook: fn()) {
    assert!(
        try_on_quiescent_state(hook),
        "at most {MAX_QUIESCENT_STATE_HOOKS} quiescent-state hooks can be registered"
    );
}

/// [`on_quiescent_state`], answering `false` (and registering nothing) instead of panicking
/// when [`MAX_QUIESCENT_STATE_HOOKS`] hooks are registered already: for code that registers on
/// first need, inside work that must not unwind half-way (`ftrt-object` registers its hooks
/// inside container writes).
pub fn try_on_quiescent_state(hook: fn()) -> bool {
    // Slots fill in order: a `set` racing another on the same slot waits for it and moves on.
    QUIESCENT_STATE_HOOKS
        .iter()
        .any(|slot| slot.set(hook).is_ok())
}

/// Runs the quiescent-state hooks, unless the thread unwinds: a hook that panicked then would
/// panic inside the drop that detaches, and abort the process. What a hook hands over waits
/// for the thread's next quiescent state instead.
#[cfg(not(feature = "gil"))]
pub(super) fn run_hooks() {
    if std::thread::panicking() {
        return;
    }
    for hook in QUIESCENT_STATE_HOOKS.iter().map_while(OnceLock::get) {
        hook();
    }
}
