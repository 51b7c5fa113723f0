//! A barrier that a panicking thread breaks: the threads waiting at it, and those that come to
//! it later, panic too, instead of waiting for ever for a thread that will not come. A
//! workload's threads meet at gates (their start, each round of a shared container), and a
//! panic in one of them then fails the run at once rather than hanging it until the bench's run
//! limit kills it.

use std::sync::{Condvar, Mutex, MutexGuard};

pub(crate) struct Gate {
    state: Mutex<State>,
    opened: Condvar,
    parties: usize,
}

struct State {
    arrived: usize,
    /// How many times the gate opened: a waiter leaves when it changes.
    openings: u64,
    broken: bool,
}

impl Gate {
    /// A gate that opens each time `parties` threads wait at it.
    pub(crate) fn new(parties: usize) -> Gate {
        Gate {
            state: Mutex::new(State {
                arrived: 0,
                openings: 0,
                broken: false,
            }),
            opened: Condvar::new(),
            parties,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the mutex is held (`wait` lets it go first): its state is whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the other parties. Panics if the gate is broken, before or while waiting.
    pub(crate) fn wait(&self) {
        let mut state = self.lock();
        if state.broken {
            drop(state);
            panic!("another workload thread panicked");
        }
        state.arrived += 1;
        if state.arrived == self.parties {
            state.arrived = 0;
            state.openings += 1;
            self.opened.notify_all();
            return;
        }
        let opening = state.openings;
        while state.openings == opening && !state.broken {
            state = self.opened.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        let opened = state.openings != opening;
        drop(state);
        assert!(opened, "another workload thread panicked");
    }

    /// Breaks the gate if the calling thread unwinds while the guard lives.
    pub(crate) fn break_on_unwind(&self) -> BreakOnUnwind<'_> {
        BreakOnUnwind(self)
    }
}

pub(crate) struct BreakOnUnwind<'a>(&'a Gate);

impl Drop for BreakOnUnwind<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().broken = true;
            self.0.opened.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::Gate;

    #[test]
    fn a_gate_opens_for_its_parties_every_time() {
        let gate = Gate::new(3);
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..100 {
                        gate.wait();
                    }
                });
            }
        });
    }

    /// A thread that panics before it reaches the gate releases the ones waiting there, which
    /// panic in turn: the scope ends (a `std::sync::Barrier` would wait for ever).
    #[test]
    fn a_panicking_party_releases_the_waiting_ones() {
        let (done, finished) = mpsc::channel();
        std::thread::spawn(move || {
            let gate = Gate::new(3);
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                std::thread::scope(|s| {
                    for t in 0..3 {
                        let gate = &gate;
                        s.spawn(move || {
                            let _break = gate.break_on_unwind();
                            if t == 2 {
                                std::thread::sleep(Duration::from_millis(20));
                                panic!("the workload failed");
                            }
                            gate.wait();
                        });
                    }
                });
            }));
            let _ = done.send(outcome.is_err());
        });
        let panicked = finished
            .recv_timeout(Duration::from_secs(30))
            .expect("the waiting threads were released");
        assert!(panicked, "the panic reached the scope");
    }
}
