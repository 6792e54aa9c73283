//! Data: corpora, splits and batches.

pub mod classify;
pub mod images;
pub mod mlm;
pub mod text;
pub mod token_cache;
pub mod tokens;
