//! Cross-entropy fused with log-softmax: `loss_i = logsumexp(z_i) - z_i[t_i]`,
//! averaged over the rows whose target is not the ignore index. The fused
//! form never builds the probability matrix in forward, and backward rebuilds
//! each row's probabilities from the saved log-sum-exp:
//! `dz_i = (softmax(z_i) - onehot(t_i)) * g / count`.
//!
//! With **label smoothing** ε (the original transformer's 0.1) the target is
//! not one-hot but `(1-ε)·onehot(t) + ε/V` on every class, as in PyTorch's
//! `CrossEntropyLoss(label_smoothing=ε)`:
//! `loss_i = logsumexp(z_i) - (1-ε)·z_i[t_i] - ε·mean(z_i)` and
//! `dz_i = softmax(z_i) - (1-ε)·onehot(t_i) - ε/V`.

use rayon::prelude::*;

use super::elementwise::for_rows;
use crate::simd;

pub struct CrossEntropyOut {
    /// Mean loss over counted rows (0 when no row counts).
    pub loss: f32,
    /// Rows that count (target != ignore index).
    pub count: usize,
    /// log-sum-exp of each row, saved for backward.
    pub lse: Vec<f32>,
}

fn counts(t: u32, ignore: Option<u32>) -> bool {
    Some(t) != ignore
}

/// `logits`: rows of length `v`; `targets`: one class per row, all `< v` or
/// equal to `ignore` (the caller checks); `smoothing`: ε in `[0, 1]`.
pub fn cross_entropy_forward(
    logits: &[f32],
    v: usize,
    targets: &[u32],
    ignore: Option<u32>,
    smoothing: f32,
) -> CrossEntropyOut {
    let rows = targets.len();
    let lse: Vec<f32> = logits
        .par_chunks(v)
        .with_min_len((4096 / v).max(1))
        .map(|row| {
            simd::dispatch(
                #[inline(always)]
                || {
                    let m = simd::max(row);
                    let mut acc = [0.0f32; 8];
                    let chunks = row.chunks_exact(8);
                    let rest = chunks.remainder();
                    for c in chunks {
                        for i in 0..8 {
                            acc[i] += simd::exp_shifted(c[i] - m);
                        }
                    }
                    let s = simd::sum(&acc) + rest.iter().map(|&x| simd::exp_shifted(x - m)).sum::<f32>();
                    m + s.ln()
                },
            )
        })
        .collect();
    let mut total = 0.0f64;
    let mut count = 0;
    for r in 0..rows {
        let t = targets[r];
        if counts(t, ignore) {
            let row = &logits[r * v..(r + 1) * v];
            let mut l = lse[r] as f64 - (1.0 - smoothing as f64) * row[t as usize] as f64;
            if smoothing > 0.0 {
                l -= smoothing as f64 * row.iter().map(|&z| z as f64).sum::<f64>() / v as f64;
            }
            total += l;
            count += 1;
        }
    }
    let loss = if count == 0 { 0.0 } else { (total / count as f64) as f32 };
    CrossEntropyOut { loss, count, lse }
}

/// Gradient of `scale * Σ_counted loss_i` with respect to the logits.
pub fn cross_entropy_backward(
    logits: &[f32],
    v: usize,
    targets: &[u32],
    ignore: Option<u32>,
    smoothing: f32,
    lse: &[f32],
    scale: f32,
) -> Vec<f32> {
    let mut dz = crate::pool::take(logits.len());
    let uniform = smoothing / v as f32 * scale;
    for_rows(&mut dz, v, logits, v, |r, dz, z| {
        let t = targets[r];
        if !counts(t, ignore) {
            dz.fill(0.0);
            return;
        }
        let l = lse[r];
        for (d, &z) in dz.iter_mut().zip(z) {
            *d = simd::exp_shifted(z - l) * scale - uniform;
        }
        dz[t as usize] -= (1.0 - smoothing) * scale;
    });
    dz
}

/// Reference: per-row log-softmax in f64, then the mean over counted rows of
/// the cross-entropy against the (smoothed) target distribution.
pub fn cross_entropy_naive(logits: &[f32], v: usize, targets: &[u32], ignore: Option<u32>, smoothing: f32) -> f32 {
    let mut total = 0.0;
    let mut count = 0;
    for (row, &t) in logits.chunks_exact(v).zip(targets) {
        if !counts(t, ignore) {
            continue;
        }
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        let eps = smoothing as f64;
        for (c, &z) in row.iter().enumerate() {
            let target = eps / v as f64 + if c == t as usize { 1.0 - eps } else { 0.0 };
            total += target * (lse - z as f64);
        }
        count += 1;
    }
    if count == 0 { 0.0 } else { (total / count as f64) as f32 }
}

