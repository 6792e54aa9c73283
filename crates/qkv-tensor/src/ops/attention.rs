//! Scaled dot-product attention as one differentiable op:
//! `softmax(Q·Kᵀ / √D + bias) · V` for every batch entry and head.
//! See [`crate::kernels::attention`] for the two kernels behind it.

use crate::error::{Error, Result};
use crate::kernels::attention::{self as k, AttnMask, Heads};
use crate::tensor::Tensor;

/// Which kernel computes attention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttentionKernel {
    /// Tiled, online softmax: memory linear in T. The default.
    #[default]
    Flash,
    /// Materialises the `Tq × Tk` probabilities of each head: the reference.
    Naive,
}

/// Masks and options of an attention call.
#[derive(Clone, Debug, Default)]
pub struct AttentionOpts {
    /// Hide keys after each query's position (decoders). Query `i` is at
    /// position `i + Tk - Tq`, so with a KV cache the new queries see the past.
    pub causal: bool,
    /// `[B, Tk]` flags, `false` for padding keys that no query may see.
    pub key_mask: Option<Vec<bool>>,
    /// `[H]` ALiBi slopes: score `-= slope_h · |pos_i - j|`.
    pub alibi: Option<Vec<f32>>,
    /// Score scale; default `1 / √D`.
    pub scale: Option<f32>,
    pub kernel: AttentionKernel,
}

impl AttentionOpts {
    pub fn causal() -> Self {
        AttentionOpts { causal: true, ..Default::default() }
    }

    fn mask(&self) -> AttnMask<'_> {
        AttnMask { causal: self.causal, key_mask: self.key_mask.as_deref(), alibi: self.alibi.as_deref() }
    }
}

/// A `[B, H, T, D]` tensor (any strides, unit stride along D) as kernel heads.
fn heads(t: &Tensor) -> Heads<'_> {
    let s = t.layout().strides();
    let (b, h, tt, d) = t.dims4().expect("checked to be rank 4");
    Heads { data: t.storage_slice(), offset: t.layout().offset(), b, h, t: tt, d, sb: s[0], sh: s[1], st: s[2] }
}

/// Unit stride along D, or a packed copy.
fn unit_d(t: &Tensor) -> Tensor {
    if t.layout().strides()[3] == 1 || t.shape()[3] == 1 { t.clone() } else { t.contiguous() }
}

/// The shapes of queries `[B, H, Tq, D]` and keys `[B, H, Tk, D]`, checked
/// against each other and against the masks of `opts`: `(B, H, Tq, D, Tk)`.
fn check_queries_and_keys(
    op: &'static str,
    q: &Tensor,
    k: &Tensor,
    opts: &AttentionOpts,
) -> Result<(usize, usize, usize, usize, usize)> {
    let (bq, hq, tq, dq) = q.dims4().map_err(|_| Error::bad_shape(op, q.shape(), "queries as [B, H, Tq, D]"))?;
    let (bk, hk, tk, dk) = k.dims4().map_err(|_| Error::bad_shape(op, k.shape(), "keys as [B, H, Tk, D]"))?;
    if (bk, hk, dk) != (bq, hq, dq) {
        return Err(Error::mismatch(op, q.shape(), k.shape(), "queries and keys need the same B, H and D"));
    }
    if let Some(m) = &opts.key_mask
        && m.len() != bq * tk
    {
        return Err(Error::invalid(op, format!("key mask has {} flags, expected B·Tk = {}", m.len(), bq * tk)));
    }
    if let Some(s) = &opts.alibi
        && s.len() != hq
    {
        return Err(Error::invalid(op, format!("{} ALiBi slopes for {hq} heads", s.len())));
    }
    if dq == 0 {
        return Err(Error::invalid(op, "head width D is 0"));
    }
    Ok((bq, hq, tq, dq, tk))
}

