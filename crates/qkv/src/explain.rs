//! One input followed through a model, step by step: what `qkv explain`
//! shows. The numbers are computed here, by the same code that trains and
//! generates; the page only draws them.
//!
//! 1. **tokens**: the pieces the tokenizer cuts the text into, and their ids;
//! 2. **embeddings**: each token's vector, and its position's (a GPT's learned
//!    or sinusoidal table, BERT's table; RoPE and ALiBi act inside attention);
//! 3. **layers**: in each block, every head's attention probabilities, what
//!    the attention and the MLP sublayers add to the residual stream, and the
//!    size of the stream after the block;
//! 4. **output**: the next-token distribution after the last token (a GPT,
//!    with the sampling controls applied), the distribution at each `[MASK]`
//!    (a masked LM), or the classes (a classifier, a ViT).
//!
//! An encoder–decoder shows its translation of a source sentence and the
//! cross-attention of each translated token over the source.

use serde::Serialize;

use qkv_tensor::{AttentionKernel, AttentionOpts, Rng, Tensor, attention, no_grad};

use crate::attention_maps::{bert_input, of_translation, token_label};
use crate::data::bert_input::Specials;
use crate::error::{Error, Result};
use crate::generate::{Sampling, distribution, sample};
use crate::models::bert::{Batch, Bert};
use crate::models::gpt::Gpt;
use crate::models::load::Model;
use crate::models::vit::Vit;
use crate::nn::block::Block;
use crate::nn::positional::Positions;
use crate::nn::{Dropout, Module};
use crate::tokenize::Tokenizer;
use crate::translate::EncoderDecoder;

/// How many features of each embedding the page draws.
pub const SHOWN_FEATURES: usize = 48;

/// A model's shape, for the page's header and the positional heatmap.
#[derive(Serialize)]
pub struct ModelInfo {
    /// "gpt", "bert", "vit" or "encoder-decoder".
    pub family: &'static str,
    pub describe: &'static str,
    pub layers: usize,
    pub heads: usize,
    pub width: usize,
    pub vocab: usize,
    /// Longest input in tokens.
    pub context: usize,
    pub parameters: usize,
    /// "learned", "sinusoidal", "rope", "alibi" or "none".
    pub positions: &'static str,
    /// The first positions' embeddings, `[P][SHOWN_FEATURES]` (empty when
    /// positions are not added to the tokens).
    pub position_table: Vec<Vec<f32>>,
    /// What the page may do: "text" (a prompt), "masks" (fill `[MASK]`),
    /// "classes" (text classification), "image", "source" (a sentence to translate).
    pub input: &'static str,
}

/// One token: its id and its text.
#[derive(Serialize, Clone)]
pub struct TokenInfo {
    pub id: u32,
    pub label: String,
}

/// A candidate of a distribution.
#[derive(Serialize)]
pub struct Candidate {
    pub id: u32,
    pub label: String,
    pub probability: f64,
}

/// One block's inside.
#[derive(Serialize)]
pub struct LayerWalk {
    /// `[H][T][T]`: row `i` of head `h` is what token `i` gives each token.
    pub attention: Vec<Vec<Vec<f32>>>,
    /// `[T]`: the length of what the attention sublayer adds to each token's vector.
    pub attention_norm: Vec<f32>,
    /// `[T]`: the length of what the MLP adds.
    pub mlp_norm: Vec<f32>,
    /// `[T]`: the length of each token's vector after the block.
    pub residual_norm: Vec<f32>,
}

/// The distribution at one `[MASK]`.
#[derive(Serialize)]
pub struct MaskFill {
    pub position: usize,
    pub candidates: Vec<Candidate>,
}

/// One input through the model.
#[derive(Serialize)]
pub struct Walk {
    /// The tokens whose attention rows are shown (for an encoder–decoder,
    /// the translation's).
    pub tokens: Vec<TokenInfo>,
    /// The tokens they attend to, when other than `tokens` (an
    /// encoder–decoder's source sentence: cross-attention).
    pub keys: Vec<TokenInfo>,
    /// An encoder–decoder's translation of the source (beam 4).
    pub translation: Option<String>,
    /// Set when the input was cut to fit the model.
    pub note: Option<String>,
    /// `[T][SHOWN_FEATURES]`: the first features of each token's embedding.
    pub token_embedding: Vec<Vec<f32>>,
    /// `[T][SHOWN_FEATURES]`: of each position's (empty when none is added).
    pub position_embedding: Vec<Vec<f32>>,
    /// `[T]`: the length of each token's vector entering the first block.
    pub input_norm: Vec<f32>,
    pub layers: Vec<LayerWalk>,
    /// A GPT's next-token distribution after the last token, most likely first.
    pub next: Vec<Candidate>,
    /// A masked LM's distribution at each `[MASK]`.
    pub masks: Vec<MaskFill>,
    /// A classifier's class probabilities, most likely first.
    pub classes: Vec<Candidate>,
}

