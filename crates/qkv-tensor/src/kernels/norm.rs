//! LayerNorm and RMSNorm over the last axis, forward and backward fused: one
//! pass over a row computes its statistics, another writes the output, and
//! backward reuses the saved mean and 1/std instead of recomputing them.
//! Naive twins compute the same in f64, one formula at a time.

use rayon::prelude::*;

use super::elementwise::PAR_MIN;
use crate::simd::{self, dispatch};

/// Rows per parallel task in backward (each task keeps its own weight-gradient sums).
fn rows_per_task(rows: usize, n: usize) -> usize {
    if rows * n < PAR_MIN { rows.max(1) } else { rows.div_ceil(4 * rayon::current_num_threads()).max(1) }
}

pub struct NormOut {
    pub y: Vec<f32>,
    /// Per-row mean (LayerNorm only; empty for RMSNorm).
    pub mean: Vec<f32>,
    /// Per-row 1/sqrt(var + eps) (or 1/rms for RMSNorm).
    pub rstd: Vec<f32>,
}

pub struct NormGrads {
    pub dx: Vec<f32>,
    pub dw: Vec<f32>,
    /// Empty when there is no bias.
    pub db: Vec<f32>,
}

/// `y = (x - mean) / sqrt(var + eps) * w + b` over rows of length `n`.
pub fn layer_norm_forward(x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, eps: f32) -> NormOut {
    let rows = x.len() / n;
    let mut y = crate::pool::take(x.len());
    let mut mean = vec![0.0; rows];
    let mut rstd = vec![0.0; rows];
    let task = |y: &mut [f32], x: &[f32], mean: &mut [f32], rstd: &mut [f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (((y, x), m), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(mean).zip(rstd) {
                    let mu = simd::sum(x) / n as f32;
                    let mut acc = [0.0f32; 8];
                    let chunks = x.chunks_exact(8);
                    let rest = chunks.remainder();
                    for c in chunks {
                        for i in 0..8 {
                            let d = c[i] - mu;
                            acc[i] += d * d;
                        }
                    }
                    let var = (simd::sum(&acc) + rest.iter().map(|v| (v - mu) * (v - mu)).sum::<f32>()) / n as f32;
                    let rs = 1.0 / (var + eps).sqrt();
                    match b {
                        Some(b) => {
                            for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(w).zip(b) {
                                *y = (x - mu) * rs * w + b;
                            }
                        }
                        None => {
                            for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                                *y = (x - mu) * rs * w;
                            }
                        }
                    }
                    *m = mu;
                    *r = rs;
                }
            },
        )
    };
    let per = rows_per_task(rows, n);
    y.par_chunks_mut(per * n)
        .zip(x.par_chunks(per * n))
        .zip(mean.par_chunks_mut(per).zip(rstd.par_chunks_mut(per)))
        .for_each(|((y, x), (m, r))| task(y, x, m, r));
    NormOut { y, mean, rstd }
}

/// Gradients of LayerNorm. With `xhat = (x - mean) * rstd` and `g = dy * w`:
/// `dx = rstd * (g - mean(g) - xhat * mean(g * xhat))`, `dw = Σ dy * xhat`, `db = Σ dy`.
pub fn layer_norm_backward(
    x: &[f32],
    w: &[f32],
    has_bias: bool,
    mean: &[f32],
    rstd: &[f32],
    dy: &[f32],
    n: usize,
) -> NormGrads {
    let rows = x.len() / n;
    let per = rows_per_task(rows, n);
    let mut dx = crate::pool::take(x.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * n)
        .zip(x.par_chunks(per * n).zip(dy.par_chunks(per * n)))
        .zip(mean.par_chunks(per).zip(rstd.par_chunks(per)))
        .map(|((dx, (x, dy)), (mean, rstd))| {
            let mut dw = vec![0.0f32; n];
            let mut db = vec![0.0f32; if has_bias { n } else { 0 }];
            dispatch(
                #[inline(always)]
                || {
                    for ((((dx, x), dy), &mu), &rs) in
                        dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(dy.chunks_exact(n)).zip(mean).zip(rstd)
                    {
                        // two sums over the row: mean(g) and mean(g * xhat)
                        let (mut sg, mut sgx) = ([0.0f32; 8], [0.0f32; 8]);
                        let mut i = 0;
                        while i + 8 <= n {
                            for l in 0..8 {
                                let g = dy[i + l] * w[i + l];
                                sg[l] += g;
                                sgx[l] += g * (x[i + l] - mu) * rs;
                            }
                            i += 8;
                        }
                        let (mut g_mean, mut gx_mean) = (simd::sum(&sg), simd::sum(&sgx));
                        for j in i..n {
                            let g = dy[j] * w[j];
                            g_mean += g;
                            gx_mean += g * (x[j] - mu) * rs;
                        }
                        g_mean /= n as f32;
                        gx_mean /= n as f32;
                        for j in 0..n {
                            let xhat = (x[j] - mu) * rs;
                            dx[j] = rs * (dy[j] * w[j] - g_mean - xhat * gx_mean);
                            dw[j] += dy[j] * xhat;
                        }
                        if has_bias {
                            for (db, &d) in db.iter_mut().zip(dy) {
                                *db += d;
                            }
                        }
                    }
                },
            );
            (dw, db)
        })
        .collect();
    let (dw, db) = sum_partials(partials, n, has_bias);
    NormGrads { dx, dw, db }
}

