//! The encoder–decoder of "Attention Is All You Need", built for translation.
//!
//! source ids → shared embedding × √C (+ positions) → N encoder blocks
//! (bidirectional self-attention, source padding hidden; then the MLP) →
//! one vector per source token: the **memory**.
//!
//! target ids so far → the same embedding × √C (+ positions) → N decoder
//! blocks (causal self-attention over the target; **cross-attention** from
//! each target position to the memory; the MLP) → scores over the shared
//! vocabulary through the embedding matrix again (input, output and
//! pre-softmax weights tied, as in the paper).
//!
//! Training feeds the whole target at once, shifted right by one (the
//! decoder starts from `decoder_start_token_id`), and scores every position
//! against the next token. Translating feeds one token at a time, with the
//! decoder's self-attention keys and values cached and the memory's keys and
//! values computed once per sentence ([`Seq2Seq::memories`]).
//!
//! Names and layout follow Hugging Face's `MarianMTModel`
//! (`model.shared`, `model.encoder.layers.0.self_attn.q_proj`,
//! `model.decoder.layers.0.encoder_attn.k_proj`, … with `nn.Linear`
//! weights stored `[out, in]`), and the configuration uses the field names of
//! its `config.json`, so Marian checkpoints load as they are.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, Tensor};

use crate::error::{Error, Result};
use crate::nn::attention::{Attention, KvCache, Memory};
use crate::nn::block::{Block, DecoderBlock, Naming, Placement};
use crate::nn::embedding::Embedding;
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::norm::{Norm, NormKind};
use crate::nn::positional::{Positions, sinusoidal_halves_table};
use crate::nn::{Dropout, Module, NamedParam};

/// The architecture, in the field names of Hugging Face's `MarianConfig`.
/// Every field has a default: the model `qkv train --model seq2seq` builds
/// (the paper's architecture at a small size).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Seq2SeqConfig {
    /// V, shared by source and target. Default 8000.
    pub vocab_size: usize,
    /// C. Default 256.
    pub d_model: usize,
    /// Default 3.
    pub encoder_layers: usize,
    /// Default 3.
    pub decoder_layers: usize,
    /// Default 4.
    pub encoder_attention_heads: usize,
    /// Default 4.
    pub decoder_attention_heads: usize,
    /// F of the encoder's MLP. Default 1024.
    pub encoder_ffn_dim: usize,
    /// F of the decoder's MLP. Default 1024.
    pub decoder_ffn_dim: usize,
    /// "relu" (the paper), "swish" (Marian), "gelu" or "gelu_new". Default "relu".
    pub activation_function: String,
    /// Longest source or target in tokens. Default 256.
    pub max_position_embeddings: usize,
    /// Multiply embeddings by √C (the paper and Marian do). Default true.
    pub scale_embedding: bool,
    /// Norms before each sublayer (pre-norm, with a final norm after each
    /// stack) instead of after the residual addition (post-norm, the paper's
    /// and Marian's). Default false.
    pub normalize_before: bool,
    /// Dropout on embeddings and on each sublayer's output while training. Default 0.1.
    pub dropout: f32,
    /// Default 0.
    pub pad_token_id: u32,
    /// Default 1.
    pub eos_token_id: u32,
    /// The first input of the decoder (Marian: the padding id). Default 0.
    pub decoder_start_token_id: u32,
    /// How positions enter: "sinusoidal" (the paper, Marian), "learned" or
    /// "rope". qkv's own field, absent from Marian configs. Default sinusoidal.
    pub qkv_positions: Positions,
    /// LayerNorm epsilon. Default 1e-5.
    pub layer_norm_eps: f32,
    /// Everything else a `config.json` may hold (kept when writing it back).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for Seq2SeqConfig {
    fn default() -> Self {
        Seq2SeqConfig {
            vocab_size: 8000,
            d_model: 256,
            encoder_layers: 3,
            decoder_layers: 3,
            encoder_attention_heads: 4,
            decoder_attention_heads: 4,
            encoder_ffn_dim: 1024,
            decoder_ffn_dim: 1024,
            activation_function: "relu".into(),
            max_position_embeddings: 256,
            scale_embedding: true,
            normalize_before: false,
            dropout: 0.1,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: 0,
            qkv_positions: Positions::Sinusoidal,
            layer_norm_eps: 1e-5,
            extra: Default::default(),
        }
    }
}

