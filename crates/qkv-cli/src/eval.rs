//! `qkv eval`: loss, perplexity and bits per character of a model on a text file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use qkv::data::text::{bits_per_char, eval_targets, read_corpus};
use qkv::tokenize::corpus::encode_corpus;
use qkv::train::{evaluate, run};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run or model directory of a trained model (GPT, BERT, ViT)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// GPT: UTF-8 text to score (every full window of the context). Classifiers: the data
    /// they were trained on (their held-out split is scored; the test files for IDX
    /// images). MLM: a text whose last 10 % is scored
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Sequences per batch
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Classifier data: replace bytes that are not UTF-8 instead of refusing the file
    #[arg(long)]
    pub lossy: bool,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    // BERT and ViT directories are scored on their held-out split
    if crate::eval_encoder::is_encoder_dir(&args.model) {
        return crate::eval_encoder::run(&args.model, &args.data, args.json, args.lossy);
    }
    let (model, tok) = run::load_gpt(&args.model)?;
    let text = read_corpus(&args.data)?;
    let ids = encode_corpus(&tok, &text).with_context(|| format!("{}", args.data.display()))?;
    let b = args.batch_size.max(1);
    let loss = evaluate(&model, &ids, b, usize::MAX)?;
    // bits per character of exactly the text whose tokens were scored
    let scored = eval_targets(ids.len(), b, model.config.block_size, usize::MAX);
    let tokens = scored.len();
    let chars = tok.count_chars(&ids[scored])?;
    let bpc = bits_per_char(loss as f64, tokens, chars);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "loss": loss, "perplexity": (loss as f64).exp(), "bits_per_char": bpc,
                "tokens": tokens, "chars": chars, "data": args.data.display().to_string(),
            })
        );
    } else {
        println!("loss:           {loss:.4} nats/token");
        println!("perplexity:     {:.3}", (loss as f64).exp());
        println!("bits per char:  {bpc:.4}");
        println!("tokens scored:  {tokens} ({chars} characters)");
    }
    Ok(())
}
