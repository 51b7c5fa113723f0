//! Critical sections: their stacks, nesting, hooks, detaches, elision and thread-local
//! destructors.

use super::*;

#[test]
fn a_section_holds_its_lock_and_releases_it_at_the_end() {
    let lock = RawObjectLock::new();
    section::with(&lock, || {
        assert!(lock.is_locked());
    });
    assert!(!lock.is_locked());
    assert_eq!(section::depth(), section::SectionDepth::default());
}

#[test]
fn a_panicking_section_releases_its_lock() {
    let lock = RawObjectLock::new();
    let result = std::panic::catch_unwind(|| section::with(&lock, || panic!("boom")));
    assert!(result.is_err());
    assert!(!lock.is_locked());
    assert_eq!(section::depth().open, 0);
    // The object stays usable.
    assert_eq!(section::with(&lock, || 7), 7);
}

#[test]
fn two_object_sections_accept_the_same_object_twice() {
    let lock = RawObjectLock::new();
    section::with2(&lock, &lock, || assert!(lock.is_locked()));
    assert!(!lock.is_locked());
}

#[test]
fn nesting_a_section_on_a_lock_the_thread_already_holds_suspends_the_outer_one() {
    let lock = RawObjectLock::new();
    section::with(&lock, || {
        section::with(&lock, || {
            // The outer section gave the lock up so the inner one could take it.
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 2,
                    active: 1,
                    elided: 0
                }
            );
        });
        // Resumed when the inner one ended.
        assert_eq!(
            section::depth(),
            section::SectionDepth {
                open: 1,
                active: 1,
                elided: 0
            }
        );
        assert!(lock.is_locked());
    });
    assert!(!lock.is_locked());
}

/// A stack's blocking wait runs only when a section has to block, after the stack's other
/// sections gave their locks up and behind a boundary (a section the hook begins and ends does
/// not resume them), and the section holds its locks after it whatever the hook did with the
/// wait: ran it, ran it twice, or never.
#[test]
fn a_stack_blocks_through_its_hook_which_cannot_leave_a_section_without_its_lock() {
    static OUTER: RawObjectLock = RawObjectLock::new();
    static CONTENDED: RawObjectLock = RawObjectLock::new();
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn in_the_hook() {
        assert!(!OUTER.is_locked(), "the outer section still held its lock");
        // A section of the hook's own, on the same stack: its end resumes nothing outside.
        section::with(&RawObjectLock::new(), || ());
        assert!(
            !OUTER.is_locked(),
            "a section of the hook resumed the outer one"
        );
        RELEASE.store(true, Ordering::SeqCst);
    }
    fn runs_the_wait(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        in_the_hook();
        wait.wait();
        None
    }
    fn runs_the_wait_twice(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        runs_the_wait(wait);
        wait.wait();
        None
    }
    fn never_runs_the_wait(_wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        in_the_hook();
        None
    }
    for hook in [runs_the_wait, runs_the_wait_twice, never_runs_the_wait] {
        RELEASE.store(false, Ordering::SeqCst);
        section::set_blocking_wait(Some(hook));
        section::with(&OUTER, || {
            // Free: no wait.
            section::with(&RawObjectLock::new(), || ());
            assert!(!RELEASE.load(Ordering::SeqCst));
            let holder = hold_until(&CONTENDED, &RELEASE);
            section::with(&CONTENDED, || {
                assert!(CONTENDED.is_locked());
                assert_eq!(section::depth().active, 1);
            });
            holder.join().unwrap();
            assert!(RELEASE.load(Ordering::SeqCst), "the hook did not run");
            // The outer section resumed on a free lock, without waiting.
            assert!(OUTER.is_locked());
        });
        assert!(!OUTER.is_locked());
    }
    section::set_blocking_wait(None);
}

