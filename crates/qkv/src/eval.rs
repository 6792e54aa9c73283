//! Scoring a trained model on data, the way its training scored it: a GPT
//! on every full window of a text; a classifier or masked-LM on the rows its
//! run held out (the same de-duplicated, seeded split — see
//! [`crate::data::classify::held_out`]); a ViT on the test images.

use std::path::Path;

use serde_json::{Value, json};

use crate::data::bert_input::Specials;
use crate::data::classify::{held_out, label_ids};
use crate::data::images;
use crate::data::mlm::{is_table, mlm_data};
use crate::data::text::{bits_per_char, eval_targets, read_corpus};
use crate::error::{Error, Result};
use crate::models::load::{Model, need_tokenizer, open};
use crate::tokenize::corpus::encode_corpus;
use crate::train::TrainConfig;
use crate::train::masked_lm::MaskedLm;
use crate::train::text_classification::encode_examples;

/// Score the model in `dir` on `data` (sequences per batch: `batch_size`;
/// `lossy`: replace bytes of a table that are not UTF-8). One JSON object
/// of named numbers.
pub fn evaluate(dir: &Path, data: &Path, batch_size: usize, lossy: bool) -> Result<Value> {
    let batch = batch_size.max(1);
    match open(dir)? {
        Model::Gpt { model, tokenizer, .. } => {
            let text = read_corpus(data)?;
            let ids = encode_corpus(&tokenizer, &text).map_err(|e| Error::Data(format!("{}: {e}", data.display())))?;
            let loss = crate::train::next_token::evaluate(&model, &ids, batch, usize::MAX)?;
            // bits per character of exactly the text whose tokens were scored
            let scored = eval_targets(ids.len(), batch, model.config.block_size, usize::MAX);
            let tokens = scored.len();
            let chars = tokenizer.count_chars(&ids[scored])?;
            Ok(json!({
                "loss": loss, "perplexity": (loss as f64).exp(), "bits_per_char": bits_per_char(loss as f64, tokens, chars),
                "tokens": tokens, "chars": chars, "data": data.display().to_string(),
            }))
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
                "examples": r.examples, "split": "held-out test rows",
            }))
        }
        Model::ImageClassifier { model, .. } => {
            let d = images::load(data, model.config.num_channels, model.config.image_size)?;
            let (r, loss) = crate::train::image_classification::score(&model, &d.test, batch.max(64))?;
            Ok(json!({
                "accuracy": r.accuracy, "macro_f1": r.macro_f1, "loss": loss, "examples": r.examples,
                "split": d.test_source,
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
        found @ Model::Encoder(_) => Err(Error::Config(format!(
            "{}: {} has no task to score; use `qkv embed` for its sentence embeddings",
            dir.display(),
            found.describe()
        ))),
    }
}
