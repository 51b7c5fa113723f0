//! The thread's stack claimed by a runtime ([`section::claim_thread_stack`]): one stack for the
//! runtime's own sections and the thread-local functions' ones, as specifications of behaviour.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;

use crate::section::{self, AfterWait, SectionDepth, SectionWait, ThreadStack};
use crate::tests::hold_until;
use crate::RawObjectLock;

/// The calling thread's stack, claimed (each test runs on a thread of its own).
fn claim() -> ThreadStack {
    section::claim_thread_stack().expect("no other claim on a test's thread")
}

fn depth(open: usize, active: usize, elided: usize) -> SectionDepth {
    SectionDepth {
        open,
        active,
        elided,
    }
}

#[test]
fn a_held_thread_stack_is_the_one_the_thread_local_functions_use() {
    let (mine, theirs) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = claim();
    stack.with(&mine, || {
        section::with(&theirs, || {
            assert_eq!(section::depth(), depth(2, 2, 0));
            assert_eq!(stack.depth(), depth(2, 2, 0));
        });
    });
    assert_eq!(section::depth(), depth(0, 0, 0));
}

/// A section on a lock the thread holds through the other API suspends the outer section instead
/// of waiting for its own thread, and the outer one has its lock back once the inner one ends.
#[test]
fn sections_of_the_two_apis_nest_on_one_lock_in_either_order() {
    let lock = RawObjectLock::new();
    let stack = claim();
    stack.with(&lock, || {
        section::with(&lock, || assert_eq!(section::depth(), depth(2, 1, 0)));
        assert!(lock.is_locked());
    });
    section::with(&lock, || {
        stack.with(&lock, || assert_eq!(section::depth(), depth(2, 1, 0)));
        assert!(lock.is_locked());
    });
    assert!(!lock.is_locked());
}

/// A runtime's promise ([`SectionStack::start_eliding`](section::SectionStack::start_eliding))
/// covers its own sections' locks: the thread-local functions' sections on the same stack lock
/// while it elides, when they begin and when they resume, and are always recorded.
#[test]
fn only_the_stacks_own_sections_elide() {
    let (mine, theirs) = (RawObjectLock::new(), RawObjectLock::new());
    let stack = claim();
    // SAFETY: no other thread sees `mine`; no unrecorded section below outlives the elision.
    unsafe { stack.start_eliding() };
    stack.with(&mine, || assert!(!mine.is_locked()));
    section::with(&theirs, || assert!(theirs.is_locked()));
    section::with_on(None, Some(&theirs), || assert!(theirs.is_locked()));
    // SAFETY: as above.
    let recorded = unsafe {
        section::with_on_unrecorded(None, Some(&theirs), || {
            (theirs.is_locked(), section::depth().open)
        })
    };
    assert_eq!(recorded, (true, 1));
    section::with(&theirs, || {
        stack.with(&mine, || assert_eq!(stack.depth(), depth(2, 2, 1)));
        // Suspended and resumed while the stack elides: it locks again.
        stack.detached(|| assert!(!theirs.is_locked()));
        assert!(theirs.is_locked());
    });
    stack.stop_eliding();
    assert!(!mine.is_locked() && !theirs.is_locked());
}

/// Each section waits through the hook of the API that began it: the thread-local functions'
/// through [`section::set_blocking_wait`]'s, the stack's own through the stack's.
#[test]
fn each_api_waits_through_its_own_hook() {
    static CONTENDED: RawObjectLock = RawObjectLock::new();
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static THREAD_WAITS: AtomicUsize = AtomicUsize::new(0);
    static STACK_WAITS: AtomicUsize = AtomicUsize::new(0);
    fn counted(waits: &AtomicUsize, wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        waits.fetch_add(1, Ordering::SeqCst);
        RELEASE.store(true, Ordering::SeqCst);
        wait.wait();
        None
    }
    fn thread_hook(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        counted(&THREAD_WAITS, wait)
    }
    fn stack_hook(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        counted(&STACK_WAITS, wait)
    }
    let stack = claim();
    section::set_blocking_wait(Some(thread_hook));
    stack.set_blocking_wait(Some(stack_hook));
    let waits = || {
        (
            THREAD_WAITS.load(Ordering::SeqCst),
            STACK_WAITS.load(Ordering::SeqCst),
        )
    };
    let holder = hold_until(&CONTENDED, &RELEASE);
    section::with(&CONTENDED, || ());
    holder.join().unwrap();
    assert_eq!(waits(), (1, 0));
    let holder = hold_until(&CONTENDED, &RELEASE);
    stack.with(&CONTENDED, || ());
    holder.join().unwrap();
    assert_eq!(waits(), (1, 1));
    section::set_blocking_wait(None);
    stack.set_blocking_wait(None);
}

