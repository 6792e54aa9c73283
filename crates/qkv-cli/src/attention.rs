//! `qkv attention`: pictures of attention — which tokens each token reads,
//! layer by layer and head by head — for any model with attention that qkv
//! opens (the maps come from `qkv::attention_maps`).

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, bail};
use clap::Args;
use serde_json::json;

use qkv::attention_maps::{self, AttentionMaps};
use qkv::data::images::{load_image_noting, load_rgb};
use qkv::models::load::{Model, need_tokenizer, open};
use qkv::viz::attention_map::{LayerMaps, Picked, write_png, write_rollout_svg, write_svg};

#[derive(Args, Debug)]
#[command(after_help = "What is drawn depends on the model:
  a GPT (qkv run or GPT-2)      causal self-attention over --text
  a BERT (MLM, classifier, bare) self-attention over [CLS] --text [SEP]
  a ViT                          self-attention over [CLS] and the patches of --image,
                                 and the attention rollout drawn over the image (FILE-rollout.svg)
  an encoder–decoder             cross-attention from the translation to --source

Each picture is a grid of heatmaps, layers down and heads across; row i of a heatmap is how
token i shares its attention among the tokens along the bottom (each row sums to 1).

Examples:
  qkv attention --model runs/gpt --text \"ROMEO: But soft\" -o maps.svg
  qkv attention --model runs/gpt --text \"ROMEO: But soft\" --layer 4 --head 2 --json
  qkv attention --model runs/vit --image digit.png -o vit.svg
  qkv attention --model runs/seq2seq --source \"In the beginning God created the heaven and the earth.\" -o cross.svg")]
pub struct AttentionArgs {
    /// A model directory: a qkv run or a Hugging Face GPT-2, BERT, ViT, Marian or T5
    #[arg(long, value_name = "DIR")]
    pub model: PathBuf,
    /// The text a GPT or BERT reads (cut to the model's context, with a note)
    #[arg(long, conflicts_with_all = ["image", "source"])]
    pub text: Option<String>,
    /// The image a ViT looks at (PNG or JPEG; resized to the model's size)
    #[arg(long, value_name = "FILE", conflicts_with = "source")]
    pub image: Option<PathBuf>,
    /// The sentence an encoder–decoder translates
    #[arg(long)]
    pub source: Option<String>,
    /// Its translation [default: the model's own, beam 4]
    #[arg(long, requires = "source")]
    pub target: Option<String>,
    /// The picture to write: .svg (with token labels) or .png (heatmaps only)
    #[arg(short, long, value_name = "FILE", default_value = "attention.svg")]
    pub out: PathBuf,
    /// Only this layer (1-based) [default: every layer]
    #[arg(long)]
    pub layer: Option<usize>,
    /// Only this head (1-based) [default: every head]
    #[arg(long)]
    pub head: Option<usize>,
    /// Also print the probabilities as JSON (tokens, ids, and per layer and head the [query][key] rows)
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &AttentionArgs) -> Result<()> {
    let model = open(&args.model)?;
    let mut rollout_picture = None;
    let mut translation = None;
    let (maps, title) = match (&model, &args.text, &args.image, &args.source) {
        (Model::ImageClassifier { model: vit, .. }, None, Some(path), None) => {
            let (ch, size) = (vit.config.num_channels, vit.config.image_size);
            let (pixels, note) = load_image_noting(path, ch, size)?;
            if let Some(note) = note {
                eprintln!("note: {note}");
            }
            let maps = attention_maps::of_image(vit, &pixels)?;
            rollout_picture = Some(load_rgb(path)?);
            (maps, format!("self-attention over {}", path.display()))
        }
        (Model::Translator { model: ed, tokenizer, extras }, None, None, Some(source)) => {
            let tok = need_tokenizer(tokenizer.clone(), &args.model)?;
            let max_len = extras.as_ref().map_or(ed.default_max_len(), |e| e.max_len);
            let (maps, target) =
                attention_maps::of_translation(ed.as_ref(), &tok, max_len, source, args.target.as_deref())?;
            let title = format!("cross-attention: {source} → {target}");
            translation = Some(target);
            (maps, title)
        }
        (_, Some(text), None, None) => (attention_maps::of_text(&model, text)?, String::new()),
        (m, ..) => bail!("{} needs {}", m.describe(), needed_input(m)),
    };
    let title = if title.is_empty() { format!("{}: {}", maps.kind, maps.queries.concat()) } else { title };
    if let Some(note) = &maps.note {
        eprintln!("note: {note}");
    }
    let (ls, hs) = (pick(args.layer, maps.num_layers(), "layer")?, pick(args.head, maps.num_heads(), "head")?);
    let grid: Vec<LayerMaps> = ls.iter().map(|&l| hs.iter().map(|&h| maps.map(l, h)).collect()).collect();
    create_parent(&args.out)?;
    match args.out.extension().and_then(|e| e.to_str()).map(str::to_lowercase).as_deref() {
        Some("png") => write_png(&args.out, &grid)?,
        Some("svg") | None => {
            let numbers = |v: &[usize]| v.iter().map(|i| i + 1).collect::<Vec<_>>();
            let picked = Picked { layers: &numbers(&ls), heads: &numbers(&hs) };
            write_svg(&args.out, &grid, &picked, &maps.queries, &maps.keys, &title)?;
        }
        Some(other) => bail!("-o {}: .{other} is not a picture qkv writes (use .svg or .png)", args.out.display()),
    }
    let (rows, cols) = match maps.kind {
        "cross-attention" => ("target tokens", "source tokens"),
        _ => ("each token", "the tokens it reads"),
    };
    eprintln!("wrote {} ({} layers × {} heads; rows: {rows}, columns: {cols})", args.out.display(), ls.len(), hs.len());
    if let Some(picture) = &rollout_picture {
        let r = attention_maps::rollout(&maps)?;
        let side = (maps.keys.len() - 1).isqrt();
        let path = sibling(&args.out, "-rollout.svg");
        write_rollout_svg(&path, picture, &r[0][1..], side, &format!("attention rollout: {title}"))?;
        eprintln!("wrote {} (which patches the [CLS] token, and so the class, draws on)", path.display());
    }
    if args.json {
        let mut j = to_json(&maps, &ls, &hs);
        if let Some(t) = translation {
            j["translation"] = json!(t);
        }
        println!("{j}");
    }
    Ok(())
}