impl Seq2SeqConfig {
    pub fn activation(&self) -> Result<Activation> {
        match self.activation_function.as_str() {
            "relu" => Ok(Activation::Relu),
            "swish" | "silu" => Ok(Activation::Silu),
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" => Ok(Activation::GeluTanh),
            other => Err(Error::Config(format!(
                "activation_function {other:?} is not supported (relu, swish, gelu, gelu_new)"
            ))),
        }
    }

    /// Reject sizes and options that cannot work, before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
            ("encoder_ffn_dim", self.encoder_ffn_dim),
            ("decoder_ffn_dim", self.decoder_ffn_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        for (name, h) in [("encoder", self.encoder_attention_heads), ("decoder", self.decoder_attention_heads)] {
            if h == 0 || !self.d_model.is_multiple_of(h) {
                return bad(format!("d_model ({}) must be a multiple of {name}_attention_heads ({h})", self.d_model));
            }
            if self.qkv_positions == Positions::Rope && !(self.d_model / h).is_multiple_of(2) {
                return bad(format!("RoPE rotates feature pairs: the {name}'s head width must be even"));
            }
        }
        if matches!(self.qkv_positions, Positions::Alibi | Positions::None) {
            return bad(format!("positions {:?}: use sinusoidal, learned or rope", self.qkv_positions));
        }
        for id in [self.pad_token_id, self.eos_token_id, self.decoder_start_token_id] {
            if id as usize >= self.vocab_size {
                return bad(format!("special token id {id} is outside the vocabulary of {}", self.vocab_size));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(self.layer_norm_eps > 0.0) {
            return bad(format!("layer_norm_eps {} must be positive", self.layer_norm_eps));
        }
        self.activation()?;
        // Marian options qkv does not implement, named rather than ignored
        let flag = |k: &str| self.extra.get(k).and_then(|v| v.as_bool());
        for (key, unsupported) in [
            ("share_encoder_decoder_embeddings", Some(false)),
            ("tie_word_embeddings", Some(false)),
            ("add_bias_logits", Some(true)),
            ("normalize_embedding", Some(true)),
            ("add_final_layer_norm", Some(true)),
        ] {
            if flag(key).is_some() && flag(key) == unsupported {
                return bad(format!("{key} = {} is not supported", unsupported.unwrap_or(false)));
            }
        }
        if let Some(v) = self.extra.get("decoder_vocab_size").and_then(|v| v.as_u64())
            && v as usize != self.vocab_size
        {
            return bad(format!(
                "decoder_vocab_size {v} differs from vocab_size {}: qkv shares one vocabulary",
                self.vocab_size
            ));
        }
        super::within_bounds(self.checked_params(), "this encoder–decoder configuration")
    }

    /// About the parameter count (shared embedding, learned positions, the
    /// encoder's and decoder's layers), with checked arithmetic: `None` when
    /// it overflows.
    pub fn checked_params(&self) -> Option<usize> {
        let c = self.d_model;
        let attn = c.checked_mul(c)?.checked_mul(4)?;
        let encoder = attn.checked_add(c.checked_mul(self.encoder_ffn_dim)?.checked_mul(2)?)?;
        let decoder = attn.checked_mul(2)?.checked_add(c.checked_mul(self.decoder_ffn_dim)?.checked_mul(2)?)?;
        let tables = self.vocab_size.checked_add(self.max_position_embeddings.checked_mul(2)?)?.checked_mul(c)?;
        encoder
            .checked_mul(self.encoder_layers)?
            .checked_add(decoder.checked_mul(self.decoder_layers)?)?
            .checked_add(tables)
    }

    fn placement(&self) -> Placement {
        if self.normalize_before { Placement::Pre } else { Placement::Post }
    }
}

/// One batch of source or target ids with its padding.
pub struct Side<'a> {
    /// `[B, T]`
    pub ids: &'a [u32],
    /// `[B, T]`: `true` for real tokens.
    pub mask: &'a [bool],
    pub b: usize,
    pub t: usize,
}

pub struct Seq2Seq {
    pub config: Seq2SeqConfig,
    /// `[V, C]`: token embedding of both sides, and the output projection.
    pub shared: Embedding,
    /// `[max_pos, C]` learned position tables (`positions = learned`).
    pub encoder_positions: Option<Embedding>,
    pub decoder_positions: Option<Embedding>,
    pub encoder: Vec<Block>,
    pub decoder: Vec<DecoderBlock>,
    /// Final norms of a pre-norm model (`model.encoder.layer_norm`, …).
    pub encoder_norm: Option<Norm>,
    pub decoder_norm: Option<Norm>,
    /// `[V]`, added to the output scores (Marian's `final_logits_bias`, a
    /// buffer of zeros in models trained by `transformers`; not trained).
    pub final_logits_bias: Option<Tensor>,
}

impl Seq2Seq {
    /// A freshly initialised model: embeddings N(0, 1/C) (unit vectors
    /// once scaled by √C), projections N(0, 0.02), zero biases, unit norms.
    pub fn new(config: Seq2SeqConfig, seed: u64) -> Result<Seq2Seq> {
        config.validate()?;
        let c = &config;
        let mut rng = Rng::new(seed);
        let rng = &mut rng;
        let (d, std) = (c.d_model, 0.02);
        let act = c.activation()?;
        let norm = || Norm::new(NormKind::LayerNorm, d, true, c.layer_norm_eps);
        let shared = Embedding::new(c.vocab_size, d, (d as f32).powf(-0.5), rng);
        let learned = c.qkv_positions == Positions::Learned;
        let encoder_positions = learned.then(|| Embedding::new(c.max_position_embeddings, d, 0.02, rng));
        let decoder_positions = learned.then(|| Embedding::new(c.max_position_embeddings, d, 0.02, rng));
        let attention = |heads: usize, causal: bool, rng: &mut Rng| {
            let mut a = Attention::new_separate(d, heads, true, std, rng);
            a.causal = causal;
            a.positions = if c.qkv_positions == Positions::Rope { Positions::Rope } else { Positions::None };
            a
        };
        let encoder = (0..c.encoder_layers)
            .map(|_| Block {
                ln_1: norm(),
                attn: attention(c.encoder_attention_heads, false, rng),
                ln_2: norm(),
                mlp: Mlp::new_out_in(d, c.encoder_ffn_dim, act, true, std, rng),
                placement: c.placement(),
                naming: Naming::Marian,
            })
            .collect();
        let decoder = (0..c.decoder_layers)
            .map(|_| {
                let self_attn = attention(c.decoder_attention_heads, true, rng);
                let mut encoder_attn = attention(c.decoder_attention_heads, false, rng);
                encoder_attn.positions = Positions::None; // positions rotate within a sequence, not across two
                DecoderBlock {
                    self_attn,
                    self_attn_layer_norm: norm(),
                    encoder_attn,
                    encoder_attn_layer_norm: norm(),
                    mlp: Mlp::new_out_in(d, c.decoder_ffn_dim, act, true, std, rng),
                    final_layer_norm: norm(),
                    placement: c.placement(),
                }
            })
            .collect();
        let (encoder_norm, decoder_norm) = if c.normalize_before { (Some(norm()), Some(norm())) } else { (None, None) };
        Ok(Seq2Seq {
            config,
            shared,
            encoder_positions,
            decoder_positions,
            encoder,
            decoder,
            encoder_norm,
            decoder_norm,
            final_logits_bias: None,
        })
    }

