//! Translation: the encoder reads the source sentence, the decoder is fed
//! the target shifted right by one (it starts from the start token) and
//! scored at every position on the next target token — cross-entropy with
//! label smoothing, as in the paper. Pairs are batched by tokens; the
//! held-out pairs come from whole groups (books) the model never saw.
//!
//! Evaluation: the held-out loss, and BLEU of greedy translations of the
//! first held-out sentences. The final report translates every held-out
//! sentence with beam search and gives BLEU and chrF (as sacreBLEU computes
//! them) beside the copy-the-source baseline, with sample translations.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, no_grad};

use crate::data::parallel::{Columns, PairSplit, read_pairs, token_batches};
use crate::data::shuffle::Epochs;
use crate::error::{Error, Result};
use crate::metrics::bleu::corpus_bleu;
use crate::metrics::chrf::corpus_chrf;
use crate::models::load::{TranslationExtras, seq2seq_config_json};
use crate::models::seq2seq::{Seq2Seq, Seq2SeqConfig, Side};
use crate::nn::{Dropout, Module, NamedParam};
use crate::tokenize::Tokenizer;
use crate::tokenize::train::{Kind, TrainOptions};
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task, epochs_state, restore_epochs};
use crate::train::{Fnv1a, TrainConfig};
use crate::translate::{Decoding, translate_texts};

/// The special tokens of a translation tokenizer, in id order: padding
/// (also the decoder's start), end of sentence, unknown.
pub const SPECIALS: [&str; 3] = ["<pad>", "</s>", "<unk>"];

/// What a translation run trains, and on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TranslationSpec {
    /// The encoder–decoder; `vocab_size`, the special ids and
    /// `max_position_embeddings` come from the tokenizer and `max_len`.
    /// Default [`Seq2SeqConfig::default`]: 3 + 3 layers, width 256, 4 heads, MLP 1024, post-norm, sinusoidal.
    pub model: Seq2SeqConfig,
    /// A table of sentence pairs (TSV or CSV, gzip or not); `None` for the
    /// bundled English–Spanish Bible.
    pub data: Option<PathBuf>,
    /// Default "en".
    pub source_column: String,
    /// Default "es".
    pub target_column: String,
    /// Held-out pairs are chosen by whole groups of this column; default
    /// "book" for the bundled Bible, none (pair by pair) for other data.
    pub group_column: Option<String>,
    /// Share of the pairs held out. Default 0.05.
    pub test_fraction: f64,
    /// A tokenizer; `None`: a joint BPE trained on both sides of the training pairs.
    pub tokenizer: Option<String>,
    /// Vocabulary of the joint BPE. Default 8000.
    pub vocab_size: usize,
    /// Source and target are cut to this many tokens (end token included). Default 128.
    pub max_len: usize,
    /// Padded tokens per batch (rows × the longest side). Default 2048.
    pub max_tokens: usize,
    /// Label smoothing ε. Default 0.1.
    pub label_smoothing: f32,
    /// Held-out sentences translated (greedily) for BLEU at each evaluation. Default 100.
    pub eval_sentences: usize,
    /// Beam of the final report's translations. Default 4.
    pub report_beam: usize,
    /// Replace bytes that are not UTF-8 instead of refusing the file. Default false.
    pub lossy: bool,
}

impl Default for TranslationSpec {
    fn default() -> Self {
        TranslationSpec {
            model: Seq2SeqConfig::default(),
            data: None,
            source_column: "en".into(),
            target_column: "es".into(),
            group_column: None,
            test_fraction: 0.05,
            tokenizer: None,
            vocab_size: 8000,
            max_len: 128,
            max_tokens: 2048,
            label_smoothing: 0.1,
            eval_sentences: 100,
            report_beam: 4,
            lossy: false,
        }
    }
}

impl TranslationSpec {
    /// The columns, with the Bible's `book` groups when the data is the bundled Bible.
    pub fn columns(&self) -> Columns {
        let group = self.group_column.clone().or_else(|| self.data.is_none().then(|| "book".to_string()));
        Columns { source: self.source_column.clone(), target: self.target_column.clone(), group }
    }
}

/// Token ids of a pair: the source and the target, each ending with `</s>`.
pub type Pair = (Vec<u32>, Vec<u32>);

