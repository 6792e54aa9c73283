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
//! Each thread reads its band as four streams side by side, as the f32
//! kernels do ([`super::gemv::in_streams`] says why and in which order).
//!
//! [`gemv_f16_naive`] (widen, then the plain sum in f64) is the twin.

use half::f16;
use rayon::prelude::*;

use super::gemv::in_streams;

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
    let band = k.div_ceil(threads);
    let partial = |start: usize| -> Vec<f32> {
        let end = (start + band).min(k);
        let mut y = vec![0.0f32; n];
        in_streams(end - start, |group| {
            let (mut xs, mut ws) = ([0.0f32; 4], [&w[..0]; 4]);
            for (u, &i) in group.iter().enumerate() {
                (xs[u], ws[u]) = (x[start + i], &w[(start + i) * n..(start + i + 1) * n]);
            }
            let (xs, ws) = (&xs[..group.len()], &ws[..group.len()]);
            if !kernel::axpy_rows(&mut y, xs, ws) {
                for (&xr, row) in xs.iter().zip(ws) {
                    for (yj, wj) in y.iter_mut().zip(*row) {
                        *yj += xr * wj.to_f32();
                    }
                }
            }
        });
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
        in_streams(out.len(), |group| {
            let mut ws = [&rows[..0]; 4];
            for (u, &j) in group.iter().enumerate() {
                ws[u] = &rows[j * k..(j + 1) * k];
            }
            let (ws, mut dots) = (&ws[..group.len()], [0.0f32; 4]);
            if !kernel::dot_rows(&mut dots[..group.len()], x, ws) {
                for (d, row) in dots.iter_mut().zip(ws) {
                    *d = x.iter().zip(*row).map(|(a, b)| a * b.to_f32()).sum();
                }
            }
            for (&j, d) in group.iter().zip(dots) {
                out[j] = d;
            }
        });
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

    /// `y += Σ_r xs[r] · ws[r]`: up to four rows, each as long as `y`.
    pub(super) fn axpy_rows(y: &mut [f32], xs: &[f32], ws: &[&[f16]]) -> bool {
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

    /// `out[r] = x · ws[r]`: up to four rows, each as long as `x`.
    pub(super) fn dot_rows(out: &mut [f32], x: &[f32], ws: &[&[f16]]) -> bool {
        if !available() {
            return false;
        }
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the features were detected above; lengths are checked inside.
        unsafe {
            x86::dot_rows(out, x, ws)
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
        /// # Safety
        /// `p .. p + 8` must be readable, and the CPU must have AVX2, FMA and F16C.
        unsafe fn load8(p: *const f16) -> __m256 {
            // SAFETY: the caller's contract: eight halves readable at p (an unaligned load).
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }

        /// Up to four rows per pass over `y` (so `y` is loaded and stored once
        /// per four rows of `W`).
        ///
        /// # Safety
        /// AVX2, FMA and F16C are present (lengths are asserted inside).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn axpy_rows(y: &mut [f32], xs: &[f32], ws: &[&[f16]]) -> bool {
            let (n, m) = (y.len(), ws.len());
            assert!(m <= 4 && xs.len() == m && ws.iter().all(|w| w.len() == n));
            let mut xv = [_mm256_setzero_ps(); 4];
            for (v, &x) in xv.iter_mut().zip(xs) {
                *v = _mm256_set1_ps(x);
            }
            let yp = y.as_mut_ptr();
            let mut j = 0;
            // SAFETY: j + 8 ≤ n keeps every access inside y and the rows.
            unsafe {
                while j + 8 <= n {
                    let mut acc = _mm256_loadu_ps(yp.add(j));
                    for (x, w) in xv.iter().zip(ws) {
                        acc = _mm256_fmadd_ps(*x, load8(w.as_ptr().add(j)), acc);
                    }
                    _mm256_storeu_ps(yp.add(j), acc);
                    j += 8;
                }
            }
            for (jj, yj) in y.iter_mut().enumerate().skip(j) {
                for (x, w) in xs.iter().zip(ws) {
                    *yj += x * w[jj].to_f32();
                }
            }
            true
        }

        /// Up to four dot products side by side, one 8-lane sum each.
        ///
        /// # Safety
        /// AVX2, FMA and F16C are present (lengths are asserted inside).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub(super) unsafe fn dot_rows(out: &mut [f32], x: &[f32], ws: &[&[f16]]) -> bool {
            let (k, m) = (x.len(), ws.len());
            assert!(m <= 4 && out.len() == m && ws.iter().all(|w| w.len() == k));
            let mut acc = [_mm256_setzero_ps(); 4];
            let mut p = 0;
            // SAFETY: p + 8 ≤ k bounds every load.
            unsafe {
                while p + 8 <= k {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(p));
                    for (a, w) in acc.iter_mut().zip(ws) {
                        *a = _mm256_fmadd_ps(xv, load8(w.as_ptr().add(p)), *a);
                    }
                    p += 8;
                }
            }
            for ((o, a), w) in out.iter_mut().zip(acc).zip(ws) {
                let mut lanes = [0.0f32; 8];
                // SAFETY: lanes holds 8 floats.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
                let tail: f32 = x[p..].iter().zip(&w[p..]).map(|(a, b)| a * b.to_f32()).sum();
                *o = lanes.iter().sum::<f32>() + tail;
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    /// Below and above the parallel threshold (K·N ≥ 2^15), in pools of 1 to 4 threads.
    #[test]
    fn both_layouts_match_the_naive_product() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, both_layouts_in_this_pool);
    }

    fn both_layouts_in_this_pool() {
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
                            "{layout} k={k} n={n} j={j} parallel={parallel}: {} vs {}",
                            got[j],
                            want[j]
                        );
                    }
                }
            }
        }
    }
}
