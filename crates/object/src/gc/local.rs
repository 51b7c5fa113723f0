//! Local collections: a thread finds the reference cycles among its own local objects alone,
//! without stopping the world (free-threaded builds).
//!
//! A local object is reachable from its creating thread alone, and a shared object holds only
//! shared objects (`Header`'s invariant). So no cycle mixes the two: a cycle through a local
//! object would need a shared object that holds a local one. The cycles among a thread's local
//! objects can therefore be found by that thread at one of its quiescent states, with every
//! other thread running: nothing else can reach those objects, so their counts and contents
//! hold still while the thread looks at them.
//!
//! Each thread keeps a list of its local tracked objects (made on its first tracked
//! allocation), and each listed object its place in the list (`header::GcHead`). The invariant:
//! **an object is listed only while it is local to a live thread, in that thread's list, and
//! every reference to it is held on that thread or by objects in that list.** It is kept by:
//! - listing only objects made local, on a thread whose thread state is alive;
//! - taking an object out of the list when it is published (on its thread, before any other
//!   thread can reach it; or, for garbage an explicit collection found, in the stopped world on
//!   its thread's behalf, with everything it reaches) and when it is freed (on its thread: no
//!   other thread can drop a reference to it);
//! - taking every object out of the list when the thread retires its list at exit, before its
//!   retired references can reach another thread (`reclaim` closes its mailbox after this).
//!
//! Automatic stopped-world collections skip listed objects: they can hold shared objects, so
//! skipping them only keeps those alive for now, and no unlisted object holds a listed one. An
//! explicit `gc::collect` examines them too ([`LiveLists::unlist`]).

use std::cell::{Cell, RefCell};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use ftrt_gil::{BuildCount, Python};
use ftrt_refcount::{RefCount, RefCountValue};

use super::{add_young_now, free_garbage, give_indexes, unreachable_among, Mark, THRESHOLD};
use crate::header::{header, listed_at, set_listed_at, Header, FOUND_GARBAGE, NOT_LISTED};
use crate::refs::incref;

/// A thread's local tracked objects, by their place in the list.
struct LocalObjects {
    objects: RefCell<Vec<NonNull<Header>>>,
    /// Objects listed since the last local collection, net of those unlisted.
    young: Cell<isize>,
    /// Objects the last local collection left listed.
    survivors: Cell<usize>,
    /// A local collection is due at the thread's next quiescent state.
    due: Cell<bool>,
    /// A local collection is running on the thread (none starts inside another).
    collecting: Cell<bool>,
}

/// The thread's list, owned by its thread state (`ftrt_gil::local`), which drops it at exit.
struct List(Box<LocalObjects>);

impl Drop for List {
    fn drop(&mut self) {
        // Normally done already, first thing in the thread's exit (`retire_thread`).
        if std::ptr::eq(LIST.get(), &*self.0) {
            retire_thread();
        }
    }
}

static LISTS: ftrt_gil::local::Key<List> = ftrt_gil::local::Key::new(|| {
    List(Box::new(LocalObjects {
        objects: RefCell::new(Vec::new()),
        young: Cell::new(0),
        survivors: Cell::new(0),
        due: Cell::new(false),
        collecting: Cell::new(false),
    }))
});

thread_local! {
    /// The calling thread's list while it lives (null before its first tracked allocation and
    /// after [`retire_thread`]). Const, destructor-less: readable in every thread-local
    /// destructor, so frees during the thread's exit find the list as long as it exists.
    static LIST: Cell<*const LocalObjects> = const { Cell::new(std::ptr::null()) };
    /// Runs in [`retire_thread`] once the exit has unlisted its objects (tests).
    #[cfg(test)]
    pub(super) static AFTER_EXIT_UNLISTED: Cell<Option<Box<dyn FnOnce()>>> =
        const { Cell::new(None) };
    /// Set once the thread retired its list: no new one is made.
    static RETIRED: Cell<bool> = const { Cell::new(false) };
}

/// Local collections run so far, on every thread.
static LOCAL_COLLECTIONS: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's list, made on first use while its thread state lives.
#[inline]
fn list() -> Option<&'static LocalObjects> {
    let list = LIST.get();
    if !list.is_null() {
        // SAFETY: non-null only while the `List` that owns it is alive: set when it is made,
        // nulled by `retire_thread` before the thread state drops it.
        return Some(unsafe { &*list });
    }
    make_list()
}

