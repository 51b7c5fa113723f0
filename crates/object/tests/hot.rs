//! Counted references to hot shared objects (`ftrt_object::hot`): an object one other thread
//! increments over and over becomes that thread's; found hot again, it is deferred; while deferred
//! its count reads exactly and no decrement frees it; a collection hands it back to its header once
//! it has gone cold (no thread took a reference since the previous collection), and frees it if
//! nothing holds it. Only the biased build defers; the others answer `false` and count as before.

mod common;

use std::sync::mpsc;
use std::sync::Barrier;
use std::thread;
use std::time::{Duration, Instant};

use common::leak_checked;
use ftrt_gil::{Python, BUILD_STRATEGY};
use ftrt_object::hot::{self, is_deferred, PROMOTE_AFTER};
use ftrt_object::stats::live_objects;
use ftrt_object::{gc, Kind, PyFloat, PyList, PyNone, RefCountValue, Shared};
use ftrt_refcount::biased::DeferredPath;
use ftrt_refcount::Strategy;

fn biased() -> bool {
    BUILD_STRATEGY == Strategy::Biased
}

/// Takes and drops a reference `times` times on a new thread, reaching a checkpoint after each
/// (where a deferral it asked for runs).
/// Returns the other thread's id, and the object's owner as that thread saw it last (before it
/// dropped its own binding, which gives up a count it owns with only that reference locally).
fn hammer_from_another_thread(
    py: Python<'_>,
    object: &Shared<PyFloat>,
    times: u32,
) -> (Option<u32>, Option<u32>) {
    // Detached while it waits: under the GIL the other thread could not attach otherwise.
    py.allow_threads(|| {
        common::scope(|s| {
            s.spawn(|| {
                Python::attach(|py| {
                    let value = object.bind(py);
                    for _ in 0..times {
                        drop(value.clone());
                        py.check();
                    }
                    (py.thread_id(), value.owner_thread_id())
                })
            })
            .join()
            .unwrap()
        })
    })
}

#[test]
fn an_object_one_other_thread_counts_again_and_again_becomes_that_threads_and_a_second_thread_gets_it_deferred(
) {
    leak_checked(|py| {
        let object = PyFloat::new(py, 2.5).unbind();
        let creator = py.thread_id();
        assert_eq!(
            object.bind(py).owner_thread_id(),
            creator.filter(|_| biased())
        );
        hammer_from_another_thread(py, &object, PROMOTE_AFTER - 2);
        assert_eq!(
            object.bind(py).owner_thread_id(),
            creator.filter(|_| biased()),
            "not yet hot"
        );
        // Its owner's own references never count towards it.
        let bound = object.bind(py);
        for _ in 0..2 * PROMOTE_AFTER {
            drop(bound.clone());
        }
        assert!(!is_deferred(&bound));
        drop(bound);
        // Hot for the first time: the count moves to the thread that counted it.
        let (hammering, owner_seen) = hammer_from_another_thread(py, &object, 2 * PROMOTE_AFTER);
        assert_eq!(owner_seen, hammering.filter(|_| biased()));
        let bound = object.bind(py);
        assert!(!is_deferred(&bound));
        // The handle and this binding: the request's reference went into the transfer.
        assert_eq!(bound.refcount(), RefCountValue::Mortal(2));
        // Hot again, from another thread: deferred.
        hammer_from_another_thread(py, &object, 2 * PROMOTE_AFTER);
        assert_eq!(is_deferred(&bound), biased());
        assert_eq!(bound.refcount(), RefCountValue::Mortal(2));
        // Still hot for the first collection after that traffic; cold for the next (no thread
        // took a reference in between), which counts it in its header again.
        gc::collect(py);
        assert_eq!(is_deferred(&bound), biased());
        gc::collect(py);
        assert!(!is_deferred(&bound));
        assert_eq!(bound.refcount(), RefCountValue::Mortal(2));
    });
}

