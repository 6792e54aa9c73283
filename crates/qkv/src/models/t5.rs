//! T5 (Raffel et al., 2020): the encoder–decoder of the original paper with
//! another positional scheme. No position is added to the tokens; instead
//! each attention score gets a learned bias that depends only on how far the
//! key is from the query (the relative distance, put into logarithmic
//! buckets). Beside that: pre-norm with RMSNorm (no centring, no bias), no
//! biases anywhere, no `1/√d` scaling of the scores (folded into the
//! initialisation), heads of width `d_kv` independent of `d_model`, and the
//! MLP plain (`relu`, T5 1.0) or gated (`gated-gelu`, T5 1.1).
//!
//! Loaded from `T5ForConditionalGeneration` directories for inference
//! (`qkv translate`, `qkv eval`, `qkv attention`); training uses
//! [`crate::models::seq2seq`]. The scores are computed plainly (scores,
//! bias, softmax, values) since the tiled kernel has no additive bias.

use std::path::Path;

use serde::Deserialize;

use qkv_tensor::{Rng, Tensor};

use super::MAX_PARAMS;
use crate::error::{Error, Result};
use crate::io::hf;
use crate::nn::attention::{KvCache, Memory};
use crate::nn::embedding::Embedding;
use crate::nn::linear::Linear;
use crate::nn::norm::{Norm, NormKind};
use crate::nn::{Module, NamedParam};

/// The fields of a `T5Config` that shape the computation (names as in
/// `config.json`; the others are ignored).
#[derive(Clone, Debug, Deserialize)]
pub struct T5Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Width of one head's queries, keys and values. Default 64.
    #[serde(default = "d_kv")]
    pub d_kv: usize,
    pub d_ff: usize,
    /// Encoder blocks.
    pub num_layers: usize,
    /// Decoder blocks; default `num_layers`.
    pub num_decoder_layers: Option<usize>,
    pub num_heads: usize,
    /// Default 32.
    #[serde(default = "buckets")]
    pub relative_attention_num_buckets: usize,
    /// Distances from this on share the last bucket. Default 128.
    #[serde(default = "max_distance")]
    pub relative_attention_max_distance: usize,
    /// Default 1e-6.
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f32,
    /// `relu`, `gelu`, `gelu_new`, `silu`, or one of them `gated-…`. Default relu.
    #[serde(default = "relu")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub pad_token_id: u32,
    #[serde(default = "one")]
    pub eos_token_id: u32,
    #[serde(default)]
    pub decoder_start_token_id: u32,
    /// T5 1.0 scales the decoder's output by `d_model^-0.5` before the tied
    /// output projection; T5 1.1 (`tie_word_embeddings: false`) does not.
    pub tie_word_embeddings: Option<bool>,
    /// As `transformers` 5 writes it; wins over `tie_word_embeddings`.
    pub scale_decoder_outputs: Option<bool>,
    pub is_encoder_decoder: Option<bool>,
}

fn d_kv() -> usize {
    64
}
fn buckets() -> usize {
    32
}
fn max_distance() -> usize {
    128
}
fn eps() -> f32 {
    1e-6
}
fn relu() -> String {
    "relu".into()
}
fn one() -> u32 {
    1
}

impl T5Config {
    pub fn decoder_layers(&self) -> usize {
        self.num_decoder_layers.unwrap_or(self.num_layers)
    }

    fn scale_output(&self) -> bool {
        self.scale_decoder_outputs.unwrap_or(self.tie_word_embeddings != Some(false))
    }

    /// `(gated, activation)` of the MLP.
    fn mlp(&self) -> Result<(bool, Act)> {
        let (gated, name) = match self.feed_forward_proj.strip_prefix("gated-") {
            Some(n) => (true, n),
            None => (false, self.feed_forward_proj.as_str()),
        };
        let act = match (gated, name) {
            (_, "relu") => Act::Relu,
            // transformers reads gated-gelu as the tanh approximation
            (true, "gelu") | (_, "gelu_new") | (_, "gelu_pytorch_tanh") => Act::GeluTanh,
            (false, "gelu") => Act::Gelu,
            (_, "silu") | (_, "swish") => Act::Silu,
            _ => {
                return Err(Error::Config(format!(
                    "feed_forward_proj {:?} is not supported (relu, gelu, gelu_new, silu, or gated-…)",
                    self.feed_forward_proj
                )));
            }
        };
        Ok((gated, act))
    }

