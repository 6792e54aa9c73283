//! A run from its description. [`RunSpec`] says everything a run is — the
//! task with its model and data, and how to train — and is kept in the run
//! directory as `run.json`, so [`resume`] rebuilds exactly the same run:
//! same model, same data (checked against its fingerprint), same settings.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;
use crate::train::checkpoint::{self, RunState};
use crate::train::image_classification::ImageClassificationSpec;
use crate::train::masked_lm::MaskedLmSpec;
use crate::train::next_token::{MambaLmSpec, NextTokenSpec};
use crate::train::recurrent_lm::RecurrentLmSpec;
use crate::train::run::{Run, Trainer};
use crate::train::task::Task;
use crate::train::text_classification::TextClassificationSpec;
use crate::train::translation::TranslationSpec;
use crate::train::{TaskKind, TrainConfig};

/// The task of a run, with its model and data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "kebab-case")]
pub enum TaskSpec {
    NextToken(NextTokenSpec),
    MaskedLm(MaskedLmSpec),
    TextClassification(TextClassificationSpec),
    ImageClassification(ImageClassificationSpec),
    Translation(TranslationSpec),
    RecurrentLm(RecurrentLmSpec),
    MambaLm(MambaLmSpec),
}

impl TaskSpec {
    pub fn kind(&self) -> TaskKind {
        match self {
            TaskSpec::NextToken(_) => TaskKind::NextToken,
            TaskSpec::MaskedLm(_) => TaskKind::MaskedLm,
            TaskSpec::TextClassification(_) => TaskKind::TextClassification,
            TaskSpec::ImageClassification(_) => TaskKind::ImageClassification,
            TaskSpec::Translation(_) => TaskKind::Translation,
            TaskSpec::RecurrentLm(_) => TaskKind::RecurrentLm,
            TaskSpec::MambaLm(_) => TaskKind::MambaLm,
        }
    }

    /// About how many parameters the model described here has, counted from
    /// its sizes without building it (`None` when the count overflows, or a
    /// Mamba option is unsupported: the model's own validation refuses those).
    pub fn model_params(&self) -> Option<usize> {
        match self {
            TaskSpec::NextToken(s) => s.model.checked_params(),
            TaskSpec::MaskedLm(s) => s.model.checked_params(),
            TaskSpec::TextClassification(s) => s.model.checked_params(),
            TaskSpec::ImageClassification(s) => s.model.checked_params(),
            TaskSpec::Translation(s) => s.model.checked_params(),
            TaskSpec::RecurrentLm(s) => s.model.num_params(),
            TaskSpec::MambaLm(s) => s.model.num_params(),
        }
    }
}

/// Everything a run is: `run.json`. (Unknown fields are refused by each
/// task's spec: serde cannot refuse them here, beside a flattened enum.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunSpec {
    #[serde(flatten)]
    pub task: TaskSpec,
    pub train: TrainConfig,
    /// Fingerprint of the training data, filled in when the run starts; a
    /// resume refuses data that no longer matches it.
    #[serde(default)]
    pub data_fingerprint: String,
}

/// Whether a task is built for a new run or to resume one (then its
/// tokenizer and model shape come from the run directory, not from their sources).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    New,
    Resume,
}

/// What building a task gives the run.
pub struct Built {
    pub task: Box<dyn Task>,
    /// Batches in one pass over the training data, for tasks counted in epochs.
    pub steps_per_epoch: Option<usize>,
    pub fingerprint: String,
    /// The model's `config.json`.
    pub config: Value,
    /// The tokenizer, for text tasks (`tokenizer.json`).
    pub tokenizer: Option<Tokenizer>,
    /// Messages for the user (a rebuilt token cache, truncated texts…).
    pub notes: Vec<String>,
}

fn build(spec: &mut RunSpec, dir: &Path, mode: Mode) -> Result<Built> {
    let train = &spec.train;
    match &mut spec.task {
        TaskSpec::NextToken(s) => super::next_token::build(s, train, dir, mode),
        TaskSpec::MaskedLm(s) => super::masked_lm::build(s, train, dir, mode),
        TaskSpec::TextClassification(s) => super::text_classification::build(s, train, dir, mode),
        TaskSpec::ImageClassification(s) => super::image_classification::build(s, train, dir, mode),
        TaskSpec::Translation(s) => super::translation::build(s, train, dir, mode),
        TaskSpec::RecurrentLm(s) => super::recurrent_lm::build(s, train, dir, mode),
        TaskSpec::MambaLm(s) => super::next_token::build_mamba(s, train, dir, mode),
    }
}