/// Whether an object was given away before is the object's own record, not its address's: a
/// new object at the address of one given and freed is given at its first request too. (Given
/// objects were remembered by address, and such an object was deferred instead: the test above
/// failed when its float took the address of one an earlier test had given.)
///
/// The new float gets the freed one's address by construction: [`recycling`] holds that block
/// back when it is freed, on whichever thread frees it, and hands it to this thread's next
/// allocation of its layout. (Waiting for the allocator to hand the block out again could wait
/// forever: a block freed on another thread may stay in that thread's cache.)
#[test]
fn an_object_at_the_address_of_one_given_and_freed_is_given_at_its_first_request() {
    leak_checked(|py| {
        let given = PyFloat::new(py, 1.25).unbind();
        let (hammering, owner_seen) = hammer_from_another_thread(py, &given, 2 * PROMOTE_AFTER);
        assert_eq!(owner_seen, hammering.filter(|_| biased()), "given");
        let address = given.bind(py).id();
        recycling::hold_back(address);
        drop(given);
        // Its memory may wait for the epoch, which another thread's pin can hold back for a
        // while on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !recycling::holds(address) {
            assert!(
                Instant::now() < deadline,
                "the given float's memory was never freed"
            );
            ftrt_object::collect(py);
            py.allow_threads(|| thread::sleep(Duration::from_millis(1)));
        }
        let reused = recycling::reusing(|| PyFloat::new(py, 2.5).unbind());
        assert_eq!(
            reused.bind(py).id(),
            address,
            "the new float took the freed block"
        );
        let (hammering, owner_seen) = hammer_from_another_thread(py, &reused, 2 * PROMOTE_AFTER);
        assert_eq!(
            owner_seen,
            hammering.filter(|_| biased()),
            "given at its first request, not deferred"
        );
        assert!(!is_deferred(&reused.bind(py)));
    });
}

#[test]
fn a_given_object_counts_exactly_while_both_threads_hold_references_and_dies_once() {
    leak_checked(|py| {
        let floats = live_objects(Kind::Float);
        let object = PyFloat::new(py, 4.5).unbind();
        let (keep, done) = (Barrier::new(2), Barrier::new(2));
        let handed = std::sync::Mutex::new(None);
        let mut kept_here = Vec::new();
        let seen = py.allow_threads(|| {
            common::scope(|s| {
                s.spawn(|| {
                    Python::attach(|py| {
                        let value = object.bind(py);
                        // Found hot, and given to this thread at a checkpoint.
                        for _ in 0..2 * PROMOTE_AFTER {
                            drop(value.clone());
                            py.check();
                        }
                        // References it holds, counted locally now, and one handed back.
                        let held: Vec<_> = (0..10).map(|_| value.clone()).collect();
                        *handed.lock().unwrap() = Some(value.clone().unbind());
                        py.allow_threads(|| keep.wait());
                        py.allow_threads(|| done.wait());
                        drop(held);
                    })
                });
                keep.wait();
                // Read while the other thread holds its references; checked after it is released
                // (a failed check here would leave it waiting).
                let seen = Python::attach(|py| {
                    let bound = object.bind(py);
                    kept_here.extend(handed.lock().unwrap().take());
                    (bound.owner_thread_id(), py.thread_id(), bound.refcount())
                });
                done.wait();
                seen
            })
        });
        let (owner, me, count) = seen;
        if biased() {
            assert!(owner.is_some() && owner != me, "given to the other thread");
        }
        // The handle, the other thread's binding and the ten it holds, the one it handed over,
        // and the binding that read the count.
        assert_eq!(count, RefCountValue::Mortal(14));
        Python::attach(|py| {
            // The other thread has let go of its own: the handle, the one it handed over, and
            // this binding.
            assert_eq!(object.bind(py).refcount(), RefCountValue::Mortal(3));
        });
        drop(kept_here);
        drop(object);
        ftrt_object::collect(py);
        assert_eq!(live_objects(Kind::Float), floats, "freed, once");
    });
}