    fn check(&self, x: &Side, start: usize, what: &str) -> Result<()> {
        let c = &self.config;
        if x.ids.len() != x.b * x.t || x.mask.len() != x.b * x.t || x.t == 0 {
            return Err(Error::Data(format!("{what} ids and mask do not form a [{}, {}] batch", x.b, x.t)));
        }
        if start + x.t > c.max_position_embeddings {
            return Err(Error::Data(format!(
                "{} {what} tokens exceed the model's {} positions",
                start + x.t,
                c.max_position_embeddings
            )));
        }
        if let Some(&id) = x.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Data(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
        }
        Ok(())
    }

    /// Token embeddings × √C plus the positions `start ..`.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, C]`
    fn embed(&self, x: &Side, start: usize, positions: &Option<Embedding>) -> Result<Tensor> {
        let c = &self.config;
        let mut h = self.shared.forward(x.ids, &[x.b, x.t])?;
        if c.scale_embedding {
            h = h.scale((c.d_model as f32).sqrt());
        }
        Ok(match c.qkv_positions {
            Positions::Sinusoidal => h.add(&sinusoidal_halves_table(start, x.t, c.d_model))?,
            Positions::Learned => {
                let pos: Vec<u32> = (start..start + x.t).map(|p| p as u32).collect();
                let table = positions.as_ref().expect("learned positions have a table");
                h.add(&table.forward(&pos, &[x.t])?)?
            }
            _ => h, // RoPE: inside attention
        })
    }

