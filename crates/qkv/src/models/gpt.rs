//! GPT: a decoder-only transformer that predicts the next token.
//!
//! ids → token embedding (+ positions) → N blocks of causal self-attention and
//! MLP → final norm → LM head (by default the token embedding itself, "tied")
//! → one score per vocabulary entry at every position. Training minimises the
//! cross-entropy of each position's scores against the token that follows it.
//!
//! Parameter names follow Hugging Face's `GPT2LMHeadModel` (`transformer.wte`,
//! `transformer.h.0.attn.c_attn`, …), whose `Conv1D` weights are stored
//! `[in, out]` exactly like qkv's [`Linear`].

use serde::{Deserialize, Serialize};

use qkv_tensor::{Param, Result as TResult, Rng, Tensor};

use crate::error::{Error, Result};
use crate::nn::attention::{Attention, KvCache};
use crate::nn::block::{Block, Naming, Placement};
use crate::nn::embedding::Embedding;
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::norm::{Norm, NormKind};
use crate::nn::positional::{Positions, sinusoidal_table};
use crate::nn::{Dropout, Module, NamedParam};

/// The architecture of a GPT. Every field has a default (the `qkv train`
/// model: 4 layers, 6 heads, width 192, context 128, characters — sized to
/// reach a validation loss below 1.8 nats per character on the bundled
/// Shakespeare in under 10 minutes on two cores).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GptConfig {
    /// V: number of token ids. Default 65 (the characters of the bundled corpus).
    pub vocab_size: usize,
    /// Longest context in tokens (T). Default 128.
    pub block_size: usize,
    /// Transformer blocks. Default 4.
    pub n_layer: usize,
    /// Attention heads per block; must divide `n_embd`. Default 6.
    pub n_head: usize,
    /// Model width C. Default 192.
    pub n_embd: usize,
    /// MLP width F as a multiple of C. Default 4.
    pub mlp_ratio: f32,
    /// MLP non-linearity. Default exact GELU.
    pub activation: Activation,
    /// LayerNorm or RMSNorm. Default LayerNorm.
    pub norm: NormKind,
    /// Norm before each sublayer (pre) or after the residual addition (post). Default pre.
    pub norm_placement: Placement,
    /// Norm epsilon. Default 1e-5.
    pub norm_eps: f32,
    /// How positions enter: learned, sinusoidal, rope, alibi or none. Default learned.
    pub positions: Positions,
    /// Biases in projections and LayerNorms. Default false.
    pub bias: bool,
    /// Dropout on embeddings and on each sublayer's output while training. Default 0.
    pub dropout: f32,
    /// LM head shares the token embedding matrix. Default true.
    pub tie_embeddings: bool,
}

impl Default for GptConfig {
    fn default() -> Self {
        GptConfig {
            vocab_size: 65,
            block_size: 128,
            n_layer: 4,
            n_head: 6,
            n_embd: 192,
            mlp_ratio: 4.0,
            activation: Activation::Gelu,
            norm: NormKind::LayerNorm,
            norm_placement: Placement::Pre,
            norm_eps: 1e-5,
            positions: Positions::Learned,
            bias: false,
            dropout: 0.0,
            tie_embeddings: true,
        }
    }
}

impl GptConfig {
    /// Reject sizes that cannot work, before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("block_size", self.block_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!(
                "n_embd ({}) must be a multiple of n_head ({}): each head gets n_embd / n_head features",
                self.n_embd, self.n_head
            ));
        }
        if self.positions == Positions::Rope && !self.head_dim().is_multiple_of(2) {
            return bad(format!("RoPE rotates feature pairs: the head width ({}) must be even", self.head_dim()));
        }
        if self.positions == Positions::Sinusoidal && !self.n_embd.is_multiple_of(2) {
            return bad(format!("sinusoidal positions need an even n_embd, got {}", self.n_embd));
        }
        if !(self.mlp_ratio > 0.0) || self.mlp_hidden() == 0 {
            return bad(format!("mlp_ratio {} gives no MLP features", self.mlp_ratio));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(self.norm_eps > 0.0) {
            return bad(format!("norm_eps {} must be positive", self.norm_eps));
        }
        if self.vocab_size > u32::MAX as usize {
            return bad("vocab_size does not fit token ids of 32 bits".into());
        }
        super::within_bounds(self.checked_params(), "this GPT configuration")
    }

    /// About the parameter count (embeddings, positions, blocks, a separate
    /// head), with checked arithmetic: `None` when it overflows.
    pub fn checked_params(&self) -> Option<usize> {
        let c = self.n_embd;
        let f = self.mlp_hidden().checked_mul(2)?; // SwiGLU's gate doubles the first matrix at most
        let block = c.checked_mul(c)?.checked_mul(4)?.checked_add(c.checked_mul(f)?.checked_mul(2)?)?;
        let tables = self.vocab_size.checked_mul(c)?.checked_mul(2)?.checked_add(self.block_size.checked_mul(c)?)?;
        block.checked_mul(self.n_layer)?.checked_add(tables)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// F, the MLP width.
    pub fn mlp_hidden(&self) -> usize {
        (self.n_embd as f32 * self.mlp_ratio).round() as usize
    }
}

