//! A text corpus for next-token prediction: read and check it, split it
//! (the last 10 % for validation), and cut random windows into batches.

use std::ops::Range;
use std::path::Path;

use qkv_tensor::Rng;

use super::token_cache;
use super::tokens::{TokenIds, Tokens};
use crate::error::{Error, Result};
use crate::tokenize::Tokenizer;

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
        return Err(Error::format(path, "the file is empty; a corpus needs text to learn from"));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let byte = e.as_bytes()[at];
        Error::format(
            path,
            format!("not valid UTF-8: byte 0x{byte:02x} at offset {at} (convert the file to UTF-8 first)"),
        )
    })?;
    if text.trim().is_empty() {
        return Err(Error::format(path, "the file holds only whitespace"));
    }
    Ok(text)
}

/// Read a text file, replacing each invalid UTF-8 sequence by U+FFFD (for
/// users who ask for it); also returns how many were replaced.
pub fn read_corpus_lossy(path: &Path) -> Result<(String, usize)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let replaced = bytes.utf8_chunks().filter(|c| !c.invalid().is_empty()).count();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Ok((corpus_from_bytes(path, text.into_bytes())?, replaced))
}

/// The text of a corpus (the bundled Shakespeare when `path` is `None`) and
/// how to name it in messages.
pub fn load_corpus(path: Option<&Path>) -> Result<(String, String)> {
    Ok(match path {
        None => (SHAKESPEARE.to_string(), "bundled Shakespeare".to_string()),
        Some(p) => (read_corpus(p)?, p.display().to_string()),
    })
}

/// The corpus as token ids: encoded in memory by the character tokenizer (as
/// fast as reading a cache), otherwise through the token cache — tokenized
/// once, in parallel, then memory-mapped — in the cache directory or, if that
/// cannot be written, in `fallback_dir`. Also returns what happened, for the user.
pub fn corpus_tokens(tok: &Tokenizer, text: &str, source: &str, fallback_dir: &Path) -> Result<(Tokens, Vec<String>)> {
    let in_corpus = |e: Error| Error::Data(format!("corpus {source}: {e}"));
    if tok.as_char().is_some() {
        return Ok((tok.encode(text).map_err(in_corpus)?.into(), Vec::new()));
    }
    let started = std::time::Instant::now();
    let dirs: Vec<std::path::PathBuf> =
        token_cache::default_dir().into_iter().chain([fallback_dir.to_path_buf()]).collect();
    let cached = token_cache::load_or_build(&dirs, text, tok).map_err(in_corpus)?;
    let mut notes: Vec<String> =
        cached.warnings.iter().map(|w| format!("warning: cannot write the token cache: {w}")).collect();
    let where_ =
        cached.path.as_ref().map_or_else(|| "kept in memory".to_string(), |p| format!("cache {}", p.display()));
    notes.push(if cached.reused {
        format!("tokens of {source}: {} ({where_})", cached.tokens.len())
    } else {
        format!(
            "tokenized {source}: {} chars → {} tokens in {:.1} s ({where_})",
            text.chars().count(),
            cached.tokens.len(),
            started.elapsed().as_secs_f64()
        )
    });
    Ok((cached.tokens, notes))
}

/// Token ids split into a training part and the last `val_fraction` for
/// validation: two views of the same ids (in memory or memory-mapped).
#[derive(Clone, Debug)]
pub struct Split {
    pub train: Tokens,
    pub val: Tokens,
}

impl Split {
    pub fn new(ids: impl Into<Tokens>, val_fraction: f64) -> Split {
        let ids = ids.into();
        let n = ids.len();
        let n_val = ((n as f64) * val_fraction).round() as usize;
        let cut = n - n_val.min(n);
        Split { train: ids.slice(0..cut), val: ids.slice(cut..n) }
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
pub fn random_batch<D: TokenIds + ?Sized>(data: &D, b: usize, t: usize, rng: &mut Rng) -> (Vec<u32>, Vec<u32>) {
    let mut x = Vec::with_capacity(b * t);
    let mut y = Vec::with_capacity(b * t);
    let starts = (data.len() - t) as u64; // windows [s, s + t] with s + t < len
    for _ in 0..b {
        let s = rng.below(starts) as usize;
        data.extend_window(s..s + t, &mut x);
        data.extend_window(s + 1..s + t + 1, &mut y);
    }
    (x, y)
}

/// Consecutive non-overlapping windows for evaluation, in batches of up to `b`:
/// deterministic, so every evaluation sees the same text.
pub fn eval_batches<D: TokenIds + ?Sized>(
    data: &D,
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
            data.extend_window(s..s + t, &mut x);
            data.extend_window(s + 1..s + t + 1, &mut y);
        }
        out.push((x, y, n));
        w += n;
    }
    out
}

/// The positions of the targets that [`eval_batches`] scores: one stretch,
/// from 1 to 1 + (windows scored) × `t`. The text of these tokens is what
/// bits per character are measured on.
pub fn eval_targets(len: usize, b: usize, t: usize, max_batches: usize) -> Range<usize> {
    let windows = (len.saturating_sub(1) / t).min(b.saturating_mul(max_batches));
    1..1 + windows * t
}

/// Bits per character of a loss of `nats_per_token` over `tokens` tokens that
/// spell `chars` characters: comparable between tokenizers, unlike the loss.
pub fn bits_per_char(nats_per_token: f64, tokens: usize, chars: usize) -> f64 {
    nats_per_token * tokens as f64 / chars.max(1) as f64 / std::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_corpora_say_what_is_wrong() {
        let p = Path::new("x.txt");
        assert!(corpus_from_bytes(p, vec![]).unwrap_err().to_string().contains("empty"));
        let e = corpus_from_bytes(p, b"abc\xff\xfe".to_vec()).unwrap_err().to_string();
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
        assert_eq!(eval_targets(100, 4, 10, 100), 1..91);
        assert_eq!(eval_targets(100, 4, 10, 1), 1..41);
        let split = Split::new(data, 0.1);
        assert_eq!((split.train.len(), split.val.len()), (90, 10));
        assert_eq!(split.val.window(0..2), [90, 91]);
        assert!(split.check(9).is_ok() && split.check(10).is_err());
    }
}
