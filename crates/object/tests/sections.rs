//! Object operations inside `ftrt_lock` critical sections, which lock in every build.

use std::thread;

use ftrt_gil::Python;
use ftrt_lock::{section, RawObjectLock};
use ftrt_object::{PyList, Shared};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Whether another thread could take `lock` right now (and it gives it straight back).
fn free_to_another_thread(lock: &RawObjectLock) -> bool {
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

/// Dropping a `Shared` attaches the (detached) thread for the decrement; the attachment's end
/// must not take the enclosing section's lock away.
#[test]
fn dropping_a_shared_inside_a_critical_section_leaves_the_section_locked() {
    thread::spawn(|| {
        let list: Shared<_> = Python::attach(|py| PyList::empty(py).unbind());
        let lock = RawObjectLock::new();
        section::with(&lock, || {
            drop(list);
            assert_eq!(
                section::depth(),
                section::SectionDepth {
                    open: 1,
                    active: 1,
                    elided: 0
                },
                "dropping the handle suspended the section"
            );
            assert!(
                !free_to_another_thread(&lock),
                "the section runs on without its lock"
            );
        });
    })
    .join()
    .unwrap();
}
