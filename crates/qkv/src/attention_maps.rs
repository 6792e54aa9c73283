//! Seeing inside: the attention probabilities of a model qkv opens, with the
//! tokens they lie between. Each map is a `[Tq, Tk]` matrix per head and
//! layer: row `i` is how query token `i` shares its attention among the key
//! tokens (it sums to 1). They are the numbers the model computes — the
//! softmax of the scaled scores with the model's own masks and positions —
//! materialised beside an ordinary forward pass, which itself keeps using the
//! tiled kernel that never holds them.
//!
//! - a GPT (qkv's or GPT-2): causal self-attention, each token over itself
//!   and the tokens before it;
//! - a BERT (masked LM, classifier, bare encoder): self-attention in both
//!   directions, over `[CLS] tokens [SEP]`;
//! - a ViT: self-attention over `[CLS]` and the image's patches, and its
//!   *rollout* ([`rollout`]): how much the `[CLS]` token, layer after layer,
//!   draws on each patch;
//! - an encoder–decoder: cross-attention, each target token over the source.

use qkv_tensor::{Tensor, no_grad};

use crate::data::bert_input::{Specials, wrap};
use crate::error::{Error, Result};
use crate::models::bert::{Batch, Bert};
use crate::models::load::Model;
use crate::models::vit::Vit;
use crate::tokenize::Tokenizer;
use crate::train::translation::encode_sentence;
use crate::translate::{Decoding, EncoderDecoder, translate_texts};

/// The maps of every layer with the tokens they are between.
pub struct AttentionMaps {
    /// One label per query token (the rows of each map).
    pub queries: Vec<String>,
    /// One label per key token (the columns).
    pub keys: Vec<String>,
    /// The token ids of the queries (the keys' for cross-attention are in `key_ids`).
    pub query_ids: Vec<u32>,
    pub key_ids: Vec<u32>,
    /// One `[H, Tq, Tk]` per layer.
    pub layers: Vec<Tensor>,
    /// "causal self-attention", "self-attention" or "cross-attention".
    pub kind: &'static str,
    /// Set when the input was cut to fit the model (what was kept).
    pub note: Option<String>,
}

impl AttentionMaps {
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    pub fn num_heads(&self) -> usize {
        self.layers.first().map_or(0, |l| l.shape()[0])
    }

    /// The map of one layer and head as rows: `[Tq][Tk]`.
    pub fn map(&self, layer: usize, head: usize) -> Vec<Vec<f32>> {
        let (tq, tk) = (self.queries.len(), self.keys.len());
        let v = self.layers[layer].to_vec();
        (0..tq).map(|i| v[(head * tq + i) * tk..(head * tq + i + 1) * tk].to_vec()).collect()
    }
}

/// A token as a label: its text, spaces shown as `␣`, line breaks as `↵`.
pub fn token_label(tok: &Tokenizer, id: u32) -> String {
    let text = match tok.piece(id) {
        Some(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        None => tok.token(id).unwrap_or_else(|| format!("#{id}")),
    };
    let label: String = text
        .replace('▁', " ")
        .chars()
        .map(|c| match c {
            ' ' => '␣',
            '\n' => '↵',
            c if c.is_control() => '·',
            c => c,
        })
        .collect();
    if label.is_empty() { format!("#{id}") } else { label }
}

/// The self-attention of a GPT or BERT-family model over `text`. Text longer
/// than the model's context is cut to its first tokens, with a note.
pub fn of_text(model: &Model, text: &str) -> Result<AttentionMaps> {
    match model {
        Model::Gpt { model, tokenizer, .. } => {
            let mut ids = tokenizer.encode(text)?;
            if ids.is_empty() {
                return Err(Error::Data("the text has no tokens".into()));
            }
            let limit = model.config.block_size;
            let note = (ids.len() > limit).then(|| {
                format!("the text has {} tokens; the model's context is {limit}: kept the first {limit}", ids.len())
            });
            ids.truncate(limit);
            let t = ids.len();
            let layers = model.attention_maps(&ids, 1, t)?;
            Ok(self_maps(tokenizer, ids, layers, "causal self-attention", note)?)
        }
        Model::MaskedLm { model, tokenizer, extras } => {
            bert_maps(&model.bert, tokenizer.as_ref(), extras.max_len, text)
        }
        Model::TextClassifier { model, tokenizer, extras, .. } => {
            bert_maps(&model.bert, tokenizer.as_ref(), extras.max_len, text)
        }
        Model::Encoder(enc) => bert_maps(&enc.bert, Some(&enc.tokenizer), enc.max_len, text),
        other => {
            Err(Error::Config(format!("{} has no self-attention over text to draw{}", other.describe(), hint(other))))
        }
    }
}

/// What to use instead, for a model [`of_text`] does not take.
fn hint(model: &Model) -> &'static str {
    match model {
        Model::Recurrent { .. } | Model::Mamba { .. } => {
            ": it carries a fixed-size state from token to token instead of attending (see `qkv compare`)"
        }
        Model::ImageClassifier { .. } => ": give it an image (--image FILE)",
        Model::Translator { .. } => ": give it a source sentence (--source TEXT) for its cross-attention",
        _ => "",
    }
}

