//! Finite-difference gradient checks.
//!
//! For a function `f` of some parameters, the check compares the gradient
//! from `backward()` with central differences `(L(x+h) - L(x-h)) / 2h` of the
//! scalar `L = Σ f(x) ∘ r`, where `r` is a fixed random tensor (so every
//! output element matters with a different weight). The forward pass runs in
//! f32, so tolerances are chosen for f32: step `h = 1e-2` (inputs are O(1)),
//! and an entry passes when `|analytic - numeric| <= atol + rtol·|numeric|`.
//! `L` is accumulated in f64 to keep the differences' round-off small.

use crate::autograd::{Param, no_grad};
use crate::error::Result;
use crate::rng::Rng;
use crate::tensor::Tensor;

pub struct GradCheck {
    pub step: f32,
    pub atol: f32,
    pub rtol: f32,
}

impl Default for GradCheck {
    fn default() -> Self {
        GradCheck { step: 1e-2, atol: 2e-3, rtol: 2e-2 }
    }
}

impl GradCheck {
    /// Check every entry of every input's gradient. Returns a description of
    /// the first mismatch, if any.
    pub fn run(
        &self,
        inputs: &[Tensor],
        f: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> Result<std::result::Result<(), String>> {
        let params: Vec<Param> = inputs.iter().map(|t| Param::new(t.contiguous().detach())).collect();
        let values: Vec<Tensor> = params.iter().map(|p| p.value()).collect();
        let out = f(&values)?;
        let r = Tensor::randn(out.shape(), 1.0, &mut Rng::new(1234));
        let loss = out.mul(&r)?.sum_all();
        loss.backward()?;
        let objective = |xs: &[Tensor]| -> Result<f64> {
            let o = no_grad(|| f(xs))?;
            Ok(o.data().iter().zip(r.data().iter()).map(|(a, b)| *a as f64 * *b as f64).sum())
        };
        for (pi, p) in params.iter().enumerate() {
            let analytic = p.grad().map(|g| g.to_vec()).unwrap_or_else(|| vec![0.0; p.numel()]);
            let base = p.value().to_vec();
            for i in 0..base.len() {
                let at = |delta: f32| -> Result<f64> {
                    let mut v = base.clone();
                    v[i] += delta;
                    let mut xs: Vec<Tensor> = params.iter().map(|q| q.value().detach()).collect();
                    xs[pi] = Tensor::from_vec(v, p.value().shape())?;
                    objective(&xs)
                };
                let numeric = ((at(self.step)? - at(-self.step)?) / (2.0 * self.step as f64)) as f32;
                let a = analytic[i];
                if (a - numeric).abs() > self.atol + self.rtol * numeric.abs() {
                    return Ok(Err(format!(
                        "input {pi}, element {i}: backward gives {a}, finite differences {numeric}"
                    )));
                }
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check must catch a wrong backward: here `2x` claims gradient `g`.
    #[test]
    fn catches_a_wrong_gradient() {
        let wrong_double = |xs: &[Tensor]| -> Result<Tensor> {
            let x = &xs[0];
            let y = x.data().iter().map(|v| 2.0 * v).collect();
            Ok(Tensor::from_op(y, x.shape(), &[x], |g| Ok(vec![Some(g.clone())])))
        };
        let x = Tensor::randn(&[3], 1.0, &mut Rng::new(0));
        let verdict = GradCheck::default().run(std::slice::from_ref(&x), wrong_double).unwrap();
        assert!(verdict.is_err());
        let right_double = |xs: &[Tensor]| Ok(xs[0].scale(2.0));
        assert!(GradCheck::default().run(&[x], right_double).unwrap().is_ok());
    }
}