/// Reference gradient, in f64: `scale · (softmax(z_i) - target_i)` on counted rows.
pub fn cross_entropy_backward_naive(
    logits: &[f32],
    v: usize,
    targets: &[u32],
    ignore: Option<u32>,
    smoothing: f32,
    scale: f32,
) -> Vec<f32> {
    let mut out = vec![0.0f32; logits.len()];
    for ((row, &t), dz) in logits.chunks_exact(v).zip(targets).zip(out.chunks_exact_mut(v)) {
        if !counts(t, ignore) {
            continue;
        }
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum = row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>();
        for (c, (&z, d)) in row.iter().zip(dz.iter_mut()).enumerate() {
            let target = smoothing as f64 / v as f64 + if c == t as usize { 1.0 - smoothing as f64 } else { 0.0 };
            *d = (scale as f64 * ((z as f64 - m).exp() / sum - target)) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_matches_naive_with_ignored_rows_and_smoothing() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, fast_matches_naive_with_ignored_rows_and_smoothing_here);
    }

    fn fast_matches_naive_with_ignored_rows_and_smoothing_here() {
        let mut rng = Rng::new(11);
        // rows × V below and above the parallel chunking (4096 values)
        for &(rows, v) in &[(1, 1), (5, 3), (64, 65), (33, 1000), (300, 8000)] {
            let logits: Vec<f32> = (0..rows * v).map(|_| rng.normal() * 3.0).collect();
            let targets: Vec<u32> =
                (0..rows).map(|i| if i % 4 == 3 { 999_999 } else { rng.below(v as u64) as u32 }).collect();
            for smoothing in [0.0, 0.1, 1.0] {
                let out = cross_entropy_forward(&logits, v, &targets, Some(999_999), smoothing);
                let naive = cross_entropy_naive(&logits, v, &targets, Some(999_999), smoothing);
                assert!(
                    (out.loss - naive).abs() < 1e-4 * (1.0 + naive.abs()),
                    "ε={smoothing}: {} vs {naive}",
                    out.loss
                );
                assert!(out.loss.is_finite());
                assert_eq!(out.count, targets.iter().filter(|&&t| t != 999_999).count());
                let g = cross_entropy_backward(&logits, v, &targets, Some(999_999), smoothing, &out.lse, 0.3);
                let want = cross_entropy_backward_naive(&logits, v, &targets, Some(999_999), smoothing, 0.3);
                let worst = g
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, |m, d| if d > m || d.is_nan() { d } else { m });
                assert!(worst < 1e-6, "ε={smoothing} {rows}×{v}: gradient differs by {worst}");
            }
        }
    }

    #[test]
    fn smoothed_gradient_is_softmax_minus_the_smoothed_target() {
        let logits = [0.5f32, -1.0, 2.0, 0.0];
        let out = cross_entropy_forward(&logits, 4, &[2], None, 0.2);
        let g = cross_entropy_backward(&logits, 4, &[2], None, 0.2, &out.lse, 1.0);
        let m = logits.iter().map(|&z| (z as f64).exp()).sum::<f64>();
        for (c, &gc) in g.iter().enumerate() {
            let target = 0.2 / 4.0 + if c == 2 { 0.8 } else { 0.0 };
            let want = (logits[c] as f64).exp() / m - target;
            assert!((gc as f64 - want).abs() < 1e-6, "class {c}: {gc} vs {want}");
        }
        assert!(g.iter().sum::<f32>().abs() < 1e-6, "the gradient of a row sums to 0");
    }

    #[test]
    fn nothing_counted_gives_zero_loss_and_zero_grad() {
        let logits = [1.0, 2.0, 3.0];
        let out = cross_entropy_forward(&logits, 3, &[7], Some(7), 0.1);
        assert_eq!((out.loss, out.count), (0.0, 0));
        let g = cross_entropy_backward(&logits, 3, &[7], Some(7), 0.1, &out.lse, 1.0);
        assert_eq!(g, vec![0.0; 3]);
    }
}
