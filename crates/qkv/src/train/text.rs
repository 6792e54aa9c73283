//! Training BERT: masked language modelling on a corpus, and sentence
//! classification on labelled texts.

use qkv_tensor::{Rng, no_grad};

use crate::data::mlm::{IGNORE, MaskingRule, mask_tokens};
use crate::error::{Error, Result};
use crate::metrics::{ClassificationReport, classification_report};
use crate::models::bert::{Batch, BertClassifier, BertForMaskedLm};
use crate::nn::{Dropout, Module};
use crate::tokenize::Tokenizer;
use crate::train::optimizer::Optimizer;
use crate::train::vision::argmax_rows;
use crate::train::{StepStats, TrainConfig};

/// The ids of BERT's special tokens in a WordPiece vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Specials {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    pub mask: u32,
}

impl Specials {
    /// Look up `[CLS] [SEP] [PAD] [MASK]`; a tokenizer without them cannot feed BERT.
    pub fn of(tok: &Tokenizer) -> Result<Specials> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                Error::Config(format!(
                    "the tokenizer has no {t} token; BERT needs [CLS] [SEP] [PAD] [MASK] \
                     (train one with `qkv tokenizer train --kind wordpiece`)"
                ))
            })
        };
        Ok(Specials { cls: id("[CLS]")?, sep: id("[SEP]")?, pad: id("[PAD]")?, mask: id("[MASK]")? })
    }

    pub fn is_special(&self, id: u32) -> bool {
        id == self.cls || id == self.sep || id == self.pad || id == self.mask
    }
}

/// `[CLS] ids [SEP]`, cut so the whole is at most `max_len` tokens.
pub fn wrap(ids: &[u32], max_len: usize, sp: &Specials) -> Vec<u32> {
    let keep = ids.len().min(max_len.saturating_sub(2));
    let mut out = Vec::with_capacity(keep + 2);
    out.push(sp.cls);
    out.extend_from_slice(&ids[..keep]);
    out.push(sp.sep);
    out
}

/// Sequences padded to the longest: ids and masks, `[B, T]`.
pub fn pad_batch(seqs: &[&[u32]], pad: u32) -> (Vec<u32>, Vec<bool>, usize) {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut mask = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        ids.extend_from_slice(s);
        mask.extend(std::iter::repeat_n(true, s.len()));
        ids.extend(std::iter::repeat_n(pad, t - s.len()));
        mask.extend(std::iter::repeat_n(false, t - s.len()));
    }
    (ids, mask, t)
}

/// Cut a token stream into `[CLS] … [SEP]` sequences of exactly `max_len` tokens
/// (the last, shorter piece is dropped).
pub fn mlm_sequences(stream: &[u32], max_len: usize, sp: &Specials) -> Vec<Vec<u32>> {
    let body = max_len.saturating_sub(2).max(1);
    stream.chunks_exact(body).map(|c| wrap(c, max_len, sp)).collect()
}

/// The masked positions (flat indices) and their original tokens.
fn chosen(labels: &[u32]) -> (Vec<u32>, Vec<u32>) {
    labels.iter().enumerate().filter(|&(_, &l)| l != IGNORE).map(|(i, &l)| (i as u32, l)).unzip()
}

/// Masked language modelling.
pub struct MlmTrainer {
    pub model: BertForMaskedLm,
    pub opt: Optimizer,
    pub config: TrainConfig,
    pub specials: Specials,
    pub train: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Ids that random replacements may take (not special tokens).
    pub ordinary: Vec<u32>,
    pub rule: MaskingRule,
    rng: Rng,
}

/// Masked-token accuracy of the model and of the unigram baseline.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct MlmReport {
    /// Mean cross-entropy on masked positions (nats).
    pub loss: f32,
    /// Fraction of masked positions whose original token is the top prediction.
    pub accuracy: f64,
    /// The same for always guessing the most frequent training token.
    pub unigram_accuracy: f64,
    pub masked: usize,
}

