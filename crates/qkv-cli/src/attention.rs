//! `qkv attention`: pictures of attention. So far the cross-attention of an
//! encoder–decoder: which source tokens each target token reads.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use serde_json::json;

use qkv::models::load::{OpenTranslator, open_translator};
use qkv::train::translation::encode_sentence;
use qkv::translate::{Decoding, translate_texts};
use qkv::viz::attention_map::{LayerMaps, Picked, write_svg};

#[derive(Args, Debug)]
#[command(after_help = "Example:
  qkv attention --model runs/seq2seq --source \"In the beginning God created the heaven and the earth.\" -o cross.svg")]
pub struct AttentionArgs {
    /// A translation model directory (qkv seq2seq run, MarianMTModel or T5ForConditionalGeneration with a tokenizer.json)
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The sentence to translate
    #[arg(long)]
    pub source: String,
    /// Its translation [default: the model's own, beam 4]
    #[arg(long)]
    pub target: Option<String>,
    /// The picture to write (SVG)
    #[arg(short, long, value_name = "FILE", default_value = "cross-attention.svg")]
    pub out: PathBuf,
    /// Only this layer (1-based) [default: every layer]
    #[arg(long)]
    pub layer: Option<usize>,
    /// Only this head (1-based) [default: every head]
    #[arg(long)]
    pub head: Option<usize>,
    /// Also print the weights as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &AttentionArgs) -> Result<()> {
    let OpenTranslator { model, tokenizer: tok, max_len } =
        open_translator(&args.model, "a translation model: qkv attention draws an encoder–decoder's cross-attention")?;
    let c = model.specials();
    let target = match &args.target {
        Some(t) => t.clone(),
        None => translate_texts(model.as_ref(), &tok, &[&args.source], max_len, &Decoding::default(), 1)?.remove(0),
    };
    let (src, _) = encode_sentence(&tok, &args.source, max_len, c.eos)?;
    let (tgt, _) = encode_sentence(&tok, &target, max_len, c.eos)?;
    let mut tgt_in = vec![c.start];
    tgt_in.extend_from_slice(&tgt[..tgt.len() - 1]);
    let maps = model.cross_attention(&src, &tgt_in)?;
    let piece = |id: &u32| tok.token(*id).unwrap_or_else(|| format!("#{id}")).replace('▁', "");
    let (keys, queries): (Vec<String>, Vec<String>) =
        (src.iter().map(piece).collect(), tgt.iter().map(piece).collect());
    let (layers, heads) = (maps.len(), maps.first().map_or(0, |m| m.shape()[0]));
    let pick = |n: Option<usize>, of: usize, what: &str| -> Result<Vec<usize>> {
        match n {
            Some(n) if n == 0 || n > of => bail!("--{what} {n}: the model has {of} (1 to {of})"),
            Some(n) => Ok(vec![n - 1]),
            None => Ok((0..of).collect()),
        }
    };
    let (ls, hs) = (pick(args.layer, layers, "layer")?, pick(args.head, heads, "head")?);
    let (tq, tk) = (queries.len(), keys.len());
    let grid: Vec<LayerMaps> = ls
        .iter()
        .map(|&l| {
            let v = maps[l].to_vec();
            hs.iter()
                .map(|&h| (0..tq).map(|i| v[(h * tq + i) * tk..(h * tq + i + 1) * tk].to_vec()).collect())
                .collect()
        })
        .collect();
    let title = format!("cross-attention: {} → {}", args.source, target);
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    let numbers = |v: &[usize]| v.iter().map(|i| i + 1).collect::<Vec<_>>();
    let picked = Picked { layers: &numbers(&ls), heads: &numbers(&hs) };
    write_svg(&args.out, &grid, &picked, &queries, &keys, &title)?;
    eprintln!(
        "wrote {} ({} layers × {} heads; rows: target tokens, columns: source tokens)",
        args.out.display(),
        ls.len(),
        hs.len()
    );
    if args.json {
        println!("{}", json!({"source": keys, "target": queries, "translation": target, "layers": grid}));
    }
    Ok(())
}