/// The page's view of `model`, or why it has none.
pub fn model_info(model: &Model) -> Result<ModelInfo> {
    match model {
        Model::Gpt { model: g, .. } => {
            let c = &g.config;
            let positions = match c.positions {
                Positions::Learned => "learned",
                Positions::Sinusoidal => "sinusoidal",
                Positions::Rope => "rope",
                Positions::Alibi => "alibi",
                Positions::None => "none",
            };
            let table = match (&g.wpe, c.positions) {
                (Some(wpe), _) => rows(&wpe.weight.value(), 64)?,
                (None, Positions::Sinusoidal) => {
                    rows(&crate::nn::positional::sinusoidal_table(0, c.block_size.min(64), c.n_embd), 64)?
                }
                _ => Vec::new(),
            };
            Ok(ModelInfo {
                family: "gpt",
                describe: model.describe(),
                layers: c.n_layer,
                heads: c.n_head,
                width: c.n_embd,
                vocab: c.vocab_size,
                context: c.block_size,
                parameters: g.num_params(),
                positions,
                position_table: table,
                input: "text",
            })
        }
        Model::MaskedLm { model: m, .. } => bert_info(model, &m.bert, m.num_params(), "masks"),
        Model::TextClassifier { model: m, .. } => bert_info(model, &m.bert, m.num_params(), "classes"),
        Model::Encoder(e) => bert_info(model, &e.bert, e.bert.num_params(), "text"),
        Model::ImageClassifier { model: v, .. } => {
            let c = &v.config;
            Ok(ModelInfo {
                family: "vit",
                describe: model.describe(),
                layers: c.num_hidden_layers,
                heads: c.num_attention_heads,
                width: c.hidden_size,
                vocab: 0,
                context: c.num_patches() + 1,
                parameters: v.num_params(),
                positions: "learned",
                position_table: rows(
                    &v.position_embeddings.value().reshape(&[c.num_patches() + 1, c.hidden_size])?,
                    64,
                )?,
                input: "image",
            })
        }
        Model::Translator { model: ed, .. } => {
            // the shape of its cross-attention, from one tiny pass
            let c = ed.specials();
            let maps = no_grad(|| ed.cross_attention(&[c.eos], &[c.start]))?;
            Ok(ModelInfo {
                family: "encoder-decoder",
                describe: model.describe(),
                layers: maps.len(),
                heads: maps.first().map_or(0, |m| m.shape()[0]),
                width: 0,
                vocab: c.vocab,
                context: ed.default_max_len(),
                parameters: ed.num_params(),
                positions: "the model's own",
                position_table: Vec::new(),
                input: "source",
            })
        }
        other => Err(Error::Config(format!(
            "qkv explain shows transformers (GPT, BERT, ViT, encoder–decoders); this is {}{}",
            other.describe(),
            match other {
                Model::Recurrent { .. } | Model::Mamba { .. } => ", which has no attention to show (see `qkv compare`)",
                _ => "",
            }
        ))),
    }
}

fn bert_info(model: &Model, bert: &Bert, parameters: usize, input: &'static str) -> Result<ModelInfo> {
    let c = &bert.config;
    Ok(ModelInfo {
        family: "bert",
        describe: model.describe(),
        layers: c.num_hidden_layers,
        heads: c.num_attention_heads,
        width: c.hidden_size,
        vocab: c.vocab_size,
        context: c.max_position_embeddings,
        parameters,
        positions: "learned",
        position_table: rows(&bert.embeddings.position_embeddings.weight.value(), 64)?,
        input,
    })
}

/// The first `max_rows` rows of a `[R, C]` tensor, each cut to [`SHOWN_FEATURES`].
fn rows(t: &Tensor, max_rows: usize) -> Result<Vec<Vec<f32>>> {
    let (r, c) = t.dims2()?;
    let v = t.to_vec();
    Ok((0..r.min(max_rows)).map(|i| v[i * c..i * c + c.min(SHOWN_FEATURES)].to_vec()).collect())
}

/// The length of each row of `[1, T, C]` (or `[T, C]`).
fn norms(t: &Tensor) -> Vec<f32> {
    let c = *t.shape().last().expect("a vector per token");
    t.to_vec().chunks(c).map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt()).collect()
}

