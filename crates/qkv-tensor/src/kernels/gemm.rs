//! Matrix multiplication: `C = A·B` (optionally `C += s·A·B`).
//!
//! Matrices are described by a row stride and a column stride into a buffer,
//! so a transpose is just swapped strides: `A·Bᵀ` and `Aᵀ·B` cost no copy.
//! [`matmul_naive`] is the obviously-correct triple loop the fast path is
//! tested against.
//!
//! The fast path is chosen once per process ([`Backend`]):
//!
//! - `gemm` on CPUs with AVX-512 (its AVX-512 kernels are the fastest we measured there);
//! - on AVX2+FMA CPUs, qkv's own blocked GEMM ([`super::packed`]) where it
//!   measured faster than `matrixmultiply`: K ≥ 32, and N ≥ 128 when A is
//!   transposed. Per-call best times in one process on a 2-core Zen 2 EPYC
//!   (`examples/gemm_shapes.rs --ab` and the recurrent network's shapes):
//!   packed 1.12–1.46× on every training and encoder shape, transposed A
//!   (weight gradients) included, and on thin K down to 32 (1.12×); only a
//!   transposed A against N = 65 (a character head's weight gradient) ran
//!   1.8× faster in `matrixmultiply`. An earlier session's EPYC had found
//!   `matrixmultiply` level or up to 10 % ahead for a transposed A, N ≤ 256
//!   or K < 128, which the rule then followed; the CPU under these sessions
//!   changes, and the rule follows the latest side-by-side measurement;
//! - `matrixmultiply` on other CPUs. It runs one thread per call, as does the
//!   packed GEMM here, so the rows (or columns) of `C` are split across the
//!   rayon pool.
//!
//! `QKV_GEMM=gemm`, `QKV_GEMM=matrixmultiply` or `QKV_GEMM=packed` forces one.

use std::sync::OnceLock;

use rayon::prelude::*;

use super::SharedMut;

/// Which crate multiplies matrices in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gemm,
    MatrixMultiply,
    /// qkv's own blocked GEMM ([`super::packed`]), AVX2+FMA only.
    Packed,
    /// `Packed` for the shapes where it measured faster, `MatrixMultiply`
    /// for the rest ([`Backend::for_shape`]); the default on AVX2+FMA.
    PackedWhereFaster,
}

impl Backend {
    pub fn current() -> Backend {
        static CHOICE: OnceLock<Backend> = OnceLock::new();
        *CHOICE.get_or_init(|| match std::env::var("QKV_GEMM").as_deref() {
            Ok("gemm") => Backend::Gemm,
            Ok("matrixmultiply") => Backend::MatrixMultiply,
            Ok("packed") if super::packed::available() => Backend::Packed,
            _ => {
                #[cfg(target_arch = "x86_64")]
                if is_x86_feature_detected!("avx512f") {
                    return Backend::Gemm;
                }
                if super::packed::available() { Backend::PackedWhereFaster } else { Backend::MatrixMultiply }
            }
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gemm => "gemm",
            Backend::MatrixMultiply => "matrixmultiply",
            Backend::Packed => "packed",
            Backend::PackedWhereFaster => "packed+matrixmultiply",
        }
    }

    /// The backend that runs an `m × k` by `k × n` product `A·B`.
    /// `PackedWhereFaster` picks the packed GEMM when K ≥ 32, and N ≥ 128
    /// for a transposed A (see the module notes).
    pub fn for_shape(self, a: &Mat<'_>, k: usize, n: usize) -> Backend {
        match self {
            Backend::PackedWhereFaster if k >= 32 && (a.cs == 1 || n >= 128) => Backend::Packed,
            Backend::PackedWhereFaster => Backend::MatrixMultiply,
            other => other,
        }
    }
}

/// A read-only matrix view: element `(i, j)` is `data[offset + i*rs + j*cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// A writable matrix view, same addressing as [`Mat`].
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub offset: usize,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major `rows × cols` matrix packed at the start of `data`.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, offset: 0, rows, cols, rs: cols, cs: 1 }
    }

    /// The transpose: no copy, the strides swap.
    pub fn t(self) -> Self {
        Mat { rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs, ..self }
    }

    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f32 {
        self.data[self.offset + i * self.rs + j * self.cs]
    }

    pub(super) fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

