//! Multi-head attention: every token asks a question (its **query**),
//! offers a label (its **key**) and carries content (its **value**). A token's
//! output is the average of all values, weighted by how well its query matches
//! each key: `softmax(q·kᵀ / √D) · v`. With **H heads** the width C is cut into
//! H slices of D = C/H features, each head attending on its own, and an output
//! projection mixes the heads back together.
//!
//! **Self-attention** takes queries, keys and values from the same tokens.
//! **Cross-attention** — the decoder of an encoder–decoder reading the
//! encoder's output — takes the queries from one sequence and the keys and
//! values from another ([`Attention::forward_cross`]): the same module and
//! the same kernel, with `Tq ≠ Tk` and the other sequence's padding masked.
//!
//! In a decoder the mask is **causal**: a token may not look at later tokens,
//! which is what lets one forward pass train every next-token prediction of a
//! sequence at once. During generation a [`KvCache`] keeps the keys and values
//! of the prefix, so each new token costs one row of attention.
//!
//! Cost: the scores are a `T × T` matrix per head — quadratic in T. The flash
//! kernel (the default) never stores that matrix, so memory stays linear.

use qkv_tensor::{
    AttentionKernel, AttentionOpts, Param, Result, Rng, Tensor, attention, attention_probabilities, attention_qkv,
};

use super::linear::{Linear, WeightLayout};
use super::positional::{Positions, alibi_slopes, apply_rope, rope_tables};
use super::{Module, NamedParam};

/// Keys and values of earlier positions for one layer, in a buffer of fixed
/// capacity `[B, capacity, H, D]` that fills up as tokens are generated.
#[derive(Debug)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    len: usize,
    /// The buffers [`KvCache::select`] copies into next (the ones it last
    /// replaced): beam search reorders the cache at every step, and clearing
    /// fresh buffers for it was 3 % of the time.
    spare: [Vec<f32>; 2],
}

impl KvCache {
    pub fn new(batch: usize, capacity: usize, n_head: usize, head_dim: usize) -> KvCache {
        KvCache {
            k: Tensor::zeros(&[batch, capacity, n_head, head_dim]),
            v: Tensor::zeros(&[batch, capacity, n_head, head_dim]),
            len: 0,
            spare: [Vec::new(), Vec::new()],
        }
    }

    /// Positions already cached.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.k.shape()[1]
    }

    /// Forget everything (keep the buffers).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Forget the positions after the first `len` (no-op if it holds fewer).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Keep the batch rows `idx`, in that order (beam search: each surviving
    /// hypothesis takes the cache of the hypothesis it extends).
    pub fn select(&mut self, idx: &[usize]) -> Result<()> {
        let (b, cap, h, d) = self.k.dims4()?;
        if idx.len() == b && idx.iter().enumerate().all(|(i, &j)| i == j) {
            return Ok(()); // every row stays where it is
        }
        let (per, used) = (cap * h * d, self.len * h * d);
        for (buf, spare) in [&mut self.k, &mut self.v].into_iter().zip(&mut self.spare) {
            // positions past `len` are never read before `append` writes
            // them, so a reused buffer is not cleared (only new room is)
            let mut out = std::mem::take(spare);
            out.resize(idx.len() * per, 0.0);
            {
                let old = buf.data(); // borrowed: the buffer is contiguous
                for (row, &i) in out.chunks_exact_mut(per).zip(idx) {
                    row[..used].copy_from_slice(&old[i * per..i * per + used]);
                }
            }
            let old = std::mem::replace(buf, Tensor::from_vec(out, &[idx.len(), cap, h, d])?);
            *spare = old.into_vec(); // no copy: the cache is its buffer's only holder
        }
        Ok(())
    }

    /// Add keys and values `[B, H, Tn, D]` of new positions; returns views of
    /// everything cached so far, `[B, H, len, D]`.
    pub fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, h, tn, d) = k.dims4()?;
        let cap = self.capacity();
        if self.len + tn > cap {
            return Err(qkv_tensor::Error::invalid(
                "KvCache::append",
                format!("{} cached + {tn} new positions exceed the capacity of {cap}", self.len),
            ));
        }
        for (buf, new) in [(&mut self.k, k), (&mut self.v, v)] {
            let src = new.permute(&[0, 2, 1, 3])?.contiguous(); // [B, Tn, H, D]
            let src = src.data();
            let dst = buf.make_mut();
            for bi in 0..b {
                let at = (bi * cap + self.len) * h * d;
                dst[at..at + tn * h * d].copy_from_slice(&src[bi * tn * h * d..(bi + 1) * tn * h * d]);
            }
        }
        self.len += tn;
        let view = |buf: &Tensor| buf.narrow(1, 0, self.len)?.permute(&[0, 2, 1, 3]);
        Ok((view(&self.k)?, view(&self.v)?))
    }
}