#[test]
fn the_explicit_api_defers_shared_mortal_objects_in_the_biased_build() {
    leak_checked(|py| {
        let object = PyList::empty(py);
        assert_eq!(object.defer_refcount(), biased());
        assert_eq!(is_deferred(&object), biased());
        assert_eq!(
            object.defer_refcount(),
            biased(),
            "deferring twice is no error"
        );
        assert!(
            !PyNone::get(py).defer_refcount(),
            "immortal objects are not deferred"
        );
        drop(object);
    });
}

/// Every id the registry hands out counts: the most objects deferred at once each read their
/// exact count while another thread holds references to them (an id that indexed past a
/// thread's array, or a slot that counts nothing, would read one short).
#[test]
fn the_most_objects_deferred_at_once_each_count_exactly() {
    leak_checked(|py| {
        let objects: Vec<_> = (0..hot::MAX_DEFERRED)
            .map(|i| PyFloat::new(py, i as f64))
            .collect();
        for object in &objects {
            assert_eq!(object.defer_refcount(), biased());
        }
        let extra = PyFloat::new(py, -1.0);
        assert!(!extra.defer_refcount(), "no id is left");
        let shared: Vec<_> = objects.iter().map(|o| o.clone().unbind()).collect();
        let taken = Barrier::new(2);
        let release = Barrier::new(2);
        py.allow_threads(|| {
            common::scope(|s| {
                s.spawn(|| {
                    Python::attach(|py| {
                        let held: Vec<_> = shared.iter().map(|o| o.bind(py)).collect();
                        py.allow_threads(|| taken.wait());
                        py.allow_threads(|| release.wait());
                        drop(held);
                    })
                });
                taken.wait();
                let counts: Vec<_> =
                    Python::attach(|py| shared.iter().map(|o| o.bind(py).refcount()).collect());
                // Checked once the other thread is released: a failed check must not leave it
                // waiting.
                release.wait();
                for (i, count) in counts.into_iter().enumerate() {
                    // The binding, the handle, the object, and the other thread's.
                    assert_eq!(count, RefCountValue::Mortal(4), "object {i}");
                }
            })
        });
        drop(shared);
        drop(objects);
        gc::collect(py);
        assert_eq!(hot::deferred_count(), 0);
    });
}

/// Immortal objects, which no thread owns, are counted by no one: every thread's references
/// leave them immortal, never deferred, and never freed.
#[test]
fn immortal_objects_counted_by_every_thread_stay_immortal_and_are_not_deferred() {
    leak_checked(|py| {
        let threads = 4;
        py.allow_threads(|| {
            common::scope(|s| {
                for _ in 0..threads {
                    s.spawn(|| {
                        Python::attach(|py| {
                            let none = PyNone::get(py);
                            let held: Vec<_> = (0..100).map(|_| none.clone()).collect();
                            assert_eq!(none.refcount(), RefCountValue::Immortal);
                            assert!(!is_deferred(&none));
                            drop(held);
                        })
                    });
                }
            })
        });
        let none = PyNone::get(py);
        assert_eq!(none.refcount(), RefCountValue::Immortal);
        assert!(!is_deferred(&none));
    });
}

#[test]
fn a_deferred_count_reads_exactly_while_threads_hold_references() {
    leak_checked(|py| {
        let object = PyFloat::new(py, 1.25);
        object.defer_refcount();
        let shared = object.clone().unbind();
        let holders = 4;
        let taken = Barrier::new(holders + 1);
        let release = Barrier::new(holders + 1);
        py.allow_threads(|| {
            common::scope(|s| {
                for _ in 0..holders {
                    s.spawn(|| {
                        Python::attach(|py| {
                            let held: Vec<_> = (0..3).map(|_| shared.bind(py)).collect();
                            py.allow_threads(|| taken.wait());
                            py.allow_threads(|| release.wait());
                            drop(held);
                        })
                    });
                }
                taken.wait();
                // `object`, `shared`, the binding that reads it, and three on each holder.
                let count = Python::attach(|py| shared.bind(py).refcount());
                assert_eq!(count, RefCountValue::Mortal(3 + 3 * holders));
                release.wait();
            })
        });
        assert_eq!(object.refcount(), RefCountValue::Mortal(2));
    });
}

