//! The run directory: everything needed to use a trained model or to resume
//! its training exactly.
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | model and training configuration, data source |
//! | `tokenizer.json` | the vocabulary |
//! | `model.safetensors` | the weights (Hugging Face GPT-2 names) |
//! | `optimizer.safetensors` | AdamW moments `m.<name>`, `v.<name>` |
//! | `state.json` | step, RNG state, tokens seen — written last |
//! | `metrics.jsonl` | one line per step: losses, learning rate, speed |
//! | `loss.svg` | the loss curve, redrawn at every evaluation |
//!
//! Each file is written atomically, and the checkpoint files carry their step
//! in their metadata, so a crash between two files is detected on resume
//! instead of silently mixing two steps.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, Tensor};

use crate::error::{Error, Result};
use crate::io::{atomic::write_atomic, safetensors};
use crate::models::gpt::{Gpt, GptConfig};
use crate::nn::{Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::train::{TrainConfig, Trainer};

pub const CONFIG: &str = "config.json";
pub const TOKENIZER: &str = "tokenizer.json";
pub const MODEL: &str = "model.safetensors";
pub const OPTIMIZER: &str = "optimizer.safetensors";
pub const STATE: &str = "state.json";
pub const METRICS: &str = "metrics.jsonl";
pub const CURVE: &str = "loss.svg";
/// Every file a run writes; `--force` replaces these and nothing else.
pub const RUN_FILES: [&str; 7] = [CONFIG, TOKENIZER, MODEL, OPTIMIZER, STATE, METRICS, CURVE];

/// What a run is: model, training settings, and where its text came from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Always "gpt" for now.
    pub kind: String,
    pub model: GptConfig,
    pub train: TrainConfig,
    /// The corpus file; `None` for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// Byte length and FNV-1a hash of the corpus, so a resume notices a changed file.
    pub data_len: u64,
    pub data_hash: String,
    /// The `--tokenizer` the run was started with, for the record (the run's
    /// own copy is `tokenizer.json`); `None` for the character tokenizer
    /// learned from the corpus.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
}

/// Where training stands at a checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub step: u64,
    pub rng: [u64; 4],
    pub tokens_seen: u64,
    pub elapsed_s: f64,
    /// Last validation loss (nats per token).
    pub val_loss: Option<f32>,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub step: u64,
    pub train_loss: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub val_loss: Option<f32>,
    pub lr: f32,
    pub tokens_per_s: f32,
    pub elapsed_s: f64,
}

/// FNV-1a 64-bit of `bytes`, as hex.
pub fn fnv1a(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// True when `dir` holds a qkv run (its `config.json` parses as one).
pub fn is_run_dir(dir: &Path) -> bool {
    read_config(dir).is_ok()
}

/// Make `dir` ready for a new run. A directory that already holds a run is
/// refused unless `force`, and then only the run's own files are removed.
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

fn not_a_run(dir: &Path, what: &str) -> Error {
    Error::checkpoint(
        dir,
        format!("not a qkv run directory ({what}); train one with `qkv train --out-dir {}`", dir.display()),
    )
}

pub fn read_config(dir: &Path) -> Result<RunConfig> {
    let p = dir.join(CONFIG);
    let text = std::fs::read_to_string(&p).map_err(|_| not_a_run(dir, "no readable config.json"))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&p, format!("not a qkv run configuration: {e}")))
}

pub fn write_config(dir: &Path, config: &RunConfig) -> Result<()> {
    let json = serde_json::to_string_pretty(config).expect("serialisable");
    write_atomic(&dir.join(CONFIG), json.as_bytes())
}

/// Write the run's `tokenizer.json`: qkv's character format, or a Hugging
/// Face `tokenizer.json` for every other tokenizer.
pub fn write_tokenizer(dir: &Path, tok: &Tokenizer) -> Result<()> {
    tok.save(&dir.join(TOKENIZER))
}

pub fn read_tokenizer(dir: &Path) -> Result<Tokenizer> {
    Tokenizer::from_file(&dir.join(TOKENIZER))
}

/// Parameters as named tensors, for saving.
fn param_tensors(params: &[NamedParam]) -> Vec<(String, Tensor)> {
    params.iter().map(|p| (p.name.clone(), p.param.value())).collect()
}

/// Copy tensors from a checkpoint into the parameters: every parameter must
/// be there with its shape, and nothing else may be.
pub fn load_params(path: &Path, params: &[NamedParam], tensors: &BTreeMap<String, Tensor>, prefix: &str) -> Result<()> {
    let unused = crate::io::hf::assign(path, params, tensors, prefix)?;
    if let Some(extra) = unused.iter().find(|k| k.starts_with(prefix)) {
        return Err(Error::checkpoint(
            path,
            format!("unexpected tensor {extra:?}: the checkpoint is of another model"),
        ));
    }
    Ok(())
}

fn step_meta(step: u64) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "qkv".into());
    m.insert("step".into(), step.to_string());
    m
}

/// Write model, optimizer and state for the trainer's current step.
pub fn save_checkpoint(dir: &Path, tr: &Trainer, state: &TrainState) -> Result<()> {
    safetensors::save(&dir.join(MODEL), &param_tensors(&tr.params), &step_meta(tr.step))?;
    let mut opt: Vec<(String, Tensor)> = Vec::new();
    for (i, p) in tr.params.iter().enumerate() {
        let shape = p.param.shape();
        opt.push((format!("m.{}", p.name), Tensor::from_vec(tr.opt.m[i].clone(), &shape)?));
        opt.push((format!("v.{}", p.name), Tensor::from_vec(tr.opt.v[i].clone(), &shape)?));
    }
    let mut meta = step_meta(tr.step);
    meta.insert("adam_step".into(), tr.opt.step.to_string());
    safetensors::save(&dir.join(OPTIMIZER), &opt, &meta)?;
    let json = serde_json::to_string_pretty(state).expect("serialisable");
    write_atomic(&dir.join(STATE), json.as_bytes())
}

