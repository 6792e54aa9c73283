//! `qkv translate`: sentences in, translations out, with a trained
//! encoder–decoder (greedy or beam search; see `qkv::translate`).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use serde_json::json;

use qkv::models::load::{OpenTranslator, open_translator};
use qkv::translate::{Decoding, EarlyStopping, translate_texts};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum EarlyStop {
    /// Stop when the best running hypothesis cannot beat the worst finished one
    Heuristic,
    /// Stop as soon as --beam hypotheses have finished
    Done,
    /// Like heuristic, but a positive length penalty judges running hypotheses at the maximum length
    Never,
}

fn defaults() -> Decoding {
    Decoding::default()
}

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  qkv translate --model runs/seq2seq \"In the beginning was the Word.\"
  cat english.txt | qkv translate --model runs/seq2seq --beam 5 > spanish.txt
  qkv translate --model runs/seq2seq --beam 1 --json \"And God said, Let there be light.\"")]
pub struct TranslateArgs {
    /// A translation model directory (from `qkv train --model seq2seq`, or a Hugging Face
    /// MarianMTModel with a tokenizer.json)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Sentences to translate [default: one per line from standard input]
    pub sentences: Vec<String>,
    /// Hypotheses kept per sentence; 1 translates greedily
    #[arg(long, default_value_t = defaults().beam)]
    pub beam: usize,
    /// Finished hypotheses are scored by log-probability / length^penalty (above 0 favours longer ones)
    #[arg(long, default_value_t = defaults().length_penalty)]
    pub length_penalty: f32,
    /// At most ceil(ratio × source tokens) + --max-len-extra new tokens
    #[arg(long, default_value_t = defaults().max_len_ratio)]
    pub max_len_ratio: f32,
    #[arg(long, default_value_t = defaults().max_len_extra)]
    pub max_len_extra: usize,
    /// When a sentence's beam search stops
    #[arg(long, value_enum, default_value = "heuristic")]
    pub early_stopping: EarlyStop,
    /// Sentences decoded together
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Print one JSON list of {source, translation} instead of one translation per line
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &TranslateArgs) -> Result<()> {
    let sentences: Vec<String> =
        if args.sentences.is_empty() { crate::embed::stdin_lines()? } else { args.sentences.clone() };
    let OpenTranslator { model, tokenizer, max_len } =
        open_translator(&args.model, "a translation model (MarianMTModel or T5ForConditionalGeneration)")?;
    let how = Decoding {
        beam: args.beam,
        length_penalty: args.length_penalty,
        early_stopping: match args.early_stopping {
            EarlyStop::Heuristic => EarlyStopping::Heuristic,
            EarlyStop::Done => EarlyStopping::Done,
            EarlyStop::Never => EarlyStopping::Never,
        },
        max_len_ratio: args.max_len_ratio,
        max_len_extra: args.max_len_extra,
        ..defaults()
    };
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let out = translate_texts(model.as_ref(), &tokenizer, &refs, max_len, &how, args.batch_size)?;
    if args.json {
        let rows: Vec<_> = sentences.iter().zip(&out).map(|(s, t)| json!({"source": s, "translation": t})).collect();
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for t in out {
            println!("{t}");
        }
    }
    Ok(())
}
