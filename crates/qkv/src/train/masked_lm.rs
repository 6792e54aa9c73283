//! Masked language modelling, BERT's pre-training task: hide some tokens of
//! each sequence (see [`crate::data::mlm`]) and score the model on
//! recovering them from the words on both sides. Held out: a table's test
//! rows (split as classification splits them), or the last 10 % of a text.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::data::bert_input::{Specials, pad_batch};
use crate::data::classify::SplitInfo;
use crate::data::mlm::{IGNORE, MaskingRule, is_table, mask_tokens, mlm_data};
use crate::error::{Error, Result};
use crate::metrics::argmax_rows;
use crate::models::bert::{Batch, BertConfig, BertForMaskedLm, Pooling};
use crate::models::load::{QkvExtras, bert_config_json};
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task};
use crate::train::task::{rng_of, rng_state};
use crate::train::{TrainConfig, fnv1a};

/// The encoder qkv trains from scratch (MLM, or a classifier without
/// `--init-from`): 4 layers, 4 heads, width 256, MLP 1024, dropout 0.1.
pub fn small_bert() -> BertConfig {
    BertConfig {
        hidden_size: 256,
        num_hidden_layers: 4,
        num_attention_heads: 4,
        intermediate_size: 1024,
        hidden_dropout_prob: 0.1,
        ..BertConfig::default()
    }
}

/// What a masked-LM run trains, and on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaskedLmSpec {
    /// The encoder; `vocab_size` comes from the tokenizer and
    /// `max_position_embeddings` from `max_len`. Default [`small_bert`].
    pub model: BertConfig,
    /// A text file, or a table (CSV/TSV/JSONL) whose texts are used; `None`
    /// for the bundled Shakespeare.
    pub data: Option<PathBuf>,
    /// A WordPiece tokenizer (required for a new run).
    pub tokenizer: Option<String>,
    /// Sequence length in tokens, `[CLS]` and `[SEP]` included. Default 128.
    pub max_len: usize,
    /// A table's text column and label column (labels unused here; the
    /// split is classification's, so a classifier trained later from this
    /// model never saw the test rows). Default "text" and "label".
    pub text_column: String,
    pub label_column: String,
    /// A table's share of rows held out. Default 0.1.
    pub test_fraction: f64,
    /// Replace bytes of a table that are not UTF-8 instead of refusing it. Default false.
    pub lossy: bool,
}

impl Default for MaskedLmSpec {
    fn default() -> Self {
        MaskedLmSpec {
            model: small_bert(),
            data: None,
            tokenizer: None,
            max_len: 128,
            text_column: "text".into(),
            label_column: "label".into(),
            test_fraction: 0.1,
            lossy: false,
        }
    }
}

/// The masked positions (flat indices) and their original tokens.
fn chosen(labels: &[u32]) -> (Vec<u32>, Vec<u32>) {
    labels.iter().enumerate().filter(|&(_, &l)| l != IGNORE).map(|(i, &l)| (i as u32, l)).unzip()
}

/// BERT with an MLM head, and its sequences.
pub struct MaskedLm {
    pub model: BertForMaskedLm,
    pub specials: Specials,
    pub train: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Ids that random replacements may take (not special tokens).
    pub ordinary: Vec<u32>,
    pub rule: MaskingRule,
    pub batch_size: usize,
    /// Sequences scored per evaluation during training (all in the report).
    pub eval_sequences: usize,
    /// The most frequent ordinary training token: the baseline's guess.
    most_frequent: u32,
    rng: Rng,
}

/// Masked-token accuracy of the model and of the unigram baseline.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MlmReport {
    /// Mean cross-entropy on masked positions (nats).
    pub loss: f32,
    /// Fraction of masked positions whose original token is the top prediction.
    pub accuracy: f64,
    /// The same for always guessing the most frequent training token.
    pub unigram_accuracy: f64,
    pub masked: usize,
}

