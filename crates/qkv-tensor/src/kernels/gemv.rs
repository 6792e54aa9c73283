//! Matrix × vector: the product a GPT computes for every generated token
//! (batch 1, one new position), `y = s · x · B` with `x` of length K and `B`
//! a `K × N` weight.
//!
//! With one row there is nothing to reuse: each weight is read once and used
//! once, so the speed limit is memory bandwidth, not arithmetic. A general
//! GEMM packs `B` into panels first — an extra read and write of every
//! weight — so it runs at half that limit at best. These kernels stream `B`
//! exactly once, in memory order, split between threads in contiguous
//! pieces:
//!
//! * `B` stored row by row (`[K, N]`, qkv's `Linear` layout): each thread takes
//!   a band of rows and adds `x[k] · B[k, :]` into its own partial `y`; the
//!   partials are summed at the end.
//! * `B` stored column by column (`[N, K]` read transposed: the tied LM head,
//!   `logits = h · Wteᵀ`): each thread takes a band of columns, each one a dot
//!   product of two contiguous vectors.
//!
//! [`gemv_naive`] is the twin the tests hold them to.

use rayon::prelude::*;

use super::gemm::{Mat, RawMatMut};
use crate::simd;

/// Rows of `B` per step of the row-major kernel: four partial products share
/// one pass over the accumulator.
const ROWS: usize = 4;

/// `y = s · x · B` (or `y += …` when `accumulate`), `x` of length K, `B` a
/// `K × N` view with unit stride along rows (`cs == 1`) or along columns
/// (`rs == 1`), `y` written at `c.ptr + j·c.cs`. Returns false (writing
/// nothing) when `B` has neither layout; the caller then uses the GEMM.
///
/// # Safety
/// As [`super::gemm::matmul_raw`]: `c` must be valid for the `1 × N` row it
/// describes and touched by no one else during the call.
pub unsafe fn gemv(c: RawMatMut, x: &[f32], b: Mat<'_>, s: f32, accumulate: bool, parallel: bool) -> bool {
    let (k, n) = (b.rows, b.cols);
    debug_assert_eq!(x.len(), k);
    let threads = if parallel && k * n >= 1 << 15 { rayon::current_num_threads() } else { 1 };
    let y = if b.cs == 1 {
        rows_major(x, b, threads)
    } else if b.rs == 1 {
        cols_major(x, b, threads)
    } else {
        return false;
    };
    for (j, v) in y.into_iter().enumerate() {
        // SAFETY: j < N = c.cols, in range by the caller's contract.
        let dst = unsafe { &mut *c.ptr.add(j * c.cs) };
        *dst = if accumulate { *dst + s * v } else { s * v };
    }
    true
}

/// `x · B` for `B[k, j] = data[offset + k·rs + j]`: bands of rows, one partial
/// `y` per band.
fn rows_major(x: &[f32], b: Mat<'_>, threads: usize) -> Vec<f32> {
    let (k, n) = (b.rows, b.cols);
    let band = k.div_ceil(threads).next_multiple_of(ROWS);
    let partial = |start: usize| -> Vec<f32> {
        let end = (start + band).min(k);
        let mut y = vec![0.0f32; n];
        simd::dispatch(
            #[inline(always)]
            || {
                let row = |i: usize| &b.data[b.offset + i * b.rs..b.offset + i * b.rs + n];
                let mut i = start;
                while i + ROWS <= end {
                    let (x0, x1, x2, x3) = (x[i], x[i + 1], x[i + 2], x[i + 3]);
                    let (r0, r1, r2, r3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
                    // zipped iterators: no bounds checks, so the loop vectorises
                    for ((((yj, a), b), c), d) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                        *yj += x0 * a + x1 * b + x2 * c + x3 * d;
                    }
                    i += ROWS;
                }
                for (ii, &xi) in x.iter().enumerate().take(end).skip(i) {
                    for (yj, rj) in y.iter_mut().zip(row(ii)) {
                        *yj += xi * rj;
                    }
                }
            },
        );
        y
    };
    sum_of_bands(k, band, partial)
}

/// `Σ partial(start)` for the bands of `band` rows that start at 0, band,
/// 2·band, … below `k`: each band's partial `y` in parallel when there are
/// several, then summed. (Shared with the f16 kernel's `[K, N]` layout.)
pub(super) fn sum_of_bands(k: usize, band: usize, partial: impl Fn(usize) -> Vec<f32> + Sync + Send) -> Vec<f32> {
    let starts: Vec<usize> = (0..k).step_by(band.max(1)).collect();
    if starts.len() <= 1 {
        return partial(0);
    }
    let parts: Vec<Vec<f32>> = starts.into_par_iter().map(partial).collect();
    let mut parts = parts.into_iter();
    let mut y = parts.next().expect("two or more bands");
    for p in parts {
        y.iter_mut().zip(&p).for_each(|(a, b)| *a += b);
    }
    y
}