#[test]
fn a_deferred_object_dropped_by_everyone_lives_until_a_collection_frees_it() {
    leak_checked(|py| {
        let floats = live_objects(Kind::Float);
        let object = PyFloat::new(py, 4.5);
        if !object.defer_refcount() {
            return;
        }
        let shared = object.unbind();
        // The last reference dies on another thread.
        let other = thread::spawn(move || Python::attach(|py| drop(shared.bind(py))));
        py.allow_threads(|| other.join().unwrap());
        assert_eq!(
            live_objects(Kind::Float),
            floats + 1,
            "no decrement frees a deferred object"
        );
        gc::collect(py);
        assert_eq!(live_objects(Kind::Float), floats);
        assert_eq!(hot::deferred_count(), 0);
    });
}

/// Deferred objects that die are freed by a collection, and deferrals ask for one: each counts
/// towards the collection threshold, so at most `DEFERRALS_PER_COLLECTION` deferrals pass
/// between two collections. A program that stops making containers and keeps deferring
/// objects that then die used to keep every one of them, and once `MAX_DEFERRED` were
/// deferred, no object was ever promoted again.
#[test]
fn deferred_objects_that_die_are_freed_without_an_explicit_collection() {
    leak_checked(|py| {
        let floats = live_objects(Kind::Float);
        let deferrals = 3 * hot::DEFERRALS_PER_COLLECTION;
        for n in 0..deferrals {
            let object = PyFloat::new(py, n as f64);
            assert_eq!(object.defer_refcount(), biased());
            drop(object);
            // Where the collections asked for run.
            for _ in 0..32 {
                py.check();
            }
        }
        assert!(
            hot::deferred_count() <= hot::DEFERRALS_PER_COLLECTION,
            "{} of {deferrals} dead deferred objects left",
            hot::deferred_count()
        );
        assert!(live_objects(Kind::Float) <= floats + hot::DEFERRALS_PER_COLLECTION as isize);
    });
}

/// A request refused because the table is full counts towards the next collection only while
/// settlings give ids back: once one gives none back (every deferred object still hot, or
/// fresh), refusals ask for no collection. They used to ask for one every 64 refusals, that is
/// every 64 × `PROMOTE_AFTER` increments of objects found hot, each a stop of the world that
/// freed nothing.
#[test]
#[cfg_attr(
    miri,
    ignore = "collections were asked for every 64 refusals, that is every 64 x PROMOTE_AFTER \
              (262,144) increments: it makes 80 x PROMOTE_AFTER"
)]
fn refusals_for_a_full_table_ask_for_no_collection_once_a_settling_gives_no_id_back() {
    if !biased() {
        return;
    }
    leak_checked(|py| {
        let held: Vec<_> = (hot::deferred_count()..hot::MAX_DEFERRED)
            .map(|n| {
                let object = PyFloat::new(py, n as f64);
                assert!(object.defer_refcount());
                object
            })
            .collect();
        // Every deferral is fresh: this settling gives no id back.
        gc::collect(py);
        assert_eq!(hot::deferred_count(), hot::MAX_DEFERRED);
        let collections = gc::collections();
        let object = PyFloat::new(py, 0.5).unbind();
        hammer_from_another_thread(py, &object, 80 * PROMOTE_AFTER);
        assert_eq!(
            gc::collections(),
            collections,
            "80 refused requests stopped the world to collect"
        );
        drop((held, object));
    });
}

