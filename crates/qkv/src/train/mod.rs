//! Training, as one loop that every model plugs into.
//!
//! - [`task`]: what a **task** is — a model, its data and its loss: a
//!   training loss per micro-batch, an evaluation, and its state (random
//!   stream, place in the data) to save and restore. Four tasks implement it:
//!   [`next_token`] (GPT), [`masked_lm`] (BERT pre-training),
//!   [`text_classification`] (BERT fine-tuning),
//!   [`image_classification`] (ViT), [`translation`] (the encoder–decoder)
//!   and [`recurrent_lm`] (RNN, LSTM and GRU language models); Mamba
//!   language models train on [`next_token`] too.
//! - [`optimizer`]: AdamW, the learning-rate schedule, clipping, gradient
//!   accumulation, and the divergence guard.
//! - [`run`]: the **run loop**, which owns what every task shares: the step,
//!   evaluation cadence, the metrics log, the loss picture, checkpoints,
//!   exact resume, progress events and interruption.
//! - [`checkpoint`]: the files of a run directory, each written atomically.
//! - [`setup`]: a run from its description ([`setup::RunSpec`], kept as
//!   `run.json`): start a new one, or open one to resume.
//!
//! A run is deterministic: the same description, seed and thread count give
//! the same weights, bit for bit, whether it ran straight through or was
//! killed and resumed any number of times.

pub mod checkpoint;
pub mod image_classification;
pub mod masked_lm;
pub mod next_token;
pub mod optimizer;
pub mod recurrent_lm;
pub mod run;
pub mod setup;
pub mod task;
pub mod text_classification;
pub mod translation;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use optimizer::{AdamWConfig, Decay, LrSchedule};

/// The most examples in one micro-batch (2^16). Batches are allocated
/// whole, so a size from a file or a flag is refused above this before
/// anything is; `grad_accum` makes larger effective batches.
pub const MAX_BATCH: usize = 1 << 16;

/// The most tokens in one micro-batch of windows (batch × window: 2^22, a
/// thousand times GPT-2's 4 × 1024 per device), checked before the first
/// batch is drawn.
pub const MAX_BATCH_TOKENS: usize = 1 << 22;

/// `Ok` when `batch` windows of `window` tokens are within [`MAX_BATCH_TOKENS`].
pub fn check_batch_tokens(batch: usize, window: usize) -> Result<()> {
    match batch.checked_mul(window) {
        Some(n) if n <= MAX_BATCH_TOKENS => Ok(()),
        _ => Err(Error::Config(format!(
            "a micro-batch of {batch} windows of {window} tokens is more than qkv takes at once \
             ({MAX_BATCH_TOKENS} tokens): lower batch_size or block_size (grad_accum keeps the effective batch)"
        ))),
    }
}

/// Which task a run trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskKind {
    /// A GPT predicting the next token of a text.
    NextToken,
    /// BERT recovering masked tokens (pre-training).
    MaskedLm,
    /// BERT sorting texts into classes (fine-tuning).
    TextClassification,
    /// A Vision Transformer sorting images into classes.
    ImageClassification,
    /// An encoder–decoder translating sentences.
    Translation,
    /// A recurrent network (RNN, LSTM, GRU) predicting the next token.
    RecurrentLm,
    /// A Mamba predicting the next token.
    MambaLm,
}

impl TaskKind {
    pub const ALL: [TaskKind; 7] = [
        TaskKind::NextToken,
        TaskKind::MaskedLm,
        TaskKind::TextClassification,
        TaskKind::ImageClassification,
        TaskKind::Translation,
        TaskKind::RecurrentLm,
        TaskKind::MambaLm,
    ];

    /// A short name for messages and `--help`.
    pub fn name(self) -> &'static str {
        match self {
            TaskKind::NextToken => "gpt",
            TaskKind::MaskedLm => "mlm",
            TaskKind::TextClassification => "classify",
            TaskKind::ImageClassification => "vit",
            TaskKind::Translation => "seq2seq",
            TaskKind::RecurrentLm => "recurrent",
            TaskKind::MambaLm => "mamba",
        }
    }
}