impl MlmTrainer {
    pub fn new(
        model: BertForMaskedLm,
        config: TrainConfig,
        tok: &Tokenizer,
        train: Vec<Vec<u32>>,
        test: Vec<Vec<u32>>,
    ) -> Result<Self> {
        config.validate()?;
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data(format!(
                "not enough text: {} training and {} test sequences of {} tokens (use a longer corpus or a smaller --block-size)",
                train.len(),
                test.len(),
                model.bert.config.max_position_embeddings
            )));
        }
        let specials = Specials::of(tok)?;
        let ordinary: Vec<u32> = (0..tok.vocab_size() as u32).filter(|&i| !specials.is_special(i)).collect();
        let opt = Optimizer::new(model.named_params(), &config);
        let rng = Rng::new(config.seed ^ 0x0A5C_0DE5);
        Ok(MlmTrainer { model, opt, config, specials, train, test, ordinary, rule: MaskingRule::default(), rng })
    }

    fn masked_batch(&self, seqs: &[&Vec<u32>], rng: &mut Rng) -> (Vec<u32>, Vec<u32>, Vec<bool>, usize) {
        let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        let (mut ids, mask, t) = pad_batch(&refs, self.specials.pad);
        let special: Vec<bool> = ids.iter().map(|&i| self.specials.is_special(i)).collect();
        let labels = mask_tokens(&mut ids, &special, self.specials.mask, &self.ordinary, &self.rule, rng);
        (ids, labels, mask, t)
    }

    pub fn train_step(&mut self) -> Result<StepStats> {
        let b = self.config.batch_size.min(self.train.len());
        let mut rng = self.rng.fork();
        let picks: Vec<&Vec<u32>> = (0..b).map(|_| &self.train[rng.below(self.train.len() as u64) as usize]).collect();
        let (ids, labels, mask, t) = self.masked_batch(&picks, &mut rng);
        let drop = Dropout { p: self.model.bert.config.hidden_dropout_prob, seed: Some(rng.next_u64()) };
        self.opt.zero_grad();
        let (positions, targets) = chosen(&labels);
        if positions.is_empty() {
            // nothing was chosen in this (tiny) batch: no loss, no update
            return Ok(StepStats { loss: 0.0, lr: 0.0, grad_norm: 0.0, tokens: b * t });
        }
        let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b, t };
        let logits = self.model.forward_at(&batch, &positions, &drop)?;
        let loss = qkv_tensor::cross_entropy(&logits, &targets, None)?;
        let value = loss.item()?;
        loss.backward()?;
        let (grad_norm, lr) = self.opt.step();
        if !value.is_finite() {
            return Err(Error::Data(format!("training diverged at step {}: loss {value}", self.opt.step)));
        }
        Ok(StepStats { loss: value, lr, grad_norm, tokens: b * t })
    }

    /// Masked-token accuracy on the held-out sequences (a fixed masking, so
    /// every evaluation asks the same questions), beside the unigram baseline.
    pub fn evaluate(&self, max_sequences: usize) -> Result<MlmReport> {
        let mut counts = vec![0usize; self.model.bert.config.vocab_size];
        for s in &self.train {
            for &id in s {
                if !self.specials.is_special(id) {
                    counts[id as usize] += 1;
                }
            }
        }
        let most_frequent = (0..counts.len()).max_by_key(|&i| counts[i]).unwrap_or(0) as u32;
        let mut rng = Rng::new(12345);
        let (mut correct, mut unigram, mut total, mut loss_sum) = (0usize, 0usize, 0usize, 0.0f64);
        let seqs: Vec<&Vec<u32>> = self.test.iter().take(max_sequences).collect();
        no_grad(|| -> Result<()> {
            for chunk in seqs.chunks(self.config.batch_size.max(1)) {
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
                    unigram += (most_frequent == l) as usize;
                }
            }
            Ok(())
        })?;
        Ok(MlmReport {
            loss: (loss_sum / total.max(1) as f64) as f32,
            accuracy: correct as f64 / total.max(1) as f64,
            unigram_accuracy: unigram as f64 / total.max(1) as f64,
            masked: total,
        })
    }
}

