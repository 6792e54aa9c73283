//! `qkv export`: a trained qkv GPT as a Hugging Face GPT-2 directory.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use serde_json::json;

use qkv::models::gpt2_hf;
use qkv::models::load::{Model, open, wrong_kind};
use qkv::nn::Module;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// `GPT2LMHeadModel`: config.json, model.safetensors, tokenizer.json, tokenizer_config.json
    HfGpt2,
}

#[derive(Args, Debug)]
#[command(after_help = "GPT-2 can express a qkv GPT with learned positions, LayerNorm before each sublayer, \
and a GELU or ReLU MLP; anything else (RoPE, ALiBi, RMSNorm, SwiGLU, post-norm) is refused with the reason. \
A model trained without biases is written with zero biases (the same function). A character tokenizer is \
written as the equivalent word-level tokenizer.json.

Examples:
  qkv export --model runs/gpt --format hf-gpt2 -o exported/
  python -c \"from transformers import GPT2LMHeadModel; GPT2LMHeadModel.from_pretrained('exported')\"")]
pub struct ExportArgs {
    /// Run directory of a trained GPT (from `qkv train`)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Layout to write
    #[arg(long, value_enum, default_value = "hf-gpt2")]
    pub format: Format,
    /// Directory to write (created if missing)
    #[arg(short, long, value_name = "DIR")]
    pub out: PathBuf,
    /// Overwrite a directory that already holds a model
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: &ExportArgs) -> Result<()> {
    let (model, tok) = match open(&args.model)? {
        Model::Gpt { model, tokenizer, hugging_face: false } => (model, tokenizer),
        other => return Err(wrong_kind(&args.model, &other, "a GPT trained by qkv").into()),
    };
    if let Some(why) = gpt2_hf::inexpressible(&model.config) {
        bail!("cannot export {} as GPT-2: {why}", args.model.display());
    }
    if args.out.join("config.json").exists() && !args.force {
        bail!("{} already holds a model (config.json); pass --force to overwrite it", args.out.display());
    }
    let tok = tok.to_hugging_face().context("converting the tokenizer")?;
    let mut extra = vec![];
    if let Some(eos) = tok.token_to_id("<|endoftext|>") {
        extra.push(("bos_token_id", json!(eos)));
        extra.push(("eos_token_id", json!(eos)));
    } else {
        // GPT-2's defaults (50256) would point outside a small vocabulary
        extra.push(("bos_token_id", json!(null)));
        extra.push(("eos_token_id", json!(null)));
    }
    gpt2_hf::export(&model, &args.out, &extra)?;
    tok.save(&args.out.join("tokenizer.json"))?;
    let mut tc = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": model.config.block_size,
        "clean_up_tokenization_spaces": false,
    });
    if tok.token_to_id("<|endoftext|>").is_some() {
        for k in ["bos_token", "eos_token", "unk_token"] {
            tc[k] = json!("<|endoftext|>");
        }
    }
    let text = serde_json::to_string_pretty(&tc)?;
    qkv::io::atomic::write_atomic(&args.out.join("tokenizer_config.json"), text.as_bytes())?;
    eprintln!(
        "qkv export: {} → {} (GPT2LMHeadModel, {:.2} M parameters, vocabulary {}, context {})",
        args.model.display(),
        args.out.display(),
        model.num_params() as f64 / 1e6,
        model.config.vocab_size,
        model.config.block_size
    );
    Ok(())
}
