//! Softmax and log-softmax over the last axis (rows of length `n`).
//! Fast: one pass for the max, one for exp and sum, vectorised, rows in
//! parallel. Naive twins: textbook formulas in f64.

use super::elementwise::for_rows;
use crate::simd;

/// `y = exp(x - max) / sum(exp(x - max))` per row. A row of all `-inf`
/// (everything masked) gives zeros instead of NaN.
pub fn softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = crate::pool::take(x.len());
    for_rows(&mut y, n, x, n, |_, y, x| {
        let m = simd::max(x);
        if m == f32::NEG_INFINITY {
            y.fill(0.0);
            return;
        }
        for (y, &x) in y.iter_mut().zip(x) {
            *y = simd::exp_shifted(x - m);
        }
        let inv = 1.0 / simd::sum(y);
        for y in y.iter_mut() {
            *y *= inv;
        }
    });
    y
}

/// Given `y = softmax(x)` and `dy`: `dx = y * (dy - sum(dy * y))`.
pub fn softmax_rows_backward(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut dx = crate::pool::take(y.len());
    let both: Vec<f32> = interleave_rows(y, dy, n);
    for_rows(&mut dx, n, &both, 2 * n, |_, dx, yd| {
        let (y, dy) = yd.split_at(n);
        let s = simd::dot(y, dy);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = y * (dy - s);
        }
    });
    dx
}

/// `y = x - max - ln(sum(exp(x - max)))` per row (all `-inf` rows give `-inf`).
pub fn log_softmax_rows(x: &[f32], n: usize) -> Vec<f32> {
    let mut y = crate::pool::take(x.len());
    for_rows(&mut y, n, x, n, |_, y, x| {
        let m = simd::max(x);
        if m == f32::NEG_INFINITY {
            y.fill(f32::NEG_INFINITY);
            return;
        }
        for (y, &x) in y.iter_mut().zip(x) {
            *y = simd::exp_shifted(x - m);
        }
        let lse = m + simd::sum(y).ln();
        for (y, &x) in y.iter_mut().zip(x) {
            *y = x - lse;
        }
    });
    y
}

/// Given `y = log_softmax(x)` and `dy`: `dx = dy - exp(y) * sum(dy)`.
pub fn log_softmax_rows_backward(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut dx = crate::pool::take(y.len());
    let both: Vec<f32> = interleave_rows(y, dy, n);
    for_rows(&mut dx, n, &both, 2 * n, |_, dx, yd| {
        let (y, dy) = yd.split_at(n);
        let s = simd::sum(dy);
        for ((dx, &y), &dy) in dx.iter_mut().zip(y).zip(dy) {
            *dx = dy - simd::exp_shifted(y) * s;
        }
    });
    dx
}

/// Rows of `a` and `b` side by side, so one parallel loop sees both.
fn interleave_rows(a: &[f32], b: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() * 2);
    for (ra, rb) in a.chunks_exact(n).zip(b.chunks_exact(n)) {
        out.extend_from_slice(ra);
        out.extend_from_slice(rb);
    }
    out
}

/// Reference softmax in f64.
pub fn softmax_rows_naive(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        if m == f64::NEG_INFINITY {
            out.extend(std::iter::repeat_n(0.0, n));
            continue;
        }
        let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        out.extend(row.iter().map(|&v| ((v as f64 - m).exp() / s) as f32));
    }
    out
}

/// Reference log-softmax in f64.
pub fn log_softmax_rows_naive(x: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(n) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        out.extend(row.iter().map(|&v| (v as f64 - lse) as f32));
    }
    out
}

/// Reference softmax backward in f64: `dx_j = Σ_i dy_i · ∂y_i/∂x_j` with the
/// Jacobian `y_i (δ_ij - y_j)` written out.
pub fn softmax_rows_backward_naive(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(y.len());
    for (y, dy) in y.chunks_exact(n).zip(dy.chunks_exact(n)) {
        for j in 0..n {
            let dx: f64 =
                (0..n).map(|i| dy[i] as f64 * y[i] as f64 * (if i == j { 1.0 } else { 0.0 } - y[j] as f64)).sum();
            out.push(dx as f32);
        }
    }
    out
}

/// Reference log-softmax backward in f64: Jacobian `δ_ij - softmax_j`.
pub fn log_softmax_rows_backward_naive(y: &[f32], dy: &[f32], n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(y.len());
    for (y, dy) in y.chunks_exact(n).zip(dy.chunks_exact(n)) {
        for (j, &yj) in y.iter().enumerate() {
            let p = (yj as f64).exp();
            let dx: f64 = dy.iter().enumerate().map(|(i, &d)| d as f64 * (if i == j { 1.0 } else { 0.0 } - p)).sum();
            out.push(dx as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_matches_naive() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, fast_matches_naive_here);
    }

    fn fast_matches_naive_here() {
        let mut rng = Rng::new(5);
        for &(rows, n) in &[(1, 1), (3, 7), (64, 65), (600, 100)] {
            let x: Vec<f32> = (0..rows * n).map(|_| rng.normal() * 4.0).collect();
            for (a, b) in softmax_rows(&x, n).iter().zip(softmax_rows_naive(&x, n)) {
                assert!((a - b).abs() < 1e-6, "{a} vs {b}");
            }
            for (a, b) in log_softmax_rows(&x, n).iter().zip(log_softmax_rows_naive(&x, n)) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }

    /// Backward against the Jacobian written out in f64, below and above
    /// PAR_MIN (600 × 100 = 60000 values run as parallel tasks).
    #[test]
    fn fast_backward_matches_naive_below_and_above_the_parallel_threshold() {
        crate::threads::on_pools(
            &crate::threads::TEST_POOLS,
            fast_backward_matches_naive_below_and_above_the_parallel_threshold_here,
        );
    }

    fn fast_backward_matches_naive_below_and_above_the_parallel_threshold_here() {
        let mut rng = Rng::new(6);
        for &(rows, n) in &[(1, 1), (3, 7), (64, 65), (600, 100)] {
            let x: Vec<f32> = (0..rows * n).map(|_| rng.normal() * 4.0).collect();
            let dy: Vec<f32> = (0..rows * n).map(|_| rng.normal()).collect();
            let y = softmax_rows(&x, n);
            let d = crate::max_or_nan(
                softmax_rows_backward(&y, &dy, n)
                    .iter()
                    .zip(softmax_rows_backward_naive(&y, &dy, n))
                    .map(|(a, b)| (a - b).abs()),
            );
            assert!(d < 1e-5, "softmax backward {rows}×{n}: {d}");
            let y = log_softmax_rows(&x, n);
            let d = crate::max_or_nan(
                log_softmax_rows_backward(&y, &dy, n)
                    .iter()
                    .zip(log_softmax_rows_backward_naive(&y, &dy, n))
                    .map(|(a, b)| (a - b).abs() / (1.0 + b.abs())),
            );
            assert!(d < 1e-5, "log-softmax backward {rows}×{n}: {d}");
        }
    }

    #[test]
    fn fully_masked_row_is_zero_not_nan() {
        let x = [f32::NEG_INFINITY; 4];
        assert_eq!(softmax_rows(&x, 4), vec![0.0; 4]);
    }
}
