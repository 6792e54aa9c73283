//! Tokenizing a whole corpus on every core, with exactly the ids of encoding
//! it in one piece.
//!
//! The text is cut into chunks of about [`CHUNK_BYTES`], each cut placed just
//! before a space that stands between two non-space characters (`"to be"` is
//! cut as `"to"` | `" be"`). At such a space every tokenizer qkv makes, and
//! GPT-2's and BERT's, starts a new pre-token whatever came before — GPT-2's
//! regex begins a word with its leading space, SentencePiece's metaspace
//! splits before `▁`, BERT splits at whitespace — so the chunks encode to the
//! same ids as the whole ([`Tokenizer::splits_at_spaces`] says when this
//! holds; otherwise the text is encoded in one piece, on one core).

use rayon::prelude::*;

use super::Tokenizer;
use crate::error::Result;

/// Target chunk size: big enough that a chunk's overhead is nothing, small
/// enough that two cores share a 1 MB corpus evenly.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// The ids of `text`, encoded in parallel chunks when that is exact.
pub fn encode_corpus(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    // characters encode in a moment, and in one piece an unknown one is
    // reported at its position in the whole text
    if tok.as_char().is_some() || !tok.splits_at_spaces() || text.len() <= CHUNK_BYTES {
        return tok.encode(text);
    }
    let parts: Vec<Vec<u32>> = chunks(text, CHUNK_BYTES).par_iter().map(|c| tok.encode(c)).collect::<Result<_>>()?;
    Ok(parts.concat())
}

/// `text` cut into consecutive pieces of about `target` bytes, each cut just
/// before a space that has a non-space character on either side. A stretch
/// with no such space stays in one piece.
pub fn chunks(text: &str, target: usize) -> Vec<&str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut cut = text.len();
        let mut p = start + target.max(1);
        while p < text.len() {
            if bytes[p] == b' ' && is_cut(text, p) {
                cut = p;
                break;
            }
            p += 1;
        }
        out.push(&text[start..cut]);
        start = cut;
    }
    out
}

/// Is the space at byte `p` between two non-whitespace characters?
fn is_cut(text: &str, p: usize) -> bool {
    let before = text[..p].chars().next_back();
    let after = text[p + 1..].chars().next();
    matches!((before, after), (Some(b), Some(a)) if !b.is_whitespace() && !a.is_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cut_before_a_lone_space_and_cover_the_text() {
        let text = "ab  cd ef\n gh ij";
        let c = chunks(text, 2);
        assert_eq!(c.concat(), text);
        assert_eq!(c, ["ab  cd", " ef\n gh", " ij"]);
        assert_eq!(chunks("", 4), Vec::<&str>::new());
        assert_eq!(chunks("é é é", 1), ["é", " é", " é"]);
    }
}
