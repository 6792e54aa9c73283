//! Softmax and log-softmax over the last axis.

use crate::kernels::softmax as k;
use crate::tensor::Tensor;

impl Tensor {
    /// `exp(x_i) / Σ_j exp(x_j)` along the last axis.
    pub fn softmax(&self) -> Tensor {
        let n = self.shape().last().copied().unwrap_or(1).max(1);
        let y = k::softmax_rows(&self.data(), n);
        let ys = Tensor::from_vec(y.clone(), self.shape()).expect("same length");
        Tensor::from_op(y, self.shape(), &[self], move |g| {
            let dx = k::softmax_rows_backward(&ys.data(), &g.data(), n);
            Ok(vec![Some(Tensor::from_vec(dx, ys.shape())?)])
        })
    }

    /// `x_i - log Σ_j exp(x_j)` along the last axis.
    pub fn log_softmax(&self) -> Tensor {
        let n = self.shape().last().copied().unwrap_or(1).max(1);
        let y = k::log_softmax_rows(&self.data(), n);
        let ys = Tensor::from_vec(y.clone(), self.shape()).expect("same length");
        Tensor::from_op(y, self.shape(), &[self], move |g| {
            let dx = k::log_softmax_rows_backward(&ys.data(), &g.data(), n);
            Ok(vec![Some(Tensor::from_vec(dx, ys.shape())?)])
        })
    }
}