/// A deferral lasts through the first collection after it, even with no traffic in between (the
/// threads just woke from the stop that deferred it, and none has counted it yet), and ends at
/// the next one if no thread took a reference meanwhile. It used to end at the first: a
/// deferral asked for just before a collection (which runs the requests first) was undone by
/// that same collection.
#[test]
fn a_deferral_lasts_through_the_first_collection_after_it() {
    leak_checked(|py| {
        let object = PyFloat::new(py, 1.5);
        assert_eq!(object.defer_refcount(), biased());
        gc::collect(py);
        assert_eq!(
            is_deferred(&object),
            biased(),
            "undone by the first collection"
        );
        assert_eq!(object.refcount(), RefCountValue::Mortal(1));
        gc::collect(py);
        assert!(!is_deferred(&object), "cold for a whole interval");
        assert_eq!(object.refcount(), RefCountValue::Mortal(1));
    });
}

#[test]
fn an_exited_threads_counts_still_count() {
    leak_checked(|py| {
        let object = PyFloat::new(py, 0.75);
        object.defer_refcount();
        let shared = object.clone().unbind();
        // Another thread takes three references, hands them over and exits.
        let (send, receive) = mpsc::channel();
        let other = thread::spawn(move || {
            Python::attach(|py| {
                for _ in 0..3 {
                    send.send(shared.clone_ref(py)).unwrap();
                }
                drop(shared);
            })
        });
        py.allow_threads(|| other.join().unwrap());
        let handed: Vec<Shared<PyFloat>> = receive.iter().collect();
        // The references it took are in its counts, which its exit kept.
        gc::collect(py);
        assert_eq!(
            is_deferred(&object),
            biased(),
            "the threads still hold three"
        );
        assert_eq!(object.refcount(), RefCountValue::Mortal(4));
        drop(handed);
        // Cold since the last collection: counted in its header again.
        gc::collect(py);
        assert!(!is_deferred(&object));
        assert_eq!(object.refcount(), RefCountValue::Mortal(1));
    });
}

/// References a thread keeps in a thread-local of its own, dropped in its exit, and the path the
/// thread's deferred counts take as they are dropped.
struct KeptUntilTheExit(Vec<Shared<PyFloat>>);

/// The path [`KeptUntilTheExit`]'s drop found, out of line unless its drops went inline.
static PATH_AT_THE_EXIT: std::sync::Mutex<Option<DeferredPath>> = std::sync::Mutex::new(None);

impl Drop for KeptUntilTheExit {
    fn drop(&mut self) {
        *PATH_AT_THE_EXIT.lock().unwrap() = Some(ftrt_gil::local::deferred_path());
        // Each handle attaches for its drop, after the thread's exit: counted with the exited
        // threads.
        self.0.clear();
    }
}

std::thread_local! {
    static KEPT: std::cell::RefCell<KeptUntilTheExit> =
        const { std::cell::RefCell::new(KeptUntilTheExit(Vec::new())) };
}

/// A thread counts a deferred object out of line until its array of counts is made (its first
/// count of a deferred object makes it), inline from then on, and out of line again once its
/// exit has retired the array: references it drops then, from a thread-local destroyed after the
/// array, count with the exited threads. Inline then, they would write to the freed array.
#[test]
fn a_thread_counts_deferred_objects_inline_only_while_its_array_lives() {
    leak_checked(|py| {
        let object = PyFloat::new(py, 0.25);
        object.defer_refcount();
        let shared = object.clone().unbind();
        let other = thread::spawn(move || {
            // Touched before the array is made, so destroyed after it.
            KEPT.with(|kept| kept.borrow_mut().0.clear());
            Python::attach(|py| {
                let before = ftrt_gil::local::deferred_path();
                for _ in 0..3 {
                    let taken = shared.clone_ref(py);
                    KEPT.with(|kept| kept.borrow_mut().0.push(taken));
                }
                let after = ftrt_gil::local::deferred_path();
                drop(shared);
                (before, after)
            })
        });
        let (before, after) = py.allow_threads(|| other.join().unwrap());
        let at_the_exit = PATH_AT_THE_EXIT.lock().unwrap().take();
        assert_eq!(
            before,
            DeferredPath::OUT_OF_LINE,
            "no array before the first count"
        );
        let inline = if biased() {
            DeferredPath::INLINE
        } else {
            // No build but the biased one defers.
            DeferredPath::OUT_OF_LINE
        };
        assert_eq!(after, inline, "the first count made the array");
        assert_eq!(
            at_the_exit,
            Some(DeferredPath::OUT_OF_LINE),
            "dropped after the array was retired"
        );
        // Taken three times and dropped three times, on the thread's array and after it.
        gc::collect(py);
        gc::collect(py);
        assert!(!is_deferred(&object));
        assert_eq!(object.refcount(), RefCountValue::Mortal(1));
    });
}

