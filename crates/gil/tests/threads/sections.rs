//! Critical sections across attaches and detaches, and the detach around a wait for a
//! section's lock.

use super::*;

#[test]
fn allow_threads_suspends_critical_sections_and_resumes_the_innermost() {
    use ftrt_lock::{section, RawObjectLock};
    let lock = RawObjectLock::new();
    Python::attach(|py| {
        section::with(&lock, || {
            assert!(lock.is_locked());
            let locked_while_detached = py.allow_threads(|| lock.is_locked());
            assert!(!locked_while_detached);
            assert!(lock.is_locked());
        });
    });
}

#[test]
fn the_object_sections_lock_only_in_free_threaded_builds() {
    let (a, b) = (
        ftrt_lock::RawObjectLock::new(),
        ftrt_lock::RawObjectLock::new(),
    );
    let locks_expected = ftrt_gil::BUILD != "gil";
    Python::attach(|py| {
        ftrt_gil::section::with(py, &a, || assert_eq!(a.is_locked(), locks_expected));
        ftrt_gil::section::with_if(py, Some(&a), || assert_eq!(a.is_locked(), locks_expected));
        // No lock given, none taken, in any build.
        ftrt_gil::section::with_if(py, None, || assert!(!a.is_locked()));
        ftrt_gil::section::with2(py, &a, &b, || {
            assert_eq!(
                (a.is_locked(), b.is_locked()),
                (locks_expected, locks_expected)
            )
        });
        // `ftrt_lock`'s own sections are the user's, and lock in every build.
        ftrt_lock::section::with(&a, || assert!(a.is_locked()));
    });
    assert!(!a.is_locked() && !b.is_locked());
}

/// Whether another thread could take `lock` right now (and it gives it straight back).
fn free_to_another_thread(lock: &ftrt_lock::RawObjectLock) -> bool {
    thread::scope(|s| {
        s.spawn(|| {
            let took = lock.try_lock();
            if took {
                // SAFETY: taken just above.
                unsafe { lock.unlock() };
            }
            took
        })
        .join()
        .unwrap()
    })
}

#[test]
fn attaching_inside_a_critical_section_leaves_the_section_locked() {
    use ftrt_lock::{section, RawObjectLock};
    // A fresh thread, so that `attach` really attaches (and detaches at its end).
    thread::spawn(|| {
        let lock = RawObjectLock::new();
        section::with(&lock, || {
            assert!(!ftrt_gil::is_attached());
            Python::attach(|_py| ());
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 1,
                    elided: 0
                },
                "the attachment's end suspended a section it did not open"
            );
            assert!(
                !free_to_another_thread(&lock),
                "the section runs on without its lock"
            );
        });
        assert!(!lock.is_locked());
    })
    .join()
    .unwrap();
}