impl<'a> MatMut<'a> {
    pub fn rows(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        MatMut { data, offset: 0, rows, cols, rs: cols, cs: 1 }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || self.offset + (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// How many threads a product may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// The calling thread only (the caller parallelises over something else).
    One,
    /// The whole rayon pool.
    All,
}

/// `C = s·A·B`, or `C += s·A·B` when `accumulate`. Panics if a view reaches
/// past its buffer or the sizes do not chain (callers check user shapes first).
pub fn matmul(c: MatMut<'_>, a: Mat<'_>, b: Mat<'_>, s: f32, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && c.rows == m && c.cols == n, "matmul: sizes do not chain");
    assert!(a.fits() && b.fits() && c.fits(), "matmul: a view reaches past its buffer");
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: every index the kernel touches, offset + i*rs + j*cs with i < rows
    // and j < cols, was checked above to lie inside its slice; `c` is borrowed
    // mutably, so it cannot alias `a` or `b`.
    unsafe {
        matmul_raw(
            RawMatMut { ptr: c.data.as_mut_ptr().add(c.offset), rows: m, cols: n, rs: c.rs, cs: c.cs },
            a,
            b,
            s,
            accumulate,
            threads,
        )
    }
}

/// A writable matrix given by a raw pointer, for kernels whose parallel tasks
/// write disjoint, interleaved elements of one buffer (the heads of an
/// attention output), which `&mut` slices cannot express.
#[derive(Clone, Copy, Debug)]
pub struct RawMatMut {
    pub ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

/// [`matmul`] into a raw destination.
///
/// # Safety
/// Every element `ptr + i*rs + j*cs` (i < rows, j < cols) must be valid for
/// reads and writes, not aliased by `a` or `b`, and not touched by any other
/// thread during the call.
pub unsafe fn matmul_raw(c: RawMatMut, a: Mat<'_>, b: Mat<'_>, s: f32, accumulate: bool, threads: Threads) {
    // SAFETY: forwarded contract.
    unsafe { matmul_raw_with(Backend::current(), c, a, b, s, accumulate, threads) }
}

/// [`matmul_raw`] with an explicit backend (tests run both).
///
/// # Safety
/// As [`matmul_raw`].
pub unsafe fn matmul_raw_with(
    backend: Backend,
    c: RawMatMut,
    a: Mat<'_>,
    b: Mat<'_>,
    s: f32,
    accumulate: bool,
    threads: Threads,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && c.rows == m && c.cols == n, "matmul: sizes do not chain");
    assert!(a.fits() && b.fits(), "matmul: a view reaches past its buffer");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    // SAFETY: in range by the caller's contract.
                    unsafe { *c.ptr.add(i * c.rs + j * c.cs) = 0.0 };
                }
            }
        }
        return;
    }
    // one row (a generated token): stream the weights once instead of packing them
    if m == 1 && (b.cs == 1 || b.rs == 1) {
        // the row of A as a slice: borrowed when contiguous, gathered otherwise
        let gathered: Vec<f32>;
        let x = if a.cs == 1 {
            &a.data[a.offset..a.offset + k]
        } else {
            gathered = (0..k).map(|p| a.at(0, p)).collect();
            &gathered
        };
        // SAFETY: forwarded contract; `c` is the 1 × N row.
        if unsafe { super::gemv::gemv(c, x, b, s, accumulate, threads == Threads::All) } {
            return;
        }
    }
    let backend = backend.for_shape(&a, k, n);
    match backend {
        Backend::Gemm => {
            let parallelism = match threads {
                Threads::One => gemm::Parallelism::None,
                Threads::All if rayon::current_num_threads() > 1 => gemm::Parallelism::Rayon(0),
                Threads::All => gemm::Parallelism::None,
            };
            // SAFETY: a and b were checked to lie in their slices; c by the caller.
            unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    c.ptr,
                    c.cs as isize,
                    c.rs as isize,
                    accumulate,
                    a.data.as_ptr().add(a.offset),
                    a.cs as isize,
                    a.rs as isize,
                    b.data.as_ptr().add(b.offset),
                    b.cs as isize,
                    b.rs as isize,
                    1.0,
                    s,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        // (`for_shape` resolved `PackedWhereFaster` to one of the other two)
        Backend::Packed | Backend::MatrixMultiply | Backend::PackedWhereFaster => {
            // Split C into `parts` bands along its longer side, one
            // single-threaded product each: every task packs its own copy of
            // the shared operand, and the threads never wait on each other.
            let work = m * n * k;
            let parts = match threads {
                Threads::One => 1,
                Threads::All => rayon::current_num_threads().min(work.div_ceil(1 << 18)).max(1),
            };
            let split_rows = m >= n;
            let len = if split_rows { m } else { n };
            let band = len.div_ceil(parts);
            let cp = SharedMut(c.ptr);
            let run = move |i: usize| {
                let start = i * band;
                if start >= len {
                    return;
                }
                let size = band.min(len - start);
                let (mi, ni) = if split_rows { (size, n) } else { (m, size) };
                let (a_off, b_off, c_off) = if split_rows {
                    (a.offset + start * a.rs, b.offset, start * c.rs)
                } else {
                    (a.offset, b.offset + start * b.cs, start * c.cs)
                };
                // SAFETY: views checked above; each task writes its own band of C.
                unsafe {
                    let ci = RawMatMut { ptr: cp.ptr().add(c_off), rows: mi, cols: ni, ..c };
                    if backend == Backend::Packed {
                        // `available()` was checked when choosing it
                        let ai = Mat { rows: mi, offset: a_off, ..a };
                        let bi = Mat { cols: ni, offset: b_off, ..b };
                        super::packed::gemm(ci, ai, bi, s, accumulate, false);
                    } else {
                        matrixmultiply::sgemm(
                            mi,
                            k,
                            ni,
                            s,
                            a.data.as_ptr().add(a_off),
                            a.rs as isize,
                            a.cs as isize,
                            b.data.as_ptr().add(b_off),
                            b.rs as isize,
                            b.cs as isize,
                            if accumulate { 1.0 } else { 0.0 },
                            ci.ptr,
                            c.rs as isize,
                            c.cs as isize,
                        );
                    }
                }
            };
            if parts == 1 {
                run(0);
            } else {
                (0..parts).into_par_iter().for_each(run);
            }
        }
    }
}