/// Attention of queries `q` over keys `k` and values `v`.
///
/// # Shapes
/// q `[B, H, Tq, D]`, k and v `[B, H, Tk, D]` → `[B, H, Tq, D]`, stored as
/// `[B, Tq, H, D]` so that `.transpose(1, 2)` is already packed.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
    let op = "attention";
    let (bq, hq, tq, dq, tk) = check_queries_and_keys(op, q, k, opts)?;
    if v.shape() != k.shape() {
        return Err(Error::mismatch(op, k.shape(), v.shape(), "keys and values need the same shape"));
    }
    let scale = opts.scale.unwrap_or(1.0 / (dq as f32).sqrt());
    let (q, k, v) = (unit_d(q), unit_d(k), unit_d(v));
    let (qh, kh, vh) = (heads(&q), heads(&k), heads(&v));
    let fwd = match opts.kernel {
        AttentionKernel::Flash => k::attention_forward(&qh, &kh, &vh, &opts.mask(), scale),
        AttentionKernel::Naive => k::attention_naive(&qh, &kh, &vh, &opts.mask(), scale),
    };
    let out = Tensor::from_vec(fwd.out, &[bq, tq, hq, dq])?;
    let out_saved = out.clone();
    let lse = fwd.lse;
    let (qd, kd, vd) = (q.detach(), k.detach(), v.detach());
    let opts = opts.clone();
    let o = Tensor::with_grad_fn(&out, &[&q, &k, &v], move |g| {
        // g is [B, Tq, H, D]; view it as heads [B, H, Tq, D]
        let g = unit_d(&g.permute(&[0, 2, 1, 3])?);
        let (qh, kh, vh, gh) = (heads(&qd), heads(&kd), heads(&vd), heads(&g));
        let grads = match opts.kernel {
            AttentionKernel::Flash => {
                k::attention_flash_backward(&qh, &kh, &vh, &out_saved.data(), &lse, &gh, &opts.mask(), scale)
            }
            AttentionKernel::Naive => k::attention_backward_naive(&qh, &kh, &vh, &gh, &opts.mask(), scale),
        };
        let as_heads = |data: Vec<f32>, t: usize| -> Result<Tensor> {
            Tensor::from_vec(data, &[bq, t, hq, dq])?.permute(&[0, 2, 1, 3])
        };
        Ok(vec![Some(as_heads(grads.dq, tq)?), Some(as_heads(grads.dk, tk)?), Some(as_heads(grads.dv, tk)?)])
    });
    o.permute(&[0, 2, 1, 3])
}

/// The attention probabilities `softmax(Q·Kᵀ / √D + bias)` of every head,
/// with the masks of `opts`: the weights [`attention`] averages the values
/// with, materialised for pictures (the tiled kernel never holds them). Not
/// differentiable.
///
/// # Shapes
/// q `[B, H, Tq, D]`, k `[B, H, Tk, D]` → `[B, H, Tq, Tk]`, each row summing to 1
/// over the keys it may see
pub fn attention_probabilities(q: &Tensor, k: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
    let (bq, hq, tq, dq, tk) = check_queries_and_keys("attention_probabilities", q, k, opts)?;
    let scale = opts.scale.unwrap_or(1.0 / (dq as f32).sqrt());
    let (q, k) = (unit_d(q), unit_d(k));
    let p = k::probabilities_naive(&heads(&q), &heads(&k), &opts.mask(), scale);
    Tensor::from_vec(p, &[bq, hq, tq, tk])
}

