//! A transformer block: attention, then the MLP, each wrapped in a residual
//! connection (`x + sublayer(x)`: the block learns a *change* to the token's
//! vector, and gradients flow straight through the additions) and a norm.
//!
//! - **pre-norm** (GPT-2, ViT): `x + sublayer(norm(x))` — the residual
//!   stream is never normalised, which keeps deep stacks stable;
//! - **post-norm** (the original transformer, BERT): `norm(x + sublayer(x))`.
//!
//! An encoder–decoder's decoder has a third sublayer between the two:
//! cross-attention to the encoder's output ([`DecoderBlock`]).

use serde::{Deserialize, Serialize};

use qkv_tensor::{Result, Tensor};

use super::attention::{Attention, KvCache, Memory};
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
    /// Marian (Hugging Face's encoder–decoders): `self_attn.{q,k,v,out}_proj`,
    /// `self_attn_layer_norm` (= ln_1), `fc1`, `fc2`, `final_layer_norm` (= ln_2).
    Marian,
}

#[derive(Clone, Debug)]
pub struct Block {
    /// The norm of the attention sublayer (before it when pre-norm, after the
    /// residual addition when post-norm).
    pub ln_1: Norm,
    pub attn: Attention,
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

/// What happens inside one block, for pictures ([`Block::forward_traced`]).
pub struct BlockTrace {
    /// The block's output, `[B, T, C]`.
    pub out: Tensor,
    /// Attention probabilities, `[B, H, T, T]`.
    pub probs: Tensor,
    /// What the attention sublayer adds to the residual stream, `[B, T, C]`.
    pub attn: Tensor,
    /// What the MLP sublayer adds, `[B, T, C]`.
    pub mlp: Tensor,
}

impl Block {
    /// The block's output (no dropout, no cache) and its attention
    /// probabilities `[B, H, T, T]`: what each token reads from the others.
    pub fn forward_with_probabilities(&self, x: &Tensor, key_mask: Option<&[bool]>) -> Result<(Tensor, Tensor)> {
        let t = self.forward_traced(x, key_mask)?;
        Ok((t.out, t.probs))
    }

