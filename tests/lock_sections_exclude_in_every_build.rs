//! A program that uses `ftrt-lock`'s critical sections for its own data, in the same dependency
//! graph as the runtime built in any variant (this test is built with the umbrella's features,
//! so `cargo test --features ftrt/gil` puts it beside the `gil` build): the sections must
//! exclude. Cargo unifies features across the graph, so a leaf crate whose feature turned its
//! sections off would turn them off for every user.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::thread;

use ftrt_lock::{section, RawObjectLock};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[test]
fn a_lock_section_holds_its_lock_whatever_the_build() {
    let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
    section::with(&a, || {
        assert!(
            a.is_locked(),
            "a section ran without its lock ({} build)",
            ftrt::BUILD
        );
    });
    section::with2(&a, &b, || {
        assert!(
            a.is_locked() && b.is_locked(),
            "a two-object section ran without its locks ({} build)",
            ftrt::BUILD
        );
    });
    assert!(!a.is_locked() && !b.is_locked());
}

#[test]
fn four_threads_counting_inside_lock_sections_lose_no_increment() {
    const THREADS: u64 = 4;
    const PER_THREAD: u64 = if cfg!(miri) { 100 } else { 200_000 };
    let lock = RawObjectLock::new();
    // A plain counter: a load and a store, exact only under mutual exclusion (relaxed atomics
    // so that losing updates is a wrong answer, not undefined behaviour).
    let counter = AtomicU64::new(0);
    let start = Barrier::new(THREADS as usize);
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                start.wait();
                for _ in 0..PER_THREAD {
                    section::with(&lock, || {
                        let value = counter.load(Ordering::Relaxed);
                        counter.store(value + 1, Ordering::Relaxed);
                    });
                }
            });
        }
    });
    assert_eq!(
        counter.into_inner(),
        THREADS * PER_THREAD,
        "increments inside sections were lost ({} build)",
        ftrt::BUILD
    );
}
