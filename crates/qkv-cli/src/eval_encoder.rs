//! `qkv eval` on encoder directories: accuracy and macro-F1 of classifiers on
//! their held-out split, masked-token accuracy of an MLM.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::json;

use qkv::data::classify::{label_ids, read_labeled};
use qkv::data::images;
use qkv::models::load::{Encoder, need_tokenizer, open};
use qkv::train::TrainConfig;
use qkv::train::text::{MlmTrainer, Specials, evaluate_classifier, wrap};
use qkv::train::vision::evaluate_vit;

use crate::train_encoder::{is_table, mlm_data};

/// True when `dir` holds an encoder (a Hugging Face style `config.json`).
pub fn is_encoder_dir(dir: &Path) -> bool {
    qkv::io::hf::read_config(dir)
        .ok()
        .and_then(|c| qkv::io::hf::architecture(&c))
        .is_some_and(|a| a != "GPT2LMHeadModel")
}

/// Evaluate an encoder on `data`; prints text or one JSON object.
pub fn run(dir: &Path, data: &Path, as_json: bool, lossy: bool) -> Result<()> {
    let out = match open(dir)? {
        Encoder::TextClassifier { model, tokenizer, labels, extras } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            let split = extras.split.clone().context(
                "this classifier does not record how its data was split (trained elsewhere?); cannot find its test rows",
            )?;
            let mut d = read_labeled(data, &split.text_column, &split.label_column, lossy)?;
            d.dedup();
            let (_, test) = d.split(split.test_fraction, split.seed);
            let ys = label_ids(&test.labels, &labels, "test split")?;
            let sp = Specials::of(&tokenizer)?;
            let examples: Vec<(Vec<u32>, u32)> = test
                .texts
                .iter()
                .zip(&ys)
                .map(|(t, &y)| Ok((wrap(&tokenizer.encode(t)?, extras.max_len, &sp), y)))
                .collect::<qkv::Result<_>>()?;
            let r = evaluate_classifier(&model, &examples, &sp, 32, labels.len())?;
            json!({"accuracy": r.accuracy, "macro_f1": r.macro_f1, "per_class_f1": r.per_class_f1, "examples": r.examples, "split": "held-out test rows"})
        }
        Encoder::ImageClassifier { model, .. } => {
            let d = images::load(data, model.config.num_channels, model.config.image_size)?;
            let (r, loss) = evaluate_vit(&model, &d.test, 256)?;
            json!({"accuracy": r.accuracy, "macro_f1": r.macro_f1, "loss": loss, "examples": r.examples, "split": d.test_source})
        }
        Encoder::MaskedLm { model, tokenizer, extras } => {
            let tokenizer = need_tokenizer(tokenizer, dir)?;
            let split = extras.split.as_ref().filter(|_| is_table(data));
            let (train, test, _) = mlm_data(Some(data), &tokenizer, extras.max_len, split, lossy)?;
            let held_out = match split {
                Some(_) => "held-out test rows",
                None => "last 10 % of the text",
            };
            let tr = MlmTrainer::new(
                model,
                TrainConfig { batch_size: 32, ..TrainConfig::default() },
                &tokenizer,
                train,
                test,
            )?;
            let r = tr.evaluate(usize::MAX)?;
            json!({"masked_token_accuracy": r.accuracy, "unigram_accuracy": r.unigram_accuracy, "loss": r.loss, "masked_tokens": r.masked, "split": held_out})
        }
    };
    if as_json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().expect("an object") {
            println!("{k:<22} {v}");
        }
    }
    Ok(())
}
