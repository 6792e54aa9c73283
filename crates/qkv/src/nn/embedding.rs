//! Token embeddings: each id picks one row of a `[V, C]` table.

use qkv_tensor::{Param, Result, Rng, Tensor};

use super::{Module, NamedParam};

#[derive(Clone, Debug)]
pub struct Embedding {
    /// `[V, C]`: row `i` is the vector of token `i`.
    pub weight: Param,
}

impl Embedding {
    pub fn new(vocab: usize, dim: usize, std: f32, rng: &mut Rng) -> Embedding {
        Embedding { weight: Param::new(Tensor::randn(&[vocab, dim], std, rng)) }
    }

    pub fn vocab(&self) -> usize {
        self.weight.shape()[0]
    }

    /// # Shapes
    /// ids `shape` (e.g. `[B, T]`) → `shape + [C]`
    pub fn forward(&self, ids: &[u32], shape: &[usize]) -> Result<Tensor> {
        qkv_tensor::embedding(&self.weight.value(), ids, shape)
    }
}

impl Module for Embedding {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        out.push(NamedParam { name: format!("{prefix}weight"), param: self.weight.clone(), decay: false });
    }
}