fn self_maps(
    tok: &Tokenizer,
    ids: Vec<u32>,
    layers: Vec<Tensor>,
    kind: &'static str,
    note: Option<String>,
) -> Result<AttentionMaps> {
    let labels: Vec<String> = ids.iter().map(|&id| token_label(tok, id)).collect();
    Ok(AttentionMaps {
        queries: labels.clone(),
        keys: labels,
        query_ids: ids.clone(),
        key_ids: ids,
        layers: one_sequence(layers)?,
        kind,
        note,
    })
}

/// `[1, H, Tq, Tk]` per layer → `[H, Tq, Tk]`.
fn one_sequence(layers: Vec<Tensor>) -> Result<Vec<Tensor>> {
    layers
        .into_iter()
        .map(|l| {
            let (_, h, tq, tk) = l.dims4()?;
            Ok(l.reshape(&[h, tq, tk])?)
        })
        .collect()
}

fn bert_maps(bert: &Bert, tok: Option<&Tokenizer>, max_len: usize, text: &str) -> Result<AttentionMaps> {
    let tok = tok.ok_or_else(|| Error::Config("the model directory has no tokenizer files to read the text".into()))?;
    let (ids, note) = bert_input(bert, tok, max_len, text)?;
    let t = ids.len();
    let mask = vec![true; t];
    let layers = bert.attention_maps(&Batch { ids: &ids, type_ids: None, mask: &mask, b: 1, t })?;
    self_maps(tok, ids, layers, "self-attention", note)
}

/// `[CLS] text [SEP]` as a BERT reads it (at most `max_len` tokens and its
/// positions), with a note when the text was cut.
pub(crate) fn bert_input(
    bert: &Bert,
    tok: &Tokenizer,
    max_len: usize,
    text: &str,
) -> Result<(Vec<u32>, Option<String>)> {
    let sp = Specials::of(tok)?;
    let max_len = max_len.min(bert.config.max_position_embeddings);
    let raw = tok.encode(text)?;
    let keep = max_len.saturating_sub(2);
    let note = (raw.len() > keep).then(|| {
        format!(
            "the text has {} tokens; the model reads at most {keep} between [CLS] and [SEP]: kept the first {keep}",
            raw.len()
        )
    });
    Ok((wrap(&raw, max_len, &sp), note))
}

/// The self-attention of a ViT over `[CLS]` and the patches of one image
/// (`[ch, H, W]`, prepared as the model expects: `data::images::load_image`).
pub fn of_image(vit: &Vit, pixels: &[f32]) -> Result<AttentionMaps> {
    let layers = one_sequence(vit.attention_maps(pixels, 1)?)?;
    let n = vit.config.num_patches();
    let side = (n as f64).sqrt().round() as usize;
    let labels: Vec<String> = std::iter::once("[CLS]".to_string())
        .chain((0..n).map(|p| format!("{},{}", p / side.max(1) + 1, p % side.max(1) + 1)))
        .collect();
    let ids: Vec<u32> = (0..=n as u32).collect();
    Ok(AttentionMaps {
        queries: labels.clone(),
        keys: labels,
        query_ids: ids.clone(),
        key_ids: ids,
        layers,
        kind: "self-attention",
        note: None,
    })
}

