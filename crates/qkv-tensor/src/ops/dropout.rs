//! Dropout: during training, zero each element with probability `p` and scale
//! the rest by `1 / (1 - p)`, so the expected value is unchanged.

use crate::error::{Error, Result};
use crate::kernels::elementwise;
use crate::rng::hash_uniform;
use crate::tensor::Tensor;

/// The mask depends only on `(seed, element index)`: it is the same for any
/// thread count, and backward regenerates it instead of storing it.
pub fn dropout(x: &Tensor, p: f32, seed: u64) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return Err(Error::invalid("dropout", format!("probability {p} must be in [0, 1)")));
    }
    if p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask = move |n: usize| -> Vec<f32> {
        (0..n as u64).map(|i| if hash_uniform(seed, i) < p { 0.0 } else { keep }).collect()
    };
    let m = mask(x.numel());
    let y = elementwise::zip_map(&x.data(), &m, |x, m| x * m);
    let shape = x.shape().to_vec();
    Ok(Tensor::from_op(y, x.shape(), &[x], move |g| {
        let m = mask(g.numel());
        let dx = elementwise::zip_map(&g.data(), &m, |g, m| g * m);
        Ok(vec![Some(Tensor::from_vec(dx, &shape)?)])
    }))
}
