//! The runtime's list of threads, and releases that run while a thread parks its counts or
//! attaches.

use super::*;

#[test]
fn the_runtime_lists_its_threads_from_the_one_registry_under_their_biased_ids() {
    // A standalone owner of `ftrt-refcount` registers in the same table, without runtime info:
    // it is not one of the runtime's threads.
    let standalone = ftrt_refcount::biased::LocalCounts::register();
    let standalone_id = standalone.id().unwrap();
    let info = std::thread::Builder::new()
        .name("listed".into())
        .spawn(|| {
            Python::attach(|py| {
                let id = py.thread_id().unwrap();
                let listed: Vec<_> = threads().into_iter().filter(|t| t.id == id).collect();
                assert_eq!(listed.len(), 1);
                (id, listed[0].name.clone())
            })
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(info.1.as_deref(), Some("listed"));
    assert!(threads().iter().all(|t| t.id != info.0), "gone once exited");
    assert!(threads().iter().all(|t| t.id != standalone_id));
    drop(standalone);
}

/// Counts queued to a thread whose detach's park then runs their releases, and releases that
/// panic once they are told to.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
mod queued_releases {
    use std::ptr::NonNull;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use ftrt_refcount::BiasedCount;

    pub static RELEASED: AtomicUsize = AtomicUsize::new(0);
    pub static PANIC_NEXT: AtomicBool = AtomicBool::new(false);
    /// One test at a time: they share the counters.
    pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    unsafe fn release(_count: NonNull<BiasedCount>) {
        RELEASED.fetch_add(1, Ordering::SeqCst);
        if PANIC_NEXT.swap(false, Ordering::SeqCst) {
            panic!("a release that fails");
        }
    }

    /// A count owned by the calling thread, with one reference (leaked: `release` frees nothing).
    pub fn owned_count(py: ftrt_gil::Python<'_>) -> usize {
        // SAFETY: used at once, attached (the token proves it, checked as it is made).
        let token = unsafe { py.new_object_token() };
        std::ptr::from_mut(Box::leak(Box::new(BiasedCount::new_for(token)))) as usize
    }

    /// Drops the count's one reference on another thread, with the releases above: queued to
    /// its owner, or merged there and then if the owner is parked.
    pub fn drop_elsewhere(address: usize) {
        drop_elsewhere_with(address, release);
    }

    /// [`drop_elsewhere`], with a release of the caller's (which must free nothing).
    pub fn drop_elsewhere_with(address: usize, release: ftrt_refcount::biased::Release) {
        std::thread::spawn(move || {
            let count = NonNull::new(address as *mut BiasedCount).unwrap();
            // SAFETY: the count's one reference, given up here; `release` frees nothing.
            let _ = unsafe { BiasedCount::decref(count, release) };
        })
        .join()
        .unwrap();
    }
}

/// A release that panics while `allow_threads` parks the counts unwinds out of it with the
/// thread attached as before: its counts unparked (another thread then queues to it rather
/// than merging for it) and the world entered. (The park's panic skipped the rest of the
/// detach and the re-attach: the thread went on counting with its counts parked, which other
/// threads' merges write meanwhile, a data race.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_panics_in_the_park_of_allow_threads_leaves_the_thread_attached_and_unparked() {
    use queued_releases::*;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        let (first, second) = (owned_count(py), owned_count(py));
        let released = RELEASED.load(Ordering::SeqCst);
        drop_elsewhere(first);
        assert_eq!(
            RELEASED.load(Ordering::SeqCst),
            released,
            "queued to its owner"
        );
        PANIC_NEXT.store(true, Ordering::SeqCst);
        let detach =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| py.allow_threads(|| ())));
        assert!(detach.is_err(), "the release's panic");
        assert_eq!(RELEASED.load(Ordering::SeqCst), released + 1);
        assert!(ftrt_gil::is_attached());
        drop_elsewhere(second);
        assert_eq!(
            RELEASED.load(Ordering::SeqCst),
            released + 1,
            "merged by another thread while its owner is attached"
        );
        py.merge_pending();
        assert_eq!(RELEASED.load(Ordering::SeqCst), released + 2);
        // Stops of the world find the thread as attached as it is.
        ftrt_gil::stop_the_world(py, || ());
    });
}

/// A release that panics while the end of an attachment parks the counts still detaches the
/// thread. (The rest of the detach was skipped: the thread stayed attached with no attachment
/// to end it, and stops waited for it for ever.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_panics_in_the_park_at_the_end_of_an_attachment_still_detaches() {
    use queued_releases::*;
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let attachment = std::panic::catch_unwind(|| {
        Python::attach(|py| {
            drop_elsewhere(owned_count(py));
            PANIC_NEXT.store(true, Ordering::SeqCst);
        })
    });
    assert!(attachment.is_err(), "the release's panic");
    assert!(
        !ftrt_gil::is_attached(),
        "attached after the attachment ended"
    );
    let stopped = finishes("a stop from another thread", || {
        Python::attach(|py| ftrt_gil::try_stop_the_world(py, Some(HANG), || ()).is_ok())
    });
    assert!(stopped);
}

