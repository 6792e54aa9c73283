//! `qkv eval`: score a trained model on data, as its training did (see
//! `qkv::eval`): loss, perplexity and bits per character of a GPT; accuracy
//! and macro-F1 of a classifier on its held-out rows; masked-token accuracy
//! of an MLM.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Run or model directory of a trained model (GPT, BERT, ViT)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// GPT: UTF-8 text to score (every full window of the context). Classifiers: the data
    /// they were trained on (their held-out split is scored; the test files for IDX
    /// images). MLM: a text whose last 10 % is scored, or the table it was trained on.
    /// Translation: the sentence pairs it was trained on (its held-out pairs are translated),
    /// e.g. data/bible-en-es.tsv.gz
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// Sequences per batch
    #[arg(long, default_value_t = qkv::eval::EvalOptions::default().batch_size)]
    pub batch_size: usize,
    /// Tables: replace bytes that are not UTF-8 instead of refusing the file
    #[arg(long)]
    pub lossy: bool,
    /// Translation: hypotheses kept by beam search; 1 translates greedily
    #[arg(long, default_value_t = qkv::eval::EvalOptions::default().beam)]
    pub beam: usize,
    /// Classifiers: where to draw the confusion matrix [default: DIR/confusion.svg]
    #[arg(long, value_name = "FILE")]
    pub confusion: Option<PathBuf>,
}

pub fn run(args: &EvalArgs) -> Result<()> {
    let opts = qkv::eval::EvalOptions { batch_size: args.batch_size, lossy: args.lossy, beam: args.beam };
    let mut out = qkv::eval::evaluate(&args.model, &args.data, &opts)?;
    // a classifier's confusion matrix, as a picture beside the numbers
    if let (Some(m), Some(labels)) = (out.get("confusion"), out.get("labels")) {
        let matrix: Vec<Vec<usize>> = serde_json::from_value(m.clone())?;
        let labels: Vec<String> = serde_json::from_value(labels.clone())?;
        let path = args.confusion.clone().unwrap_or_else(|| args.model.join("confusion.svg"));
        let title = format!("{} on {}", args.model.display(), args.data.display());
        qkv::viz::confusion::write_svg(&path, &matrix, &labels, &title)?;
        out["confusion_picture"] = serde_json::Value::String(path.display().to_string());
    }
    if args.json {
        println!("{out}");
    } else {
        for (k, v) in out.as_object().into_iter().flatten() {
            match v {
                _ if k == "confusion" || k == "labels" => {} // drawn in the picture
                serde_json::Value::String(text) => println!("{k:<22} {text}"),
                other => println!("{k:<22} {other}"),
            }
        }
    }
    Ok(())
}
