//! Learning a tokenizer's vocabulary from text (`qkv tokenizer train`).
//!
//! | kind | pipeline | special tokens (ids) |
//! |---|---|---|
//! | `byte-bpe` | GPT-2's: byte-level pre-tokenizer (GPT-2 regex), BPE over the 256 bytes | `<\|endoftext\|>` (0) |
//! | `bpe` | SentencePiece-style: runs of newlines are words of their own, spaces become `▁` and start a new word; BPE over the characters of the text | `<\|endoftext\|>` (0), `<unk>` (1) |
//! | `unigram` | SentencePiece-style as `bpe`, Unigram language model | `<\|endoftext\|>` (0), `<unk>` (1) |
//! | `wordpiece` | BERT's: normaliser (lower-case, strip accents), pre-tokenizer, WordPiece with `##` | `[PAD]` (0) `[UNK]` (1) `[CLS]` (2) `[SEP]` (3) `[MASK]` (4) |
//! | `char` | qkv's character tokenizer: one token per distinct character | none |
//!
//! `byte-bpe` decodes every text back exactly; `bpe` and `unigram` do for any
//! text made of characters seen in training (the others become `<unk>`):
//! nothing is dropped, spaces become `▁` and back, newlines stay newlines.
//! `wordpiece` lower-cases and drops spacing, as BERT. BPE pairs (and
//! WordPiece's) must occur at least `min_frequency` times; with too little
//! text the vocabulary stays smaller than asked.
//!
//! Training is deterministic for `byte-bpe` and `bpe`. `unigram` gives the
//! same pieces each time, with scores that can differ in their last bits
//! (sums over threads); `wordpiece` can break ties between equally frequent
//! pairs differently (the `tokenizers` crate numbers its `##` pieces in
//! hash-map order).

use std::collections::HashSet;

use tokenizers::AddedToken;
use tokenizers::ModelWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::models::TrainerWrapper;
use tokenizers::models::bpe::{BPE, BpeTrainer};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};

use super::corpus::{CHUNK_BYTES, chunks};
use super::{CharTokenizer, Tokenizer, bert, gpt2};
use crate::error::{Error, Result};

/// The kinds of tokenizer qkv trains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Bpe,
    ByteBpe,
    WordPiece,
    Unigram,
    Char,
}

/// The unknown-character token of `bpe` and `unigram`.
pub const UNK: &str = "<unk>";
/// What `bpe` and `unigram` split off before the metaspace: runs of newlines.
pub const NEWLINES: &str = "\n+";

impl Kind {
    pub const ALL: [Kind; 5] = [Kind::Bpe, Kind::ByteBpe, Kind::WordPiece, Kind::Unigram, Kind::Char];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bpe => "bpe",
            Kind::ByteBpe => "byte-bpe",
            Kind::WordPiece => "wordpiece",
            Kind::Unigram => "unigram",
            Kind::Char => "char",
        }
    }

    /// Special tokens, which take the first ids in this order.
    pub fn special_tokens(self) -> &'static [&'static str] {
        match self {
            Kind::ByteBpe => &[gpt2::END_OF_TEXT],
            Kind::Bpe | Kind::Unigram => &[gpt2::END_OF_TEXT, UNK],
            Kind::WordPiece => &bert::SPECIAL_TOKENS,
            Kind::Char => &[],
        }
    }

    /// The smallest sensible vocabulary: the special tokens and, for
    /// `byte-bpe`, the 256 bytes.
    pub fn min_vocab_size(self) -> usize {
        self.special_tokens().len() + if self == Kind::ByteBpe { 256 } else { 1 }
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Kind, String> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown tokenizer kind {s:?}; one of {}", names.join(", "))
        })
    }
}

/// The largest vocabulary [`train`] makes (2^20).
pub const MAX_TRAINED_VOCAB: usize = 1 << 20;

/// How to train.
#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub kind: Kind,
    /// Tokens in the finished vocabulary, special tokens included (ignored by `char`).
    pub vocab_size: usize,
    /// BPE and WordPiece merge only pairs seen at least this often.
    pub min_frequency: u64,
    /// Special tokens in place of the kind's (`bpe` and `unigram` must keep
    /// `<unk>`): a translation model's `<pad>`, `</s>`, `<unk>`. Empty: the kind's.
    pub specials: Vec<String>,
}

impl TrainOptions {
    /// The special tokens, which take the first ids in this order.
    pub fn special_tokens(&self) -> Vec<String> {
        if self.specials.is_empty() {
            self.kind.special_tokens().iter().map(|s| s.to_string()).collect()
        } else {
            self.specials.clone()
        }
    }
}