    /// The encoder: one vector per source token (the memory).
    ///
    /// # Shapes
    /// src `[B, Ts]` → `[B, Ts, C]`
    pub fn encode(&self, src: &Side, drop: &Dropout) -> Result<Tensor> {
        self.check(src, 0, "source")?;
        let mut h = drop.apply(&self.embed(src, 0, &self.encoder_positions)?, 0)?;
        for (i, block) in self.encoder.iter().enumerate() {
            h = block.forward(&h, Some(src.mask), None, drop, 2 + 2 * i as u64)?;
        }
        match &self.encoder_norm {
            Some(n) => Ok(n.forward(&h)?),
            None => Ok(h),
        }
    }

    /// Every decoder block's keys and values of the memory, for cross-attention.
    pub fn memories(&self, memory: &Tensor, src_mask: &[bool]) -> Result<Vec<Memory>> {
        Ok(self
            .decoder
            .iter()
            .map(|b| b.encoder_attn.memory(memory, Some(src_mask)))
            .collect::<qkv_tensor::Result<_>>()?)
    }

    /// The decoder's final hidden states. With `caches`, `tgt` holds the
    /// positions after those the caches hold.
    ///
    /// # Shapes
    /// tgt `[B, Tt]` → `[B, Tt, C]`
    pub fn decode(
        &self,
        tgt: &Side,
        memories: &[Memory],
        mut caches: Option<&mut [KvCache]>,
        drop: &Dropout,
    ) -> Result<Tensor> {
        let start = caches.as_ref().and_then(|c| c.first()).map_or(0, |c| c.len());
        self.check(tgt, start, "target")?;
        let base = 2 + 2 * self.encoder.len() as u64;
        let mut h = drop.apply(&self.embed(tgt, start, &self.decoder_positions)?, base)?;
        for (i, block) in self.decoder.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|cs| &mut cs[i]);
            h = block.forward(&h, &memories[i], cache, drop, base + 1 + 3 * i as u64)?;
        }
        match &self.decoder_norm {
            Some(n) => Ok(n.forward(&h)?),
            None => Ok(h),
        }
    }

    /// Scores over the vocabulary: `h · Wᵀ (+ bias)` with `W` the shared
    /// `[V, C]` embedding.
    ///
    /// # Shapes
    /// h `[.., C]` → `[.., V]`
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let y = h.matmul(&self.shared.weight.value().t()?)?;
        Ok(match &self.final_logits_bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    /// Scores for every target position, fed the whole target at once
    /// (teacher forcing).
    ///
    /// # Shapes
    /// src `[B, Ts]`, tgt_in `[B, Tt]` → `[B, Tt, V]`
    pub fn forward(&self, src: &Side, tgt_in: &Side, drop: &Dropout) -> Result<Tensor> {
        let memory = self.encode(src, drop)?;
        let memories = self.memories(&memory, src.mask)?;
        self.logits(&self.decode(tgt_in, &memories, None, drop)?)
    }

    /// Cross-attention of every decoder block for one pair, without
    /// gradients: `[H, Tt, Ts]` per block, row `i` the weights target
    /// position `i` gives the source positions.
    pub fn cross_attention(&self, src: &[u32], tgt_in: &[u32]) -> Result<Vec<Tensor>> {
        qkv_tensor::no_grad(|| {
            let smask = vec![true; src.len()];
            let s = Side { ids: src, mask: &smask, b: 1, t: src.len() };
            let memory = self.encode(&s, &Dropout::default())?;
            let memories = self.memories(&memory, &smask)?;
            let tmask = vec![true; tgt_in.len()];
            let t = Side { ids: tgt_in, mask: &tmask, b: 1, t: tgt_in.len() };
            self.check(&t, 0, "target")?;
            let mut h = self.embed(&t, 0, &self.decoder_positions)?;
            let mut maps = Vec::with_capacity(self.decoder.len());
            for (block, m) in self.decoder.iter().zip(&memories) {
                let (out, probs) = block.forward_with_cross_probabilities(&h, m)?;
                let (_, heads, tq, tk) = probs.dims4()?;
                maps.push(probs.reshape(&[heads, tq, tk])?);
                h = out;
            }
            Ok(maps)
        })
    }

    /// Key/value caches of the decoder's self-attention, one per block.
    pub fn new_caches(&self, batch: usize, capacity: usize) -> Vec<KvCache> {
        let c = &self.config;
        let (h, d) = (c.decoder_attention_heads, c.d_model / c.decoder_attention_heads);
        (0..c.decoder_layers).map(|_| KvCache::new(batch, capacity.min(c.max_position_embeddings), h, d)).collect()
    }
}

