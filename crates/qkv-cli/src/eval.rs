//! `qkv eval`: loss, perplexity and bits per character of a model on a text file.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use qkv::data::text::read_corpus;
use qkv::train::{evaluate, run};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run directory of a trained model
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// UTF-8 text file to evaluate on (every full window of the context length)
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Sequences per batch
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let (_, model, tok) = run::load_model(&args.model)?;
    let text = read_corpus(&args.data)?;
    let ids = tok
        .encode(&text)
        .with_context(|| format!("{}", args.data.display()))?;
    let loss = evaluate(&model, &ids, args.batch_size.max(1), usize::MAX)?;
    let t = model.config.block_size;
    let tokens = (ids.len() - 1) / t * t;
    let chars_per_token = text.chars().count() as f64 / ids.len() as f64;
    let bpc = loss as f64 / std::f64::consts::LN_2 / chars_per_token;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "loss": loss, "perplexity": (loss as f64).exp(), "bits_per_char": bpc,
                "tokens": tokens, "data": args.data.display().to_string(),
            })
        );
    } else {
        println!("loss:           {loss:.4} nats/token");
        println!("perplexity:     {:.3}", (loss as f64).exp());
        println!("bits per char:  {bpc:.4}");
        println!("tokens scored:  {tokens}");
    }
    Ok(())
}
