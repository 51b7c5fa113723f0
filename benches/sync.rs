//! Synchronisation micro-benchmarks: object locks, critical sections and the GIL.
//!
//! Run with `cargo bench --bench sync` (free-threaded) and `cargo bench --bench sync --features
//! gil` (the GIL build: the GIL is real; `ftrt_lock` sections lock in every build). The handoff
//! benchmark exists only in the GIL build.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ftrt::gil::Gil;
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
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        gil.acquire();
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
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
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: held; the partner needs it once more to see `stop`.
        unsafe { gil.release() };
        elapsed
    })
}

criterion_group!(benches, object_lock, sections, gil);
criterion_main!(benches);
