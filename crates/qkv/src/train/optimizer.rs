//! One optimizer step over a fixed set of parameters: clip the gradients,
//! take the learning rate from the schedule, apply AdamW.

use crate::nn::NamedParam;
use crate::train::TrainConfig;
use crate::train::optim::{AdamW, clip_grad_norm, grad_norm};
use crate::train::schedule::LrSchedule;

pub struct Optimizer {
    pub params: Vec<NamedParam>,
    pub adamw: AdamW,
    pub schedule: LrSchedule,
    /// 0 turns clipping off.
    pub grad_clip: f32,
    /// Steps taken.
    pub step: u64,
}

impl Optimizer {
    pub fn new(params: Vec<NamedParam>, config: &TrainConfig) -> Optimizer {
        Optimizer {
            adamw: AdamW::new(config.adamw, &params),
            params,
            schedule: config.schedule(),
            grad_clip: config.grad_clip,
            step: 0,
        }
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.param.zero_grad());
    }

    /// Update every parameter from its accumulated gradient; returns the
    /// gradient norm before clipping and the learning rate used.
    pub fn step(&mut self) -> (f32, f32) {
        let lr = self.schedule.at(self.step);
        let norm =
            if self.grad_clip > 0.0 { clip_grad_norm(&self.params, self.grad_clip) } else { grad_norm(&self.params) };
        self.adamw.update(&self.params, lr);
        self.step += 1;
        (norm, lr)
    }
}
