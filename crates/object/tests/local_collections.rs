//! Local collections (free-threaded builds): a thread finds the cycles among its own local
//! objects alone, at its quiescent states, without stopping the world; everything else is left
//! to the stopped-world collections. `docs/gc.md` gives the argument: no cycle mixes local and
//! shared objects.
#![cfg(not(ftrt_gil_build))]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;

use common::{leak_checked, SERIAL};
use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{gc, Kind, PyClass, PyFloat, PyList, PyStr};

/// Live lists once a collection has run: what a test counts against.
fn lists_after_a_collection() -> isize {
    Python::attach(|py| {
        gc::collect(py);
        live_objects(Kind::List)
    })
}

/// A thread attached and busy without checkpoints keeps every stop of the world from
/// completing: automatic stopped-world collections give up. A thread making local cycles
/// meanwhile collects them itself, so what they hold stays bounded. (Before local collections,
/// all 100,000 lists stayed alive until the busy thread let go.)
#[test]
fn a_thread_collects_its_local_cycles_while_another_keeps_the_world_from_stopping() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = lists_after_a_collection();
    let stop_busy = AtomicBool::new(false);
    let (attached_send, attached) = mpsc::channel();
    let (left, local_collections) = common::scope(|s| {
        s.spawn(|| {
            Python::attach(|_| {
                attached_send.send(()).unwrap();
                // Attached, and never at a checkpoint: no stop can complete until this ends.
                while !stop_busy.load(Ordering::SeqCst) {
                    std::hint::spin_loop();
                }
            })
        });
        attached.recv().unwrap();
        let made = s.spawn(|| {
            Python::attach(|py| {
                let before = gc::local_collections();
                // Under Miri five thresholds' worth, not fifty: the bound below still fails
                // unless two local collections or more ran.
                let thresholds = if cfg!(miri) { 5 } else { 50 };
                common::make_self_cycles(py, thresholds * gc::THRESHOLD);
                let left = live_objects(Kind::List) - lists;
                (left, gc::local_collections() - before)
            })
        });
        let outcome = made.join().unwrap();
        stop_busy.store(true, Ordering::SeqCst);
        outcome
    });
    assert!(local_collections > 0, "no local collection ran");
    assert!(
        left < 4 * gc::THRESHOLD as isize,
        "{left} cycles alive with the world kept from stopping"
    );
    assert_eq!(lists_after_a_collection(), lists);
}

/// A local collection keeps what is referenced from the thread's stack, and whatever that
/// reaches, and frees the rest; a shared object that a local cycle held survives it.
#[test]
fn a_local_collection_frees_local_cycles_only() {
    leak_checked(|py| {
        gc::collect(py);
        let lists = live_objects(Kind::List);
        let shared = PyList::new(py, [PyFloat::new(py, 1.5)]).unbind();
        // Garbage: a local cycle of two that also holds the shared list.
        let (a, b) = (PyList::empty(py), PyList::empty(py));
        a.append(b.clone());
        b.append(a.clone());
        a.append(shared.bind(py).clone());
        drop((a, b));
        // Kept: a local cycle held from the stack.
        let kept = PyList::empty(py);
        kept.append(kept.clone());
        let collection = gc::collect(py);
        assert_eq!(collection.unreachable, 2);
        assert_eq!(
            live_objects(Kind::List),
            lists + 2,
            "the shared list and `kept`"
        );
        assert_eq!(shared.bind(py).get_item(0).unwrap().to_f64().unwrap(), 1.5);
        assert!(kept.get_item(0).unwrap().is(&kept));
        kept.del_item(0).unwrap();
        drop((kept, shared));
        assert_eq!(live_objects(Kind::List), lists);
    });
}