/// Sentence classification.
pub struct ClassifierTrainer {
    pub model: BertClassifier,
    pub opt: Optimizer,
    pub config: TrainConfig,
    pub specials: Specials,
    /// `[CLS] … [SEP]` token ids and class id of each training example.
    pub train: Vec<(Vec<u32>, u32)>,
    pub test: Vec<(Vec<u32>, u32)>,
    rng: Rng,
    order: Vec<usize>,
    next: usize,
}

impl ClassifierTrainer {
    pub fn new(
        model: BertClassifier,
        config: TrainConfig,
        specials: Specials,
        train: Vec<(Vec<u32>, u32)>,
        test: Vec<(Vec<u32>, u32)>,
    ) -> Result<Self> {
        config.validate()?;
        if train.is_empty() || test.is_empty() {
            return Err(Error::Data("need both training and test examples".into()));
        }
        let opt = Optimizer::new(model.named_params(), &config);
        let rng = Rng::new(config.seed ^ 0x0C1A_55E5);
        Ok(ClassifierTrainer { model, opt, config, specials, train, test, rng, order: Vec::new(), next: usize::MAX })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.train.len().div_ceil(self.config.batch_size)
    }

    pub fn train_step(&mut self) -> Result<StepStats> {
        let n = self.train.len();
        if self.next >= n {
            self.order = (0..n).collect();
            for i in (1..n).rev() {
                self.order.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
            self.next = 0;
        }
        let end = (self.next + self.config.batch_size).min(n);
        let idx: Vec<usize> = self.order[self.next..end].to_vec();
        self.next = end;
        let seqs: Vec<&[u32]> = idx.iter().map(|&i| self.train[i].0.as_slice()).collect();
        let labels: Vec<u32> = idx.iter().map(|&i| self.train[i].1).collect();
        let (ids, mask, t) = pad_batch(&seqs, self.specials.pad);
        let b = idx.len();
        let drop = Dropout { p: self.model.bert.config.hidden_dropout_prob, seed: Some(self.rng.next_u64()) };
        self.opt.zero_grad();
        let logits = self.model.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b, t }, &drop)?;
        let loss = qkv_tensor::cross_entropy(&logits, &labels, None)?;
        let value = loss.item()?;
        loss.backward()?;
        let (grad_norm, lr) = self.opt.step();
        Ok(StepStats { loss: value, lr, grad_norm, tokens: b })
    }

    /// Accuracy and macro-F1 on the test split.
    pub fn evaluate(&self) -> Result<ClassificationReport> {
        let n_classes = self.model.classifier.d_out();
        evaluate_classifier(&self.model, &self.test, &self.specials, self.config.batch_size, n_classes)
    }
}

/// Predicted class ids for tokenised examples, in batches, without gradients.
pub fn predict(model: &BertClassifier, seqs: &[&[u32]], sp: &Specials, batch: usize) -> Result<Vec<Vec<f32>>> {
    let mut probs = Vec::with_capacity(seqs.len());
    no_grad(|| -> Result<()> {
        for chunk in seqs.chunks(batch.max(1)) {
            let (ids, mask, t) = pad_batch(chunk, sp.pad);
            let logits = model
                .forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: chunk.len(), t }, &Dropout::default())?;
            let p = logits.softmax();
            let k = p.dim(-1)?;
            probs.extend(p.data().chunks(k).map(|r| r.to_vec()));
        }
        Ok(())
    })?;
    Ok(probs)
}

pub fn evaluate_classifier(
    model: &BertClassifier,
    examples: &[(Vec<u32>, u32)],
    sp: &Specials,
    batch: usize,
    n_classes: usize,
) -> Result<ClassificationReport> {
    let seqs: Vec<&[u32]> = examples.iter().map(|(s, _)| s.as_slice()).collect();
    let probs = predict(model, &seqs, sp, batch)?;
    let predicted: Vec<u32> = probs
        .iter()
        .map(|r| {
            r.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0 as u32
        })
        .collect();
    let truth: Vec<u32> = examples.iter().map(|(_, l)| *l).collect();
    Ok(classification_report(&predicted, &truth, n_classes))
}