/// The reference: `C = s·A·B` (or `+=`) by three nested loops, summing in f64.
pub fn matmul_naive(c: MatMut<'_>, a: Mat<'_>, b: Mat<'_>, s: f32, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && c.rows == m && c.cols == n, "matmul_naive: sizes do not chain");
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += a.at(i, p) as f64 * b.at(p, j) as f64;
            }
            let dst = &mut c.data[c.offset + i * c.rs + j * c.cs];
            let v = s * acc as f32;
            *dst = if accumulate { *dst + v } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn random(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// Every backend against the naive product, with one thread and with the
    /// pool's (`Threads::All`), in pools of 1 to 4 threads: from (151, 70, 41)
    /// on, the work (M·N·K ≥ 2^19) is split into bands (by rows, then by
    /// columns), one per thread, and `gemm`'s own threading takes over for
    /// `Backend::Gemm`.
    #[test]
    fn fast_matches_naive_on_awkward_shapes_and_transposes() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, fast_matches_naive_in_this_pool);
    }

    fn fast_matches_naive_in_this_pool() {
        let mut rng = Rng::new(0);
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 7, 1),
            (3, 5, 2),
            (17, 33, 9),
            (64, 64, 64),
            (65, 31, 129),
            (2, 300, 3),
            (151, 70, 41),
            (39, 101, 300),
            // wide enough for `PackedWhereFaster` to choose the packed GEMM
            (20, 130, 400),
        ] {
            for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                let a_data = random(m * k, &mut rng);
                let b_data = random(k * n, &mut rng);
                // stored transposed when asked, then viewed back with .t()
                let a = if ta { Mat::rows(&a_data, k, m).t() } else { Mat::rows(&a_data, m, k) };
                let b = if tb { Mat::rows(&b_data, n, k).t() } else { Mat::rows(&b_data, k, n) };
                let mut c1 = random(m * n, &mut rng);
                let mut c2 = c1.clone();
                let mut backends = vec![
                    (Threads::One, Backend::Gemm),
                    (Threads::All, Backend::Gemm),
                    (Threads::One, Backend::MatrixMultiply),
                    (Threads::All, Backend::MatrixMultiply),
                ];
                if super::super::packed::available() {
                    backends.extend([
                        (Threads::One, Backend::Packed),
                        (Threads::All, Backend::Packed),
                        (Threads::All, Backend::PackedWhereFaster),
                    ]);
                }
                for (threads, backend) in backends {
                    for acc in [false, true] {
                        let raw = RawMatMut { ptr: c1.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                        // SAFETY: c1 is m × n, packed, and not used during the call.
                        unsafe { matmul_raw_with(backend, raw, a, b, 0.5, acc, threads) };
                        matmul_naive(MatMut::rows(&mut c2, m, n), a, b, 0.5, acc);
                        for (x, y) in c1.iter().zip(&c2) {
                            assert!(
                                (x - y).abs() < 1e-4 * (1.0 + y.abs()),
                                "{m}x{k}x{n} ta={ta} tb={tb} {threads:?} {backend:?}: {x} vs {y}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn packed_where_faster_picks_by_shape() {
        let data = vec![0.0f32; 600 * 600];
        let rows = Mat::rows(&data, 600, 600);
        let pick = |a: &Mat, k, n| Backend::PackedWhereFaster.for_shape(a, k, n);
        assert_eq!(pick(&rows, 600, 600), Backend::Packed);
        assert_eq!(pick(&rows.t(), 600, 600), Backend::Packed);
        assert_eq!(pick(&rows, 65, 65), Backend::Packed);
        // a transposed A against a narrow N, a thin K
        assert_eq!(pick(&rows.t(), 600, 65), Backend::MatrixMultiply);
        assert_eq!(pick(&rows, 16, 600), Backend::MatrixMultiply);
        // a forced backend stays what it is
        assert_eq!(Backend::MatrixMultiply.for_shape(&rows, 600, 600), Backend::MatrixMultiply);
        assert_eq!(Backend::Packed.for_shape(&rows.t(), 600, 64), Backend::Packed);
    }

    #[test]
    fn writes_into_a_strided_output() {
        // C is the left 2x2 block of a 2x3 buffer: the third column must stay untouched.
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 0.0, 0.0, 1.0];
        let mut c = [9.0; 6];
        let cm = MatMut { data: &mut c, offset: 0, rows: 2, cols: 2, rs: 3, cs: 1 };
        matmul(cm, Mat::rows(&a, 2, 2), Mat::rows(&b, 2, 2), 1.0, false, Threads::One);
        assert_eq!(c, [1.0, 2.0, 9.0, 3.0, 4.0, 9.0]);
    }
}
