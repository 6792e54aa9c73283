//! Whole models, one family per file.

pub mod bert;
pub mod gpt;
pub mod gpt2_hf;
pub mod inference;
pub mod load;
pub mod mamba;
pub mod recurrent;
pub mod sentence;
pub mod seq2seq;
pub mod t5;
pub mod vit;