    /// The forward pass (no dropout, no cache) step by step: the attention
    /// probabilities and what each sublayer adds to the residual stream.
    pub fn forward_traced(&self, x: &Tensor, key_mask: Option<&[bool]>) -> Result<BlockTrace> {
        Ok(match self.placement {
            Placement::Pre => {
                let h = self.ln_1.forward(x)?;
                let probs = self.attn.probabilities(&h, key_mask)?;
                let attn = self.attn.forward(&h, key_mask, None)?;
                let x = x.add(&attn)?;
                let mlp = self.mlp.forward(&self.ln_2.forward(&x)?)?;
                BlockTrace { out: x.add(&mlp)?, probs, attn, mlp }
            }
            Placement::Post => {
                let probs = self.attn.probabilities(x, key_mask)?;
                let attn = self.attn.forward(x, key_mask, None)?;
                let x = self.ln_1.forward(&x.add(&attn)?)?;
                let mlp = self.mlp.forward(&x)?;
                BlockTrace { out: self.ln_2.forward(&x.add(&mlp)?)?, probs, attn, mlp }
            }
        })
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
            Naming::Marian => {
                self.attn.collect_projections(&marian_attn(prefix, "self_attn"), out);
                self.ln_1.collect_params(&p("self_attn_layer_norm."), out);
                self.mlp.c_fc.collect_params(&p("fc1."), out);
                self.mlp.c_proj.collect_params(&p("fc2."), out);
                self.ln_2.collect_params(&p("final_layer_norm."), out);
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

/// Marian's names of an attention sublayer's four projections.
fn marian_attn(prefix: &str, name: &str) -> [String; 4] {
    ["q_proj", "k_proj", "v_proj", "out_proj"].map(|p| format!("{prefix}{name}.{p}."))
}

/// A block of an encoder–decoder's decoder: causal self-attention over the
/// target so far, then **cross-attention** from the target's positions to the
/// encoder's output (the source sentence), then the MLP — each in a residual
/// connection with its norm, placed before or after as in [`Block`].
/// Names follow Marian's (`self_attn`, `encoder_attn`, `fc1`, `fc2` and
/// their `*_layer_norm`).
#[derive(Clone, Debug)]
pub struct DecoderBlock {
    pub self_attn: Attention,
    pub self_attn_layer_norm: Norm,
    /// Queries from the target, keys and values from the encoder's output.
    pub encoder_attn: Attention,
    pub encoder_attn_layer_norm: Norm,
    pub mlp: Mlp,
    pub final_layer_norm: Norm,
    pub placement: Placement,
}

impl DecoderBlock {
    /// `memory`: this block's keys and values of the encoder's output
    /// ([`Attention::memory`]). With a `cache`, `x` holds the positions
    /// after those it has seen.
    ///
    /// # Shapes
    /// x `[B, T, C]` → `[B, T, C]`
    pub fn forward(
        &self,
        x: &Tensor,
        memory: &Memory,
        cache: Option<&mut KvCache>,
        drop: &Dropout,
        site: u64,
    ) -> Result<Tensor> {
        let dropout = |y: Tensor, site: u64| drop.apply(&y, site);
        match self.placement {
            Placement::Pre => {
                let a = self.self_attn.forward(&self.self_attn_layer_norm.forward(x)?, None, cache)?;
                let x = dropout(a, site)?.add_into(x)?;
                let c = self.encoder_attn.forward_cross(&self.encoder_attn_layer_norm.forward(&x)?, memory)?;
                let x = dropout(c, site + 1)?.add_into(&x)?;
                let m = self.mlp.forward(&self.final_layer_norm.forward(&x)?)?;
                dropout(m, site + 2)?.add_into(&x)
            }
            Placement::Post => {
                let a = self.self_attn.forward(x, None, cache)?;
                let x = self.self_attn_layer_norm.forward(&dropout(a, site)?.add_into(x)?)?;
                let c = self.encoder_attn.forward_cross(&x, memory)?;
                let x = self.encoder_attn_layer_norm.forward(&dropout(c, site + 1)?.add_into(&x)?)?;
                let m = self.mlp.forward(&x)?;
                self.final_layer_norm.forward(&dropout(m, site + 2)?.add_into(&x)?)
            }
        }
    }
}

impl DecoderBlock {
    /// The block's output (no dropout, no cache) and its cross-attention
    /// probabilities `[B, H, Tq, Tk]`: which source positions each target
    /// position reads.
    pub fn forward_with_cross_probabilities(&self, x: &Tensor, memory: &Memory) -> Result<(Tensor, Tensor)> {
        let none = Dropout::default();
        let query_input = match self.placement {
            Placement::Pre => {
                let a = self.self_attn.forward(&self.self_attn_layer_norm.forward(x)?, None, None)?;
                let x = a.add_into(x)?;
                (self.encoder_attn_layer_norm.forward(&x)?, x)
            }
            Placement::Post => {
                let a = self.self_attn.forward(x, None, None)?;
                let x = self.self_attn_layer_norm.forward(&a.add_into(x)?)?;
                (x.clone(), x)
            }
        };
        let probs = self.encoder_attn.cross_probabilities(&query_input.0, memory)?;
        Ok((self.forward(x, memory, None, &none, 0)?, probs))
    }
}

impl Module for DecoderBlock {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let p = |s: &str| format!("{prefix}{s}");
        self.self_attn.collect_projections(&marian_attn(prefix, "self_attn"), out);
        self.self_attn_layer_norm.collect_params(&p("self_attn_layer_norm."), out);
        self.encoder_attn.collect_projections(&marian_attn(prefix, "encoder_attn"), out);
        self.encoder_attn_layer_norm.collect_params(&p("encoder_attn_layer_norm."), out);
        self.mlp.c_fc.collect_params(&p("fc1."), out);
        self.mlp.c_proj.collect_params(&p("fc2."), out);
        self.final_layer_norm.collect_params(&p("final_layer_norm."), out);
    }
}