fn meta_step(path: &Path, meta: &BTreeMap<String, String>) -> Result<u64> {
    meta.get("step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::checkpoint(path, "no step in the file's metadata: not written by qkv train"))
}

/// A trained model from a run directory, ready for generation or evaluation.
pub fn load_model(dir: &Path) -> Result<(RunConfig, Gpt, Tokenizer)> {
    let config = read_config(dir)?;
    let tok = read_tokenizer(dir)?;
    let model = Gpt::new(config.model.clone(), 0)?;
    let path = dir.join(MODEL);
    if !path.exists() {
        return Err(not_a_run(dir, "no model.safetensors yet"));
    }
    let loaded = safetensors::load(&path)?;
    load_params(&path, &model.named_params(), &loaded.tensors, "")?;
    if tok.vocab_size() != model.config.vocab_size {
        return Err(Error::checkpoint(
            dir,
            format!("tokenizer has {} tokens but the model {}", tok.vocab_size(), model.config.vocab_size),
        ));
    }
    Ok((config, model, tok))
}

/// A GPT ready for generation or evaluation, from a qkv run directory or a
/// Hugging Face GPT-2 directory (`config.json` with `model_type: "gpt2"`,
/// `model.safetensors`, and its tokenizer files).
pub fn load_gpt(dir: &Path) -> Result<(Gpt, Tokenizer)> {
    let hf_config = std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .filter(crate::models::gpt2_hf::is_gpt2);
    if hf_config.is_none() {
        let (_, model, tok) = load_model(dir)?;
        return Ok((model, tok));
    }
    let model = crate::models::gpt2_hf::load(dir)?;
    let tok = Tokenizer::load(&dir.to_string_lossy()).map_err(|e| {
        Error::format(
            dir,
            format!("a GPT-2 directory needs its tokenizer (tokenizer.json, or vocab.json + merges.txt): {e}"),
        )
    })?;
    if tok.vocab_size() > model.config.vocab_size {
        return Err(Error::checkpoint(
            dir,
            format!("tokenizer has {} tokens but the model only {}", tok.vocab_size(), model.config.vocab_size),
        ));
    }
    Ok((model, tok))
}

/// Restore the trainer's weights, optimizer, step and RNG from `dir`.
pub fn restore(dir: &Path, tr: &mut Trainer) -> Result<TrainState> {
    let state_path = dir.join(STATE);
    let text = std::fs::read_to_string(&state_path).map_err(|_| not_a_run(dir, "no state.json: no checkpoint yet"))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::format(&state_path, e.to_string()))?;
    let mpath = dir.join(MODEL);
    let model = safetensors::load(&mpath)?;
    let opath = dir.join(OPTIMIZER);
    let opt = safetensors::load(&opath)?;
    for (p, meta) in [(&mpath, &model.metadata), (&opath, &opt.metadata)] {
        let s = meta_step(p, meta)?;
        if s != state.step {
            return Err(Error::checkpoint(
                p,
                format!("holds step {s} but state.json step {}: the last checkpoint was interrupted", state.step),
            ));
        }
    }
    load_params(&mpath, &tr.params, &model.tensors, "")?;
    for (i, p) in tr.params.iter().enumerate() {
        for (key, dst) in [("m", &mut tr.opt.m[i]), ("v", &mut tr.opt.v[i])] {
            let name = format!("{key}.{}", p.name);
            let t =
                opt.tensors.get(&name).ok_or_else(|| Error::checkpoint(&opath, format!("missing tensor {name:?}")))?;
            if t.numel() != dst.len() {
                return Err(Error::checkpoint(
                    &opath,
                    format!("tensor {name:?} has {} values, expected {}", t.numel(), dst.len()),
                ));
            }
            *dst = t.to_vec();
        }
    }
    tr.opt.step = opt
        .metadata
        .get("adam_step")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::checkpoint(&opath, "no adam_step in the metadata"))?;
    tr.step = state.step;
    tr.rng = Rng::from_state(state.rng);
    Ok(state)
}

pub fn append_metric(dir: &Path, m: &Metric) -> Result<()> {
    use std::io::Write;
    let p = dir.join(METRICS);
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&p).map_err(|e| Error::io(&p, e))?;
    writeln!(f, "{}", serde_json::to_string(m).expect("serialisable")).map_err(|e| Error::io(&p, e))
}

pub fn read_metrics(dir: &Path) -> Result<Vec<Metric>> {
    let p = dir.join(METRICS);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(&p, e)),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| Error::format(&p, format!("line {}: {e}", i + 1))))
        .collect()
}

/// Drop metric lines after `step` (written after the checkpoint a resume starts from).
pub fn truncate_metrics(dir: &Path, step: u64) -> Result<()> {
    let kept: Vec<Metric> = read_metrics(dir)?.into_iter().filter(|m| m.step <= step).collect();
    let mut text = String::new();
    for m in &kept {
        text.push_str(&serde_json::to_string(m).expect("serialisable"));
        text.push('\n');
    }
    write_atomic(&dir.join(METRICS), text.as_bytes())
}
