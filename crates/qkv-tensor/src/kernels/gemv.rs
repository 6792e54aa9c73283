//! Matrix × vector: the product a GPT computes for every generated token
//! (batch 1, one new position), `y = s · x · B` with `x` of length K and `B`
//! a `K × N` weight.
//!
//! With one row there is nothing to reuse: each weight is read once and used
//! once, so the speed limit is memory bandwidth, not arithmetic. A general
//! GEMM packs `B` into panels first — an extra read and write of every
//! weight — so it runs at half that limit at best. These kernels stream `B`
//! exactly once, split between threads in contiguous pieces:
//!
//! * `B` stored row by row (`[K, N]`, qkv's `Linear` layout): each thread takes
//!   a band of rows and adds `x[k] · B[k, :]` into its own partial `y`; the
//!   partials are summed at the end.
//! * `B` stored column by column (`[N, K]` read transposed: the tied LM head,
//!   `logits = h · Wteᵀ`): each thread takes a band of columns, each one a dot
//!   product of two contiguous vectors.
//!
//! Either way a thread's piece is read as [`STREAMS`] sequential streams side
//! by side, from four far-apart places, rather than front to back. One core
//! keeps only so many reads in flight for one stream (its prefetcher runs a
//! limited distance ahead of it); four independent streams keep about four
//! times as many, and this machine's cores need that many to draw the memory
//! bandwidth that is there. Measured on GPT-2's shapes: 10–60 % more bytes per
//! second than one stream per thread (see `examples/gemv_speed.rs`), and
//! [`read_bandwidth`], the bound the benchmarks report, reads the same way.
//!
//! [`gemv_naive`] is the twin the tests hold them to.

use rayon::prelude::*;

use super::gemm::{Mat, RawMatMut};
use crate::simd;

/// Sequential streams each thread reads side by side (four rows, or four
/// columns, per step; one from each quarter of its piece).
pub const STREAMS: usize = 4;

