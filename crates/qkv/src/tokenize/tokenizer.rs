//! [`Tokenizer`]: the one tokenizer type the rest of qkv uses (training,
//! generation, evaluation, the `qkv tokenizer` command).
//!
//! It is either qkv's own [`CharTokenizer`] (one token per character, the
//! default of `qkv train`) or a Hugging Face `tokenizers` pipeline — normalizer,
//! pre-tokenizer, model (BPE, WordPiece or Unigram), post-processor, decoder —
//! which covers GPT-2's byte-level BPE, BERT's WordPiece and anything stored as
//! a `tokenizer.json`. Both are saved as `tokenizer.json`: the character
//! tokenizer in qkv's small format `{"kind": "char", "chars": "…"}`, the
//! others in Hugging Face's.

use std::path::Path;
use std::sync::OnceLock;

use tokenizers::pre_tokenizers::split::SplitPattern;
use tokenizers::{DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper};
use tokenizers::{PostProcessor, PostProcessorWrapper, PreTokenizerWrapper};

use super::char::CharTokenizer;
use super::gpt2;
use crate::error::{Error, Result};
use crate::io::atomic::write_atomic;

/// Text ↔ token ids.
#[derive(Clone)]
pub struct Tokenizer {
    inner: Inner,
    /// One more than the largest id: the model's vocabulary size V.
    vocab_size: usize,
    /// Characters each token stands for, built on first use (see [`Tokenizer::count_chars`]).
    chars_per_token: OnceLock<Option<Vec<u32>>>,
}

#[derive(Clone)]
enum Inner {
    Char(CharTokenizer),
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer({})", self.describe())
    }
}

impl From<CharTokenizer> for Tokenizer {
    fn from(tok: CharTokenizer) -> Self {
        Tokenizer { vocab_size: tok.vocab_size(), inner: Inner::Char(tok), chars_per_token: OnceLock::new() }
    }
}

impl From<tokenizers::Tokenizer> for Tokenizer {
    /// Padding and truncation are turned off: qkv encodes whole corpora, and a
    /// `tokenizer.json` made for a classifier (padded and cut to 128 tokens)
    /// would otherwise silently drop text.
    fn from(mut tok: tokenizers::Tokenizer) -> Self {
        tok.with_padding(None);
        tok.with_truncation(None).expect("turning truncation off cannot fail");
        let vocab_size = tok.get_vocab(true).values().max().map_or(0, |&m| m as usize + 1);
        Tokenizer { vocab_size, inner: Inner::Hf(Box::new(tok)), chars_per_token: OnceLock::new() }
    }
}

impl Tokenizer {
    /// The character tokenizer, if this is one.
    pub fn as_char(&self) -> Option<&CharTokenizer> {
        match &self.inner {
            Inner::Char(c) => Some(c),
            Inner::Hf(_) => None,
        }
    }

    /// The Hugging Face tokenizer, if this is one.
    pub fn as_hf(&self) -> Option<&tokenizers::Tokenizer> {
        match &self.inner {
            Inner::Hf(t) => Some(t),
            Inner::Char(_) => None,
        }
    }

    /// Ids run from 0 to `vocab_size() - 1`: the model's V.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// True for GPT-2-style byte-level tokenizers, whose tokens are bytes
    /// (shown as printable characters) rather than text.
    pub fn is_byte_level(&self) -> bool {
        matches!(self.as_hf().and_then(|t| t.get_decoder()), Some(DecoderWrapper::ByteLevel(_)))
    }

    /// One line: what kind of tokenizer and how many tokens.
    pub fn describe(&self) -> String {
        let kind = match &self.inner {
            Inner::Char(_) => "character-level",
            Inner::Hf(t) => match t.get_model() {
                ModelWrapper::BPE(_) if self.is_byte_level() => "byte-level BPE",
                ModelWrapper::BPE(_) => "BPE",
                ModelWrapper::WordPiece(_) => "WordPiece",
                ModelWrapper::Unigram(_) => "Unigram",
                ModelWrapper::WordLevel(_) => "word-level",
            },
        };
        format!("{kind}, {} tokens", self.vocab_size)
    }

