//! Hugging Face model directories: `config.json` (which architecture, what
//! sizes), `model.safetensors` (or shards listed in
//! `model.safetensors.index.json`), and tokenizer files.
//!
//! qkv's encoder runs are written in this layout, so `transformers` can load
//! them (`from_pretrained(dir)`), and qkv loads such directories back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use qkv_tensor::Tensor;

use crate::error::{Error, Result};
use crate::io::safetensors;
use crate::nn::NamedParam;

pub const CONFIG: &str = "config.json";
pub const WEIGHTS: &str = "model.safetensors";
pub const WEIGHTS_INDEX: &str = "model.safetensors.index.json";

/// `config.json` of a model directory.
pub fn read_config(dir: &Path) -> Result<Value> {
    let p = dir.join(CONFIG);
    if !dir.is_dir() {
        return Err(Error::format(dir, "not a directory; give a model directory (config.json + model.safetensors)"));
    }
    let text = std::fs::read_to_string(&p)
        .map_err(|_| Error::format(dir, "no config.json: not a model directory (train one with `qkv train`, or give a Hugging Face model directory)"))?;
    serde_json::from_str(&text).map_err(|e| Error::format(&p, format!("not valid JSON: {e}")))
}

/// The architecture a config declares (`architectures[0]`, else from `model_type`).
pub fn architecture(config: &Value) -> Option<String> {
    if let Some(a) = config.get("architectures").and_then(|a| a.get(0)).and_then(|a| a.as_str()) {
        return Some(a.to_string());
    }
    match config.get("model_type").and_then(|m| m.as_str())? {
        "bert" => Some("BertModel".into()),
        "vit" => Some("ViTModel".into()),
        "gpt2" => Some("GPT2LMHeadModel".into()),
        _ => None,
    }
}

/// The directory's weights files: `model.safetensors`, or the shards its
/// index lists.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join(WEIGHTS);
    if single.exists() {
        return Ok(vec![single]);
    }
    let index = dir.join(WEIGHTS_INDEX);
    if index.exists() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| Error::format(&index, format!("not valid JSON: {e}")))?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::format(&index, "no \"weight_map\" object"))?;
        let mut files: Vec<&str> = map.values().filter_map(|f| f.as_str()).collect();
        files.sort();
        files.dedup();
        if let Some(f) = files.iter().find(|f| f.contains('/') || f.contains("..")) {
            return Err(Error::format(&index, format!("shard name {f:?} leaves the directory")));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    Err(Error::format(dir, "no model.safetensors (nor model.safetensors.index.json)"))
}

/// Every tensor of the directory's weights, from one file or from the shards
/// its index lists.
pub fn read_weights(dir: &Path) -> Result<BTreeMap<String, Tensor>> {
    let mut all = BTreeMap::new();
    for f in weight_files(dir)? {
        all.extend(safetensors::load(&f)?.tensors);
    }
    Ok(all)
}

/// Refuse, before the model is allocated, a config.json that describes more
/// parameters than the directory's weights files can hold. A model is built
/// from its config first and its weights copied in after, so a config edited
/// to ask for billions of parameters beside a small file would otherwise
/// allocate them all. A stored parameter takes at least 2 bytes (F16, BF16)
/// and `count` — the config's estimate, checked arithmetic — is at most
/// twice the real count, so an estimate above the files' bytes cannot belong
/// to them. Counts above `MAX_PARAMS`, or that overflow (`None`), are left
/// to the config's own validation, which refuses them with the limit.
pub fn weights_can_hold(dir: &Path, count: Option<usize>) -> Result<()> {
    let files = weight_files(dir)?;
    let mut bytes = 0u64;
    for f in &files {
        bytes += std::fs::metadata(f).map_err(|e| Error::io(f, e))?.len();
    }
    match count {
        Some(n) if n <= crate::models::MAX_PARAMS && n as u64 > bytes => Err(Error::checkpoint(
            dir.join(CONFIG),
            format!(
                "describes a model of about {n} parameters, but its weights ({bytes} bytes in {}) cannot hold \
                 them: config.json and the weights are not of the same model",
                files.iter().filter_map(|f| f.file_name()).map(|f| f.to_string_lossy()).collect::<Vec<_>>().join(", ")
            ),
        )),
        _ => Ok(()),
    }
}

/// Set every parameter from `tensors[prefix + name]`. A missing tensor or a
/// wrong shape is an error naming it; returns the names in `tensors` that
/// were not used (the caller decides whether they matter).
pub fn assign(
    path: &Path,
    params: &[NamedParam],
    tensors: &BTreeMap<String, Tensor>,
    prefix: &str,
) -> Result<Vec<String>> {
    let mut used = std::collections::HashSet::new();
    for p in params {
        let key = format!("{prefix}{}", p.name);
        let t = tensors.get(&key).ok_or_else(|| {
            Error::checkpoint(path, format!("missing tensor {key:?} (expected shape {:?})", p.param.shape()))
        })?;
        if t.shape() != p.param.shape().as_slice() {
            return Err(Error::checkpoint(
                path,
                format!("tensor {key:?} has shape {:?}, expected {:?}", t.shape(), p.param.shape()),
            ));
        }
        // a weight that is NaN or infinite would only show as NaN logits later: say which
        if let Some((i, v)) = t.data().iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(Error::checkpoint(
                path,
                format!("tensor {key:?} holds {v} (element {i}): weights must be finite"),
            ));
        }
        p.param.set_value(t)?;
        used.insert(key);
    }
    Ok(tensors.keys().filter(|k| !used.contains(*k)).cloned().collect())
}

/// Write the parameters under their names, as `model.safetensors` with the
/// metadata `transformers` expects.
pub fn write_weights(dir: &Path, params: &[NamedParam]) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = params.iter().map(|p| (p.name.clone(), p.param.value())).collect();
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::save(&dir.join(WEIGHTS), &tensors, &meta)
}

pub fn write_config(dir: &Path, config: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(config).expect("serialisable");
    crate::io::atomic::write_atomic(&dir.join(CONFIG), text.as_bytes())
}
