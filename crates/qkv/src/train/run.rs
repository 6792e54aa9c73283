//! The run loop: the one place where training happens, for every task.
//!
//! A [`Trainer`] is a task with its optimizer: [`Trainer::train_step`] takes
//! one optimizer step (micro-batches forward and backward, the divergence
//! guard, clipping, AdamW). A [`Run`] is a trainer in its run directory:
//! [`Run::train`] repeats steps and owns everything around them —
//!
//! - evaluation every `eval_interval` steps and at the end;
//! - a line of `metrics.jsonl` per step, and `loss.svg` at every evaluation;
//! - a checkpoint at every evaluation, and when asked to stop ([`Control`]);
//! - progress [`Event`]s for whoever shows them (the command line draws a bar);
//! - `report.json` when the run reaches its last step.
//!
//! A step that diverges (a loss or gradient norm that is not finite) is an
//! error before any weight changes, so the last checkpoint stays the last
//! good one. Nothing the loop writes can be torn by a crash (see
//! [`super::checkpoint`]), and a resumed run takes the same steps with the
//! same data and random numbers as one that never stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::Result;
use crate::io::crash;
use crate::train::TrainConfig;
use crate::train::checkpoint::{self, Metric, RunState};
use crate::train::optimizer::Optimizer;
use crate::train::setup::RunSpec;
use crate::train::task::{Evaluation, Task};

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    /// Mean training loss of the step's micro-batches.
    pub loss: f32,
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens the step trained on.
    pub tokens: usize,
}

/// A task and the optimizer of its parameters.
pub struct Trainer {
    pub task: Box<dyn Task>,
    pub opt: Optimizer,
    pub config: TrainConfig,
    /// Optimizer steps taken.
    pub step: u64,
}

impl Trainer {
    /// `config` must be resolved (no `epochs` left: see [`TrainConfig::resolve`]).
    pub fn new(task: Box<dyn Task>, config: TrainConfig) -> Result<Trainer> {
        config.validate()?;
        let opt = Optimizer::new(task.params(), config.adamw, config.schedule(), config.grad_clip);
        Ok(Trainer { task, opt, config, step: 0 })
    }

    /// One optimizer step: `grad_accum` micro-batches forward and backward,
    /// then the update. A loss or gradient norm that is not finite is an
    /// error, and then no weight has changed.
    pub fn train_step(&mut self) -> Result<StepStats> {
        let step = self.step + 1;
        let micro = self.config.grad_accum;
        self.opt.zero_grad();
        let (mut loss, mut counted, mut tokens) = (0.0f32, 0usize, 0usize);
        for _ in 0..micro {
            if let Some(l) = self.task.training_loss()? {
                loss += self.opt.accumulate(&l.value, micro, step)?;
                counted += 1;
                tokens += l.tokens;
            }
        }
        crash::point("step");
        let (lr, grad_norm) = if counted > 0 {
            let u = self.opt.step(step)?;
            (u.lr, u.grad_norm)
        } else {
            (self.opt.schedule.at(step - 1), 0.0) // nothing to learn from: no update
        };
        self.step = step;
        Ok(StepStats { loss: loss / counted.max(1) as f32, lr, grad_norm, tokens })
    }
}

/// Asks a run to stop at the end of its current step (Ctrl-C, SIGTERM):
/// it writes a checkpoint and returns [`Outcome::Interrupted`].
#[derive(Clone, Debug, Default)]
pub struct Control(Arc<AtomicBool>);

