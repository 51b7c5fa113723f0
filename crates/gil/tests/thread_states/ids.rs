//! The thread state as a structure: one block per thread, one id space, one exit sequence.

use super::*;

/// One id space: the runtime's id for a thread is the owner id its objects' biased counts
/// record, and the registry lists the thread under it.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn the_owner_id_of_a_threads_objects_is_its_runtime_thread_id() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::RefCount;

    thread::spawn(|| {
        Python::attach(|py| {
            let id = py.thread_id().expect("an attached thread has an id");
            // SAFETY: used at once, attached.
            let count = <BuildCount as RefCount>::new(unsafe { py.new_object_token() });
            assert_eq!(count.owner_id(), Some(id));
            assert!(ftrt_gil::threads().iter().any(|info| info.id == id));
        });
    })
    .join()
    .unwrap();
}

#[test]
fn runtime_thread_ids_are_never_reused() {
    let ids: Vec<u32> = (0..8)
        .map(|_| {
            thread::spawn(|| Python::attach(|py| py.thread_id().expect("an id")))
                .join()
                .unwrap()
        })
        .collect();
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "an id was handed out twice: {ids:?}"
    );
}

/// The exit sequence retires the thread's biased counts (so its objects' counts become exact
/// on other threads) and takes the thread out of the registry, under the same id.
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn thread_exit_retires_the_biased_counts_and_leaves_the_registry() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::RefCount;

    let (count, id) = thread::spawn(|| {
        Python::attach(|py| {
            // SAFETY: used at once, attached.
            let token = unsafe { py.new_object_token() };
            let count = Box::new(<BuildCount as RefCount>::new(token));
            (count, py.thread_id().expect("an id"))
        })
    })
    .join()
    .unwrap();
    assert!(!ftrt_gil::threads().iter().any(|info| info.id == id));
    // The owner has retired: this thread may merge on its behalf, and the count is exact.
    assert!(count.is_unique());
    assert_eq!(count.owner_id(), None);
}

/// The object model's sections go on the thread's stack, which the thread state holds and
/// reaches through the token, beside `ftrt-lock`'s thread-local sections: one stack, which
/// `ftrt_lock::section::depth` sees whole, and which a detach suspends whole (and resumes as
/// one stack resumes, innermost first).
#[test]
#[cfg(not(feature = "gil"))]
fn object_sections_share_the_threads_stack_with_ftrt_lock_sections_and_detaching_suspends_all() {
    use ftrt_lock::section::{self as lock_section, SectionDepth};
    use ftrt_lock::RawObjectLock;

    let (user, object) = (RawObjectLock::new(), RawObjectLock::new());
    Python::attach(|py| {
        lock_section::with(&user, || {
            ftrt_gil::section::with(py, &object, || {
                let one_stack = SectionDepth {
                    open: 2,
                    active: 2,
                    elided: 0,
                };
                assert_eq!(lock_section::depth(), one_stack);
                py.allow_threads(|| {
                    assert!(!user.is_locked());
                    assert!(!object.is_locked());
                });
                // The innermost section resumes; the outer one as it becomes innermost.
                assert!(object.is_locked());
                assert!(!user.is_locked());
            });
            assert!(user.is_locked());
        });
    });
}

/// A thread's counting token (`count_token`, its owner id kept in a thread-local) owns its
/// objects while the thread is registered, and nothing once its exit has retired its counts:
/// an object it made, counted in a thread-local destructor after the exit, is counted on the
/// shared side (the retired owner's local count may be merged by any thread by then).
#[test]
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
fn the_counting_token_owns_the_threads_objects_until_its_exit_retires_them() {
    use ftrt_gil::BuildCount;
    use ftrt_refcount::{Counting, RefCount};

    static AFTER_EXIT: std::sync::Mutex<Option<Counting>> = std::sync::Mutex::new(None);

    struct CountsAtExit(Cell<Option<Box<BuildCount>>>);
    impl Drop for CountsAtExit {
        fn drop(&mut self) {
            let count = self.0.take().expect("made by the thread");
            // SAFETY: used at once, attached.
            let counted = Python::attach(|py| count.incref_counting(unsafe { py.count_token() }));
            *AFTER_EXIT.lock().unwrap() = Some(counted);
        }
    }
    thread_local! {
        static KEPT: CountsAtExit = const { CountsAtExit(Cell::new(None)) };
    }
    in_child_process(
        "ids::the_counting_token_owns_the_threads_objects_until_its_exit_retires_them",
        || {
            thread::spawn(|| {
                // Touched before the thread attaches, so destroyed after its thread state.
                KEPT.with(|_| ());
                Python::attach(|py| {
                    // SAFETY: used at once, attached.
                    let token = unsafe { py.new_object_token() };
                    let count = Box::new(<BuildCount as RefCount>::new(token));
                    assert_eq!(count.owner_id(), py.thread_id());
                    // SAFETY: used at once, attached.
                    let token = unsafe { py.count_token() };
                    assert_eq!(count.incref_counting(token), Counting::Local);
                    KEPT.with(|kept| kept.0.set(Some(count)));
                });
            })
            .join()
            .unwrap();
            assert_eq!(*AFTER_EXIT.lock().unwrap(), Some(Counting::Shared));
        },
    );
}

/// After its exit a thread attaches through the one fallback: no id, not registered again.
#[test]
fn a_thread_attached_after_its_exit_has_no_id() {
    in_child_process("ids::a_thread_attached_after_its_exit_has_no_id", || {
        struct Probe;
        impl Drop for Probe {
            fn drop(&mut self) {
                Python::attach(|py| assert_eq!(py.thread_id(), None));
                // Its sections go to `ftrt-lock`'s thread-local stack (or the stand-in for it),
                // and still lock in the free-threaded builds.
                let lock = ftrt_lock::RawObjectLock::new();
                Python::attach(|py| {
                    ftrt_gil::section::with_if(py, Some(&lock), || {
                        assert_eq!(lock.is_locked(), ftrt_gil::BUILD != "gil");
                    });
                });
                assert!(!lock.is_locked());
                ATTACHED_ON_DROP.store(true, Ordering::SeqCst);
            }
        }
        thread_local! {
            static PROBE: Cell<Option<Probe>> = const { Cell::new(None) };
        }
        thread::spawn(|| {
            // Initialised before the thread attaches, so destroyed after its thread state.
            PROBE.set(Some(Probe));
            Python::attach(|py| assert!(py.thread_id().is_some()));
        })
        .join()
        .unwrap();
        assert!(ATTACHED_ON_DROP.load(Ordering::SeqCst));
    });
}
