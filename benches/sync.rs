//! Synchronisation micro-benchmarks: object locks, critical sections, the GIL, and a
//! `threading.Lock` two threads contend for.
//!
//! Run with `cargo bench --bench sync` (free-threaded) and `cargo bench --bench sync --features
//! gil` (the GIL build: the GIL is real; `ftrt_lock` sections lock in every build). The handoff
//! benchmark exists only in the GIL build.
//!
//! `contended_lock/outside_N`: two threads each take and release one `threading::Lock` and then
//! work outside it (N steps of a multiply-add chain, about a nanosecond each on a current core),
//! per iteration. With nothing outside, the lock is contended all the time and what counts is
//! how little the waiter disturbs the holder; with more work outside, how soon a waiter gets a
//! lock that has come free (see `ftrt_lock::spin`). In the `gil` build only one thread runs at a
//! time (a thread lets the other in at its checkpoints, outside the lock), so the lock is never
//! contended there: the bench measures the GIL's switches and an uncontended lock.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ftrt::gil::threading::Lock;
use ftrt::gil::{Gil, Python};
use ftrt::lock::{section, RawObjectLock};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn object_lock(c: &mut Criterion) {
    println!("build variant: {}", ftrt::BUILD);
    let lock = RawObjectLock::new();
    c.bench_function("object_lock/lock_unlock", |b| {
        b.iter(|| {
            black_box(&lock).lock();
            // SAFETY: locked just above.
            unsafe { black_box(&lock).unlock() };
        })
    });
}

fn sections(c: &mut Criterion) {
    let (a, b) = (RawObjectLock::new(), RawObjectLock::new());
    c.bench_function("section/one_object", |bench| {
        bench.iter(|| section::with(black_box(&a), || black_box(1)))
    });
    c.bench_function("section/two_objects", |bench| {
        bench.iter(|| section::with2(black_box(&a), black_box(&b), || black_box(2)))
    });
}

fn gil(c: &mut Criterion) {
    let gil = Gil::new();
    c.bench_function("gil/acquire_release", |b| {
        b.iter(|| {
            black_box(&gil).acquire();
            // SAFETY: acquired just above.
            unsafe { black_box(&gil).release() };
        })
    });
    if cfg!(feature = "gil") {
        c.bench_function("gil/handoff_round_trip", |b| {
            b.iter_custom(handoff_round_trips)
        });
    }
}

/// Time for `iters` round trips: the holder's checkpoint hands the GIL to a thread that keeps
/// asking for it (zero switch interval: it asks at once) and waits for it to come back.
fn handoff_round_trips(iters: u64) -> Duration {
    let gil = Gil::new();
    gil.set_switch_interval(Duration::ZERO);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        gil.acquire();
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                gil.acquire();
                // SAFETY: acquired just above.
                unsafe { gil.release() };
            }
        });
        let start = Instant::now();
        for _ in 0..iters {
            // SAFETY: this thread holds the GIL at every checkpoint.
            while !unsafe { gil.check() } {
                std::hint::spin_loop();
            }
        }
        let elapsed = start.elapsed();
        stop.store(true, Ordering::Relaxed);
        // SAFETY: held; the partner needs it once more to see `stop`.
        unsafe { gil.release() };
        elapsed
    })
}

fn contended_lock(c: &mut Criterion) {
    for outside in [0, 20, 200] {
        c.bench_function(&format!("contended_lock/outside_{outside}"), |b| {
            b.iter_custom(|iters| two_threads_taking_one_lock(iters, outside))
        });
    }
}

/// `steps` of a dependent multiply-add chain: work the compiler cannot drop or shorten.
fn work(steps: u32) {
    let mut x = 1_u64;
    for step in 0..steps {
        x = black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(u64::from(step)),
        );
    }
    black_box(x);
}

/// A lock and the count its holder keeps, on one cache line (as the `shared-lock` workload has
/// them), wherever the stack puts them: the holder has the line from its acquisition.
#[repr(align(64))]
struct CountedLock {
    lock: Lock,
    entered: AtomicU64,
}

/// Time for two threads to take and release one lock `iters` times each, working `outside`
/// steps after each release, from a common start to the end of both threads (their exits
/// included). Each checks, by a count kept under the lock with a plain load and store, that the
/// lock excluded the other.
fn two_threads_taking_one_lock(iters: u64, outside: u32) -> Duration {
    let CountedLock { lock, entered } = &CountedLock {
        lock: Lock::new(),
        entered: AtomicU64::new(0),
    };
    let start = std::sync::Barrier::new(3);
    let elapsed = std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                Python::attach(|py| {
                    py.allow_threads(|| start.wait());
                    for i in 0..iters {
                        assert!(lock.acquire(py, None));
                        let count = entered.load(Ordering::Relaxed);
                        entered.store(count + 1, Ordering::Relaxed);
                        lock.release().expect("held");
                        work(outside);
                        if i % 64 == 0 {
                            py.check();
                        }
                    }
                })
            });
        }
        start.wait();
        Instant::now()
    })
    .elapsed();
    assert_eq!(
        entered.load(Ordering::Relaxed),
        2 * iters,
        "the lock let two holders in"
    );
    elapsed
}

criterion_group!(benches, object_lock, sections, gil, contended_lock);
criterion_main!(benches);