/// A cycle published while alive (made shared) leaves its thread's local objects: the
/// stopped-world collection finds it once dropped, whichever thread runs it.
#[test]
fn a_published_cycle_is_found_by_the_stopped_world_collection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let instances = Python::attach(|py| {
        gc::collect(py);
        live_objects(Kind::Instance)
    });
    let published = thread::spawn(move || {
        Python::attach(|py| {
            let class = PyClass::new(py, "Node").unwrap();
            let other = PyStr::intern(py, "other");
            let (a, b) = (class.instantiate(), class.instantiate());
            a.set_attr(&other, b.clone()).unwrap();
            b.set_attr(&other, a.clone()).unwrap();
            drop(b);
            // Published, then only the cycle holds it once the handle goes.
            a.unbind()
        })
    })
    .join()
    .unwrap();
    Python::attach(|py| {
        drop(published);
        // The thread has exited; its objects were published anyway: only a stop finds them.
        assert_eq!(gc::collect(py).unreachable, 2);
        // Clearing shared instances retires what they held through the epoch: settle it.
        ftrt_object::collect(py);
        assert_eq!(live_objects(Kind::Instance), instances);
    });
}

/// Local cycles a thread left behind when it exited are found by the stopped-world collection
/// of another thread: the exit hands the thread's local objects over.
#[test]
fn local_cycles_of_an_exited_thread_are_found_from_another_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = lists_after_a_collection();
    thread::spawn(|| {
        Python::attach(|py| {
            // Fewer than a threshold: no local collection runs on the way.
            for _ in 0..10 {
                let list = PyList::empty(py);
                list.append(list.clone());
            }
        })
    })
    .join()
    .unwrap();
    Python::attach(|py| {
        assert_eq!(live_objects(Kind::List), lists + 10);
        assert_eq!(gc::collect(py).unreachable, 10);
        assert_eq!(live_objects(Kind::List), lists);
    });
}

/// An explicit collection (`gc::collect`) on one thread frees the local cycles of another live
/// thread too: it publishes them in the stopped world, with the local objects they reach, so
/// that they are no longer that thread's local objects when this thread frees them. A list the
/// other thread still uses, which one of those cycles held, becomes shared and stays usable.
/// (Without the publishing, freeing another thread's listed object on this thread panicked.)
#[test]
fn an_explicit_collection_frees_another_live_threads_local_cycles() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = lists_after_a_collection();
    let (made_send, made) = mpsc::channel();
    let (collected_send, collected) = mpsc::channel::<()>();
    let maker = thread::spawn(move || {
        Python::attach(|py| {
            let kept = PyList::empty(py);
            for _ in 0..3 {
                let list = PyList::empty(py);
                list.append(list.clone());
                list.append(kept.clone());
            }
            assert!(!kept.is_shared());
            made_send.send(()).unwrap();
            py.allow_threads(move || collected.recv().unwrap());
            // Published by the other thread's collection, on this thread's behalf.
            assert!(kept.is_shared(), "what the garbage held was published");
            kept.append(PyFloat::new(py, 2.5));
            assert_eq!(kept.get_item(0).unwrap().to_f64().unwrap(), 2.5);
            drop(kept);
            gc::collect(py).unreachable
        })
    });
    made.recv().unwrap();
    Python::attach(|py| {
        assert_eq!(
            gc::collect(py).unreachable,
            3,
            "another live thread's local cycles"
        );
        // The shared cycles' clearing retired what they held through the epoch: settle it.
        ftrt_object::collect(py);
        assert_eq!(live_objects(Kind::List), lists + 1, "`kept`");
    });
    collected_send.send(()).unwrap();
    assert_eq!(
        maker.join().unwrap(),
        0,
        "nothing left for the thread itself"
    );
    Python::attach(|py| {
        gc::collect(py);
        ftrt_object::collect(py);
        assert_eq!(live_objects(Kind::List), lists);
    });
}

/// A local list deferred through the public API, then dropped by its thread, is found dead by a
/// collection on another thread, which frees it there: deferring publishes the object first, so
/// it is no longer one of its thread's local objects. (It used to stay listed, and the other
/// thread's free panicked on finding it in its thread's list.)
#[test]
fn a_deferred_object_is_shared_and_may_die_on_any_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = lists_after_a_collection();
    Python::attach(|py| {
        let list = PyList::empty(py);
        if !list.defer_refcount() {
            return; // counts cannot be deferred in this build
        }
        drop(list);
        let other = thread::spawn(|| Python::attach(|py| gc::collect(py).unreachable));
        py.allow_threads(|| other.join())
            .expect("the other thread's collection");
    });
    assert_eq!(lists_after_a_collection(), lists);
}