/// A hook that takes its section's locks in tries ([`SectionWait::wait_until`]) keeps the first
/// of two locks when a try gives up on the second, as any wait holds it while it waits for the
/// second, until it gives it back ([`SectionWait::give_back`]), and keeps its place in time:
/// each try parks with the stamp of the first, so a waiter that looks around now and then is
/// owed the lock's handoff as soon as one that stayed parked.
#[test]
fn a_wait_in_tries_keeps_its_first_lock_until_given_back_and_its_place_in_time() {
    static LOCKS: [RawObjectLock; 2] = [RawObjectLock::new(), RawObjectLock::new()];
    static TRIES: AtomicUsize = AtomicUsize::new(0);
    static MISHELD_BETWEEN_TRIES: AtomicBool = AtomicBool::new(false);
    static RELEASE: AtomicBool = AtomicBool::new(false);
    fn in_tries(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        while !wait.wait_until(Instant::now() + Duration::from_millis(2)) {
            // The first lock (the lower address, `LOCKS[0]`) is free but for this wait.
            let kept = wait.holds_any() && !wait.is_taken() && LOCKS[0].is_locked();
            wait.give_back();
            if !kept || wait.holds_any() || LOCKS[0].is_locked() {
                MISHELD_BETWEEN_TRIES.store(true, Ordering::SeqCst);
            }
            TRIES.fetch_add(1, Ordering::SeqCst);
        }
        None
    }
    let holder = hold_until(&LOCKS[1], &RELEASE);
    let waiter = thread::spawn(|| {
        let stack = section::SectionStack::new();
        stack.set_blocking_wait(Some(in_tries));
        stack.with2(&LOCKS[1], &LOCKS[0], || {
            assert!(LOCKS[0].is_locked() && LOCKS[1].is_locked())
        });
    });
    let first = parked_waiter_since(&LOCKS[1]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Parked again after two tries that gave up.
    let again = loop {
        assert!(Instant::now() < deadline, "the waiter never tried again");
        if TRIES.load(Ordering::SeqCst) >= 2 {
            if let Some(&since) = LOCKS[1].parked_waiters_since().first() {
                break since;
            }
        }
        thread::yield_now();
    };
    RELEASE.store(true, Ordering::SeqCst);
    holder.join().unwrap();
    waiter.join().unwrap();
    assert_eq!(again, first, "a try parked with a stamp of its own");
    assert!(
        !MISHELD_BETWEEN_TRIES.load(Ordering::SeqCst),
        "a try that gave up did not keep the first lock, or the give-back kept it"
    );
}

/// What a stack's hook leaves to run after its wait runs once the section that waited is
/// recorded and holds its lock, as the section's body would: on a section's begin, and on its
/// resume after a nested section (the nested one waited for its lock, and the outer one's lock
/// was taken meanwhile).
#[test]
fn the_work_a_hook_leaves_runs_once_the_section_that_waited_is_recorded() {
    static OUTER: RawObjectLock = RawObjectLock::new();
    static INNER: RawObjectLock = RawObjectLock::new();
    static WAITS: AtomicUsize = AtomicUsize::new(0);
    static AFTER_WAITS: AtomicUsize = AtomicUsize::new(0);
    static HELD_ELSEWHERE: AtomicBool = AtomicBool::new(false);
    /// Set by an `after_wait` that found the section not yet recorded, or ran out of turn (a
    /// panic there would abort the test binary).
    static OUT_OF_PLACE: AtomicBool = AtomicBool::new(false);
    fn leaves_work(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        WAITS.fetch_add(1, Ordering::SeqCst);
        wait.wait();
        Some(after_wait)
    }
    fn after_wait() {
        // The section that waited is on the stack, the innermost active one, with its lock.
        let recorded = section::depth().active == 1;
        let in_turn = AFTER_WAITS.load(Ordering::SeqCst) + 1 == WAITS.load(Ordering::SeqCst);
        if !(recorded && in_turn) {
            OUT_OF_PLACE.store(true, Ordering::SeqCst);
        }
        AFTER_WAITS.fetch_add(1, Ordering::SeqCst);
    }
    /// Holds `lock` (taken already) until `waits` waits went through the hook (or for ten
    /// seconds, so that a stack that never calls its hook fails the test instead of hanging).
    fn release_after(lock: &'static RawObjectLock, waits: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while WAITS.load(Ordering::SeqCst) < waits && Instant::now() < deadline {
            thread::yield_now();
        }
        // SAFETY: taken by the caller, for this thread to release.
        unsafe { lock.unlock() };
    }
    section::set_blocking_wait(Some(leaves_work));
    thread::scope(|scope| {
        INNER.lock();
        scope.spawn(|| release_after(&INNER, 1));
        section::with(&INNER, || {
            assert_eq!(AFTER_WAITS.load(Ordering::SeqCst), 1, "before the body")
        });
    });
    section::with(&OUTER, || {
        thread::scope(|scope| {
            INNER.lock();
            // Takes the outer lock once the nested section below gives it up to wait, and
            // keeps it until that section's end waits to resume the outer one.
            scope.spawn(|| {
                OUTER.lock();
                HELD_ELSEWHERE.store(true, Ordering::SeqCst);
                release_after(&OUTER, 3);
            });
            scope.spawn(|| {
                while !HELD_ELSEWHERE.load(Ordering::SeqCst) {
                    thread::yield_now();
                }
                release_after(&INNER, 2);
            });
            section::with(&INNER, || assert_eq!(AFTER_WAITS.load(Ordering::SeqCst), 2));
            assert!(OUTER.is_locked());
            assert_eq!(AFTER_WAITS.load(Ordering::SeqCst), 3, "after the resume");
        });
    });
    section::set_blocking_wait(None);
    assert!(
        !OUT_OF_PLACE.load(Ordering::SeqCst),
        "ran before its section was recorded"
    );
}

