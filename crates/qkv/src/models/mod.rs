//! Whole models, one family per file.

pub mod gpt;