/// `y = x / sqrt(mean(x²) + eps) * w` over rows of length `n`.
pub fn rms_norm_forward(x: &[f32], w: &[f32], n: usize, eps: f32) -> NormOut {
    let rows = x.len() / n;
    let mut y = crate::pool::take(x.len());
    let mut rstd = vec![0.0; rows];
    let per = rows_per_task(rows, n);
    y.par_chunks_mut(per * n).zip(x.par_chunks(per * n)).zip(rstd.par_chunks_mut(per)).for_each(|((y, x), rstd)| {
        dispatch(
            #[inline(always)]
            || {
                for ((y, x), r) in y.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(rstd) {
                    let rs = 1.0 / (simd::dot(x, x) / n as f32 + eps).sqrt();
                    for ((y, &x), &w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * rs * w;
                    }
                    *r = rs;
                }
            },
        )
    });
    NormOut { y, mean: Vec::new(), rstd }
}

/// Gradients of RMSNorm. With `xhat = x * rstd`, `g = dy * w`:
/// `dx = rstd * (g - xhat * mean(g * xhat))`, `dw = Σ dy * xhat`.
pub fn rms_norm_backward(x: &[f32], w: &[f32], rstd: &[f32], dy: &[f32], n: usize) -> NormGrads {
    let rows = x.len() / n;
    let per = rows_per_task(rows, n);
    let mut dx = crate::pool::take(x.len());
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx
        .par_chunks_mut(per * n)
        .zip(x.par_chunks(per * n).zip(dy.par_chunks(per * n)))
        .zip(rstd.par_chunks(per))
        .map(|((dx, (x, dy)), rstd)| {
            let mut dw = vec![0.0f32; n];
            dispatch(
                #[inline(always)]
                || {
                    for (((dx, x), dy), &rs) in
                        dx.chunks_exact_mut(n).zip(x.chunks_exact(n)).zip(dy.chunks_exact(n)).zip(rstd)
                    {
                        let mut s = 0.0f32;
                        for j in 0..n {
                            s += dy[j] * w[j] * x[j];
                        }
                        let gx_mean = s * rs / n as f32;
                        for j in 0..n {
                            let xhat = x[j] * rs;
                            dx[j] = rs * (dy[j] * w[j] - xhat * gx_mean);
                            dw[j] += dy[j] * xhat;
                        }
                    }
                },
            );
            (dw, Vec::new())
        })
        .collect();
    let (dw, _) = sum_partials(partials, n, false);
    NormGrads { dx, dw, db: Vec::new() }
}

fn sum_partials(partials: Vec<(Vec<f32>, Vec<f32>)>, n: usize, has_bias: bool) -> (Vec<f32>, Vec<f32>) {
    let mut dw = vec![0.0f32; n];
    let mut db = vec![0.0f32; if has_bias { n } else { 0 }];
    for (pw, pb) in partials {
        super::elementwise::add_assign(&mut dw, &pw);
        if has_bias {
            super::elementwise::add_assign(&mut db, &pb);
        }
    }
    (dw, db)
}

/// Reference LayerNorm forward in f64 (returns y only).
pub fn layer_norm_naive(x: &[f32], w: &[f32], b: Option<&[f32]>, n: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for j in 0..n {
            let bj = b.map_or(0.0, |b| b[j] as f64);
            out.push(((row[j] as f64 - mean) * rstd * w[j] as f64 + bj) as f32);
        }
    }
    out
}

/// Reference RMSNorm forward in f64.
pub fn rms_norm_naive(x: &[f32], w: &[f32], n: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (ms + eps as f64).sqrt();
        out.extend(row.iter().zip(w).map(|(&v, &w)| (v as f64 * rstd * w as f64) as f32));
    }
    out
}

/// Reference LayerNorm backward in f64, from the definition: `(dx, dw, db)`
/// with the statistics recomputed (`db` empty without a bias).
pub fn layer_norm_backward_naive(
    x: &[f32],
    w: &[f32],
    has_bias: bool,
    dy: &[f32],
    n: usize,
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut dx, mut dw, mut db) = (Vec::with_capacity(x.len()), vec![0.0f64; n], vec![0.0f64; n]);
    for (row, dyr) in x.chunks_exact(n).zip(dy.chunks_exact(n)) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let xhat: Vec<f64> = row.iter().map(|&v| (v as f64 - mean) * rstd).collect();
        let g: Vec<f64> = dyr.iter().zip(w).map(|(&d, &w)| d as f64 * w as f64).collect();
        let g_mean = g.iter().sum::<f64>() / n as f64;
        let gx_mean = g.iter().zip(&xhat).map(|(g, x)| g * x).sum::<f64>() / n as f64;
        for j in 0..n {
            dx.push((rstd * (g[j] - g_mean - xhat[j] * gx_mean)) as f32);
            dw[j] += dyr[j] as f64 * xhat[j];
            db[j] += dyr[j] as f64;
        }
    }
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    (dx, f(dw), if has_bias { f(db) } else { Vec::new() })
}

