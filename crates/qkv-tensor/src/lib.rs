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
pub use ops::attention::{AttentionKernel, AttentionOpts, attention, attention_qkv};
pub use ops::cross_entropy::{cross_entropy, cross_entropy_smoothed};
pub use ops::dropout::dropout;
pub use ops::embedding::embedding;
pub use ops::norm::{layer_norm, rms_norm};
pub use rng::Rng;
pub use tensor::Tensor;
pub use threads::{in_pool, init_threads, num_threads};