#[cold]
fn make_list() -> Option<&'static LocalObjects> {
    // Without a batch for its retired references, a thread lists nothing: what it retires
    // could then be dropped on another thread, and a listed object must be freed on its own.
    if RETIRED.get() || !crate::reclaim::has_retired_batch() {
        return None;
    }
    // Nor without the hook that runs its local collections (other crates may have filled the
    // runtime's table first): listed objects are left out of the automatic stopped-world
    // collections, so with no local ones their cycles would stay until an explicit collection.
    static HOOKED: OnceLock<bool> = OnceLock::new();
    if !*HOOKED.get_or_init(|| crate::reclaim::register_quiescent_state_hook(collect_if_due)) {
        return None;
    }
    let made = LISTS.with_current(|list| list.map(|list| &*list.0 as *const LocalObjects))?;
    lock_lists().0.push(ListRef(made));
    LIST.set(made);
    // SAFETY: as in `list`.
    Some(unsafe { &*made })
}

/// Lists a newly tracked object, if it is local and its thread has a list. Returns whether it
/// did (an unlisted object counts towards the stopped-world collections instead).
///
/// # Safety
/// As for `gc::track`: just allocated on this thread, alive, of a type that holds references,
/// and unlisted before it is freed.
#[inline]
pub(super) unsafe fn list_new(object: NonNull<Header>) -> bool {
    // SAFETY: just allocated, alive, reachable from this thread alone.
    if unsafe { header(object) }.is_shared() {
        return false;
    }
    let Some(list) = list() else {
        return false;
    };
    let mut objects = list.objects.borrow_mut();
    let place = objects.len() as u32;
    objects.push(object);
    // SAFETY: alive, and of a tracked type.
    unsafe { set_listed_at(object, place) };
    drop(objects);
    count_local_young(list, 1);
    true
}

/// Takes `object` out of its thread's list if it is listed: it is being published (`freeing`
/// false) or freed, on its thread. Returns whether it was listed.
///
/// # Safety
/// `object` is alive and of a type that holds references.
#[inline]
pub(crate) unsafe fn unlist(object: NonNull<Header>, freeing: bool) -> bool {
    // SAFETY: per the caller.
    let place = unsafe { listed_at(object) };
    if place >= FOUND_GARBAGE {
        return false;
    }
    // SAFETY: per the caller.
    unsafe { unlist_at(object, place, freeing) };
    true
}

/// # Safety
/// As for [`unlist`], and `object` is listed at `place`.
#[inline]
unsafe fn unlist_at(object: NonNull<Header>, place: u32, freeing: bool) {
    // A listed object is local to a live thread, so this is that thread, and its list exists.
    let list = list().expect("a listed object's thread has its list");
    // SAFETY: per the caller; this is the list's thread.
    let removed = unsafe { list.remove(object, place, !freeing) };
    assert!(
        removed,
        "a listed object is in its thread's list at its place"
    );
}

impl LocalObjects {
    /// Takes `object` out of this list if it is at `place`: the last object moves to its place.
    /// Returns whether it was there. `mark` also marks `object` unlisted (an object being
    /// freed is not read again).
    ///
    /// # Safety
    /// `object` is alive, of a type that holds references, and listed at `place`, in some
    /// list; the caller is this list's thread, or the world is stopped (see
    /// [`LiveLists::unlist`]).
    unsafe fn remove(&self, object: NonNull<Header>, place: u32, mark: bool) -> bool {
        let mut objects = self.objects.borrow_mut();
        if objects.get(place as usize) != Some(&object) {
            return false;
        }
        objects.swap_remove(place as usize);
        if let Some(&moved) = objects.get(place as usize) {
            // SAFETY: listed, so alive; its thread is the caller, or stopped.
            unsafe { set_listed_at(moved, place) };
        }
        drop(objects);
        if mark {
            // SAFETY: alive per the caller.
            unsafe { set_listed_at(object, NOT_LISTED) };
        }
        count_local_young(self, -1);
        true
    }
}

fn count_local_young(list: &LocalObjects, delta: isize) {
    let young = list.young.get() + delta;
    list.young.set(young);
    if delta > 0 && young >= THRESHOLD.max(list.survivors.get() / 4) as isize {
        list.due.set(true);
    }
}