impl Seq2Seq {
    /// Load a Hugging Face `MarianMTModel` directory (or a `qkv train --model
    /// seq2seq` run, written in the same layout): `config.json` and the
    /// weights. `final_logits_bias` is read; the copies of the shared
    /// embedding (`lm_head`, `model.encoder.embed_tokens`, …) must equal it;
    /// stored sinusoidal position tables are recomputed, not read.
    pub fn load(dir: &std::path::Path) -> Result<Seq2Seq> {
        use crate::io::hf;
        let config = hf::read_config(dir)?;
        let cfg_path = dir.join(hf::CONFIG);
        let cfg: Seq2SeqConfig = serde_json::from_value(config)
            .map_err(|e| Error::format(&cfg_path, format!("not a Marian config: {e}")))?;
        cfg.validate().map_err(|e| Error::format(&cfg_path, e.to_string()))?;
        hf::weights_can_hold(dir, cfg.checked_params())?;
        let mut model = Seq2Seq::new(cfg, 0)?;
        let tensors = hf::read_weights(dir)?;
        let path = dir.join(hf::WEIGHTS);
        let unused = hf::assign(&path, &model.named_params(), &tensors, "")?;
        let shared = model.shared.weight.value().to_vec();
        for name in unused {
            let t = &tensors[&name];
            match name.as_str() {
                "final_logits_bias" => {
                    let v = model.config.vocab_size;
                    if t.numel() != v {
                        return Err(Error::checkpoint(
                            &path,
                            format!("final_logits_bias has {} values, expected {v}", t.numel()),
                        ));
                    }
                    model.final_logits_bias = Some(t.reshape(&[v])?);
                }
                "lm_head.weight" | "model.encoder.embed_tokens.weight" | "model.decoder.embed_tokens.weight" => {
                    if t.to_vec() != shared {
                        return Err(Error::checkpoint(
                            &path,
                            format!("{name} differs from model.shared.weight: qkv ties input and output embeddings"),
                        ));
                    }
                }
                "model.encoder.embed_positions.weight" | "model.decoder.embed_positions.weight"
                    if model.config.qkv_positions == Positions::Sinusoidal => {}
                other => {
                    return Err(Error::checkpoint(
                        &path,
                        format!("unexpected tensor {other:?}: not a model this config describes"),
                    ));
                }
            }
        }
        Ok(model)
    }
}

impl Module for Seq2Seq {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.shared.collect_params(&format!("{prefix}model.shared."), out);
        for (side, positions) in [("encoder", &self.encoder_positions), ("decoder", &self.decoder_positions)] {
            if let Some(p) = positions {
                p.collect_params(&format!("{prefix}model.{side}.embed_positions."), out);
            }
        }
        for (i, b) in self.encoder.iter().enumerate() {
            b.collect_params(&format!("{prefix}model.encoder.layers.{i}."), out);
        }
        if let Some(n) = &self.encoder_norm {
            n.collect_params(&format!("{prefix}model.encoder.layer_norm."), out);
        }
        for (i, b) in self.decoder.iter().enumerate() {
            b.collect_params(&format!("{prefix}model.decoder.layers.{i}."), out);
        }
        if let Some(n) = &self.decoder_norm {
            n.collect_params(&format!("{prefix}model.decoder.layer_norm."), out);
        }
    }
}