    /// About the parameter count (attention and MLP of every block, the
    /// shared embedding and a head), with checked arithmetic — a config may
    /// ask for anything: `None` when it overflows.
    pub fn checked_params(&self) -> Option<usize> {
        let (d, inner) = (self.d_model, self.num_heads.checked_mul(self.d_kv)?);
        let per_block = inner.checked_mul(d)?.checked_mul(8)?.checked_add(self.d_ff.checked_mul(d)?.checked_mul(3)?)?;
        per_block
            .checked_mul(self.num_layers.checked_add(self.decoder_layers())?)?
            .checked_add(self.vocab_size.checked_mul(d)?.checked_mul(2)?)
    }

    /// Reject sizes and options that cannot work, before anything is allocated.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.decoder_layers()),
            ("num_heads", self.num_heads),
            ("relative_attention_num_buckets", self.relative_attention_num_buckets),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if self.relative_attention_num_buckets < 4 || self.relative_attention_max_distance < 2 {
            return bad(
                "relative_attention_num_buckets must be at least 4 and relative_attention_max_distance at least 2"
                    .into(),
            );
        }
        if self.is_encoder_decoder == Some(false) {
            return bad("is_encoder_decoder = false: qkv loads T5 as an encoder–decoder".into());
        }
        for id in [self.pad_token_id, self.eos_token_id, self.decoder_start_token_id] {
            if id as usize >= self.vocab_size {
                return bad(format!("special token id {id} is outside the vocabulary of {}", self.vocab_size));
            }
        }
        if !(self.layer_norm_epsilon > 0.0) {
            return bad(format!("layer_norm_epsilon {} must be positive", self.layer_norm_epsilon));
        }
        self.mlp()?;
        match self.checked_params() {
            Some(n) if n <= MAX_PARAMS => Ok(()),
            _ => bad(format!("the config asks for more than {MAX_PARAMS} parameters")),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Relu,
    Gelu,
    GeluTanh,
    Silu,
}

impl Act {
    fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Act::Relu => x.relu(),
            Act::Gelu => x.gelu(),
            Act::GeluTanh => x.gelu_tanh(),
            Act::Silu => x.silu(),
        }
    }
}

/// Bucket of the distance `key - query`, as Mesh TensorFlow and
/// `transformers` compute it: half the buckets for exact small distances,
/// the rest logarithmically up to `max_distance`; with `bidirectional`,
/// half of all buckets for keys after the query. In f32, as PyTorch does.
pub fn relative_bucket(relative: i64, bidirectional: bool, num_buckets: usize, max_distance: usize) -> usize {
    let mut buckets = num_buckets as i64;
    let mut bucket = 0i64;
    let n = if bidirectional {
        buckets /= 2;
        if relative > 0 {
            bucket += buckets;
        }
        relative.abs()
    } else {
        (-relative).max(0)
    };
    let exact = buckets / 2;
    bucket += if n < exact {
        n
    } else {
        let log_ratio = (n as f32 / exact as f32).ln() / ((max_distance as f64 / exact as f64).ln() as f32);
        (exact + (log_ratio * (buckets - exact) as f32) as i64).min(buckets - 1)
    };
    bucket as usize
}

/// The learned bias of every (head, distance bucket), added to the scores.
#[derive(Clone, Debug)]
pub struct RelativePositionBias {
    /// `[buckets, H]` (`relative_attention_bias.weight`).
    pub table: Embedding,
    pub bidirectional: bool,
    pub max_distance: usize,
}

impl RelativePositionBias {
    /// Bias of queries at positions `start..start + tq` over keys `0..tk`.
    ///
    /// # Shapes
    /// → `[H, Tq, Tk]` as a flat vector
    pub fn bias(&self, start: usize, tq: usize, tk: usize) -> Vec<f32> {
        let table = self.table.weight.value().to_vec();
        let (buckets, h) = (self.table.vocab(), table.len() / self.table.vocab());
        let mut out = vec![0.0; h * tq * tk];
        for i in 0..tq {
            for j in 0..tk {
                let b = relative_bucket(j as i64 - (start + i) as i64, self.bidirectional, buckets, self.max_distance);
                for hd in 0..h {
                    out[(hd * tq + i) * tk + j] = table[b * h + hd];
                }
            }
        }
        out
    }
}