impl MaskedLm {
    pub fn new(
        model: BertForMaskedLm,
        tok: &Tokenizer,
        train: Vec<Vec<u32>>,
        test: Vec<Vec<u32>>,
        config: &TrainConfig,
    ) -> Result<Self> {
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data(format!(
                "not enough text: {} training and {} test sequences of {} tokens (use a longer corpus or a smaller --max-len)",
                train.len(),
                test.len(),
                model.bert.config.max_position_embeddings
            )));
        }
        let specials = Specials::of(tok)?;
        let ordinary: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&i| !specials.is_special(i)).collect();
        let mut counts = vec![0usize; model.bert.config.vocab_size];
        for &id in train.iter().flatten() {
            if !specials.is_special(id) && (id as usize) < counts.len() {
                counts[id as usize] += 1;
            }
        }
        let most_frequent = (0..counts.len()).max_by_key(|&i| (counts[i], std::cmp::Reverse(i))).unwrap_or(0) as u32;
        Ok(MaskedLm {
            model,
            specials,
            train,
            test,
            ordinary,
            rule: MaskingRule::default(),
            batch_size: config.batch_size,
            eval_sequences: config.batch_size * config.eval_batches,
            most_frequent,
            rng: Rng::new(config.seed ^ 0x0A5C_0DE5),
        })
    }

    /// Pad `seqs`, mask them; ids, labels, padding mask and T.
    fn masked_batch(&self, seqs: &[&Vec<u32>], rng: &mut Rng) -> (Vec<u32>, Vec<u32>, Vec<bool>, usize) {
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let (mut ids, mask, t) = pad_batch(&refs, self.specials.pad);
        let special: Vec<bool> = ids.iter().map(|&i| self.specials.is_special(i)).collect();
        let labels = mask_tokens(&mut ids, &special, self.specials.mask, &self.ordinary, &self.rule, rng);
        (ids, labels, mask, t)
    }

    /// Masked-token accuracy on the first `max_sequences` held-out sequences
    /// (masked the same way every time, so evaluations ask the same
    /// questions), beside the unigram baseline.
    pub fn score(&self, max_sequences: usize) -> Result<MlmReport> {
        let mut rng = Rng::new(12345);
        let (mut correct, mut unigram, mut total, mut loss_sum) = (0usize, 0usize, 0usize, 0.0f64);
        let seqs: Vec<&Vec<u32>> = self.test.iter().take(max_sequences).collect();
        no_grad(|| -> Result<()> {
            for chunk in seqs.chunks(self.batch_size.max(1)) {
                let (ids, labels, mask, t) = self.masked_batch(chunk, &mut rng);
                let (positions, targets) = chosen(&labels);
                if positions.is_empty() {
                    continue;
                }
                let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b: chunk.len(), t };
                let logits = self.model.forward_at(&batch, &positions, &Dropout::default())?;
                loss_sum += qkv_tensor::cross_entropy(&logits, &targets, None)?.item()? as f64 * targets.len() as f64;
                for (p, &l) in argmax_rows(&logits)?.iter().zip(&targets) {
                    total += 1;
                    correct += (*p == l) as usize;
                    unigram += (self.most_frequent == l) as usize;
                }
            }
            Ok(())
        })?;
        let n = total.max(1) as f64;
        Ok(MlmReport {
            loss: (loss_sum / n) as f32,
            accuracy: correct as f64 / n,
            unigram_accuracy: unigram as f64 / n,
            masked: total,
        })
    }
}

