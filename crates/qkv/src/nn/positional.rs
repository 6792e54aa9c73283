//! Where each token is. Attention itself is blind to order (it compares every
//! query with every key alike), so position must be added somewhere:
//!
//! - **learned**: a `[T, C]` table added to the token embeddings (GPT-2, BERT);
//! - **sinusoidal**: a fixed table of sines and cosines of geometric
//!   frequencies, added the same way ("Attention is all you need");
//! - **RoPE**: rotate each pair of query/key features by an angle proportional
//!   to the position, so `q·k` depends on the *distance* between tokens;
//! - **ALiBi**: add `-slope · distance` to the attention scores, a different
//!   slope per head;
//! - **none**: a causal mask alone already leaks position (NoPE).

use serde::{Deserialize, Serialize};

use qkv_tensor::{Result, Tensor};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    #[default]
    Learned,
    Sinusoidal,
    Rope,
    Alibi,
    None,
}

impl std::str::FromStr for Positions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        serde_json::from_value(serde_json::Value::String(s.to_lowercase()))
            .map_err(|_| format!("unknown positions {s:?}: use learned, sinusoidal, rope, alibi or none"))
    }
}

/// `PE[pos, 2i] = sin(pos / 10000^(2i/C))`, `PE[pos, 2i+1] = cos(…)`, rows
/// `start .. start + t`.
///
/// # Shapes
/// → `[t, C]`
pub fn sinusoidal_table(start: usize, t: usize, c: usize) -> Tensor {
    let mut data = vec![0.0f32; t * c];
    for p in 0..t {
        let pos = (start + p) as f64;
        for i in (0..c).step_by(2) {
            let angle = pos / 10000f64.powf(i as f64 / c as f64);
            data[p * c + i] = angle.sin() as f32;
            if i + 1 < c {
                data[p * c + i + 1] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(data, &[t, c]).expect("sizes match")
}

/// The sinusoids of [`sinusoidal_table`] with the sines in the first half of
/// the width and the cosines in the second — `PE[pos, i] = sin(pos /
/// 10000^(2i/C))`, `PE[pos, C/2 + i] = cos(…)` — the layout of Marian and
/// fairseq (the same features, permuted), rows `start .. start + t`.
///
/// # Shapes
/// → `[t, C]`
pub fn sinusoidal_halves_table(start: usize, t: usize, c: usize) -> Tensor {
    let half = c.div_ceil(2);
    let mut data = vec![0.0f32; t * c];
    for p in 0..t {
        let pos = (start + p) as f64;
        for i in 0..half {
            let angle = pos / 10000f64.powf(2.0 * i as f64 / c as f64);
            data[p * c + i] = angle.sin() as f32;
            if half + i < c {
                data[p * c + half + i] = angle.cos() as f32;
            }
        }
    }
    Tensor::from_vec(data, &[t, c]).expect("sizes match")
}

/// RoPE cos and sin tables for positions `start .. start + t`, each `[t, D]`,
/// in the "rotate half" layout of GPT-NeoX and LLaMA: feature `i` and
/// `i + D/2` form a pair rotated by `pos · base^(-2i/D)`.
pub fn rope_tables(start: usize, t: usize, d: usize, base: f32) -> (Tensor, Tensor) {
    let half = d / 2;
    let mut cos = vec![0.0f32; t * d];
    let mut sin = vec![0.0f32; t * d];
    for p in 0..t {
        for i in 0..half {
            let theta = (start + p) as f64 * (base as f64).powf(-2.0 * i as f64 / d as f64);
            for j in [i, i + half] {
                cos[p * d + j] = theta.cos() as f32;
                sin[p * d + j] = theta.sin() as f32;
            }
        }
    }
    (Tensor::from_vec(cos, &[t, d]).expect("sizes"), Tensor::from_vec(sin, &[t, d]).expect("sizes"))
}

/// Rotate queries or keys: `x·cos + rotate_half(x)·sin`, where
/// `rotate_half([x1, x2]) = [-x2, x1]` (halves of the head width).
///
/// # Shapes
/// x `[B, H, T, D]`, cos and sin `[T, D]` → `[B, H, T, D]`
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = x.dim(-1)?;
    let halves = x.split(-1, &[d / 2, d - d / 2])?;
    let rotated = Tensor::concat(&[&halves[1].neg(), &halves[0]], -1)?;
    x.mul(cos)?.add(&rotated.mul(sin)?)
}

/// ALiBi slopes for `n` heads: the geometric sequence `2^(-8/n), 2^(-16/n), …`;
/// for a head count that is not a power of two, the slopes of the next lower
/// power of two followed by every other slope of the next higher one (as in
/// the paper's reference code).
pub fn alibi_slopes(n: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f32> {
        let start = 2f64.powf(-8.0 / n as f64);
        (1..=n).map(|i| start.powi(i as i32) as f32).collect()
    }
    if n.is_power_of_two() {
        return pow2(n);
    }
    let lower = 1usize << (usize::BITS - 1 - n.leading_zeros());
    let mut s = pow2(lower);
    s.extend(pow2(2 * lower).into_iter().step_by(2).take(n - lower));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoidal_first_rows() {
        let t = sinusoidal_table(0, 2, 4).to_vec();
        assert_eq!(&t[..4], &[0.0, 1.0, 0.0, 1.0]);
        assert!((t[4] - 1f32.sin()).abs() < 1e-6 && (t[6] - (0.01f32).sin()).abs() < 1e-6);
    }

    #[test]
    fn alibi_slopes_match_the_paper() {
        assert_eq!(alibi_slopes(8), (1..=8).map(|i| 0.5f32.powi(i)).collect::<Vec<_>>());
        // 6 heads: 4 slopes of n=4 (2^-2, 2^-4, ...), then 2^-1, 2^-3 of n=8
        let s = alibi_slopes(6);
        assert_eq!(s.len(), 6);
        assert!((s[0] - 0.25).abs() < 1e-7 && (s[4] - 0.5).abs() < 1e-7 && (s[5] - 0.125).abs() < 1e-7);
    }

    #[test]
    fn rope_preserves_norms_and_depends_on_distance() {
        use qkv_tensor::Rng;
        let mut rng = Rng::new(0);
        let d = 8;
        let q = Tensor::randn(&[1, 1, 1, d], 1.0, &mut rng);
        let k = Tensor::randn(&[1, 1, 1, d], 1.0, &mut rng);
        let dot_at = |pq: usize, pk: usize| {
            let (cq, sq) = rope_tables(pq, 1, d, 10000.0);
            let (ck, sk) = rope_tables(pk, 1, d, 10000.0);
            let a = apply_rope(&q, &cq, &sq).unwrap().to_vec();
            let b = apply_rope(&k, &ck, &sk).unwrap().to_vec();
            a.iter().zip(&b).map(|(x, y)| x * y).sum::<f32>()
        };
        assert!((dot_at(3, 1) - dot_at(10, 8)).abs() < 1e-4, "same distance, same score");
        let (c, s) = rope_tables(5, 1, d, 10000.0);
        let r = apply_rope(&q, &c, &s).unwrap();
        let norm = |t: &Tensor| t.to_vec().iter().map(|v| v * v).sum::<f32>();
        assert!((norm(&r) - norm(&q)).abs() < 1e-4);
    }
}
