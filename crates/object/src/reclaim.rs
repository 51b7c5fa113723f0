//! Keeping objects and arrays alive for lock-free readers.
//!
//! Free-threaded builds read list items and dict entries without locks. A reader may load a
//! pointer from a slot just as a writer replaces or removes it, so whatever a writer takes out
//! of a container is *retired* through `crossbeam-epoch` rather than released at once: removed
//! references are dropped, and old item arrays and hash tables freed, only after every thread
//! that was pinned at the time has unpinned. Attached threads stay pinned between checkpoints
//! (`ftrt-gil` pins on attach and repins at `Python::check`), so a read pins for free.
//!
//! A reader that loaded a pointer while pinned may therefore increment its count without a
//! try-increment: the container's reference, or the retired reference still waiting for the
//! epoch, keeps the count above zero until the reader's guard is gone.
//!
//! The `gil` build reads and writes under the GIL, so nothing can race: retiring is immediate
//! and the guard is `crossbeam_epoch::unprotected()`.

use crossbeam_epoch::{Guard, Owned, Shared as EpochShared};

use crate::refs::OwnedRef;

/// Runs `f` with a guard that protects pointers loaded from containers.
#[inline]
pub(crate) fn with_guard<R>(f: impl FnOnce(&Guard) -> R) -> R {
    #[cfg(not(feature = "gil"))]
    {
        // Nested inside the attach guard: no fence, just a counter.
        let guard = crossbeam_epoch::pin();
        f(&guard)
    }
    #[cfg(feature = "gil")]
    {
        // SAFETY: under the GIL no other thread touches objects concurrently, so nothing loaded
        // here can be freed while it is used (and retiring through this guard is immediate).
        f(unsafe { crossbeam_epoch::unprotected() })
    }
}

/// Drops a reference taken out of a container once no reader can still be using it.
pub(crate) fn retire_ref(reference: OwnedRef, guard: &Guard) {
    // SAFETY: dropping an `OwnedRef` is safe on any thread (it is `Send`); the epoch delays it
    // past every reader that could have loaded the pointer.
    unsafe { guard.defer_unchecked(move || drop(reference)) };
}

/// Frees an array or table that was replaced, once no reader can still be using it.
///
/// # Safety
/// `old` is no longer reachable from its container, and its contents' references were moved
/// to the replacement (freeing it must not release them).
pub(crate) unsafe fn retire_array<T: Send>(old: EpochShared<'_, T>, guard: &Guard) {
    // SAFETY: unreachable per the caller; the epoch delays the free past current readers.
    unsafe { guard.defer_destroy(old) };
}

/// Allocates an array or table for publication.
pub(crate) fn owned<T>(value: T) -> Owned<T> {
    Owned::new(value)
}