/// A tokenizer learned from `texts` (the files of a corpus).
pub fn train(texts: &[&str], opts: &TrainOptions) -> Result<Tokenizer> {
    let kind = opts.kind;
    if kind == Kind::Char {
        let all: HashSet<char> = texts.iter().flat_map(|t| t.chars()).collect();
        return Ok(CharTokenizer::from_text(&all.into_iter().collect::<String>()).into());
    }
    let special_tokens = opts.special_tokens();
    if matches!(kind, Kind::Bpe | Kind::Unigram) && !special_tokens.iter().any(|t| t == UNK) {
        return Err(Error::Config(format!("a {} tokenizer's special tokens must include {UNK}", kind.name())));
    }
    let min_vocab = kind.min_vocab_size() - kind.special_tokens().len() + special_tokens.len();
    if opts.vocab_size < min_vocab {
        return Err(Error::Config(format!(
            "a {} tokenizer needs a vocabulary of at least {} tokens (its special tokens{}), not {}",
            kind.name(),
            min_vocab,
            if kind == Kind::ByteBpe { " and the 256 bytes" } else { " and a character" },
            opts.vocab_size
        )));
    }
    if opts.vocab_size > MAX_TRAINED_VOCAB {
        return Err(Error::Config(format!(
            "a vocabulary of {} tokens: qkv trains at most {MAX_TRAINED_VOCAB} (the trainers reserve room for \
             every token up front; the largest vocabularies in use hold about 256 000)",
            opts.vocab_size
        )));
    }
    let specials: Vec<AddedToken> = special_tokens.iter().map(|s| AddedToken::from(s.clone(), true)).collect();
    let trained = |e: tokenizers::Error| Error::Data(format!("training the tokenizer failed: {e}"));
    let (mut tok, mut trainer): (tokenizers::Tokenizer, TrainerWrapper) = match kind {
        Kind::ByteBpe => {
            let trainer = BpeTrainer::builder()
                .vocab_size(opts.vocab_size)
                .min_frequency(opts.min_frequency)
                .special_tokens(specials)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
                .show_progress(false)
                .build();
            (gpt2::pipeline(BPE::default(), &[])?, trainer.into())
        }
        Kind::Bpe => {
            let trainer = BpeTrainer::builder()
                .vocab_size(opts.vocab_size)
                .min_frequency(opts.min_frequency)
                .special_tokens(specials)
                .show_progress(false)
                .build();
            let bpe = BPE::builder().unk_token(UNK.into()).build().map_err(trained)?;
            (metaspace(bpe)?, trainer.into())
        }
        Kind::Unigram => {
            let trainer = UnigramTrainer::builder()
                .vocab_size(opts.vocab_size as u32)
                .special_tokens(specials)
                .unk_token(Some(UNK.into()))
                .show_progress(false)
                .build()
                .map_err(|e| Error::Config(format!("unigram trainer: {e}")))?;
            (metaspace(Unigram::default())?, trainer.into())
        }
        Kind::WordPiece => {
            let trainer = WordPieceTrainer::builder()
                .vocab_size(opts.vocab_size)
                .min_frequency(opts.min_frequency)
                .special_tokens(specials)
                .continuing_subword_prefix("##".into())
                .show_progress(false)
                .build();
            let model = WordPiece::builder()
                .unk_token("[UNK]".into())
                .continuing_subword_prefix("##".into())
                .max_input_chars_per_word(bert::MAX_INPUT_CHARS_PER_WORD)
                .build()
                .map_err(trained)?;
            // the post-processor needs [CLS] and [SEP], which exist only after training
            (bert::pipeline(model, true)?, trainer.into())
        }
        Kind::Char => unreachable!("handled above"),
    };
    // The trainer counts words chunk by chunk on every core; chunks are cut
    // where the pre-tokenizer splits anyway, so the counts are those of the whole text.
    let pieces: Vec<&str> = texts.iter().flat_map(|t| chunks(t, CHUNK_BYTES / 4)).collect();
    tok.train(&mut trainer, pieces.into_iter()).map_err(trained)?;
    if kind == Kind::WordPiece {
        let ModelWrapper::WordPiece(model) = tok.get_model().clone() else {
            unreachable!("a WordPiece trainer makes a WordPiece model")
        };
        tok = bert::pipeline(model, true)?;
    }
    Ok(tok.into())
}

/// The pre-tokenizer of `bpe` and `unigram`: runs of newlines are words of
/// their own (so no token spans a line break, and training has far fewer
/// distinct words: Unigram on 5 MB of Shakespeare 4× faster); then
/// SentencePiece's way with spaces: each becomes `▁` and begins a new word.
/// No `▁` is added at the start of the text, so decoding gives back exactly
/// the text.
fn metaspace(model: impl Into<ModelWrapper>) -> Result<tokenizers::Tokenizer> {
    let newlines = Split::new(SplitPattern::Regex(NEWLINES.into()), SplitDelimiterBehavior::Isolated, false)
        .map_err(|e| Error::Config(format!("newline splitter: {e}")))?;
    let spaces = Metaspace::new('▁', PrependScheme::Never, true);
    let mut tok = tokenizers::Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Sequence::new(vec![newlines.into(), spaces.clone().into()])));
    tok.with_decoder(Some(spaces));
    Ok(tok)
}
