//! Training a GPT for next-token prediction: the optimizer step, evaluation,
//! and the run directory that makes a run resumable.

pub mod optim;
pub mod optimizer;
pub mod run;
pub mod schedule;
pub mod text;
pub mod vision;

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, no_grad};

use crate::data::text::{Split, eval_batches, random_batch};
use crate::data::tokens::TokenIds;
use crate::error::{Error, Result};
use crate::models::gpt::Gpt;
use crate::nn::{Dropout, Module, NamedParam};
use optim::{AdamW, AdamWConfig, clip_grad_norm};
use schedule::LrSchedule;

/// How to train. Every field has a default (the `qkv train` run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per micro-batch (B). Default 16.
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one step. Default 1.
    pub grad_accum: usize,
    /// Optimizer steps in the run. Default 1400.
    pub max_steps: u64,
    /// Peak learning rate. Default 2e-3.
    pub lr: f32,
    /// Learning rate at the end of the cosine decay. Default 2e-4.
    pub min_lr: f32,
    /// Steps of linear warm-up. Default 100.
    pub warmup_steps: u64,
    /// Global-norm gradient clipping; 0 turns it off. Default 1.0.
    pub grad_clip: f32,
    #[serde(flatten)]
    pub adamw: AdamWConfig,
    /// Evaluate (and checkpoint) every this many steps. Default 200.
    pub eval_interval: u64,
    /// At most this many batches of the validation split per evaluation. Default 20.
    pub eval_batches: usize,
    /// Seed of initialisation, batches and dropout. Default 1337.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            batch_size: 16,
            grad_accum: 1,
            max_steps: 1400,
            lr: 2e-3,
            min_lr: 2e-4,
            warmup_steps: 100,
            grad_clip: 1.0,
            adamw: AdamWConfig::default(),
            eval_interval: 200,
            eval_batches: 20,
            seed: 1337,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if self.grad_accum == 0 {
            return bad("grad_accum must be at least 1");
        }
        if self.max_steps == 0 {
            return bad("max_steps must be at least 1");
        }
        if !(self.lr > 0.0) || !(self.min_lr >= 0.0) || self.min_lr > self.lr {
            return bad("need 0 <= min_lr <= lr and lr > 0");
        }
        if self.eval_interval == 0 {
            return bad("eval_interval must be at least 1");
        }
        if self.eval_batches == 0 {
            return bad("eval_batches must be at least 1");
        }
        if !(self.grad_clip >= 0.0) {
            return bad("grad_clip must be >= 0 (0 turns clipping off)");
        }
        let a = &self.adamw;
        if !(0.0..1.0).contains(&a.beta1)
            || !(0.0..1.0).contains(&a.beta2)
            || !(a.eps > 0.0)
            || !(a.weight_decay >= 0.0)
        {
            return bad("AdamW needs 0 <= beta1, beta2 < 1, eps > 0 and weight_decay >= 0");
        }
        Ok(())
    }

    pub fn schedule(&self) -> LrSchedule {
        LrSchedule { lr: self.lr, min_lr: self.min_lr, warmup_steps: self.warmup_steps, max_steps: self.max_steps }
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean training loss of the step's micro-batches (nats per token).
    pub loss: f32,
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    pub tokens: usize,
}

/// A model, its optimizer and data, and where the run stands.
pub struct Trainer {
    pub model: Gpt,
    pub config: TrainConfig,
    pub opt: AdamW,
    pub data: Split,
    pub params: Vec<NamedParam>,
    /// Draws batches and dropout seeds; saved in checkpoints.
    pub rng: Rng,
    /// Optimizer steps taken.
    pub step: u64,
}

impl Trainer {
    pub fn new(model: Gpt, config: TrainConfig, data: Split) -> Result<Trainer> {
        config.validate()?;
        data.check(model.config.block_size)?;
        let params = model.named_params();
        let opt = AdamW::new(config.adamw, &params);
        // batches and dropout draw from their own stream, separate from initialisation
        let rng = Rng::new(config.seed ^ 0xD1B5_4A32_D192_ED03);
        Ok(Trainer { model, config, opt, data, params, rng, step: 0 })
    }

    /// Tokens per optimizer step.
    pub fn tokens_per_step(&self) -> usize {
        self.config.batch_size * self.config.grad_accum * self.model.config.block_size
    }

    /// One optimizer step: `grad_accum` micro-batches forward and backward
    /// (each loss scaled by 1/grad_accum so the sum is a mean), clip, AdamW.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let (b, t) = (self.config.batch_size, self.model.config.block_size);
        let lr = self.config.schedule().at(self.step);
        for p in &self.params {
            p.param.zero_grad();
        }
        let mut loss_sum = 0.0;
        for _ in 0..self.config.grad_accum {
            let (x, y) = random_batch(&self.data.train, b, t, &mut self.rng);
            let drop = Dropout { p: self.model.config.dropout, seed: Some(self.rng.next_u64()) };
            let loss = self.model.loss(&x, &y, b, t, &drop)?;
            loss_sum += loss.item()?;
            let scaled =
                if self.config.grad_accum > 1 { loss.scale(1.0 / self.config.grad_accum as f32) } else { loss };
            scaled.backward()?;
        }
        let grad_norm = if self.config.grad_clip > 0.0 {
            clip_grad_norm(&self.params, self.config.grad_clip)
        } else {
            optim::grad_norm(&self.params)
        };
        self.opt.update(&self.params, lr);
        self.step += 1;
        let loss = loss_sum / self.config.grad_accum as f32;
        if !loss.is_finite() {
            return Err(Error::Data(format!(
                "training diverged at step {}: the loss is {loss}; try a lower --lr or --grad-clip 1",
                self.step
            )));
        }
        Ok(StepStats { loss, lr, grad_norm, tokens: self.tokens_per_step() })
    }

    /// Mean loss (nats per token) on the validation split.
    pub fn evaluate(&self) -> Result<f32> {
        evaluate(&self.model, &self.data.val, self.config.batch_size, self.config.eval_batches)
    }
}

/// Mean next-token loss of `model` over consecutive windows of `data`, in
/// no-grad mode (nothing is kept for backward).
pub fn evaluate<D: TokenIds + ?Sized>(model: &Gpt, data: &D, batch_size: usize, max_batches: usize) -> Result<f32> {
    let t = model.config.block_size;
    let batches = eval_batches(data, batch_size, t, max_batches);
    if batches.is_empty() {
        return Err(Error::Data(format!(
            "{} tokens are too few to evaluate a context of {t} (need at least {})",
            data.len(),
            t + 1
        )));
    }
    no_grad(|| {
        let (mut total, mut count) = (0.0f64, 0usize);
        for (x, y, n) in &batches {
            let loss = model.loss(x, y, *n, t, &Dropout::default())?;
            total += loss.item()? as f64 * (n * t) as f64;
            count += n * t;
        }
        Ok((total / count as f64) as f32)
    })
}