/// A release that detaches (`allow_threads`, from an attach nested in it) while the thread's
/// own detach parks the counts: the nested detach leaves the world and comes back, leaving the
/// counts to the park under way. (Its return waited for the merge it was part of: a thread
/// waiting for itself.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_detaches_while_the_detach_parks_the_counts_does_not_wait_for_itself() {
    use std::ptr::NonNull;

    use ftrt_refcount::BiasedCount;
    static DETACHED_RUNS: AtomicUsize = AtomicUsize::new(0);
    unsafe fn release(_count: NonNull<BiasedCount>) {
        Python::attach(|py| {
            py.allow_threads(|| DETACHED_RUNS.fetch_add(1, Ordering::SeqCst));
        });
    }
    // Taken first: a thread blocked while attached would hold up the other tests' stops.
    let _serial = queued_releases::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    finishes("the detach", || {
        Python::attach(|py| {
            queued_releases::drop_elsewhere_with(queued_releases::owned_count(py), release);
            // The park merges the queued count: its release detaches.
            py.allow_threads(|| ());
            assert_eq!(DETACHED_RUNS.load(Ordering::SeqCst), 1);
            assert!(ftrt_gil::is_attached());
            // Unparked: what another thread drops now is queued, not merged for this thread.
            let released = queued_releases::RELEASED.load(Ordering::SeqCst);
            queued_releases::drop_elsewhere(queued_releases::owned_count(py));
            assert_eq!(queued_releases::RELEASED.load(Ordering::SeqCst), released);
            py.merge_pending();
            assert_eq!(
                queued_releases::RELEASED.load(Ordering::SeqCst),
                released + 1
            );
        });
    });
}

/// A thread that attaches while another thread merges one of its counts for it (dropped while
/// it was detached) waits for that merge outside the world, so a stop of the world that begins
/// meanwhile does not wait for it. (It entered the world first: when the merge's release
/// attached during a stop, the stopper waited for the attaching thread, that thread for the
/// merge, and the merge for the stop.)
///
/// The stop begins once the owner waits for the merge (a probe of `ftrt_refcount` says so); a
/// run where another test's stop let the release go on first tests nothing, and passes.
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn an_attaching_thread_waits_for_a_merge_on_its_behalf_outside_the_world() {
    use std::ptr::NonNull;
    use std::sync::atomic::AtomicBool;

    use ftrt_refcount::BiasedCount;
    static IN_RELEASE: AtomicBool = AtomicBool::new(false);
    static RELEASED: AtomicBool = AtomicBool::new(false);
    static STOP_RAN: AtomicBool = AtomicBool::new(false);
    /// Attaches once a stop of the world is asked for, so it waits for the stop to end (the
    /// dropping thread attaches for the first time here: a new thread waits for a stop under
    /// way, whether the stopper listed it or not); or once the stop has run, if it came and
    /// went between two looks.
    unsafe fn release(_count: NonNull<BiasedCount>) {
        IN_RELEASE.store(true, Ordering::SeqCst);
        spin_until(|| ftrt_gil::stop_requested() || STOP_RAN.load(Ordering::SeqCst));
        Python::attach(|_py| ());
        RELEASED.store(true, Ordering::SeqCst);
    }
    // Taken first: a thread blocked while attached would hold up the other tests' stops.
    let _serial = queued_releases::SERIAL
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let (send_owner_id, owner_id) = mpsc::channel();
    let owner = thread::spawn(move || {
        Python::attach(|py| {
            send_owner_id.send(py.thread_id().expect("an id")).unwrap();
            let address = queued_releases::owned_count(py);
            py.allow_threads(|| {
                // The owner is parked: the drop merges the count on the dropping thread.
                thread::spawn(move || {
                    let count = NonNull::new(address as *mut BiasedCount).unwrap();
                    // SAFETY: the count's one reference, given up here; `release` frees nothing.
                    let _ = unsafe { BiasedCount::decref(count, release) };
                });
                spin_until(|| IN_RELEASE.load(Ordering::SeqCst));
            });
            // Attached again only once the merge for this thread was over.
            RELEASED.load(Ordering::SeqCst)
        })
    });
    let owner_id = owner_id.recv().unwrap();
    // Until the owner, attaching, waits for the merge under way for it; or until the release
    // is over (another test's stop let it go on first: this run then tests nothing).
    spin_until(|| {
        ftrt_refcount::biased::unpark_waiting_for_merges(owner_id)
            || RELEASED.load(Ordering::SeqCst)
    });
    let stopped = Python::attach(|py| {
        let mut work = || STOP_RAN.store(true, Ordering::SeqCst);
        loop {
            match ftrt_gil::try_stop_the_world(py, Some(HANG), work) {
                // Another test's stop: this one parked until it ended.
                Err(ftrt_gil::NotStopped {
                    why: ftrt_gil::world::StopFailed::Busy,
                    work: back,
                }) => work = back,
                result => break result.is_ok(),
            }
        }
    });
    assert!(stopped, "the stop waited for the attaching thread");
    assert!(owner.join().unwrap(), "attached during the merge for it");
}
