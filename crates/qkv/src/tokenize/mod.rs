//! Text → token ids → text.
//!
//! [`Tokenizer`] is what the rest of qkv uses: qkv's own character tokenizer
//! ([`char`], the default of `qkv train`) or a Hugging Face `tokenizers`
//! pipeline — GPT-2's byte-level BPE reproduced exactly ([`gpt2`], bundled),
//! BERT's WordPiece ([`bert`]), or any `tokenizer.json`. [`spec`] finds one
//! from what the user names; [`train`] learns a new one from text; [`corpus`]
//! encodes a whole corpus on every core.

pub mod bert;
pub mod char;
pub mod corpus;
pub mod gpt2;
pub mod spec;
pub mod tokenizer;
pub mod train;

pub use self::char::CharTokenizer;
pub use self::tokenizer::{Stream, Tokenizer};
pub use self::train::{Kind, TrainOptions};
