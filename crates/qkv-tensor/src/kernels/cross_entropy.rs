//! Cross-entropy fused with log-softmax: `loss_i = logsumexp(z_i) - z_i[t_i]`,
//! averaged over the rows whose target is not the ignore index. The fused
//! form never builds the probability matrix in forward, and backward rebuilds
//! each row's probabilities from the saved log-sum-exp:
//! `dz_i = (softmax(z_i) - onehot(t_i)) * g / count`.

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
/// equal to `ignore` (the caller checks).
pub fn cross_entropy_forward(logits: &[f32], v: usize, targets: &[u32], ignore: Option<u32>) -> CrossEntropyOut {
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
            total += (lse[r] - logits[r * v + t as usize]) as f64;
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
    lse: &[f32],
    scale: f32,
) -> Vec<f32> {
    let mut dz = crate::pool::take(logits.len());
    for_rows(&mut dz, v, logits, v, |r, dz, z| {
        let t = targets[r];
        if !counts(t, ignore) {
            dz.fill(0.0);
            return;
        }
        let l = lse[r];
        for (d, &z) in dz.iter_mut().zip(z) {
            *d = simd::exp_shifted(z - l) * scale;
        }
        dz[t as usize] -= scale;
    });
    dz
}

/// Reference: per-row log-softmax in f64, then the mean negative log-likelihood.
pub fn cross_entropy_naive(logits: &[f32], v: usize, targets: &[u32], ignore: Option<u32>) -> f32 {
    let mut total = 0.0;
    let mut count = 0;
    for (row, &t) in logits.chunks_exact(v).zip(targets) {
        if !counts(t, ignore) {
            continue;
        }
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        total += lse - row[t as usize] as f64;
        count += 1;
    }
    if count == 0 { 0.0 } else { (total / count as f64) as f32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn fast_matches_naive_with_ignored_rows() {
        let mut rng = Rng::new(11);
        for &(rows, v) in &[(1, 1), (5, 3), (64, 65), (33, 1000)] {
            let logits: Vec<f32> = (0..rows * v).map(|_| rng.normal() * 3.0).collect();
            let targets: Vec<u32> =
                (0..rows).map(|i| if i % 4 == 3 { 999_999 } else { rng.below(v as u64) as u32 }).collect();
            let out = cross_entropy_forward(&logits, v, &targets, Some(999_999));
            let naive = cross_entropy_naive(&logits, v, &targets, Some(999_999));
            assert!((out.loss - naive).abs() < 1e-5, "{} vs {naive}", out.loss);
            assert_eq!(out.count, targets.iter().filter(|&&t| t != 999_999).count());
        }
    }

    #[test]
    fn nothing_counted_gives_zero_loss_and_zero_grad() {
        let logits = [1.0, 2.0, 3.0];
        let out = cross_entropy_forward(&logits, 3, &[7], Some(7));
        assert_eq!((out.loss, out.count), (0.0, 0));
        let g = cross_entropy_backward(&logits, 3, &[7], Some(7), &out.lse, 1.0);
        assert_eq!(g, vec![0.0; 3]);
    }
}