/// Many threads take references to one deferred object (deferred where counts are biased),
/// hand some to each other (taken on one thread, dropped on another), while collections settle
/// it again and again; the count stays exact, the object is still deferred once they are done,
/// and it is freed exactly once, by the last collection.
#[test]
fn threads_counting_a_deferred_object_while_collections_settle_it() {
    // Under Miri two and four threads, not up to sixteen, and a tenth of the rounds with the
    // collections a tenth as far apart: four a run still, the last before the threads' last
    // references.
    let (thread_counts, rounds, collect_every): (&[usize], _, _) = if cfg!(miri) {
        (&[2, 4], 200, 50)
    } else {
        (&[2, 4, 8, 16], 2_000, 500)
    };
    for &threads in thread_counts {
        leak_checked(|py| {
            let floats = live_objects(Kind::Float);
            let object = PyFloat::new(py, 8.0);
            let shared = object.clone().unbind();
            let start = Barrier::new(threads);
            let (send, receive) = mpsc::channel::<Shared<PyFloat>>();
            let receive = std::sync::Mutex::new(receive);
            py.allow_threads(|| {
                common::scope(|s| {
                    for t in 0..threads {
                        let (shared, send, receive, start) =
                            (&shared, send.clone(), &receive, &start);
                        s.spawn(move || {
                            Python::attach(|py| {
                                let value = shared.bind(py);
                                let deferred =
                                    (t == 0).then(|| (value.defer_refcount(), is_deferred(&value)));
                                py.allow_threads(|| start.wait());
                                // Judged after the barrier: a panic before it would leave the
                                // other threads waiting there for ever.
                                if let Some(deferred) = deferred {
                                    assert_eq!(
                                        deferred,
                                        (biased(), biased()),
                                        "deferred (answer, state) where counts are biased"
                                    );
                                }
                                let mut kept = Vec::new();
                                for i in 0..rounds {
                                    kept.push(value.clone());
                                    if i % 7 == 0 {
                                        send.send(value.clone().unbind()).unwrap();
                                    }
                                    if i % 5 == 0 {
                                        let handed = receive.lock().unwrap().try_recv();
                                        drop(handed);
                                    }
                                    if i % 3 == 0 {
                                        kept.clear();
                                    }
                                    if t == 1 && i % collect_every == 0 {
                                        gc::collect(py);
                                    }
                                    py.check();
                                }
                            })
                        });
                    }
                })
            });
            drop(send);
            // What nobody received.
            receive.into_inner().unwrap().into_iter().for_each(drop);
            gc::collect(py);
            assert_eq!(
                object.refcount(),
                RefCountValue::Mortal(2),
                "{threads} threads"
            );
            // The threads took references after the last collection among them, so the one
            // above kept the object deferred: the drop below leaves it to the next one.
            assert_eq!(is_deferred(&object), biased(), "{threads} threads");
            drop((object, shared));
            assert_eq!(
                live_objects(Kind::Float) - floats,
                isize::from(biased()),
                "{threads} threads: freed by the drop only where it was not deferred"
            );
            gc::collect(py);
            assert_eq!(live_objects(Kind::Float), floats, "{threads} threads");
        });
    }
}

/// Increments `object` on a new thread until it asks for the object to be deferred, and ends
/// without a checkpoint after that (where the request would run): the request stays queued.
fn request_without_a_checkpoint(py: Python<'_>, object: &Shared<PyFloat>) {
    py.allow_threads(|| {
        common::scope(|s| {
            s.spawn(|| {
                Python::attach(|py| {
                    let value = object.bind(py);
                    for _ in 0..PROMOTE_AFTER {
                        drop(value.clone());
                    }
                })
            });
        })
    });
}

