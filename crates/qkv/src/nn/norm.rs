//! Normalisation of each token's vector: LayerNorm (centre and scale) or
//! RMSNorm (scale only). Both keep activations in a range where training is stable.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Param, Result, Tensor};

use super::{Module, NamedParam};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// `(x - mean) / std · w + b` (GPT-2, BERT, ViT).
    #[default]
    #[serde(alias = "layer_norm")]
    LayerNorm,
    /// `x / rms(x) · w` (LLaMA-style; no centring, no bias).
    #[serde(alias = "rms_norm")]
    RmsNorm,
}

#[derive(Clone, Debug)]
pub struct Norm {
    pub kind: NormKind,
    pub weight: Param,
    /// LayerNorm only, and only when biases are on.
    pub bias: Option<Param>,
    pub eps: f32,
}

impl Norm {
    pub fn new(kind: NormKind, dim: usize, bias: bool, eps: f32) -> Norm {
        Norm {
            kind,
            weight: Param::new(Tensor::ones(&[dim])),
            bias: (bias && kind == NormKind::LayerNorm).then(|| Param::new(Tensor::zeros(&[dim]))),
            eps,
        }
    }

    /// # Shapes
    /// x `[.., C]` → `[.., C]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = self.weight.value();
        match self.kind {
            NormKind::LayerNorm => {
                let b = self.bias.as_ref().map(|b| b.value());
                qkv_tensor::layer_norm(x, &w, b.as_ref(), self.eps)
            }
            NormKind::RmsNorm => qkv_tensor::rms_norm(x, &w, self.eps),
        }
    }
}

impl Module for Norm {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        out.push(NamedParam { name: format!("{prefix}weight"), param: self.weight.clone(), decay: false });
        if let Some(b) = &self.bias {
            out.push(NamedParam { name: format!("{prefix}bias"), param: b.clone(), decay: false });
        }
    }
}
