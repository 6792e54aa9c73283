//! Using trained encoders: `qkv fill-mask`, `qkv classify`, `qkv classify-image`.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use qkv::data::bert_input::{Specials, encode};
use qkv::data::images::load_image_noting;
use qkv::models::bert::Batch;
use qkv::models::inference::InferenceWeights;
use qkv::models::load::{Model, need_tokenizer, open, wrong_kind};
use qkv::nn::Dropout;
use qkv_tensor::no_grad;

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  qkv fill-mask --model runs/bert \"to be or not to [MASK] .\"")]
pub struct FillMaskArgs {
    /// A masked-language model directory (from `qkv train --model bert --task mlm`, or Hugging Face)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Text with one or more [MASK] tokens
    pub text: String,
    /// How many candidates to print per [MASK]
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  qkv classify --model runs/tweets \"what a great day\" \"my flight got cancelled\"")]
pub struct ClassifyArgs {
    /// A text classifier directory (from `qkv train --model bert --task classify`, or Hugging Face)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// Texts to classify
    #[arg(required = true)]
    pub texts: Vec<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "Example:\n  qkv classify-image --model runs/vit digit.png")]
pub struct ClassifyImageArgs {
    /// An image classifier directory (from `qkv train --model vit`, or Hugging Face)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// PNG or JPEG files; resized and converted to the model's size and channels
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// How many classes to print per image
    #[arg(long, default_value_t = 3)]
    pub top_k: usize,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// Indices of the `k` largest values, largest first.
fn top(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    idx.truncate(k);
    idx
}

pub fn fill_mask(args: &FillMaskArgs) -> Result<()> {
    let (model, tokenizer, extras) = match open(&args.model)? {
        Model::MaskedLm { model, tokenizer, extras } => (model, tokenizer, extras),
        other => return Err(wrong_kind(&args.model, &other, "a masked-language model (BertForMaskedLM)").into()),
    };
    let tokenizer = need_tokenizer(tokenizer, &args.model)?;
    let sp = Specials::of(&tokenizer)?;
    let ids = encode(&tokenizer, &args.text, extras.max_len, &sp)?;
    let masked: Vec<usize> = ids.iter().enumerate().filter(|&(_, &i)| i == sp.mask).map(|(p, _)| p).collect();
    if masked.is_empty() {
        bail!("the text has no [MASK] token to fill");
    }
    let t = ids.len();
    let mask = vec![true; t];
    let logits =
        no_grad(|| model.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 1, t }, &Dropout::default()))?;
    let probs = logits.softmax();
    let v = probs.dim(-1)?;
    let data = probs.data();
    let mut out = Vec::new();
    for &p in &masked {
        let row = &data[p * v..(p + 1) * v];
        let cands: Vec<(String, f32)> = top(row, args.top_k)
            .into_iter()
            .map(|i| (tokenizer.token(i as u32).unwrap_or_else(|| format!("#{i}")), row[i]))
            .collect();
        out.push(cands);
    }
    if args.json {
        let j: Vec<_> = out
            .iter()
            .map(|c| c.iter().map(|(t, p)| json!({"token": t, "probability": p})).collect::<Vec<_>>())
            .collect();
        println!("{}", json!({"masks": j}));
    } else {
        for (n, cands) in out.iter().enumerate() {
            if masked.len() > 1 {
                println!("[MASK] #{}:", n + 1);
            }
            for (tok, p) in cands {
                println!("  {:>6.2}%  {tok}", p * 100.0);
            }
        }
    }
    Ok(())
}

pub fn classify(args: &ClassifyArgs) -> Result<()> {
    let (mut model, tokenizer, labels, extras) = match open(&args.model)? {
        Model::TextClassifier { model, tokenizer, labels, extras } => (model, tokenizer, labels, extras),
        other => {
            return Err(wrong_kind(&args.model, &other, "a text classifier (BertForSequenceClassification)").into());
        }
    };
    let tokenizer = need_tokenizer(tokenizer, &args.model)?;
    let sp = Specials::of(&tokenizer)?;
    let seqs: Vec<Vec<u32>> =
        args.texts.iter().map(|t| encode(&tokenizer, t, extras.max_len, &sp)).collect::<qkv::Result<_>>()?;
    let refs: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
    let batch = 16;
    if refs.len() > batch {
        // several forward passes: pack the weights for the GEMM (and stack q/k/v) once, not on every pass
        model = model.prepared_for_inference(InferenceWeights::PACKED)?;
    }
    let probs = model.probabilities(&refs, sp.pad, batch)?;
    let mut results = Vec::new();
    for (text, p) in args.texts.iter().zip(&probs) {
        let best = top(p, 1)[0];
        if args.json {
            let all: serde_json::Map<String, serde_json::Value> =
                labels.iter().zip(p).map(|(l, &v)| (l.clone(), json!(v))).collect();
            results.push(json!({"text": text, "label": labels[best], "probabilities": all}));
        } else {
            let all: Vec<String> =
                top(p, labels.len()).iter().map(|&i| format!("{} {:.1}%", labels[i], p[i] * 100.0)).collect();
            println!("{:<12} {}   ({})", labels[best], text, all.join(", "));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    Ok(())
}

pub fn classify_image(args: &ClassifyImageArgs) -> Result<()> {
    let (mut model, labels) = match open(&args.model)? {
        Model::ImageClassifier { model, labels } => (model, labels),
        other => return Err(wrong_kind(&args.model, &other, "an image classifier (ViTForImageClassification)").into()),
    };
    let (ch, size) = (model.config.num_channels, model.config.image_size);
    if args.images.len() > 1 {
        // one forward pass per image: pack the weights for the GEMM (and stack q/k/v) once, not on every pass
        model = model.prepared_for_inference(InferenceWeights::PACKED)?;
    }
    let mut results = Vec::new();
    for path in &args.images {
        let (pixels, note) = load_image_noting(path, ch, size)?;
        if let Some(note) = note {
            eprintln!("note: {note}");
        }
        let logits = no_grad(|| model.forward(&pixels, 1, &Dropout::default()))?;
        let p = logits.softmax().to_vec();
        let best = top(&p, args.top_k.max(1));
        if args.json {
            let cands: Vec<_> = best.iter().map(|&i| json!({"label": labels[i], "probability": p[i]})).collect();
            results.push(json!({"image": path.display().to_string(), "top": cands}));
        } else {
            let cands: Vec<String> = best.iter().map(|&i| format!("{} {:.1}%", labels[i], p[i] * 100.0)).collect();
            println!("{}: {}", path.display(), cands.join(", "));
        }
    }
    if args.json {
        println!("{}", serde_json::to_string(&results)?);
    }
    Ok(())
}