    /// Token ids of `text`, without special tokens such as BERT's [CLS]/[SEP].
    /// Text that spells a special token (`<|endoftext|>`, `[MASK]`) gives its id,
    /// as in Hugging Face.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, false)
    }

    /// Token ids with the special tokens the tokenizer's post-processor adds
    /// (BERT: `[CLS] … [SEP]`; GPT-2 adds none).
    pub fn encode_with_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_inner(text, true)
    }

    fn encode_inner(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        match &self.inner {
            Inner::Char(c) => c.encode(text),
            Inner::Hf(t) => contained("tokenizing", || t.encode_fast(text, special))?
                .map(|e| e.get_ids().to_vec())
                .map_err(|e| Error::Data(format!("tokenizing failed: {e}"))),
        }
    }

    /// An id that is not in the vocabulary is an error, never a panic or a
    /// silently skipped token.
    pub fn check_ids(&self, ids: &[u32]) -> Result<()> {
        let known = |id: u32| match &self.inner {
            Inner::Char(c) => (id as usize) < c.vocab_size(),
            Inner::Hf(t) => t.id_to_token(id).is_some(),
        };
        match ids.iter().find(|&&id| !known(id)) {
            None => Ok(()),
            Some(id) => Err(Error::Data(format!(
                "token id {id} is not in the vocabulary ({}; ids 0 to {})",
                self.describe(),
                self.vocab_size.saturating_sub(1)
            ))),
        }
    }

    /// The text of `ids`. Byte-level tokens that end inside a multi-byte
    /// character decode to U+FFFD for that character.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        match &self.inner {
            Inner::Char(c) => c.decode(ids),
            Inner::Hf(t) => contained("decoding", || t.decode(ids, false))?
                .map_err(|e| Error::Data(format!("decoding failed: {e}"))),
        }
    }

    /// The token's string as the vocabulary stores it (GPT-2: `Ġworld`;
    /// WordPiece: `##ing`; SentencePiece-style: `▁the`).
    pub fn token(&self, id: u32) -> Option<String> {
        match &self.inner {
            Inner::Char(c) => c.token(id),
            Inner::Hf(t) => t.id_to_token(id),
        }
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        match &self.inner {
            Inner::Char(c) => c.encode(token).ok().filter(|v| v.len() == 1).map(|v| v[0]),
            Inner::Hf(t) => t.token_to_id(token),
        }
    }

    /// What one token stands for, as bytes: byte-level tokens are raw bytes
    /// (possibly part of a UTF-8 character); other tokens their decoded text.
    pub fn piece(&self, id: u32) -> Option<Vec<u8>> {
        let token = self.token(id)?;
        if self.is_byte_level()
            && let Some(bytes) = gpt2::token_bytes(&token)
        {
            return Some(bytes);
        }
        match &self.inner {
            Inner::Char(_) => Some(token.into_bytes()),
            Inner::Hf(t) => contained("decoding", || t.decode(&[id], false)).ok()?.ok().map(String::into_bytes),
        }
    }

    /// How many characters of text `ids` stand for — the denominator of bits
    /// per character. Exact for character and byte-level tokenizers (a UTF-8
    /// character has exactly one byte that is not a continuation byte); for
    /// the others, the characters of the decoded text (WordPiece, which
    /// lower-cases and drops spaces, decodes only approximately).
    pub fn count_chars(&self, ids: &[u32]) -> Result<usize> {
        self.check_ids(ids)?;
        if let Inner::Char(_) = self.inner {
            return Ok(ids.len());
        }
        let table = self.chars_per_token.get_or_init(|| {
            self.is_byte_level().then(|| {
                (0..self.vocab_size as u32)
                    .map(|id| self.piece(id).map_or(0, |b| b.iter().filter(|&&b| b & 0xC0 != 0x80).count() as u32))
                    .collect()
            })
        });
        match table {
            Some(t) => Ok(ids.iter().map(|&id| t[id as usize] as usize).sum()),
            None => Ok(self.decode(ids)?.chars().count()),
        }
    }

    /// A decoder for ids that arrive one at a time (generation): it emits
    /// text as soon as it is complete, e.g. waits for the last byte of a
    /// character split over byte-level tokens.
    pub fn stream(&self) -> Stream<'_> {
        match &self.inner {
            Inner::Char(c) => Stream::Char(c),
            Inner::Hf(t) => Stream::Hf(t.decode_stream(false)),
        }
    }

    /// Whether encoding a text piece by piece, cut just before a space
    /// between two non-space characters, gives exactly the ids of encoding it
    /// whole — true when nothing in the pipeline looks across such a space:
    /// the character tokenizer, and Hugging Face pipelines whose normalizer
    /// works character by character and whose pre-tokenizer always splits
    /// there (GPT-2's byte-level regex, SentencePiece's metaspace with
    /// splitting, BERT's and plain whitespace splitting, optionally after
    /// splitting off newline runs), with no added token
    /// that contains whitespace. Used by [`super::corpus::encode_corpus`].
    pub fn splits_at_spaces(&self) -> bool {
        let Inner::Hf(t) = &self.inner else {
            return true;
        };
        fn per_char(n: &NormalizerWrapper) -> bool {
            match n {
                NormalizerWrapper::BertNormalizer(_)
                | NormalizerWrapper::Lowercase(_)
                | NormalizerWrapper::NFC(_)
                | NormalizerWrapper::NFD(_)
                | NormalizerWrapper::StripAccents(_) => true,
                NormalizerWrapper::Sequence(s) => s.as_ref().iter().all(per_char),
                _ => false,
            }
        }
        fn splits(p: &PreTokenizerWrapper) -> bool {
            match p {
                PreTokenizerWrapper::ByteLevel(b) => b.use_regex,
                PreTokenizerWrapper::Metaspace(m) => m.split,
                PreTokenizerWrapper::BertPreTokenizer(_)
                | PreTokenizerWrapper::Whitespace(_)
                | PreTokenizerWrapper::WhitespaceSplit(_) => true,
                // newline runs split off (qkv's `bpe` and `unigram`) never reach across a space
                PreTokenizerWrapper::Split(s) => s.pattern == SplitPattern::Regex(super::train::NEWLINES.into()),
                PreTokenizerWrapper::Sequence(s) => s.as_ref().iter().all(splits),
                _ => false,
            }
        }
        let normalizer_ok = t.get_normalizer().is_none_or(per_char);
        let pre_ok = t.get_pre_tokenizer().is_some_and(splits);
        let added_ok = t.get_added_tokens_decoder().values().all(|a| !a.content.chars().any(char::is_whitespace));
        normalizer_ok && pre_ok && added_ok
    }

    /// How many special tokens [`Tokenizer::encode_with_special_tokens`] adds
    /// around one sequence (BERT: 2, `[CLS]` and `[SEP]`; GPT-2: none).
    pub fn special_tokens_added(&self) -> usize {
        self.as_hf().and_then(|t| t.get_post_processor()).map_or(0, |p| p.added_tokens(false))
    }

    /// The tokenizer as `tokenizer.json` text.
    pub fn to_json(&self) -> String {
        match &self.inner {
            Inner::Char(c) => c.to_json(),
            Inner::Hf(t) => t.to_string(true).expect("a tokenizer serialises"),
        }
    }

    /// This tokenizer in Hugging Face's format (what `transformers` loads):
    /// a character tokenizer becomes the equivalent word-level pipeline, the
    /// others are already in it.
    pub fn to_hugging_face(&self) -> Result<Tokenizer> {
        match &self.inner {
            Inner::Char(c) => {
                Tokenizer::from_json(&c.to_hf_json(), Path::new("(character tokenizer as tokenizer.json)"))
            }
            Inner::Hf(_) => Ok(self.clone()),
        }
    }

    /// A fingerprint of everything that decides the ids (FNV-1a of the compact
    /// JSON): two tokenizers with the same fingerprint encode alike.
    pub fn fingerprint(&self) -> u64 {
        let json = match &self.inner {
            Inner::Char(c) => c.to_json(),
            Inner::Hf(t) => t.to_string(false).expect("a tokenizer serialises"),
        };
        fnv1a64(json.as_bytes())
    }

    /// Write `tokenizer.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.to_json().as_bytes())
    }

    /// Parse `tokenizer.json` text: qkv's character format or Hugging Face's.
    /// Errors name `path` and the line, column or field that is wrong.
    pub fn from_json(text: &str, path: &Path) -> Result<Tokenizer> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::format(path, format!("not JSON: {e}")))?;
        if value.get("kind").is_some() {
            return CharTokenizer::from_json(text)
                .map(Tokenizer::from)
                .map_err(|e| Error::format(path, format!("not a qkv tokenizer: {e}")));
        }
        for field in ["model", "added_tokens"] {
            if value.get(field).is_none() {
                return Err(Error::format(
                    path,
                    format!(
                        "not a tokenizer.json: no {field:?} field (expected a Hugging Face tokenizer, or qkv's \
                         {{\"kind\": \"char\", …}})"
                    ),
                ));
            }
        }
        let tok: tokenizers::Tokenizer = contained("reading tokenizer.json", || text.parse::<tokenizers::Tokenizer>())
            .map_err(|e| Error::format(path, e.to_string()))?
            .map_err(|e| Error::format(path, format!("not a valid Hugging Face tokenizer.json: {e}")))?;
        Ok(tok.into())
    }
}

