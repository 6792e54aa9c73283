//! Data: corpora, splits and batches.

pub mod text;