pub struct Gpt {
    pub config: GptConfig,
    /// `[V, C]` token embedding (and LM head when tied).
    pub wte: Embedding,
    /// `[block_size, C]` learned positions, when `positions = learned`.
    pub wpe: Option<Embedding>,
    pub h: Vec<Block>,
    pub ln_f: Norm,
    /// `[V, C]` separate LM head, when not tied.
    pub lm_head: Option<Param>,
}

impl Gpt {
    /// A freshly initialised model (GPT-2's scheme: N(0, 0.02) weights, output
    /// projections scaled by 1/√(2·layers), zero biases, unit norms).
    pub fn new(config: GptConfig, seed: u64) -> Result<Gpt> {
        config.validate()?;
        let c = &config;
        let mut rng = Rng::new(seed);
        let std = 0.02;
        let proj_std = std / (2.0 * c.n_layer as f32).sqrt();
        let wte = Embedding::new(c.vocab_size, c.n_embd, std, &mut rng);
        let wpe = (c.positions == Positions::Learned).then(|| Embedding::new(c.block_size, c.n_embd, std, &mut rng));
        let h = (0..c.n_layer)
            .map(|_| Block {
                ln_1: Norm::new(c.norm, c.n_embd, c.bias, c.norm_eps),
                attn: Attention::new(c.n_embd, c.n_head, c.bias, true, c.positions, std, proj_std, &mut rng),
                ln_2: Norm::new(c.norm, c.n_embd, c.bias, c.norm_eps),
                mlp: Mlp::new(c.n_embd, c.mlp_hidden(), c.activation, c.bias, std, proj_std, &mut rng),
                placement: c.norm_placement,
                naming: Naming::Gpt2,
            })
            .collect();
        let ln_f = Norm::new(c.norm, c.n_embd, c.bias, c.norm_eps);
        let lm_head = (!c.tie_embeddings).then(|| Param::new(Tensor::randn(&[c.vocab_size, c.n_embd], std, &mut rng)));
        Ok(Gpt { config, wte, wpe, h, ln_f, lm_head })
    }

    /// Key/value caches for generation, one per layer.
    pub fn new_caches(&self, batch: usize) -> Vec<KvCache> {
        let c = &self.config;
        (0..c.n_layer).map(|_| KvCache::new(batch, c.block_size, c.n_head, c.head_dim())).collect()
    }

