//! How long retired objects stay alive. Whatever a writer takes out of a container is retired
//! (freed once no lock-free reader can still hold it); a thread that keeps reaching checkpoints
//! must get it freed within a bounded number of them, even when it retires nothing more.
//!
//! The epoch is process-wide, so this file holds only these scenarios, run one at a time: a
//! thread of another test that stayed pinned would hold reclamation back.

use std::sync::{Barrier, Mutex};
use std::thread;

use ftrt_gil::Python;
use ftrt_object::stats::live_objects;
use ftrt_object::{collect, Bound, Kind, PyDict, PyFloat, PyInt, PyList, PyStr, ReadGuard, Shared};

#[cfg(not(any(miri, ftrt_tsan)))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Checkpoints that make one quiescent state (`ftrt-gil` repins every 16).
const CHECKS_PER_QUIESCENT_STATE: usize = 16;

/// Repins between the flushes of a thread that retires nothing (`ftrt-gil`'s
/// `REPINS_PER_IDLE_FLUSH`): the only quiescent states at which such a thread advances the epoch.
const REPINS_PER_IDLE_FLUSH: usize = 256;

/// Rounds the retiring thread gets before the test gives up on it. Generous (two or three
/// suffice): each quiescent state lets the epoch advance once every other pinned thread has
/// passed one too, and a retired object needs two advances.
const MAX_ROUNDS: usize = 16;

/// The epoch is process-wide: the scenarios run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// How the retiring thread waits while the other thread takes its turn.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// Attached and pinned, as a thread between two checkpoints: the epoch cannot advance past
    /// it, so what it retired expires on its own quiescent states.
    Attached,
    /// Detached (`allow_threads`): the other thread advances the epoch alone and runs the
    /// retiring thread's expired batches.
    Detached,
}

fn wait_for_turn(py: Python<'_>, turns: &Barrier, waiting: Waiting) {
    // The GIL build must let the other thread take the GIL.
    if waiting == Waiting::Detached || cfg!(ftrt_gil_build) {
        py.allow_threads(|| turns.wait());
    } else {
        turns.wait();
    }
}

/// Replaces each of the first `items` items of `list` with a new int.
fn replace_every_item(list: &Bound<'_, PyList>, items: usize) {
    for i in 0..items {
        list.set_item(i as i64, PyInt::new(list.py(), 1_000_000 + i as i64))
            .unwrap();
    }
}

/// Passes quiescent states, at most `max`, until `done` holds; returns how many it took.
fn quiescent_states_until(py: Python<'_>, max: usize, done: impl Fn() -> bool) -> Option<usize> {
    (1..=max).find(|_| {
        checkpoints(py, 1);
        done()
    })
}

fn checkpoints(py: Python<'_>, quiescent_states: usize) {
    for _ in 0..quiescent_states * CHECKS_PER_QUIESCENT_STATE {
        py.check();
    }
}

