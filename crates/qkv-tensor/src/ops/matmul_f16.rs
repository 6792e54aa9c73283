//! `x · W` with `W` kept as 16-bit floats: a frozen copy of a weight for
//! generation, where every new token reads all the weights once and the time
//! is the bytes read (see [`crate::kernels::gemv_f16`]).
//!
//! Inference only: nothing is recorded for backward, and calling it while
//! gradients are enabled is an error rather than a silently missing gradient.

use std::sync::Arc;

use half::f16;

use super::matmul::inference_product_shape;
use crate::error::{Error, Result};
use crate::kernels::gemv_f16::gemv_f16;
use crate::tensor::Tensor;

/// A 2-D weight stored as f16, in the memory order of the tensor it was made
/// from (so `[in, out]` and `[out, in]` weights both keep their layout).
#[derive(Clone)]
pub struct F16Matrix {
    data: Arc<[f16]>,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for F16Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "F16Matrix[{}, {}]", self.rows, self.cols)
    }
}

impl F16Matrix {
    /// Round a 2-D tensor to f16 (nearest, ties to even). Values beyond f16's
    /// range (±65504) are refused: they would become infinities.
    pub fn from_tensor(w: &Tensor) -> Result<F16Matrix> {
        let (rows, cols) = w.dims2()?;
        let data = w.data();
        if let Some(x) = data.iter().find(|x| x.abs() > f16::MAX.to_f32()) {
            return Err(Error::invalid("F16Matrix", format!("a weight of {x} is beyond f16's range (±65504)")));
        }
        Ok(F16Matrix { data: data.iter().map(|&x| f16::from_f32(x)).collect(), rows, cols })
    }

    /// `[rows, cols]` as stored.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
}

impl Tensor {
    /// `[.., K] · W → [.., N]` with `W` `[K, N]` as stored, or, when
    /// `transposed`, the stored `[N, K]` read as its transpose (a weight kept
    /// out × in, or a tied LM head). Sums are f32; only `W` is rounded.
    ///
    /// # Shapes
    /// self `[.., K]`, W `[K, N]` (or `[N, K]` transposed) → `[.., N]`
    pub fn matmul_f16(&self, w: &F16Matrix, transposed: bool) -> Result<Tensor> {
        let (k, n) = if transposed { (w.cols, w.rows) } else { (w.rows, w.cols) };
        let how = if transposed { ", read transposed" } else { "" };
        let (rows, shape) = inference_product_shape("matmul_f16", "16-bit weights", self, &w.shape(), [k, n], how)?;
        let x = self.data();
        let mut out = Vec::with_capacity(rows * n);
        if k == 0 {
            out.resize(rows * n, 0.0); // empty sums
        } else {
            for row in x.chunks_exact(k) {
                out.extend(gemv_f16(row, &w.data, k, n, transposed, true));
            }
        }
        Tensor::from_vec(out, &shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rng, no_grad};

    #[test]
    fn matches_the_f32_product_within_f16_rounding() {
        let mut rng = Rng::new(2);
        let x = Tensor::randn(&[2, 3, 40], 1.0, &mut rng);
        let w = Tensor::randn(&[40, 24], 0.1, &mut rng);
        let want = x.matmul(&w).unwrap();
        let w16 = F16Matrix::from_tensor(&w).unwrap();
        let wt16 = F16Matrix::from_tensor(&w.t().unwrap()).unwrap();
        assert_eq!(wt16.shape(), [24, 40]);
        for (got, what) in [
            (no_grad(|| x.matmul_f16(&w16, false)).unwrap(), "[K, N]"),
            (no_grad(|| x.matmul_f16(&wt16, true)).unwrap(), "[N, K]"),
        ] {
            assert_eq!(got.shape(), &[2, 3, 24]);
            // each weight is off by at most 2^-11 of itself; 40 terms of |x·w| ~ 0.1
            let diff = got.max_abs_diff(&want).unwrap();
            assert!(diff < 2e-3 && diff > 0.0, "{what}: {diff}");
        }
    }

    #[test]
    fn refuses_gradients_wrong_shapes_and_huge_weights() {
        let w = F16Matrix::from_tensor(&Tensor::ones(&[4, 3])).unwrap();
        let x = Tensor::ones(&[2, 4]);
        let e = x.matmul_f16(&w, false).unwrap_err().to_string();
        assert!(e.contains("no_grad"), "{e}");
        let e = no_grad(|| Tensor::ones(&[2, 5]).matmul_f16(&w, false)).unwrap_err().to_string();
        assert!(e.contains("[2, 5]") && e.contains("[4, 3]"), "{e}");
        let e = no_grad(|| x.matmul_f16(&w, true)).unwrap_err().to_string();
        assert!(e.contains("K = 3, read transposed"), "{e}");
        assert!(F16Matrix::from_tensor(&Tensor::ones(&[4])).is_err());
        // K = 0: every output is an empty sum
        let empty = F16Matrix::from_tensor(&Tensor::zeros(&[0, 2])).unwrap();
        let y = no_grad(|| Tensor::zeros(&[3, 0]).matmul_f16(&empty, false)).unwrap();
        assert_eq!((y.shape(), y.to_vec()), (&[3, 2][..], vec![0.0; 6]));
        let e = F16Matrix::from_tensor(&Tensor::full(&[1, 2], 1e6)).unwrap_err().to_string();
        assert!(e.contains("range"), "{e}");
    }
}