/// A thread that asks for an object to be deferred and stops before its next checkpoints (where
/// the deferral would run) leaves the request, and the reference it holds, queued: a collection
/// runs the pending requests first, so the count reads exactly and the object can die.
#[test]
fn a_request_left_pending_by_a_thread_holds_no_reference_past_a_collection() {
    leak_checked(|py| {
        let floats = live_objects(Kind::Float);
        let object = PyFloat::new(py, 3.5).unbind();
        request_without_a_checkpoint(py, &object);
        let bound = object.bind(py);
        ftrt_object::collect(py);
        // The handle and this binding.
        assert_eq!(bound.refcount(), RefCountValue::Mortal(2));
        drop((bound, object));
        ftrt_object::collect(py);
        assert_eq!(live_objects(Kind::Float), floats);
    });
}

/// A request's reference is the runtime's, not a holder's: while the request waits for a
/// checkpoint, the count reads the references the program holds, as `getrefcount` would.
#[test]
fn a_pending_request_does_not_show_in_the_count() {
    leak_checked(|py| {
        let object = PyFloat::new(py, 4.5).unbind();
        request_without_a_checkpoint(py, &object);
        let bound = object.bind(py);
        assert_eq!(
            bound.refcount(),
            RefCountValue::Mortal(2),
            "the handle and this binding"
        );
        // Run, the first request would have given the object to the thread that asked.
        assert_eq!(
            bound.owner_thread_id(),
            py.thread_id().filter(|_| biased()),
            "the request has run"
        );
        drop((bound, object));
        ftrt_object::collect(py);
    });
}

/// A deferral that cannot stop the world in time (a thread attached and blocked without a
/// checkpoint) is given up, and the object's next requests wait a while instead of each
/// waiting for the world again. (Each request, every `PROMOTE_AFTER` increments, waited the
/// full 50 ms: a thread counting a hot object spent nearly all its time waiting.)
#[cfg(not(ftrt_gil_build))]
#[test]
fn a_deferral_that_times_out_is_not_asked_again_at_once() {
    if !biased() {
        // Only the biased count asks for deferrals.
        return;
    }
    leak_checked(|py| {
        let object = PyFloat::new(py, 2.5).unbind();
        let before = hot::deferrals_given_up();
        let started = Instant::now();
        // Under Miri two requests' worth, not eight: only the one try is checked there (below).
        let requests = if cfg!(miri) { 2 } else { 8 };
        common::with_a_thread_blocked_attached(|| {
            hammer_from_another_thread(py, &object, requests * PROMOTE_AFTER)
        });
        let took = started.elapsed();
        let given_up = hot::deferrals_given_up() - before;
        // A try waits out the patience, then holds the next off: k tries take at least the
        // patience and k - 1 times the patience and the hold-off. Without the hold-off, each of
        // the eight requests would try; here, where the increments take well under a second,
        // one does. (Under Miri, whose clock counts the instructions it runs, the increments
        // outlast the hold-offs, and only the one try is checked.)
        let tries_apart = (hot::PATIENCE + hot::HOLD_OFF).as_secs_f64();
        let at_most = 1 + (took.saturating_sub(hot::PATIENCE).as_secs_f64() / tries_apart) as usize;
        assert!(
            (1..=at_most).contains(&given_up),
            "{given_up} deferrals given up over {requests} requests' worth of increments in {took:?}"
        );
    });
}

