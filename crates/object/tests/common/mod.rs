//! What several integration tests share: the leak check around a test body.

use std::sync::Mutex;

use ftrt_gil::Python;
use ftrt_object::stats::LiveObjects;
use ftrt_object::{collect, Kind, PyInt, PyNone};

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