/// The attachment's inner section blocks, which suspends the outer one; the inner one's end
/// resumes it; and the attachment's end must leave it so.
#[test]
fn attaching_inside_a_critical_section_whose_inner_section_blocks_leaves_the_outer_one_locked() {
    use ftrt_lock::{section, RawObjectLock};
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    let (inner_taken, taken) = mpsc::channel();
    thread::scope(|s| {
        s.spawn(|| {
            inner.lock();
            inner_taken.send(()).unwrap();
            // The other thread blocks on `inner` only after suspending its section on `outer`.
            spin_until(|| !outer.is_locked());
            // SAFETY: locked above.
            unsafe { inner.unlock() };
        });
        let (outer, inner) = (&outer, &inner);
        s.spawn(move || {
            section::with(outer, || {
                taken.recv().unwrap();
                Python::attach(|_py| section::with(inner, || ()));
                assert_eq!(
                    section::depth(),
                    section::SectionDepth {
                        open: 1,
                        active: 1,
                        elided: 0
                    },
                    "the attachment's end suspended a section it did not open"
                );
                assert!(
                    !free_to_another_thread(outer),
                    "the section runs on without its lock"
                );
            });
        });
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

/// Two threads, each reading and writing a counter inside one lock's section with an
/// attachment in between: the section must exclude the other thread for its whole body.
#[test]
fn increments_inside_a_critical_section_that_attaches_are_exact() {
    use ftrt_lock::{section, RawObjectLock};
    const THREADS: u64 = 2;
    const PER_THREAD: u64 = if cfg!(miri) { 50 } else { 20_000 };
    let lock = RawObjectLock::new();
    let counter = std::sync::atomic::AtomicU64::new(0);
    let start = std::sync::Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                for _ in 0..PER_THREAD {
                    section::with(&lock, || {
                        // A read-modify-write split in two: exact only under mutual exclusion.
                        let value = counter.load(Ordering::Relaxed);
                        Python::attach(|_py| ());
                        counter.store(value + 1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(
        counter.into_inner(),
        THREADS * PER_THREAD,
        "updates were lost"
    );
}

#[test]
fn a_section_that_begins_and_ends_while_detached_leaves_the_outer_section_suspended() {
    use ftrt_lock::{section, RawObjectLock};
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    Python::attach(|py| {
        section::with(&outer, || {
            let outer_free_while_detached = py.allow_threads(|| {
                section::with(&inner, || ());
                free_to_another_thread(&outer)
            });
            assert!(
                outer_free_while_detached,
                "a section ending while detached re-locked the outer section"
            );
            assert!(
                !free_to_another_thread(&outer),
                "the outer section was not resumed on re-attaching"
            );
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 1,
                    elided: 0
                }
            );
        });
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

/// The deadlock: a detached thread waits for a value that another thread delivers from
/// inside a section on the lock the first thread's outer section holds.
#[test]
fn a_detached_thread_that_opened_a_section_does_not_block_the_thread_it_waits_for() {
    use ftrt_lock::{section, RawObjectLock};
    finishes("the detached thread's wait", || {
        let (outer, inner) = (Arc::new(RawObjectLock::new()), RawObjectLock::new());
        let (deliver, delivered) = mpsc::channel();
        let (ask, asked) = mpsc::channel::<()>();
        let deliverer = {
            let outer = outer.clone();
            thread::spawn(move || {
                asked.recv().unwrap();
                section::with(&outer, || deliver.send(42).unwrap());
            })
        };
        let inner = &inner;
        Python::attach(|py| {
            section::with(&outer, || {
                py.allow_threads(move || {
                    section::with(inner, || ());
                    ask.send(()).unwrap();
                    delivered.recv().unwrap()
                })
            })
        });
        deliverer.join().unwrap();
    });
}

/// A section taken before attaching, suspended across `allow_threads`, is resumed without
/// holding the runtime up: while the thread waits for the section's lock it is detached, so
/// another thread that holds the lock and attaches before letting it go gets through, under the
/// GIL and past a stop of the world that begins meanwhile. (The resume used to wait attached:
/// holding the GIL, or holding the stop up, which the lock's holder waited for.)
#[test]
fn a_thread_that_waits_to_resume_a_section_after_allow_threads_is_detached_meanwhile() {
    use ftrt_lock::{section, RawObjectLock};
    static LOCK: RawObjectLock = RawObjectLock::new();
    static WAITED_FOR: AtomicBool = AtomicBool::new(false);
    static STOPPED: AtomicBool = AtomicBool::new(false);
    finishes("the resumed section", || {
        let (detached, wait_for_detached) = mpsc::channel();
        let (taken, wait_for_taken) = mpsc::channel();
        let holder = thread::spawn(move || {
            wait_for_detached.recv().unwrap();
            section::with(&LOCK, || {
                taken.send(()).unwrap();
                // The other thread re-attaches and blocks waiting for the lock; a stop begins
                // (and, unless that thread holds it up, may end). Another test's stop, raised
                // first, lets this thread go as well: the overlap is then that stop's, and the
                // stopper's comes after the lock is let go.
                spin_until(|| LOCK.parked_waiters() > 0);
                WAITED_FOR.store(true, Ordering::SeqCst);
                spin_until(|| ftrt_gil::stop_requested() || STOPPED.load(Ordering::SeqCst));
                Python::attach(|py| py.check());
            })
        });
        let stopper = thread::spawn(move || {
            // Once the holder has seen the waiter (which leaves the queue once let go).
            spin_until(|| WAITED_FOR.load(Ordering::SeqCst));
            Python::attach(|py| ftrt_gil::stop_the_world(py, || ()));
            STOPPED.store(true, Ordering::SeqCst);
        });
        section::with(&LOCK, move || {
            Python::attach(move |py| {
                py.allow_threads(move || {
                    detached.send(()).unwrap();
                    wait_for_taken.recv().unwrap();
                });
                assert!(LOCK.is_locked());
            })
        });
        holder.join().unwrap();
        stopper.join().unwrap();
    });
}

/// Locks `lock` on another thread, returning once it is held, and unlocks it once a thread
/// has blocked waiting for it.
#[cfg(not(feature = "gil"))]
fn hold_until_waited_for(lock: &'static ftrt_lock::RawObjectLock) -> thread::JoinHandle<()> {
    let (held, wait_for_held) = mpsc::channel();
    let holder = thread::spawn(move || {
        lock.lock();
        held.send(()).unwrap();
        spin_until(|| lock.parked_waiters() > 0);
        // SAFETY: locked above, on this thread.
        unsafe { lock.unlock() };
    });
    wait_for_held.recv().unwrap();
    holder
}

/// The detach around a wait for a section's lock runs no quiescent-state hooks: nothing but the
/// wait runs in it, so nothing there can take a section and wait again (which, detaching again,
/// ran the same hooks again, without end).
#[cfg(not(feature = "gil"))]
#[test]
fn the_detach_around_a_wait_for_a_sections_lock_runs_no_hooks() {
    use common::hook_runs;
    use ftrt_lock::{section, RawObjectLock};
    static LOCK: RawObjectLock = RawObjectLock::new();
    hook_runs();
    finishes("the wait", || {
        let holder = hold_until_waited_for(&LOCK);
        let runs = Python::attach(|_py| {
            let before = hook_runs();
            section::with(&LOCK, || ());
            hook_runs() - before
        });
        holder.join().unwrap();
        assert_eq!(runs, 0, "hooks ran while the thread waited for the lock");
    });
}

/// The detach around a wait for a section's lock parks the biased counts, which merges what
/// other threads queued to this one; a release run there that waits for a section's lock too
/// waits in place. (It detached again, and its return waited for the merge it was part of: a
/// thread waiting for itself.)
#[cfg(not(any(feature = "gil", feature = "atomic-rc")))]
#[test]
fn a_release_that_waits_for_a_section_while_the_detach_parks_the_counts_waits_in_place() {
    use std::ptr::NonNull;

    use ftrt_lock::{section, RawObjectLock};
    use ftrt_refcount::BiasedCount;
    static LOCK: RawObjectLock = RawObjectLock::new();
    static RELEASED: AtomicUsize = AtomicUsize::new(0);
    /// Takes a section on the lock the thread is waiting for.
    unsafe fn release(_count: NonNull<BiasedCount>) {
        section::with(&LOCK, || ());
        RELEASED.fetch_add(1, Ordering::SeqCst);
    }
    finishes("the wait", || {
        Python::attach(|py| {
            // SAFETY: used at once, attached.
            let token = unsafe { py.new_object_token() };
            let count = Box::leak(Box::new(BiasedCount::new_for(token)));
            let address = std::ptr::from_mut(count) as usize;
            // Another thread drops the one reference: queued to this thread, its owner.
            thread::spawn(move || {
                let count = NonNull::new(address as *mut BiasedCount).unwrap();
                // SAFETY: the count's one reference, given up here; `release` frees nothing.
                assert!(!unsafe { BiasedCount::decref(count, release) });
            })
            .join()
            .unwrap();
            let holder = hold_until_waited_for(&LOCK);
            // Contended: the detach parks the counts, whose merge runs `release`.
            section::with(&LOCK, || ());
            holder.join().unwrap();
        });
        assert_eq!(RELEASED.load(Ordering::SeqCst), 1);
    });
}
