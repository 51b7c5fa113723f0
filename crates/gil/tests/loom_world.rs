//! loom models of the stop protocol (`ftrt_gil::world`): a stopper never runs while another
//! thread is attached, attaching threads wait for the stop to end, and no schedule deadlocks.
//! Data only attached threads touch is a loom `UnsafeCell`, so a broken exclusion is a reported
//! race, not a lucky pass. loom's condition variables never time out: the stops wait without
//! patience.
#![cfg(loom)]

use ftrt_gil::world::{Presence, StopFailed, World};
use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

struct Shared {
    world: World,
    mutator: Presence,
    stopper: Presence,
    other_stopper: Presence,
    /// Touched by attached mutators and by a stopper inside its stop, never by two at once.
    objects: UnsafeCell<u32>,
}

// SAFETY: `objects` is touched only under the protocol under test, which loom checks.
unsafe impl Sync for Shared {}
// SAFETY: as above.
unsafe impl Send for Shared {}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            world: World::new(),
            mutator: Presence::new(),
            stopper: Presence::new(),
            other_stopper: Presence::new(),
            objects: UnsafeCell::new(0),
        })
    }

    fn touch(&self) {
        // SAFETY: the protocol gives the caller exclusive use (loom checks it).
        self.objects.with_mut(|objects| unsafe { *objects += 1 });
    }

    fn all(&self) -> Vec<&Presence> {
        vec![&self.mutator, &self.stopper, &self.other_stopper]
    }

    /// Attached as `me`, stops the world (parking while another stop runs), touches the
    /// objects inside the stop, and detaches.
    fn stop_once(&self, me: &Presence) {
        self.world.enter(Some(me));
        loop {
            match self.world.try_stop(Some(me), || self.all(), None) {
                Ok(stopped) => {
                    self.touch();
                    drop(stopped);
                    break;
                }
                Err(StopFailed::Busy) => self.world.park(Some(me)),
                Err(StopFailed::TimedOut) => unreachable!("no patience given"),
            }
        }
        self.world.leave(Some(me));
    }
}

/// A mutator attaches, parking at a checkpoint if a stop is wanted, while a stopper stops the
/// world once: the stop excludes both halves of the attachment.
#[test]
fn a_stop_excludes_every_attachment() {
    loom::model(|| {
        let shared = Shared::new();
        let mutator = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.world.enter(Some(&shared.mutator));
                shared.touch();
                // A checkpoint: park if asked.
                if shared.world.stop_requested() {
                    shared.world.park(Some(&shared.mutator));
                }
                shared.touch();
                shared.world.leave(Some(&shared.mutator));
            })
        };
        shared.stop_once(&shared.stopper);
        mutator.join().unwrap();
        shared
            .objects
            .with(|objects| assert_eq!(unsafe { *objects }, 3));
    });
}

/// Two stoppers at once: one stops, the other parks and stops after it; never both inside.
#[test]
fn two_stoppers_take_turns() {
    loom::model(|| {
        let shared = Shared::new();
        let other = {
            let shared = shared.clone();
            thread::spawn(move || shared.stop_once(&shared.other_stopper))
        };
        shared.stop_once(&shared.stopper);
        other.join().unwrap();
        shared
            .objects
            .with(|objects| assert_eq!(unsafe { *objects }, 2));
    });
}

/// A thread without a presence (attached after its exit) is waited for too, and waits.
#[test]
fn an_anonymous_thread_is_excluded_too() {
    loom::model(|| {
        let shared = Shared::new();
        let anonymous = {
            let shared = shared.clone();
            thread::spawn(move || {
                shared.world.enter(None);
                shared.touch();
                shared.world.leave(None);
            })
        };
        shared.stop_once(&shared.stopper);
        anonymous.join().unwrap();
        shared
            .objects
            .with(|objects| assert_eq!(unsafe { *objects }, 2));
    });
}
