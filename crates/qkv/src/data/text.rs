//! A text corpus for next-token prediction: read and check it, split it
//! (the last 10 % for validation), and cut random windows into batches.

use std::path::Path;

use qkv_tensor::Rng;

use crate::error::{Error, Result};

/// The default corpus: about 1 MB of Shakespeare (eight plays, public
/// domain; source and licence in `data/README.md`).
pub const SHAKESPEARE: &str = include_str!("../../../../data/shakespeare.txt");

/// Read a UTF-8 text file. Empty files and invalid UTF-8 are errors that say
/// where the problem is.
pub fn read_corpus(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    corpus_from_bytes(path, bytes)
}

pub fn corpus_from_bytes(path: &Path, bytes: Vec<u8>) -> Result<String> {
    if bytes.is_empty() {
        return Err(Error::format(
            path,
            "the file is empty; a corpus needs text to learn from",
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[at];
        Error::format(path, format!("not valid UTF-8: byte 0x{byte:02x} at offset {at} (convert the file to UTF-8 first)"))
    })?;
    if text.trim().is_empty() {
        return Err(Error::format(path, "the file holds only whitespace"));
    }
    Ok(text)
}

/// Token ids split into a training part and the last `val_fraction` for validation.
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Vec<u32>,
    pub val: Vec<u32>,
}

impl Split {
    pub fn new(ids: Vec<u32>, val_fraction: f64) -> Split {
        let n_val = ((ids.len() as f64) * val_fraction).round() as usize;
        let mut train = ids;
        let val = train.split_off(train.len() - n_val.min(train.len()));
        Split { train, val }
    }

    /// Both parts must hold at least one window of `block_size + 1` tokens.
    pub fn check(&self, block_size: usize) -> Result<()> {
        let need = block_size + 1;
        if self.train.len() < need || self.val.len() < need {
            return Err(Error::Data(format!(
                "the corpus is too short for a context of {block_size} tokens: the training part has {} tokens and the \
                 validation part (last 10 %) {}, each needs at least {need}; use a longer corpus or a smaller --block-size",
                self.train.len(),
                self.val.len()
            )));
        }
        Ok(())
    }
}

/// `b` random windows of `t + 1` tokens: inputs `x` and the targets `y`
/// (`x` shifted left by one), both `[B, T]`.
pub fn random_batch(data: &[u32], b: usize, t: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    let starts = (data.len() - t) as u64; // windows [s, s + t] with s + t < len
    for _ in 0..b {
        let s = rng.below(starts) as usize;
        x.extend_from_slice(&data[s..s + t]);
        y.extend_from_slice(&data[s + 1..s + t + 1]);
    }
    (x, y)
}

/// Consecutive non-overlapping windows for evaluation, in batches of up to `b`:
/// deterministic, so every evaluation sees the same text.
pub fn eval_batches(
    data: &[u32],
    b: usize,
    t: usize,
    max_batches: usize,
) -> Vec<(Vec<u32>, Vec<u32>, usize)> {
    let windows = (data.len().saturating_sub(1)) / t;
    let mut out = Vec::new();
    let mut w = 0;
    while w < windows && out.len() < max_batches {
        let n = b.min(windows - w);
        let mut x = Vec::with_capacity(n * t);
        let mut y = Vec::with_capacity(n * t);
        for i in 0..n {
            let s = (w + i) * t;
            x.extend_from_slice(&data[s..s + t]);
            y.extend_from_slice(&data[s + 1..s + t + 1]);
        }
        out.push((x, y, n));
        w += n;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_corpora_say_what_is_wrong() {
        let p = Path::new("x.txt");
        assert!(
            corpus_from_bytes(p, vec![])
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        let e = corpus_from_bytes(p, b"abc\xff\xfe".to_vec())
            .unwrap_err()
            .to_string();
        assert!(e.contains("0xff") && e.contains("offset 3"), "{e}");
        assert!(corpus_from_bytes(p, b" \n\t".to_vec()).is_err());
    }

    #[test]
    fn batches_are_shifted_windows() {
        let data: Vec<u32> = (0..100).collect();
        let (x, y) = random_batch(&data, 4, 8, &mut Rng::new(0));
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(a + 1, *b);
        }
        let ev = eval_batches(&data, 4, 10, 100);
        assert_eq!(ev.iter().map(|(_, _, n)| n).sum::<usize>(), 9); // (100-1)/10 windows
        assert_eq!(ev[0].0[..3], [0, 1, 2]);
        let split = Split::new(data, 0.1);
        assert_eq!((split.train.len(), split.val.len()), (90, 10));
        assert!(split.check(9).is_ok() && split.check(10).is_err());
    }
}