/// An encoder–decoder and its sentence pairs.
pub struct Translation {
    pub model: Seq2Seq,
    pub tokenizer: Tokenizer,
    pub train: Vec<Pair>,
    pub test: Vec<Pair>,
    /// The held-out sentences as text: sources and references.
    pub test_text: (Vec<String>, Vec<String>),
    /// Batches of training pairs (indices), made by tokens once.
    pub batches: Vec<Vec<usize>>,
    pub label_smoothing: f32,
    pub eval_sentences: usize,
    pub report_beam: usize,
    pub max_tokens: usize,
    /// Sentences are cut to this many tokens.
    pub max_len: usize,
    seed: u64,
    epochs: Epochs,
    /// Draws dropout seeds.
    rng: Rng,
}

/// Ids of `text`, cut to `max_len - 1` tokens, then `</s>`. Returns whether it was cut.
pub fn encode_sentence(tok: &Tokenizer, text: &str, max_len: usize, eos: u32) -> Result<(Vec<u32>, bool)> {
    let mut ids = tok.encode(text)?;
    let cut = ids.len() > max_len - 1;
    ids.truncate(max_len - 1);
    ids.push(eos);
    Ok((ids, cut))
}

/// Padded batch of sequences: ids, mask and T.
fn pad(seqs: &[&[u32]], pad: u32) -> (Vec<u32>, Vec<bool>, usize) {
    crate::data::bert_input::pad_batch(seqs, pad)
}