/// Self-attention straight from a fused projection: each row of `qkv` holds a
/// token's query, key and value side by side, `[q (H·D) | k (H·D) | v (H·D)]`.
/// The same as cutting it into heads and calling [`attention`], but the
/// kernels read the three through strides and backward writes one
/// `[B, T, 3C]` gradient, instead of three padded ones that must be added.
///
/// # Shapes
/// qkv `[B, T, 3C]` → `[B, T, C]`
pub fn attention_qkv(qkv: &Tensor, n_head: usize, opts: &AttentionOpts) -> Result<Tensor> {
    let op = "attention_qkv";
    let (b, t, c3) = qkv.dims3().map_err(|_| Error::bad_shape(op, qkv.shape(), "a fused projection [B, T, 3C]"))?;
    if n_head == 0 || c3 % 3 != 0 || (c3 / 3) % n_head != 0 {
        return Err(Error::invalid(op, format!("width {c3} is not 3 · C with C a multiple of the {n_head} heads")));
    }
    let (c, h) = (c3 / 3, n_head);
    let d = c / h;
    if opts.kernel == AttentionKernel::Naive {
        // the reference path: split into head views and use the general op
        let parts = qkv.split(-1, &[c, c, c])?;
        let heads = |p: &Tensor| p.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]);
        let y = attention(&heads(&parts[0])?, &heads(&parts[1])?, &heads(&parts[2])?, opts)?;
        return y.transpose(1, 2)?.reshape(&[b, t, c]);
    }
    if let Some(m) = &opts.key_mask
        && m.len() != b * t
    {
        return Err(Error::invalid(op, format!("key mask has {} flags, expected B·T = {}", m.len(), b * t)));
    }
    if let Some(s) = &opts.alibi
        && s.len() != h
    {
        return Err(Error::invalid(op, format!("{} ALiBi slopes for {h} heads", s.len())));
    }
    let x = qkv.contiguous();
    // the three head views into the packed rows
    let view = |part: usize| Heads {
        data: x.storage_slice(),
        offset: x.layout().offset() + part * c,
        b,
        h,
        t,
        d,
        sb: t * c3,
        sh: d,
        st: c3,
    };
    let scale = opts.scale.unwrap_or(1.0 / (d as f32).sqrt());
    let fwd = k::attention_forward(&view(0), &view(1), &view(2), &opts.mask(), scale);
    let out = Tensor::from_vec(fwd.out, &[b, t, c])?;
    let (saved_x, saved_out, lse, opts) = (x.detach(), out.clone(), fwd.lse, opts.clone());
    Ok(Tensor::with_grad_fn(&out, &[&x], move |g| {
        let g = g.contiguous();
        let xs = saved_x.storage_slice();
        let x_off = saved_x.layout().offset();
        let heads_of =
            |part: usize| Heads { data: xs, offset: x_off + part * c, b, h, t, d, sb: t * c3, sh: d, st: c3 };
        let gh = Heads::bthd(&g.storage_slice()[g.layout().offset()..], b, h, t, d);
        let grad = k::attention_flash_backward_packed(
            &heads_of(0),
            &heads_of(1),
            &heads_of(2),
            &saved_out.data(),
            &lse,
            &gh,
            &opts.mask(),
            scale,
        );
        Ok(vec![Some(Tensor::from_vec(grad, &[b, t, c3])?)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// The materialised probabilities are the weights behind the tiled
    /// kernel's output: `P · V` equals `attention(q, k, v)` under every mask,
    /// and each row sums to 1 (or is all zeros where every key is hidden).
    #[test]
    fn probabilities_times_values_is_the_attention_output() {
        let (b, h, t, d) = (2, 3, 7, 5);
        let mut rng = Rng::new(3);
        let mut rand = |n: usize| Tensor::from_vec((0..n).map(|_| rng.normal()).collect(), &[b, h, t, d]).unwrap();
        let (q, k, v) = (rand(b * h * t * d), rand(b * h * t * d), rand(b * h * t * d));
        // sequence 1 has its last two keys padded
        let key_mask: Vec<bool> = (0..b * t).map(|i| i < t || i % t < t - 2).collect();
        let opts = AttentionOpts {
            causal: true,
            key_mask: Some(key_mask.clone()),
            alibi: Some(vec![0.5, 0.25, 0.125]),
            ..Default::default()
        };
        let p = attention_probabilities(&q, &k, &opts).unwrap();
        assert_eq!(p.shape(), &[b, h, t, t]);
        let via_p = p.matmul(&v).unwrap(); // [B, H, T, D]
        let flash = attention(&q, &k, &v, &opts).unwrap();
        let diff = via_p.max_abs_diff(&flash).unwrap();
        assert!(diff < 1e-5, "P·V differs from the attention output by {diff}");
        let pv = p.to_vec();
        for (r, row) in pv.chunks(t).enumerate() {
            let (bi, i) = (r / (h * t), r % t);
            let sum: f32 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-5, "row {r} sums to {sum}");
            for (j, &x) in row.iter().enumerate() {
                let hidden = j > i || !key_mask[bi * t + j];
                assert!(!hidden || x == 0.0, "row {r}: hidden key {j} has weight {x}");
            }
        }
    }
}
