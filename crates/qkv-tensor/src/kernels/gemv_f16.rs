//! Matrix × vector with the matrix stored in 16-bit floats (IEEE `f16`):
//! generation's one-row products, reading half the bytes.
//!
//! Generating a token reads every weight once (see [`super::gemv`]), so its
//! speed is memory bandwidth divided by the bytes of the weights. Keeping a
//! 16-bit copy of them halves those bytes. Only the storage is 16-bit: each
//! weight is widened to f32 as it is loaded (one `vcvtph2ps` per 8 on x86
//! with F16C) and all sums are f32. The price is the rounding of the weights
//! themselves, a relative error of at most 2⁻¹¹ ≈ 4.9e-4 each.
//!
//! Two layouts, as for f32:
//! * `[K, N]` (qkv's `Linear`, GPT-2's `Conv1D`): bands of rows per thread,
//!   each adding `x[k] · W[k, :]` into its own partial `y`;
//! * `[N, K]` (the LM head, `nn.Linear`): bands of outputs per thread, each a
//!   dot product of `x` with a contiguous row.
//!
//! [`gemv_f16_naive`] (widen, then the plain sum in f64) is the twin.

use half::f16;
use rayon::prelude::*;

/// Rows of `W` per band split between threads are a multiple of this (the
/// `[K, N]` kernel takes four rows per pass over `y`).
const ROWS: usize = 4;

/// `y = x · W`, `W` a `K × N` matrix stored as `w` in f16: row-major `[K, N]`,
/// or `[N, K]` when `transposed` (then `y[j] = Σ_k x[k] · w[j·K + k]`).
///
/// # Panics
/// If `x.len() != k` or `w.len() != k · n` (callers check shapes first).
pub fn gemv_f16(x: &[f32], w: &[f16], k: usize, n: usize, transposed: bool, parallel: bool) -> Vec<f32> {
    assert!(x.len() == k && w.len() == k * n, "gemv_f16: x has {} of {k}, w {} of {k}×{n}", x.len(), w.len());
    let threads = if parallel && k * n >= 1 << 15 { rayon::current_num_threads() } else { 1 };
    if transposed { rows_dot(x, w, k, n, threads) } else { rows_axpy(x, w, k, n, threads) }
}

/// The plain definition: widen every weight, sum in f64.
pub fn gemv_f16_naive(x: &[f32], w: &[f16], k: usize, n: usize, transposed: bool) -> Vec<f32> {
    let at = |p: usize, j: usize| if transposed { w[j * k + p] } else { w[p * n + j] }.to_f64();
    (0..n).map(|j| (0..k).map(|p| x[p] as f64 * at(p, j)).sum::<f64>() as f32).collect()
}

/// `[K, N]`: bands of rows, one partial `y` per band, summed at the end.
fn rows_axpy(x: &[f32], w: &[f16], k: usize, n: usize, threads: usize) -> Vec<f32> {
    let band = k.div_ceil(threads).next_multiple_of(ROWS);
    let partial = |start: usize| -> Vec<f32> {
        let end = (start + band).min(k);
        let mut y = vec![0.0f32; n];
        let (xs, ws) = (&x[start..end], &w[start * n..end * n]);
        if !kernel::axpy_rows(&mut y, xs, ws) {
            for (r, &xr) in xs.iter().enumerate() {
                for (yj, wj) in y.iter_mut().zip(&ws[r * n..(r + 1) * n]) {
                    *yj += xr * wj.to_f32();
                }
            }
        }
        y
    };
    super::gemv::sum_of_bands(k, band, partial)
}

/// `[N, K]`: every output a dot product with one contiguous row; bands of
/// outputs per thread (several per thread, so stealing evens them out).
fn rows_dot(x: &[f32], w: &[f16], k: usize, n: usize, threads: usize) -> Vec<f32> {
    let mut y = vec![0.0f32; n];
    let band = n.div_ceil(threads * 4).max(64);
    let fill = |(bi, out): (usize, &mut [f32])| {
        let rows = &w[bi * band * k..(bi * band + out.len()) * k];
        if !kernel::dot_rows(out, x, rows) {
            for (o, row) in out.iter_mut().zip(rows.chunks_exact(k)) {
                *o = x.iter().zip(row).map(|(a, b)| a * b.to_f32()).sum();
            }
        }
    };
    if threads == 1 {
        y.chunks_mut(band).enumerate().for_each(fill);
    } else {
        y.par_chunks_mut(band).enumerate().for_each(fill);
    }
    y
}

/// The vector loops, where the CPU has AVX2, FMA and F16C; `None`/`false`
/// means "not here: use the plain loop".
mod kernel {
    use half::f16;

