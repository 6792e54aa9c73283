//! Sentence embeddings, as sentence-transformers computes them: run a BERT
//! encoder over the sentence, pool its token vectors into one vector, and
//! (when the model asks for it) scale that vector to length 1, so the dot
//! product of two embeddings is their cosine similarity.
//!
//! A sentence-transformers directory says how to pool in `modules.json`
//! (the pipeline: `Transformer` → `Pooling` → maybe `Normalize`) and
//! `1_Pooling/config.json` (`pooling_mode_mean_tokens`, …); a plain BERT
//! directory without them is mean-pooled and not normalised.

use std::path::Path;

use serde_json::Value;

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::data::bert_input::{Specials, pad_batch, wrap};
use crate::error::{Error, Result};
use crate::io::hf;
use crate::models::bert::{Batch, Bert, BertConfig};
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::Tokenizer;

/// How token vectors become one sentence vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SentencePooling {
    /// Mean over the real (unpadded) tokens.
    Mean,
    /// The `[CLS]` token's vector, as it leaves the last layer.
    Cls,
    /// Element-wise maximum over the real tokens.
    Max,
}

pub struct SentenceEncoder {
    pub bert: Bert,
    pub tokenizer: Tokenizer,
    pub pooling: SentencePooling,
    /// Scale each embedding to unit length.
    pub normalize: bool,
    /// Longest input in tokens (`[CLS]` and `[SEP]` included); longer sentences are cut.
    pub max_len: usize,
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            serde_json::from_str(&text).map(Some).map_err(|e| Error::format(path, format!("not valid JSON: {e}")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Pooling and normalisation from a sentence-transformers directory's files;
/// mean pooling without normalisation when they are absent.
pub fn pooling_of(dir: &Path) -> Result<(SentencePooling, bool)> {
    let modules = read_json(&dir.join("modules.json"))?;
    let list = modules.as_ref().and_then(|m| m.as_array()).cloned().unwrap_or_default();
    let kind = |m: &Value| m.get("type").and_then(|t| t.as_str()).unwrap_or("").to_string();
    let normalize = list.iter().any(|m| kind(m).ends_with(".Normalize"));
    let pool_dir = list
        .iter()
        .find(|m| kind(m).ends_with(".Pooling"))
        .and_then(|m| m.get("path").and_then(|p| p.as_str()))
        .unwrap_or("1_Pooling");
    if pool_dir.contains("..") {
        return Err(Error::format(dir.join("modules.json"), format!("pooling path {pool_dir:?} leaves the directory")));
    }
    let path = dir.join(pool_dir).join("config.json");
    let Some(cfg) = read_json(&path)? else {
        return Ok((SentencePooling::Mean, normalize));
    };
    let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    let modes: Vec<SentencePooling> = [
        ("pooling_mode_mean_tokens", SentencePooling::Mean),
        ("pooling_mode_cls_token", SentencePooling::Cls),
        ("pooling_mode_max_tokens", SentencePooling::Max),
    ]
    .into_iter()
    .filter(|(k, _)| on(k))
    .map(|(_, m)| m)
    .collect();
    for unsupported in
        ["pooling_mode_mean_sqrt_len_tokens", "pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken"]
    {
        if on(unsupported) {
            return Err(Error::format(&path, format!("{unsupported} is not supported (mean, cls or max)")));
        }
    }
    match modes.as_slice() {
        [one] => Ok((*one, normalize)),
        [] => Err(Error::format(&path, "no pooling mode is switched on")),
        _ => Err(Error::format(&path, "several pooling modes at once (concatenated) are not supported")),
    }
}

impl SentenceEncoder {
    /// Open a BERT directory (`BertModel`, or the encoder of a
    /// `BertForMaskedLM`/`BertForSequenceClassification`) with its tokenizer.
    pub fn open(dir: &Path) -> Result<SentenceEncoder> {
        let config = hf::read_config(dir)?;
        let arch = hf::architecture(&config).unwrap_or_default();
        if !arch.starts_with("Bert") {
            return Err(Error::Config(format!(
                "{}: architecture {arch:?} is not a BERT encoder; sentence embeddings need BertModel \
                 (or a BERT masked-LM/classifier)",
                dir.display()
            )));
        }
        let cfg: BertConfig =
            serde_json::from_value(config.clone()).map_err(|e| Error::format(dir.join(hf::CONFIG), e.to_string()))?;
        hf::weights_can_hold(dir, cfg.checked_params())?;
        let tensors = hf::read_weights(dir)?;
        // task models store the encoder under "bert."; a bare BertModel has no prefix
        let prefix = if tensors.keys().any(|k| k.starts_with("bert.")) { "bert." } else { "" };
        let has_pooler = tensors.contains_key(&format!("{prefix}pooler.dense.weight"));
        let bert = Bert::new(cfg, has_pooler, &mut Rng::new(0))?;
        let params: Vec<NamedParam> = bert.named_params();
        hf::assign(&dir.join(hf::WEIGHTS), &params, &tensors, prefix)?;
        let tokenizer = Tokenizer::load(&dir.to_string_lossy()).map_err(|e| {
            Error::format(dir, format!("no usable tokenizer beside the model (tokenizer.json or vocab.txt): {e}"))
        })?;
        let (pooling, normalize) = pooling_of(dir)?;
        // sentence-transformers cuts at max_seq_length (sentence_bert_config.json)
        let st = read_json(&dir.join("sentence_bert_config.json"))?;
        let max_len = st
            .and_then(|v| v.get("max_seq_length").and_then(|m| m.as_u64()))
            .map_or(bert.config.max_position_embeddings, |m| m as usize)
            .min(bert.config.max_position_embeddings);
        Ok(SentenceEncoder { bert, tokenizer, pooling, normalize, max_len })
    }

    /// One embedding per sentence, computed as one padded batch.
    ///
    /// # Shapes
    /// `B` sentences → `[B, C]`
    pub fn embed(&self, sentences: &[&str]) -> Result<Tensor> {
        if sentences.is_empty() {
            return Err(Error::Data("no sentences to embed".into()));
        }
        // `[CLS] tokens [SEP]`, cut to max_len, padded to the longest: as the classifiers batch text
        let sp = Specials::of(&self.tokenizer)?;
        let seqs: Vec<Vec<u32>> =
            sentences.iter().map(|s| Ok(wrap(&self.tokenizer.encode(s)?, self.max_len, &sp))).collect::<Result<_>>()?;
        let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
        let (ids, mask, t) = pad_batch(&refs, sp.pad);
        let b = seqs.len();
        let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b, t };
        no_grad(|| {
            let h = self.bert.forward(&batch, &Dropout::default())?; // [B, T, C]
            let pooled = match self.pooling {
                SentencePooling::Mean => Bert::pool_mean(&h, &mask)?,
                SentencePooling::Cls => {
                    let c = h.dims3()?.2;
                    h.narrow(1, 0, 1)?.reshape(&[b, c])?
                }
                SentencePooling::Max => max_pool(&h, &mask)?,
            };
            if self.normalize { l2_normalize(&pooled) } else { Ok(pooled) }
        })
    }
}

/// Element-wise maximum over the real tokens.
///
/// # Shapes
/// h `[B, T, C]`, mask `[B, T]` → `[B, C]`
fn max_pool(h: &Tensor, mask: &[bool]) -> Result<Tensor> {
    let (b, t, c) = h.dims3()?;
    let v = h.to_vec();
    let mut out = vec![f32::NEG_INFINITY; b * c];
    for i in 0..b {
        for j in (0..t).filter(|&j| mask[i * t + j]) {
            for k in 0..c {
                out[i * c + k] = out[i * c + k].max(v[(i * t + j) * c + k]);
            }
        }
    }
    Ok(Tensor::from_vec(out, &[b, c])?)
}

/// Each row divided by its length (rows of zeros stay zero).
///
/// # Shapes
/// `[B, C]` → `[B, C]`
fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let (b, c) = x.dims2()?;
    let mut v = x.to_vec();
    for row in v.chunks_mut(c) {
        // sentence-transformers divides by max(‖x‖, 1e-12)
        let n = row.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
        row.iter_mut().for_each(|a| *a /= n);
    }
    Ok(Tensor::from_vec(v, &[b, c])?)
}

/// Cosine similarity of two vectors.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}
