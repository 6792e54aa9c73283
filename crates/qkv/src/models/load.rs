//! Opening a model directory — a run `qkv train` wrote, or a Hugging Face
//! directory — as the model its `config.json` declares. Every command that
//! takes `--model DIR` comes through [`open`], so they all accept the same
//! directories and say the same thing about the ones they cannot use.
//!
//! | `config.json` declares | opens as |
//! |---|---|
//! | `model_type: "qkv-gpt"` (a `qkv train` GPT run) | [`Model::Gpt`] |
//! | `GPT2LMHeadModel`, `GPT2Model`, `model_type: "gpt2"` | [`Model::Gpt`] (Hugging Face GPT-2) |
//! | `BertForMaskedLM` | [`Model::MaskedLm`] |
//! | `BertForSequenceClassification` | [`Model::TextClassifier`] |
//! | `ViTForImageClassification` | [`Model::ImageClassifier`] |
//! | `BertModel` (e.g. sentence-transformers) | [`Model::Encoder`] |
//! | `MarianMTModel` (and qkv's seq2seq runs), `T5ForConditionalGeneration` | [`Model::Translator`] |

use std::path::Path;

use serde_json::{Value, json};

use crate::data::classify::SplitInfo;
use crate::error::{Error, Result};
use crate::io::hf;
use crate::models::bert::{BertClassifier, BertConfig, BertForMaskedLm, Pooling};
use crate::models::gpt::{Gpt, GptConfig};
use crate::models::inference::InferenceWeights;
use crate::models::mamba::{Mamba, MambaConfig};
use crate::models::recurrent::{RecurrentConfig, RecurrentLm};
use crate::models::sentence::SentenceEncoder;
use crate::models::seq2seq::{Seq2Seq, Seq2SeqConfig};
use crate::models::t5::T5;
use crate::models::vit::{Vit, VitConfig};
use crate::nn::{Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::translate::EncoderDecoder;

/// The `model_type` of the `config.json` of a GPT trained by qkv.
pub const QKV_GPT: &str = "qkv-gpt";
/// `model_type` of a recurrent language model trained by qkv.
pub const QKV_RECURRENT: &str = "qkv-recurrent";

/// Settings qkv keeps in an encoder's `config.json` under `"qkv"` (ignored by `transformers`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct QkvExtras {
    pub pooling: Pooling,
    /// Longest input in tokens, `[CLS]` and `[SEP]` included; longer texts are cut.
    pub max_len: usize,
    /// How the labelled data was split, so `qkv eval` scores the same test rows.
    pub split: Option<SplitInfo>,
}

impl Default for QkvExtras {
    fn default() -> Self {
        QkvExtras { pooling: Pooling::Cls, max_len: 128, split: None }
    }
}

/// What qkv keeps in a translation model's `config.json` under `"qkv"`: how
/// its pairs were cut and split, so `qkv eval` scores the same held-out pairs.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TranslationExtras {
    /// Source and target were cut to this many tokens (`</s>` included).
    pub max_len: usize,
    pub columns: crate::data::parallel::Columns,
    pub split: crate::data::parallel::PairSplit,
    /// The training data (`None`: the bundled Bible).
    pub data: Option<std::path::PathBuf>,
}

/// A model ready to run, as its directory declares it.
pub enum Model {
    /// A GPT: a qkv run (`hugging_face: false`) or a Hugging Face GPT-2.
    Gpt {
        model: Gpt,
        tokenizer: Tokenizer,
        hugging_face: bool,
    },
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
    /// A BERT encoder without a task head, with its pooling: sentence embeddings.
    Encoder(SentenceEncoder),
    /// A recurrent language model (RNN, LSTM or GRU) trained by qkv.
    Recurrent {
        model: RecurrentLm,
        tokenizer: Tokenizer,
    },
    /// A Mamba language model (`MambaForCausalLM`); `None` when the directory has no tokenizer files.
    Mamba {
        model: Mamba,
        tokenizer: Option<Tokenizer>,
        /// Tokens per window that `qkv eval` scores: a qkv run's training
        /// window, else 128 (Mamba itself has no context limit).
        window: usize,
    },
    /// An encoder–decoder that translates (`MarianMTModel`, a qkv seq2seq run,
    /// or `T5ForConditionalGeneration`).
    Translator {
        model: Box<dyn EncoderDecoder>,
        tokenizer: Option<Tokenizer>,
        extras: Option<TranslationExtras>,
    },
}

