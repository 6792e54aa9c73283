//! Text classification: BERT reads `[CLS] text [SEP]` and its pooled vector
//! goes through a linear layer to one score per class (cross-entropy
//! against the label). The encoder is trained from scratch or fine-tuned
//! from a pre-trained one (`init_from`). The data is a labelled table,
//! de-duplicated and split with a seed ([`crate::data::classify::held_out`]),
//! so the test rows are ones the model never saw — and `qkv eval` finds them again.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, no_grad};

use crate::data::bert_input::{Specials, encode, pad_batch};
use crate::data::classify::{SplitInfo, held_out, label_ids, label_names};
use crate::data::shuffle::Epochs;
use crate::error::{Error, Result};
use crate::metrics::{ClassificationReport, argmax_rows, classification_report, majority_baseline};
use crate::models::bert::{Batch, BertClassifier, BertConfig, Pooling};
use crate::models::load::{Model, QkvExtras, bert_config_json, need_tokenizer, open, wrong_kind};
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::train::TrainConfig;
use crate::train::masked_lm::{bert_tokenizer, file_fingerprint, small_bert};
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task};
use crate::train::task::{epochs_state, restore_epochs};

/// What a text-classification run trains, and on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TextClassificationSpec {
    /// The encoder trained from scratch (`vocab_size` from the tokenizer,
    /// `max_position_embeddings` from `max_len`); with `init_from`, the
    /// pre-trained encoder's, filled in when the run starts. Default [`small_bert`].
    pub model: BertConfig,
    /// Fine-tune this pre-trained encoder: an MLM run, a `BertForMaskedLM`,
    /// or a bare `BertModel` (e.g. sentence-transformers), with its tokenizer.
    pub init_from: Option<PathBuf>,
    /// How the sentence vector is made. Default [`Pooling::Cls`].
    pub pooling: Pooling,
    /// The labelled table (CSV, TSV or JSONL).
    pub data: Option<PathBuf>,
    /// Default "text".
    pub text_column: String,
    /// Default "label".
    pub label_column: String,
    /// Share of the de-duplicated rows held out for testing. Default 0.1.
    pub test_fraction: f64,
    /// Replace bytes that are not UTF-8 instead of refusing the file. Default false.
    pub lossy: bool,
    /// Texts longer than this many tokens (`[CLS]` and `[SEP]` included) are
    /// cut. Default 128 (the pre-trained encoder's own, up to 128).
    pub max_len: Option<usize>,
    /// The tokenizer for a model trained from scratch (a pre-trained one brings its own).
    pub tokenizer: Option<String>,
}

impl Default for TextClassificationSpec {
    fn default() -> Self {
        TextClassificationSpec {
            model: small_bert(),
            init_from: None,
            pooling: Pooling::Cls,
            data: None,
            text_column: "text".into(),
            label_column: "label".into(),
            test_fraction: 0.1,
            lossy: false,
            max_len: None,
            tokenizer: None,
        }
    }
}

/// `[CLS] … [SEP]` token ids and class id of each example.
pub type Examples = Vec<(Vec<u32>, u32)>;

/// A BERT classifier and its labelled examples.
pub struct TextClassifier {
    pub model: BertClassifier,
    pub specials: Specials,
    pub labels: Vec<String>,
    pub train: Examples,
    pub test: Examples,
    pub batch_size: usize,
    /// Shuffles each epoch.
    seed: u64,
    /// Where the run is in its passes over the training examples.
    epochs: Epochs,
    /// Draws dropout seeds.
    rng: Rng,
    /// Facts about the data for the report (rows, duplicates, where the model came from).
    pub about: Value,
}

impl TextClassifier {
    pub fn new(
        model: BertClassifier,
        specials: Specials,
        labels: Vec<String>,
        train: Examples,
        test: Examples,
        config: &TrainConfig,
    ) -> Result<Self> {
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data("need both training and test examples".into()));
        }
        if let Some((_, y)) = train.iter().chain(&test).find(|(_, y)| *y as usize >= labels.len()) {
            return Err(Error::Data(format!("class id {y} is outside the {} labels", labels.len())));
        }
        Ok(TextClassifier {
            model,
            specials,
            labels,
            train,
            test,
            batch_size: config.batch_size,
            seed: config.seed,
            epochs: Epochs::default(),
            rng: Rng::new(config.seed ^ 0x0C1A_55E5),
            about: json!({}),
        })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.batch_size)
    }

    /// Accuracy and macro-F1 on the test examples, and their mean loss.
    pub fn score(&self) -> Result<(ClassificationReport, f32)> {
        score(&self.model, &self.test, self.specials.pad, self.batch_size, self.labels.len())
    }
}

