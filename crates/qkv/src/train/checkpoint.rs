//! The run directory: everything needed to use a trained model or to resume
//! its training exactly.
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | the model: qkv's GPT configuration, or Hugging Face's for BERT and ViT |
//! | `tokenizer.json` | the vocabulary (text models) |
//! | `run.json` | the training run: task, settings, data and its fingerprint |
//! | `checkpoint.safetensors` | the resume point: weights, AdamW moments, step, the task's state |
//! | `model.safetensors` | the weights, under their Hugging Face names |
//! | `metrics.jsonl` | one line per step: losses, accuracy, learning rate, speed |
//! | `loss.svg` | the loss curve, redrawn at every evaluation |
//! | `report.json` | the final numbers of a finished run |
//!
//! Every file is written atomically (a temporary file renamed over the old
//! one), and a checkpoint is *one* file, so a crash at any moment leaves the
//! last complete checkpoint as it was. `metrics.jsonl` is the one file
//! appended to: a line torn by a crash is dropped, with a note, on resume.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use qkv_tensor::Tensor;

use crate::error::{Error, Result};
use crate::io::{atomic::write_atomic, crash, safetensors};
use crate::nn::NamedParam;
use crate::train::optimizer::AdamW;

pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const RUN: &str = "run.json";
pub const CHECKPOINT: &str = "checkpoint.safetensors";
pub const MODEL: &str = "model.safetensors";
pub const METRICS: &str = "metrics.jsonl";
pub const CURVE: &str = "loss.svg";
pub const REPORT: &str = "report.json";
/// Every file a run writes; `--force` replaces these and nothing else.
pub const RUN_FILES: [&str; 8] = [CONFIG, TOKENIZER, RUN, CHECKPOINT, MODEL, METRICS, CURVE, REPORT];

/// Make `dir` ready for a new run. A directory that already holds a run (or
/// a model) is refused unless `force`, and then only the run's own files are removed.
pub fn prepare_new(dir: &Path, force: bool) -> Result<()> {
    let has_run = RUN_FILES.iter().any(|f| dir.join(f).exists());
    if has_run && !force {
        return Err(Error::Config(format!(
            "{} already holds a run; continue it with `qkv train --resume {}`, or start over with --force \
             (which replaces only the run's own files)",
            dir.display(),
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for f in RUN_FILES {
        let p = dir.join(f);
        if p.exists() {
            std::fs::remove_file(&p).map_err(|e| Error::io(&p, e))?;
        }
    }
    Ok(())
}

/// Remove the temporary files of writes a crash interrupted (`.NAME.tmp-PID`
/// beside each run file; see [`crate::io::atomic`]).
pub fn remove_temporaries(dir: &Path) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_ours = RUN_FILES.iter().any(|f| name.starts_with(&format!(".{f}.tmp-")));
        if is_ours {
            std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
        }
    }
    Ok(())
}

/// A JSON file of the run, written atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("run files serialise");
    write_atomic(path, text.as_bytes())
}

/// Where training stands at a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Tokens trained on so far.
    pub tokens_seen: u64,
    /// Training time so far, over every session of the run.
    pub elapsed_s: f64,
    /// The last evaluation's loss and accuracy.
    pub val_loss: Option<f32>,
    pub val_accuracy: Option<f64>,
    /// The task's own state (random stream, place in the data).
    pub task: Value,
}

fn step_meta(step: u64) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "pt".into());
    m.insert("step".into(), step.to_string());
    m
}

/// Parameters as named tensors, for saving.
fn param_tensors(params: &[NamedParam]) -> Vec<(String, Tensor)> {
    params.iter().map(|p| (p.name.clone(), p.param.value())).collect()
}

/// The first parameter holding a number that is not finite.
fn non_finite(params: &[NamedParam]) -> Option<&str> {
    params.iter().find(|p| p.param.value().data().iter().any(|x| !x.is_finite())).map(|p| p.name.as_str())
}

