//! Kernels: loops over slices, no shapes or graphs. Each fast kernel has a
//! naive twin beside it, and tests that compare the two.

pub mod attention;
pub mod cross_entropy;
pub mod elementwise;
pub mod gemm;
pub mod gemv;
pub mod gemv_f16;
pub mod norm;
pub mod packed;
pub mod recurrent;
pub mod scan;
pub mod softmax;
pub mod tile;

/// A raw pointer into an output buffer that parallel tasks share, each one
/// writing its own disjoint part (every use says which part).
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: the tasks holding copies write disjoint elements, as stated at each use.
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// Taking `self` whole makes closures capture the `Send` wrapper, not the raw field.
    #[inline]
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}
