//! # qkv: the transformer architecture, from the tensor up
//!
//! Built on [`qkv_tensor`] (tensors, kernels, autograd). Read it in the order
//! of the architecture:
//!
//! - [`tokenize`]: text → token ids;
//! - [`nn`]: embeddings, positions, attention, MLP, norms, blocks;
//! - [`models`]: whole models (GPT, BERT, ViT) and opening model directories;
//! - [`train`]: one run loop for every task: AdamW, schedules, checkpoints, exact resume;
//! - [`eval`]: scoring a trained model on held-out data;
//! - [`generate`]: sampling with a KV cache; [`translate`]: greedy and beam search for an encoder–decoder;
//! - [`data`], [`io`], [`viz`]: corpora, files, pictures.

// Validation writes `!(x > 0.0)` on purpose: unlike `x <= 0.0` it also rejects NaN.
#![allow(clippy::neg_cmp_op_on_partial_ord)]

pub mod attention_maps;
pub mod compare;
pub mod data;
pub mod error;
pub mod eval;
pub mod explain;
pub mod generate;
pub mod io;
pub mod metrics;
pub mod models;
pub mod nn;
pub mod tokenize;
pub mod train;
pub mod translate;
pub mod viz;

pub use error::{Error, Result};
