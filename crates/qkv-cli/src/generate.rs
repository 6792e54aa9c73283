//! `qkv generate`: continue a prompt with a trained model, streaming tokens.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;

use qkv::generate::{Sampling, generate, generate_mamba, generate_recurrent};
use qkv::models::gpt::Gpt;
use qkv::models::inference::InferenceWeights;
use qkv::models::load::{Model, need_tokenizer, open, wrong_kind};
use qkv::models::mamba::Mamba;
use qkv::models::recurrent::RecurrentLm;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  qkv generate --model runs/gpt --prompt \"ROMEO:\"
  echo \"To be\" | qkv generate --model runs/gpt --greedy --max-new-tokens 100
  qkv generate --model runs/gpt --prompt \"KING:\" --temperature 0.8 --top-k 40 --seed 1")]
pub struct GenerateArgs {
    /// Run directory of a trained model (from `qkv train`), or a Hugging Face GPT-2 directory
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Text to continue [default: read standard input]
    #[arg(long)]
    pub prompt: Option<String>,
    /// Tokens to generate
    #[arg(long, default_value_t = 500)]
    pub max_new_tokens: usize,
    /// Always pick the most likely token (ignores temperature, top-k, top-p)
    #[arg(long)]
    pub greedy: bool,
    /// Below 1: safer, more repetitive; above 1: more varied
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f32,
    /// Sample only among the k most likely tokens
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely tokens that cover probability p
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Seed for sampling [default: different every run]
    #[arg(long)]
    pub seed: Option<u64>,
    /// Context window in tokens, at most the model's block size [default: the block size]
    #[arg(long)]
    pub block_size: Option<usize>,
    /// Read 16-bit copies of the weights for each generated token: about twice
    /// as fast (generation is limited by reading the weights), costs half the
    /// model's size again in memory, and moves the logits by the weights'
    /// rounding (~1e-3), which can change a near-tie between tokens
    #[arg(long)]
    pub f16_weights: bool,
}

pub fn run(args: &GenerateArgs) -> Result<()> {
    let (model, tok) = match open(&args.model)? {
        Model::Gpt { model, tokenizer, .. } => (Lm::Gpt(gpt_options(model, args)?), tokenizer),
        Model::Recurrent { model, tokenizer } => {
            if args.f16_weights || args.block_size.is_some() {
                bail!("--f16-weights and --block-size are for a GPT; a recurrent network carries its state instead");
            }
            (Lm::Recurrent(model), tokenizer)
        }
        Model::Mamba { model, tokenizer, .. } => {
            if args.f16_weights || args.block_size.is_some() {
                bail!("--f16-weights and --block-size are for a GPT; a Mamba carries its state instead");
            }
            (Lm::Mamba(model), need_tokenizer(tokenizer, &args.model)?)
        }
        other => {
            return Err(
                wrong_kind(&args.model, &other, "a language model (GPT, GPT-2, RNN, LSTM, GRU or Mamba)").into()
            );
        }
    };
    let prompt = match &args.prompt {
        Some(p) => p.clone(),
        None => {
            let mut stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("no prompt: give --prompt TEXT or pipe text into standard input");
            }
            let mut bytes = Vec::new();
            stdin.read_to_end(&mut bytes).context("reading the prompt from standard input")?;
            String::from_utf8(bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the prompt on standard input is not UTF-8 (byte offset {})",
                    e.utf8_error().valid_up_to()
                )
            })?
        }
    };
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one character");
    }
    let ids = tok.encode(&prompt).context("the prompt")?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
    });
    let sampling =
        Sampling { greedy: args.greedy, temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, seed };
    let mut out = std::io::stdout().lock();
    write!(out, "{prompt}")?;
    // a stream decoder, primed with the prompt: subword pieces join correctly
    // and a character split over byte-level tokens is printed once complete
    let mut stream = tok.stream();
    for &id in &ids {
        stream.step(id)?;
    }
    let on_token = |id| {
        let piece = stream.step(id)?;
        // a closed pipe (e.g. `| head`) ends generation quietly
        Ok(write!(out, "{piece}").and_then(|_| out.flush()).is_ok())
    };
    match &model {
        Lm::Gpt(m) => generate(m, &ids, args.max_new_tokens, &sampling, on_token)?,
        Lm::Recurrent(m) => generate_recurrent(m, &ids, args.max_new_tokens, &sampling, on_token)?,
        Lm::Mamba(m) => generate_mamba(m, &ids, args.max_new_tokens, &sampling, on_token)?,
    };
    let _ = writeln!(out);
    Ok(())
}

/// The language models `qkv generate` runs.
enum Lm {
    Gpt(Gpt),
    Recurrent(RecurrentLm),
    Mamba(Mamba),
}

/// `--f16-weights` and `--block-size` on a GPT.
fn gpt_options(mut model: Gpt, args: &GenerateArgs) -> Result<Gpt> {
    if args.f16_weights {
        model = model.prepared_for_inference(InferenceWeights::F16).context("--f16-weights")?;
    }
    if let Some(bs) = args.block_size {
        if bs > model.config.block_size {
            bail!(
                "--block-size {bs} is larger than the model's context of {} tokens (it has no positions beyond that)",
                model.config.block_size
            );
        }
        if bs == 0 {
            bail!("--block-size must be at least 1");
        }
        model.config.block_size = bs;
    }
    Ok(model)
}
