//! AdamW with decoupled weight decay (Loshchilov & Hutter), computed in the
//! same order as PyTorch's `torch.optim.AdamW` so runs can be compared
//! step by step, and global-norm gradient clipping.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::nn::NamedParam;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Decay of the running mean of gradients. Default 0.9.
    pub beta1: f32,
    /// Decay of the running mean of squared gradients. Default 0.95.
    pub beta2: f32,
    /// Added to the denominator for stability. Default 1e-8.
    pub eps: f32,
    /// Decoupled weight decay, applied only to params marked `decay`. Default 0.1.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

/// Optimizer state: per parameter, the running first and second moments.
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates taken so far (the `t` of bias correction).
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[NamedParam]) -> AdamW {
        AdamW {
            config,
            step: 0,
            m: params.iter().map(|p| vec![0.0; p.param.numel()]).collect(),
            v: params.iter().map(|p| vec![0.0; p.param.numel()]).collect(),
        }
    }

    /// One update of every parameter that has a gradient:
    /// `p ← p·(1 - lr·wd)`, `m ← β1·m + (1-β1)·g`, `v ← β2·v + (1-β2)·g²`,
    /// `p ← p - lr/(1-β1ᵗ) · m / (√v/√(1-β2ᵗ) + ε)`.
    pub fn update(&mut self, params: &[NamedParam], lr: f32) {
        self.step += 1;
        let AdamWConfig { beta1, beta2, eps, weight_decay } = self.config;
        let bc1 = 1.0 - beta1.powi(self.step as i32);
        let bc2_sqrt = (1.0 - beta2.powi(self.step as i32)).sqrt();
        let step_size = lr / bc1;
        for ((p, m), v) in params.iter().zip(&mut self.m).zip(&mut self.v) {
            let decay = if p.decay { 1.0 - lr * weight_decay } else { 1.0 };
            p.param.update(|w, g| {
                let Some(g) = g else { return };
                const CHUNK: usize = 1 << 14;
                w.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
                    .for_each(|((w, g), (m, v))| {
                        qkv_tensor::simd::dispatch(
                            #[inline(always)]
                            || {
                                for i in 0..w.len() {
                                    let gi = g[i];
                                    m[i] += (1.0 - beta1) * (gi - m[i]);
                                    v[i] = v[i] * beta2 + (1.0 - beta2) * gi * gi;
                                    let denom = v[i].sqrt() / bc2_sqrt + eps;
                                    w[i] = w[i] * decay - step_size * m[i] / denom;
                                }
                            },
                        )
                    });
            });
        }
    }
}

/// `√(Σ g²)` over every parameter's gradient.
pub fn grad_norm(params: &[NamedParam]) -> f32 {
    let sq: f64 = params
        .iter()
        .map(|p| p.param.with_grad(|g| g.map_or(0.0, |g| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>())))
        .sum();
    sq.sqrt() as f32
}

/// Scale all gradients down so their global norm is at most `max_norm`
/// (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
pub fn clip_grad_norm(params: &[NamedParam], max_norm: f32) -> f32 {
    let norm = grad_norm(params);
    let coef = max_norm / (norm + 1e-6);
    if coef < 1.0 {
        for p in params {
            p.param.scale_grad(coef);
        }
    }
    norm
}
