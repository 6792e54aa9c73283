//! Kernels: loops over slices, no shapes or graphs. Each fast kernel has a
//! naive twin beside it, and tests that compare the two.

pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod gemm;
pub mod gemv;
pub mod norm;
pub mod packed;
pub mod softmax;
pub mod tile;
