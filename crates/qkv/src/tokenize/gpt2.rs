//! GPT-2's tokenizer: byte-level BPE, reproduced exactly from its vocabulary
//! (`encoder.json`, Hugging Face's `vocab.json`) and merges (`vocab.bpe`,
//! `merges.txt`).
//!
//! 1. The text is cut into pieces by GPT-2's regex: contractions (`'s 't 're
//!    've 'm 'll 'd`), an optional space plus letters, or plus digits, or plus
//!    other symbols, and runs of whitespace (a run before a word leaves its last
//!    space to the word: `"a   b"` → `a`, `"  "`, `" b"`).
//! 2. Each piece becomes bytes (UTF-8), each byte a printable character
//!    ([`byte_to_char`]: a space is `Ġ`, a newline `Ċ`), so no text is ever
//!    unknown — emoji and any script come out as byte tokens at worst.
//! 3. BPE merges adjacent symbols, always the pair that was learned first
//!    (lowest line in `vocab.bpe`), until no learned pair is left.
//!
//! Decoding maps tokens back to bytes and the bytes to UTF-8. `<|endoftext|>`
//! (id 50256) is a special token: text that spells it encodes to its id, as in
//! Hugging Face. The standard files are bundled with qkv (`data/tokenizers/gpt2/`,
//! MIT), so `--tokenizer gpt2` needs no download.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::OnceLock;

use tokenizers::AddedToken;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

use super::Tokenizer;
use crate::error::{Error, Result};

/// GPT-2's vocabulary: token string → id, 50,257 entries.
pub const VOCAB_JSON: &str = include_str!("../../../../data/tokenizers/gpt2/encoder.json");
/// GPT-2's 50,000 merges, one pair per line, in the order they were learned.
pub const MERGES_TXT: &str = include_str!("../../../../data/tokenizers/gpt2/vocab.bpe");
/// The end-of-text token of GPT-2 (and of qkv's trained GPT-style tokenizers).
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The bundled GPT-2 tokenizer (what `--tokenizer gpt2` loads).
pub fn bundled() -> Result<Tokenizer> {
    from_strs(VOCAB_JSON, Path::new("<bundled gpt2>/encoder.json"), MERGES_TXT, Path::new("<bundled gpt2>/vocab.bpe"))
}

/// A byte-level BPE tokenizer (GPT-2, RoBERTa, …) from a vocabulary file and a
/// merges file.
pub fn from_files(vocab: &Path, merges: &Path) -> Result<Tokenizer> {
    let v = std::fs::read_to_string(vocab).map_err(|e| Error::io(vocab, e))?;
    let m = std::fs::read_to_string(merges).map_err(|e| Error::io(merges, e))?;
    from_strs(&v, vocab, &m, merges)
}

/// [`from_files`] on the files' text; the paths are for error messages.
pub fn from_strs(vocab_json: &str, vocab_path: &Path, merges_txt: &str, merges_path: &Path) -> Result<Tokenizer> {
    let vocab = parse_vocab(vocab_json, vocab_path)?;
    let merges = parse_merges(merges_txt, merges_path, &vocab, vocab_path)?;
    let has_eot = vocab.contains_key(END_OF_TEXT);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .build()
        .map_err(|e| Error::format(merges_path, format!("cannot build BPE: {e}")))?;
    let specials = if has_eot { vec![END_OF_TEXT] } else { vec![] };
    Ok(pipeline(bpe, &specials)?.into())
}

/// GPT-2's pipeline around a BPE model, as Hugging Face's `gpt2`: byte-level
/// pre-tokenizer with GPT-2's regex and no added prefix space, byte-level
/// decoder and post-processor (which adds no tokens); `specials` are matched
/// in text as whole tokens.
pub fn pipeline(bpe: BPE, specials: &[&str]) -> Result<tokenizers::Tokenizer> {
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.with_post_processor(Some(ByteLevel::new(true, false, true)));
    tok.add_special_tokens(specials.iter().map(|s| AddedToken::from(*s, true)))
        .map_err(|e| Error::Data(format!("adding special tokens: {e}")))?;
    Ok(tok)
}