/// A writer thread replaces each of `items` items of a shared list once, while another thread
/// is attached (so the old items are retired: a reader could hold them), then only reaches
/// checkpoints, one quiescent state per round, taking turns with the other thread, which reaches
/// `other_quiescent_states` per round. Asserts that the replaced items were retired rather than
/// freed at once (in the free-threaded builds; the `gil` build frees them at once, with no
/// `ReadGuard` alive), that they are freed within `MAX_ROUNDS` rounds, and that every int is freed
/// at the end. With `read_held_for` above zero, the writer first holds a read open for that many
/// quiescent states of its own, right after the writes.
fn replaced_items_are_freed_within_bounded_rounds(
    items: usize,
    writer_waits: Waiting,
    other_quiescent_states: usize,
    read_held_for: usize,
) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = Python::attach(|py| {
        collect(py);
        live_objects(Kind::Int)
    });
    let turns = Barrier::new(2);
    thread::scope(|s| {
        let writer = s.spawn(|| {
            Python::attach(|py| {
                let list = PyList::new(py, (0..items).map(|i| PyInt::new(py, 1_000 + i as i64)));
                // Shared, as a list another thread could read: a local list's writes free what
                // they remove at once, and so does a write while no other thread is attached.
                let handle = list.clone().unbind();
                // Both attached from here on, but for the detached turns.
                wait_for_turn(py, &turns, Waiting::Attached);
                replace_every_item(&list, items);
                // The list and its current items stay alive: only the replaced ones must go.
                let settled = baseline + items as isize;
                if !cfg!(ftrt_gil_build) {
                    // The other thread is pinned at the turn and has passed no quiescent state
                    // since the writes: the epoch cannot have advanced twice past them.
                    assert_eq!(
                        live_objects(Kind::Int) - settled,
                        items as isize,
                        "the replaced items were retired, not freed at once"
                    );
                }
                if read_held_for > 0 {
                    // The open read keeps the writer at its epoch: nothing it retired can
                    // expire meanwhile, whatever it flushes.
                    let read = ReadGuard::new(py);
                    checkpoints(py, read_held_for);
                    drop(read);
                }
                let mut settled_after = None;
                for round in 1..=MAX_ROUNDS {
                    // The other thread's turn.
                    wait_for_turn(py, &turns, writer_waits);
                    wait_for_turn(py, &turns, writer_waits);
                    checkpoints(py, 1);
                    if settled_after.is_none() && live_objects(Kind::Int) == settled {
                        settled_after = Some(round);
                    }
                }
                let still_alive = live_objects(Kind::Int) - settled;
                drop((list, handle));
                (settled_after, still_alive)
            })
        });
        // Joined, as the writer is: the scope's own join does not wait for a thread's exit
        // (thread-local destructors), which may still free what it retired.
        let other = s.spawn(|| {
            Python::attach(|py| {
                // Attached while the writer writes.
                wait_for_turn(py, &turns, Waiting::Attached);
                for _ in 0..MAX_ROUNDS {
                    wait_for_turn(py, &turns, Waiting::Attached);
                    checkpoints(py, other_quiescent_states);
                    wait_for_turn(py, &turns, Waiting::Attached);
                }
            })
        });
        let (settled_after, still_alive) = writer.join().unwrap();
        other.join().unwrap();
        assert!(
            settled_after.is_some(),
            "{still_alive} of {items} replaced items still alive after {MAX_ROUNDS} rounds"
        );
    });
    let after = Python::attach(|py| {
        collect(py);
        live_objects(Kind::Int)
    });
    assert_eq!(after, baseline, "every int was freed");
}

#[test]
fn a_partial_batch_of_replaced_items_is_freed_within_bounded_checkpoints_of_a_thread_that_stopped_writing(
) {
    // Not a multiple of any batch size: a partial batch is left over.
    let items = if cfg!(miri) { 100 } else { 6_400 + 37 };
    replaced_items_are_freed_within_bounded_rounds(items, Waiting::Attached, 1, 0);
}

/// The repins made while a read is open cannot free what the thread retired (the read holds the
/// thread at its epoch, so its marker cannot run): the thread must go on flushing once the read
/// has closed, not wait for the next idle flush.
#[test]
fn replaced_items_are_freed_within_bounded_checkpoints_after_a_read_held_the_retiring_thread_back()
{
    let items = if cfg!(miri) { 100 } else { 6_400 + 37 };
    replaced_items_are_freed_within_bounded_rounds(items, Waiting::Attached, 1, 4);
}

#[test]
fn replaced_items_that_expire_on_another_thread_are_freed_within_bounded_checkpoints_of_the_retiring_thread(
) {
    // Whole batches only, and while the writer is detached the other thread passes enough
    // quiescent states for two of its idle flushes: a thread that retires nothing advances the
    // epoch only there, so what the writer handed over can expire, and run, on the other thread,
    // which drops it (the writer is away: see the next test).
    let items = if cfg!(miri) { 128 } else { 6_400 };
    replaced_items_are_freed_within_bounded_rounds(
        items,
        Waiting::Detached,
        2 * REPINS_PER_IDLE_FLUSH + 8,
        0,
    );
}

