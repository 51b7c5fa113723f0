use ftrt_gil::checkpoint_work::Requests;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

const WORKS: usize = 2;

struct Shared {
    requests: Requests<AtomicBool, WORKS>,
    /// How many times each work ran.
    ran: [AtomicUsize; WORKS],
}

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            requests: Requests::from_flags(
                [AtomicBool::new(false), AtomicBool::new(false)],
                AtomicBool::new(false),
            ),
            ran: [AtomicUsize::new(0), AtomicUsize::new(0)],
        })
    }

    /// A checkpoint: runs the works wanted.
    fn checkpoint(&self) {
        self.requests.run_wanted(|slot| {
            self.ran[slot].fetch_add(1, Ordering::Relaxed);
        });
    }

    fn runs(&self) -> [usize; WORKS] {
        [0, 1].map(|slot| self.ran[slot].load(Ordering::Relaxed))
    }
}

/// Two threads each ask for their own work while a third reaches a checkpoint; once they are
/// done, one more checkpoint runs whatever is left. Every schedule runs each work exactly once:
/// the checkpoint that lowered the flag saw every request whose flag it lowered (the requests'
/// read-modify-writes make one release sequence), and a request it missed left the flag up.
#[test]
fn requests_racing_a_checkpoint_each_run_once() {
    loom::model(|| {
        let shared = Shared::new();
        let requesters: Vec<_> = (0..WORKS)
            .map(|slot| {
                let shared = shared.clone();
                thread::spawn(move || shared.requests.request(slot))
            })
            .collect();
        let checkpoint = {
            let shared = shared.clone();
            thread::spawn(move || shared.checkpoint())
        };
        for requester in requesters {
            requester.join().unwrap();
        }
        checkpoint.join().unwrap();
        shared.checkpoint();
        assert_eq!(shared.runs(), [1, 1], "each work runs once per request");
        assert!(!shared.requests.wanted(), "nothing is left wanted");
    });
}

/// Two checkpoints race for one request: exactly one of them runs it.
#[test]
fn a_request_runs_on_one_checkpoint_of_two() {
    loom::model(|| {
        let shared = Shared::new();
        shared.requests.request(0);
        let checkpoints: Vec<_> = (0..2)
            .map(|_| {
                let shared = shared.clone();
                thread::spawn(move || shared.checkpoint())
            })
            .collect();
        for checkpoint in checkpoints {
            checkpoint.join().unwrap();
        }
        assert_eq!(shared.runs(), [1, 0]);
    });
}