/// A runtime's section given no stack ([`section::with_on`], [`section::with2_on`]) goes on the
/// thread's stack but stays the runtime's: it waits for its lock, when it begins and when it
/// resumes, through the thread's stackless hook ([`section::set_stackless_blocking_wait`]), in
/// place where none is set, and through neither the thread-local functions' hook (which may wait
/// detached from the runtime, and come back holding the lock) nor the stack's.
#[test]
fn a_runtime_section_given_no_stack_waits_through_the_stackless_hook_or_in_place() {
    static CONTENDED: RawObjectLock = RawObjectLock::new();
    static OTHER: RawObjectLock = RawObjectLock::new();
    static RELEASE: AtomicBool = AtomicBool::new(false);
    static HOOKED_WAITS: AtomicUsize = AtomicUsize::new(0);
    static STACKLESS_WAITS: AtomicUsize = AtomicUsize::new(0);
    fn hook(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        HOOKED_WAITS.fetch_add(1, Ordering::SeqCst);
        wait.wait();
        None
    }
    fn stackless_hook(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        STACKLESS_WAITS.fetch_add(1, Ordering::SeqCst);
        wait.wait();
        None
    }
    // Lets the holder go once this thread is parked on the lock.
    let release_once_parked = || {
        thread::spawn(|| {
            while CONTENDED.parked_waiters() == 0 {
                thread::yield_now();
            }
            RELEASE.store(true, Ordering::SeqCst);
        })
    };
    // A begin, a begin on two locks, and a resume, each of which waits.
    let three_waits = || {
        let holder = hold_until(&CONTENDED, &RELEASE);
        let releaser = release_once_parked();
        section::with_on(None, Some(&CONTENDED), || assert!(CONTENDED.is_locked()));
        holder.join().unwrap();
        releaser.join().unwrap();
        let holder = hold_until(&CONTENDED, &RELEASE);
        let releaser = release_once_parked();
        section::with2_on(None, &CONTENDED, &OTHER, || {
            assert!(CONTENDED.is_locked() && OTHER.is_locked());
        });
        holder.join().unwrap();
        releaser.join().unwrap();
        // Suspended by a detach while another thread takes the lock, it resumes the same way.
        let (holder, releaser) = section::with_on(None, Some(&CONTENDED), || {
            let taken =
                section::detached(|| (hold_until(&CONTENDED, &RELEASE), release_once_parked()));
            assert!(CONTENDED.is_locked());
            taken
        });
        holder.join().unwrap();
        releaser.join().unwrap();
    };
    let stack = claim();
    section::set_blocking_wait(Some(hook));
    stack.set_blocking_wait(Some(hook));
    three_waits();
    assert_eq!(STACKLESS_WAITS.load(Ordering::SeqCst), 0);
    section::set_stackless_blocking_wait(Some(stackless_hook));
    three_waits();
    assert_eq!(
        STACKLESS_WAITS.load(Ordering::SeqCst),
        3,
        "waited otherwise than through the stackless hook"
    );
    section::set_stackless_blocking_wait(None);
    section::set_blocking_wait(None);
    stack.set_blocking_wait(None);
    assert_eq!(
        HOOKED_WAITS.load(Ordering::SeqCst),
        0,
        "waited through another API's hook"
    );
    assert!(!CONTENDED.is_locked() && !OTHER.is_locked());
}

/// One claim at a time, and what the stack's own sections were promised (its elision) and how
/// they wait (its hook) end with the claim: the next claimant starts from a stack of its own.
#[test]
fn a_thread_stack_has_one_claim_at_a_time_and_its_elision_and_hook_end_with_it() {
    static CONTENDED: RawObjectLock = RawObjectLock::new();
    static FIRST_CLAIMS_WAITS: AtomicUsize = AtomicUsize::new(0);
    fn first_claims_hook(wait: &mut SectionWait<'_>) -> Option<AfterWait> {
        FIRST_CLAIMS_WAITS.fetch_add(1, Ordering::SeqCst);
        wait.wait();
        None
    }
    let first = claim();
    assert!(section::claim_thread_stack().is_none(), "claimed twice");
    // SAFETY: no section is begun on the stack while it elides.
    unsafe { first.start_eliding() };
    first.set_blocking_wait(Some(first_claims_hook));
    drop(first);
    let second = claim();
    assert!(!second.is_eliding(), "the elision outlived its claim");
    let lock = RawObjectLock::new();
    second.with(&lock, || assert!(lock.is_locked()));
    // A section that (most likely) waits: in place, not through the first claim's hook.
    let (held, wait_for_held) = mpsc::channel();
    let holder = thread::spawn(move || {
        CONTENDED.lock();
        held.send(()).unwrap();
        thread::sleep(std::time::Duration::from_millis(50));
        // SAFETY: locked above, on this thread.
        unsafe { CONTENDED.unlock() };
    });
    wait_for_held.recv().unwrap();
    second.with(&CONTENDED, || ());
    holder.join().unwrap();
    assert_eq!(FIRST_CLAIMS_WAITS.load(Ordering::SeqCst), 0);
}

/// A runtime whose hold outlasts the thread's own (its thread-local torn down after the stack's
/// holder) still finds its sections and the thread-local functions' on one stack.
#[test]
fn a_hold_that_outlasts_the_threads_own_keeps_one_stack_for_both_apis() {
    struct KeepsTheStack(Option<ThreadStack>, mpsc::Sender<SectionDepth>);
    impl Drop for KeepsTheStack {
        fn drop(&mut self) {
            let stack = self.0.take().expect("kept");
            let lock = RawObjectLock::new();
            let seen = stack.with(&lock, section::depth);
            let _ = self.1.send(seen);
        }
    }
    thread_local! {
        static KEPT: RefCell<Option<KeepsTheStack>> = const { RefCell::new(None) };
    }
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        // `KEPT` is registered before the stack is made, so it is torn down after the
        // thread's own hold (thread-locals are torn down in the reverse order).
        KEPT.with(|slot| {
            *slot.borrow_mut() = Some(KeepsTheStack(Some(claim()), sender));
        });
    })
    .join()
    .unwrap();
    assert_eq!(receiver.recv(), Ok(depth(1, 1, 0)));
}