#[test]
fn detaching_suspends_every_section_and_the_end_of_the_detach_resumes_the_innermost() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        section::with(&inner, || {
            section::detached(|| {
                assert!(!outer.is_locked() && !inner.is_locked());
                assert_eq!(
                    section::depth(),
                    section::SectionDepth {
                        open: 2,
                        active: 0,
                        elided: 0
                    }
                );
            });
            // Only the innermost comes back now; the outer one when it is innermost again.
            assert!(inner.is_locked() && !outer.is_locked());
        });
        assert!(outer.is_locked());
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

#[test]
fn a_section_that_ends_while_detached_leaves_the_sections_outside_suspended() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        section::detached(|| {
            section::with(&inner, || {
                assert!(inner.is_locked() && !outer.is_locked());
            });
            assert!(
                !outer.is_locked(),
                "ending a section begun while detached re-locked the section outside"
            );
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 0,
                    elided: 0
                }
            );
        });
        assert!(outer.is_locked(), "not resumed when the detach ended");
        assert_eq!(
            section::depth(),
            section::SectionDepth {
                open: 1,
                active: 1,
                elided: 0
            }
        );
    });
    assert!(!outer.is_locked() && !inner.is_locked());
}

#[test]
fn the_end_of_a_nested_detach_leaves_the_sections_outside_the_outer_detach_suspended() {
    let (outer, middle) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        section::detached(|| {
            section::with(&middle, || {
                section::detached(|| assert!(!middle.is_locked()));
                // The inner detach ended inside `middle`: `middle` is resumed, not `outer`.
                assert!(middle.is_locked() && !outer.is_locked());
            });
            section::detached(|| ());
            assert!(
                !outer.is_locked(),
                "a nested detach's end resumed a section outside the enclosing detach"
            );
        });
        assert!(outer.is_locked());
    });
    assert!(!outer.is_locked() && !middle.is_locked());
}

#[test]
fn a_panic_while_detached_resumes_the_section_outside() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        let result = std::panic::catch_unwind(|| {
            section::detached(|| section::with(&inner, || panic!("boom")))
        });
        assert!(result.is_err());
        assert!(outer.is_locked() && !inner.is_locked());
        assert_eq!(
            section::depth(),
            section::SectionDepth {
                open: 1,
                active: 1,
                elided: 0
            }
        );
    });
    assert!(!outer.is_locked());
    assert_eq!(section::depth(), section::SectionDepth::default());
}

#[test]
fn with_on_without_a_lock_runs_the_closure_outside_any_section() {
    let stack = section::SectionStack::new();
    let depth = section::with_on(Some(&stack), None, || (stack.depth(), section::depth()));
    assert_eq!(depth, Default::default());
}