/// A thread's exit unlists its local objects without attaching, so a stop of the world on
/// another thread may run meanwhile; it must see them all listed or none. Here the exiting
/// thread leaves garbage: a list that holds itself and many local lists, first in its thread's
/// list and so unlisted first, while the list it holds first is last. A collection that saw the
/// garbage unlisted while the lists it holds were still listed freed it, and with it a list
/// still listed, on the collecting thread, which panicked. Many lists make the exit's unlisting
/// long enough for the stops to land in it. Some of them are made after the explicit collection
/// that gives every listed object a registry slot, so the exit gives those theirs while the
/// stops land (a stop that read the registry's extent before taking the exit's lock would index
/// past it).
#[test]
fn a_stop_sees_an_exiting_threads_local_objects_all_listed_or_none() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let lists = lists_after_a_collection();
    // Below a quarter of the survivors of the maker's collection: no local collection falls due.
    // Under Miri a thousandth, which keeps that (and `after` below gc::THRESHOLD): Miri switches
    // threads after random basic blocks, so stops may overlap even a short unlisting.
    let (before, after) = if cfg!(miri) {
        (400, 90)
    } else {
        (400_000, 90_000)
    };
    let held = before + after;
    for _ in 0..3 {
        let maker_exited = AtomicBool::new(false);
        let (ready_send, ready) = mpsc::channel::<()>();
        let (go, go_receive) = mpsc::channel::<()>();
        common::scope(|s| {
            let maker = s.spawn(move || {
                Python::attach(|py| {
                    // Listed in this order: the garbage list, the fillers, then `last`, which
                    // the garbage list holds first: freeing it frees `last` at once.
                    let garbage = PyList::empty(py);
                    let fillers: Vec<_> = (0..before).map(|_| PyList::empty(py)).collect();
                    let last = PyList::empty(py);
                    garbage.append(last);
                    garbage.append(garbage.clone());
                    for filler in fillers {
                        garbage.append(filler);
                    }
                    // A local collection while it is still held: the lists survive it, so the
                    // next one is due only after a quarter as many new ones, and none runs
                    // when this thread detaches with them garbage.
                    gc::collect(py);
                    // Listed without a registry slot until the exit.
                    for _ in 0..after {
                        garbage.append(PyList::empty(py));
                    }
                });
                ready_send.send(()).unwrap();
                go_receive.recv().unwrap();
            });
            ready.recv().unwrap();
            // The objects a stop examines while the maker's objects are all listed.
            let baseline = Python::attach(|py| gc::collect_shared(py).tracked);
            let collector = s.spawn(|| {
                let mut examined = Vec::new();
                while !maker_exited.load(Ordering::SeqCst) {
                    // What automatic collections run: live threads' local objects are skipped.
                    examined.push(Python::attach(|py| gc::collect_shared(py).tracked));
                }
                examined
            });
            go.send(()).unwrap();
            // A scoped join waits for the whole thread, its exit included.
            maker.join().expect("the maker exits cleanly");
            maker_exited.store(true, Ordering::SeqCst);
            let examined = collector
                .join()
                .expect("no collection freed a listed object");
            // Each stop saw the maker's objects all listed (none examined) or none listed (all
            // examined, until freed), never part of them.
            let part = |n: &&usize| **n > baseline + 10 && **n < baseline + held;
            assert!(
                examined.iter().find(part).is_none(),
                "a stop examined {:?} objects, part of an exiting thread's local ones \
                 (all listed: {baseline}, none: {})",
                examined.iter().find(part),
                baseline + held + 2,
            );
        });
    }
    assert_eq!(lists_after_a_collection(), lists);
}
