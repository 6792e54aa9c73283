//! # qkv-tensor: the engine under qkv
//!
//! f32 tensors with a shape ([`Tensor`]), the CPU kernels a transformer needs
//! (GEMM, softmax, LayerNorm/RMSNorm, cross-entropy, attention — each fast
//! kernel beside its naive twin, in [`kernels`]), and reverse-mode automatic
//! differentiation ([`autograd`]). It knows nothing of models, files or text.
//!
//! Shapes in comments use one vocabulary: B batch, T tokens, C model width,
//! H heads, D head width (C = H·D), V vocabulary, F MLP width.
//!
//! ```
//! use qkv_tensor::{Param, Rng, Tensor};
//! let mut rng = Rng::new(0);
//! let w = Param::new(Tensor::randn(&[3, 2], 1.0, &mut rng));   // [C, N]
//! let x = Tensor::randn(&[4, 3], 1.0, &mut rng);                // [T, C]
//! let loss = x.matmul(&w.value()).unwrap().square().mean_all();
//! loss.backward().unwrap();
//! assert_eq!(w.grad().unwrap().shape(), &[3, 2]);
//! ```

pub mod autograd;
pub mod copies;
pub mod error;
pub mod gradcheck;
pub mod kernels;
pub mod layout;
pub mod ops;
pub mod pool;
pub mod rng;
pub mod simd;
pub mod storage;
pub mod tensor;
pub mod threads;

pub use autograd::{NoGradGuard, Param, is_grad_enabled, no_grad};
pub use copies::InferenceCopy;
pub use error::{Error, Result};
pub use ops::attention::{AttentionKernel, AttentionOpts, attention, attention_probabilities, attention_qkv};
pub use ops::cross_entropy::{cross_entropy, cross_entropy_smoothed};
pub use ops::dropout::dropout;
pub use ops::embedding::embedding;
pub use ops::norm::{layer_norm, rms_norm};
pub use rng::Rng;
pub use tensor::Tensor;
pub use threads::{in_pool, init_threads, num_threads};

/// The largest of `values`, or NaN as soon as one of them is NaN (0 when
/// there are none). `f32::max` skips a NaN, so a comparison folded with it
/// would call an output of NaNs equal to its reference: every test's
/// "worst difference" goes through this instead.
pub fn max_or_nan(values: impl IntoIterator<Item = f32>) -> f32 {
    values.into_iter().fold(0.0f32, |m, v| if v.is_nan() || m.is_nan() { f32::NAN } else { m.max(v) })
}

#[cfg(test)]
mod max_or_nan_tests {
    use super::*;

    #[test]
    fn a_nan_or_an_infinity_is_never_close() {
        assert_eq!(max_or_nan([0.5, 2.0, 1.0]), 2.0);
        assert!(max_or_nan([0.5, f32::NAN, 1.0]).is_nan());
        assert!(max_or_nan([f32::NAN, 0.0]).is_nan());
        let good = Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap();
        let nan = Tensor::from_vec(vec![f32::NAN, f32::NAN], &[2]).unwrap();
        let inf = Tensor::from_vec(vec![1.0, f32::INFINITY], &[2]).unwrap();
        // the pattern every golden test uses, `diff < tol`, fails for NaN and infinity
        let d = nan.max_abs_diff(&good).unwrap();
        assert!(d.is_nan(), "all-NaN output compared as close: {d}");
        let d = inf.max_abs_diff(&good).unwrap();
        assert!(d.is_infinite(), "an infinite output compared as close: {d}");
        assert!(inf.max_abs_diff(&inf).unwrap().is_nan(), "inf - inf is NaN, never close");
    }
}