/// Ends the calling thread's list (its exit): every object in it is unlisted, so the
/// stopped-world collections take them over, and counted as young there. Called before the
/// thread's retired references can reach another thread, and again (doing nothing) when the
/// thread state drops the list.
pub(crate) fn retire_thread() {
    RETIRED.set(true);
    let list = LIST.replace(std::ptr::null());
    if list.is_null() {
        return;
    }
    // SAFETY: the list is alive: its `List` is dropped only after this (or is calling this).
    let list = unsafe { &*list };
    {
        // The exit is not attached, so a stop does not wait for it: a stopped-world collection
        // must see the list whole or retired, never half-way (it would free an unlisted object
        // whose clearing frees a still-listed one on the collecting thread), and must not
        // unlist from it meanwhile.
        let mut lists = lock_lists();
        lists.0.retain(|live| !std::ptr::eq(live.0, list));
        let objects = std::mem::take(&mut *list.objects.borrow_mut());
        for &object in &objects {
            // SAFETY: listed, so alive and local to this thread.
            unsafe { set_listed_at(object, NOT_LISTED) };
        }
        // Unlisted objects have registry slots, for the stopped-world collections.
        // SAFETY: as above; `lists` is held, which a stopped-world collection takes before it
        // reads the registry (this thread, exiting, is not attached).
        unsafe { give_indexes(&objects) };
        // Counted under the lock, and at once (not into the thread's batch, which would reach
        // the global count after the lock): a collection that has read the lists already
        // resets the young count after this, since it did not examine these objects; one that
        // comes later examines them, and its reset covers them (counted after the lock, they
        // were young again after it).
        add_young_now(objects.len() as isize);
    }
    #[cfg(test)]
    if let Some(hook) = AFTER_EXIT_UNLISTED.try_with(Cell::take).ok().flatten() {
        hook();
    }
}

/// A live thread's list, as the registry of lists holds it.
struct ListRef(*const LocalObjects);

// SAFETY: only a pointer; it is followed on another thread than the list's only in a stopped
// world, under the registry's lock (`LiveLists::unlist`).
unsafe impl Send for ListRef {}

/// Every live thread's list. Its lock is held while a thread's exit unlists its objects, and
/// by a stopped-world collection while it reads which objects are listed and unlists some.
static LIVE_LISTS: Mutex<Vec<ListRef>> = Mutex::new(Vec::new());

