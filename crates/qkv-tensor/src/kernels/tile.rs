//! Small matrix products for the tiles of the attention kernel.
//!
//! A flash-attention tile is a 64×64×64 product, too small for a general GEMM
//! to amortise its packing and dispatch; profiling showed more time there than
//! in the arithmetic. This kernel skips packing: the `B` operand must have unit
//! column stride (its rows are loaded as vectors), the `A` operand may have any
//! strides (its entries are broadcast one at a time), so `Pᵀ·dO` and `dSᵀ·Q`
//! need no transposed copies. An AVX2+FMA register-blocked micro-kernel (6 rows
//! × 16 columns of `C` held in 12 registers) does the work when the CPU has
//! it; a plain loop otherwise. [`super::gemm::matmul_naive`] is its twin in tests.

/// `C (+)= s·A·B` with `A` `m×k` at `a[ar·i + ac·p]`, `B` `k×n` at
/// `b[ldb·p + j]`, `C` `m×n` at `c[ldc·i + j]`.
#[derive(Clone, Copy, Debug)]
pub struct TileProduct {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub ar: usize,
    pub ac: usize,
    pub ldb: usize,
    pub ldc: usize,
    pub s: f32,
    pub accumulate: bool,
}

impl TileProduct {
    fn check(&self, a_len: usize, b_len: usize, c_len: usize) {
        let TileProduct { m, n, k, ar, ac, ldb, ldc, .. } = *self;
        if m == 0 || n == 0 {
            return;
        }
        assert!(k == 0 || (m - 1) * ar + (k - 1) * ac < a_len, "tile: A reaches past its buffer");
        assert!(k == 0 || (k - 1) * ldb + n <= b_len, "tile: B reaches past its buffer");
        assert!((m - 1) * ldc + n <= c_len, "tile: C reaches past its buffer");
    }

    /// Compute into a slice.
    pub fn run(&self, c: &mut [f32], a: &[f32], b: &[f32]) {
        self.check(a.len(), b.len(), c.len());
        // SAFETY: bounds checked above; `c` is a unique borrow.
        unsafe { self.run_raw(c.as_mut_ptr(), a, b) }
    }

    /// Compute into raw memory (disjoint parts of one buffer written by
    /// parallel tasks).
    ///
    /// # Safety
    /// `c + ldc·i + j` for `i < m`, `j < n` must be valid, unaliased by `a` and
    /// `b`, and not accessed by other threads during the call.
    pub unsafe fn run_raw(&self, c: *mut f32, a: &[f32], b: &[f32]) {
        self.check(a.len(), b.len(), usize::MAX);
        if self.m == 0 || self.n == 0 {
            return;
        }
        #[cfg(target_arch = "x86_64")]
        {
            if crate::simd::instruction_set() == "avx2+fma" {
                // SAFETY: the CPU has AVX2 and FMA; bounds as above.
                unsafe { avx2::run(self, c, a.as_ptr(), b.as_ptr()) };
                return;
            }
        }
        // SAFETY: as above.
        unsafe { portable(self, c, a, b) };
    }
}