/// T5's attention: projections without bias, heads of width `d_kv`,
/// unscaled scores plus an additive bias (positions and masks).
#[derive(Clone, Debug)]
pub struct T5Attention {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub heads: usize,
    pub d_kv: usize,
}

impl T5Attention {
    fn new(c: &T5Config, rng: &mut Rng) -> T5Attention {
        let inner = c.num_heads * c.d_kv;
        let lin = |i, o, rng: &mut Rng| Linear::new_out_in(i, o, false, 0.02, rng);
        T5Attention {
            q: lin(c.d_model, inner, rng),
            k: lin(c.d_model, inner, rng),
            v: lin(c.d_model, inner, rng),
            o: lin(inner, c.d_model, rng),
            heads: c.num_heads,
            d_kv: c.d_kv,
        }
    }

    /// # Shapes
    /// x `[B, T, C]` → `[B, H, T, D]`
    fn heads_of(&self, proj: &Linear, x: &Tensor) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        Ok(proj.forward(x)?.reshape(&[b, t, self.heads, self.d_kv])?.permute(&[0, 2, 1, 3])?)
    }

    /// Keys and values of the encoder's output, once per sentence.
    pub fn memory(&self, memory: &Tensor, mask: &[bool]) -> Result<Memory> {
        Ok(Memory { k: self.heads_of(&self.k, memory)?, v: self.heads_of(&self.v, memory)?, mask: Some(mask.to_vec()) })
    }

    /// softmax(q·kᵀ + bias) · v, then the output projection; also the
    /// probabilities.
    ///
    /// # Shapes
    /// q `[B, H, Tq, D]`, k and v `[B, H, Tk, D]`, bias `[B, H, Tq, Tk]` → `[B, Tq, C]`, `[B, H, Tq, Tk]`
    fn attend(&self, q: &Tensor, k: &Tensor, v: &Tensor, bias: Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, tq, d) = q.dims4()?;
        let probs = q.matmul(&k.transpose(2, 3)?)?.add(&bias)?.softmax();
        let y = probs.matmul(v)?.permute(&[0, 2, 1, 3])?.reshape(&[b, tq, h * d])?;
        Ok((self.o.forward(&y)?, probs))
    }
}