    fn check_ids(&self, ids: &[u32], b: usize, t: usize, start: usize) -> Result<()> {
        if ids.len() != b * t || t == 0 {
            return Err(Error::Data(format!("{} token ids do not form a [{b}, {t}] batch", ids.len())));
        }
        if start + t > self.config.block_size {
            return Err(Error::Data(format!(
                "{} positions exceed the model's context of {} tokens",
                start + t,
                self.config.block_size
            )));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Data(format!(
                "token id {id} is outside the model's vocabulary of {}",
                self.config.vocab_size
            )));
        }
        Ok(())
    }

    /// The final hidden states (after `ln_f`). With `caches`, the ids are the
    /// next positions after what the caches hold.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, C]`
    pub fn hidden(
        &self,
        ids: &[u32],
        b: usize,
        t: usize,
        drop: &Dropout,
        mut caches: Option<&mut [KvCache]>,
    ) -> Result<Tensor> {
        let start = caches.as_ref().and_then(|c| c.first()).map_or(0, |c| c.len());
        let mut x = self.embed(ids, b, t, start, drop)?;
        for (i, block) in self.h.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|cs| &mut cs[i]);
            x = block.forward(&x, None, cache, drop, 2 + 2 * i as u64)?;
        }
        Ok(self.ln_f.forward(&x)?)
    }

    /// Token embeddings plus the positions' (for learned and sinusoidal
    /// positions; RoPE and ALiBi act inside attention): the residual stream
    /// the first block reads. `start`: the position of the first id.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, C]`
    pub fn embed(&self, ids: &[u32], b: usize, t: usize, start: usize, drop: &Dropout) -> Result<Tensor> {
        self.check_ids(ids, b, t, start)?;
        let c = self.config.n_embd;
        let mut x = self.wte.forward(ids, &[b, t])?; // [B, T, C]
        match self.config.positions {
            Positions::Learned => {
                let pos: Vec<u32> = (start..start + t).map(|p| p as u32).collect();
                let wpe = self.wpe.as_ref().expect("learned positions have a table");
                x = x.add(&wpe.forward(&pos, &[t])?)?; // [T, C] broadcast over B
            }
            Positions::Sinusoidal => x = x.add(&sinusoidal_table(start, t, c))?,
            Positions::Rope | Positions::Alibi | Positions::None => {}
        }
        Ok(drop.apply(&x, 0)?)
    }

    /// The attention probabilities of every block (what each token reads from
    /// the earlier ones), computed beside an ordinary forward pass.
    ///
    /// # Shapes
    /// ids `[B, T]` → one `[B, H, T, T]` per block
    pub fn attention_maps(&self, ids: &[u32], b: usize, t: usize) -> Result<Vec<Tensor>> {
        qkv_tensor::no_grad(|| {
            let mut x = self.embed(ids, b, t, 0, &Dropout::default())?;
            let mut maps = Vec::with_capacity(self.h.len());
            for block in &self.h {
                let (out, probs) = block.forward_with_probabilities(&x, None)?;
                maps.push(probs);
                x = out;
            }
            Ok(maps)
        })
    }

    /// Scores over the vocabulary: `x · Wᵀ` with `W` the `[V, C]` head.
    ///
    /// # Shapes
    /// x `[.., C]` → `[.., V]`
    pub fn logits(&self, x: &Tensor) -> TResult<Tensor> {
        x.matmul(&self.head().value().t()?)
    }

    /// The `[V, C]` LM head: `lm_head`, or the token embedding when tied.
    pub fn head(&self) -> &Param {
        self.lm_head.as_ref().unwrap_or(&self.wte.weight)
    }

    /// # Shapes
    /// ids `[B, T]` → logits `[B, T, V]`
    pub fn forward(&self, ids: &[u32], b: usize, t: usize, drop: &Dropout) -> Result<Tensor> {
        let x = self.hidden(ids, b, t, drop, None)?;
        Ok(self.logits(&x)?)
    }

    /// Mean next-token cross-entropy: `targets[i]` is the token after `ids[i]`.
    pub fn loss(&self, ids: &[u32], targets: &[u32], b: usize, t: usize, drop: &Dropout) -> Result<Tensor> {
        let logits = self.forward(ids, b, t, drop)?;
        Ok(qkv_tensor::cross_entropy(&logits, targets, None)?)
    }

    /// Logits of the last position only, feeding `ids` through the caches
    /// (generation: only the newest position's scores are needed).
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, V]`
    pub fn next_logits(&self, ids: &[u32], b: usize, t: usize, caches: &mut [KvCache]) -> Result<Tensor> {
        let x = self.hidden(ids, b, t, &Dropout::default(), Some(caches))?; // [B, T, C]
        let last = x.narrow(1, t - 1, 1)?.reshape(&[b, self.config.n_embd])?;
        Ok(self.logits(&last)?)
    }
}

impl Module for Gpt {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.wte.collect_params(&format!("{prefix}transformer.wte."), out);
        if let Some(wpe) = &self.wpe {
            wpe.collect_params(&format!("{prefix}transformer.wpe."), out);
        }
        for (i, b) in self.h.iter().enumerate() {
            b.collect_params(&format!("{prefix}transformer.h.{i}."), out);
        }
        self.ln_f.collect_params(&format!("{prefix}transformer.ln_f."), out);
        if let Some(w) = &self.lm_head {
            out.push(NamedParam { name: format!("{prefix}lm_head.weight"), param: w.clone(), decay: true });
        }
    }
}