impl Task for MaskedLm {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let b = self.batch_size.min(self.train.len());
        let mut rng = self.rng.fork();
        let picks: Vec<&Vec<u32>> = (0..b).map(|_| &self.train[rng.below(self.train.len() as u64) as usize]).collect();
        let (ids, labels, mask, t) = self.masked_batch(&picks, &mut rng);
        let drop = Dropout { p: self.model.bert.config.hidden_dropout_prob, seed: Some(rng.next_u64()) };
        let (positions, targets) = chosen(&labels);
        if positions.is_empty() {
            return Ok(None); // nothing was chosen in this (tiny) batch
        }
        let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b, t };
        let logits = self.model.forward_at(&batch, &positions, &drop)?;
        let value: Tensor = qkv_tensor::cross_entropy(&logits, &targets, None)?;
        Ok(Some(Loss { value, tokens: mask.iter().filter(|&&m| m).count() }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let r = self.score(self.eval_sequences)?;
        Ok(Evaluation {
            loss: r.loss,
            accuracy: Some(r.accuracy),
            summary: format!("masked-token accuracy {:.3} (unigram {:.3})", r.accuracy, r.unigram_accuracy),
        })
    }

    fn state(&self) -> Value {
        rng_state(&self.rng)
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        self.rng = rng_of(state)?;
        Ok(())
    }

    fn report(&self) -> Result<Value> {
        Ok(json!({ "task": "masked-lm", "test": self.score(usize::MAX)? }))
    }

    fn describe(&self) -> Vec<String> {
        let c = &self.model.bert.config;
        vec![format!(
            "BERT (masked LM) {} layers × {} heads × {} wide, {:.2} M parameters, vocabulary {}; {} training and {} test sequences of up to {} tokens",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.hidden_size,
            self.model.num_params() as f64 / 1e6,
            c.vocab_size,
            self.train.len(),
            self.test.len(),
            c.max_position_embeddings
        )]
    }
}

/// The tokenizer of a BERT run: the run's own when resuming, else `spec`'s (required).
pub(crate) fn bert_tokenizer(spec: Option<&str>, dir: &Path, mode: Mode) -> Result<Tokenizer> {
    if mode == Mode::Resume {
        return Tokenizer::from_file(&dir.join(super::checkpoint::TOKENIZER));
    }
    let spec = spec.ok_or_else(|| {
        Error::Config(
            "BERT needs a WordPiece tokenizer: pass --tokenizer (a tokenizer.json, vocab.txt or model directory); \
             make one with `qkv tokenizer train --kind wordpiece --vocab-size 8000 FILE -o tokenizer.json`"
                .into(),
        )
    })?;
    Tokenizer::load(spec).map_err(|e| Error::Config(format!("--tokenizer {spec}: {e}")))
}

/// The fingerprint of a data file (or of the bundled corpus).
pub(crate) fn file_fingerprint(path: Option<&Path>) -> Result<String> {
    match path {
        Some(p) => Ok(fnv1a(&std::fs::read(p).map_err(|e| Error::io(p, e))?)),
        None => Ok(fnv1a(crate::data::text::SHAKESPEARE.as_bytes())),
    }
}

pub(crate) fn build(spec: &mut MaskedLmSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    if spec.max_len < 8 {
        return Err(Error::Config(format!("max_len {} is too short for BERT sequences ([CLS] … [SEP])", spec.max_len)));
    }
    let tok = bert_tokenizer(spec.tokenizer.as_deref(), dir, mode)?;
    let split = spec.data.as_deref().filter(|p| is_table(p)).map(|_| SplitInfo {
        seed: train.seed,
        test_fraction: spec.test_fraction,
        text_column: spec.text_column.clone(),
        label_column: spec.label_column.clone(),
    });
    let data = mlm_data(spec.data.as_deref(), &tok, spec.max_len, split.as_ref(), spec.lossy)?;
    spec.model.vocab_size = tok.vocab_size();
    spec.model.max_position_embeddings = spec.max_len;
    spec.model.validate()?;
    let model = BertForMaskedLm::new(spec.model.clone(), train.seed)?;
    let extras = QkvExtras { pooling: Pooling::Cls, max_len: spec.max_len, split };
    let config = bert_config_json(&spec.model, "BertForMaskedLM", &extras, None);
    let notes = vec![format!("data: {} (held out: {})", data.source, data.held_out)];
    let task = MaskedLm::new(model, &tok, data.train, data.test, train)?;
    Ok(Built {
        task: Box::new(task),
        steps_per_epoch: None,
        fingerprint: file_fingerprint(spec.data.as_deref())?,
        config,
        tokenizer: Some(tok),
        notes,
    })
}