/// Visits the items `0..len` of a thread's piece (its rows, or its columns)
/// in the order they are read: the piece is cut into [`STREAMS`] runs of `q`
/// (the last one shorter when `len` does not divide), `f` gets one item of
/// every run at a time, `[r, q + r, 2q + r, 3q + r]`, and then, one by one,
/// the items the shorter last run has no partner for. (Inlined, so that `f`
/// is compiled inside the caller's [`simd::dispatch`].)
#[inline(always)]
pub(super) fn in_streams(len: usize, mut f: impl FnMut(&[usize])) {
    let q = len.div_ceil(STREAMS);
    let full = len.saturating_sub((STREAMS - 1) * q);
    for r in 0..full {
        f(&[r, q + r, 2 * q + r, 3 * q + r]);
    }
    for s in 0..STREAMS - 1 {
        for i in s * q + full..((s + 1) * q).min(len) {
            f(&[i]);
        }
    }
}

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
/// `y` per band, each band read as four streams of rows.
fn rows_major(x: &[f32], b: Mat<'_>, threads: usize) -> Vec<f32> {
    let (k, n) = (b.rows, b.cols);
    let band = k.div_ceil(threads);
    let partial = |start: usize| -> Vec<f32> {
        let end = (start + band).min(k);
        let mut y = vec![0.0f32; n];
        simd::dispatch(
            #[inline(always)]
            || {
                let row = |i: usize| &b.data[b.offset + i * b.rs..b.offset + i * b.rs + n];
                in_streams(end - start, |group| {
                    if let Ok(i) = <[usize; 4]>::try_from(group) {
                        let i = i.map(|i| start + i);
                        let [x0, x1, x2, x3] = i.map(|i| x[i]);
                        let [r0, r1, r2, r3] = i.map(row);
                        // zipped iterators: no bounds checks, so the loop vectorises
                        for ((((yj, a), b), c), d) in y.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
                            *yj += x0 * a + x1 * b + x2 * c + x3 * d;
                        }
                    } else {
                        for &i in group {
                            let xi = x[start + i];
                            for (yj, rj) in y.iter_mut().zip(row(start + i)) {
                                *yj += xi * rj;
                            }
                        }
                    }
                });
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
/// product of `x` with a contiguous column; bands of columns per thread, each
/// read as four streams of columns.
fn cols_major(x: &[f32], b: Mat<'_>, threads: usize) -> Vec<f32> {
    let (k, n) = (b.rows, b.cols);
    let mut y = vec![0.0f32; n];
    // several bands per thread, so an uneven share is evened out by stealing
    let band = n.div_ceil(threads * 4).max(64);
    let col = |j: usize| &b.data[b.offset + j * b.cs..b.offset + j * b.cs + k];
    let avx2 = simd::instruction_set() == "avx2+fma";
    let fill = |(bi, out): (usize, &mut [f32])| {
        let first = bi * band;
        simd::dispatch(
            #[inline(always)]
            || {
                in_streams(out.len(), |group| {
                    if let Ok(j) = <[usize; 4]>::try_from(group) {
                        let dots = dot4(x, j.map(|j| col(first + j)), avx2);
                        for (j, d) in j.into_iter().zip(dots) {
                            out[j] = d;
                        }
                    } else {
                        for &j in group {
                            out[j] = simd::dot(x, col(first + j));
                        }
                    }
                });
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

/// Four dot products of `x` with the columns `c`, sharing each load of `x`
/// (`avx2`: the CPU has AVX2 and FMA).
#[inline(always)]
fn dot4(x: &[f32], c: [&[f32]; 4], avx2: bool) -> [f32; 4] {
    assert!(c.iter().all(|c| c.len() == x.len()), "dot4: columns as long as x");
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: the caller saw AVX2 and FMA; the lengths were checked above.
        return unsafe { x86::dot4(x, c) };
    }
    let _ = avx2;
    c.map(|c| simd::dot(x, c))
}

/// Written with intrinsics because LLVM vectorised the plain four-column loop
/// across the columns (4 lanes wide, with shuffles) instead of along them.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// `[x·c0, x·c1, x·c2, x·c3]`, one 8-lane sum per column.
    ///
    /// # Safety
    /// AVX2 and FMA present; every `c[u]` as long as `x`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn dot4(x: &[f32], c: [&[f32]; 4]) -> [f32; 4] {
        let k = x.len();
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut p = 0;
        while p + 8 <= k {
            // SAFETY: p + 8 ≤ k = every slice's length.
            unsafe {
                let xv = _mm256_loadu_ps(x.as_ptr().add(p));
                for (a, cu) in acc.iter_mut().zip(c) {
                    *a = _mm256_fmadd_ps(xv, _mm256_loadu_ps(cu.as_ptr().add(p)), *a);
                }
            }
            p += 8;
        }
        let mut out = [0.0f32; 4];
        for ((o, a), cu) in out.iter_mut().zip(acc).zip(c) {
            let mut lanes = [0.0f32; 8];
            // SAFETY: lanes holds 8 floats.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
            *o = lanes.iter().sum::<f32>() + x[p..].iter().zip(&cu[p..]).map(|(a, b)| a * b).sum::<f32>();
        }
        out
    }
}

/// Bytes per second that all threads together read from memory, the way the
/// kernels above read weights: each thread sums its contiguous share of a
/// 256 MiB buffer (far beyond the caches) as [`STREAMS`] streams side by
/// side; the best of 7 passes. The denominator of the bandwidth bound that
/// `qkv bench infer-gpt2` reports.
pub fn read_bandwidth() -> f64 {
    let buf = vec![1.0f32; 256 << 20 >> 2];
    let share = buf.len().div_ceil(rayon::current_num_threads());
    // four equal runs side by side, as `in_streams` reads a piece
    let sum_share = |c: &[f32]| -> f32 {
        let q = c.len() / STREAMS;
        simd::dispatch(
            #[inline(always)]
            || {
                let [a, b, d, e] = [0, 1, 2, 3].map(|s| &c[s * q..(s + 1) * q]);
                let mut acc = [0.0f32; 8];
                let runs = a.chunks_exact(8).zip(b.chunks_exact(8)).zip(d.chunks_exact(8).zip(e.chunks_exact(8)));
                for ((a, b), (d, e)) in runs {
                    for i in 0..8 {
                        acc[i] += (a[i] + b[i]) + (d[i] + e[i]);
                    }
                }
                acc.iter().sum()
            },
        )
    };
    let pass = || buf.par_chunks(share).map(sum_share).sum::<f32>();
    std::hint::black_box(pass());
    (0..7)
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(pass());
            (buf.len() * 4) as f64 / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
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

    /// Below and above the parallel threshold (K·N ≥ 2^15: from 768 × 257 on),
    /// in pools of 1 to 4 threads, which split the columns or K differently.
    #[test]
    fn both_layouts_match_the_naive_product() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, both_layouts_in_this_pool);
    }

    fn both_layouts_in_this_pool() {
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
                        assert!(
                            (got[j] - want[j]).abs() < tol,
                            "k={k} n={n} j={j} parallel={parallel}: {} vs {}",
                            got[j],
                            want[j]
                        );
                        assert!((acc[j] - (y0[j] + want[j])).abs() < tol, "accumulate k={k} n={n} j={j}");
                    }
                }
            }
        }
    }

    #[test]
    fn dot4_is_four_dots_on_every_path() {
        // lengths with and without a tail after the 8-wide steps
        for n in [0, 1, 7, 8, 9, 64, 771] {
            let x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let c: Vec<Vec<f32>> =
                (0..4).map(|u| (0..n).map(|i| ((i * (u + 2)) as f32 * 0.11).cos()).collect()).collect();
            for avx2 in [false, simd::instruction_set() == "avx2+fma"] {
                let got = dot4(&x, [&c[0], &c[1], &c[2], &c[3]], avx2);
                for u in 0..4 {
                    let want: f64 = x.iter().zip(&c[u]).map(|(a, b)| *a as f64 * *b as f64).sum();
                    let tol = 1e-5 * (1.0 + n as f64);
                    assert!((got[u] as f64 - want).abs() < tol, "n={n} u={u} avx2={avx2}: {} vs {want}", got[u]);
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