/// Walk the blocks from `x` (`[1, T, C]`): each one traced.
fn walk_blocks(blocks: &[Block], mut x: Tensor, mask: Option<&[bool]>) -> Result<(Vec<LayerWalk>, Tensor)> {
    let mut layers = Vec::with_capacity(blocks.len());
    for block in blocks {
        let tr = block.forward_traced(&x, mask)?;
        let (_, h, t, _) = tr.probs.dims4()?;
        let p = tr.probs.to_vec();
        let attention =
            (0..h).map(|hd| (0..t).map(|i| p[(hd * t + i) * t..(hd * t + i + 1) * t].to_vec()).collect()).collect();
        layers.push(LayerWalk {
            attention,
            attention_norm: norms(&tr.attn),
            mlp_norm: norms(&tr.mlp),
            residual_norm: norms(&tr.out),
        });
        x = tr.out;
    }
    Ok((layers, x))
}

fn candidates(tok: Option<&Tokenizer>, logits: &[f32], s: &Sampling, top: usize) -> Vec<Candidate> {
    distribution(logits, s)
        .into_iter()
        .take(top)
        .map(|(id, probability)| Candidate {
            id,
            label: tok.map_or_else(|| format!("#{id}"), |t| token_label(t, id)),
            probability,
        })
        .collect()
}

/// Follow `text` through a GPT or a BERT (a ViT takes [`walk_image`]). For
/// a GPT the distribution is after the last token, with `sampling` applied,
/// its `top` most likely kept; text longer than the context keeps its last
/// tokens (a BERT, its first), with a note.
pub fn walk_text(model: &Model, text: &str, sampling: &Sampling, top: usize) -> Result<Walk> {
    sampling.validate()?;
    no_grad(|| match model {
        Model::Gpt { model: g, tokenizer, .. } => walk_gpt(g, tokenizer, text, sampling, top),
        Model::MaskedLm { model: m, tokenizer, extras } => {
            let tok = tokenizer.as_ref().ok_or_else(no_tokenizer)?;
            let (mut walk, x, ids) = walk_bert(&m.bert, tok, extras.max_len, text)?;
            let sp = Specials::of(tok)?;
            let logits = m.head.forward(&x, &m.bert.embeddings.word_embeddings.weight.value())?; // [1, T, V]
            let v = logits.dim(-1)?;
            let l = logits.to_vec();
            walk.masks = ids
                .iter()
                .enumerate()
                .filter(|&(_, &id)| id == sp.mask)
                .map(|(position, _)| MaskFill {
                    position,
                    candidates: candidates(Some(tok), &l[position * v..(position + 1) * v], sampling, top),
                })
                .collect();
            Ok(walk)
        }
        Model::TextClassifier { model: m, tokenizer, labels, extras } => {
            let tok = tokenizer.as_ref().ok_or_else(no_tokenizer)?;
            let (mut walk, _, ids) = walk_bert(&m.bert, tok, extras.max_len, text)?;
            let t = ids.len();
            let mask = vec![true; t];
            let logits = m.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 1, t }, &Dropout::default())?;
            walk.classes = classes(&logits.to_vec(), labels);
            Ok(walk)
        }
        Model::Encoder(e) => Ok(walk_bert(&e.bert, &e.tokenizer, e.max_len, text)?.0),
        Model::Translator { model: ed, tokenizer, extras } => {
            let tok = tokenizer.as_ref().ok_or_else(no_tokenizer)?;
            let max_len = extras.as_ref().map_or(ed.default_max_len(), |e| e.max_len);
            walk_translation(ed.as_ref(), tok, max_len, text)
        }
        other => Err(model_info(other).err().unwrap_or_else(|| Error::Config("give it an image".into()))),
    })
}

fn no_tokenizer() -> Error {
    Error::Config("the model directory has no tokenizer files to read text with".into())
}

fn classes(logits: &[f32], labels: &[String]) -> Vec<Candidate> {
    distribution(logits, &Sampling::default())
        .into_iter()
        .map(|(id, probability)| Candidate {
            id,
            label: labels.get(id as usize).cloned().unwrap_or_else(|| format!("class {id}")),
            probability,
        })
        .collect()
}

