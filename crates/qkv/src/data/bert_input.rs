//! What BERT reads: `[CLS] tokens [SEP]`, cut to a maximum length, padded to
//! the longest sequence of a batch with a mask that says which positions are
//! real. Training, evaluation and prediction all encode text through here,
//! so they feed the model the same way.

use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

/// The ids of BERT's special tokens in a WordPiece vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Specials {
    pub cls: u32,
    pub sep: u32,
    pub pad: u32,
    pub mask: u32,
}

impl Specials {
    /// Look up `[CLS] [SEP] [PAD] [MASK]`; a tokenizer without them cannot feed BERT.
    pub fn of(tok: &Tokenizer) -> Result<Specials> {
        let id = |t: &str| {
            tok.token_to_id(t).ok_or_else(|| {
                Error::Config(format!(
                    "the tokenizer has no {t} token; BERT needs [CLS] [SEP] [PAD] [MASK] \
                     (train one with `qkv tokenizer train --kind wordpiece`)"
                ))
            })
        };
        Ok(Specials { cls: id("[CLS]")?, sep: id("[SEP]")?, pad: id("[PAD]")?, mask: id("[MASK]")? })
    }

    pub fn is_special(&self, id: u32) -> bool {
        id == self.cls || id == self.sep || id == self.pad || id == self.mask
    }
}

/// `[CLS] ids [SEP]`, cut so the whole is at most `max_len` tokens.
pub fn wrap(ids: &[u32], max_len: usize, sp: &Specials) -> Vec<u32> {
    let keep = ids.len().min(max_len.saturating_sub(2));
    let mut out = Vec::with_capacity(keep + 2);
    out.push(sp.cls);
    out.extend_from_slice(&ids[..keep]);
    out.push(sp.sep);
    out
}

/// Tokenize `text` and [`wrap`] it.
pub fn encode(tok: &Tokenizer, text: &str, max_len: usize, sp: &Specials) -> Result<Vec<u32>> {
    Ok(wrap(&tok.encode(text)?, max_len, sp))
}

/// Sequences padded to the longest: ids and masks, `[B, T]`, and T.
pub fn pad_batch(seqs: &[&[u32]], pad: u32) -> (Vec<u32>, Vec<bool>, usize) {
    let t = seqs.iter().map(|s| s.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(seqs.len() * t);
    let mut mask = Vec::with_capacity(seqs.len() * t);
    for s in seqs {
        ids.extend_from_slice(s);
        mask.extend(std::iter::repeat_n(true, s.len()));
        ids.extend(std::iter::repeat_n(pad, t - s.len()));
        mask.extend(std::iter::repeat_n(false, t - s.len()));
    }
    (ids, mask, t)
}

/// Cut a token stream into `[CLS] … [SEP]` sequences of exactly `max_len`
/// tokens (the last, shorter piece is dropped).
pub fn stream_sequences(stream: &[u32], max_len: usize, sp: &Specials) -> Vec<Vec<u32>> {
    let body = max_len.saturating_sub(2).max(1);
    stream.chunks_exact(body).map(|c| wrap(c, max_len, sp)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_cut_and_pad() {
        let sp = Specials { cls: 1, sep: 2, pad: 0, mask: 3 };
        assert_eq!(wrap(&[7, 8, 9], 4, &sp), vec![1, 7, 8, 2]);
        assert_eq!(wrap(&[], 4, &sp), vec![1, 2]);
        let (ids, mask, t) = pad_batch(&[&[1, 5, 2], &[1, 2]], 0);
        assert_eq!((ids, t), (vec![1, 5, 2, 1, 2, 0], 3));
        assert_eq!(mask, vec![true, true, true, true, true, false]);
        let seqs = stream_sequences(&[10, 11, 12, 13, 14], 4, &sp);
        assert_eq!(seqs, vec![vec![1, 10, 11, 2], vec![1, 12, 13, 2]]);
    }
}