impl Translation {
    /// Source batch, decoder input (start token, then the target without its
    /// last token) and labels (the target, padding ignored).
    #[allow(clippy::type_complexity)]
    fn batch(&self, pairs: &[&Pair]) -> (Vec<u32>, Vec<bool>, usize, Vec<u32>, Vec<bool>, Vec<u32>, usize) {
        let c = &self.model.config;
        let srcs: Vec<&[u32]> = pairs.iter().map(|p| p.0.as_slice()).collect();
        let (src, src_mask, ts) = pad(&srcs, c.pad_token_id);
        let tt = pairs.iter().map(|p| p.1.len()).max().unwrap_or(1);
        let (mut tgt_in, mut tgt_mask, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for p in pairs {
            let t = &p.1;
            tgt_in.push(c.decoder_start_token_id);
            tgt_in.extend_from_slice(&t[..t.len() - 1]);
            labels.extend_from_slice(t);
            tgt_mask.extend(std::iter::repeat_n(true, t.len()));
            let rest = tt - t.len();
            tgt_in.extend(std::iter::repeat_n(c.pad_token_id, rest));
            labels.extend(std::iter::repeat_n(c.pad_token_id, rest));
            tgt_mask.extend(std::iter::repeat_n(false, rest));
        }
        (src, src_mask, ts, tgt_in, tgt_mask, labels, tt)
    }

    /// Mean cross-entropy (no smoothing) of the held-out pairs, by tokens.
    fn held_out_loss(&self, pairs: &[Pair]) -> Result<f32> {
        let lengths: Vec<(usize, usize)> = pairs.iter().map(|p| (p.0.len(), p.1.len())).collect();
        let pad_id = self.model.config.pad_token_id;
        let (mut total, mut count) = (0.0f64, 0usize);
        no_grad(|| -> Result<()> {
            for b in token_batches(&lengths, self.max_tokens) {
                let picked: Vec<&Pair> = b.iter().map(|&i| &pairs[i]).collect();
                let (src, src_mask, ts, tgt_in, tgt_mask, labels, tt) = self.batch(&picked);
                let rows = picked.len();
                let logits = self.model.forward(
                    &Side { ids: &src, mask: &src_mask, b: rows, t: ts },
                    &Side { ids: &tgt_in, mask: &tgt_mask, b: rows, t: tt },
                    &Dropout::default(),
                )?;
                let n = labels.iter().filter(|&&l| l != pad_id).count();
                total += qkv_tensor::cross_entropy(&logits, &labels, Some(pad_id))?.item()? as f64 * n as f64;
                count += n;
            }
            Ok(())
        })?;
        Ok((total / count.max(1) as f64) as f32)
    }

    /// Translate the first `n` held-out sources and return their text.
    pub fn translate_held_out(&self, n: usize, how: &Decoding) -> Result<Vec<String>> {
        let sources: Vec<&str> = self.test_text.0.iter().take(n).map(String::as_str).collect();
        translate_texts(&self.model, &self.tokenizer, &sources, self.max_len, how, 64)
    }
}

impl Task for Translation {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let b = self.epochs.next_batch(self.batches.len(), 1, self.seed)[0];
        let picked: Vec<&Pair> = self.batches[b].iter().map(|&i| &self.train[i]).collect();
        let (src, src_mask, ts, tgt_in, tgt_mask, labels, tt) = self.batch(&picked);
        let rows = picked.len();
        let drop = Dropout { p: self.model.config.dropout, seed: Some(self.rng.next_u64()) };
        let logits = self.model.forward(
            &Side { ids: &src, mask: &src_mask, b: rows, t: ts },
            &Side { ids: &tgt_in, mask: &tgt_mask, b: rows, t: tt },
            &drop,
        )?;
        let pad_id = self.model.config.pad_token_id;
        let value = qkv_tensor::cross_entropy_smoothed(&logits, &labels, Some(pad_id), self.label_smoothing)?;
        Ok(Some(Loss { value, tokens: labels.iter().filter(|&&l| l != pad_id).count() }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let loss = self.held_out_loss(&self.test)?;
        let n = self.eval_sentences.min(self.test.len());
        let greedy = Decoding { beam: 1, ..Decoding::default() };
        let hyps = self.translate_held_out(n, &greedy)?;
        let refs: Vec<&str> = self.test_text.1.iter().take(n).map(String::as_str).collect();
        let hyps: Vec<&str> = hyps.iter().map(String::as_str).collect();
        let bleu = corpus_bleu(&hyps, &refs).score;
        Ok(Evaluation {
            loss,
            accuracy: None,
            summary: format!("val {loss:.3}, BLEU {bleu:.1} (greedy, {n} sentences)"),
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
        let n = self.test.len();
        let how = Decoding { beam: self.report_beam, ..Decoding::default() };
        let hyps = self.translate_held_out(n, &how)?;
        let (srcs, refs) = (&self.test_text.0, &self.test_text.1);
        let (h, r, s): (Vec<&str>, Vec<&str>, Vec<&str>) = (
            hyps.iter().map(String::as_str).collect(),
            refs.iter().map(String::as_str).collect(),
            srcs.iter().map(String::as_str).collect(),
        );
        let bleu = corpus_bleu(&h, &r);
        let copy = corpus_bleu(&s, &r);
        let samples: Vec<Value> =
            (0..n.min(10)).map(|i| json!({"source": srcs[i], "reference": refs[i], "translation": hyps[i]})).collect();
        Ok(json!({
            "task": "translation", "test_pairs": n, "beam": self.report_beam,
            "bleu": bleu.score, "chrf": corpus_chrf(&h, &r), "bleu_detail": bleu,
            "copy_source_baseline": {"bleu": copy.score, "chrf": corpus_chrf(&s, &r)},
            "test_loss": self.held_out_loss(&self.test)?,
            "samples": samples,
        }))
    }

    fn describe(&self) -> Vec<String> {
        let c = &self.model.config;
        let tokens: usize = self.train.iter().map(|p| p.1.len()).sum();
        vec![format!(
            "encoder–decoder {}+{} layers × {} heads × {} wide, {:.2} M parameters, shared vocabulary {} ({}); \
             {} training pairs ({} target tokens, {} batches of ≤ {} tokens), {} held out",
            c.encoder_layers,
            c.decoder_layers,
            c.encoder_attention_heads,
            c.d_model,
            self.model.num_params() as f64 / 1e6,
            c.vocab_size,
            self.tokenizer.describe(),
            self.train.len(),
            tokens,
            self.batches.len(),
            self.max_tokens,
            self.test.len()
        )]
    }
}

/// The tokenizer of a translation run: the run's own when resuming, the
/// given one, or a joint BPE trained on both sides of the training pairs.
fn translation_tokenizer(spec: &TranslationSpec, dir: &Path, mode: Mode, texts: &[&str]) -> Result<Tokenizer> {
    if mode == Mode::Resume {
        return Tokenizer::from_file(&dir.join(super::checkpoint::TOKENIZER));
    }
    match &spec.tokenizer {
        Some(s) => Tokenizer::load(s).map_err(|e| Error::Config(format!("--tokenizer {s}: {e}"))),
        None => crate::tokenize::train::train(
            texts,
            &TrainOptions {
                kind: Kind::Bpe,
                vocab_size: spec.vocab_size,
                min_frequency: 2,
                specials: SPECIALS.iter().map(|s| s.to_string()).collect(),
            },
        ),
    }
}

/// The id of a special token the model needs, or an error naming it.
fn special(tok: &Tokenizer, name: &str) -> Result<u32> {
    tok.token_to_id(name).ok_or_else(|| {
        Error::Config(format!("the tokenizer has no {name} token; a translation model needs {SPECIALS:?}"))
    })
}

pub(crate) fn build(spec: &mut TranslationSpec, train: &TrainConfig, dir: &Path, mode: Mode) -> Result<Built> {
    if spec.max_len < 2 {
        return Err(Error::Config(format!("max_len {} leaves no room for a token and </s>", spec.max_len)));
    }
    if spec.max_tokens < spec.max_len {
        return Err(Error::Config(format!(
            "max_tokens {} is smaller than max_len {}: a long pair would not fit a batch",
            spec.max_tokens, spec.max_len
        )));
    }
    let pairs = read_pairs(spec.data.as_deref(), &spec.columns(), spec.lossy)?;
    let split = PairSplit { seed: train.seed, test_fraction: spec.test_fraction };
    let (train_pairs, test_pairs) = split.held_out(&pairs)?;
    let split = split.clone();
    let started = std::time::Instant::now();
    let texts: Vec<&str> = train_pairs.source.iter().chain(&train_pairs.target).map(String::as_str).collect();
    let tok = translation_tokenizer(spec, dir, mode, &texts)?;
    let trained_note = (mode == Mode::New && spec.tokenizer.is_none()).then(|| {
        format!("joint BPE of {} tokens trained in {:.1} s", tok.vocab_size(), started.elapsed().as_secs_f64())
    });
    let m = &mut spec.model;
    m.vocab_size = tok.vocab_size();
    m.pad_token_id = special(&tok, SPECIALS[0])?;
    m.decoder_start_token_id = m.pad_token_id;
    m.eos_token_id = special(&tok, SPECIALS[1])?;
    m.max_position_embeddings = m.max_position_embeddings.max(spec.max_len + 1);
    m.validate()?;
    let eos = m.eos_token_id;
    let mut cut = 0usize;
    let mut encode = |p: &crate::data::parallel::Pairs| -> Result<Vec<Pair>> {
        p.source
            .iter()
            .zip(&p.target)
            .map(|(s, t)| {
                let (s, c1) = encode_sentence(&tok, s, spec.max_len, eos)?;
                let (t, c2) = encode_sentence(&tok, t, spec.max_len, eos)?;
                cut += (c1 || c2) as usize;
                Ok((s, t))
            })
            .collect()
    };
    let train_ids = encode(&train_pairs)?;
    let test_ids = encode(&test_pairs)?;
    let lengths: Vec<(usize, usize)> = train_ids.iter().map(|p| (p.0.len(), p.1.len())).collect();
    let batches = token_batches(&lengths, spec.max_tokens);
    let held_groups: Vec<&String> = {
        let mut g: Vec<&String> = Vec::new();
        for x in &test_pairs.group {
            if !x.is_empty() && !g.contains(&x) {
                g.push(x);
            }
        }
        g
    };
    let mut notes: Vec<String> = trained_note.into_iter().collect();
    notes.push(format!(
        "{} pairs ({} with an empty side left out), {} held out{}; pairs cut to {} tokens: {cut}",
        pairs.len(),
        pairs.empty,
        test_pairs.len(),
        if held_groups.is_empty() {
            String::new()
        } else {
            format!(
                " from {} whole groups ({})",
                held_groups.len(),
                held_groups.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            )
        },
        spec.max_len
    ));
    let model = Seq2Seq::new(spec.model.clone(), train.seed)?;
    let extras = TranslationExtras { max_len: spec.max_len, columns: spec.columns(), split, data: spec.data.clone() };
    let config = seq2seq_config_json(&spec.model, &extras);
    let mut h = Fnv1a::default();
    for (s, t) in pairs.source.iter().zip(&pairs.target) {
        h = h.update(s.as_bytes()).update(b"\t").update(t.as_bytes()).update(b"\n");
    }
    let task = Translation {
        model,
        tokenizer: tok.clone(),
        train: train_ids,
        test: test_ids,
        test_text: (test_pairs.source, test_pairs.target),
        batches,
        label_smoothing: spec.label_smoothing,
        eval_sentences: spec.eval_sentences,
        report_beam: spec.report_beam.max(1),
        max_tokens: spec.max_tokens,
        max_len: spec.max_len,
        seed: train.seed,
        epochs: Epochs::default(),
        rng: Rng::new(train.seed ^ 0x7EA5_1A7E),
    };
    if !(0.0..1.0).contains(&spec.label_smoothing) {
        return Err(Error::Config(format!("label smoothing {} must be in [0, 1)", spec.label_smoothing)));
    }
    Ok(Built {
        steps_per_epoch: Some(task.batches.len()),
        task: Box::new(task),
        fingerprint: h.hex(),
        config,
        tokenizer: Some(tok),
        notes,
    })
}
