//! Normalisation over the last axis (the model width C): LayerNorm and RMSNorm.

use crate::error::{Error, Result};
use crate::kernels::norm as k;
use crate::tensor::Tensor;

fn check(op: &'static str, x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<usize> {
    let c = *x.shape().last().ok_or_else(|| Error::bad_shape(op, x.shape(), "[.., C]"))?;
    if w.shape() != [c] {
        return Err(Error::mismatch(op, x.shape(), w.shape(), format!("the weight must be [{c}]")));
    }
    if let Some(b) = b
        && b.shape() != [c]
    {
        return Err(Error::mismatch(op, x.shape(), b.shape(), format!("the bias must be [{c}]")));
    }
    if c == 0 {
        return Err(Error::invalid(op, "cannot normalise an axis of size 0"));
    }
    Ok(c)
}

/// LayerNorm: `(x - mean) / sqrt(var + eps) * w + b` over the last axis.
///
/// # Shapes
/// x `[.., C]`, w `[C]`, b `[C]` → `[.., C]`
pub fn layer_norm(x: &Tensor, w: &Tensor, b: Option<&Tensor>, eps: f32) -> Result<Tensor> {
    let c = check("layer_norm", x, w, b)?;
    let xs = x.contiguous().detach();
    let wd = w.detach();
    let bd = b.map(|b| b.data().into_owned());
    let f = k::layer_norm_forward(&xs.data(), &wd.data(), bd.as_deref(), c, eps);
    let (mean, rstd) = (f.mean, f.rstd);
    let has_bias = b.is_some();
    let inputs: Vec<&Tensor> = match b {
        Some(b) => vec![x, w, b],
        None => vec![x, w],
    };
    Ok(Tensor::from_op(f.y, x.shape(), &inputs, move |g| {
        let gr = k::layer_norm_backward(&xs.data(), &wd.data(), has_bias, &mean, &rstd, &g.contiguous().data(), c);
        let mut grads = vec![Some(Tensor::from_vec(gr.dx, xs.shape())?), Some(Tensor::from_vec(gr.dw, &[c])?)];
        if has_bias {
            grads.push(Some(Tensor::from_vec(gr.db, &[c])?));
        }
        Ok(grads)
    }))
}

/// RMSNorm: `x / sqrt(mean(x²) + eps) * w` over the last axis.
///
/// # Shapes
/// x `[.., C]`, w `[C]` → `[.., C]`
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f32) -> Result<Tensor> {
    let c = check("rms_norm", x, w, None)?;
    let xs = x.contiguous().detach();
    let wd = w.detach();
    let f = k::rms_norm_forward(&xs.data(), &wd.data(), c, eps);
    let rstd = f.rstd;
    Ok(Tensor::from_op(f.y, x.shape(), &[x, w], move |g| {
        let gr = k::rms_norm_backward(&xs.data(), &wd.data(), &rstd, &g.contiguous().data(), c);
        Ok(vec![Some(Tensor::from_vec(gr.dx, xs.shape())?), Some(Tensor::from_vec(gr.dw, &[c])?)])
    }))
}
