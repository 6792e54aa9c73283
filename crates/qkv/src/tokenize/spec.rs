//! Finding a tokenizer from what the user names (`--tokenizer SPEC`).
//!
//! | SPEC | loads |
//! |---|---|
//! | `tokenizer.json` (any name) | a Hugging Face tokenizer, or qkv's character tokenizer |
//! | a model directory | its `tokenizer.json`; else `vocab.json`/`encoder.json` + `merges.txt`/`vocab.bpe` (byte-level BPE); else `vocab.txt` (BERT WordPiece) |
//! | `vocab.json` or `encoder.json` | byte-level BPE, with `merges.txt` or `vocab.bpe` beside it |
//! | `merges.txt` or `vocab.bpe` | byte-level BPE, with `vocab.json` or `encoder.json` beside it |
//! | `VOCAB,MERGES` | byte-level BPE from two files anywhere |
//! | `vocab.txt` (any other text file) | BERT WordPiece; uncased unless a `tokenizer_config.json` beside it says `"do_lower_case": false` |
//! | `gpt2` | GPT-2's tokenizer, bundled with qkv (when no file or directory of that name exists) |

use std::path::{Path, PathBuf};

use super::{Tokenizer, bert, gpt2};
use crate::error::{Error, Result};

/// What `--tokenizer` accepts, for help texts and error messages.
pub const SPEC_HELP: &str = "a tokenizer.json, a Hugging Face model directory, a GPT-2 vocab.json/encoder.json + \
     merges.txt/vocab.bpe pair (either file, or VOCAB,MERGES), a BERT vocab.txt, or `gpt2` (bundled)";

const VOCAB_NAMES: [&str; 2] = ["vocab.json", "encoder.json"];
const MERGES_NAMES: [&str; 2] = ["merges.txt", "vocab.bpe"];

impl Tokenizer {
    /// The tokenizer that `spec` names; see the table in [`self`](super::spec).
    pub fn load(spec: &str) -> Result<Tokenizer> {
        let path = Path::new(spec);
        if path.is_dir() {
            return load_dir(path);
        }
        if path.is_file() {
            return load_file(path);
        }
        if let Some((a, b)) = spec.split_once(',') {
            let (a, b) = (Path::new(a), Path::new(b));
            if a.is_file() && b.is_file() {
                return load_pair(a, b);
            }
        }
        if spec == "gpt2" {
            return gpt2::bundled();
        }
        Err(Error::Config(format!("tokenizer {spec:?}: no such file or directory; expected {SPEC_HELP}")))
    }

    /// Read a `tokenizer.json` (Hugging Face's or qkv's character format).
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let text = read_text(path)?;
        Tokenizer::from_json(&text, path)
    }
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    String::from_utf8(bytes)
        .map_err(|e| Error::format(path, format!("not UTF-8 text (byte offset {})", e.utf8_error().valid_up_to())))
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().to_lowercase()).unwrap_or_default()
}

/// The first of `names` that exists in `dir`.
fn find_in(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

fn parent(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

fn load_dir(dir: &Path) -> Result<Tokenizer> {
    if let Some(p) = find_in(dir, &["tokenizer.json"]) {
        return Tokenizer::from_file(&p);
    }
    if let (Some(v), Some(m)) = (find_in(dir, &VOCAB_NAMES), find_in(dir, &MERGES_NAMES)) {
        return gpt2::from_files(&v, &m);
    }
    if let Some(v) = find_in(dir, &["vocab.txt"]) {
        return bert::from_vocab_file(&v, lowercase_of(dir)?);
    }
    Err(Error::format(
        dir,
        "no tokenizer here: looked for tokenizer.json, vocab.json or encoder.json with merges.txt or vocab.bpe, \
         and vocab.txt",
    ))
}

fn is_merges(path: &Path, text: &str) -> bool {
    let name = file_name(path);
    MERGES_NAMES.contains(&name.as_str()) || name.ends_with(".bpe") || text.starts_with("#version")
}

/// A `.json` that is a flat token → id object, not a tokenizer.
fn is_vocab_json(text: &str) -> bool {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => {
            !m.contains_key("model") && !m.contains_key("kind") && m.values().all(|v| v.is_u64())
        }
        _ => false,
    }
}

fn load_file(path: &Path) -> Result<Tokenizer> {
    let text = read_text(path)?;
    let dir = parent(path);
    if file_name(path).ends_with(".json") {
        if !is_vocab_json(&text) {
            return Tokenizer::from_json(&text, path);
        }
        let merges = find_in(dir, &MERGES_NAMES).ok_or_else(|| {
            Error::format(
                path,
                "a BPE vocabulary needs its merges: no merges.txt or vocab.bpe beside it \
                 (or give both files as VOCAB,MERGES)",
            )
        })?;
        let m = read_text(&merges)?;
        return gpt2::from_strs(&text, path, &m, &merges);
    }
    if is_merges(path, &text) {
        let vocab = find_in(dir, &VOCAB_NAMES).ok_or_else(|| {
            Error::format(
                path,
                "BPE merges need their vocabulary: no vocab.json or encoder.json beside them \
                 (or give both files as VOCAB,MERGES)",
            )
        })?;
        let v = read_text(&vocab)?;
        return gpt2::from_strs(&v, &vocab, &text, path);
    }
    bert::from_vocab_txt(&text, path, lowercase_of(dir)?)
}

/// Two files, in either order: the one that is a JSON object is the vocabulary.
fn load_pair(a: &Path, b: &Path) -> Result<Tokenizer> {
    let (ta, tb) = (read_text(a)?, read_text(b)?);
    if is_vocab_json(&ta) {
        gpt2::from_strs(&ta, a, &tb, b)
    } else if is_vocab_json(&tb) {
        gpt2::from_strs(&tb, b, &ta, a)
    } else {
        Err(Error::format(
            a,
            format!("neither this nor {} is a BPE vocabulary (a JSON object from token to id)", b.display()),
        ))
    }
}

/// Whether a BERT vocabulary is uncased: `do_lower_case` of the
/// `tokenizer_config.json` beside it, else true (as Hugging Face's default).
fn lowercase_of(dir: &Path) -> Result<bool> {
    let Some(p) = find_in(dir, &["tokenizer_config.json"]) else {
        return Ok(true);
    };
    let v: serde_json::Value =
        serde_json::from_str(&read_text(&p)?).map_err(|e| Error::format(&p, format!("not JSON: {e}")))?;
    match v.get("do_lower_case") {
        None | Some(serde_json::Value::Null) => Ok(true),
        Some(serde_json::Value::Bool(b)) => Ok(*b),
        Some(other) => {
            Err(Error::format(&p, format!("field \"do_lower_case\": expected true or false, found {other}")))
        }
    }
}