/// Attention rollout (Abnar & Zuidema, 2020): how much each token's final
/// vector draws on each input token through every layer. Each layer's map is
/// averaged over heads, the residual connection added as the identity
/// (`0.5·A + 0.5·I`), rows renormalised, and the layers multiplied in order:
/// `R = Â_L ··· Â_1`. Returns `R` as `[T][T]`; for a ViT, row 0 over columns
/// 1.. is what the `[CLS]` token, and so the class, draws from each patch.
pub fn rollout(maps: &AttentionMaps) -> Result<Vec<Vec<f64>>> {
    let t = maps.queries.len();
    if t != maps.keys.len() {
        return Err(Error::Data("rollout needs self-attention (as many queries as keys)".into()));
    }
    let mut r: Vec<Vec<f64>> = (0..t).map(|i| (0..t).map(|j| (i == j) as u8 as f64).collect()).collect();
    for layer in &maps.layers {
        let (h, _, _) = layer.dims3()?;
        let v = layer.to_vec();
        // Â = 0.5·mean_h(A) + 0.5·I, rows summing to 1
        let mut a = vec![vec![0.0f64; t]; t];
        for head in 0..h {
            for (i, row) in a.iter_mut().enumerate() {
                for (j, x) in row.iter_mut().enumerate() {
                    *x += v[(head * t + i) * t + j] as f64 / h as f64;
                }
            }
        }
        for (i, row) in a.iter_mut().enumerate() {
            row.iter_mut().for_each(|x| *x *= 0.5);
            row[i] += 0.5;
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|x| *x /= s);
        }
        // R ← Â · R
        r = a.iter().map(|ai| (0..t).map(|j| (0..t).map(|k| ai[k] * r[k][j]).sum()).collect()).collect();
    }
    Ok(r)
}

/// The cross-attention of an encoder–decoder: each target token over the
/// source tokens. `target`: the translation to draw (default: the model's own,
/// beam 4).
pub fn of_translation(
    model: &dyn EncoderDecoder,
    tok: &Tokenizer,
    max_len: usize,
    source: &str,
    target: Option<&str>,
) -> Result<(AttentionMaps, String)> {
    let c = model.specials();
    let target = match target {
        Some(t) => t.to_string(),
        None => translate_texts(model, tok, &[source], max_len, &Decoding::default(), 1)?.remove(0),
    };
    let (src, cut_src) = encode_sentence(tok, source, max_len, c.eos)?;
    let (tgt, cut_tgt) = encode_sentence(tok, &target, max_len, c.eos)?;
    let mut tgt_in = vec![c.start];
    tgt_in.extend_from_slice(&tgt[..tgt.len() - 1]);
    let layers = no_grad(|| model.cross_attention(&src, &tgt_in))?;
    let note = (cut_src || cut_tgt).then(|| format!("sentences cut to the model's {max_len} tokens"));
    let maps = AttentionMaps {
        queries: tgt.iter().map(|&id| token_label(tok, id)).collect(),
        keys: src.iter().map(|&id| token_label(tok, id)).collect(),
        query_ids: tgt,
        key_ids: src,
        layers,
        kind: "cross-attention",
        note,
    };
    Ok((maps, target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(layers: Vec<Vec<f32>>, t: usize) -> AttentionMaps {
        let labels: Vec<String> = (0..t).map(|i| i.to_string()).collect();
        AttentionMaps {
            queries: labels.clone(),
            keys: labels,
            query_ids: (0..t as u32).collect(),
            key_ids: (0..t as u32).collect(),
            layers: layers.into_iter().map(|v| Tensor::from_vec(v, &[1, t, t]).unwrap()).collect(),
            kind: "self-attention",
            note: None,
        }
    }

    /// Tokens that attend only to themselves keep their own information:
    /// the rollout is the identity. Tokens that all read token 0 end up
    /// drawing on it more with every layer, and each row stays a distribution.
    #[test]
    fn rollout_follows_the_attention_through_the_layers() {
        let eye = vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        let r = rollout(&maps(vec![eye.clone(), eye], 3)).unwrap();
        for (i, row) in r.iter().enumerate() {
            for (j, &x) in row.iter().enumerate() {
                assert!((x - (i == j) as u8 as f64).abs() < 1e-12, "[{i}][{j}] = {x}");
            }
        }
        let to_first = vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let one = rollout(&maps(vec![to_first.clone()], 3)).unwrap();
        let two = rollout(&maps(vec![to_first.clone(), to_first], 3)).unwrap();
        // one layer: 0.5 from the residual, 0.5 through attention
        assert!((one[2][0] - 0.5).abs() < 1e-12 && (one[2][2] - 0.5).abs() < 1e-12, "{one:?}");
        assert!((two[2][0] - 0.75).abs() < 1e-12, "{two:?}");
        for row in two {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        let cross = AttentionMaps { keys: vec!["a".into()], ..maps(vec![vec![1.0; 9]], 3) };
        assert!(rollout(&cross).is_err(), "rollout needs self-attention");
    }
}