/// `x · B` for `B[k, j] = data[offset + k + j·cs]`: every output is a dot
/// product of `x` with a contiguous column; bands of columns per thread.
fn cols_major(x: &[f32], b: Mat<'_>, threads: usize) -> Vec<f32> {
    let (k, n) = (b.rows, b.cols);
    let mut y = vec![0.0f32; n];
    // several bands per thread, so an uneven share is evened out by stealing
    let band = n.div_ceil(threads * 4).max(64);
    let col = |j: usize| &b.data[b.offset + j * b.cs..b.offset + j * b.cs + k];
    // one column at a time: a single sequential stream per thread measured
    // faster here than four interleaved ones (which share each load of x)
    let fill = |(bi, out): (usize, &mut [f32])| {
        simd::dispatch(
            #[inline(always)]
            || {
                for (jj, o) in out.iter_mut().enumerate() {
                    *o = simd::dot(x, col(bi * band + jj));
                }
            },
        )
    };
    if threads == 1 {
        y.chunks_mut(band).enumerate().for_each(fill);
    } else {
        y.par_chunks_mut(band).enumerate().for_each(fill);
    }
    y
}

/// The plain definition, in f64: `y[j] = s · Σ_k x[k] · B[k, j]`.
pub fn gemv_naive(x: &[f32], b: Mat<'_>, s: f32) -> Vec<f32> {
    (0..b.cols).map(|j| (s as f64 * (0..b.rows).map(|k| x[k] as f64 * b.at(k, j) as f64).sum::<f64>()) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn run(x: &[f32], b: Mat<'_>, s: f32, y0: &[f32], accumulate: bool, parallel: bool) -> Vec<f32> {
        let mut y = y0.to_vec();
        let c = RawMatMut { ptr: y.as_mut_ptr(), rows: 1, cols: b.cols, rs: b.cols, cs: 1 };
        // SAFETY: y holds exactly the 1 × N row.
        assert!(unsafe { gemv(c, x, b, s, accumulate, parallel) });
        y
    }

    #[test]
    fn both_layouts_match_the_naive_product() {
        let mut rng = Rng::new(3);
        for &(k, n) in &[(1, 1), (3, 1), (1, 5), (7, 9), (64, 64), (97, 300), (768, 257), (300, 2304), (5, 4099)] {
            let x: Vec<f32> = (0..k).map(|_| rng.normal()).collect();
            let w: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
            let y0: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            // the same K × N matrix stored row by row, and (transposed) column by column
            let rows = Mat::rows(&w, k, n);
            let wt: Vec<f32> = (0..n * k).map(|i| w[(i % k) * n + i / k]).collect();
            let cols = Mat::rows(&wt, n, k).t();
            let want = gemv_naive(&x, rows, 0.5);
            for b in [rows, cols] {
                for parallel in [false, true] {
                    let got = run(&x, b, 0.5, &y0, false, parallel);
                    let acc = run(&x, b, 0.5, &y0, true, parallel);
                    for j in 0..n {
                        let tol = 1e-4 * (1.0 + (k as f32).sqrt());
                        assert!((got[j] - want[j]).abs() < tol, "k={k} n={n} j={j}: {} vs {}", got[j], want[j]);
                        assert!((acc[j] - (y0[j] + want[j])).abs() < tol, "accumulate k={k} n={n} j={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn views_with_offsets_and_padding_rows() {
        // B is the middle 3 × 4 block of a 5 × 6 buffer (row stride 6, offset 7)
        let buf: Vec<f32> = (0..30).map(|i| i as f32 * 0.1).collect();
        let b = Mat { data: &buf, offset: 7, rows: 3, cols: 4, rs: 6, cs: 1 };
        let x = [1.0, -2.0, 0.5];
        let got = run(&x, b, 1.0, &[0.0; 4], false, true);
        let want = gemv_naive(&x, b, 1.0);
        assert_eq!(got.len(), 4);
        for j in 0..4 {
            assert!((got[j] - want[j]).abs() < 1e-5);
        }
        // neither stride is 1: refused, nothing written
        let odd = Mat { data: &buf, offset: 0, rows: 3, cols: 4, rs: 2, cs: 7 };
        let mut y = [9.0f32; 4];
        let c = RawMatMut { ptr: y.as_mut_ptr(), rows: 1, cols: 4, rs: 4, cs: 1 };
        // SAFETY: y holds the 1 × 4 row.
        assert!(!unsafe { gemv(c, &x, odd, 1.0, false, false) });
        assert_eq!(y, [9.0; 4]);
    }
}
