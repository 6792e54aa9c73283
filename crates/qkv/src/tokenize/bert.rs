//! BERT's tokenizer: WordPiece over a `vocab.txt` (one token per line, the id
//! is the line number from 0), as Google's `tokenization.py` and Hugging Face.
//!
//! 1. Normalise ([`BertNormalizer`]): drop control characters, make every
//!    whitespace character a space, put spaces around CJK ideographs (each is
//!    a word), and for uncased models lower-case and strip accents (NFD, then
//!    drop the combining marks: "Héllo" → "hello").
//! 2. Pre-tokenise ([`BertPreTokenizer`]): split at whitespace, and make each
//!    punctuation character a word of its own ("don't" → `don ' t`).
//! 3. WordPiece: split each word greedily into the longest vocabulary entries
//!    from the left; pieces after the first carry the `##` prefix
//!    ("tokenization" → `token ##ization`). A word with a piece that is not in
//!    the vocabulary, or longer than 100 characters, is `[UNK]` as a whole.
//!
//! Text that spells a special token (`[MASK]`, `[SEP]`…) gives its id; the
//! post-processor adds `[CLS] … [SEP]` only when asked
//! ([`super::Tokenizer::encode_with_special_tokens`]). Decoding joins pieces,
//! removes `##` and tidies spaces before punctuation — it cannot restore
//! case, accents or the original spacing.

use std::collections::HashMap;
use std::path::Path;

use tokenizers::AddedToken;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::Vocab;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;

use super::Tokenizer;
use crate::error::{Error, Result};

/// BERT's special tokens, in the order qkv's trained WordPiece gives them ids 0–4.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// Words longer than this many characters become `[UNK]` (as in BERT).
pub const MAX_INPUT_CHARS_PER_WORD: usize = 100;

/// BERT's tokenizer from a `vocab.txt`. `lowercase`: an uncased model
/// (lower-case and strip accents); cased models keep both.
pub fn from_vocab_file(path: &Path, lowercase: bool) -> Result<Tokenizer> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    from_vocab_txt(&text, path, lowercase)
}

/// [`from_vocab_file`] on the file's text; `path` is for error messages.
pub fn from_vocab_txt(text: &str, path: &Path, lowercase: bool) -> Result<Tokenizer> {
    // as Hugging Face: the id is the line number; trailing whitespace is not part of a token
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let token = line.trim_end();
        if token.is_empty() {
            return Err(Error::format(path, format!("line {}: empty; a vocab.txt has one token per line", i + 1)));
        }
        if vocab.insert(token.to_string(), i as u32).is_some() {
            return Err(Error::format(path, format!("line {}: the token {token:?} appears twice", i + 1)));
        }
    }
    if vocab.is_empty() {
        return Err(Error::format(path, "the vocabulary is empty"));
    }
    if !vocab.contains_key("[UNK]") {
        return Err(Error::format(path, "no [UNK] token: WordPiece needs one for words it cannot spell"));
    }
    let model = WordPiece::builder()
        .vocab(vocab.into_iter().collect::<Vocab>())
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(MAX_INPUT_CHARS_PER_WORD)
        .build()
        .map_err(|e| Error::format(path, format!("cannot build WordPiece: {e}")))?;
    Ok(pipeline(model, lowercase)?.into())
}

/// BERT's pipeline around a WordPiece model: BERT normaliser and
/// pre-tokenizer, `[CLS] … [SEP]` post-processor (when the model has both),
/// WordPiece decoder; the special tokens the model has are matched in text.
pub fn pipeline(model: WordPiece, lowercase: bool) -> Result<tokenizers::Tokenizer> {
    let id = |t: &str| tokenizers::Model::token_to_id(&model, t);
    let (cls, sep) = (id("[CLS]"), id("[SEP]"));
    let present: Vec<&str> = SPECIAL_TOKENS.into_iter().filter(|t| id(t).is_some()).collect();
    let mut tok = tokenizers::Tokenizer::new(model);
    // strip_accents None: follow `lowercase`, as BERT does
    tok.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase)))
        .map_err(|e| Error::Data(format!("setting the normaliser: {e}")))?;
    tok.with_pre_tokenizer(Some(BertPreTokenizer));
    if let (Some(cls), Some(sep)) = (cls, sep) {
        tok.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
    }
    tok.with_decoder(Some(WordPieceDecoder::new("##".into(), true)));
    // matched in the raw text, before normalisation (as Hugging Face's BERT)
    let specials = present.iter().map(|t| {
        let mut a = AddedToken::from(*t, true);
        a.normalized = false;
        a
    });
    tok.add_special_tokens(specials).map_err(|e| Error::Data(format!("adding special tokens: {e}")))?;
    Ok(tok)
}
