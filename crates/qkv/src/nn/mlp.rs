//! The MLP sublayer: after attention has mixed information *between* tokens,
//! the MLP transforms each token on its own: widen to F features, apply a
//! non-linearity, project back to C.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Result, Rng, Tensor};

use super::linear::Linear;
use super::{Module, NamedParam};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Activation {
    /// Exact GELU, `x·Φ(x)` (BERT, ViT).
    #[default]
    Gelu,
    /// GELU with the tanh approximation (GPT-2).
    GeluTanh,
    Relu,
    /// `x·sigmoid(x)`, also called swish (Marian's translation models).
    #[serde(alias = "swish")]
    Silu,
    /// Gated: `silu(x·W_gate) ∘ (x·W_up)` (LLaMA). `c_fc` holds both halves, `[C, 2F]`.
    #[serde(alias = "swiglu")]
    SwiGlu,
}

impl std::str::FromStr for Activation {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_lowercase()))
            .map_err(|_| format!("unknown activation {s:?}: use gelu, gelu-tanh, relu, silu or swiglu"))
    }
}

#[derive(Clone, Debug)]
pub struct Mlp {
    /// `[C, F]` (`[C, 2F]` for SwiGLU: gate then up), or transposed per its layout.
    pub c_fc: Linear,
    /// `[F, C]`, or transposed per its layout.
    pub c_proj: Linear,
    pub activation: Activation,
}

impl Mlp {
    pub fn new(c: usize, f: usize, activation: Activation, bias: bool, std: f32, proj_std: f32, rng: &mut Rng) -> Mlp {
        let widen = if activation == Activation::SwiGlu { 2 * f } else { f };
        Mlp { c_fc: Linear::new(c, widen, bias, std, rng), c_proj: Linear::new(f, c, bias, proj_std, rng), activation }
    }

    /// With weights stored `[out, in]` (BERT, ViT).
    pub fn new_out_in(c: usize, f: usize, activation: Activation, bias: bool, std: f32, rng: &mut Rng) -> Mlp {
        let widen = if activation == Activation::SwiGlu { 2 * f } else { f };
        Mlp {
            c_fc: Linear::new_out_in(c, widen, bias, std, rng),
            c_proj: Linear::new_out_in(f, c, bias, std, rng),
            activation,
        }
    }

    /// # Shapes
    /// x `[B, T, C]` → `[B, T, C]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.c_fc.forward(x)?; // [B, T, F] (or [B, T, 2F])
        let h = match self.activation {
            Activation::Gelu => h.gelu(),
            Activation::GeluTanh => h.gelu_tanh(),
            Activation::Relu => h.relu(),
            Activation::Silu => h.silu(),
            Activation::SwiGlu => {
                let f = h.dim(-1)? / 2;
                let gu = h.split(-1, &[f, f])?;
                gu[0].silu().mul(&gu[1])?
            }
        };
        self.c_proj.forward(&h)
    }
}

impl Module for Mlp {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.c_fc.collect_params(&format!("{prefix}c_fc."), out);
        self.c_proj.collect_params(&format!("{prefix}c_proj."), out);
    }
}
