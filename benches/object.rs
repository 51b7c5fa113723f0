//! Object-model micro-benchmarks, per build variant (run once plain and once with
//! `--features gil` / `--features atomic-rc`). It prints which variant it was built as.
//!
//! `shared_object/*` is the P9 measurement: two threads taking references to one shared mortal
//! object, counted (`clone_drop`: every clone and drop is an atomic operation on the same cache
//! line) or borrowed (`borrowed_attr`: an uncounted, epoch-protected attribute read), against one
//! thread doing the same work alone.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use ftrt::gil::Python;
use ftrt::object::{
    Bound, PyClass, PyDict, PyFloat, PyInstance, PyInt, PyList, PyNone, PyStr, ReadGuard, Shared,
};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn single_thread(c: &mut Criterion) {
    println!(
        "build variant: {} (count: {}, header: {} bytes)",
        ftrt::BUILD,
        ftrt::object::count_strategy(),
        ftrt::object::HEADER_SIZE
    );
    Python::attach(|py| {
        let mut group = c.benchmark_group("object");
        let list = PyList::empty(py);
        group.bench_function("list_append", |b| {
            b.iter(|| {
                list.append(PyNone::get(py));
                if list.len() > 4096 {
                    while list.pop().is_ok() {}
                }
                py.check();
            })
        });
        let items = PyList::new(py, (0..1024).map(|i| PyInt::new(py, i)));
        let mut i = 0;
        group.bench_function("list_get", |b| {
            b.iter(|| {
                i = (i + 1) & 1023;
                black_box(items.get_item(i).unwrap());
                py.check();
            })
        });
        let dict = PyDict::new(py);
        let keys: Vec<Bound<'_, PyStr>> = (0..1024)
            .map(|i| PyStr::new(py, &format!("key{i}")))
            .collect();
        let mut k = 0;
        group.bench_function("dict_set", |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                dict.set_item(&keys[k], PyNone::get(py)).unwrap();
                py.check();
            })
        });
        // Filled here too, so that `dict_get` runs alone (a filter that skips `dict_set`).
        for key in &keys {
            dict.set_item(key, PyNone::get(py)).unwrap();
        }
        group.bench_function("dict_get", |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(dict.get_item(&keys[k]).unwrap());
                py.check();
            })
        });
        let (x, y) = (PyInt::new(py, 1_000_000), PyInt::new(py, 3));
        group.bench_function("int_add", |b| b.iter(|| black_box(x.add(&y).unwrap())));
        group.bench_function("str_intern", |b| {
            b.iter(|| {
                k = (k + 1) & 1023;
                black_box(PyStr::intern(py, keys[k].to_str()))
            })
        });
        let class = PyClass::new(py, "Point").unwrap();
        let (ax, ay) = (PyStr::intern(py, "x"), PyStr::intern(py, "y"));
        group.bench_function("object_create_drop", |b| {
            b.iter(|| {
                let point = class.instantiate();
                point.set_attr(&ax, PyInt::new(py, 1)).unwrap();
                point.set_attr(&ay, PyInt::new(py, 2)).unwrap();
                drop(black_box(point));
                py.check();
            })
        });
        group.finish();
    });
}

/// An eval-loop checkpoint every 16 iterations, as the workloads place them.
fn checkpoint(py: Python<'_>, i: u64) {
    if i % 16 == 0 {
        py.check();
    }
}

/// Runs `work(iters)` on `threads` attached threads at once; returns the slowest thread's time.
fn on_threads(threads: usize, iters: u64, work: &(dyn Fn(Python<'_>, u64) + Sync)) -> Duration {
    let start = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let start = &start;
                s.spawn(move || {
                    Python::attach(|py| {
                        // Meet detached: under the GIL, waiting attached would keep the others out.
                        py.allow_threads(|| start.wait());
                        let began = Instant::now();
                        work(py, iters);
                        began.elapsed()
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn shared_object(c: &mut Criterion) {
    let (value, instance, name): (Shared<PyFloat>, Shared<PyInstance>, Shared<PyStr>) =
        Python::attach(|py| {
            let instance = PyClass::new(py, "Config").unwrap().instantiate();
            let name = PyStr::intern(py, "limit");
            let value = PyFloat::new(py, 2.5);
            instance.set_attr(&name, value.clone()).unwrap();
            (value.unbind(), instance.unbind(), name.unbind())
        });
    let clone_drop = |py: Python<'_>, iters: u64| {
        let value = value.bind(py);
        for i in 0..iters {
            drop(black_box(value.clone()));
            checkpoint(py, i);
        }
    };
    let borrowed_attr = |py: Python<'_>, iters: u64| {
        let (instance, name) = (instance.bind(py), name.bind(py));
        for i in 0..iters {
            let guard = ReadGuard::new(py);
            black_box(
                instance
                    .get_attr_borrowed(&name, &guard)
                    .unwrap()
                    .to_f64()
                    .unwrap(),
            );
            checkpoint(py, i);
        }
    };
    let counted_attr = |py: Python<'_>, iters: u64| {
        let (instance, name) = (instance.bind(py), name.bind(py));
        for i in 0..iters {
            black_box(instance.get_attr(&name).unwrap().to_f64().unwrap());
            checkpoint(py, i);
        }
    };
    let mut group = c.benchmark_group("shared_object");
    for (label, work) in [
        (
            "clone_drop",
            &clone_drop as &(dyn Fn(Python<'_>, u64) + Sync),
        ),
        ("counted_attr", &counted_attr),
        ("borrowed_attr", &borrowed_attr),
    ] {
        for threads in [1, 2] {
            group.bench_function(format!("{label}/{threads}_threads"), |b| {
                b.iter_custom(|iters| on_threads(threads, iters, work))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, single_thread, shared_object);
criterion_main!(benches);