/// What a thread retired before it detached is freed while it stays detached (an
/// `allow_threads` around a blocking call): the detach hands its partial batch to the epoch,
/// and the batches that then expire on another, attached thread are dropped there, not posted
/// back to wait for the retiring thread's next attach. (The replaced items are shared objects:
/// dropping them elsewhere reaches none of the retiring thread's local objects.)
#[test]
fn replaced_items_are_freed_while_the_retiring_thread_stays_detached() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let baseline = Python::attach(|py| {
        collect(py);
        live_objects(Kind::Int)
    });
    // Not a multiple of any batch size: the detach hands a partial batch over too.
    let items = if cfg!(miri) { 100 } else { 6_400 + 37 };
    // Two of the other thread's idle flushes advance the epoch twice; a few more for luck.
    let max_quiescent_states = 8 * REPINS_PER_IDLE_FLUSH;
    let (turns, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        let writer = s.spawn(|| {
            Python::attach(|py| {
                let list = PyList::new(py, (0..items).map(|i| PyInt::new(py, 1_000 + i as i64)));
                let handle = list.clone().unbind();
                wait_for_turn(py, &turns, Waiting::Attached);
                replace_every_item(&list, items);
                if !cfg!(ftrt_gil_build) {
                    // The other thread is attached and has passed no quiescent state since.
                    assert_eq!(
                        live_objects(Kind::Int) - baseline - items as isize,
                        items as isize,
                        "the replaced items were retired, not freed at once"
                    );
                }
                // Detached from here until the other thread is done.
                py.allow_threads(|| {
                    turns.wait();
                    done.wait();
                });
                drop((list, handle));
            })
        });
        let other = s.spawn(|| {
            Python::attach(|py| {
                // Attached while the writer writes, so that what it replaces is retired.
                wait_for_turn(py, &turns, Waiting::Attached);
                wait_for_turn(py, &turns, Waiting::Attached);
                // The writer is detached now: only this thread's quiescent states can free
                // what it retired. The list and its current items stay alive.
                let settled = baseline + items as isize;
                let after = quiescent_states_until(py, max_quiescent_states, || {
                    live_objects(Kind::Int) == settled
                });
                let still_alive = live_objects(Kind::Int) - settled;
                py.allow_threads(|| done.wait());
                (after, still_alive)
            })
        });
        writer.join().unwrap();
        let (after, still_alive) = other.join().unwrap();
        assert!(
            after.is_some(),
            "{still_alive} of {items} replaced items still alive after \
             {max_quiescent_states} quiescent states of the attached thread"
        );
    });
    let after = Python::attach(|py| {
        collect(py);
        live_objects(Kind::Int)
    });
    assert_eq!(after, baseline, "every int was freed");
}