/// The registry of live lists, locked. Nothing waits while holding it.
pub(super) struct LiveLists(MutexGuard<'static, Vec<ListRef>>);

pub(super) fn lock_lists() -> LiveLists {
    LiveLists(LIVE_LISTS.lock().unwrap_or_else(|e| e.into_inner()))
}

impl LiveLists {
    /// Takes `object` out of whichever live thread's list holds it, from a stopped world: the
    /// stopped-world collection publishes another thread's local garbage this way before it is
    /// freed on the collecting thread. Returns whether it was listed.
    ///
    /// # Safety
    /// The world is stopped (attached threads are parked outside any list operation, detached
    /// ones touch no object, and exits wait for this lock), and `object` is alive and of a type
    /// that holds references.
    pub(super) unsafe fn unlist(&self, object: NonNull<Header>) -> bool {
        // SAFETY: per the caller.
        let place = unsafe { listed_at(object) };
        if place >= FOUND_GARBAGE {
            return false;
        }
        for live in self.0.iter() {
            // SAFETY: registered lists are alive (a list leaves the registry, under this lock,
            // before it is dropped); no other thread uses it now (the stopped world); `object`
            // is listed at `place` in one of them.
            if unsafe { (*live.0).remove(object, place, true) } {
                return true;
            }
        }
        unreachable!("a listed object is in a live thread's list");
    }

    /// Every object listed in a live thread's list (a full collection gives them registry
    /// slots).
    ///
    /// # Safety
    /// The world is stopped, as for [`unlist`](Self::unlist).
    pub(super) unsafe fn listed(&self) -> Vec<NonNull<Header>> {
        let mut listed = Vec::new();
        for live in self.0.iter() {
            // SAFETY: registered lists are alive; no other thread uses one now (the stopped
            // world).
            listed.extend_from_slice(&unsafe { (*live.0).objects.borrow() });
        }
        listed
    }
}

/// The quiescent-state hook: runs a local collection on this thread if one is due.
fn collect_if_due() {
    let list = LIST.get();
    if list.is_null() {
        return;
    }
    // SAFETY: as in `list`.
    if !unsafe { &*list }.due.get() {
        return;
    }
    // A stopper may be waiting for this thread (hooks run before it leaves the world): the
    // collection waits for a later quiescent state, `due` still set.
    if ftrt_gil::stop_requested() {
        return;
    }
    // The hook runs on attached threads.
    Python::attach(|py| {
        collect_local(py);
    });
}

/// Finds and frees the cycles among the calling thread's local objects, with every other thread
/// running, and returns how many objects it found unreachable. Must run where no container of
/// this thread is in the middle of a change: a quiescent state, or `gc::collect`. Safe, since
/// that holds wherever a token can be: a change runs inside a write or a section, whose body
/// runs no user code and does not collect (`write_contents`, `Header::section`).
pub(crate) fn collect_local(py: Python<'_>) -> usize {
    let started = Instant::now();
    let Some(list) = list() else {
        return 0;
    };
    if list.collecting.replace(true) {
        return 0;
    }
    /// Ends the collection, panics included (a `clear` slot may panic): later ones still run.
    struct Collecting<'a>(&'a Cell<bool>);
    impl Drop for Collecting<'_> {
        fn drop(&mut self) {
            self.0.set(false);
        }
    }
    let collecting = Collecting(&list.collecting);
    list.due.set(false);
    #[allow(clippy::let_unit_value)] // the token is `()` in the atomic-rc build
    // SAFETY: used in this call only, which stays attached throughout.
    let token = unsafe { py.count_token() };
    // A snapshot, by place: nothing is listed or unlisted until the garbage is freed below.
    let objects = list.objects.borrow().clone();
    let examined: Vec<(usize, NonNull<Header>)> = objects.iter().copied().enumerate().collect();
    let mut marks = vec![Mark::Candidate; objects.len()];
    let mut outside = vec![0isize; objects.len()];
    for &(place, object) in &examined {
        // SAFETY: listed, so alive; local, so only this thread counts it, and it is here.
        match <BuildCount as RefCount>::get(&unsafe { header(object) }.count, token) {
            RefCountValue::Mortal(count) => outside[place] = count as isize,
            RefCountValue::Immortal => marks[place] = Mark::Reachable,
        }
    }
    // SAFETY: listed, so alive, and local: nothing changes what they hold while this thread is
    // here.
    let garbage = unsafe {
        unreachable_among(&examined, &mut marks, &mut outside, |held| {
            place_of(held, &objects)
        })
    };
    for &object in &garbage {
        // SAFETY: listed, so alive; the reference keeps it so while the garbage is cleared.
        unsafe { incref(object, token) };
    }
    // Counted as it is freed: shared objects the garbage alone held leave the stopped-world
    // collections' young count, which no stop resets here.
    // SAFETY: this thread's unreachable garbage, each with the reference counted above.
    unsafe { free_garbage(py, &garbage, false) };
    list.survivors.set(list.objects.borrow().len());
    list.young.set(0);
    drop(collecting);
    LOCAL_COLLECTIONS.fetch_add(1, Ordering::Relaxed);
    super::count_collected(garbage.len());
    super::record_local_pause(started.elapsed());
    garbage.len()
}

/// The place of `held` in the snapshot `objects`, if it is listed (then it is in this thread's
/// list: no listed object holds another thread's).
fn place_of(held: NonNull<Header>, objects: &[NonNull<Header>]) -> Option<usize> {
    // SAFETY: held by a live listed object, so alive.
    if !unsafe { header(held) }.ty.slots.holds_references {
        return None;
    }
    // SAFETY: alive, of a tracked type.
    let place = unsafe { listed_at(held) };
    if place >= FOUND_GARBAGE {
        return None;
    }
    let place = place as usize;
    debug_assert!(
        objects.get(place) == Some(&held),
        "listed in this thread's list"
    );
    Some(place)
}

/// Local collections run so far, on every thread.
pub(crate) fn local_collections() -> usize {
    LOCAL_COLLECTIONS.load(Ordering::Relaxed)
}
