//! Learning-rate schedules: constant, linear decay and cosine decay to a floor, each with a
//! linear warm-up (nanoGPT's `get_lr`).

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

/// A resolved schedule: `lr(step)` for a 0-based step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub lr: f64,
    pub warmup: u64,
    pub min_lr: f64,
    /// The step at which decay reaches `min_lr`; afterwards the rate stays at `min_lr`.
    pub decay_steps: u64,
}

impl Schedule {
    pub fn constant(lr: f64) -> Self {
        Schedule {
            kind: ScheduleKind::Constant,
            lr,
            warmup: 0,
            min_lr: lr,
            decay_steps: 0,
        }
    }

    /// The learning rate for 0-based step `it`:
    /// - warm-up: `lr * (it + 1) / (warmup + 1)` for `it < warmup`;
    /// - constant: `lr`;
    /// - after `decay_steps`: `min_lr`;
    /// - cosine: `min_lr + 0.5 * (1 + cos(pi * r)) * (lr - min_lr)`, linear: `lr - r * (lr - min_lr)`,
    ///   with `r = (it - warmup) / (decay_steps - warmup)`.
    pub fn lr(&self, it: u64) -> f64 {
        if it < self.warmup {
            return self.lr * (it + 1) as f64 / (self.warmup + 1) as f64;
        }
        if self.kind == ScheduleKind::Constant {
            return self.lr;
        }
        if it > self.decay_steps || self.decay_steps <= self.warmup {
            return self.min_lr;
        }
        let ratio = (it - self.warmup) as f64 / (self.decay_steps - self.warmup) as f64;
        let coeff = match self.kind {
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()),
            ScheduleKind::Linear => 1.0 - ratio,
            ScheduleKind::Constant => 1.0,
        };
        self.min_lr + coeff * (self.lr - self.min_lr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine() -> Schedule {
        Schedule {
            kind: ScheduleKind::Cosine,
            lr: 1e-3,
            warmup: 100,
            min_lr: 1e-4,
            decay_steps: 5000,
        }
    }

    #[test]
    fn warmup_is_linear_from_a_small_rate() {
        let s = cosine();
        assert!((s.lr(0) - 1e-3 / 101.0).abs() < 1e-15);
        assert!((s.lr(49) - 1e-3 * 50.0 / 101.0).abs() < 1e-15);
        assert!((s.lr(99) - 1e-3 * 100.0 / 101.0).abs() < 1e-15);
    }

    #[test]
    fn cosine_hits_peak_midpoint_and_floor() {
        let s = cosine();
        assert!((s.lr(100) - 1e-3).abs() < 1e-15);
        // midway: coeff 0.5 -> 1e-4 + 0.5 * 9e-4 = 5.5e-4
        assert!((s.lr(2550) - 5.5e-4).abs() < 1e-12);
        assert!((s.lr(5000) - 1e-4).abs() < 1e-15);
        assert_eq!(s.lr(5001), 1e-4);
        assert_eq!(s.lr(1_000_000), 1e-4);
    }

    #[test]
    fn linear_decays_in_a_straight_line() {
        let s = Schedule {
            kind: ScheduleKind::Linear,
            lr: 1.0,
            warmup: 0,
            min_lr: 0.0,
            decay_steps: 10,
        };
        assert!((s.lr(0) - 1.0).abs() < 1e-15);
        assert!((s.lr(5) - 0.5).abs() < 1e-15);
        assert!((s.lr(10) - 0.0).abs() < 1e-15);
    }

    #[test]
    fn constant_with_warmup() {
        let s = Schedule {
            kind: ScheduleKind::Constant,
            lr: 0.3,
            warmup: 2,
            min_lr: 0.0,
            decay_steps: 0,
        };
        assert!((s.lr(0) - 0.1).abs() < 1e-15);
        assert!((s.lr(1) - 0.2).abs() < 1e-15);
        assert_eq!(s.lr(2), 0.3);
        assert_eq!(s.lr(10_000), 0.3);
    }
}
