//! Masked language modelling (BERT's pre-training task): hide some tokens
//! and ask the model to recover them from the words on *both* sides.
//!
//! Of the ordinary tokens, 15 % are chosen. A chosen token becomes `[MASK]`
//! 80 % of the time, a random token 10 %, and stays itself 10 % (so the model
//! cannot learn that only `[MASK]` positions matter). The loss counts only the
//! chosen positions: the others get the ignore label.

use std::path::Path;

use qkv_tensor::Rng;

use super::bert_input::{Specials, encode, stream_sequences};
use super::classify::{SplitInfo, held_out};
use super::text::{SHAKESPEARE, read_corpus};
use crate::error::Result;
use crate::tokenize::Tokenizer;

/// Label of a position the loss ignores.
pub const IGNORE: u32 = u32::MAX;

/// How tokens are chosen and replaced.
#[derive(Clone, Copy, Debug)]
pub struct MaskingRule {
    /// Fraction of ordinary tokens chosen. Default 0.15.
    pub select: f64,
    /// Of the chosen, the fraction replaced by `[MASK]`. Default 0.8.
    pub to_mask: f64,
    /// Of the chosen, the fraction replaced by a random token. Default 0.1.
    pub to_random: f64,
}

impl Default for MaskingRule {
    fn default() -> Self {
        MaskingRule { select: 0.15, to_mask: 0.8, to_random: 0.1 }
    }
}

/// Mask `ids` in place and return the labels: the original id at chosen
/// positions, [`IGNORE`] elsewhere. `special[i]` marks tokens never chosen
/// (`[CLS]`, `[SEP]`, `[PAD]`); random replacements are drawn from the ids
/// that are not special (`ordinary`).
pub fn mask_tokens(
    ids: &mut [u32],
    special: &[bool],
    mask_id: u32,
    ordinary: &[u32],
    rule: &MaskingRule,
    rng: &mut Rng,
) -> Vec<u32> {
    let mut labels = vec![IGNORE; ids.len()];
    for i in 0..ids.len() {
        if special[i] || rng.uniform_f64() >= rule.select {
            continue;
        }
        labels[i] = ids[i];
        let r = rng.uniform_f64();
        if r < rule.to_mask {
            ids[i] = mask_id;
        } else if r < rule.to_mask + rule.to_random && !ordinary.is_empty() {
            ids[i] = ordinary[rng.below(ordinary.len() as u64) as usize];
        }
    }
    labels
}

/// Training and test sequences for masked language modelling.
pub struct MlmData {
    pub train: Vec<Vec<u32>>,
    pub test: Vec<Vec<u32>>,
    /// Where they came from, for messages.
    pub source: String,
    /// How the test part was chosen, for messages.
    pub held_out: &'static str,
}

/// The sequences of MLM, the same for training and `qkv eval`: a table's
/// texts (labels unused) split exactly as classification splits them (so a
/// classifier fine-tuned from the model never saw its test rows), each text one
/// sequence; plain text (the bundled Shakespeare when `data` is `None`) cut
/// into sequences of `max_len` tokens, the last 10 % of the tokens held out.
pub fn mlm_data(
    data: Option<&Path>,
    tok: &Tokenizer,
    max_len: usize,
    split: Option<&SplitInfo>,
    lossy: bool,
) -> Result<MlmData> {
    let specials = Specials::of(tok)?;
    if let (Some(p), Some(split)) = (data, split) {
        let h = held_out(p, split, lossy)?;
        let enc = |texts: &[String]| -> Result<Vec<Vec<u32>>> {
            texts.iter().map(|t| encode(tok, t, max_len, &specials)).collect()
        };
        return Ok(MlmData {
            train: enc(&h.train.texts)?,
            test: enc(&h.test.texts)?,
            source: format!("the texts of {}", p.display()),
            held_out: "held-out test rows",
        });
    }
    let (text, source) = match data {
        Some(p) => (read_corpus(p)?, p.display().to_string()),
        None => (SHAKESPEARE.to_string(), "bundled Shakespeare".into()),
    };
    let ids = tok.encode(&text)?;
    let cut = ids.len() - ids.len() / 10;
    Ok(MlmData {
        train: stream_sequences(&ids[..cut], max_len, &specials),
        test: stream_sequences(&ids[cut..], max_len, &specials),
        source,
        held_out: "last 10 % of the text",
    })
}

/// Whether a data file is a table (CSV/TSV/JSONL) rather than plain text.
pub fn is_table(p: &Path) -> bool {
    p.extension().and_then(|x| x.to_str()).is_some_and(|x| matches!(x, "csv" | "tsv" | "jsonl" | "json" | "ndjson"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_statistics_match_the_rule() {
        let n = 400_000;
        let original: Vec<u32> = (0..n).map(|i| 10 + (i % 1000) as u32).collect();
        let mut ids = original.clone();
        let mut special = vec![false; n];
        special[0] = true; // a [CLS]
        let ordinary: Vec<u32> = (10..1010).collect();
        let labels = mask_tokens(&mut ids, &special, 3, &ordinary, &MaskingRule::default(), &mut Rng::new(0));
        assert_eq!(labels[0], IGNORE);
        let chosen: Vec<usize> = (0..n).filter(|&i| labels[i] != IGNORE).collect();
        let frac = chosen.len() as f64 / n as f64;
        assert!((frac - 0.15).abs() < 0.003, "chosen {frac}");
        let masked = chosen.iter().filter(|&&i| ids[i] == 3).count() as f64 / chosen.len() as f64;
        let kept = chosen.iter().filter(|&&i| ids[i] == original[i]).count() as f64 / chosen.len() as f64;
        assert!((masked - 0.8).abs() < 0.01, "masked {masked}");
        // kept includes random draws that happen to hit the original (1 in 1000)
        assert!((kept - 0.1).abs() < 0.01, "kept {kept}");
        assert!(chosen.iter().all(|&i| labels[i] == original[i]));
        assert!((0..n).filter(|&i| labels[i] == IGNORE).all(|i| ids[i] == original[i]));
    }
}