/// How to train: the optimizer's settings, batches, steps and evaluation.
/// Every field has a default per task ([`TrainConfig::for_task`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences (or images) per micro-batch (B). Default 16 (GPT), 32 (BERT), 128 (ViT).
    pub batch_size: usize,
    /// Micro-batches whose gradients are summed into one step. Default 1.
    pub grad_accum: usize,
    /// Optimizer steps in the run. Default 1400 (GPT), 2000 (MLM); the
    /// classifiers count in `epochs` instead.
    pub max_steps: u64,
    /// Passes over the training data; when set, `max_steps` is computed from
    /// it once the data is known. Default 1 (text classification), 10 (ViT),
    /// none for the language models.
    pub epochs: Option<f64>,
    /// Peak learning rate. Default 2e-3 (GPT), 1e-3 (MLM), 5e-4 (classifier
    /// from scratch), 1e-4 (classifier fine-tuned from a pre-trained encoder), 2e-3 (ViT).
    pub lr: f32,
    /// Learning rate at the end of the cosine decay. Default lr / 10.
    pub min_lr: f32,
    /// Steps of linear warm-up. Default 100.
    pub warmup_steps: u64,
    /// What follows the warm-up: cosine decay to `min_lr`, or the original
    /// transformer's inverse square root. Default cosine.
    pub decay: Decay,
    /// Global-norm gradient clipping; 0 turns it off. Default 1.0.
    pub grad_clip: f32,
    #[serde(flatten)]
    pub adamw: AdamWConfig,
    /// Evaluate and checkpoint every this many steps; `None`: once per epoch
    /// (the classifiers' default). Default 200 (GPT), 250 (MLM).
    pub eval_interval: Option<u64>,
    /// At most this many batches of held-out data per evaluation (GPT). Default 20.
    pub eval_batches: usize,
    /// Seed of initialisation, data order, masking and dropout. Default 1337.
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The GPT's defaults (`qkv train`).
    fn default() -> Self {
        TrainConfig {
            batch_size: 16,
            grad_accum: 1,
            max_steps: 1400,
            epochs: None,
            lr: 2e-3,
            min_lr: 2e-4,
            warmup_steps: 100,
            decay: Decay::Cosine,
            grad_clip: 1.0,
            adamw: AdamWConfig::default(),
            eval_interval: Some(200),
            eval_batches: 20,
            seed: 1337,
        }
    }
}

