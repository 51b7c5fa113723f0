//! The proof a non-atomic count demands before it can be touched.

use std::marker::PhantomData;

/// Proof that the calling thread holds the lock that serialises every access to
/// [`NonAtomicCount`](crate::NonAtomicCount)s: in ftrt, the GIL.
///
/// A non-atomic count is sound only while one thread at a time touches it, and every method of
/// `NonAtomicCount` takes this token, so code that does not hold the lock cannot even call them.
/// The token is `Copy` (pass it by value, as PyO3 passes `Python<'py>`), but neither `Send` nor
/// `Sync`: it proves something about the thread that made it, which gives the lock up only where
/// no code holding the token runs (blocked while another thread holds it, or in a closure that
/// cannot capture the token), within the lifetime `'py`. `ftrt-gil` hands these out from its
/// own token; elsewhere, build one with [`GilHeld::assume_held`] while holding whatever lock
/// plays the GIL's part.
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
    /// Asserts that the calling thread holds the GIL whenever it uses the token.
    ///
    /// # Safety
    /// Until the token (and every copy of it) is gone, whenever the calling thread touches a
    /// `NonAtomicCount` with it, it holds the lock, so no other thread touches any meanwhile.
    /// The thread may let other threads take the lock in between, where no code holding the
    /// token runs, provided every hand-over synchronises the two threads (a mutex's does:
    /// release on unlock, acquire on lock).
    #[inline(always)]
    pub unsafe fn assume_held() -> Self {
        Self {
            _not_send_or_sync: PhantomData,
        }
    }
}