#[test]
fn with_on_a_given_stack_records_the_section_there() {
    let lock = RawObjectLock::new();
    let stack = section::SectionStack::new();
    section::with_on(Some(&stack), Some(&lock), || {
        assert!(lock.is_locked());
        assert_eq!(
            stack.depth(),
            section::SectionDepth {
                open: 1,
                active: 1,
                elided: 0
            }
        );
        assert_eq!(
            section::depth().open,
            0,
            "recorded on the thread-local stack"
        );
        // It takes part in the stack's suspension like any of its sections.
        stack.detached(|| assert!(!lock.is_locked()));
        assert!(lock.is_locked());
    });
    assert!(!lock.is_locked());
    assert_eq!(stack.depth(), Default::default());
}

fn depth(open: usize, active: usize, elided: usize) -> section::SectionDepth {
    section::SectionDepth {
        open,
        active,
        elided,
    }
}

/// While the stack elides, an unrecorded section takes no lock and leaves the stack as it was,
/// a recorded section inside it included; once the stack locks again, it is an ordinary section.
#[test]
fn an_unrecorded_section_leaves_no_record_while_the_stack_elides_and_locks_otherwise() {
    let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = section::SectionStack::new();
    stack.with(&a, || {
        // SAFETY: no other thread sees these locks, and nothing below stops the elision until
        // the unrecorded sections have ended.
        unsafe { stack.start_eliding() };
        let inside = || {
            assert!(a.is_locked() && !b.is_locked());
            assert_eq!(stack.depth(), depth(1, 1, 0));
            stack.with(&a, || assert_eq!(stack.depth(), depth(2, 2, 1)));
            assert_eq!(stack.depth(), depth(1, 1, 0));
        };
        // SAFETY: as above.
        unsafe { section::with_on_unrecorded(Some(&stack), Some(&b), inside) };
        stack.stop_eliding();
        assert!(a.is_locked(), "the outer section kept its lock");
        let inside = || {
            assert!(a.is_locked() && b.is_locked());
            assert_eq!(stack.depth(), depth(2, 2, 0));
        };
        // SAFETY: the stack does not elide.
        unsafe { section::with_on_unrecorded(Some(&stack), Some(&b), inside) };
        assert!(!b.is_locked());
    });
    assert!(!a.is_locked() && stack.depth() == depth(0, 0, 0));
}

#[test]
fn a_stack_that_elides_records_its_sections_without_locking() {
    let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = section::SectionStack::new();
    // SAFETY: no other thread sees these locks.
    unsafe { stack.start_eliding() };
    assert!(stack.is_eliding());
    stack.with(&a, || {
        stack.with2(&a, &b, || {
            assert!(!a.is_locked() && !b.is_locked());
            assert_eq!(stack.depth(), depth(2, 2, 2));
        });
    });
    assert_eq!(stack.depth(), depth(0, 0, 0));
    // The thread-local stack is another stack: it still locks.
    section::with(&a, || assert!(a.is_locked()));
}

#[test]
fn stopping_eliding_suspends_the_active_sections_and_each_locks_as_it_becomes_innermost() {
    let (outer, inner, held) = (
        RawObjectLock::new(),
        RawObjectLock::new(),
        RawObjectLock::new(),
    );
    let stack = section::SectionStack::new();
    stack.with(&held, || {
        // SAFETY: no other thread sees these locks.
        unsafe { stack.start_eliding() };
        stack.with(&outer, || {
            stack.with(&inner, || {
                // The section begun before eliding keeps its lock; the two begun after took
                // none.
                assert!(held.is_locked() && !outer.is_locked() && !inner.is_locked());
                assert_eq!(stack.depth(), depth(3, 3, 2));
                stack.stop_eliding();
                assert!(!stack.is_eliding());
                // A suspension point: only the innermost holds its lock now.
                assert!(!held.is_locked() && !outer.is_locked() && inner.is_locked());
                assert_eq!(stack.depth(), depth(3, 1, 0));
            });
            assert!(outer.is_locked() && !inner.is_locked() && !held.is_locked());
            assert_eq!(stack.depth(), depth(2, 1, 0));
        });
        assert!(!outer.is_locked() && held.is_locked());
    });
    assert!(!held.is_locked());
}