fn walk_gpt(g: &Gpt, tok: &Tokenizer, text: &str, s: &Sampling, top: usize) -> Result<Walk> {
    let mut ids = tok.encode(text)?;
    if ids.is_empty() {
        return Err(Error::Data("the text has no tokens".into()));
    }
    let limit = g.config.block_size;
    let note = (ids.len() > limit)
        .then(|| format!("the text has {} tokens; the model's context is {limit}: kept the last {limit}", ids.len()));
    if ids.len() > limit {
        ids.drain(..ids.len() - limit);
    }
    let t = ids.len();
    let none = Dropout::default();
    let tokens = g.wte.forward(&ids, &[1, t])?; // [1, T, C]
    let x = g.embed(&ids, 1, t, 0, &none)?; // tokens + positions
    let positions = if matches!(g.config.positions, Positions::Learned | Positions::Sinusoidal) {
        rows(&x.sub(&tokens)?.reshape(&[t, g.config.n_embd])?, t)?
    } else {
        Vec::new()
    };
    let input_norm = norms(&x);
    let (layers, x) = walk_blocks(&g.h, x, None)?;
    let logits = g.logits(&g.ln_f.forward(&x)?)?; // [1, T, V]
    let v = logits.dim(-1)?;
    let l = logits.to_vec();
    Ok(Walk {
        tokens: ids.iter().map(|&id| TokenInfo { id, label: token_label(tok, id) }).collect(),
        note,
        token_embedding: rows(&tokens.reshape(&[t, g.config.n_embd])?, t)?,
        position_embedding: positions,
        input_norm,
        layers,
        next: candidates(Some(tok), &l[(t - 1) * v..], s, top),
        masks: Vec::new(),
        classes: Vec::new(),
        keys: Vec::new(),
        translation: None,
    })
}

/// An encoder–decoder on a source sentence: its translation (beam 4) and,
/// layer by layer and head by head, the cross-attention of each translated
/// token over the source tokens (the same maps as `qkv attention --source`).
pub fn walk_translation(ed: &dyn EncoderDecoder, tok: &Tokenizer, max_len: usize, source: &str) -> Result<Walk> {
    let (maps, translation) = of_translation(ed, tok, max_len, source, None)?;
    let info = |ids: &[u32]| ids.iter().map(|&id| TokenInfo { id, label: token_label(tok, id) }).collect();
    let (tq, tk) = (maps.query_ids.len(), maps.key_ids.len());
    let layers = maps
        .layers
        .iter()
        .map(|l| {
            let (h, _, _) = l.dims3()?;
            let v = l.to_vec();
            let attention = (0..h)
                .map(|hd| (0..tq).map(|i| v[(hd * tq + i) * tk..(hd * tq + i + 1) * tk].to_vec()).collect())
                .collect();
            Ok(LayerWalk { attention, attention_norm: Vec::new(), mlp_norm: Vec::new(), residual_norm: Vec::new() })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Walk {
        tokens: info(&maps.query_ids),
        keys: info(&maps.key_ids),
        translation: Some(translation),
        note: maps.note,
        token_embedding: Vec::new(),
        position_embedding: Vec::new(),
        input_norm: Vec::new(),
        layers,
        next: Vec::new(),
        masks: Vec::new(),
        classes: Vec::new(),
    })
}

/// Draw the token after `text` from a GPT with `sampling` (its seed fixes
/// the draw) and append it: the token and the longer text. The text's last
/// `context` tokens are read.
pub fn sample_next(model: &Model, text: &str, sampling: &Sampling) -> Result<(TokenInfo, String)> {
    sampling.validate()?;
    let Model::Gpt { model: g, tokenizer, .. } = model else {
        return Err(Error::Config(format!("only a GPT predicts the next token; this is {}", model.describe())));
    };
    let mut ids = tokenizer.encode(text)?;
    if ids.is_empty() {
        return Err(Error::Data("the text has no tokens".into()));
    }
    let all = ids.clone();
    if ids.len() > g.config.block_size {
        ids.drain(..ids.len() - g.config.block_size);
    }
    let t = ids.len();
    let logits = no_grad(|| g.forward(&ids, 1, t, &Dropout::default()))?; // [1, T, V]
    let v = logits.dim(-1)?;
    let l = logits.to_vec();
    let id = sample(&l[(t - 1) * v..], sampling, &mut Rng::new(sampling.seed));
    let mut longer = all;
    longer.push(id);
    Ok((TokenInfo { id, label: token_label(tokenizer, id) }, tokenizer.decode(&longer)?))
}

/// A BERT's walk and its last hidden states `[1, T, C]` and ids.
fn walk_bert(bert: &Bert, tok: &Tokenizer, max_len: usize, text: &str) -> Result<(Walk, Tensor, Vec<u32>)> {
    let (ids, note) = bert_input(bert, tok, max_len, text)?;
    let t = ids.len();
    let mask = vec![true; t];
    let c = bert.config.hidden_size;
    let x = bert.embed(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 1, t }, &Dropout::default())?;
    let e = &bert.embeddings;
    let words = e.word_embeddings.forward(&ids, &[t])?;
    let pos: Vec<u32> = (0..t as u32).collect();
    let positions = e.position_embeddings.forward(&pos, &[t])?;
    let input_norm = norms(&x);
    let (layers, x) = walk_blocks(&bert.layers, x, Some(&mask))?;
    let walk = Walk {
        tokens: ids.iter().map(|&id| TokenInfo { id, label: token_label(tok, id) }).collect(),
        note,
        token_embedding: rows(&words.reshape(&[t, c])?, t)?,
        position_embedding: rows(&positions.reshape(&[t, c])?, t)?,
        input_norm,
        layers,
        next: Vec::new(),
        masks: Vec::new(),
        classes: Vec::new(),
        keys: Vec::new(),
        translation: None,
    };
    Ok((walk, x, ids))
}