/// `vocab.json`: a JSON object from token string to id, ids distinct.
pub fn parse_vocab(text: &str, path: &Path) -> Result<HashMap<String, u32>> {
    let vocab: HashMap<String, u32> = serde_json::from_str(text)
        .map_err(|e| Error::format(path, format!("not a BPE vocabulary (a JSON object from token to id): {e}")))?;
    if vocab.is_empty() {
        return Err(Error::format(path, "the vocabulary is empty"));
    }
    let mut by_id: HashMap<u32, &str> = HashMap::with_capacity(vocab.len());
    for (token, &id) in &vocab {
        if let Some(other) = by_id.insert(id, token) {
            let (a, b) = if other < token.as_str() { (other, token.as_str()) } else { (token.as_str(), other) };
            return Err(Error::format(path, format!("id {id} is given to two tokens, {a:?} and {b:?}")));
        }
    }
    Ok(vocab)
}

/// `merges.txt`: an optional `#version` line, then one merge per line, two
/// tokens separated by one space. Both tokens and their concatenation must be
/// in the vocabulary. Errors name the line.
pub fn parse_merges(
    text: &str,
    path: &Path,
    vocab: &HashMap<String, u32>,
    vocab_path: &Path,
) -> Result<Vec<(String, String)>> {
    let mut merges = Vec::new();
    let mut seen = HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    // blank lines are allowed only at the end of the file
    let last = lines.iter().rposition(|l| !l.trim().is_empty()).map_or(0, |i| i + 1);
    for (i, line) in lines[..last].iter().enumerate() {
        let n = i + 1;
        if i == 0 && line.starts_with("#version") {
            continue;
        }
        let at = |msg: String| Error::format(path, format!("line {n}: {msg}"));
        let parts: Vec<&str> = line.split(' ').collect();
        let [a, b] = parts[..] else {
            return Err(at(format!("expected two tokens separated by one space, found {line:?}")));
        };
        if a.is_empty() || b.is_empty() {
            return Err(at(format!("expected two tokens separated by one space, found {line:?}")));
        }
        for t in [a, b] {
            if !vocab.contains_key(t) {
                return Err(at(format!("token {t:?} is not in the vocabulary {}", vocab_path.display())));
            }
        }
        let merged = format!("{a}{b}");
        if !vocab.contains_key(&merged) {
            return Err(at(format!(
                "the merge of {a:?} and {b:?}, {merged:?}, is not in the vocabulary {}",
                vocab_path.display()
            )));
        }
        if !seen.insert((a, b)) {
            return Err(at(format!("the merge {a:?} {b:?} appears twice")));
        }
        merges.push((a.to_string(), b.to_string()));
    }
    Ok(merges)
}

/// GPT-2's table from byte to printable character: the printable Latin-1
/// bytes (`!`…`~`, `¡`…`¬`, `®`…`ÿ`) stand for themselves; the other 68 bytes
/// take the characters from U+0100 on, in order (space → `Ġ` U+0120,
/// newline → `Ċ` U+010A).
pub fn byte_to_char() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut table = ['\0'; 256];
        let mut next = 0x100u32;
        for b in 0..=255u8 {
            table[b as usize] = if printable(b) {
                b as char
            } else {
                next += 1;
                char::from_u32(next - 1).expect("below U+0200")
            };
        }
        table
    })
}

/// The bytes a byte-level token stands for; `None` if it holds a character
/// that is not in the byte table (e.g. an added token like `<|endoftext|>`
/// spelled with characters outside it).
pub fn token_bytes(token: &str) -> Option<Vec<u8>> {
    static INVERSE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    let inverse = INVERSE.get_or_init(|| byte_to_char().iter().enumerate().map(|(b, &c)| (c, b as u8)).collect());
    token.chars().map(|c| inverse.get(&c).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_table_matches_gpt2() {
        let t = byte_to_char();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0xAD], 'Ń'); // the soft hyphen is not printable
        let distinct: HashSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
        assert_eq!(token_bytes("Ġworld").unwrap(), b" world");
    }

    #[test]
    fn bad_merges_name_the_line() {
        let vocab: HashMap<String, u32> =
            [("a", 0), ("b", 1), ("ab", 2)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        let p = Path::new("merges.txt");
        let v = Path::new("vocab.json");
        assert_eq!(parse_merges("#version: 0.2\na b\n\n", p, &vocab, v).unwrap().len(), 1);
        let e = parse_merges("#version: 0.2\na b\nab\n", p, &vocab, v).unwrap_err().to_string();
        assert!(e.contains("merges.txt") && e.contains("line 3"), "{e}");
        let e = parse_merges("a c", p, &vocab, v).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("\"c\""), "{e}");
        let e = parse_merges("b a", p, &vocab, v).unwrap_err().to_string();
        assert!(e.contains("\"ba\""), "{e}");
        let e = parse_merges("a b\n\na b", p, &vocab, v).unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
