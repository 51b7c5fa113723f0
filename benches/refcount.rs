//! Reference-count micro-benchmarks: what one clone + drop costs on the owning thread and on
//! another thread, for `Rc`, `Arc`, `BiasedArc`, the `biasedrc` crate's `Brc`, and the runtime's
//! own three counting strategies.
//!
//! Run with `cargo bench --bench refcount` (or `cargo xtask bench`). Target P1: `biased_arc`
//! within 1.25 × `rc`, at least 4 × faster than `arc`, and no slower than `biasedrc`.

use std::hint::black_box;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::thread;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ftrt::refcount::{
    biased::LocalCounts, header_size, AtomicCount, BiasedArc, BiasedCount, GilHeld, NonAtomicCount,
    RefCount, Strategy,
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

criterion_group!(benches, owning_thread, other_thread, strategies);
criterion_main!(benches);