/// Accuracy, macro-F1 and mean cross-entropy of `model` on `examples`, in
/// batches, without gradients.
pub fn score(
    model: &BertClassifier,
    examples: &[(Vec<u32>, u32)],
    pad: u32,
    batch: usize,
    n_classes: usize,
) -> Result<(ClassificationReport, f32)> {
    let (mut predicted, mut loss) = (Vec::with_capacity(examples.len()), 0.0f64);
    no_grad(|| -> Result<()> {
        for chunk in examples.chunks(batch.max(1)) {
            let seqs: Vec<&[u32]> = chunk.iter().map(|(s, _)| s.as_slice()).collect();
            let ys: Vec<u32> = chunk.iter().map(|(_, y)| *y).collect();
            let (ids, mask, t) = pad_batch(&seqs, pad);
            let logits = model
                .forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: chunk.len(), t }, &Dropout::default())?;
            loss += qkv_tensor::cross_entropy(&logits, &ys, None)?.item()? as f64 * chunk.len() as f64;
            predicted.extend(argmax_rows(&logits)?);
        }
        Ok(())
    })?;
    let truth: Vec<u32> = examples.iter().map(|(_, y)| *y).collect();
    Ok((classification_report(&predicted, &truth, n_classes), (loss / examples.len().max(1) as f64) as f32))
}

impl Task for TextClassifier {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let idx = self.epochs.next_batch(self.train.len(), self.batch_size, self.seed);
        let seqs: Vec<&[u32]> = idx.iter().map(|&i| self.train[i].0.as_slice()).collect();
        let ys: Vec<u32> = idx.iter().map(|&i| self.train[i].1).collect();
        let (ids, mask, t) = pad_batch(&seqs, self.specials.pad);
        let drop = Dropout { p: self.model.bert.config.hidden_dropout_prob, seed: Some(self.rng.next_u64()) };
        let logits = self.model.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: idx.len(), t }, &drop)?;
        let value = qkv_tensor::cross_entropy(&logits, &ys, None)?;
        Ok(Some(Loss { value, tokens: seqs.iter().map(|s| s.len()).sum() }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let (r, loss) = self.score()?;
        Ok(Evaluation {
            loss,
            accuracy: Some(r.accuracy),
            summary: format!("test accuracy {:.3}, macro-F1 {:.3}", r.accuracy, r.macro_f1),
        })
    }

    fn state(&self) -> Value {
        epochs_state(&self.rng, &self.epochs)
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        (self.rng, self.epochs) = restore_epochs(state)?;
        Ok(())
    }

    fn report(&self) -> Result<Value> {
        let (r, loss) = self.score()?;
        let train_y: Vec<u32> = self.train.iter().map(|(_, y)| *y).collect();
        let test_y: Vec<u32> = self.test.iter().map(|(_, y)| *y).collect();
        let base = majority_baseline(&train_y, &test_y, self.labels.len());
        let mut report = json!({
            "task": "text-classification", "labels": self.labels, "train": train_y.len(), "test": test_y.len(),
            "accuracy": r.accuracy, "macro_f1": r.macro_f1, "per_class_f1": r.per_class_f1, "test_loss": loss,
            "majority_baseline": {"accuracy": base.accuracy, "macro_f1": base.macro_f1},
        });
        if let (Some(r), Some(about)) = (report.as_object_mut(), self.about.as_object()) {
            r.extend(about.clone());
        }
        Ok(report)
    }

    fn describe(&self) -> Vec<String> {
        let c = &self.model.bert.config;
        vec![format!(
            "BERT classifier {} layers × {} heads × {} wide, {:.2} M parameters, {} labels {:?}; {} training / {} test texts",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.hidden_size,
            self.model.num_params() as f64 / 1e6,
            self.labels.len(),
            self.labels,
            self.train.len(),
            self.test.len()
        )]
    }
}

/// `[CLS] text [SEP]` with its class id, for every text.
pub fn encode_examples(
    tok: &Tokenizer,
    texts: &[String],
    ys: &[u32],
    max_len: usize,
    sp: &Specials,
) -> Result<Examples> {
    texts.iter().zip(ys).map(|(t, &y)| Ok((encode(tok, t, max_len, sp)?, y))).collect()
}

