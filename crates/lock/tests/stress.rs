//! Many threads fighting over object locks through nested and two-object critical sections,
//! and over one threading lock with and without deadlines.
//! Run under ThreadSanitizer by `cargo xtask tsan`.

use std::cell::UnsafeCell;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use ftrt_lock::{section, RawObjectLock, RawThreadingLock, Spin};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn scaled(n: usize) -> usize {
    if cfg!(miri) {
        (n / 500).max(5)
    } else {
        n
    }
}

/// A counter that may only be touched inside a critical section on its lock.
struct Guarded {
    lock: RawObjectLock,
    value: UnsafeCell<u64>,
}

// SAFETY: `value` is only accessed inside a critical section on `lock`.
unsafe impl Sync for Guarded {}

impl Guarded {
    fn new() -> Self {
        Self {
            lock: RawObjectLock::new(),
            value: UnsafeCell::new(0),
        }
    }
    /// # Safety
    /// The caller is inside a critical section on `self.lock`.
    unsafe fn bump(&self) {
        // SAFETY: exclusive per the caller.
        unsafe { *self.value.get() += 1 }
    }
    fn get(&mut self) -> u64 {
        *self.value.get_mut()
    }
}

#[test]
fn two_object_sections_in_opposite_orders_never_deadlock() {
    let iterations = scaled(20_000);
    let (mut a, mut b) = (Guarded::new(), Guarded::new());
    let start = Barrier::new(2);
    thread::scope(|s| {
        s.spawn(|| {
            start.wait();
            for _ in 0..iterations {
                section::with2(&a.lock, &b.lock, || {
                    // SAFETY: inside a section on both locks.
                    unsafe { (a.bump(), b.bump()) }
                });
            }
        });
        s.spawn(|| {
            start.wait();
            for _ in 0..iterations {
                section::with2(&b.lock, &a.lock, || {
                    // SAFETY: inside a section on both locks.
                    unsafe { (b.bump(), a.bump()) }
                });
            }
        });
    });
    assert_eq!(
        (a.get(), b.get()),
        (2 * iterations as u64, 2 * iterations as u64)
    );
}

#[test]
fn nested_sections_in_opposite_orders_never_deadlock() {
    // Thread 1 nests b inside a, thread 2 a inside b: with plain mutexes this is the textbook
    // deadlock. The inner section suspends the outer one whenever it would block.
    let iterations = scaled(20_000);
    let (mut a, mut b) = (Guarded::new(), Guarded::new());
    thread::scope(|s| {
        for (outer, inner) in [(&a, &b), (&b, &a)] {
            s.spawn(move || {
                for _ in 0..iterations {
                    section::with(&outer.lock, || {
                        // SAFETY: inside a section on `outer` (active until the inner one
                        // begins, and again after it ends).
                        unsafe { outer.bump() };
                        // SAFETY: inside a section on `inner`.
                        section::with(&inner.lock, || unsafe { inner.bump() });
                    });
                }
            });
        }
    });
    assert_eq!(
        (a.get(), b.get()),
        (2 * iterations as u64, 2 * iterations as u64)
    );
}

#[test]
fn many_threads_share_a_few_objects_through_random_pairs() {
    const THREADS: usize = 8;
    let iterations = scaled(10_000);
    let mut objects: Vec<Guarded> = (0..4).map(|_| Guarded::new()).collect();
    let expected: u64 = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let objects = &objects;
                s.spawn(move || {
                    let mut bumps = 0_u64;
                    let mut seed = (t as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..iterations {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        let (x, y) = (
                            &objects[seed as usize % 4],
                            &objects[(seed >> 8) as usize % 4],
                        );
                        let distinct = !std::ptr::eq(x, y);
                        section::with2(&x.lock, &y.lock, || {
                            // SAFETY: inside a section on both locks.
                            unsafe { x.bump() };
                            if distinct {
                                // SAFETY: as above.
                                unsafe { y.bump() };
                            }
                        });
                        bumps += 1 + u64::from(distinct);
                    }
                    bumps
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let total: u64 = objects.iter_mut().map(Guarded::get).sum();
    assert_eq!(total, expected, "an update inside a section was lost");
    for object in &objects {
        assert!(!object.lock.is_locked());
    }
}

/// A counter that may only be touched while its threading lock is held.
struct ThreadingGuarded {
    lock: RawThreadingLock,
    value: UnsafeCell<u64>,
}

// SAFETY: `value` is only accessed while `lock` is held.
unsafe impl Sync for ThreadingGuarded {}

#[test]
fn many_threads_taking_one_threading_lock_with_and_without_deadlines_exclude_each_other() {
    const THREADS: usize = 8;
    let iterations = scaled(20_000);
    let mut shared = ThreadingGuarded {
        lock: RawThreadingLock::new(),
        value: UnsafeCell::new(0),
    };
    let timed_out: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let shared = &shared;
                s.spawn(move || {
                    let spin = [Spin::BeforeEachPark, Spin::AfterWakeUps, Spin::Never][t % 3];
                    let mut timed_out = 0;
                    for _ in 0..iterations {
                        // Half the threads wait at most a few microseconds, so that waiters
                        // time out while others park and releases run.
                        let deadline =
                            (t % 2 == 1).then(|| Instant::now() + Duration::from_micros(20));
                        while !shared.lock.lock_until(deadline, spin) {
                            timed_out += 1;
                        }
                        // SAFETY: the lock is held. A load and a store, not an increment:
                        // two holders at once can lose a count.
                        unsafe { *shared.value.get() += 1 };
                        shared.lock.release().expect("held by this thread");
                    }
                    timed_out
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(
        *shared.value.get_mut(),
        (THREADS * iterations) as u64,
        "two threads held the lock at once ({timed_out} waits timed out)"
    );
    assert!(!shared.lock.is_locked());
}