/// A batch with a reference taken out of a local container (while a read was open) waits for
/// its thread, detached or not: the object may be local, and a local object is freed only on
/// its own thread (`gc::local`'s list of them is that thread's alone). Its thread drops it once
/// attached again. The batches retired after it, out of a shared list, are freed meanwhile, but
/// for the one that mixes both kinds, whose shared items wait with it.
#[test]
fn retired_local_objects_wait_for_their_detached_thread() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (lists, ints) = Python::attach(|py| {
        collect(py);
        (live_objects(Kind::List), live_objects(Kind::Int))
    });
    // Not a multiple of a batch: the last batch with local objects has shared ints after them.
    let locals = 100;
    let items = if cfg!(miri) { 200 } else { 6_400 };
    // The shared items in the batch that mixes both kinds (batches of 64: `reclaim`'s size).
    let mixed = 64 - locals as isize % 64;
    let max_quiescent_states = 8 * REPINS_PER_IDLE_FLUSH;
    let (turns, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        let owner = s.spawn(|| {
            Python::attach(|py| {
                // A local list of local lists, each listed on this thread, and a shared list.
                let outer = PyList::new(py, (0..locals).map(|_| PyList::empty(py)));
                let shared = PyList::new(py, (0..items).map(|i| PyInt::new(py, 1_000 + i as i64)));
                let handle = shared.clone().unbind();
                wait_for_turn(py, &turns, Waiting::Attached);
                // With a read open, what the removals take out of the local list is retired.
                let read = ReadGuard::new(py);
                for _ in 0..locals {
                    outer.pop().unwrap();
                }
                drop(read);
                replace_every_item(&shared, items);
                let retired = live_objects(Kind::List) - lists - 2;
                py.allow_threads(|| {
                    turns.wait();
                    done.wait();
                });
                drop((outer, shared, handle));
                retired
            })
        });
        let other = s.spawn(|| {
            Python::attach(|py| {
                wait_for_turn(py, &turns, Waiting::Attached);
                wait_for_turn(py, &turns, Waiting::Attached);
                // The owner is detached: this thread's quiescent states advance the epoch, and
                // run the owner's batches as they expire. The shared list and its current items
                // stay alive.
                let settled = ints + items as isize;
                let shared_freed = quiescent_states_until(py, max_quiescent_states, || {
                    live_objects(Kind::Int) - settled <= mixed
                })
                .is_some();
                let counts = (
                    live_objects(Kind::List) - lists - 2,
                    live_objects(Kind::Int) - settled,
                );
                py.allow_threads(|| done.wait());
                (shared_freed, counts)
            })
        });
        let retired = owner.join().unwrap();
        let (shared_freed, (locals_alive, ints_alive)) = other.join().unwrap();
        if !cfg!(ftrt_gil_build) {
            assert_eq!(retired, locals as isize, "the removed lists were retired");
            assert!(
                shared_freed,
                "{ints_alive} replaced ints still alive: the batches did not expire elsewhere"
            );
            assert_eq!(
                ints_alive, mixed,
                "the shared items of the mixed batch wait with its local ones"
            );
            assert_eq!(
                locals_alive, locals as isize,
                "a local object was dropped away from its thread"
            );
        }
    });
    let left = Python::attach(|py| {
        collect(py);
        (
            live_objects(Kind::List) - lists,
            live_objects(Kind::Int) - ints,
        )
    });
    assert_eq!(
        left,
        (0, 0),
        "everything was freed once its thread attached again"
    );
}

/// A thread that waits detached (a main thread joining its workers) gets its objects freed by
/// the thread that drops their last reference, not when it attaches again: in the biased build
/// the dropping thread merges the waiting owner's queue itself.
#[test]
fn an_object_whose_owner_waits_detached_is_freed_by_the_thread_that_drops_it_last() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        collect(py);
        let before = live_objects(Kind::List);
        let list = PyList::empty(py);
        for i in 0..1_000 {
            list.append(PyInt::new(py, i));
        }
        let handle = list.unbind();
        assert_eq!(live_objects(Kind::List), before + 1);
        py.allow_threads(|| {
            thread::spawn(move || Python::attach(|_| drop(handle)))
                .join()
                .expect("the dropping thread");
            // Still detached: this thread has merged nothing since the list was dropped.
            assert_eq!(
                live_objects(Kind::List),
                before,
                "the list stayed allocated while its owner waited detached"
            );
        });
    });
}

/// A dead container's items whose owner waits detached are freed by the container's drop, all of
/// them, on the dropping thread (which merges them for the waiting owner, in the biased build in
/// one batch of drops per container), and the owner attaches again once the drops are over.
#[test]
fn a_dead_containers_items_whose_owner_waits_detached_are_freed_by_its_drop() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        collect(py);
        let kinds = [Kind::List, Kind::Dict, Kind::Int, Kind::Float, Kind::Str];
        let before = kinds.map(live_objects);
        let list = PyList::empty(py);
        let dict = PyDict::new(py);
        // Past the small ints, which are made once and kept.
        for i in 1_000..2_000 {
            list.append(PyInt::new(py, i));
            dict.set_item(&PyStr::new(py, &format!("key-{i}")), PyFloat::new(py, 0.5))
                .unwrap();
        }
        let handles = (list.unbind(), dict.unbind());
        py.allow_threads(|| {
            thread::spawn(move || Python::attach(|_| drop(handles)))
                .join()
                .expect("the dropping thread");
            assert_eq!(
                kinds.map(live_objects),
                before,
                "the containers' items outlived their drop while their owner waited detached"
            );
        });
        // Attached again: the drop's merges for this thread are over.
        assert_eq!(kinds.map(live_objects), before);
    });
}