/// What a model needs to be given, for the error when it was given something else.
fn needed_input(model: &Model) -> &'static str {
    match model {
        Model::ImageClassifier { .. } => "--image FILE",
        Model::Translator { .. } => "--source TEXT (and optionally --target TEXT)",
        Model::Gpt { .. } | Model::MaskedLm { .. } | Model::TextClassifier { .. } | Model::Encoder(_) => "--text TEXT",
        Model::Recurrent { .. } | Model::Mamba { .. } => {
            "attention to draw, and has none: it carries a fixed-size state from token to token instead (see `qkv compare`)"
        }
    }
}

/// 0-based indices of the picked layer or head, or all of them.
fn pick(n: Option<usize>, of: usize, what: &str) -> Result<Vec<usize>> {
    match n {
        Some(n) if n == 0 || n > of => bail!("--{what} {n}: the model has {of} (1 to {of})"),
        Some(n) => Ok(vec![n - 1]),
        None => Ok((0..of).collect()),
    }
}

fn create_parent(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    }
    Ok(())
}

/// `maps.svg` → `maps-rollout.svg`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let stem = path.file_stem().map_or("attention".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}{suffix}"))
}

fn to_json(maps: &AttentionMaps, ls: &[usize], hs: &[usize]) -> serde_json::Value {
    let layers: Vec<_> = ls
        .iter()
        .map(|&l| {
            let heads: Vec<_> = hs.iter().map(|&h| json!({"head": h + 1, "weights": maps.map(l, h)})).collect();
            json!({"layer": l + 1, "heads": heads})
        })
        .collect();
    json!({
        "kind": maps.kind,
        "queries": maps.queries,
        "query_ids": maps.query_ids,
        "keys": maps.keys,
        "key_ids": maps.key_ids,
        "note": maps.note,
        "layers": layers,
    })
}
