//! Scoring a trained model on data, the way its training scored it: a GPT
//! or a recurrent language model on every full window of a text; a classifier or masked-LM on the rows its
//! run held out (the same de-duplicated, seeded split — see
//! [`crate::data::classify::held_out`]); a ViT on the test images.

use std::path::Path;

use serde_json::{Value, json};

use crate::data::bert_input::Specials;
use crate::data::classify::{held_out, label_ids};
use crate::data::images;
use crate::data::mlm::{is_table, mlm_data};
use crate::data::parallel::{Columns, read_pairs};
use crate::data::text::{bits_per_char, eval_targets, read_corpus};
use crate::error::{Error, Result};
use crate::metrics::bleu::corpus_bleu;
use crate::metrics::chrf::corpus_chrf;
use crate::models::load::TranslationExtras;
use crate::models::load::{Model, need_tokenizer, open};
use crate::tokenize::Tokenizer;
use crate::tokenize::corpus::encode_corpus;
use crate::train::TrainConfig;
use crate::train::masked_lm::MaskedLm;
use crate::train::text_classification::encode_examples;
use crate::translate::{Decoding, EncoderDecoder, translate_texts};

/// How to evaluate. Every field has a default.
#[derive(Clone, Copy, Debug)]
pub struct EvalOptions {
    /// Sequences per batch. Default 16.
    pub batch_size: usize,
    /// Replace bytes of a table that are not UTF-8 instead of refusing it. Default false.
    pub lossy: bool,
    /// Translation: hypotheses kept by beam search (1: greedy). Default 4.
    pub beam: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions { batch_size: 16, lossy: false, beam: 4 }
    }
}

/// Score the model in `dir` on `data`. One JSON object of named numbers.
pub fn evaluate(dir: &Path, data: &Path, opts: &EvalOptions) -> Result<Value> {
    let (batch, lossy) = (opts.batch_size.max(1), opts.lossy);
    match open(dir)? {
        Model::Gpt { model, tokenizer, .. } => {
            let ids = text_ids(&tokenizer, data)?;
            let loss = crate::train::next_token::evaluate(&model, &ids, batch, model.config.block_size, usize::MAX)?;
            language_model(loss, &ids, &tokenizer, batch, model.config.block_size, data)
        }
        Model::Mamba { model, tokenizer, window } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            let ids = text_ids(&tokenizer, data)?;
            // no context limit: windows scored like a GPT's
            let loss = crate::train::next_token::evaluate(&model, &ids, batch, window, usize::MAX)?;
            language_model(loss, &ids, &tokenizer, batch, window, data)
        }
        Model::Recurrent { model, tokenizer } => {
            let ids = text_ids(&tokenizer, data)?;
            let loss = crate::train::recurrent_lm::evaluate(&model, &ids, batch, usize::MAX)?;
            language_model(loss, &ids, &tokenizer, batch, model.config.block_size, data)
        }
        Model::TextClassifier { model, tokenizer, labels, extras } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            let split = extras.split.clone().ok_or_else(|| {
                Error::Config(
                    "this classifier does not record how its data was split (trained elsewhere?); cannot find its test rows"
                        .into(),
                )
            })?;
            let test = held_out(data, &split, lossy)?.test;
            let ys = label_ids(&test.labels, &labels, "test split")?;
            let sp = Specials::of(&tokenizer)?;
            let examples = encode_examples(&tokenizer, &test.texts, &ys, extras.max_len, &sp)?;
            let (r, loss) = crate::train::text_classification::score(&model, &examples, sp.pad, batch, labels.len())?;
            Ok(json!({
                "accuracy": r.accuracy, "macro_f1": r.macro_f1, "per_class_f1": r.per_class_f1, "loss": loss,
                "examples": r.examples, "split": "held-out test rows", "labels": labels, "confusion": r.confusion,
            }))
        }
        Model::ImageClassifier { model, labels } => {
            let d = images::load(data, model.config.num_channels, model.config.image_size)?;
            let (r, loss) = crate::train::image_classification::score(&model, &d.test, batch.max(64))?;
            Ok(json!({
                "accuracy": r.accuracy, "macro_f1": r.macro_f1, "loss": loss, "examples": r.examples,
                "split": d.test_source, "labels": labels, "confusion": r.confusion,
            }))
        }
        Model::MaskedLm { model, tokenizer, extras } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            let split = extras.split.as_ref().filter(|_| is_table(data));
            let d = mlm_data(Some(data), &tokenizer, extras.max_len, split, lossy)?;
            let config = TrainConfig { batch_size: batch, ..TrainConfig::default() };
            let r = MaskedLm::new(model, &tokenizer, d.train, d.test, &config)?.score(usize::MAX)?;
            Ok(json!({
                "masked_token_accuracy": r.accuracy, "unigram_accuracy": r.unigram_accuracy, "loss": r.loss,
                "masked_tokens": r.masked, "split": d.held_out,
            }))
        }
        Model::Translator { model, tokenizer, extras } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            translation(model.as_ref(), &tokenizer, extras.as_ref(), data, opts)
        }
        found @ Model::Encoder(_) => Err(Error::Config(format!(
            "{}: {} has no task to score; use `qkv embed` for its sentence embeddings",
            dir.display(),
            found.describe()
        ))),
    }
}