/// Follow an image (prepared as the model expects: `[ch, H, W]`) through a
/// ViT: `[CLS]` and one token per patch, and the predicted classes.
pub fn walk_image(vit: &Vit, labels: &[String], pixels: &[f32]) -> Result<Walk> {
    no_grad(|| {
        let c = vit.config.hidden_size;
        let n = vit.config.num_patches();
        let side = (n as f64).sqrt().round() as usize;
        let x = vit.embed(pixels, 1, &Dropout::default())?; // [1, N + 1, C]
        let positions = vit.position_embeddings.value().reshape(&[n + 1, c])?;
        let tokens = x.reshape(&[n + 1, c])?.sub(&positions)?;
        let input_norm = norms(&x);
        let (layers, _) = walk_blocks(&vit.layers, x, None)?;
        let logits = vit.forward(pixels, 1, &Dropout::default())?;
        Ok(Walk {
            tokens: std::iter::once(TokenInfo { id: 0, label: "[CLS]".into() })
                .chain((0..n).map(|p| TokenInfo {
                    id: p as u32 + 1,
                    label: format!("{},{}", p / side.max(1) + 1, p % side.max(1) + 1),
                }))
                .collect(),
            note: None,
            token_embedding: rows(&tokens, n + 1)?,
            position_embedding: rows(&positions, n + 1)?,
            input_norm,
            layers,
            next: Vec::new(),
            masks: Vec::new(),
            classes: classes(&logits.to_vec(), labels),
            keys: Vec::new(),
            translation: None,
        })
    })
}

/// The cost of attention at one sequence length: the naive kernel (every
/// head's `T × T` probabilities) against the tiled one (a tile at a time).
#[derive(Serialize)]
pub struct CostPoint {
    pub t: usize,
    pub naive_ms: f64,
    pub tiled_ms: f64,
    /// Bytes the naive kernel's probabilities take: `H·T²` floats.
    pub naive_bytes: u64,
    /// Bytes the tiled kernel keeps beyond its inputs and output: a
    /// log-sum-exp per query and head, plus one `64 × 64` tile per thread.
    pub tiled_bytes: u64,
}

/// Time both attention kernels, causal, `heads` heads of width 64, at each
/// length in `ts` (the best of `repeats` runs). A live, small version of
/// `qkv bench attention`.
pub fn attention_cost(ts: &[usize], heads: usize, repeats: usize) -> Result<Vec<CostPoint>> {
    let d = 64;
    let threads = qkv_tensor::num_threads() as u64;
    ts.iter()
        .map(|&t| {
            let mut rng = qkv_tensor::Rng::new(t as u64);
            let mut rand = || Tensor::from_vec((0..heads * t * d).map(|_| rng.normal()).collect(), &[1, heads, t, d]);
            let (q, k, v) = (rand()?, rand()?, rand()?);
            let time = |kernel: AttentionKernel| -> Result<f64> {
                let opts = AttentionOpts { causal: true, kernel, ..Default::default() };
                let mut best = f64::INFINITY;
                for _ in 0..repeats.max(1) {
                    let start = std::time::Instant::now();
                    no_grad(|| attention(&q, &k, &v, &opts))?;
                    best = best.min(start.elapsed().as_secs_f64() * 1e3);
                }
                Ok(best)
            };
            Ok(CostPoint {
                t,
                naive_ms: time(AttentionKernel::Naive)?,
                tiled_ms: time(AttentionKernel::Flash)?,
                naive_bytes: (heads * t * t * 4) as u64,
                tiled_bytes: (heads * t * 4) as u64 + threads * 64 * 64 * 4,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norms_are_the_lengths_of_the_rows() {
        let t = Tensor::from_vec(vec![3.0, 4.0, 0.0, 0.0, 1.0, 0.0], &[1, 2, 3]).unwrap();
        assert_eq!(norms(&t), vec![5.0, 1.0]);
    }
}
