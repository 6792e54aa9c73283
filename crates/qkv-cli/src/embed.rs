//! `qkv embed`: sentence embeddings from a BERT directory, as JSON.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use serde_json::json;

use qkv::models::inference::InferenceWeights;
use qkv::models::sentence::{SentenceEncoder, SentencePooling, cosine};

#[derive(Args, Debug)]
#[command(after_help = "Pooling follows the directory's sentence-transformers files (modules.json, \
1_Pooling/config.json): mean over the real tokens, then L2-normalised when the model lists \
Normalize. A plain BERT directory is mean-pooled without normalising.

Examples:
  qkv embed --model all-MiniLM-L6-v2 \"A man plays guitar.\" \"The market fell.\"
  qkv embed --model all-MiniLM-L6-v2 --similarity \"A cat sat.\" \"A kitten sat down.\" \"Stocks fell.\"
  cat sentences.txt | qkv embed --model all-MiniLM-L6-v2     # one sentence per line")]
pub struct EmbedArgs {
    /// BERT model directory in Hugging Face layout (e.g. sentence-transformers' all-MiniLM-L6-v2)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Sentences to embed [default: one per line from standard input]
    pub sentences: Vec<String>,
    /// Print the cosine similarity of every pair instead of the vectors
    #[arg(long)]
    pub similarity: bool,
    /// Sentences per forward pass
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
}

pub fn run(args: &EmbedArgs) -> Result<()> {
    let sentences = if args.sentences.is_empty() {
        stdin_lines()?.into_iter().filter(|l| !l.trim().is_empty()).collect()
    } else {
        args.sentences.clone()
    };
    if sentences.is_empty() {
        bail!("no sentences to embed");
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let mut enc = SentenceEncoder::open(&args.model)?;
    if sentences.len() > args.batch_size {
        // several forward passes: pack the weights for the GEMM (and stack q/k/v) once, not on every pass
        enc = enc.prepared_for_inference(InferenceWeights::PACKED)?;
    }
    let mut vectors: Vec<Vec<f32>> = Vec::with_capacity(sentences.len());
    for chunk in sentences.chunks(args.batch_size) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = enc.embed(&refs)?;
        let dim = e.shape()[1];
        vectors.extend(e.to_vec().chunks(dim).map(<[f32]>::to_vec));
    }
    let pooling = match enc.pooling {
        SentencePooling::Mean => "mean",
        SentencePooling::Cls => "cls",
        SentencePooling::Max => "max",
    };
    let out = if args.similarity {
        let sim: Vec<Vec<f64>> = vectors
            .iter()
            .map(|a| vectors.iter().map(|b| (cosine(a, b) as f64 * 1e4).round() / 1e4).collect())
            .collect();
        json!({"sentences": sentences, "cosine_similarity": sim})
    } else {
        json!({"sentences": sentences, "pooling": pooling, "normalized": enc.normalize, "dim": vectors[0].len(), "embeddings": vectors})
    };
    println!("{out}");
    Ok(())
}

/// The lines of standard input (sentences piped in, one per line); refused
/// when standard input is a terminal or not UTF-8.
pub fn stdin_lines() -> Result<Vec<String>> {
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        bail!("no sentences: give them as arguments or pipe them in, one per line");
    }
    let mut bytes = Vec::new();
    stdin.read_to_end(&mut bytes).context("reading sentences from standard input")?;
    let text = String::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("standard input is not UTF-8 (byte offset {})", e.utf8_error().valid_up_to()))?;
    Ok(text.lines().map(str::to_string).collect())
}
