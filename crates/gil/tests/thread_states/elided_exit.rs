//! Exits inside critical sections: an elided section takes no lock at exit, a held lock
//! is left alone through the detaches the exit runs.

use super::*;

/// The lock of a critical section its thread elided, and exits inside.
#[cfg(not(feature = "gil"))]
static ELIDED_AT_EXIT: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();

/// What the check prints when the exit left the elided section's lock alone.
#[cfg(not(feature = "gil"))]
const ELIDED_LOCK_UNTOUCHED: &str = "the exit took no lock for the section it elided";

/// Aborts the process if [`ELIDED_AT_EXIT`] is locked when this is dropped; prints
/// [`ELIDED_LOCK_UNTOUCHED`] otherwise.
#[cfg(not(feature = "gil"))]
struct ChecksTheElidedLockOnDrop;

#[cfg(not(feature = "gil"))]
impl Drop for ChecksTheElidedLockOnDrop {
    fn drop(&mut self) {
        if ELIDED_AT_EXIT.is_locked() {
            eprintln!("the exit took the lock of a section that was elided when it began");
            std::process::abort();
        }
        println!("{ELIDED_LOCK_UNTOUCHED}");
    }
}

#[cfg(not(feature = "gil"))]
thread_local! {
    static CHECKED_LOCK_AT_EXIT: Cell<Option<ChecksTheElidedLockOnDrop>> =
        const { Cell::new(None) };
}

