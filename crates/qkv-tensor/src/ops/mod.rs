//! Differentiable operations. Each op computes its result with a kernel and
//! records, right beside it, how to turn the result's gradient into its
//! inputs' gradients.

pub mod attention;
pub mod binary;
pub mod cross_entropy;
pub mod dropout;
pub mod embedding;
pub mod matmul;
pub mod norm;
pub mod recurrent;
pub mod reduce;
pub mod scan;
pub mod softmax;
pub mod unary;
pub mod view;