impl Model {
    /// What this is, for messages ("a masked-language model (BertForMaskedLM)").
    pub fn describe(&self) -> &'static str {
        match self {
            Model::Gpt { hugging_face: false, .. } => "a GPT trained by qkv",
            Model::Gpt { hugging_face: true, .. } => "a GPT-2 (GPT2LMHeadModel)",
            Model::Recurrent { .. } => "a recurrent language model trained by qkv",
            Model::Mamba { .. } => "a Mamba language model (MambaForCausalLM)",
            Model::MaskedLm { .. } => "a masked-language model (BertForMaskedLM)",
            Model::TextClassifier { .. } => "a text classifier (BertForSequenceClassification)",
            Model::ImageClassifier { .. } => "an image classifier (ViTForImageClassification)",
            Model::Encoder(_) => "a BERT encoder without a task head (BertModel)",
            Model::Translator { model, .. } => model.describe(),
        }
    }
}

/// The `config.json` of a GPT trained by qkv: its configuration, marked as qkv's.
pub fn gpt_config_json(config: &GptConfig) -> Value {
    let mut v = serde_json::to_value(config).expect("a GPT config serialises");
    v["model_type"] = json!(QKV_GPT);
    v
}

/// The `config.json` of a recurrent language model trained by qkv.
pub fn recurrent_config_json(config: &RecurrentConfig) -> Value {
    let mut v = serde_json::to_value(config).expect("a recurrent config serialises");
    v["model_type"] = json!(QKV_RECURRENT);
    v
}

/// The `config.json` of a Mamba trained by qkv: `transformers`' own
/// (`MambaForCausalLM`), with the training window under `"qkv"`.
pub fn mamba_config_json(config: &MambaConfig, block_size: usize) -> Value {
    let mut v = serde_json::to_value(config).expect("a Mamba config serialises");
    v["architectures"] = json!(["MambaForCausalLM"]);
    v["model_type"] = json!("mamba");
    v["qkv"] = json!({ "max_len": block_size });
    v
}

/// A Hugging Face BERT `config.json` for `architecture`, with qkv's extras
/// and, for classifiers, the label maps.
pub fn bert_config_json(
    config: &BertConfig,
    architecture: &str,
    extras: &QkvExtras,
    labels: Option<&[String]>,
) -> Value {
    let mut v = serde_json::to_value(config).expect("a BERT config serialises");
    v["architectures"] = json!([architecture]);
    v["model_type"] = json!("bert");
    v["qkv"] = serde_json::to_value(extras).expect("extras serialise");
    if let Some(labels) = labels {
        let (id2label, label2id) = label_maps(labels);
        v["id2label"] = id2label;
        v["label2id"] = label2id;
    }
    v
}

/// A Hugging Face Marian `config.json` for an encoder–decoder, with qkv's extras.
pub fn seq2seq_config_json(config: &Seq2SeqConfig, extras: &TranslationExtras) -> Value {
    let mut v = serde_json::to_value(config).expect("a seq2seq config serialises");
    v["architectures"] = json!(["MarianMTModel"]);
    v["model_type"] = json!("marian");
    v["decoder_vocab_size"] = json!(config.vocab_size);
    v["share_encoder_decoder_embeddings"] = json!(true);
    v["tie_word_embeddings"] = json!(true);
    v["qkv"] = serde_json::to_value(extras).expect("extras serialise");
    v
}

