//! Cross-entropy loss for classification and next-token prediction.

use crate::error::{Error, Result};
use crate::kernels::cross_entropy as k;
use crate::tensor::Tensor;

/// Mean cross-entropy of `logits` (`[.., V]`: one row of class scores per
/// target) against `targets` (one class id per row). Rows whose target equals
/// `ignore_index` (padding; tokens that were not masked in MLM) do not count;
/// the mean is over the rows that do (0 when none do).
pub fn cross_entropy(logits: &Tensor, targets: &[u32], ignore_index: Option<u32>) -> Result<Tensor> {
    cross_entropy_smoothed(logits, targets, ignore_index, 0.0)
}

/// [`cross_entropy`] against smoothed targets: each row's target puts
/// `1 - smoothing` on its class and spreads `smoothing` evenly over all `V`
/// classes (PyTorch's `CrossEntropyLoss(label_smoothing=…)`). It keeps a
/// model from becoming certain; the original transformer trained with 0.1.
pub fn cross_entropy_smoothed(
    logits: &Tensor,
    targets: &[u32],
    ignore_index: Option<u32>,
    smoothing: f32,
) -> Result<Tensor> {
    if !(0.0..=1.0).contains(&smoothing) {
        return Err(Error::invalid("cross_entropy", format!("label smoothing {smoothing} is not in [0, 1]")));
    }
    let v =
        *logits.shape().last().ok_or_else(|| Error::bad_shape("cross_entropy", logits.shape(), "[.., V] logits"))?;
    let rows = logits.numel() / v.max(1);
    if targets.len() != rows {
        return Err(Error::invalid(
            "cross_entropy",
            format!("{} targets for {rows} rows of logits {:?}", targets.len(), logits.shape()),
        ));
    }
    if let Some((i, &t)) = targets.iter().enumerate().find(|&(_, &t)| t as usize >= v && Some(t) != ignore_index) {
        return Err(Error::invalid(
            "cross_entropy",
            format!("target {t} at row {i} is not a class id (there are {v} classes)"),
        ));
    }
    let z = logits.contiguous();
    let out = k::cross_entropy_forward(&z.data(), v, targets, ignore_index, smoothing);
    let targets = targets.to_vec();
    let zd = z.detach();
    let (lse, count) = (out.lse, out.count);
    Ok(Tensor::from_op(vec![out.loss], &[], &[logits], move |g| {
        let scale = if count == 0 { 0.0 } else { g.item()? / count as f32 };
        let dz = k::cross_entropy_backward(&zd.data(), v, &targets, ignore_index, smoothing, &lse, scale);
        Ok(vec![Some(Tensor::from_vec(dz, zd.shape())?)])
    }))
}