impl Control {
    pub fn request_stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a run reports while it trains.
#[derive(Debug)]
pub enum Event<'a> {
    /// A step is done (its metrics line is written).
    Step { step: u64, stats: &'a StepStats, tokens_per_s: f32 },
    /// The held-out data was scored after `step`.
    Evaluated { step: u64, evaluation: &'a Evaluation },
    /// A checkpoint of `step` is on disk.
    Checkpoint { step: u64 },
}

/// How [`Run::train`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the step it was asked to reach.
    Reached { step: u64 },
    /// Stopped early, as [`Control`] asked, with a checkpoint of `step`.
    Interrupted { step: u64 },
}

/// A trainer in its run directory.
pub struct Run {
    pub dir: PathBuf,
    /// What the run is (`run.json`).
    pub spec: RunSpec,
    pub trainer: Trainer,
    /// Where the run stood at its last checkpoint (or its start).
    pub state: RunState,
    /// Things worth telling the user about how the run was set up or
    /// resumed (a rebuilt token cache, a torn metrics line dropped).
    pub notes: Vec<String>,
}

impl Run {
    /// Train until step `until` (at most `max_steps`).
    pub fn train(&mut self, until: u64, control: &Control, on: &mut dyn FnMut(Event)) -> Result<Outcome> {
        let stop = until.min(self.trainer.config.max_steps);
        let interval = self.trainer.config.eval_interval.unwrap_or(200).max(1);
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_s;
        let mut window = (Instant::now(), 0usize);
        let mut tokens_per_s = 0.0f32;
        let mut checkpointed = self.state.step;
        while self.trainer.step < stop {
            if control.stop_requested() {
                break;
            }
            let stats = self.trainer.train_step()?;
            let step = self.trainer.step;
            self.state.step = step;
            self.state.tokens_seen += stats.tokens as u64;
            window.1 += stats.tokens;
            let dt = window.0.elapsed().as_secs_f32();
            if dt > 2.0 || tokens_per_s == 0.0 {
                tokens_per_s = window.1 as f32 / dt.max(1e-6);
                if dt > 2.0 {
                    window = (Instant::now(), 0);
                }
            }
            self.state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
            let evaluation =
                if step.is_multiple_of(interval) || step == stop { Some(self.trainer.task.evaluate()?) } else { None };
            if evaluation.is_some() {
                crash::point("eval");
            }
            if let Some(e) = &evaluation {
                self.state.val_loss = Some(e.loss);
                self.state.val_accuracy = e.accuracy;
            }
            checkpoint::append_metric(
                &self.dir,
                &Metric {
                    step,
                    train_loss: stats.loss,
                    val_loss: evaluation.as_ref().map(|e| e.loss),
                    val_accuracy: evaluation.as_ref().and_then(|e| e.accuracy),
                    lr: stats.lr,
                    grad_norm: stats.grad_norm,
                    tokens_per_s,
                    elapsed_s: self.state.elapsed_s,
                },
            )?;
            on(Event::Step { step, stats: &stats, tokens_per_s });
            if let Some(e) = &evaluation {
                on(Event::Evaluated { step, evaluation: e });
                self.checkpoint()?;
                checkpointed = step;
                on(Event::Checkpoint { step });
                let (metrics, _) = checkpoint::read_metrics(&self.dir)?;
                crate::viz::loss_curve::write_svg(&self.dir.join(checkpoint::CURVE), &metrics, "qkv train: loss")?;
                // tokens/s counts training only, not the evaluation just done
                window = (Instant::now(), 0);
            }
        }
        let step = self.trainer.step;
        if step < stop {
            if checkpointed != step {
                self.checkpoint()?;
                on(Event::Checkpoint { step });
            }
            return Ok(Outcome::Interrupted { step });
        }
        if step == self.trainer.config.max_steps {
            let mut report = self.trainer.task.report()?;
            report["steps"] = step.into();
            report["train_seconds"] = self.state.elapsed_s.into();
            checkpoint::write_json(&self.dir.join(checkpoint::REPORT), &report)?;
        }
        Ok(Outcome::Reached { step })
    }

    /// Write the resume point and the model's weights for the current step.
    pub fn checkpoint(&mut self) -> Result<()> {
        self.state.step = self.trainer.step;
        self.state.task = self.trainer.task.state();
        let params = &self.trainer.opt.params;
        checkpoint::save_checkpoint(&self.dir, params, &self.trainer.opt.adamw, &self.state)?;
        checkpoint::write_model(&self.dir, params, self.trainer.step)
    }
}
