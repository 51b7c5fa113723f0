//! The proof a non-atomic count demands before it can be touched.

use std::marker::PhantomData;

/// Proof that the calling thread holds the lock that serialises every access to
/// [`NonAtomicCount`](crate::NonAtomicCount)s: in ftrt, the GIL.
///
/// A non-atomic count is sound only while one thread at a time touches it, and every method of
/// `NonAtomicCount` takes this token, so code that does not hold the lock cannot even call them.
/// The token is `Copy` (pass it by value, as PyO3 passes `Python<'py>`), but neither `Send` nor
/// `Sync`: it proves something about the thread that made it, and the lifetime `'py` ends where
/// the lock may be released. `ftrt-gil` hands these out from its own token; elsewhere, build one
/// with [`GilHeld::assume_held`] while holding whatever lock plays the GIL's part.
///
/// ```compile_fail
/// fn assert_send<T: Send>() {}
/// assert_send::<ftrt_refcount::GilHeld<'static>>();
/// ```
///
/// ```compile_fail
/// fn assert_sync<T: Sync>() {}
/// // A `&GilHeld` on another thread would be a copy of the token there.
/// assert_sync::<ftrt_refcount::GilHeld<'static>>();
/// ```
#[derive(Clone, Copy, Debug)]
pub struct GilHeld<'py> {
    _not_send_or_sync: PhantomData<(&'py (), *mut ())>,
}

impl GilHeld<'_> {
    /// Asserts that the calling thread holds the GIL for the token's lifetime.
    ///
    /// # Safety
    /// Until the token (and every copy of it) is gone, no other thread may touch any
    /// `NonAtomicCount`, and passing the lock on to another thread must synchronise with that
    /// thread (a mutex handoff does: release on unlock, acquire on lock).
    #[inline(always)]
    pub unsafe fn assume_held() -> Self {
        Self {
            _not_send_or_sync: PhantomData,
        }
    }
}
