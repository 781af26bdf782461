//! The state restores under way on Kafka, per processor: what `/metrics`
//! shows as `leat_processor_restore_offsets_remaining` (the command line
//! draws them as progress bars instead). A leaf.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use leat_on_kafka::{Observer, Restoring};

use crate::registry::lock;

/// Changelog offsets left to read, per processor, summed over its
/// instances' restores under way.
#[derive(Debug, Default)]
pub(crate) struct Restores(Arc<Mutex<BTreeMap<String, u64>>>);

impl Restores {
    /// The offsets `processor`'s restores have left to read (0: none under way).
    pub(crate) fn remaining(&self, processor: &str) -> u64 {
        lock(&self.0).get(processor).copied().unwrap_or(0)
    }
}

impl Observer for Restores {
    fn restoring(
        &self,
        processor: &str,
        _instance: u32,
        _partitions: &[u32],
        offsets: u64,
    ) -> Box<dyn Restoring> {
        *lock(&self.0).entry(processor.to_owned()).or_default() += offsets;
        Box::new(Restore {
            all: self.0.clone(),
            processor: processor.to_owned(),
            left: AtomicU64::new(offsets),
        })
    }
}

/// One instance's restore: what it has left is in the processor's sum
/// until it advances or ends.
struct Restore {
    all: Arc<Mutex<BTreeMap<String, u64>>>,
    processor: String,
    left: AtomicU64,
}

impl Restore {
    /// Takes up to `n` of this restore's offsets out of the sum.
    fn take(&self, n: u64) {
        // (`offsets` is an upper bound: a restore may read fewer.)
        let taken = n.min(self.left.load(Ordering::Relaxed));
        self.left.fetch_sub(taken, Ordering::Relaxed);
        let mut all = lock(&self.all);
        if let Some(sum) = all.get_mut(&self.processor) {
            *sum = sum.saturating_sub(taken);
            if *sum == 0 {
                all.remove(&self.processor);
            }
        }
    }
}

impl Restoring for Restore {
    fn advance(&self, offsets: u64) {
        self.take(offsets);
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        self.take(u64::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restores_count_down_and_are_gone_once_ended() {
        let restores = Restores::default();
        let a = restores.restoring("wc", 0, &[0, 1], 100);
        let b = restores.restoring("wc", 1, &[2], 50);
        assert_eq!(restores.remaining("wc"), 150);
        a.advance(30);
        assert_eq!(restores.remaining("wc"), 120);
        // Past its bound, a restore takes only what it had.
        b.advance(80);
        assert_eq!(restores.remaining("wc"), 70);
        drop(b);
        assert_eq!(restores.remaining("wc"), 70);
        drop(a);
        assert_eq!(
            (restores.remaining("wc"), restores.remaining("other")),
            (0, 0)
        );
    }
}