/// How tokens become queries, keys and values.
// one per layer: the variants' sizes do not matter, boxing would only add a hop
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum QkvProjection {
    /// One projection to `3C` features (GPT-2's `c_attn`: the query, key and
    /// value blocks side by side).
    Fused(Linear),
    /// Three projections (BERT, ViT: `query`, `key`, `value`).
    Separate { query: Linear, key: Linear, value: Linear },
}

impl QkvProjection {
    /// Every token's query, key and value side by side.
    ///
    /// # Shapes
    /// x `[B, T, C]` → `[B, T, 3C]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            QkvProjection::Fused(l) => l.forward(x),
            QkvProjection::Separate { query, key, value } => {
                // one matmul against the three weights side by side
                let (w, layout) = stacked_weight(query, key, value)?;
                let y = match layout {
                    WeightLayout::InOut => x.matmul(&w)?,
                    WeightLayout::OutIn => x.matmul(&w.t()?)?,
                };
                match (&query.bias, &key.bias, &value.bias) {
                    (Some(bq), Some(bk), Some(bv)) => {
                        y.add_into(&Tensor::concat(&[&bq.value(), &bk.value(), &bv.value()], 0)?)
                    }
                    _ => Ok(y),
                }
            }
        }
    }

    /// The same projection as one [`QkvProjection::Fused`]: the three weights
    /// stacked into one new weight, the biases concatenated, so that the
    /// product reads one weight that exists between calls (the inference
    /// copies of [`crate::models::inference`] need one). New parameters:
    /// training them leaves the three unchanged.
    pub fn fused(&self) -> Result<QkvProjection> {
        let QkvProjection::Separate { query, key, value } = self else {
            return Ok(self.clone());
        };
        let (w, layout) = stacked_weight(query, key, value)?;
        let bias = match (&query.bias, &key.bias, &value.bias) {
            (Some(bq), Some(bk), Some(bv)) => {
                Some(Param::new(Tensor::concat(&[&bq.value(), &bk.value(), &bv.value()], 0)?))
            }
            _ => None,
        };
        Ok(QkvProjection::Fused(Linear { weight: Param::new(w), bias, layout }))
    }
}

/// The query, key and value weights side by side as one weight, a plain
/// copy, and how it is stored: weights stored out × in (as nn.Linear, BERT,
/// ViT) are stacked as rows (`[3C, C]`, read transposed), others as the
/// columns of one `[C, 3C]`.
fn stacked_weight(query: &Linear, key: &Linear, value: &Linear) -> Result<(Tensor, WeightLayout)> {
    if [query, key, value].iter().all(|l| l.layout == WeightLayout::OutIn) {
        let w = Tensor::concat(&[&query.weight.value(), &key.weight.value(), &value.weight.value()], 0)?;
        Ok((w, WeightLayout::OutIn))
    } else {
        let w = Tensor::concat(&[&query.w_in_out()?, &key.w_in_out()?, &value.w_in_out()?], 1)?;
        Ok((w, WeightLayout::InOut))
    }
}

/// Multi-head attention: self-attention, causal (decoders) or bidirectional
/// (encoders), or cross-attention over another sequence. `qkv` projects each
/// token to its query, key and value; `c_proj` mixes the heads' outputs (`[C, C]`).
#[derive(Clone, Debug)]
pub struct Attention {
    pub qkv: QkvProjection,
    pub c_proj: Linear,
    pub n_head: usize,
    pub causal: bool,
    pub positions: Positions,
    /// RoPE base frequency (10000 in most models).
    pub rope_base: f32,
    pub kernel: AttentionKernel,
}

