use crate::loom_common::{counted, dropped, Counted};
use ftrt_refcount::biased::detach_current_thread;
use ftrt_refcount::{merge_pending, BiasedArc};
use loom::sync::atomic::AtomicUsize;
use loom::sync::Arc;
use loom::thread;

/// Upgrades `weak` and, if that worked, checks the value is alive while the handle is held.
fn upgrade_and_use(weak: &ftrt_refcount::Weak<Counted>) -> bool {
    match weak.upgrade() {
        Some(strong) => {
            assert_eq!(dropped(&strong.0), 0, "upgraded to a dropped value");
            drop(strong);
            true
        }
        None => false,
    }
}

/// The owner's last strong drop decides death in one step. Without weak handles that step is a
/// load that writes nothing, which an upgrade's exchange on another thread cannot see: the
/// upgrade would take a reference to a value being dropped. With a weak handle the step must be
/// an exchange that the upgrade races.
#[test]
fn an_upgrade_on_another_thread_races_the_owners_last_drop() {
    loom::model(|| {
        let (owned, drops) = counted();
        let weak = BiasedArc::downgrade(&owned);
        let t = thread::spawn(move || upgrade_and_use(&weak));
        drop(owned);
        t.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// The last strong reference is dropped on another thread (queued to the owner) and that thread
/// then upgrades, while the owner drops its own handle and merges: the value lives until the
/// merge decides, and an upgrade that lands first keeps it alive.
#[test]
fn an_upgrade_races_a_queued_last_drop_and_the_owners_merge() {
    loom::model(|| {
        let (owned, drops) = counted();
        let weak = BiasedArc::downgrade(&owned);
        let remote = owned.clone();
        let t = thread::spawn(move || {
            drop(remote);
            upgrade_and_use(&weak)
        });
        drop(owned);
        merge_pending();
        t.join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// The owner retires (as at thread exit) right after dropping its last strong handle, while
/// another thread upgrades.
#[test]
fn an_upgrade_races_the_owner_dropping_its_last_handle_and_exiting() {
    loom::model(|| {
        let drops = Arc::new(AtomicUsize::new(0));
        let owner = {
            let drops = drops.clone();
            thread::spawn(move || {
                let owned = BiasedArc::new(Counted(drops));
                let weak = BiasedArc::downgrade(&owned);
                let t = thread::spawn(move || upgrade_and_use(&weak));
                drop(owned);
                detach_current_thread();
                t
            })
        };
        owner.join().unwrap().join().unwrap();
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}

/// `try_unwrap` on the owner races an upgrade: exactly one of them gets the value. A value moved
/// out by `try_unwrap` must not be reachable through the upgraded handle.
#[test]
fn try_unwrap_races_an_upgrade() {
    loom::model(|| {
        let (owned, drops) = counted();
        let weak = BiasedArc::downgrade(&owned);
        let t = thread::spawn(move || weak.upgrade());
        let unwrapped = BiasedArc::try_unwrap(owned);
        let upgraded = t.join().unwrap();
        match (unwrapped, upgraded) {
            (Ok(value), None) => drop(value),
            (Err(owned), Some(upgraded)) => {
                assert_eq!(dropped(&drops), 0);
                drop((owned, upgraded));
            }
            (Ok(_), Some(_)) => panic!("the value was both moved out and upgraded to"),
            (Err(_), None) => panic!("refused as shared, yet nothing else held it"),
        }
        merge_pending();
        assert_eq!(dropped(&drops), 1);
        detach_current_thread();
    });
}