/// Start a new run in `dir`: build the task (read the data, make the model),
/// then — only once everything checked out — write the run's files. A
/// directory that holds a run already is refused unless `force`.
pub fn start(mut spec: RunSpec, dir: &Path, force: bool) -> Result<Run> {
    spec.train.validate()?;
    let built = build(&mut spec, dir, Mode::New)?;
    if let Some(n) = built.steps_per_epoch {
        spec.train.resolve(n);
    } else if spec.train.epochs.is_some() {
        return Err(Error::Config(format!("the {} task counts in steps, not epochs", spec.task.kind().name())));
    }
    spec.train.validate()?;
    spec.data_fingerprint = built.fingerprint.clone();
    checkpoint::prepare_new(dir, force)?;
    checkpoint::write_json(&dir.join(checkpoint::CONFIG), &built.config)?;
    if let Some(tok) = &built.tokenizer {
        tok.save(&dir.join(checkpoint::TOKENIZER))?;
    }
    checkpoint::write_json(&dir.join(checkpoint::RUN), &spec)?;
    let trainer = Trainer::new(built.task, spec.train.clone())?;
    let state = RunState {
        step: 0,
        tokens_seen: 0,
        elapsed_s: 0.0,
        val_loss: None,
        val_accuracy: None,
        task: trainer.task.state(),
    };
    Ok(Run { dir: dir.to_path_buf(), trainer, state, notes: built.notes, spec })
}

/// Settings a resumed run may change.
#[derive(Clone, Debug, Default)]
pub struct ResumeChanges {
    /// Train longer (or shorter); the learning-rate schedule follows.
    pub max_steps: Option<u64>,
    pub eval_interval: Option<u64>,
}

/// The `run.json` of `dir`.
pub fn read_spec(dir: &Path) -> Result<RunSpec> {
    let p = dir.join(checkpoint::RUN);
    let text = std::fs::read_to_string(&p).map_err(|_| {
        Error::checkpoint(
            dir,
            format!(
                "not a qkv run directory (no readable run.json); train one with `qkv train --out-dir {}`",
                dir.display()
            ),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| Error::format(&p, format!("not a qkv run description: {e}")))
}

/// Open the run in `dir` where its last checkpoint left it.
pub fn resume(dir: &Path, changes: &ResumeChanges) -> Result<Run> {
    let mut spec = read_spec(dir)?;
    checkpoint::remove_temporaries(dir)?;
    if let Some(m) = changes.max_steps {
        spec.train.max_steps = m;
    }
    if let Some(e) = changes.eval_interval {
        spec.train.eval_interval = Some(e);
    }
    spec.train.validate()?;
    // A run.json edited (or crafted) to describe a larger model than the run
    // trained would have it allocated before the checkpoint is read: the
    // checkpoint holds every weight and both AdamW moments (12 bytes a
    // parameter), so a model its file cannot hold is refused first. The
    // counts are estimates (at most twice the real one), hence 4 bytes.
    let saved = checkpoint::checkpoint_bytes(dir)?;
    if let Some(n) = spec.task.model_params()
        && n.saturating_mul(4) as u64 > saved
    {
        return Err(Error::checkpoint(
            dir.join(checkpoint::RUN),
            format!(
                "describes a model of about {n} parameters, but the checkpoint ({saved} bytes) cannot hold them: \
                 run.json and checkpoint.safetensors are not of the same run"
            ),
        ));
    }
    let built = build(&mut spec, dir, Mode::Resume)?;
    if built.fingerprint != spec.data_fingerprint {
        return Err(Error::Data(format!(
            "the training data of {} changed since the run started; resuming would train on different data",
            dir.display()
        )));
    }
    let mut trainer = Trainer::new(built.task, spec.train.clone())?;
    let state = checkpoint::load_checkpoint(dir, &trainer.opt.params, &mut trainer.opt.adamw)?;
    trainer.task.restore(&state.task)?;
    trainer.step = state.step;
    let mut notes = built.notes;
    notes.extend(checkpoint::truncate_metrics(dir, state.step)?);
    checkpoint::write_json(&dir.join(checkpoint::RUN), &spec)?;
    Ok(Run { dir: dir.to_path_buf(), trainer, state, notes, spec })
}
