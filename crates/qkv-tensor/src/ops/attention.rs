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
        AttentionOpts {
            causal: true,
            ..Default::default()
        }
    }

    fn mask(&self) -> AttnMask<'_> {
        AttnMask {
            causal: self.causal,
            key_mask: self.key_mask.as_deref(),
            alibi: self.alibi.as_deref(),
        }
    }
}

/// A `[B, H, T, D]` tensor (any strides, unit stride along D) as kernel heads.
fn heads(t: &Tensor) -> Heads<'_> {
    let s = t.layout().strides();
    let (b, h, tt, d) = t.dims4().expect("checked to be rank 4");
    Heads {
        data: t.storage_slice(),
        offset: t.layout().offset(),
        b,
        h,
        t: tt,
        d,
        sb: s[0],
        sh: s[1],
        st: s[2],
    }
}

/// Unit stride along D, or a packed copy.
fn unit_d(t: &Tensor) -> Tensor {
    if t.layout().strides()[3] == 1 || t.shape()[3] == 1 {
        t.clone()
    } else {
        t.contiguous()
    }
}

/// Attention of queries `q` over keys `k` and values `v`.
///
/// # Shapes
/// q `[B, H, Tq, D]`, k and v `[B, H, Tk, D]` → `[B, H, Tq, D]`, stored as
/// `[B, Tq, H, D]` so that `.transpose(1, 2)` is already packed.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, opts: &AttentionOpts) -> Result<Tensor> {
    let op = "attention";
    let (bq, hq, tq, dq) = q
        .dims4()
        .map_err(|_| Error::bad_shape(op, q.shape(), "queries as [B, H, Tq, D]"))?;
    let (bk, hk, tk, dk) = k
        .dims4()
        .map_err(|_| Error::bad_shape(op, k.shape(), "keys as [B, H, Tk, D]"))?;
    if (bk, hk, dk) != (bq, hq, dq) {
        return Err(Error::mismatch(
            op,
            q.shape(),
            k.shape(),
            "queries and keys need the same B, H and D",
        ));
    }
    if v.shape() != k.shape() {
        return Err(Error::mismatch(
            op,
            k.shape(),
            v.shape(),
            "keys and values need the same shape",
        ));
    }
    if let Some(m) = &opts.key_mask
        && m.len() != bq * tk
    {
        return Err(Error::invalid(
            op,
            format!(
                "key mask has {} flags, expected B·Tk = {}",
                m.len(),
                bq * tk
            ),
        ));
    }
    if let Some(s) = &opts.alibi
        && s.len() != hq
    {
        return Err(Error::invalid(
            op,
            format!("{} ALiBi slopes for {hq} heads", s.len()),
        ));
    }
    if dq == 0 {
        return Err(Error::invalid(op, "head width D is 0"));
    }
    let scale = opts.scale.unwrap_or(1.0 / (dq as f32).sqrt());
    let (q, k, v) = (unit_d(q), unit_d(k), unit_d(v));
    let (qh, kh, vh) = (heads(&q), heads(&k), heads(&v));
    let fwd = match opts.kernel {
        AttentionKernel::Flash => k::attention_flash(&qh, &kh, &vh, &opts.mask(), scale),
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
            AttentionKernel::Flash => k::attention_flash_backward(
                &qh,
                &kh,
                &vh,
                &out_saved.data(),
                &lse,
                &gh,
                &opts.mask(),
                scale,
            ),
            AttentionKernel::Naive => {
                k::attention_backward_naive(&qh, &kh, &vh, &gh, &opts.mask(), scale)
            }
        };
        let as_heads = |data: Vec<f32>, t: usize| -> Result<Tensor> {
            Tensor::from_vec(data, &[bq, t, hq, dq])?.permute(&[0, 2, 1, 3])
        };
        Ok(vec![
            Some(as_heads(grads.dq, tq)?),
            Some(as_heads(grads.dk, tk)?),
            Some(as_heads(grads.dv, tk)?),
        ])
    });
    o.permute(&[0, 2, 1, 3])
}
