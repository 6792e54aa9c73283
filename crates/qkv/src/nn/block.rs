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

/// Whose checkpoint names the block's parameters follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Naming {
    /// `ln_1`, `attn.c_attn`, `attn.c_proj`, `ln_2`, `mlp.c_fc`, `mlp.c_proj`.
    #[default]
    Gpt2,
    /// `attention.self.{query,key,value}`, `attention.output.dense`,
    /// `attention.output.LayerNorm` (= ln_1), `intermediate.dense`,
    /// `output.dense`, `output.LayerNorm` (= ln_2).
    Bert,
    /// `layernorm_before` (= ln_1), `attention.attention.{query,key,value}`,
    /// `attention.output.dense`, `layernorm_after` (= ln_2),
    /// `intermediate.dense`, `output.dense`.
    Vit,
}

#[derive(Clone, Debug)]
pub struct Block {
    /// The norm of the attention sublayer (before it when pre-norm, after the
    /// residual addition when post-norm).
    pub ln_1: Norm,
    pub attn: SelfAttention,
    /// The norm of the MLP sublayer.
    pub ln_2: Norm,
    pub mlp: Mlp,
    pub placement: Placement,
    pub naming: Naming,
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
        // the residual sums go into the sublayer's fresh output (`add_into`:
        // in place when no gradient is recorded), so `dropout` takes it by
        // value and no second holder keeps it alive
        let dropout = |y: Tensor, site: u64| drop.apply(&y, site);
        match self.placement {
            Placement::Pre => {
                let a = self.attn.forward(&self.ln_1.forward(x)?, key_mask, cache)?;
                let x = dropout(a, site)?.add_into(x)?;
                let m = self.mlp.forward(&self.ln_2.forward(&x)?)?;
                dropout(m, site + 1)?.add_into(&x)
            }
            Placement::Post => {
                let a = self.attn.forward(x, key_mask, cache)?;
                let x = self.ln_1.forward(&dropout(a, site)?.add_into(x)?)?;
                let m = self.mlp.forward(&x)?;
                self.ln_2.forward(&dropout(m, site + 1)?.add_into(&x)?)
            }
        }
    }
}

impl Module for Block {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let p = |s: &str| format!("{prefix}{s}");
        match self.naming {
            Naming::Gpt2 => {
                self.ln_1.collect_params(&p("ln_1."), out);
                self.attn.collect_named(&p("attn.c_attn."), &p("attn.c_proj."), out);
                self.ln_2.collect_params(&p("ln_2."), out);
                self.mlp.c_fc.collect_params(&p("mlp.c_fc."), out);
                self.mlp.c_proj.collect_params(&p("mlp.c_proj."), out);
            }
            Naming::Bert => {
                self.attn.collect_named(&p("attention.self."), &p("attention.output.dense."), out);
                self.ln_1.collect_params(&p("attention.output.LayerNorm."), out);
                self.mlp.c_fc.collect_params(&p("intermediate.dense."), out);
                self.mlp.c_proj.collect_params(&p("output.dense."), out);
                self.ln_2.collect_params(&p("output.LayerNorm."), out);
            }
            Naming::Vit => {
                self.ln_1.collect_params(&p("layernorm_before."), out);
                self.attn.collect_named(&p("attention.attention."), &p("attention.output.dense."), out);
                self.ln_2.collect_params(&p("layernorm_after."), out);
                self.mlp.c_fc.collect_params(&p("intermediate.dense."), out);
                self.mlp.c_proj.collect_params(&p("output.dense."), out);
            }
        }
    }
}
