//! Reference-count micro-benchmarks: what one clone + drop costs on the owning thread and on
//! another thread, for `Rc`, `Arc`, `BiasedArc`, the `biasedrc` crate's `Brc`, and the runtime's
//! own three counting strategies.
//!
//! Run with `cargo bench --bench refcount` (or `cargo xtask bench`). Target P1: `biased_arc`
//! within 1.25 × `rc`, at least 4 × faster than `arc`, and no slower than `biasedrc`.
//!
//! The `peers` group compares `BiasedArc` with the other reference-counted pointers on crates.io
//! that a user would weigh against it, each through the same three cases (see [`peers`]):
//! `std`'s `Rc` and `Arc`, `triomphe::Arc` (`Arc` without weak counts), and the crates that, like
//! `BiasedArc`, count without atomics on one thread: `biasedrc` (biased counting with an owner
//! queue), `trc` (one local count per thread, a shared count of threads) and `hybrid-rc` (a
//! `!Send` local handle on one thread, atomic handles elsewhere). Run it alone with
//! `cargo bench --bench refcount -- peers`. `BiasedArc`'s owner case runs twice: `biased_arc`
//! with `clone` and `drop`, and `biased_arc_for` with `clone_for` and `drop_for` under one
//! `biased::with_current_owner` token. Targets: owner clone + drop at most 1.25 × `Rc` and at
//! least 4 × faster than `Arc`, the fastest of the thread-safe peers there, and allocate + last
//! drop at most 1.2 × `Arc`.

use std::hint::black_box;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};
use ftrt::refcount::{
    biased::{self, LocalCounts},
    header_size, AtomicCount, BiasedArc, BiasedCount, GilHeld, NonAtomicCount, RefCount, Strategy,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Clone + drop pairs per measured iteration, so the loop overhead is spread thin.
const PAIRS: u64 = 256;

fn clone_drop<P: Clone>(pointer: &P) {
    for _ in 0..PAIRS {
        drop(black_box(pointer.clone()));
    }
}

fn owning_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("clone_drop");
    group.throughput(Throughput::Elements(PAIRS));
    let rc = Rc::new(0_u64);
    group.bench_function("rc", |b| b.iter(|| clone_drop(&rc)));
    let arc = Arc::new(0_u64);
    group.bench_function("arc", |b| b.iter(|| clone_drop(&arc)));
    let biased = BiasedArc::new(0_u64);
    group.bench_function("biased_arc", |b| b.iter(|| clone_drop(&biased)));
    let brc = biasedrc::Brc::new(0_u64);
    group.bench_function("biasedrc", |b| b.iter(|| clone_drop(&brc)));
    group.finish();
}

/// Hands the bench thread a pointer created on another thread that stays alive (and keeps its
/// own reference) until the returned sender is dropped.
fn owned_elsewhere<P: Clone + Send + 'static>(make: fn() -> P) -> (P, mpsc::Sender<()>) {
    let (to_bench, pointer) = mpsc::channel();
    let (done, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        let owned = make();
        to_bench.send(owned.clone()).unwrap();
        let _ = wait.recv();
        drop(owned);
    });
    (pointer.recv().unwrap(), done)
}

fn other_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("clone_drop_cross");
    group.throughput(Throughput::Elements(PAIRS));
    let (arc, _owner) = owned_elsewhere(|| Arc::new(0_u64));
    group.bench_function("arc", |b| b.iter(|| clone_drop(&arc)));
    let (biased, _owner) = owned_elsewhere(|| BiasedArc::new(0_u64));
    group.bench_function("biased_arc", |b| b.iter(|| clone_drop(&biased)));
    group.finish();
}

/// Clone + drop on the thread that made the value.
fn peer_owner<P: Clone>(group: &mut BenchmarkGroup<'_, WallTime>, peer: &str, pointer: P) {
    group.bench_function(BenchmarkId::new("owner", peer), |b| {
        b.iter(|| clone_drop(&pointer))
    });
}

/// Clone + drop on the bench thread of a value that another thread made and keeps a reference
/// to, for as long as the measurement runs.
fn peer_cross<P: Clone>(group: &mut BenchmarkGroup<'_, WallTime>, peer: &str, pointer: P) {
    group.bench_function(BenchmarkId::new("cross", peer), |b| {
        b.iter(|| clone_drop(&pointer))
    });
}

/// Allocate a value and drop its only reference, on one thread.
fn peer_alloc<P>(group: &mut BenchmarkGroup<'_, WallTime>, peer: &str, make: fn(u64) -> P) {
    group.bench_function(BenchmarkId::new("alloc", peer), |b| {
        b.iter(|| {
            for _ in 0..PAIRS {
                drop(black_box(make(black_box(0))));
            }
        })
    });
}

/// Like [`owned_elsewhere`], for peers whose handle for another thread is not the owner's
/// type: `make` runs on the owner thread and returns what it keeps and what it sends.
fn sent_from_elsewhere<K: 'static, S: Send + 'static>(
    make: fn() -> (K, S),
) -> (S, mpsc::Sender<()>) {
    let (to_bench, sent) = mpsc::channel();
    let (done, wait) = mpsc::channel::<()>();
    thread::spawn(move || {
        let (kept, handle) = make();
        to_bench.send(handle).unwrap();
        let _ = wait.recv();
        drop(kept);
    });
    (sent.recv().unwrap(), done)
}

