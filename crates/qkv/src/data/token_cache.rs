//! The token cache: a corpus tokenized once (in parallel,
//! [`crate::tokenize::corpus`]), stored as a compact binary file of ids, and
//! memory-mapped by training — so a 5 MB corpus is not re-tokenized by every
//! run or resume, and its ids take 2 bytes each, not 4, and no heap.
//!
//! The file is named `<corpus hash>-<tokenizer fingerprint>.tokens`, so each
//! (corpus, tokenizer) pair has its own, and a changed corpus or tokenizer
//! simply misses and builds a new one. It lives in the cache directory
//! ([`default_dir`]); where that cannot be written, in the fallback the caller
//! gives (the run directory). Cache files can be deleted at any time.
//!
//! Layout, little-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `QKVTOKS1` |
//! | 8..12 | bytes per id: 2 (`u16`, when the vocabulary has at most 65,536 tokens) or 4 (`u32`) |
//! | 12..16 | 0 (reserved) |
//! | 16..24 | N, the number of ids |
//! | 24..32 | vocabulary size |
//! | 32..40 | corpus length in bytes |
//! | 40..48 | corpus hash (FNV-1a, 64 bits) |
//! | 48..56 | tokenizer fingerprint ([`Tokenizer::fingerprint`]) |
//! | 56..64 | 0 (reserved) |
//! | 64.. | N ids |
//!
//! A file is used only if its header matches the corpus and tokenizer at hand
//! and its length is exactly 64 + N × width; anything else is rebuilt.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::tokens::{Tokens, Width};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomic_with;
use crate::tokenize::Tokenizer;
use crate::tokenize::corpus::encode_corpus;

const MAGIC: &[u8; 8] = b"QKVTOKS1";
const HEADER: usize = 64;

/// What a cache file must match.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub corpus_len: u64,
    pub corpus_hash: u64,
    pub tokenizer: u64,
    pub vocab_size: u64,
}

impl Key {
    pub fn new(text: &str, tok: &Tokenizer) -> Key {
        Key {
            corpus_len: text.len() as u64,
            corpus_hash: crate::tokenize::tokenizer::fnv1a64(text.as_bytes()),
            tokenizer: tok.fingerprint(),
            vocab_size: tok.vocab_size() as u64,
        }
    }

    /// The cache file's name.
    pub fn file_name(&self) -> String {
        format!("{:016x}-{:016x}.tokens", self.corpus_hash, self.tokenizer)
    }

    fn width(&self) -> Width {
        Width::for_vocab(self.vocab_size as usize)
    }
}

/// The cache directory: `$QKV_CACHE_DIR`, else `$XDG_CACHE_HOME/qkv/tokens`,
/// else `~/.cache/qkv/tokens`.
pub fn default_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("QKV_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = env("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("qkv").join("tokens"));
    }
    env("HOME").map(|h| PathBuf::from(h).join(".cache").join("qkv").join("tokens"))
}

/// A corpus's ids and where they came from.
#[derive(Debug)]
pub struct Cached {
    pub tokens: Tokens,
    /// The cache file the ids are mapped from; `None` if no directory could
    /// be written (the ids are then in memory).
    pub path: Option<PathBuf>,
    /// True if an existing cache file was used, false if the corpus was tokenized now.
    pub reused: bool,
    /// Why a directory could not hold the cache, if one could not.
    pub warnings: Vec<String>,
}

/// The ids of `text` under `tok`: from the first of `dirs` that holds a valid
/// cache file, else tokenized now and written to the first of `dirs` that can
/// be written.
pub fn load_or_build(dirs: &[PathBuf], text: &str, tok: &Tokenizer) -> Result<Cached> {
    let key = Key::new(text, tok);
    for dir in dirs {
        let path = dir.join(key.file_name());
        if let Ok(Some(tokens)) = read(&path, &key) {
            return Ok(Cached { tokens, path: Some(path), reused: true, warnings: vec![] });
        }
    }
    let ids = encode_corpus(tok, text)?;
    if let Some(bad) = ids.iter().find(|&&id| id as u64 >= key.vocab_size) {
        return Err(Error::Data(format!(
            "the tokenizer produced id {bad}, outside its vocabulary of {}",
            key.vocab_size
        )));
    }
    let mut warnings = Vec::new();
    for dir in dirs {
        let path = dir.join(key.file_name());
        let written = std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(dir, e))
            .and_then(|_| write(&path, &key, &ids))
            .and_then(|_| read(&path, &key));
        match written {
            Ok(Some(tokens)) => {
                return Ok(Cached { tokens, path: Some(path), reused: false, warnings });
            }
            Ok(None) => warnings.push(format!("{}: written but unreadable as a token cache", path.display())),
            Err(e) => warnings.push(e.to_string()),
        }
    }
    Ok(Cached { tokens: ids.into(), path: None, reused: false, warnings })
}

/// Write `ids` as a cache file for `key` (atomically: a crash leaves no half file).
pub fn write(path: &Path, key: &Key, ids: &[u32]) -> Result<()> {
    let width = key.width();
    let mut header = Vec::with_capacity(HEADER);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&(width.bytes() as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    for v in [ids.len() as u64, key.vocab_size, key.corpus_len, key.corpus_hash, key.tokenizer, 0] {
        header.extend_from_slice(&v.to_le_bytes());
    }
    debug_assert_eq!(header.len(), HEADER);
    let mut body = Vec::with_capacity(ids.len() * width.bytes());
    match width {
        Width::U16 => ids.iter().for_each(|&id| body.extend_from_slice(&(id as u16).to_le_bytes())),
        Width::U32 => ids.iter().for_each(|&id| body.extend_from_slice(&id.to_le_bytes())),
    }
    write_atomic_with(path, |f: &mut File| {
        f.write_all(&header)?;
        f.write_all(&body)
    })
}

/// Map a cache file; `None` if it is missing or was made for another corpus
/// or tokenizer, an error only if it exists but cannot be read.
pub fn read(path: &Path, key: &Key) -> Result<Option<Tokens>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    // SAFETY: cache files are only ever replaced by rename (write_atomic), never
    // modified in place, so the mapped bytes cannot change under us.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    if map.len() < HEADER || &map[..8] != MAGIC {
        return Ok(None);
    }
    let u32_at = |i: usize| u32::from_le_bytes(map[i..i + 4].try_into().expect("4 bytes"));
    let u64_at = |i: usize| u64::from_le_bytes(map[i..i + 8].try_into().expect("8 bytes"));
    let width = key.width();
    let count = u64_at(16) as usize;
    let found = Key { vocab_size: u64_at(24), corpus_len: u64_at(32), corpus_hash: u64_at(40), tokenizer: u64_at(48) };
    let fits = count.checked_mul(width.bytes()).and_then(|n| n.checked_add(HEADER)) == Some(map.len());
    if found != *key || u32_at(8) as usize != width.bytes() || !fits {
        return Ok(None);
    }
    Ok(Some(Tokens::mapped(map, HEADER, width, count)))
}