/// A text file's token ids.
fn text_ids(tokenizer: &Tokenizer, data: &Path) -> Result<Vec<u32>> {
    let text = read_corpus(data)?;
    encode_corpus(tokenizer, &text).map_err(|e| Error::Data(format!("{}: {e}", data.display())))
}

/// A language model's numbers for a `loss` over every full window of `t`
/// tokens of `ids`: bits per character of exactly the text whose tokens
/// were scored.
fn language_model(loss: f32, ids: &[u32], tokenizer: &Tokenizer, batch: usize, t: usize, data: &Path) -> Result<Value> {
    let scored = eval_targets(ids.len(), batch, t, usize::MAX);
    let tokens = scored.len();
    let chars = tokenizer.count_chars(&ids[scored])?;
    Ok(json!({
        "loss": loss, "perplexity": (loss as f64).exp(), "bits_per_char": bits_per_char(loss as f64, tokens, chars),
        "tokens": tokens, "chars": chars, "window": t, "data": data.display().to_string(),
    }))
}

/// BLEU and chrF of a translation model on the held-out pairs of `data`
/// (split as its run split them; every pair when it records no split), beside
/// the copy-the-source baseline.
fn translation(
    model: &dyn EncoderDecoder,
    tok: &Tokenizer,
    extras: Option<&TranslationExtras>,
    data: &Path,
    opts: &EvalOptions,
) -> Result<Value> {
    let default_columns = Columns { source: "en".into(), target: "es".into(), group: None };
    let columns = extras.map_or(default_columns, |e| e.columns.clone());
    let pairs = read_pairs(Some(data), &columns, opts.lossy)?;
    let (test, split) = match extras {
        Some(e) => (e.split.held_out(&pairs)?.1, "held-out pairs"),
        None => (pairs, "every pair"),
    };
    let max_len = extras.map_or(model.default_max_len(), |e| e.max_len);
    let how = Decoding { beam: opts.beam.max(1), ..Decoding::default() };
    let sources: Vec<&str> = test.source.iter().map(String::as_str).collect();
    let hyps = translate_texts(model, tok, &sources, max_len, &how, 64)?;
    let (h, r, s): (Vec<&str>, Vec<&str>, Vec<&str>) = (
        hyps.iter().map(String::as_str).collect(),
        test.target.iter().map(String::as_str).collect(),
        test.source.iter().map(String::as_str).collect(),
    );
    let bleu = corpus_bleu(&h, &r);
    Ok(json!({
        "bleu": bleu.score, "chrf": corpus_chrf(&h, &r), "brevity_penalty": bleu.brevity_penalty,
        "copy_source_bleu": corpus_bleu(&s, &r).score, "copy_source_chrf": corpus_chrf(&s, &r),
        "pairs": test.len(), "beam": how.beam, "split": split,
    }))
}