impl Attention {
    /// GPT-2 layout (fused `c_attn`, weights `[in, out]`). `proj_std`: init
    /// scale of the output projection (GPT-2 scales it down by √(2·layers) so
    /// the residual stream does not grow with depth).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c: usize,
        n_head: usize,
        bias: bool,
        causal: bool,
        positions: Positions,
        std: f32,
        proj_std: f32,
        rng: &mut Rng,
    ) -> Self {
        Attention {
            qkv: QkvProjection::Fused(Linear::new(c, 3 * c, bias, std, rng)),
            c_proj: Linear::new(c, c, bias, proj_std, rng),
            n_head,
            causal,
            positions,
            rope_base: 10000.0,
            kernel: AttentionKernel::Flash,
        }
    }

    /// BERT/ViT layout: separate query, key, value, weights `[out, in]`, bidirectional.
    pub fn new_separate(c: usize, n_head: usize, bias: bool, std: f32, rng: &mut Rng) -> Self {
        Attention {
            qkv: QkvProjection::Separate {
                query: Linear::new_out_in(c, c, bias, std, rng),
                key: Linear::new_out_in(c, c, bias, std, rng),
                value: Linear::new_out_in(c, c, bias, std, rng),
            },
            c_proj: Linear::new_out_in(c, c, bias, std, rng),
            n_head,
            causal: false,
            positions: Positions::None,
            rope_base: 10000.0,
            kernel: AttentionKernel::Flash,
        }
    }

    /// # Shapes
    /// x `[B, T, C]` → `[B, T, C]`. `key_mask`: `[B, Tk]` (false = padding).
    pub fn forward(&self, x: &Tensor, key_mask: Option<&[bool]>, cache: Option<&mut KvCache>) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let (h, d) = (self.n_head, c / self.n_head);
        // 1. every token's query, key and value
        let qkv = self.qkv.forward(x)?; // [B, T, 3C]
        let alibi = (self.positions == Positions::Alibi).then(|| alibi_slopes(h));
        if cache.is_none() && self.positions != Positions::Rope {
            // Training and full passes: the fused kernel reads the heads straight
            // out of `qkv` (steps 2–5 below in one op).
            let opts = AttentionOpts {
                causal: self.causal,
                key_mask: key_mask.map(<[bool]>::to_vec),
                alibi,
                scale: None,
                kernel: self.kernel,
            };
            return self.c_proj.forward(&attention_qkv(&qkv, h, &opts)?);
        }
        let parts = qkv.split(-1, &[c, c, c])?;
        // 2. cut the width into H heads of D features: [B, T, C] → [B, H, T, D] (views, no copy)
        let heads = |p: &Tensor| p.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]);
        let (mut q, mut k, v) = (heads(&parts[0])?, heads(&parts[1])?, heads(&parts[2])?);
        let start = cache.as_ref().map_or(0, |c| c.len());
        if self.positions == Positions::Rope {
            let (cos, sin) = rope_tables(start, t, d, self.rope_base);
            q = apply_rope(&q, &cos, &sin)?;
            k = apply_rope(&k, &cos, &sin)?;
        }
        // 3. with a KV cache, the new queries attend over the cached past too
        let (k, v) = match cache {
            Some(cache) => cache.append(&k, &v)?,
            None => (k, v),
        };
        // 4. softmax(q·kᵀ/√D)·v in every head
        let opts = AttentionOpts {
            causal: self.causal,
            key_mask: key_mask.map(<[bool]>::to_vec),
            alibi,
            scale: None,
            kernel: self.kernel,
        };
        let y = attention(&q, &k, &v, &opts)?; // [B, H, T, D], stored as [B, T, H, D]
        // 5. heads side by side again, then mixed by the output projection
        let y = y.transpose(1, 2)?.reshape(&[b, t, c])?;
        self.c_proj.forward(&y)
    }

    /// The keys and values of another sequence (the encoder's output), cut
    /// into heads, for [`Attention::forward_cross`]: computed once per
    /// sentence when decoding, since the encoder's output does not change.
    ///
    /// # Shapes
    /// memory `[B, Tk, C]`, mask `[B, Tk]` → keys and values `[B, H, Tk, D]`
    pub fn memory(&self, memory: &Tensor, mask: Option<&[bool]>) -> Result<Memory> {
        let QkvProjection::Separate { key, value, .. } = &self.qkv else {
            return Err(qkv_tensor::Error::invalid(
                "cross-attention",
                "needs separate query, key and value projections (keys and values come from another sequence)",
            ));
        };
        let (b, tk, c) = memory.dims3()?;
        let (h, d) = (self.n_head, c / self.n_head);
        let heads = |p: Tensor| p.reshape(&[b, tk, h, d])?.permute(&[0, 2, 1, 3]);
        Ok(Memory {
            k: heads(key.forward(memory)?)?,
            v: heads(value.forward(memory)?)?,
            mask: mask.map(<[bool]>::to_vec),
        })
    }

    /// Cross-attention: the queries of `x` over the keys and values of
    /// another sequence ([`Attention::memory`]), padding keys hidden. No
    /// causal mask: every position may read the whole other sequence.
    ///
    /// The memory may hold fewer sequences than `x` has rows: `B = G·Bm`,
    /// rows `s·G .. (s+1)·G` reading sequence `s` (beam search's `G`
    /// hypotheses of one sentence). Without a causal mask each query is
    /// independent of the others, so those rows are simply `G·Tq` queries of
    /// one sequence: one memory, read once for all of them.
    ///
    /// # Shapes
    /// x `[B, Tq, C]`, memory `[Bm, H, Tk, D]` with `Bm` dividing `B` → `[B, Tq, C]`
    pub fn forward_cross(&self, x: &Tensor, memory: &Memory) -> Result<Tensor> {
        let QkvProjection::Separate { query, .. } = &self.qkv else {
            return Err(qkv_tensor::Error::invalid("cross-attention", "needs a separate query projection"));
        };
        let (b, t, c) = x.dims3()?;
        let (h, d) = (self.n_head, c / self.n_head);
        let g = memory.rows_per_sequence(b)?;
        let q = query.forward(x)?.reshape(&[b / g, g * t, h, d])?.permute(&[0, 2, 1, 3])?;
        let opts = AttentionOpts { key_mask: memory.mask.clone(), kernel: self.kernel, ..Default::default() };
        let y = attention(&q, &memory.k, &memory.v, &opts)?; // [Bm, H, G·Tq, D], stored as [Bm, G·Tq, H, D]
        self.c_proj.forward(&y.transpose(1, 2)?.reshape(&[b, t, c])?)
    }

    /// The attention probabilities of [`Attention::forward`] (no cache): what
    /// each query gives each key, head by head, with the same positions and
    /// masks. For pictures; the forward pass itself never materialises them.
    ///
    /// # Shapes
    /// x `[B, T, C]`, `key_mask` `[B, T]` → `[B, H, T, T]`
    pub fn probabilities(&self, x: &Tensor, key_mask: Option<&[bool]>) -> Result<Tensor> {
        let (b, t, c) = x.dims3()?;
        let (h, d) = (self.n_head, c / self.n_head);
        let parts = self.qkv.forward(x)?.split(-1, &[c, c, c])?;
        let heads = |p: &Tensor| p.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]);
        let (mut q, mut k) = (heads(&parts[0])?, heads(&parts[1])?);
        if self.positions == Positions::Rope {
            let (cos, sin) = rope_tables(0, t, d, self.rope_base);
            q = apply_rope(&q, &cos, &sin)?;
            k = apply_rope(&k, &cos, &sin)?;
        }
        let opts = AttentionOpts {
            causal: self.causal,
            key_mask: key_mask.map(<[bool]>::to_vec),
            alibi: (self.positions == Positions::Alibi).then(|| alibi_slopes(h)),
            ..Default::default()
        };
        attention_probabilities(&q, &k, &opts)
    }

    /// The probabilities of [`Attention::forward_cross`], for pictures:
    /// `[B, H, Tq, Tk]`, each row summing to 1 over the real keys.
    pub fn cross_probabilities(&self, x: &Tensor, memory: &Memory) -> Result<Tensor> {
        let QkvProjection::Separate { query, .. } = &self.qkv else {
            return Err(qkv_tensor::Error::invalid("cross-attention", "needs a separate query projection"));
        };
        let (b, t, c) = x.dims3()?;
        let (h, d) = (self.n_head, c / self.n_head);
        let q = query.forward(x)?.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3])?; // [B, H, Tq, D]
        let opts = AttentionOpts { key_mask: memory.mask.clone(), ..Default::default() };
        attention_probabilities(&q, &memory.k, &opts)
    }

    /// Parameters under explicit names: `qkv` is the prefix of the fused
    /// projection or of the `query.`/`key.`/`value.` trio; `out` of `c_proj`.
    pub fn collect_named(&self, qkv: &str, out: &str, params: &mut Vec<NamedParam>) {
        match &self.qkv {
            QkvProjection::Fused(l) => l.collect_params(qkv, params),
            QkvProjection::Separate { .. } => {
                let names = [format!("{qkv}query."), format!("{qkv}key."), format!("{qkv}value."), out.to_string()];
                return self.collect_projections(&names, params);
            }
        }
        self.c_proj.collect_params(out, params);
    }

    /// Parameters of separate projections under four prefixes: query, key,
    /// value, output (Marian's `q_proj.`, `k_proj.`, `v_proj.`, `out_proj.`).
    /// A fused projection goes under the query's prefix.
    pub fn collect_projections(&self, [q, k, v, out]: &[String; 4], params: &mut Vec<NamedParam>) {
        match &self.qkv {
            QkvProjection::Fused(l) => l.collect_params(q, params),
            QkvProjection::Separate { query, key, value } => {
                query.collect_params(q, params);
                key.collect_params(k, params);
                value.collect_params(v, params);
            }
        }
        self.c_proj.collect_params(out, params);
    }
}

