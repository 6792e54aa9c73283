//! `x · W` with `W` packed once, ahead of time, into the panels the GEMM
//! reads. Every product first copies `B` into 16-column panels; for a weight
//! that is the same on every call (an encoder embedding sentences, a
//! classifier) that copy is repeated work — ~3 % of the MiniLM encoder, more
//! since each thread packed all of `B` for its own band of rows. A
//! [`PackedMatrix`] does it once (see [`crate::kernels::packed::PackedB`]).
//!
//! Inference only: nothing is recorded for backward, and calling it while
//! gradients are enabled is an error. The caller keeps the weight it packed
//! and must not use the packed copy once the weight changes (qkv's `Linear`
//! checks [`crate::Param::version`]).

use std::sync::Arc;

use super::matmul::{inference_product_shape, mat_of};
use crate::error::Result;
use crate::kernels::gemm::{Mat, RawMatMut};
use crate::kernels::packed::{PackedB, available, gemm_prepacked};
use crate::tensor::Tensor;

/// A `[K, N]` weight packed for the GEMM (the tensor may be a view, such as
/// the transpose of a weight stored `[out, in]`).
#[derive(Clone)]
pub struct PackedMatrix(Arc<PackedB>);

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [k, n] = self.0.shape();
        write!(f, "PackedMatrix[{k}, {n}]")
    }
}

impl PackedMatrix {
    /// Pack a 2-D tensor read as `B` (`[K, N]`). `None` where the CPU lacks
    /// the packed GEMM's instructions (AVX2 and FMA): there is nothing to gain.
    pub fn from_tensor(w: &Tensor) -> Result<Option<PackedMatrix>> {
        w.dims2()?;
        if !available() {
            return Ok(None);
        }
        Ok(Some(PackedMatrix(Arc::new(PackedB::new(mat_of(w, 0))))))
    }

    /// `[K, N]`.
    pub fn shape(&self) -> [usize; 2] {
        self.0.shape()
    }
}

impl Tensor {
    /// `[.., K] · W → [.., N]`, the same numbers as `self.matmul(w)` for the
    /// tensor `W` was packed from.
    ///
    /// # Shapes
    /// self `[.., K]`, W `[K, N]` → `[.., N]`
    pub fn matmul_packed(&self, w: &PackedMatrix) -> Result<Tensor> {
        let [k, n] = w.shape();
        let (rows, shape) = inference_product_shape("matmul_packed", "packed weights", self, &w.shape(), [k, n], "")?;
        let x = self.contiguous();
        let a = Mat { data: x.storage_slice(), offset: x.layout().offset(), rows, cols: k, rs: k, cs: 1 };
        let mut out = crate::pool::take(rows * n);
        let c = RawMatMut { ptr: out.as_mut_ptr(), rows, cols: n, rs: n, cs: 1 };
        // SAFETY: `out` holds the rows × n result and nothing else sees it; `a`
        // is x's contiguous rows; `available()` held when `w` was packed.
        unsafe { gemm_prepacked(c, a, &w.0, 1.0, false, rayon::current_num_threads() > 1) };
        Tensor::from_vec(out, &shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Rng, no_grad};

    #[test]
    fn matches_matmul_for_stored_and_transposed_weights() {
        let mut rng = Rng::new(8);
        let x = Tensor::randn(&[2, 5, 40], 1.0, &mut rng);
        let w = Tensor::randn(&[40, 33], 1.0, &mut rng);
        let w_out_in = Tensor::randn(&[33, 40], 1.0, &mut rng);
        no_grad(|| {
            for w in [w.clone(), w_out_in.t().unwrap()] {
                let Some(p) = PackedMatrix::from_tensor(&w).unwrap() else { return };
                assert_eq!(p.shape(), [40, 33]);
                let got = x.matmul_packed(&p).unwrap();
                let want = x.matmul(&w).unwrap();
                assert_eq!(got.shape(), &[2, 5, 33]);
                for (g, e) in got.data().iter().zip(want.data().iter()) {
                    assert!((g - e).abs() < 1e-4 * (1.0 + e.abs()), "{g} vs {e}");
                }
                // a strided input is read as its values
                let xt = x.transpose(0, 1).unwrap();
                let got = xt.matmul_packed(&p).unwrap();
                let want = xt.matmul(&w).unwrap();
                for (g, e) in got.data().iter().zip(want.data().iter()) {
                    assert!((g - e).abs() < 1e-4 * (1.0 + e.abs()), "{g} vs {e}");
                }
            }
        });
    }

    #[test]
    fn wrong_shapes_and_recorded_gradients_are_errors() {
        let mut rng = Rng::new(9);
        let w = Tensor::randn(&[6, 4], 1.0, &mut rng);
        let Some(p) = PackedMatrix::from_tensor(&w).unwrap() else { return };
        let msg = no_grad(|| Tensor::zeros(&[3, 5]).matmul_packed(&p).unwrap_err().to_string());
        assert!(msg.contains("K = 6"), "{msg}");
        let msg = Tensor::zeros(&[3, 6]).matmul_packed(&p).unwrap_err().to_string();
        assert!(msg.contains("no_grad"), "{msg}");
        assert!(PackedMatrix::from_tensor(&Tensor::zeros(&[6])).is_err());
    }
}
