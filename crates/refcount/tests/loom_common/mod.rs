//! What the loom model files share: a value that counts its drops.

use ftrt_refcount::BiasedArc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;

/// Counts its drops; the models assert the total (and that a live handle sees none).
pub struct Counted(pub Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        let before = self.0.fetch_add(1, Ordering::SeqCst);
        assert_eq!(before, 0, "value dropped twice");
    }
}

/// A fresh counted value on the calling thread, and its drop count.
pub fn counted() -> (BiasedArc<Counted>, Arc<AtomicUsize>) {
    let drops = Arc::new(AtomicUsize::new(0));
    (BiasedArc::new(Counted(drops.clone())), drops)
}

/// How many times the value was dropped.
pub fn dropped(drops: &AtomicUsize) -> usize {
    drops.load(Ordering::SeqCst)
}