#[test]
fn a_section_suspended_while_eliding_and_resumed_after_it_stops_takes_its_lock() {
    let (lock, other) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = section::SectionStack::new();
    // SAFETY: no other thread sees these locks.
    unsafe { stack.start_eliding() };
    stack.with(&lock, || {
        stack.detached(|| {
            assert_eq!(stack.depth(), depth(1, 0, 0));
            // What a runtime does before it lets another thread attach.
            stack.stop_eliding();
            stack.with(&other, || assert!(other.is_locked()));
            assert!(!lock.is_locked(), "still suspended behind the detach");
        });
        assert!(lock.is_locked(), "resumed for real");
        assert_eq!(stack.depth(), depth(1, 1, 0));
    });
    assert!(!lock.is_locked());
}

#[test]
fn a_section_resumed_while_eliding_stays_elided_and_one_held_before_keeps_its_lock() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = section::SectionStack::new();
    stack.with(&outer, || {
        stack.detached(|| {
            // SAFETY: no other thread sees these locks.
            unsafe { stack.start_eliding() };
        });
        // Resumed while the stack elides: the lock was given up at the detach and not retaken.
        assert!(!outer.is_locked());
        assert_eq!(stack.depth(), depth(1, 1, 1));
        stack.with(&inner, || assert!(!inner.is_locked()));
        stack.stop_eliding();
        assert!(outer.is_locked());
    });
    assert!(!outer.is_locked());
}

/// A section nested, while eliding, on a lock that an outer section took before: stopping
/// elision must not lock it again on the thread that holds it. (On a thread of its own, left
/// behind if it deadlocks, so that the test fails instead of hanging.)
#[test]
fn stopping_eliding_inside_an_elided_section_on_a_lock_held_outside_does_not_deadlock() {
    let (done_send, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let lock = RawObjectLock::new();
        let stack = section::SectionStack::new();
        stack.with(&lock, || {
            // SAFETY: no other thread sees this lock.
            unsafe { stack.start_eliding() };
            stack.with(&lock, || {
                stack.stop_eliding();
                // Both sections took part in a suspension: the innermost holds the lock.
                assert!(lock.is_locked());
                assert_eq!(stack.depth(), depth(2, 1, 0));
            });
            assert!(lock.is_locked());
            assert_eq!(stack.depth(), depth(1, 1, 0));
        });
        assert!(!lock.is_locked());
        done_send.send(()).unwrap();
    });
    assert!(
        done.recv_timeout(Duration::from_secs(10)).is_ok(),
        "stop_eliding deadlocked on a lock its own thread holds (or the scenario panicked)"
    );
}

#[test]
fn stop_eliding_on_a_stack_that_does_not_elide_changes_nothing() {
    let lock = RawObjectLock::new();
    let stack = section::SectionStack::new();
    stack.with(&lock, || {
        stack.stop_eliding();
        assert!(lock.is_locked());
        assert_eq!(stack.depth(), depth(1, 1, 0));
    });
    assert!(!lock.is_locked());
}

#[test]
fn with_on_no_stack_records_the_section_on_the_thread_stack() {
    let (outer, inner) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&outer, || {
        section::with_on(None, Some(&inner), || {
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 2,
                    active: 2,
                    elided: 0
                }
            );
            // Nested on the same stack: a detach there suspends both.
            section::detached(|| assert!(!outer.is_locked() && !inner.is_locked()));
        });
        assert!(outer.is_locked() && !inner.is_locked());
    });
    assert_eq!(section::depth(), Default::default());
}

#[test]
fn with_on_a_lock_this_thread_holds_suspends_the_outer_section_instead_of_deadlocking() {
    let lock = RawObjectLock::new();
    let stack = section::SectionStack::new();
    stack.with(&lock, || {
        section::with_on(Some(&stack), Some(&lock), || {
            assert_eq!(
                stack.depth(),
                section::SectionDepth {
                    open: 2,
                    active: 1,
                    elided: 0
                }
            );
        });
        assert!(lock.is_locked(), "the outer section was not resumed");
    });
    assert!(!lock.is_locked());
}

#[test]
fn a_panic_in_with_on_ends_its_section() {
    let lock = RawObjectLock::new();
    let result = std::panic::catch_unwind(|| {
        section::with_on(None, Some(&lock), || panic!("boom"));
    });
    assert!(result.is_err());
    assert!(!lock.is_locked());
    assert_eq!(section::depth(), Default::default());
}

