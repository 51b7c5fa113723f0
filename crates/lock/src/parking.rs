//! Where waiting threads sleep: `parking_lot_core`'s global parking lot, or under loom a small
//! stand-in with the same contract (the validation, the unpark callback and the timed-out
//! callback run under the same lock as the queue), so the models run the real lock code.

#[cfg(not(loom))]
pub(crate) use parking_lot_core::{
    park, unpark_filter, FilterOp, ParkResult, ParkToken, UnparkResult, UnparkToken,
};

#[cfg(loom)]
pub(crate) use model::*;

#[cfg(loom)]
mod model {
    use loom::sync::{Arc, Condvar, Mutex};
    use std::time::Instant;

    pub(crate) struct ParkToken(pub usize);
    #[derive(Clone, Copy, PartialEq, Eq, Debug)]
    pub(crate) struct UnparkToken(pub usize);
    pub(crate) enum ParkResult {
        Unparked(UnparkToken),
        Invalid,
        TimedOut,
    }
    #[allow(dead_code)]
    pub(crate) enum FilterOp {
        Unpark,
        Skip,
        Stop,
    }
    pub(crate) struct UnparkResult {
        pub(crate) unparked_threads: usize,
        pub(crate) have_more_threads: bool,
    }

    struct Waiter {
        key: usize,
        token: usize,
        woken: Mutex<Option<usize>>,
        wake: Condvar,
    }

    loom::lazy_static! {
        static ref QUEUE: Mutex<Vec<Arc<Waiter>>> = Mutex::new(Vec::new());
    }

    /// With a timeout, the wait may end at any moment: a model has no clock, so the timeout
    /// fires when this thread next takes the queue lock, wherever the schedule puts that. If an
    /// unpark took the thread off the queue first, it is unparked, as `parking_lot_core`
    /// decides under its queue lock; otherwise it leaves the queue and `timed_out` runs under
    /// the queue lock, told whether it was the key's last waiter.
    pub(crate) unsafe fn park(
        key: usize,
        validate: impl FnOnce() -> bool,
        before_sleep: impl FnOnce(),
        timed_out: impl FnOnce(usize, bool),
        token: ParkToken,
        timeout: Option<Instant>,
    ) -> ParkResult {
        let waiter = Arc::new(Waiter {
            key,
            token: token.0,
            woken: Mutex::new(None),
            wake: Condvar::new(),
        });
        {
            let mut queue = QUEUE.lock().unwrap();
            if !validate() {
                return ParkResult::Invalid;
            }
            queue.push(waiter.clone());
        }
        before_sleep();
        if timeout.is_some() {
            let mut queue = QUEUE.lock().unwrap();
            if let Some(at) = queue.iter().position(|w| Arc::ptr_eq(w, &waiter)) {
                queue.remove(at);
                let was_last_thread = !queue.iter().any(|w| w.key == key);
                timed_out(key, was_last_thread);
                return ParkResult::TimedOut;
            }
            // Already taken off the queue by an unpark: its token is on the way.
        }
        let mut woken = waiter.woken.lock().unwrap();
        loop {
            if let Some(token) = *woken {
                return ParkResult::Unparked(UnparkToken(token));
            }
            woken = waiter.wake.wait(woken).unwrap();
        }
    }

    pub(crate) unsafe fn unpark_filter(
        key: usize,
        mut filter: impl FnMut(ParkToken) -> FilterOp,
        callback: impl FnOnce(UnparkResult) -> UnparkToken,
    ) -> UnparkResult {
        let mut queue = QUEUE.lock().unwrap();
        let mut chosen = Vec::new();
        let mut i = 0;
        while i < queue.len() {
            if queue[i].key != key {
                i += 1;
                continue;
            }
            match filter(ParkToken(queue[i].token)) {
                FilterOp::Unpark => chosen.push(queue.remove(i)),
                FilterOp::Skip => i += 1,
                FilterOp::Stop => break,
            }
        }
        let have_more_threads = queue.iter().any(|w| w.key == key);
        let unparked_threads = chosen.len();
        let token = callback(UnparkResult {
            unparked_threads,
            have_more_threads,
        });
        drop(queue);
        for waiter in chosen {
            *waiter.woken.lock().unwrap() = Some(token.0);
            waiter.wake.notify_one();
        }
        UnparkResult {
            unparked_threads,
            have_more_threads,
        }
    }
}