/// Every peer through the same three cases, on a `u64`, 256 operations per iteration:
/// - `owner`: clone + drop on the thread that made the value;
/// - `cross`: clone + drop on another thread, while the maker lives and keeps a reference. `Rc`
///   cannot cross threads. Each peer uses the handle it offers that thread: `BiasedArc`,
///   `biasedrc`, `Arc` and `triomphe` a clone of the maker's; `hybrid-rc` its atomic `Arc` (its
///   local `Rc` belongs to the maker); `trc` a `Trc` of that thread's own, made from a
///   `SharedTrc`, which it then counts without atomics (`trc`'s design: a local count per
///   thread);
/// - `alloc`: allocate, then drop the only reference (the value's whole life on one thread).
///
/// `biasedrc`, `trc` and `hybrid-rc` appear only here: they are benchmark-only dependencies.
fn peers(c: &mut Criterion) {
    let mut group = c.benchmark_group("peers");
    group.throughput(Throughput::Elements(PAIRS));

    peer_owner(&mut group, "rc", Rc::new(0_u64));
    peer_owner(&mut group, "arc", Arc::new(0_u64));
    peer_owner(&mut group, "biased_arc", BiasedArc::new(0_u64));
    let biased = BiasedArc::new(0_u64);
    group.bench_function(BenchmarkId::new("owner", "biased_arc_for"), |b| {
        b.iter(|| {
            biased::with_current_owner(|owner| {
                for _ in 0..PAIRS {
                    BiasedArc::drop_for(black_box(BiasedArc::clone_for(&biased, owner)), owner);
                }
            })
        })
    });
    peer_owner(&mut group, "biasedrc", biasedrc::Brc::new(0_u64));
    peer_owner(&mut group, "triomphe", triomphe::Arc::new(0_u64));
    peer_owner(&mut group, "trc", trc::Trc::new(0_u64));
    peer_owner(&mut group, "hybrid_rc", hybrid_rc::Rc::new(0_u64));

    let (arc, _owner) = owned_elsewhere(|| Arc::new(0_u64));
    peer_cross(&mut group, "arc", arc);
    let (biased, _owner) = owned_elsewhere(|| BiasedArc::new(0_u64));
    peer_cross(&mut group, "biased_arc", biased);
    let (brc, _owner) = owned_elsewhere(|| biasedrc::Brc::new(0_u64));
    peer_cross(&mut group, "biasedrc", brc);
    let (triomphe, _owner) = owned_elsewhere(|| triomphe::Arc::new(0_u64));
    peer_cross(&mut group, "triomphe", triomphe);
    let (shared, _owner) = sent_from_elsewhere(|| {
        let local = trc::Trc::new(0_u64);
        let shared = trc::SharedTrc::from_trc(&local);
        (local, shared)
    });
    peer_cross(&mut group, "trc", trc::SharedTrc::to_trc(shared));
    let (hybrid, _owner) = sent_from_elsewhere(|| {
        let local = hybrid_rc::Rc::new(0_u64);
        let shared = hybrid_rc::Rc::to_shared(&local);
        (local, shared)
    });
    peer_cross(&mut group, "hybrid_rc", hybrid);

    peer_alloc(&mut group, "rc", Rc::new);
    peer_alloc(&mut group, "arc", Arc::new);
    peer_alloc(&mut group, "biased_arc", BiasedArc::new);
    peer_alloc(&mut group, "biasedrc", biasedrc::Brc::new);
    peer_alloc(&mut group, "triomphe", triomphe::Arc::new);
    peer_alloc(&mut group, "trc", trc::Trc::new);
    peer_alloc(&mut group, "hybrid_rc", hybrid_rc::Rc::new);
    group.finish();
}

/// The bare count operations the object model performs, one strategy each.
fn strategies(c: &mut Criterion) {
    let mut group = c.benchmark_group("incref_decref");
    group.throughput(Throughput::Elements(PAIRS));
    // SAFETY: this benchmark is single-threaded: nothing else touches non-atomic counts.
    let gil = unsafe { GilHeld::assume_held() };
    bench_strategy(&mut group, NonAtomicCount::new(gil), gil);
    bench_strategy(&mut group, AtomicCount::new(), ());
    let counts = LocalCounts::register();
    bench_strategy(
        &mut group,
        BiasedCount::new_for(counts.owner()),
        counts.owner(),
    );
    group.finish();
    for strategy in [Strategy::NonAtomic, Strategy::Atomic, Strategy::Biased] {
        println!(
            "header size, {:>10}: {} bytes",
            strategy.name(),
            header_size(strategy)
        );
    }
}

fn bench_strategy<C: RefCount>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    count: C,
    token: C::Token<'_>,
) {
    unsafe fn never_released<C>(_: NonNull<C>) {
        unreachable!("the benchmark keeps a reference");
    }
    let this = NonNull::from(&count);
    group.bench_function(C::STRATEGY.name(), |b| {
        b.iter(|| {
            for _ in 0..PAIRS {
                black_box(&count).incref(token);
                // SAFETY: the count is alive (owned by this frame) and keeps its first reference,
                // so this never releases.
                black_box(unsafe { C::decref(this, token, never_released::<C>) });
            }
        })
    });
}

criterion_group!(benches, owning_thread, other_thread, strategies, peers);
criterion_main!(benches);