/// A request made while a collection stops the world is run by that collection, in its stopped
/// world, before any count is read: the request's reference does not outlive it. Here the
/// request is the first for a list that holds itself, so it gives the list to the thread that
/// asked, and the collection then finds the cycle unreachable. (Collections ran the pending
/// requests before they stopped the world: a request made in between held its reference through
/// the collection, which read it as a reference from outside and kept the cycle.)
#[test]
fn a_request_made_as_a_collection_stops_the_world_is_run_by_that_collection() {
    if !biased() {
        return; // only biased counts find objects hot
    }
    leak_checked(|py| {
        let list = PyList::empty(py);
        list.append(list.clone());
        let handle = list.unbind();
        let (attached, attached_yet) = mpsc::channel();
        let found = common::scope(|s| {
            s.spawn(move || {
                Python::attach(|py| {
                    let bound = handle.bind(py);
                    attached.send(()).unwrap();
                    while !ftrt_gil::stop_requested() {
                        std::hint::spin_loop();
                    }
                    // Found hot as the collection stops the world: a request, then a park.
                    for _ in 0..PROMOTE_AFTER {
                        drop(bound.clone());
                    }
                    drop(bound);
                    drop(handle);
                    py.check();
                })
            });
            attached_yet.recv().unwrap();
            gc::collect(py).unreachable
        });
        assert_eq!(found, 1, "the request's reference kept the cycle");
    });
}

/// The system allocator, except that it can hold one freed block back and hand it out again:
/// a new allocation at a freed object's address, made to happen instead of waited for.
mod recycling {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[global_allocator]
    static GLOBAL: Recycling = Recycling;

    /// The address whose block is held back when it is freed; 0 for none.
    static TO_HOLD: AtomicUsize = AtomicUsize::new(0);
    /// The block held back, and its layout's size and alignment; 0 while none is held.
    static HELD: AtomicUsize = AtomicUsize::new(0);
    static HELD_SIZE: AtomicUsize = AtomicUsize::new(0);
    static HELD_ALIGN: AtomicUsize = AtomicUsize::new(0);

    std::thread_local! {
        /// Whether this thread's allocations take the held block (only the test's thread's:
        /// another thread's allocation of the same layout must not).
        static TAKES_HELD: Cell<bool> = const { Cell::new(false) };
    }

    /// Holds back the block at `address` when it is freed, on any thread.
    pub fn hold_back(address: usize) {
        TO_HOLD.store(address, Ordering::SeqCst);
    }

    /// Whether the block at `address` was freed and is held back.
    pub fn holds(address: usize) -> bool {
        HELD.load(Ordering::SeqCst) == address
    }

    /// Runs `f` with this thread's allocations of the held block's layout taking it.
    pub fn reusing<T>(f: impl FnOnce() -> T) -> T {
        struct Reset;
        impl Drop for Reset {
            fn drop(&mut self) {
                TAKES_HELD.with(|takes| takes.set(false));
            }
        }
        TAKES_HELD.with(|takes| takes.set(true));
        let _reset = Reset;
        f()
    }

    struct Recycling;

    // SAFETY: every block comes from `System` and goes back to it, except the one held back,
    // which is freed to nobody and handed out once, at most, for an allocation of the layout it
    // was allocated with (the same size and alignment: a valid block for it).
    unsafe impl GlobalAlloc for Recycling {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            let held = HELD.load(Ordering::SeqCst);
            if held != 0
                // `try_with`: an allocator must not panic (a thread's late destructors allocate).
                && TAKES_HELD.try_with(Cell::get).unwrap_or(false)
                && HELD_SIZE.load(Ordering::SeqCst) == layout.size()
                && HELD_ALIGN.load(Ordering::SeqCst) == layout.align()
                && HELD
                    .compare_exchange(held, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            {
                TO_HOLD.store(0, Ordering::SeqCst);
                return held as *mut u8;
            }
            // SAFETY: the caller's contract, passed on.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            if ptr as usize == TO_HOLD.load(Ordering::SeqCst) && HELD.load(Ordering::SeqCst) == 0 {
                // The layout first: `holds` and `alloc` read `HELD` after it.
                HELD_SIZE.store(layout.size(), Ordering::SeqCst);
                HELD_ALIGN.store(layout.align(), Ordering::SeqCst);
                HELD.store(ptr as usize, Ordering::SeqCst);
                return;
            }
            // SAFETY: the caller's contract, passed on.
            unsafe { System.dealloc(ptr, layout) }
        }
    }
}