/// A pre-trained encoder for fine-tuning: its weights, tokenizer, and the
/// longest input it was trained on.
fn pretrained(dir: &Path) -> Result<(crate::models::bert::Bert, Tokenizer, usize)> {
    match open(dir)? {
        Model::MaskedLm { model, tokenizer, extras } => {
            Ok((model.bert, need_tokenizer(tokenizer, dir)?, extras.max_len))
        }
        Model::Encoder(enc) => Ok((enc.bert, enc.tokenizer, enc.max_len.min(128))),
        other => Err(wrong_kind(
            dir,
            &other,
            "a pre-trained encoder to fine-tune (an MLM run, BertForMaskedLM or BertModel)",
        )),
    }
}

pub(crate) fn build(spec: &mut TextClassificationSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    let data = spec.data.clone().ok_or_else(|| {
        Error::Config("text classification needs --data FILE (CSV, TSV or JSONL with text and label columns)".into())
    })?;
    let split = SplitInfo {
        seed: train.seed,
        test_fraction: spec.test_fraction,
        text_column: spec.text_column.clone(),
        label_column: spec.label_column.clone(),
    };
    let h = held_out(&data, &split, spec.lossy)?;
    let labels = label_names(&h.train.labels);
    let train_y = label_ids(&h.train.labels, &labels, "training split")?;
    let test_y = label_ids(&h.test.labels, &labels, "test split")?;
    let (model, tok, max_len, init) = match (mode, &spec.init_from) {
        (Mode::New, Some(from)) => {
            let (bert, tok, trained_len) = pretrained(from)?;
            let mut cls = BertClassifier::new(bert.config.clone(), labels.len(), spec.pooling, train.seed)?;
            // the pre-trained encoder, with its own pooler if it has one (else the fresh one)
            let fresh = cls.bert.pooler.take();
            cls.bert = bert;
            if cls.bert.pooler.is_none() || spec.pooling == Pooling::Mean {
                cls.bert.pooler = fresh;
            }
            let max_len = spec.max_len.unwrap_or(trained_len).min(cls.bert.config.max_position_embeddings);
            spec.model = cls.bert.config.clone();
            (cls, tok, max_len, format!("fine-tuned from {}", from.display()))
        }
        _ => {
            let tok = bert_tokenizer(spec.tokenizer.as_deref(), dir, mode)?;
            let max_len = spec.max_len.unwrap_or(128);
            if mode == Mode::New && spec.init_from.is_none() {
                spec.model.vocab_size = tok.vocab_size();
                spec.model.max_position_embeddings = max_len;
            }
            let init = match &spec.init_from {
                Some(from) => format!("fine-tuned from {}", from.display()),
                None => "from scratch".to_string(),
            };
            (BertClassifier::new(spec.model.clone(), labels.len(), spec.pooling, train.seed)?, tok, max_len, init)
        }
    };
    if max_len < 3 {
        return Err(Error::Config(format!("max_len {max_len} leaves no room for text between [CLS] and [SEP]")));
    }
    spec.max_len = Some(max_len);
    let specials = Specials::of(&tok)?;
    let train_ex = encode_examples(&tok, &h.train.texts, &train_y, max_len, &specials)?;
    let test_ex = encode_examples(&tok, &h.test.texts, &test_y, max_len, &specials)?;
    let truncated = train_ex.iter().chain(&test_ex).filter(|(s, _)| s.len() == max_len).count();
    let notes = vec![format!(
        "{}: {} rows, {} duplicates dropped, {} training / {} test; texts cut to {max_len} tokens ({truncated} were longer); {init}",
        data.display(),
        h.rows,
        h.duplicates,
        train_ex.len(),
        test_ex.len()
    )];
    let extras = QkvExtras { pooling: spec.pooling, max_len, split: Some(split) };
    let config = bert_config_json(&model.bert.config, "BertForSequenceClassification", &extras, Some(&labels));
    let mut task = TextClassifier::new(model, specials, labels, train_ex, test_ex, train)?;
    task.about = json!({"init": init, "rows": h.rows, "duplicates_dropped": h.duplicates});
    Ok(Built {
        steps_per_epoch: Some(task.steps_per_epoch()),
        task: Box::new(task),
        fingerprint: file_fingerprint(Some(&data))?,
        config,
        tokenizer: Some(tok),
        notes,
    })
}