/// `bias` `[H, Tq, Tk]` (or none) for every batch row, keys where `visible`
/// is false pushed to the lowest score (as `transformers` does, `f32::MIN`).
fn scores_bias(
    b: usize,
    h: usize,
    tq: usize,
    tk: usize,
    bias: Option<&[f32]>,
    visible: impl Fn(usize, usize, usize) -> bool,
) -> Result<Tensor> {
    let mut out = Vec::with_capacity(b * h * tq * tk);
    for bi in 0..b {
        for hd in 0..h {
            for i in 0..tq {
                for j in 0..tk {
                    let base = bias.map_or(0.0, |p| p[(hd * tq + i) * tk + j]);
                    out.push(if visible(bi, i, j) { base } else { base + f32::MIN });
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, &[b, h, tq, tk])?)
}

/// The MLP: `wo(act(wi x))`, or gated `wo(act(wi_0 x) ⊙ wi_1 x)`.
#[derive(Clone, Debug)]
pub struct T5Mlp {
    /// `wi` or `wi_0`
    pub wi: Linear,
    /// `wi_1` of the gated MLP.
    pub gate: Option<Linear>,
    pub wo: Linear,
    act: Act,
}

impl T5Mlp {
    fn new(c: &T5Config, rng: &mut Rng) -> Result<T5Mlp> {
        let (gated, act) = c.mlp()?;
        let lin = |i, o, rng: &mut Rng| Linear::new_out_in(i, o, false, 0.02, rng);
        Ok(T5Mlp {
            wi: lin(c.d_model, c.d_ff, rng),
            gate: if gated { Some(lin(c.d_model, c.d_ff, rng)) } else { None },
            wo: lin(c.d_ff, c.d_model, rng),
            act,
        })
    }

    /// # Shapes
    /// x `[B, T, C]` → `[B, T, C]`
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.act.apply(&self.wi.forward(x)?);
        let h = match &self.gate {
            Some(g) => h.mul(&g.forward(x)?)?,
            None => h,
        };
        Ok(self.wo.forward(&h)?)
    }

    fn collect(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        match &self.gate {
            Some(g) => {
                self.wi.collect_params(&format!("{prefix}wi_0."), out);
                g.collect_params(&format!("{prefix}wi_1."), out);
            }
            None => self.wi.collect_params(&format!("{prefix}wi."), out),
        }
        self.wo.collect_params(&format!("{prefix}wo."), out);
    }
}

/// An encoder block: self-attention, then the MLP, each after an RMSNorm
/// and added to the residual stream.
#[derive(Clone, Debug)]
pub struct T5EncoderBlock {
    pub attn_norm: Norm,
    pub attn: T5Attention,
    pub mlp_norm: Norm,
    pub mlp: T5Mlp,
}

/// A decoder block: causal self-attention, cross-attention over the
/// encoder's output (no position bias), the MLP.
#[derive(Clone, Debug)]
pub struct T5DecoderBlock {
    pub self_norm: Norm,
    pub self_attn: T5Attention,
    pub cross_norm: Norm,
    pub cross: T5Attention,
    pub mlp_norm: Norm,
    pub mlp: T5Mlp,
}

pub struct T5 {
    pub config: T5Config,
    /// `[V, C]` token embedding of both sides.
    pub shared: Embedding,
    /// `[V, C]` output projection when the checkpoint has its own
    /// (`lm_head.weight`); otherwise `shared`.
    pub lm_head: Option<Tensor>,
    /// Held by the first block of each stack, shared by all its blocks.
    pub encoder_bias: RelativePositionBias,
    pub decoder_bias: RelativePositionBias,
    pub encoder: Vec<T5EncoderBlock>,
    pub encoder_norm: Norm,
    pub decoder: Vec<T5DecoderBlock>,
    pub decoder_norm: Norm,
}

impl T5 {
    /// A model of this shape with random weights (to be overwritten by `load`).
    pub fn new(config: T5Config) -> Result<T5> {
        config.validate()?;
        let c = &config;
        let mut rng = Rng::new(0);
        let rng = &mut rng;
        let norm = || Norm::new(NormKind::RmsNorm, c.d_model, false, c.layer_norm_epsilon);
        let bias = |bidirectional, rng: &mut Rng| RelativePositionBias {
            table: Embedding::new(c.relative_attention_num_buckets, c.num_heads, 0.02, rng),
            bidirectional,
            max_distance: c.relative_attention_max_distance,
        };
        let encoder = (0..c.num_layers)
            .map(|_| {
                Ok(T5EncoderBlock {
                    attn_norm: norm(),
                    attn: T5Attention::new(c, rng),
                    mlp_norm: norm(),
                    mlp: T5Mlp::new(c, rng)?,
                })
            })
            .collect::<Result<_>>()?;
        let decoder = (0..c.decoder_layers())
            .map(|_| {
                Ok(T5DecoderBlock {
                    self_norm: norm(),
                    self_attn: T5Attention::new(c, rng),
                    cross_norm: norm(),
                    cross: T5Attention::new(c, rng),
                    mlp_norm: norm(),
                    mlp: T5Mlp::new(c, rng)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(T5 {
            shared: Embedding::new(c.vocab_size, c.d_model, 1.0, rng),
            lm_head: None,
            encoder_bias: bias(true, rng),
            decoder_bias: bias(false, rng),
            encoder,
            encoder_norm: norm(),
            decoder,
            decoder_norm: norm(),
            config,
        })
    }

    /// Load a `T5ForConditionalGeneration` directory: `config.json` and the
    /// weights, every tensor accounted for.
    pub fn load(dir: &Path) -> Result<T5> {
        let cfg_path = dir.join(hf::CONFIG);
        let config: T5Config = serde_json::from_value(hf::read_config(dir)?)
            .map_err(|e| Error::format(&cfg_path, format!("not a T5 config: {e}")))?;
        hf::weights_can_hold(dir, config.checked_params())?;
        let mut model = T5::new(config).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
        let tensors = hf::read_weights(dir)?;
        let path = dir.join(hf::WEIGHTS);
        let unused = hf::assign(&path, &model.named_params(), &tensors, "")?;
        for name in unused {
            let t = &tensors[&name];
            match name.as_str() {
                "lm_head.weight" => {
                    if t.shape() != model.shared.weight.shape() {
                        return Err(Error::checkpoint(
                            &path,
                            format!("lm_head.weight is {:?}, expected {:?}", t.shape(), model.shared.weight.shape()),
                        ));
                    }
                    model.lm_head = Some(t.clone());
                }
                "encoder.embed_tokens.weight" | "decoder.embed_tokens.weight" => {
                    if t.to_vec() != model.shared.weight.value().to_vec() {
                        return Err(Error::checkpoint(&path, format!("{name} differs from shared.weight")));
                    }
                }
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

    fn check(&self, ids: &[u32], b: usize, t: usize, what: &str) -> Result<()> {
        if ids.len() != b * t || t == 0 {
            return Err(Error::Data(format!("{what} ids do not form a [{b}, {t}] batch")));
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.config.vocab_size) {
            return Err(Error::Data(format!("token id {id} is outside the vocabulary of {}", self.config.vocab_size)));
        }
        Ok(())
    }

    /// The encoder: one vector per source token.
    ///
    /// # Shapes
    /// ids, mask `[B, T]` → `[B, T, C]`
    pub fn encode(&self, ids: &[u32], mask: &[bool], b: usize, t: usize) -> Result<Tensor> {
        self.check(ids, b, t, "source")?;
        let h_ = self.config.num_heads;
        let pos = self.encoder_bias.bias(0, t, t);
        let bias = scores_bias(b, h_, t, t, Some(&pos), |bi, _, j| mask[bi * t + j])?;
        let mut h = self.shared.forward(ids, &[b, t])?;
        for block in &self.encoder {
            let x = block.attn_norm.forward(&h)?;
            let a = &block.attn;
            let (q, k, v) = (a.heads_of(&a.q, &x)?, a.heads_of(&a.k, &x)?, a.heads_of(&a.v, &x)?);
            h = h.add(&a.attend(&q, &k, &v, bias.clone())?.0)?;
            h = h.add(&block.mlp.forward(&block.mlp_norm.forward(&h)?)?)?;
        }
        Ok(self.encoder_norm.forward(&h)?)
    }

    /// Every decoder block's keys and values of the encoder's output.
    pub fn memories(&self, memory: &Tensor, mask: &[bool]) -> Result<Vec<Memory>> {
        self.decoder.iter().map(|blk| blk.cross.memory(memory, mask)).collect()
    }

    /// The decoder's final hidden states (before the output projection), and
    /// each block's cross-attention probabilities. With `caches`, `ids` are
    /// the positions after those the caches hold.
    ///
    /// # Shapes
    /// ids `[B, Tt]` → `[B, Tt, C]`, per block `[B, H, Tt, Ts]`
    pub fn decode(
        &self,
        ids: &[u32],
        b: usize,
        t: usize,
        memories: &[Memory],
        mut caches: Option<&mut [KvCache]>,
    ) -> Result<(Tensor, Vec<Tensor>)> {
        self.check(ids, b, t, "target")?;
        let start = caches.as_ref().and_then(|c| c.first()).map_or(0, KvCache::len);
        let (h_, tk) = (self.config.num_heads, start + t);
        let pos = self.decoder_bias.bias(start, t, tk);
        let self_bias = scores_bias(b, h_, t, tk, Some(&pos), |_, i, j| j <= start + i)?;
        let mut h = self.shared.forward(ids, &[b, t])?;
        let mut maps = Vec::with_capacity(self.decoder.len());
        for (i, (block, m)) in self.decoder.iter().zip(memories).enumerate() {
            let x = block.self_norm.forward(&h)?;
            let a = &block.self_attn;
            let (q, k, v) = (a.heads_of(&a.q, &x)?, a.heads_of(&a.k, &x)?, a.heads_of(&a.v, &x)?);
            let (k, v) = match caches.as_deref_mut() {
                Some(cs) => cs[i].append(&k, &v)?,
                None => (k, v),
            };
            h = h.add(&a.attend(&q, &k, &v, self_bias.clone())?.0)?;
            // the G rows that share one sequence of the memory (beam search's
            // hypotheses of a sentence) are G·Tt queries of that sequence
            let x = block.cross_norm.forward(&h)?;
            let g = m.rows_per_sequence(b)?;
            let (bm, d) = (b / g, self.config.d_kv);
            let q = block.cross.q.forward(&x)?.reshape(&[bm, g * t, h_, d])?.permute(&[0, 2, 1, 3])?;
            let ts = m.k.dims4()?.2;
            let mask = m.mask.as_deref();
            let cross_bias = scores_bias(bm, h_, g * t, ts, None, |bi, _, j| mask.is_none_or(|mk| mk[bi * ts + j]))?;
            let (y, probs) = block.cross.attend(&q, &m.k, &m.v, cross_bias)?; // [Bm, G·Tt, C], [Bm, H, G·Tt, Ts]
            let probs = probs.reshape(&[bm, h_, g, t, ts])?.permute(&[0, 2, 1, 3, 4])?.reshape(&[b, h_, t, ts])?;
            maps.push(probs);
            h = h.add(&y.reshape(&[b, t, self.config.d_model])?)?;
            h = h.add(&block.mlp.forward(&block.mlp_norm.forward(&h)?)?)?;
        }
        Ok((self.decoder_norm.forward(&h)?, maps))
    }

    /// Scores over the vocabulary (T5 1.0 scales `h` by `d_model^-0.5` first).
    ///
    /// # Shapes
    /// h `[.., C]` → `[.., V]`
    pub fn logits(&self, h: &Tensor) -> Result<Tensor> {
        let h = if self.config.scale_output() { h.scale((self.config.d_model as f32).powf(-0.5)) } else { h.clone() };
        let w = self.lm_head.clone().unwrap_or_else(|| self.shared.weight.value());
        Ok(h.matmul(&w.t()?)?)
    }

    /// Key/value caches of the decoder's self-attention, one per block.
    pub fn new_caches(&self, batch: usize, capacity: usize) -> Vec<KvCache> {
        let c = &self.config;
        (0..c.decoder_layers()).map(|_| KvCache::new(batch, capacity, c.num_heads, c.d_kv)).collect()
    }
}

impl Module for T5 {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let p = |s: &str| format!("{prefix}{s}");
        self.shared.collect_params(&p("shared."), out);
        let attn = |a: &T5Attention, at: &str, out: &mut Vec<NamedParam>| {
            for (name, l) in [("q", &a.q), ("k", &a.k), ("v", &a.v), ("o", &a.o)] {
                l.collect_params(&format!("{at}{name}."), out);
            }
        };
        for (i, blk) in self.encoder.iter().enumerate() {
            let at = p(&format!("encoder.block.{i}.layer."));
            attn(&blk.attn, &format!("{at}0.SelfAttention."), out);
            blk.attn_norm.collect_params(&format!("{at}0.layer_norm."), out);
            blk.mlp.collect(&format!("{at}1.DenseReluDense."), out);
            blk.mlp_norm.collect_params(&format!("{at}1.layer_norm."), out);
        }
        self.encoder_bias
            .table
            .collect_params(&p("encoder.block.0.layer.0.SelfAttention.relative_attention_bias."), out);
        self.encoder_norm.collect_params(&p("encoder.final_layer_norm."), out);
        for (i, blk) in self.decoder.iter().enumerate() {
            let at = p(&format!("decoder.block.{i}.layer."));
            attn(&blk.self_attn, &format!("{at}0.SelfAttention."), out);
            blk.self_norm.collect_params(&format!("{at}0.layer_norm."), out);
            attn(&blk.cross, &format!("{at}1.EncDecAttention."), out);
            blk.cross_norm.collect_params(&format!("{at}1.layer_norm."), out);
            blk.mlp.collect(&format!("{at}2.DenseReluDense."), out);
            blk.mlp_norm.collect_params(&format!("{at}2.layer_norm."), out);
        }
        self.decoder_bias
            .table
            .collect_params(&p("decoder.block.0.layer.0.SelfAttention.relative_attention_bias."), out);
        self.decoder_norm.collect_params(&p("decoder.final_layer_norm."), out);
    }
}
