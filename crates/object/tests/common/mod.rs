//! What several integration tests share: the leak check around a test body.

use std::sync::Mutex;

use ftrt_gil::Python;
use ftrt_object::stats::LiveObjects;
use ftrt_object::{collect, Kind, PyInt, PyList, PyNone};

/// Live counts are process-wide, so the tests that compare them run one at a time.
pub static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `f` attached and checks that it freed everything it allocated, immortal objects aside
/// (singletons and interned strings are made once and kept).
pub fn leak_checked(f: impl for<'py> FnOnce(Python<'py>)) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    Python::attach(|py| {
        // Materialise the immortal singletons first, so they do not count as allocated by `f`.
        drop((PyNone::get(py), PyInt::new(py, 0)));
        collect(py);
        let before = LiveObjects::now();
        f(py);
        collect(py);
        let after = LiveObjects::now();
        let leaked: Vec<_> = before
            .0
            .iter()
            .zip(&after.0)
            .filter(|((kind, b), (_, a))| a != b && *kind != Kind::Str && *kind != Kind::Class)
            .collect();
        assert!(leaked.is_empty(), "live objects changed: {leaked:?}");
    });
}

/// [`std::thread::scope`], except that it returns only once every thread it spawned has
/// finished its exit sequence, thread-local destructors included.
///
/// The scope's own join ends when each thread's closure has returned, before the thread's
/// thread-local destructors run. A runtime thread's exit is among them, and it drops what the
/// thread retired and what its thread-locals hold: a live-object count taken right after the
/// scope could find those still alive. (`ScopedJoinHandle::join` waits for the whole thread.)
#[allow(dead_code)] // not every test binary spawns threads
pub fn scope<'env, T>(f: impl for<'scope> FnOnce(&Scope<'scope, 'env>) -> T) -> T {
    let exits = std::sync::Arc::new(Exits::default());
    let result = std::thread::scope(|scope| {
        f(&Scope {
            scope,
            exits: exits.clone(),
        })
    });
    exits.wait();
    result
}

/// What [`scope`] passes its closure: spawns like [`std::thread::Scope`].
pub struct Scope<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    exits: std::sync::Arc<Exits>,
}

impl<'scope> Scope<'scope, '_> {
    /// Spawns `f` on a thread the enclosing [`scope`] waits for to the end of its exit.
    #[allow(dead_code)]
    pub fn spawn<T: Send + 'scope>(
        &self,
        f: impl FnOnce() -> T + Send + 'scope,
    ) -> std::thread::ScopedJoinHandle<'scope, T> {
        let signal = Exiting::new(self.exits.clone());
        self.scope.spawn(move || {
            // The first thread-local this thread uses: dropped after every other one (they
            // die in the reverse order of their first use), the runtime's thread state
            // included.
            ON_EXIT.with(|slot| *slot.borrow_mut() = Some(signal));
            f()
        })
    }
}

/// Threads spawned by a [`scope`] whose exit has not finished.
#[derive(Default)]
struct Exits {
    running: Mutex<usize>,
    finished: std::sync::Condvar,
}

impl Exits {
    fn wait(&self) {
        let limit = std::time::Duration::from_secs(60);
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (running, timeout) = self
            .finished
            .wait_timeout_while(running, limit, |running| *running > 0)
            .unwrap_or_else(|e| e.into_inner());
        assert!(
            !timeout.timed_out(),
            "{} spawned threads did not finish their exit in {limit:?}",
            *running
        );
    }
}

/// Counts one thread as running until it is dropped, at the end of that thread's exit.
struct Exiting(std::sync::Arc<Exits>);

impl Exiting {
    fn new(exits: std::sync::Arc<Exits>) -> Self {
        *exits.running.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Exiting(exits)
    }
}

impl Drop for Exiting {
    fn drop(&mut self) {
        *self.0.running.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
        self.0.finished.notify_all();
    }
}

thread_local! {
    static ON_EXIT: std::cell::RefCell<Option<Exiting>> = const { std::cell::RefCell::new(None) };
}

/// Makes and drops `count` lists that hold themselves, reaching a checkpoint after each (where
/// automatic and local collections run).
#[allow(dead_code)] // the collector's test binaries use it; the others include this module too
pub fn make_self_cycles(py: Python<'_>, count: usize) {
    for _ in 0..count {
        let list = PyList::empty(py);
        list.append(list.clone());
        py.check();
    }
}

/// Runs `f` on the calling thread while another thread is attached and blocked without
/// reaching a checkpoint, so that no stop of the world can finish meanwhile (free-threaded
/// builds; under the GIL the other thread would hold it). The blocked thread is let go and
/// joined before this returns.
#[allow(dead_code)] // the collector's test binaries use it; the others include this module too
pub fn with_a_thread_blocked_attached<R>(f: impl FnOnce() -> R) -> R {
    let attached = std::sync::Barrier::new(2);
    let (release, released) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        let attached = &attached;
        s.spawn(move || {
            Python::attach(|_py| {
                attached.wait();
                released.recv().unwrap();
            })
        });
        attached.wait();
        let result = f();
        release.send(()).unwrap();
        result
    })
}
