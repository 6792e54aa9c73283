//! Data: corpora, labelled texts and images, the held-out splits that
//! training and evaluation share, and how each is fed to a model.

pub mod bert_input;
pub mod classify;
pub mod images;
pub mod mlm;
pub mod shuffle;
pub mod text;
pub mod token_cache;
pub mod tokens;