impl TrainConfig {
    /// The defaults of a task. `fine_tune`: the text classifier starts from a
    /// pre-trained encoder (a lower learning rate).
    pub fn for_task(kind: TaskKind, fine_tune: bool) -> TrainConfig {
        // encoders: BERT's AdamW settings (β2 0.999, weight decay 0.01)
        let bert_adamw = AdamWConfig { beta2: 0.999, weight_decay: 0.01, ..AdamWConfig::default() };
        let with_lr = |t: TrainConfig, lr: f32| TrainConfig { lr, min_lr: lr / 10.0, ..t };
        match kind {
            TaskKind::NextToken => TrainConfig::default(),
            TaskKind::MaskedLm => with_lr(
                TrainConfig {
                    batch_size: 32,
                    max_steps: 2000,
                    adamw: bert_adamw,
                    eval_interval: Some(250),
                    ..TrainConfig::default()
                },
                1e-3,
            ),
            TaskKind::TextClassification => with_lr(
                TrainConfig {
                    batch_size: 32,
                    epochs: Some(1.0),
                    adamw: bert_adamw,
                    eval_interval: None,
                    ..TrainConfig::default()
                },
                if fine_tune { 1e-4 } else { 5e-4 },
            ),
            // reaches 98 %+ on MNIST in about 5 minutes on two cores
            TaskKind::ImageClassification => with_lr(
                TrainConfig {
                    batch_size: 128,
                    epochs: Some(10.0),
                    adamw: AdamWConfig { beta2: 0.999, weight_decay: 0.05, ..AdamWConfig::default() },
                    eval_interval: None,
                    ..TrainConfig::default()
                },
                2e-3,
            ),
            // the paper's optimizer (β2 0.98, ε 1e-9, no weight decay) and
            // inverse-square-root schedule, for 2048-token batches; 2.5 epochs
            // of the Bible pairs fit in 30 minutes on two cores
            TaskKind::Translation => TrainConfig {
                batch_size: 1,
                epochs: Some(2.5),
                lr: 1e-3,
                min_lr: 0.0,
                warmup_steps: 400,
                decay: Decay::InverseSqrt,
                adamw: AdamWConfig { beta2: 0.98, eps: 1e-9, weight_decay: 0.0, ..AdamWConfig::default() },
                eval_interval: Some(500),
                ..TrainConfig::default()
            },
            // 32 streams of 128-token windows: a step sees as many tokens as
            // the GPT's 16 × 128 twice over, for half the steps
            TaskKind::RecurrentLm => TrainConfig { batch_size: 32, max_steps: 700, ..TrainConfig::default() },
            // the GPT's windows and schedule
            TaskKind::MambaLm => TrainConfig::default(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1");
        }
        if self.batch_size > MAX_BATCH {
            return Err(Error::Config(format!(
                "batch_size {} is more than qkv takes in one micro-batch ({MAX_BATCH}); \
                 grad_accum makes larger batches from several",
                self.batch_size
            )));
        }
        if self.grad_accum == 0 {
            return bad("grad_accum must be at least 1");
        }
        if self.max_steps == 0 {
            return bad("max_steps must be at least 1");
        }
        if let Some(e) = self.epochs
            && !(e > 0.0 && e <= 1e6)
        {
            return bad("epochs must be positive (and below a million)");
        }
        if !(self.lr > 0.0) || !(self.min_lr >= 0.0) || self.min_lr > self.lr {
            return bad("need 0 <= min_lr <= lr and lr > 0");
        }
        if self.eval_interval == Some(0) {
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

    /// Fix the step count and evaluation cadence once the number of batches
    /// in an epoch is known: `epochs` becomes `max_steps`, and an unset
    /// `eval_interval` becomes one epoch.
    pub fn resolve(&mut self, steps_per_epoch: usize) {
        let per_epoch = steps_per_epoch.max(1) as u64;
        if let Some(e) = self.epochs.take() {
            self.max_steps = ((e * per_epoch as f64).ceil() as u64).max(1);
        }
        self.eval_interval.get_or_insert(per_epoch);
    }

    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            lr: self.lr,
            min_lr: self.min_lr,
            warmup_steps: self.warmup_steps,
            max_steps: self.max_steps,
            decay: self.decay,
        }
    }
}

/// FNV-1a 64-bit of `bytes`, as hex: the fingerprint that lets a resume
/// notice that its data changed.
pub fn fnv1a(bytes: &[u8]) -> String {
    Fnv1a::default().update(bytes).hex()
}

/// FNV-1a over data that comes in pieces.
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    pub fn update(mut self, bytes: &[u8]) -> Fnv1a {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_become_steps_and_evaluation_defaults_to_once_an_epoch() {
        let mut t = TrainConfig::for_task(TaskKind::ImageClassification, false);
        t.resolve(47);
        assert_eq!((t.max_steps, t.eval_interval, t.epochs), (470, Some(47), None));
        let mut t = TrainConfig { epochs: Some(0.5), eval_interval: Some(3), ..TrainConfig::default() };
        t.resolve(7);
        assert_eq!((t.max_steps, t.eval_interval), (4, Some(3)));
        for kind in TaskKind::ALL {
            TrainConfig::for_task(kind, false).validate().unwrap();
        }
        assert!(TrainConfig { epochs: Some(-1.0), ..TrainConfig::default() }.validate().is_err());
        assert!(TrainConfig { eval_interval: Some(0), ..TrainConfig::default() }.validate().is_err());
    }
}