/// Runs, on a new thread, a `with_on(None, ..)` section inside a thread-local destructor,
/// with the thread-local section stack touched before or after that thread-local was set, and
/// reports whether the section held its lock and released it.
fn with_on_in_a_thread_local_destructor(stack_touched_first: bool) -> bool {
    use std::cell::RefCell;
    use std::sync::{mpsc, Arc};

    struct LocksAtExit(Arc<RawObjectLock>, mpsc::Sender<bool>);
    impl Drop for LocksAtExit {
        fn drop(&mut self) {
            let held = section::with_on(None, Some(&self.0), || self.0.is_locked());
            let _ = self.1.send(held && !self.0.is_locked());
        }
    }
    thread_local! {
        static AT_EXIT: RefCell<Option<LocksAtExit>> = const { RefCell::new(None) };
    }
    let lock = Arc::new(RawObjectLock::new());
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let touch_stack = || section::with(&RawObjectLock::new(), || ());
        if stack_touched_first {
            touch_stack();
        }
        AT_EXIT.with(|slot| *slot.borrow_mut() = Some(LocksAtExit(lock, sender)));
        if !stack_touched_first {
            touch_stack();
        }
    })
    .join()
    .unwrap();
    receiver.recv().expect("the destructor ran")
}

#[test]
fn with_on_no_stack_locks_in_thread_local_destructors_whether_the_stack_is_torn_down_or_not() {
    // Thread-locals are torn down in some order at thread exit: the stack may be gone (a fresh
    // one stands in) or still there.
    assert!(with_on_in_a_thread_local_destructor(true));
    assert!(with_on_in_a_thread_local_destructor(false));
}

/// Sections nested inside a thread-local destructor that runs after the thread's own hold on its
/// stack was torn down see each other: a section on a lock the outer one holds suspends it, as
/// anywhere else, instead of waiting for its own thread (each call used to get a fresh stack).
#[test]
fn sections_nested_in_a_thread_local_destructor_after_the_stacks_teardown_see_each_other() {
    use std::cell::RefCell;
    use std::sync::{mpsc, Arc};

    struct NestsAtExit(Arc<RawObjectLock>, mpsc::Sender<(bool, usize)>);
    impl Drop for NestsAtExit {
        fn drop(&mut self) {
            let lock = &*self.0;
            let seen = section::with(lock, || {
                section::with(lock, || (lock.is_locked(), section::depth().open))
            });
            let _ = self.1.send(seen);
        }
    }
    thread_local! {
        static AT_EXIT: RefCell<Option<NestsAtExit>> = const { RefCell::new(None) };
    }
    let lock = Arc::new(RawObjectLock::new());
    let (sender, receiver) = mpsc::channel();
    {
        let lock = lock.clone();
        // Not joined before the answer: a thread that waits for itself never ends.
        thread::spawn(move || {
            // Set first, so that its destructor runs after the stack's (destructors run in the
            // reverse order of registration).
            AT_EXIT.with(|slot| *slot.borrow_mut() = Some(NestsAtExit(lock, sender)));
            section::with(&RawObjectLock::new(), || ());
        });
    }
    let seen = receiver.recv_timeout(Duration::from_secs(30));
    assert_eq!(
        seen,
        Ok((true, 2)),
        "(inner section locked, sections open) at exit"
    );
    assert!(!lock.is_locked());
}

/// Debug builds catch a body that ends the elision its unrecorded section began in: the
/// section would run on without its lock.
#[test]
#[cfg(debug_assertions)]
#[should_panic(expected = "an unrecorded section outlived the elision it began in")]
fn an_unrecorded_section_whose_body_ends_the_elision_panics_in_debug_builds() {
    let lock = RawObjectLock::new();
    let stack = section::SectionStack::new();
    // SAFETY: no other thread sees the lock. (The body below breaks `with_on_unrecorded`'s
    // contract on purpose; nothing else runs, so nothing takes the lock meanwhile.)
    unsafe { stack.start_eliding() };
    // SAFETY: see above: the contract is broken on purpose, with no other thread to see it.
    unsafe {
        section::with_on_unrecorded(Some(&stack), Some(&lock), || {
            stack.stop_eliding();
            // SAFETY: as above.
            stack.start_eliding();
        })
    };
}
