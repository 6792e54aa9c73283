//! The parts of a transformer, one concept per file, in the order a token
//! meets them: [`embedding`] (ids → vectors), [`positional`] (where each token
//! is), [`norm`], [`attention`] (queries, keys, values; heads), [`mlp`], and
//! [`block`] (residual connections around both, pre- or post-norm).
//!
//! Every module holds [`Param`]s and names them like the Hugging Face
//! checkpoint of its family, so loading and exporting are renames.

pub mod attention;
pub mod block;
pub mod embedding;
pub mod linear;
pub mod mamba;
pub mod mlp;
pub mod norm;
pub mod patch;
pub mod positional;
pub mod rnn;

use qkv_tensor::Param;

/// A trainable parameter with its checkpoint name.
#[derive(Clone, Debug)]
pub struct NamedParam {
    pub name: String,
    pub param: Param,
    /// Whether AdamW's weight decay applies (projection weights: yes;
    /// biases, norms, embeddings: no).
    pub decay: bool,
}

/// Something that owns parameters.
pub trait Module {
    /// Append this module's parameters, each name prefixed by `prefix`.
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>);

    /// All parameters with their full names.
    fn named_params(&self) -> Vec<NamedParam> {
        let mut out = Vec::new();
        self.collect_params("", &mut out);
        out
    }

    /// Number of trainable numbers.
    fn num_params(&self) -> usize {
        self.named_params().iter().map(|p| p.param.numel()).sum()
    }
}

/// Dropout during training: on or off, and the seed of this forward pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dropout {
    pub p: f32,
    /// `None`: evaluation (dropout off).
    pub seed: Option<u64>,
}

impl Dropout {
    /// Apply at a site; `site` makes every place in the network draw its own mask.
    pub fn apply(&self, x: &qkv_tensor::Tensor, site: u64) -> qkv_tensor::Result<qkv_tensor::Tensor> {
        match self.seed {
            Some(seed) if self.p > 0.0 => {
                qkv_tensor::dropout(x, self.p, qkv_tensor::rng::splitmix64(seed ^ site.wrapping_mul(0x9E37_79B9)))
            }
            _ => Ok(x.clone()),
        }
    }
}