/// A shared dict holding one float under `"k"`, and the live floats with it alive, settled.
fn shared_dict_with_a_float() -> (Shared<PyDict>, isize) {
    Python::attach(|py| {
        let dict = PyDict::new(py);
        dict.set_item(&PyStr::intern(py, "k"), PyFloat::new(py, 2.5))
            .unwrap();
        let dict = dict.unbind();
        collect(py);
        (dict, live_objects(Kind::Float))
    })
}

/// A borrowed read stays valid while its reader reaches checkpoints: the reader's `ReadGuard`
/// keeps its thread pinned through them, so what another thread removes meanwhile is not freed
/// under the borrow, however many quiescent states both threads pass; and it is freed once the
/// guard is gone.
#[test]
fn a_borrow_stays_alive_while_its_reader_reaches_checkpoints() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (dict, baseline) = shared_dict_with_a_float();
    let turns = Barrier::new(2);
    thread::scope(|s| {
        let reader = s.spawn(|| {
            Python::attach(|py| {
                let dict = dict.bind(py);
                let guard = ReadGuard::new(py);
                let key = PyStr::intern(py, "k");
                let value = dict.get_item_borrowed(&key, &guard).unwrap();
                // The writer removes the value.
                wait_for_turn(py, &turns, Waiting::Attached);
                wait_for_turn(py, &turns, Waiting::Attached);
                for _ in 0..MAX_ROUNDS {
                    checkpoints(py, 1);
                    // The writer's quiescent state, which frees what has expired.
                    wait_for_turn(py, &turns, Waiting::Attached);
                    wait_for_turn(py, &turns, Waiting::Attached);
                }
                let alive = live_objects(Kind::Float);
                assert_eq!(value.to_f64(), Ok(2.5));
                drop(guard);
                alive
            })
        });
        let writer = s.spawn(|| {
            Python::attach(|py| {
                wait_for_turn(py, &turns, Waiting::Attached);
                assert_eq!(dict.bind(py).del_item(&PyStr::intern(py, "k")), Ok(()));
                wait_for_turn(py, &turns, Waiting::Attached);
                for _ in 0..MAX_ROUNDS {
                    wait_for_turn(py, &turns, Waiting::Attached);
                    checkpoints(py, 1);
                    wait_for_turn(py, &turns, Waiting::Attached);
                }
            })
        });
        writer.join().unwrap();
        let alive_under_the_borrow = reader.join().unwrap();
        assert_eq!(
            alive_under_the_borrow, baseline,
            "the removed value was freed under its borrow"
        );
    });
    let after = Python::attach(|py| {
        drop(dict.into_bound(py));
        collect(py);
        live_objects(Kind::Float)
    });
    assert_eq!(after, baseline - 1, "freed once the guard is gone");
}

/// A thread that closes its last read while detached lets go of the pin its detach put aside
/// for it: idle afterwards, detached, it holds no one's reclamation back.
#[test]
fn the_last_read_to_close_lets_go_of_the_pin_a_detach_kept_for_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (dict, baseline) = shared_dict_with_a_float();
    let (idle, done) = (Barrier::new(2), Barrier::new(2));
    thread::scope(|s| {
        s.spawn(|| {
            let read = ftrt_gil::local::OpenRead::new();
            // The detach at the end finds the read open, and puts the attach pin aside.
            Python::attach(|_| ());
            drop(read);
            // Idle and detached, with no read open.
            idle.wait();
            done.wait();
        });
        idle.wait();
        let freed = Python::attach(|py| {
            assert_eq!(dict.bind(py).del_item(&PyStr::intern(py, "k")), Ok(()));
            checkpoints(py, MAX_ROUNDS);
            collect(py);
            baseline - live_objects(Kind::Float)
        });
        done.wait();
        assert_eq!(
            freed, 1,
            "an idle thread with no read open held the epoch back"
        );
    });
    Python::attach(|py| drop(dict.into_bound(py)));
}
