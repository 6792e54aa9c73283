//! The optimizer: what turns gradients into a step, in one place.
//!
//! - **AdamW** with decoupled weight decay (Loshchilov & Hutter), computed in
//!   the same order as PyTorch's `torch.optim.AdamW`, so runs can be compared
//!   step by step;
//! - the **learning-rate schedule**: linear warm-up, then cosine decay;
//! - **global-norm clipping** (as `torch.nn.utils.clip_grad_norm_`);
//! - **accumulation**: several micro-batches' gradients summed into one step,
//!   each loss scaled by 1/n so the sum is a mean;
//! - the **divergence guard**: a non-finite loss or gradient norm stops the
//!   step *before* any weight changes, so a blown-up step can never write NaN
//!   over good weights.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use qkv_tensor::Tensor;

use crate::error::{Error, Result};
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

/// AdamW's state: per parameter, the running first and second moments.
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

/// `√(Σ g²)` over every parameter's gradient (NaN or infinite when any
/// gradient is).
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

/// The shape of the learning rate after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decay {
    /// Half a cosine from the peak down to `min_lr` at the last step (GPT-2, BERT).
    #[default]
    Cosine,
    /// "Attention Is All You Need": the peak at the end of warm-up, then
    /// falling as `1/√step` — `lr·√(warmup/step)` — with `min_lr` as a floor.
    InverseSqrt,
}

/// Learning rate over training: linear warm-up, then a decay.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    pub lr: f32,
    pub min_lr: f32,
    pub warmup_steps: u64,
    pub max_steps: u64,
    pub decay: Decay,
}

impl LrSchedule {
    /// Rate for step `it` (0-based): `lr·(it+1)/(warmup+1)` while warming up;
    /// then, cosine: `min_lr + ½(1 + cos(π·progress))·(lr - min_lr)`, and
    /// `min_lr` past the last step; inverse square root:
    /// `max(min_lr, lr·√((warmup+1)/(it+1)))`.
    pub fn at(&self, it: u64) -> f32 {
        if self.decay == Decay::InverseSqrt && it >= self.warmup_steps {
            let r = ((self.warmup_steps + 1) as f64 / (it + 1) as f64).sqrt();
            return ((self.lr as f64 * r) as f32).max(self.min_lr);
        }
        if it < self.warmup_steps {
            return self.lr * (it + 1) as f32 / (self.warmup_steps + 1) as f32;
        }
        if it >= self.max_steps {
            return self.min_lr;
        }
        let span = (self.max_steps - self.warmup_steps).max(1) as f64;
        let progress = (it - self.warmup_steps) as f64 / span;
        let coeff = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        (self.min_lr as f64 + coeff * (self.lr - self.min_lr) as f64) as f32
    }
}

/// What one optimizer step did.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
}

/// A fixed set of parameters and everything that updates them.
pub struct Optimizer {
    pub params: Vec<NamedParam>,
    pub adamw: AdamW,
    pub schedule: LrSchedule,
    /// Global-norm clipping threshold; 0 turns clipping off.
    pub grad_clip: f32,
}

impl Optimizer {
    pub fn new(params: Vec<NamedParam>, adamw: AdamWConfig, schedule: LrSchedule, grad_clip: f32) -> Optimizer {
        Optimizer { adamw: AdamW::new(adamw, &params), params, schedule, grad_clip }
    }

    pub fn zero_grad(&self) {
        self.params.iter().for_each(|p| p.param.zero_grad());
    }

    /// Back-propagate one of `micro_batches` losses, scaled so that the
    /// summed gradients are the mean of theirs. Returns the loss's value.
    /// `step` (1-based, the step being taken) names it if it is not finite.
    pub fn accumulate(&self, loss: &Tensor, micro_batches: usize, step: u64) -> Result<f32> {
        let value = loss.item()?;
        if !value.is_finite() {
            return Err(self.diverged(step, "loss", value));
        }
        if micro_batches > 1 {
            loss.scale(1.0 / micro_batches as f32).backward()?
        } else {
            loss.backward()?
        }
        Ok(value)
    }

    /// Take step `step` (1-based) from the accumulated gradients: check them,
    /// clip them, update every parameter with the scheduled learning rate.
    /// A non-finite gradient norm is an error and nothing is updated.
    pub fn step(&mut self, step: u64) -> Result<Update> {
        let lr = self.schedule.at(step - 1);
        let grad_norm = grad_norm(&self.params);
        if !grad_norm.is_finite() {
            return Err(self.diverged(step, "gradient norm", grad_norm));
        }
        if self.grad_clip > 0.0 {
            let coef = self.grad_clip / (grad_norm + 1e-6);
            if coef < 1.0 {
                self.params.iter().for_each(|p| p.param.scale_grad(coef));
            }
        }
        self.adamw.update(&self.params, lr);
        Ok(Update { lr, grad_norm })
    }