/// A Hugging Face ViT `config.json` (its `id2label` holds the classes).
pub fn vit_config_json(config: &VitConfig) -> Result<Value> {
    let mut v = serde_json::to_value(config).expect("a ViT config serialises");
    v["architectures"] = json!(["ViTForImageClassification"]);
    v["model_type"] = json!("vit");
    v["label2id"] = label_maps(&config.labels()?).1;
    Ok(v)
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

/// A qkv run's model configuration: its `config.json` without the `model_type`.
fn qkv_config<C: serde::de::DeserializeOwned>(dir: &Path, mut config: Value, what: &str) -> Result<C> {
    if let Some(obj) = config.as_object_mut() {
        obj.remove("model_type");
    }
    serde_json::from_value(config)
        .map_err(|e| Error::format(dir.join(hf::CONFIG), format!("not a qkv {what} configuration: {e}")))
}

/// A qkv run's weights, read into `params`, and its tokenizer, which must
/// have the model's `vocab` tokens.
fn qkv_weights_and_tokenizer(dir: &Path, params: &[NamedParam], vocab: usize) -> Result<Tokenizer> {
    let weights = dir.join(hf::WEIGHTS);
    let tensors = crate::io::safetensors::load(&weights)?.tensors;
    crate::train::checkpoint::load_params(&weights, params, &tensors)?;
    let tokenizer = Tokenizer::from_file(&dir.join(crate::train::checkpoint::TOKENIZER))?;
    if tokenizer.vocab_size() != vocab {
        return Err(Error::checkpoint(
            dir,
            format!("the tokenizer has {} tokens but the model {vocab}", tokenizer.vocab_size()),
        ));
    }
    Ok(tokenizer)
}

/// Before a qkv run's model is built: its weights are there, and can hold
/// the `count` parameters its config describes ([`hf::weights_can_hold`]).
fn qkv_weights_hold(dir: &Path, count: Option<usize>) -> Result<()> {
    if !dir.join(hf::WEIGHTS).exists() {
        return Err(Error::checkpoint(dir, "no model.safetensors yet (the run has not reached its first checkpoint)"));
    }
    hf::weights_can_hold(dir, count)
}

/// A qkv GPT run: its configuration, weights and tokenizer.
fn open_qkv_gpt(dir: &Path, config: Value) -> Result<Model> {
    let config: GptConfig = qkv_config(dir, config, "GPT")?;
    qkv_weights_hold(dir, config.checked_params())?;
    let model = Gpt::new(config, 0)?;
    let tokenizer = qkv_weights_and_tokenizer(dir, &model.named_params(), model.config.vocab_size)?;
    Ok(Model::Gpt { model, tokenizer, hugging_face: false })
}

/// A qkv recurrent run: its configuration, weights and tokenizer.
fn open_qkv_recurrent(dir: &Path, config: Value) -> Result<Model> {
    let config: RecurrentConfig = qkv_config(dir, config, "recurrent")?;
    qkv_weights_hold(dir, config.num_params())?;
    let model = RecurrentLm::new(config, 0)?;
    let tokenizer = qkv_weights_and_tokenizer(dir, &model.named_params(), model.config.vocab_size)?;
    Ok(Model::Recurrent { model, tokenizer })
}

/// A Hugging Face GPT-2 directory with its tokenizer.
fn open_gpt2(dir: &Path) -> Result<Model> {
    let model = crate::models::gpt2_hf::load(dir)?;
    let tokenizer = Tokenizer::load(&dir.to_string_lossy()).map_err(|e| {
        Error::format(
            dir,
            format!("a GPT-2 directory needs its tokenizer (tokenizer.json, or vocab.json + merges.txt): {e}"),
        )
    })?;
    if tokenizer.vocab_size() > model.config.vocab_size {
        return Err(Error::checkpoint(
            dir,
            format!(
                "the tokenizer has {} tokens but the model only {}",
                tokenizer.vocab_size(),
                model.config.vocab_size
            ),
        ));
    }
    Ok(Model::Gpt { model, tokenizer, hugging_face: true })
}

/// Open `dir` as the model its `config.json` declares.
pub fn open(dir: &Path) -> Result<Model> {
    let config = hf::read_config(dir)?;
    let cfg_path = dir.join(hf::CONFIG);
    if config.get("model_type").and_then(|m| m.as_str()) == Some(QKV_GPT) {
        return open_qkv_gpt(dir, config);
    }
    if config.get("model_type").and_then(|m| m.as_str()) == Some(QKV_RECURRENT) {
        return open_qkv_recurrent(dir, config);
    }
    // GPT runs written before run.json existed kept their model under "model"
    if config.get("kind").and_then(|k| k.as_str()) == Some("gpt")
        && let Some(model) = config.get("model")
    {
        return open_qkv_gpt(dir, model.clone());
    }
    if crate::models::gpt2_hf::is_gpt2(&config) {
        return open_gpt2(dir);
    }
    let arch = hf::architecture(&config).ok_or_else(|| {
        Error::format(&cfg_path, "no \"architectures\" or \"model_type\": cannot tell what model this is")
    })?;
    let extras: QkvExtras = config
        .get("qkv")
        .filter(|_| !arch.starts_with("Marian"))
        .map(|v| serde_json::from_value(v.clone()))
        .transpose()
        .map_err(|e| Error::format(&cfg_path, format!("bad \"qkv\" section: {e}")))?
        .unwrap_or_default();
    // weights without tokenizer files still load (for the numbers); commands that read text say what is missing
    let tokenizer = || Tokenizer::load(&dir.to_string_lossy()).ok();
    // a tokenizer with more tokens than the model has rows would hand it ids it cannot embed
    let fits = |tok: Option<Tokenizer>, vocab: usize| -> Result<Option<Tokenizer>> {
        match tok {
            Some(t) if t.vocab_size() > vocab => Err(Error::checkpoint(
                dir,
                format!("the tokenizer has {} tokens but the model only {vocab}", t.vocab_size()),
            )),
            t => Ok(t),
        }
    };
    let bert_config = || -> Result<BertConfig> {
        serde_json::from_value(config.clone()).map_err(|e| Error::format(&cfg_path, e.to_string()))
    };
    match arch.as_str() {
        "BertForMaskedLM" => {
            let cfg = bert_config()?;
            hf::weights_can_hold(dir, cfg.checked_params())?;
            let model = BertForMaskedLm::new(cfg, 0)?;
            load_bert_weights(dir, &model.named_params())?;
            let tokenizer = fits(tokenizer(), model.bert.config.vocab_size)?;
            Ok(Model::MaskedLm { model, tokenizer, extras })
        }
        "BertForSequenceClassification" => {
            let labels = labels_of(&config)?;
            let cfg = bert_config()?;
            hf::weights_can_hold(dir, cfg.checked_params())?;
            let model = BertClassifier::new(cfg, labels.len(), extras.pooling, 0)?;
            load_bert_weights(dir, &model.named_params())?;
            let tokenizer = fits(tokenizer(), model.bert.config.vocab_size)?;
            Ok(Model::TextClassifier { model, tokenizer, labels, extras })
        }
        "ViTForImageClassification" => {
            let cfg: VitConfig =
                serde_json::from_value(config.clone()).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
            let labels = cfg.labels()?;
            hf::weights_can_hold(dir, cfg.checked_params())?;
            let model = Vit::new(cfg, 0)?;
            let tensors = crate::models::vit::legacy_names(hf::read_weights(dir)?);
            hf::assign(&dir.join(hf::WEIGHTS), &model.named_params(), &tensors, "")?;
            Ok(Model::ImageClassifier { model, labels })
        }
        "BertModel" => Ok(Model::Encoder(SentenceEncoder::open(dir)?)),
        "MarianMTModel" => {
            let extras = config
                .get("qkv")
                .map(|v| serde_json::from_value(v.clone()))
                .transpose()
                .map_err(|e| Error::format(&cfg_path, format!("bad \"qkv\" section: {e}")))?;
            // opened to translate, never to train: weights packed for the decoder's many small products
            let model = Seq2Seq::load(dir)?.prepared_for_inference(InferenceWeights::PACKED)?;
            Ok(Model::Translator { model: Box::new(model), tokenizer: tokenizer(), extras })
        }
        "T5ForConditionalGeneration" => {
            Ok(Model::Translator { model: Box::new(T5::load(dir)?), tokenizer: tokenizer(), extras: None })
        }
        "MambaForCausalLM" => {
            Ok(Model::Mamba { model: Mamba::load(dir)?, tokenizer: tokenizer(), window: extras.max_len.max(1) })
        }
        other => Err(Error::Config(format!(
            "{}: architecture {other:?} is not one qkv runs (GPT2LMHeadModel, BertForMaskedLM, \
             BertForSequenceClassification, BertModel, ViTForImageClassification, MarianMTModel, T5ForConditionalGeneration, MambaForCausalLM, or a qkv run)",
            dir.display()
        ))),
    }
}

/// A translation model opened to translate text: the model, its tokenizer,
/// and the longest source it reads (its run's `max_len`, else the model's).
pub struct OpenTranslator {
    pub model: Box<dyn EncoderDecoder>,
    pub tokenizer: Tokenizer,
    pub max_len: usize,
}

/// Open `dir` as a translation model with a tokenizer; anything else is
/// refused, saying what it is and `need`.
pub fn open_translator(dir: &Path, need: &str) -> Result<OpenTranslator> {
    match open(dir)? {
        Model::Translator { model, tokenizer, extras } => {
            let max_len = extras.map_or(model.default_max_len(), |e| e.max_len);
            Ok(OpenTranslator { model, tokenizer: need_tokenizer(tokenizer, dir)?, max_len })
        }
        other => Err(wrong_kind(dir, &other, need)),
    }
}

/// An error that says `dir` holds `found`, not what the command needs.
pub fn wrong_kind(dir: &Path, found: &Model, need: &str) -> Error {
    Error::Config(format!("{}: {} is not {need}", dir.display(), found.describe()))
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