    fn available() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            static YES: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
            *YES.get_or_init(|| crate::simd::instruction_set() == "avx2+fma" && is_x86_feature_detected!("f16c"))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// `y += Σ_r xs[r] · ws[r·N ..][..N]`.
    pub(super) fn axpy_rows(y: &mut [f32], xs: &[f32], ws: &[f16]) -> bool {
        if !available() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were detected above; lengths are checked inside.
        unsafe {
            x86::axpy_rows(y, xs, ws)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!()
    }

    /// `out[j] = Σ_k x[k] · w[j·K + k]`.
    pub(super) fn dot_rows(out: &mut [f32], x: &[f32], w: &[f16]) -> bool {
        if !available() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were detected above; lengths are checked inside.
        unsafe {
            x86::dot_rows(out, x, w)
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!()
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use half::f16;
        use std::arch::x86_64::*;

        /// 8 halves at `p`, widened.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn load8(p: *const f16) -> __m256 {
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }

        /// Four rows per pass over `y` (so `y` is loaded and stored once per
        /// four rows of `W`), then the leftover rows one by one.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn axpy_rows(y: &mut [f32], xs: &[f32], ws: &[f16]) -> bool {
            let n = y.len();
            assert_eq!(ws.len(), xs.len() * n);
            let (yp, wp) = (y.as_mut_ptr(), ws.as_ptr());
            let mut i = 0;
            while i < xs.len() {
                let rows = 4.min(xs.len() - i);
                let mut xv = [_mm256_setzero_ps(); 4];
                for (v, &x) in xv.iter_mut().zip(&xs[i..i + rows]) {
                    *v = _mm256_set1_ps(x);
                }
                // SAFETY: row i + r < xs.len() and j + 8 ≤ n keep every access inside ws and y.
                unsafe {
                    let w0 = wp.add(i * n);
                    let mut j = 0;
                    if rows == 4 {
                        while j + 8 <= n {
                            let mut acc = _mm256_loadu_ps(yp.add(j));
                            acc = _mm256_fmadd_ps(xv[0], load8(w0.add(j)), acc);
                            acc = _mm256_fmadd_ps(xv[1], load8(w0.add(n + j)), acc);
                            acc = _mm256_fmadd_ps(xv[2], load8(w0.add(2 * n + j)), acc);
                            acc = _mm256_fmadd_ps(xv[3], load8(w0.add(3 * n + j)), acc);
                            _mm256_storeu_ps(yp.add(j), acc);
                            j += 8;
                        }
                    } else {
                        while j + 8 <= n {
                            let mut acc = _mm256_loadu_ps(yp.add(j));
                            for (r, x) in xv.iter().enumerate().take(rows) {
                                acc = _mm256_fmadd_ps(*x, load8(w0.add(r * n + j)), acc);
                            }
                            _mm256_storeu_ps(yp.add(j), acc);
                            j += 8;
                        }
                    }
                    for jj in j..n {
                        for r in 0..rows {
                            y[jj] += xs[i + r] * ws[(i + r) * n + jj].to_f32();
                        }
                    }
                }
                i += rows;
            }
            true
        }

        /// One dot product per row of `w`, four 8-lane sums each.
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn dot_rows(out: &mut [f32], x: &[f32], w: &[f16]) -> bool {
            let k = x.len();
            assert_eq!(w.len(), out.len() * k);
            let xp = x.as_ptr();
            for (o, row) in out.iter_mut().zip(w.chunks_exact(k.max(1))) {
                let wp = row.as_ptr();
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut p = 0;
                // SAFETY: p + 32 ≤ k (then p + 8 ≤ k) bounds every load.
                unsafe {
                    while p + 32 <= k {
                        for (u, a) in acc.iter_mut().enumerate() {
                            let q = p + 8 * u;
                            *a = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(q)), load8(wp.add(q)), *a);
                        }
                        p += 32;
                    }
                    while p + 8 <= k {
                        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(xp.add(p)), load8(wp.add(p)), acc[0]);
                        p += 8;
                    }
                }
                let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut lanes = [0.0f32; 8];
                // SAFETY: lanes holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                let mut s: f32 = lanes.iter().sum();
                for q in p..k {
                    s += x[q] * row[q].to_f32();
                }
                *o = s;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    #[test]
    fn both_layouts_match_the_naive_product() {
        let mut rng = Rng::new(8);
        for &(k, n) in &[(1, 1), (3, 1), (1, 5), (7, 9), (33, 17), (64, 64), (97, 300), (768, 257), (300, 2304)] {
            let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
            let w: Vec<f16> = (0..k * n).map(|_| f16::from_f32(rng.normal())).collect();
            // the same matrix, transposed: [N, K]
            let wt: Vec<f16> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let want = gemv_f16_naive(&x, &w, k, n, false);
            assert_eq!(want, gemv_f16_naive(&x, &wt, k, n, true), "the twin reads both layouts alike");
            for parallel in [false, true] {
                for (got, layout) in [
                    (gemv_f16(&x, &w, k, n, false, parallel), "[K, N]"),
                    (gemv_f16(&x, &wt, k, n, true, parallel), "[N, K]"),
                ] {
                    for j in 0..n {
                        let tol = 1e-5 * (1.0 + k as f32);
                        assert!(
                            (got[j] - want[j]).abs() < tol,
                            "{layout} k={k} n={n} j={j}: {} vs {}",
                            got[j],
                            want[j]
                        );
                    }
                }
            }
        }
    }
}