/// Write the resume point: weights, AdamW's moments and step, and `state` —
/// one file, so that it is either all there or not at all. Weights that are
/// not finite are refused: a checkpoint is always one to go back to.
pub fn save_checkpoint(dir: &Path, params: &[NamedParam], adamw: &AdamW, state: &RunState) -> Result<()> {
    let path = dir.join(CHECKPOINT);
    if let Some(name) = non_finite(params) {
        return Err(Error::checkpoint(
            &path,
            format!("not written: {name} holds numbers that are not finite; the previous checkpoint is kept"),
        ));
    }
    let mut tensors = param_tensors(params);
    for (i, p) in params.iter().enumerate() {
        let shape = p.param.shape();
        tensors.push((format!("adamw.m.{}", p.name), Tensor::from_vec(adamw.m[i].clone(), &shape)?));
        tensors.push((format!("adamw.v.{}", p.name), Tensor::from_vec(adamw.v[i].clone(), &shape)?));
    }
    let mut meta = step_meta(state.step);
    meta.insert("format".into(), "qkv-checkpoint".into());
    meta.insert("adamw_step".into(), adamw.step.to_string());
    meta.insert("state".into(), serde_json::to_string(state).expect("state serialises"));
    safetensors::save_with(&path, &tensors, &meta, || crash::point("checkpoint")).map_err(|e| {
        Error::checkpoint(&path, format!("cannot write the checkpoint ({e}); the previous checkpoint is intact"))
    })
}

/// The size of the run's checkpoint in bytes; an error that says what to do
/// when the run stopped before writing one.
pub fn checkpoint_bytes(dir: &Path) -> Result<u64> {
    let path = dir.join(CHECKPOINT);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        _ => Err(Error::checkpoint(
            &path,
            "no checkpoint yet: the run stopped before its first one; start it again with --force",
        )),
    }
}

/// Read the resume point into `params` and `adamw`; returns where the run stood.
pub fn load_checkpoint(dir: &Path, params: &[NamedParam], adamw: &mut AdamW) -> Result<RunState> {
    let path = dir.join(CHECKPOINT);
    checkpoint_bytes(dir)?;
    let loaded = safetensors::load(&path)?;
    let meta = |key: &str| {
        loaded.metadata.get(key).ok_or_else(|| Error::checkpoint(&path, format!("no {key:?} in the metadata")))
    };
    if meta("format")? != "qkv-checkpoint" {
        return Err(Error::checkpoint(&path, "not a qkv checkpoint"));
    }
    let state: RunState = serde_json::from_str(meta("state")?)
        .map_err(|e| Error::checkpoint(&path, format!("unreadable state in the metadata: {e}")))?;
    adamw.step = meta("adamw_step")?.parse().map_err(|_| Error::checkpoint(&path, "adamw_step is not a number"))?;
    let (weights, moments): (BTreeMap<String, Tensor>, BTreeMap<String, Tensor>) =
        loaded.tensors.into_iter().partition(|(k, _)| !k.starts_with("adamw."));
    load_params(&path, params, &weights)?;
    for (i, p) in params.iter().enumerate() {
        for (key, dst) in [("m", &mut adamw.m[i]), ("v", &mut adamw.v[i])] {
            let name = format!("adamw.{key}.{}", p.name);
            let t = moments.get(&name).ok_or_else(|| Error::checkpoint(&path, format!("missing tensor {name:?}")))?;
            if t.numel() != dst.len() {
                return Err(Error::checkpoint(
                    &path,
                    format!("tensor {name:?} has {} values, expected {}", t.numel(), dst.len()),
                ));
            }
            *dst = t.to_vec();
        }
    }
    Ok(state)
}

/// Copy tensors into the parameters: every parameter must be there with its
/// shape, and nothing else may be.
pub fn load_params(path: &Path, params: &[NamedParam], tensors: &BTreeMap<String, Tensor>) -> Result<()> {
    let unused = crate::io::hf::assign(path, params, tensors, "")?;
    if let Some(extra) = unused.first() {
        return Err(Error::checkpoint(
            path,
            format!("unexpected tensor {extra:?}: the checkpoint is of another model"),
        ));
    }
    Ok(())
}