/// Plain loops: `C[i, :] (+)= s · Σ_p A[i, p] · B[p, :]`.
unsafe fn portable(t: &TileProduct, c: *mut f32, a: &[f32], b: &[f32]) {
    let mut row = vec![0.0f32; t.n];
    for i in 0..t.m {
        row.fill(0.0);
        for p in 0..t.k {
            let x = a[i * t.ar + p * t.ac];
            for (r, &y) in row.iter_mut().zip(&b[p * t.ldb..p * t.ldb + t.n]) {
                *r += x * y;
            }
        }
        for (j, &r) in row.iter().enumerate() {
            // SAFETY: in range by the caller's contract.
            unsafe {
                let dst = c.add(i * t.ldc + j);
                *dst = if t.accumulate { *dst + t.s * r } else { t.s * r };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::TileProduct;
    use std::arch::x86_64::*;

    const MR: usize = 6;

    /// # Safety
    /// AVX2 and FMA are present, and `c`, `a`, `b` hold the rows, columns and
    /// strides `t` describes (checked by `TileProduct::run`, the one caller).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(t: &TileProduct, c: *mut f32, a: *const f32, b: *const f32) {
        let mut j = 0;
        while j + 16 <= t.n {
            // SAFETY: this module runs only where `run` may (AVX2 and FMA present), and columns j.. lie inside the tile whose bounds the caller vouched for.
            unsafe { rows::<2>(t, c, a, b, j) };
            j += 16;
        }
        if j + 8 <= t.n {
            // SAFETY: this module runs only where `run` may (AVX2 and FMA present), and columns j.. lie inside the tile whose bounds the caller vouched for.
            unsafe { rows::<1>(t, c, a, b, j) };
            j += 8;
        }
        if j < t.n {
            if t.ac == 1 && t.ldb == 1 {
                // SAFETY: this module runs only where `run` may (AVX2 and FMA present), and columns j.. lie inside the tile whose bounds the caller vouched for.
                unsafe { columns_dot(t, c, a, b, j) };
            } else {
                // SAFETY: this module runs only where `run` may (AVX2 and FMA present), and columns j.. lie inside the tile whose bounds the caller vouched for.
                unsafe { columns_scalar(t, c, a, b, j) };
            }
        }
    }

    /// The last columns when A's rows and B's columns are both contiguous
    /// along k (`ac == 1`, `ldb == 1`): dot products, 8 lanes along k, four
    /// rows at a time. Decoding one token is this case: its scores `Sᵀ = K·qᵀ`
    /// are a single column, and one element at a time (a chain of dependent
    /// FMAs) they took ~5 % of a GPT-2 decode step.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn columns_dot(t: &TileProduct, c: *mut f32, a: *const f32, b: *const f32, j0: usize) {
        for j in j0..t.n {
            let mut i = 0;
            // SAFETY: every pointer offset below stays within the rows, columns and strides of the tile the caller vouched for; AVX2 and FMA are present (this module's contract).
            unsafe {
                while i + 4 <= t.m {
                    dots::<4>(t, c, a, b, i, j);
                    i += 4;
                }
                while i < t.m {
                    dots::<1>(t, c, a, b, i, j);
                    i += 1;
                }
            }
        }
    }

    /// `C[i + r, j]` for `r < R`: row `i + r` of A dotted with column `j` of B.
    ///
    /// # Safety
    /// As `run`, with rows `i .. i + R` and column `j` inside the tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dots<const R: usize>(t: &TileProduct, c: *mut f32, a: *const f32, b: *const f32, i: usize, j: usize) {
        // SAFETY: every pointer offset below stays within the rows, columns and strides of the tile the caller vouched for; AVX2 and FMA are present (this module's contract).
        unsafe {
            let b = b.add(j);
            let a = a.add(i * t.ar);
            let mut acc = [_mm256_setzero_ps(); R];
            let mut p = 0;
            while p + 8 <= t.k {
                let bv = _mm256_loadu_ps(b.add(p));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    *acc_r = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(r * t.ar + p)), bv, *acc_r);
                }
                p += 8;
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), *acc_r);
                let mut sum: f32 = lanes.iter().sum();
                for p in p..t.k {
                    sum = (*a.add(r * t.ar + p)).mul_add(*b.add(p), sum);
                }
                let dst = c.add((i + r) * t.ldc + j);
                *dst = if t.accumulate { *dst + t.s * sum } else { t.s * sum };
            }
        }
    }

    /// Columns `j .. j + 8·NV` for all rows, `MR` rows at a time.
    ///
    /// # Safety
    /// As `run`, with columns `j .. j + 8·NV` inside the tile.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn rows<const NV: usize>(t: &TileProduct, c: *mut f32, a: *const f32, b: *const f32, j: usize) {
        let mut i = 0;
        // SAFETY: every pointer offset below stays within the rows, columns and strides of the tile the caller vouched for; AVX2 and FMA are present (this module's contract).
        unsafe {
            while i + MR <= t.m {
                block::<MR, NV>(t, c, a, b, i, j);
                i += MR;
            }
            match t.m - i {
                0 => {}
                1 => block::<1, NV>(t, c, a, b, i, j),
                2 => block::<2, NV>(t, c, a, b, i, j),
                3 => block::<3, NV>(t, c, a, b, i, j),
                4 => block::<4, NV>(t, c, a, b, i, j),
                _ => block::<5, NV>(t, c, a, b, i, j),
            }
        }
    }

    /// The micro-kernel: an `R × 8·NV` block of C kept in registers while p runs over k.
    ///
    /// # Safety
    /// As `run`, with rows `i .. i + R` and columns `j .. j + 8·NV` inside the tile.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn block<const R: usize, const NV: usize>(
        t: &TileProduct,
        c: *mut f32,
        a: *const f32,
        b: *const f32,
        i: usize,
        j: usize,
    ) {
        // SAFETY: every pointer offset below stays within the rows, columns and strides of the tile the caller vouched for; AVX2 and FMA are present (this module's contract).
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); NV]; R];
            let a = a.add(i * t.ar);
            let b = b.add(j);
            for p in 0..t.k {
                let mut bv = [_mm256_setzero_ps(); NV];
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = _mm256_loadu_ps(b.add(p * t.ldb + 8 * v));
                }
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * t.ar + p * t.ac));
                    for v in 0..NV {
                        acc_r[v] = _mm256_fmadd_ps(av, bv[v], acc_r[v]);
                    }
                }
            }
            let s = _mm256_set1_ps(t.s);
            for (r, acc_r) in acc.iter().enumerate() {
                for (v, &x) in acc_r.iter().enumerate() {
                    let dst = c.add((i + r) * t.ldc + j + 8 * v);
                    let y =
                        if t.accumulate { _mm256_fmadd_ps(x, s, _mm256_loadu_ps(dst)) } else { _mm256_mul_ps(x, s) };
                    _mm256_storeu_ps(dst, y);
                }
            }
        }
    }

    /// The last `n % 8` columns, one at a time.
    ///
    /// # Safety
    /// As `run`, with `j0 <= t.n`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn columns_scalar(t: &TileProduct, c: *mut f32, a: *const f32, b: *const f32, j0: usize) {
        for i in 0..t.m {
            for j in j0..t.n {
                let mut acc = 0.0f32;
                for p in 0..t.k {
                    // SAFETY: i < m, p < k and j < n: inside A and B as the tile describes them.
                    unsafe { acc = (*a.add(i * t.ar + p * t.ac)).mul_add(*b.add(p * t.ldb + j), acc) };
                }
                // SAFETY: every pointer offset below stays within the rows, columns and strides of the tile the caller vouched for; AVX2 and FMA are present (this module's contract).
                unsafe {
                    let dst = c.add(i * t.ldc + j);
                    *dst = if t.accumulate { *dst + t.s * acc } else { t.s * acc };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::gemm::{Mat, MatMut, matmul_naive};
    use crate::rng::Rng;

    #[test]
    fn matches_naive_for_odd_sizes_and_transposed_a() {
        let mut rng = Rng::new(4);
        // n = 1 is decoding's Sᵀ = K·qᵀ: dot products when A is not transposed
        let shapes = [(1, 1, 1), (6, 16, 3), (7, 17, 5), (64, 64, 64), (13, 40, 9), (5, 8, 0), (64, 7, 64)];
        let columns = [(64, 1, 64), (7, 1, 21), (3, 1, 8), (9, 1, 3)];
        for &(m, n, k) in shapes.iter().chain(&columns) {
            for transposed_a in [false, true] {
                let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
                let b: Vec<f32> = (0..k * n + 3).map(|_| rng.normal()).collect();
                let (ar, ac) = if transposed_a { (1, m) } else { (k, 1) };
                let ldc = n + 2;
                let c0: Vec<f32> = (0..m * ldc).map(|_| rng.normal()).collect();
                for accumulate in [false, true] {
                    let mut c1 = c0.clone();
                    TileProduct { m, n, k, ar, ac, ldb: n, ldc, s: 0.7, accumulate }.run(&mut c1, &a, &b);
                    let mut c2 = c0.clone();
                    let am = Mat { data: &a, offset: 0, rows: m, cols: k, rs: ar, cs: ac };
                    let cm = MatMut { data: &mut c2, offset: 0, rows: m, cols: n, rs: ldc, cs: 1 };
                    matmul_naive(cm, am, Mat::rows(&b, k, n), 0.7, accumulate);
                    for (x, y) in c1.iter().zip(&c2) {
                        assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()), "{m}x{n}x{k}: {x} vs {y}");
                    }
                }
            }
        }
    }
}
