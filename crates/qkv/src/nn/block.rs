//! A transformer block: attention, then the MLP, each wrapped in a residual
//! connection (`x + sublayer(x)`: the block learns a *change* to the token's
//! vector, and gradients flow straight through the additions) and a norm.
//!
//! - **pre-norm** (GPT-2, ViT): `x + sublayer(norm(x))` — the residual
//!   stream is never normalised, which keeps deep stacks stable;
//! - **post-norm** (the original transformer, BERT): `norm(x + sublayer(x))`.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Result, Tensor};

use super::attention::{KvCache, SelfAttention};
use super::mlp::Mlp;
use super::norm::Norm;
use super::{Dropout, Module, NamedParam};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Placement {
    #[default]
    Pre,
    Post,
}

impl std::str::FromStr for Placement {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_lowercase().as_str() {
            "pre" => Ok(Placement::Pre),
            "post" => Ok(Placement::Post),
            _ => Err(format!("unknown norm placement {s:?}: use pre or post")),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Block {
    pub ln_1: Norm,
    pub attn: SelfAttention,
    pub ln_2: Norm,
    pub mlp: Mlp,
    pub placement: Placement,
}

impl Block {
    /// # Shapes
    /// x `[B, T, C]` → `[B, T, C]`
    pub fn forward(
        &self,
        x: &Tensor,
        key_mask: Option<&[bool]>,
        cache: Option<&mut KvCache>,
        drop: &Dropout,
        site: u64,
    ) -> Result<Tensor> {
        match self.placement {
            Placement::Pre => {
                let a = self.attn.forward(&self.ln_1.forward(x)?, key_mask, cache)?;
                let x = x.add(&drop.apply(&a, site)?)?;
                let m = self.mlp.forward(&self.ln_2.forward(&x)?)?;
                x.add(&drop.apply(&m, site + 1)?)
            }
            Placement::Post => {
                let a = self.attn.forward(x, key_mask, cache)?;
                let x = self.ln_1.forward(&x.add(&drop.apply(&a, site)?)?)?;
                let m = self.mlp.forward(&x)?;
                self.ln_2.forward(&x.add(&drop.apply(&m, site + 1)?)?)
            }
        }
    }
}

impl Module for Block {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.ln_1.collect_params(&format!("{prefix}ln_1."), out);
        self.attn.collect_params(&format!("{prefix}attn."), out);
        self.ln_2.collect_params(&format!("{prefix}ln_2."), out);
        self.mlp.collect_params(&format!("{prefix}mlp."), out);
    }
}