/// Another sequence's keys and values for cross-attention
/// ([`Attention::memory`]), with its padding mask.
#[derive(Clone, Debug)]
pub struct Memory {
    /// `[B, H, Tk, D]`
    pub k: Tensor,
    /// `[B, H, Tk, D]`
    pub v: Tensor,
    /// `[B, Tk]`, false for padding.
    pub mask: Option<Vec<bool>>,
}

impl Memory {
    /// How many query rows of a batch of `rows` read each sequence of this
    /// memory (1 when both hold the same sequences).
    pub fn rows_per_sequence(&self, rows: usize) -> Result<usize> {
        let n = self.k.dims4()?.0;
        if n == 0 || !rows.is_multiple_of(n) {
            return Err(qkv_tensor::Error::invalid(
                "cross-attention",
                format!("{rows} query rows cannot share a memory of {n} sequences evenly"),
            ));
        }
        Ok(rows / n)
    }

    /// Keep the rows `idx` of the batch (beam search: the sentences of the
    /// surviving hypotheses).
    pub fn select(&self, idx: &[usize]) -> Result<Memory> {
        let (_, h, tk, d) = self.k.dims4()?;
        let pick = |t: &Tensor| -> Result<Tensor> {
            let data = t.contiguous();
            let data = data.data();
            let per = h * tk * d;
            let mut out = Vec::with_capacity(idx.len() * per);
            for &i in idx {
                out.extend_from_slice(&data[i * per..(i + 1) * per]);
            }
            Tensor::from_vec(out, &[idx.len(), h, tk, d])
        };
        let mask =
            self.mask.as_ref().map(|m| idx.iter().flat_map(|&i| m[i * tk..(i + 1) * tk].iter().copied()).collect());
        Ok(Memory { k: pick(&self.k)?, v: pick(&self.v)?, mask })
    }
}

impl Module for Attention {
    /// GPT-2 names: `c_attn.` (fused) or `query.`/`key.`/`value.`, and `c_proj.`.
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let qkv = match self.qkv {
            QkvProjection::Fused(_) => format!("{prefix}c_attn."),
            QkvProjection::Separate { .. } => prefix.to_string(),
        };
        self.collect_named(&qkv, &format!("{prefix}c_proj."), out);
    }
}
