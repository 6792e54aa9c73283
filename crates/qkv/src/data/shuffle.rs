//! Passes over a training set (epochs), each in a new random order. The
//! order of an epoch is drawn from the seed and the epoch's number alone, so
//! where a run stands is two numbers — the epoch and the next position —
//! and a resumed run takes the same batches as one that never stopped.

use serde::{Deserialize, Serialize};

use qkv_tensor::Rng;
use qkv_tensor::rng::splitmix64;

/// Where a run stands in its passes over `n` examples.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Epochs {
    /// Passes completed.
    pub epoch: u64,
    /// Position of the next example in this epoch's order.
    pub next: usize,
    #[serde(skip)]
    order: Vec<usize>,
}

/// The order of `n` examples in `epoch`: a Fisher–Yates shuffle drawn from `seed` and `epoch`.
pub fn epoch_order(n: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut rng = Rng::new(seed ^ splitmix64(epoch.wrapping_add(0x0C1A_55E5)));
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    order
}

impl Epochs {
    /// The indices of the next batch of at most `batch` examples of `n`,
    /// shuffled with `seed`; a batch never spans two epochs.
    pub fn next_batch(&mut self, n: usize, batch: usize, seed: u64) -> Vec<usize> {
        if self.next >= n {
            self.epoch += 1;
            self.next = 0;
        }
        if self.order.len() != n || self.next == 0 {
            self.order = epoch_order(n, seed, self.epoch);
        }
        let end = (self.next + batch).min(n);
        let idx = self.order[self.next..end].to_vec();
        self.next = end;
        idx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_is_a_permutation_and_a_restored_position_goes_on_the_same_way() {
        let mut e = Epochs::default();
        let first: Vec<usize> = (0..4).flat_map(|_| e.next_batch(10, 3, 7)).collect();
        let mut sorted = first.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>(), "batches of 3, 3, 3, 1 cover the epoch once");
        assert_eq!(e.epoch, 0);
        let second = e.next_batch(10, 3, 7);
        assert_eq!(e.epoch, 1);
        assert_ne!(second, first[..3], "a new order each epoch");
        // a copy made from the two numbers alone continues identically
        let mut restored = Epochs { epoch: e.epoch, next: e.next, ..Default::default() };
        for _ in 0..5 {
            assert_eq!(restored.next_batch(10, 3, 7), e.next_batch(10, 3, 7));
        }
    }
}