    fn diverged(&self, step: u64, what: &'static str, value: f32) -> Error {
        Error::Diverged { step, what, value, lr: self.schedule.at(step.saturating_sub(1)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use qkv_tensor::Param;

    #[test]
    fn warms_up_then_decays_to_the_floor() {
        let s = LrSchedule { lr: 1.0, min_lr: 0.1, warmup_steps: 9, max_steps: 109, decay: Decay::Cosine };
        assert!((s.at(0) - 0.1).abs() < 1e-6);
        assert!((s.at(8) - 0.9).abs() < 1e-6);
        assert!((s.at(9) - 1.0).abs() < 1e-6);
        assert!((s.at(59) - 0.55).abs() < 1e-6);
        assert!((s.at(109) - 0.1).abs() < 1e-6);
        assert!(s.at(30) > s.at(31));
        // inverse square root: the same warm-up, the peak at its end, then 1/√step
        let s = LrSchedule { decay: Decay::InverseSqrt, min_lr: 0.0, ..s };
        assert!((s.at(8) - 0.9).abs() < 1e-6 && (s.at(9) - 1.0).abs() < 1e-6);
        assert!((s.at(39) - 0.5).abs() < 1e-6, "four times the warm-up: half the peak");
        assert!((s.at(999) - (10.0f32 / 1000.0).sqrt()).abs() < 1e-6);
        assert!((LrSchedule { min_lr: 0.2, ..s }.at(999) - 0.2).abs() < 1e-6, "min_lr is a floor");
    }

    #[test]
    fn a_non_finite_gradient_stops_the_step_before_any_weight_changes() {
        let w = Param::new(Tensor::from_vec(vec![1.0, 2.0], &[2]).unwrap());
        let params = vec![NamedParam { name: "w".into(), param: w.clone(), decay: true }];
        let schedule = LrSchedule { lr: 0.1, min_lr: 0.1, warmup_steps: 0, max_steps: 10, decay: Decay::Cosine };
        let mut opt = Optimizer::new(params, AdamWConfig::default(), schedule, 1.0);
        for bad in [f32::NAN, f32::INFINITY] {
            w.set_grad(Some(vec![bad, 1.0])).unwrap();
            let e = opt.step(3).unwrap_err().to_string();
            assert!(e.contains("step 3") && e.contains("gradient norm") && e.contains("--lr"), "{e}");
            assert_eq!(w.value().to_vec(), vec![1.0, 2.0], "the weights are untouched");
            assert_eq!(opt.adamw.step, 0, "nor is AdamW's state");
        }
        let loss = Tensor::from_vec(vec![f32::NAN], &[1]).unwrap().sum_all();
        let e = opt.accumulate(&loss, 1, 7).unwrap_err().to_string();
        assert!(e.contains("step 7") && e.contains("loss is NaN"), "{e}");
        // a finite step clips and updates
        w.set_grad(Some(vec![30.0, 40.0])).unwrap();
        let u = opt.step(1).unwrap();
        assert!((u.grad_norm - 50.0).abs() < 1e-4);
        assert!(w.value().to_vec()[0] < 1.0);
    }

    /// The update against its formula in f64, for a parameter split into
    /// parallel chunks (40 000 values: two chunks of 2^14 and a ragged one)
    /// and one that is not, with and without weight decay, over three steps
    /// (bias correction changes with each), in pools of 1 to 4 threads.
    #[test]
    fn adamw_matches_its_formula_in_f64_on_every_chunk() {
        qkv_tensor::threads::on_pools(&qkv_tensor::threads::TEST_POOLS, || {
            let mut rng = qkv_tensor::Rng::new(12);
            let sizes = [(40_000, true), (7, false)];
            let config = AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
            let start: Vec<Vec<f32>> = sizes.iter().map(|&(n, _)| (0..n).map(|_| rng.normal()).collect()).collect();
            let params: Vec<NamedParam> = sizes
                .iter()
                .zip(&start)
                .enumerate()
                .map(|(i, (&(n, decay), w))| NamedParam {
                    name: format!("p{i}"),
                    param: Param::new(Tensor::from_vec(w.clone(), &[n]).unwrap()),
                    decay,
                })
                .collect();
            let mut adamw = AdamW::new(config, &params);
            // the twin's state, in f64
            let mut w: Vec<Vec<f64>> = start.iter().map(|w| w.iter().map(|&x| x as f64).collect()).collect();
            let mut m: Vec<Vec<f64>> = sizes.iter().map(|&(n, _)| vec![0.0; n]).collect();
            let mut v = m.clone();
            for (t, lr) in [(1, 0.01f32), (2, 0.02), (3, 0.005)] {
                let grads: Vec<Vec<f32>> = sizes.iter().map(|&(n, _)| (0..n).map(|_| rng.normal()).collect()).collect();
                for (p, g) in params.iter().zip(&grads) {
                    p.param.set_grad(Some(g.clone())).unwrap();
                }
                adamw.update(&params, lr);
                let (b1, b2, lr) = (0.9f64, 0.95f64, lr as f64);
                for (i, &(_, decay)) in sizes.iter().enumerate() {
                    let got = params[i].param.value().to_vec();
                    for j in 0..got.len() {
                        let g = grads[i][j] as f64;
                        if decay {
                            w[i][j] *= 1.0 - lr * 0.1;
                        }
                        m[i][j] = b1 * m[i][j] + (1.0 - b1) * g;
                        v[i][j] = b2 * v[i][j] + (1.0 - b2) * g * g;
                        let m_hat = m[i][j] / (1.0 - b1.powi(t));
                        let v_hat = v[i][j] / (1.0 - b2.powi(t));
                        w[i][j] -= lr * m_hat / (v_hat.sqrt() + 1e-8);
                        let d = (got[j] as f64 - w[i][j]).abs();
                        assert!(d < 1e-6 * (1.0 + w[i][j].abs()), "p{i}[{j}] step {t}: {} vs {}", got[j], w[i][j]);
                        let (dm, dv) = ((adamw.m[i][j] as f64 - m[i][j]).abs(), (adamw.v[i][j] as f64 - v[i][j]).abs());
                        assert!(dm < 1e-6 && dv < 1e-6 * (1.0 + v[i][j]), "moments of p{i}[{j}] step {t}");
                    }
                }
            }
        });
    }
}