/// A thread that exits (`process::exit`) inside a critical section it elided, holding the world
/// alone with lock elision on, leaves that section as it stands. The lock may be gone by then,
/// with a thread-local first used inside the attachment (destroyed before the thread state):
/// the end of the attachment must not take it, as giving up the elision at an ordinary detach
/// takes the locks of the sections then open. (A static lock stands in here, so that taking it
/// shows instead of writing freed memory.)
#[test]
#[cfg(not(feature = "gil"))]
#[cfg_attr(miri, ignore = "exits the process")]
fn a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it() {
    in_child_process_printing(
        "elided_exit::a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(|_| (), false),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// As [`a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it`], with the section
/// begun inside the thread's own stop of the world, whose exit leaves the thread attached (the
/// stop lasts): letting go of the claim on the thread's stack with its state must not end the
/// elision by taking the lock.
#[test]
#[cfg(not(feature = "gil"))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_elided_section_in_the_threads_own_stop_takes_no_lock_for_it() {
    in_child_process_printing(
        "elided_exit::an_exit_inside_an_elided_section_in_the_threads_own_stop_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(|_| (), true),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// The scenario of the tests above and below: on a new thread that holds the world alone with
/// lock elision on, runs `before_the_section`, then exits inside a section on
/// [`ELIDED_AT_EXIT`] (begun inside a stop of the world of its own if `in_its_own_stop`), which
/// [`ChecksTheElidedLockOnDrop`] checks after the thread state is gone.
#[cfg(not(feature = "gil"))]
fn exit_inside_a_section_it_elided(before_the_section: fn(Python<'_>), in_its_own_stop: bool) {
    thread::spawn(move || {
        // Initialised before the thread attaches, so destroyed after its thread state.
        CHECKED_LOCK_AT_EXIT.set(Some(ChecksTheElidedLockOnDrop));
        ftrt_gil::set_lock_elision(true);
        Python::attach(|py| {
            for _ in 0..64 {
                py.check();
            }
            before_the_section(py);
            assert!(py.holds_world_alone(), "no other thread is attached");
            let exit_in_the_section =
                || ftrt_gil::section::with(py, &ELIDED_AT_EXIT, || std::process::exit(0));
            if in_its_own_stop {
                ftrt_gil::stop_the_world(py, exit_in_the_section)
            } else {
                exit_in_the_section()
            }
        });
    })
    .join()
    .expect("the process exits first");
}

/// A release that detaches (as a destructor that blocks may), run by the merge at a thread's
/// exit; frees the count.
///
/// # Safety
/// `count` is a boxed count no one else uses.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
unsafe fn release_detaching(count: std::ptr::NonNull<ftrt_refcount::BiasedCount>) {
    Python::attach(|py| py.allow_threads(|| ()));
    // SAFETY: boxed below, and this was its last reference.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
}

/// As [`a_thread_that_exits_inside_a_section_it_elided_takes_no_lock_for_it`], with a drop
/// another thread queued to the exiting one, whose release detaches while the exit merges it:
/// the detach suspends the thread's sections and its end resumes the innermost, which must not
/// be the abandoned one.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_elided_section_whose_merge_detaches_takes_no_lock_for_it() {
    in_child_process_printing(
        "elided_exit::an_exit_inside_an_elided_section_whose_merge_detaches_takes_no_lock_for_it",
        || exit_inside_a_section_it_elided(queue_a_drop_whose_release_detaches, false),
        ELIDED_LOCK_UNTOUCHED,
    );
}

/// Makes a count owned by `py`'s thread whose last reference is a drop another thread queued
/// to it, with [`release_detaching`]: the merge at the thread's exit runs that release.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn queue_a_drop_whose_release_detaches(py: Python<'_>) {
    queue_a_drop_released_by(py, release_detaching);
}

/// Makes a count owned by `py`'s thread whose last reference is a drop another thread queued
/// to it, with `release` (which frees the boxed count): the merge at the thread's exit runs it.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn queue_a_drop_released_by(py: Python<'_>, release: ftrt_refcount::biased::Release) {
    // SAFETY: used at once, attached.
    let owner = unsafe { py.count_token() };
    let count = Box::new(ftrt_refcount::BiasedCount::new_for(owner));
    count.incref();
    let count = std::ptr::NonNull::from(Box::leak(count));
    let address = count.as_ptr() as usize;
    thread::spawn(move || {
        let count =
            std::ptr::NonNull::new(address as *mut ftrt_refcount::BiasedCount).expect("not null");
        // SAFETY: one of the two references; queued to the owner.
        unsafe { ftrt_refcount::BiasedCount::decref(count, release) };
    })
    .join()
    .expect("the drop is queued");
    // SAFETY: the owner's reference, not the last (the queued one is merged at the exit).
    unsafe { ftrt_refcount::BiasedCount::decref(count, release) };
}

/// The lock of an `ftrt_lock` section its thread exits inside.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
static HELD_AT_EXIT: ftrt_lock::RawObjectLock = ftrt_lock::RawObjectLock::new();

/// Set where a detach run by the exit found [`HELD_AT_EXIT`] unlocked.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
static HELD_LOCK_GIVEN_UP: AtomicBool = AtomicBool::new(false);

/// What the check prints when the exit left the held section's lock alone.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
const HELD_LOCK_UNTOUCHED: &str = "the exit left the held section's lock alone";

/// A release that detaches, and notes whether [`HELD_AT_EXIT`] was given up meanwhile; frees
/// the count.
///
/// # Safety
/// `count` is a boxed count no one else uses.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
unsafe fn release_detaching_beside_the_held_lock(
    count: std::ptr::NonNull<ftrt_refcount::BiasedCount>,
) {
    Python::attach(|py| {
        py.allow_threads(|| {
            if !HELD_AT_EXIT.is_locked() {
                HELD_LOCK_GIVEN_UP.store(true, Ordering::SeqCst);
            }
        })
    });
    // SAFETY: boxed by `queue_a_drop_released_by`, and this was its last reference.
    drop(unsafe { Box::from_raw(count.as_ptr()) });
}

/// Prints [`HELD_LOCK_UNTOUCHED`] when dropped, unless the lock was given up (then aborts).
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
struct ChecksTheHeldLockOnDrop;

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
impl Drop for ChecksTheHeldLockOnDrop {
    fn drop(&mut self) {
        if HELD_LOCK_GIVEN_UP.load(Ordering::SeqCst) || !HELD_AT_EXIT.is_locked() {
            eprintln!("a detach at the exit gave up the lock of a section the exit left open");
            std::process::abort();
        }
        println!("{HELD_LOCK_UNTOUCHED}");
    }
}

#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
thread_local! {
    static CHECKED_HELD_LOCK_AT_EXIT: Cell<Option<ChecksTheHeldLockOnDrop>> =
        const { Cell::new(None) };
}

/// A thread that exits (`process::exit`) attached, inside an `ftrt_lock` section it holds,
/// leaves that section's lock as it stands, held, through whatever the exit still runs: here a
/// release, run by the exit's merge, that detaches, which suspends the thread's sections and
/// would unlock a lock that may be gone with a thread-local (a static one stands in here). The
/// thread's `ftrt_lock` stack is made before its thread state, so that it outlasts the state's
/// exit whatever holds it.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[cfg_attr(miri, ignore = "exits the process")]
fn an_exit_inside_an_ftrt_lock_section_leaves_its_lock_alone_through_a_detach_the_exit_runs() {
    in_child_process_printing(
        "elided_exit::an_exit_inside_an_ftrt_lock_section_leaves_its_lock_alone_through_a_detach_the_exit_runs",
        || {
            thread::spawn(|| {
                // Initialised first, so destroyed after everything below.
                CHECKED_HELD_LOCK_AT_EXIT.set(Some(ChecksTheHeldLockOnDrop));
                ftrt_lock::section::with(&ftrt_lock::RawObjectLock::new(), || ());
                Python::attach(|py| {
                    queue_a_drop_released_by(py, release_detaching_beside_the_held_lock);
                    ftrt_lock::section::with(&HELD_AT_EXIT, || std::process::exit(0));
                });
            })
            .join()
            .expect("the process exits first");
        },
        HELD_LOCK_UNTOUCHED,
    );
}