/// Write the weights as `model.safetensors` (Hugging Face names; the step in
/// the metadata).
pub fn write_model(dir: &Path, params: &[NamedParam], step: u64) -> Result<()> {
    safetensors::save(&dir.join(MODEL), &param_tensors(params), &step_meta(step))
}

/// One line of `metrics.jsonl`. The same fields for every task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub step: u64,
    /// Mean training loss of the step's micro-batches (nats).
    pub train_loss: f32,
    /// Held-out loss, at evaluation steps.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f32>,
    /// Held-out accuracy, at evaluation steps of tasks that predict classes or masked tokens.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Tokens trained on per second of training (evaluations not counted).
    pub tokens_per_s: f32,
    /// Training time since the run began, over every session.
    pub elapsed_s: f64,
}

/// Append one line to `metrics.jsonl`, in one write.
pub fn append_metric(dir: &Path, m: &Metric) -> Result<()> {
    use std::io::Write;
    let p = dir.join(METRICS);
    let mut line = serde_json::to_string(m).expect("a metric serialises");
    line.push('\n');
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| Error::io(&p, e))?;
    let (first, second) = line.as_bytes().split_at(line.len() / 2);
    f.write_all(first).map_err(|e| Error::io(&p, e))?;
    crash::point("metrics");
    f.write_all(second).map_err(|e| Error::io(&p, e))
}

/// The metrics of a run, and a note when a torn last line (a crash
/// mid-append) was left out. A bad line elsewhere is an error.
pub fn read_metrics(dir: &Path) -> Result<(Vec<Metric>, Option<String>)> {
    let p = dir.join(METRICS);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(Error::io(&p, e)),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str(l) {
            Ok(m) => out.push(m),
            Err(_) if i + 1 == lines.len() => {
                let note = format!("{}: dropped a torn last line (the run was stopped while writing it)", p.display());
                return Ok((out, Some(note)));
            }
            Err(e) => return Err(Error::format(&p, format!("line {}: {e}", i + 1))),
        }
    }
    Ok((out, None))
}

/// Keep the metric lines up to `step` (those after it were written after
/// the checkpoint a resume starts from). Returns the note of [`read_metrics`].
pub fn truncate_metrics(dir: &Path, step: u64) -> Result<Option<String>> {
    let (metrics, note) = read_metrics(dir)?;
    let mut text = String::new();
    for m in metrics.iter().filter(|m| m.step <= step) {
        text.push_str(&serde_json::to_string(m).expect("a metric serialises"));
        text.push('\n');
    }
    write_atomic(&dir.join(METRICS), text.as_bytes())?;
    Ok(note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metric(step: u64) -> Metric {
        Metric {
            step,
            train_loss: 1.0,
            val_loss: None,
            val_accuracy: None,
            lr: 1e-3,
            grad_norm: 0.5,
            tokens_per_s: 10.0,
            elapsed_s: 1.0,
        }
    }

    #[test]
    fn a_torn_last_metrics_line_is_dropped_with_a_note_and_others_are_errors() {
        let dir = std::env::temp_dir().join(format!("qkv-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for s in 1..=3 {
            append_metric(&dir, &metric(s)).unwrap();
        }
        let p = dir.join(METRICS);
        let whole = std::fs::read_to_string(&p).unwrap();
        std::fs::write(&p, format!("{whole}{{\"step\":4,\"train_lo")).unwrap();
        let (m, note) = read_metrics(&dir).unwrap();
        assert_eq!(m.len(), 3);
        assert!(note.unwrap().contains("torn last line"));
        assert!(truncate_metrics(&dir, 2).unwrap().is_some());
        assert_eq!(read_metrics(&dir).unwrap(), (vec![metric(1), metric(2)], None));
        std::fs::write(&p, format!("garbage\n{whole}")).unwrap();
        assert!(read_metrics(&dir).unwrap_err().to_string().contains("line 1"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