/// Ids in, text out, one id at a time; see [`Tokenizer::stream`].
pub enum Stream<'a> {
    Char(&'a CharTokenizer),
    Hf(DecodeStream<'a, ModelWrapper, NormalizerWrapper, PreTokenizerWrapper, PostProcessorWrapper, DecoderWrapper>),
}

impl Stream<'_> {
    /// The text that `id` completes; empty while a character is still partial.
    pub fn step(&mut self, id: u32) -> Result<String> {
        match self {
            Stream::Char(c) => c.decode(&[id]),
            Stream::Hf(s) => contained("decoding", || s.step(id))?
                .map(Option::unwrap_or_default)
                .map_err(|e| Error::Data(format!("decoding token {id} failed: {e}"))),
        }
    }
}

/// FNV-1a, 64 bits (as in `train::run::fnv1a`, as a number).
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

thread_local! {
    /// Set while [`contained`] runs a call into the `tokenizers` crate.
    static CONTAINED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, a call into the `tokenizers` crate, turning a panic into an
/// error. Its files come from strangers, and some crafted ones reach
/// panics inside it (a merge that overruns its buffer, an `expect` in a
/// normalizer): qkv answers those with an error, never an abort. The panic's
/// own message is kept quiet (the error says what happened).
fn contained<T>(what: &str, f: impl FnOnce() -> T) -> Result<T> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(|c| c.get()) {
                previous(info);
            }
        }));
    });
    let was = CONTAINED.with(|c| c.replace(true));
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(was));
    out.map_err(|_| {
        Error::Data(format!("the tokenizer failed while {what} (its files may be damaged or crafted to break it)"))
    })
}

#[cfg(test)]
mod contained_tests {
    use super::*;

    #[test]
    fn a_panic_inside_the_tokenizer_becomes_an_error() {
        let e = contained("testing", || -> u32 { panic!("inside a dependency") }).unwrap_err();
        assert!(e.to_string().contains("the tokenizer failed while testing"), "{e}");
        assert_eq!(contained("testing", || 7).unwrap(), 7);
        // the flag is back down: a panic outside is not silenced
        assert!(!CONTAINED.with(|c| c.get()));
    }
}