/// Reference RMSNorm backward in f64: `(dx, dw)`.
pub fn rms_norm_backward_naive(x: &[f32], w: &[f32], dy: &[f32], n: usize, eps: f32) -> (Vec<f32>, Vec<f32>) {
    let (mut dx, mut dw) = (Vec::with_capacity(x.len()), vec![0.0f64; n]);
    for (row, dyr) in x.chunks_exact(n).zip(dy.chunks_exact(n)) {
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / n as f64;
        let rstd = 1.0 / (ms + eps as f64).sqrt();
        let xhat: Vec<f64> = row.iter().map(|&v| v as f64 * rstd).collect();
        let gx_mean = (0..n).map(|j| dyr[j] as f64 * w[j] as f64 * xhat[j]).sum::<f64>() / n as f64;
        for j in 0..n {
            dx.push((rstd * (dyr[j] as f64 * w[j] as f64 - xhat[j] * gx_mean)) as f32);
            dw[j] += dyr[j] as f64 * xhat[j];
        }
    }
    (dx, dw.into_iter().map(|x| x as f32).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_forward_matches_naive() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, fast_forward_matches_naive_here);
    }

    fn fast_forward_matches_naive_here() {
        let mut rng = Rng::new(9);
        for &(rows, n) in &[(1, 1), (1, 5), (7, 13), (300, 256), (2000, 33)] {
            let x: Vec<f32> = (0..rows * n).map(|_| rng.normal() * 3.0 + 1.0).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let f = layer_norm_forward(&x, &w, Some(&b), n, 1e-5);
            for (a, e) in f.y.iter().zip(layer_norm_naive(&x, &w, Some(&b), n, 1e-5)) {
                assert!((a - e).abs() < 2e-4, "layernorm {a} vs {e}");
            }
            let f = rms_norm_forward(&x, &w, n, 1e-6);
            for (a, e) in f.y.iter().zip(rms_norm_naive(&x, &w, n, 1e-6)) {
                assert!((a - e).abs() < 2e-4, "rmsnorm {a} vs {e}");
            }
        }
    }

    /// Largest |a - b| / (1 + |b|), NaN as soon as either side is not finite.
    fn worst(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        crate::max_or_nan(
            a.iter().zip(b).map(|(&x, &y)| {
                if x.is_finite() && y.is_finite() { (x - y).abs() / (1.0 + y.abs()) } else { f32::NAN }
            }),
        )
    }

    /// Backward against its f64 twin, below and above PAR_MIN (32768 values:
    /// 300 × 256 and 2000 × 33 run in parallel tasks whose weight-gradient
    /// partial sums are added at the end).
    #[test]
    fn fast_backward_matches_naive_below_and_above_the_parallel_threshold() {
        crate::threads::on_pools(
            &crate::threads::TEST_POOLS,
            fast_backward_matches_naive_below_and_above_the_parallel_threshold_here,
        );
    }

    fn fast_backward_matches_naive_below_and_above_the_parallel_threshold_here() {
        let mut rng = Rng::new(10);
        for &(rows, n) in &[(1, 1), (1, 5), (7, 13), (300, 256), (2000, 33)] {
            let x: Vec<f32> = (0..rows * n).map(|_| rng.normal() * 3.0 + 1.0).collect();
            let w: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let dy: Vec<f32> = (0..rows * n).map(|_| rng.normal()).collect();
            let f = layer_norm_forward(&x, &w, Some(&b), n, 1e-5);
            let g = layer_norm_backward(&x, &w, true, &f.mean, &f.rstd, &dy, n);
            let (dx, dw, db) = layer_norm_backward_naive(&x, &w, true, &dy, n, 1e-5);
            // weight gradients sum over rows: their tolerance grows with the row count
            let tol = 1e-4 * (rows as f32).sqrt();
            for (what, got, want, tol) in [("dx", &g.dx, &dx, 2e-4), ("dw", &g.dw, &dw, tol), ("db", &g.db, &db, tol)] {
                let d = worst(got, want);
                assert!(d < tol, "layernorm {what} {rows}×{n}: {d}");
            }
            let f = rms_norm_forward(&x, &w, n, 1e-6);
            let g = rms_norm_backward(&x, &w, &f.rstd, &dy, n);
            let (dx, dw) = rms_norm_backward_naive(&x, &w, &dy, n, 1e-6);
            for (what, got, want, tol) in [("dx", &g.dx, &dx, 2e-4), ("dw", &g.dw, &dw, tol)] {
                let d = worst(got, want);
                assert!(d < tol, "rmsnorm {what} {rows}×{n}: {d}");
            }
            assert!(g.db.is_empty());
        }
    }
}
