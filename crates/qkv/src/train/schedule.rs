//! Learning rate over training: linear warm-up, then cosine decay to a floor.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_steps: u64,
    pub max_steps: u64,
}

impl LrSchedule {
    /// Rate for step `it` (0-based): `lr·(it+1)/(warmup+1)` while warming up,
    /// then `min_lr + ½(1 + cos(π·progress))·(lr - min_lr)`, then `min_lr`.
    pub fn at(&self, it: u64) -> f32 {
        if it < self.warmup_steps {
            return self.lr * (it + 1) as f32 / (self.warmup_steps + 1) as f32;
        }
        if it >= self.max_steps {
            return self.min_lr;
        }
        let span = (self.max_steps - self.warmup_steps).max(1) as f64;
        let progress = (it - self.warmup_steps) as f64 / span;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + coeff * (self.lr - self.min_lr) as f64) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let s = LrSchedule { lr: 1.0, min_lr: 0.1, warmup_steps: 9, max_steps: 109 };
        assert!((s.at(0) - 0.1).abs() < 1e-6);
        assert!((s.at(8) - 0.9).abs() < 1e-6);
        assert!((s.at(9) - 1.0).abs() < 1e-6);
        assert!((s.at(59) - 0.55).abs() < 1e-6);
        assert!((s.at(109) - 0.1).abs() < 1e-6);
        assert!(s.at(30) > s.at(31));
    }
}
