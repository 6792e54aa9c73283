//! Open an encoder directory — one that `qkv train --model bert|vit` wrote, or
//! a Hugging Face one — as the model its `config.json` declares.

use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::io::hf;
use crate::models::bert::{BertClassifier, BertConfig, BertForMaskedLm, Pooling};
use crate::models::vit::{Vit, VitConfig};
use crate::nn::{Module, NamedParam};
use crate::tokenize::Tokenizer;

/// Settings qkv keeps in `config.json` under `"qkv"` (ignored by `transformers`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QkvExtras {
    pub pooling: Pooling,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are cut.
    pub max_len: usize,
    /// How a classifier's labelled data was split, so `qkv eval` scores the same test rows.
    pub split: Option<SplitInfo>,
}

/// The deterministic split of labelled data: de-duplicate, shuffle with `seed`,
/// hold out the last `test_fraction`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SplitInfo {
    pub seed: u64,
    pub test_fraction: f64,
    pub text_column: String,
    pub label_column: String,
}

impl Default for QkvExtras {
    fn default() -> Self {
        QkvExtras { pooling: Pooling::Cls, max_len: 128, split: None }
    }
}

pub enum Encoder {
    MaskedLm {
        model: BertForMaskedLm,
        /// `None` when the directory has no tokenizer files.
        tokenizer: Option<Tokenizer>,
        extras: QkvExtras,
    },
    TextClassifier {
        model: BertClassifier,
        tokenizer: Option<Tokenizer>,
        labels: Vec<String>,
        extras: QkvExtras,
    },
    ImageClassifier {
        model: Vit,
        labels: Vec<String>,
    },
}

/// Class names of a config's `id2label`, in id order.
pub fn labels_of(config: &Value) -> Result<Vec<String>> {
    let map = config
        .get("id2label")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::Config("the config has no id2label: not a classifier".into()))?;
    (0..map.len())
        .map(|i| {
            map.get(&i.to_string())
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| Error::Config(format!("id2label lacks id {i}")))
        })
        .collect()
}

/// `id2label` and `label2id` for a config.
pub fn label_maps(labels: &[String]) -> (Value, Value) {
    let id2label: serde_json::Map<String, Value> =
        labels.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    let label2id: serde_json::Map<String, Value> =
        labels.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    (Value::Object(id2label), Value::Object(label2id))
}

/// Load weights into `params`, accepting the names with or without the
/// task models' `bert.` prefix (a bare `BertModel` checkpoint has none).
fn load_bert_weights(dir: &Path, params: &[NamedParam]) -> Result<()> {
    let tensors = hf::read_weights(dir)?;
    let path = dir.join(hf::WEIGHTS);
    let has_prefix = tensors.keys().any(|k| k.starts_with("bert."));
    if has_prefix {
        hf::assign(&path, params, &tensors, "")?;
    } else {
        // bare encoder: our names carry "bert.", the file's do not
        let stripped: Vec<NamedParam> = params
            .iter()
            .map(|p| NamedParam { name: p.name.strip_prefix("bert.").unwrap_or(&p.name).to_string(), ..p.clone() })
            .collect();
        hf::assign(&path, &stripped, &tensors, "")?;
    }
    Ok(())
}

/// Open `dir` as the encoder its config names.
pub fn open(dir: &Path) -> Result<Encoder> {
    let config = hf::read_config(dir)?;
    let arch = hf::architecture(&config).ok_or_else(|| {
        Error::format(dir.join(hf::CONFIG), "no \"architectures\" or \"model_type\": cannot tell what model this is")
    })?;
    let extras: QkvExtras = config
        .get("qkv")
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| Error::format(dir.join(hf::CONFIG), format!("bad \"qkv\" section: {e}")))?
        .unwrap_or_default();
    // weights without tokenizer files still load (for the numbers); commands that read text say what is missing
    let tokenizer = || Ok::<_, Error>(Tokenizer::load(&dir.to_string_lossy()).ok());
    match arch.as_str() {
        "BertForMaskedLM" => {
            let cfg: BertConfig = serde_json::from_value(config.clone())
                .map_err(|e| Error::format(dir.join(hf::CONFIG), e.to_string()))?;
            let model = BertForMaskedLm::new(cfg, 0)?;
            load_bert_weights(dir, &model.named_params())?;
            Ok(Encoder::MaskedLm { model, tokenizer: tokenizer()?, extras })
        }
        "BertForSequenceClassification" => {
            let labels = labels_of(&config)?;
            let cfg: BertConfig = serde_json::from_value(config.clone())
                .map_err(|e| Error::format(dir.join(hf::CONFIG), e.to_string()))?;
            let model = BertClassifier::new(cfg, labels.len(), extras.pooling, 0)?;
            load_bert_weights(dir, &model.named_params())?;
            Ok(Encoder::TextClassifier { model, tokenizer: tokenizer()?, labels, extras })
        }
        "ViTForImageClassification" => {
            let cfg: VitConfig = serde_json::from_value(config.clone())
                .map_err(|e| Error::format(dir.join(hf::CONFIG), e.to_string()))?;
            let labels = cfg.labels()?;
            let model = Vit::new(cfg, 0)?;
            let tensors = crate::models::vit::legacy_names(hf::read_weights(dir)?);
            hf::assign(&dir.join(hf::WEIGHTS), &model.named_params(), &tensors, "")?;
            Ok(Encoder::ImageClassifier { model, labels })
        }
        "BertModel" => Err(Error::Config(format!(
            "{}: a bare BertModel has no task head (masked-LM or classifier); use `qkv embed` for its \
             sentence embeddings, or fine-tune it with `qkv train --model bert --task classify --init-from`",
            dir.display()
        ))),
        other => Err(Error::Config(format!(
            "{}: architecture {other:?} is not an encoder qkv can run here (BertForMaskedLM, \
             BertForSequenceClassification, ViTForImageClassification)",
            dir.display()
        ))),
    }
}

/// The tokenizer of an encoder directory, or an error that says it is missing.
pub fn need_tokenizer(tok: Option<Tokenizer>, dir: &Path) -> Result<Tokenizer> {
    tok.ok_or_else(|| {
        Error::format(
            dir,
            "no tokenizer files (tokenizer.json or vocab.txt) beside the model; copy the tokenizer the model was trained with",
        )
    })
}
