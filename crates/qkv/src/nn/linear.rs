//! A projection: `y = x · W + b`.

use qkv_tensor::{F16Matrix, Param, Result, Rng, Tensor, is_grad_enabled};

use super::{Module, NamedParam};

/// How a projection's weight is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: row `i` says how input feature `i` contributes to each
    /// output, so `y = x · W`. GPT-2's `Conv1D` layout.
    #[default]
    InOut,
    /// `[out, in]`: PyTorch's `nn.Linear` (BERT, ViT), so `y = x · Wᵀ` — the
    /// transpose is a strided view, not a copy, and checkpoints load as they are.
    OutIn,
}

/// `y = x · W + b`, tokens as rows. See [`WeightLayout`] for how `W` is stored.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
    pub layout: WeightLayout,
    /// A 16-bit copy of `weight` for generation ([`Linear::keep_f16_copy`]);
    /// used for one-row inputs without gradients. Not a parameter: training
    /// and saving see only `weight`.
    pub f16: Option<F16Matrix>,
}

impl Linear {
    /// Weights drawn from N(0, std²), bias zero, stored `[in, out]`.
    pub fn new(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_in, d_out], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::InOut,
            f16: None,
        }
    }

    /// The same, stored `[out, in]` like PyTorch's `nn.Linear`.
    pub fn new_out_in(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_out, d_in], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::OutIn,
            f16: None,
        }
    }

    pub fn d_in(&self) -> usize {
        match self.layout {
            WeightLayout::InOut => self.weight.shape()[0],
            WeightLayout::OutIn => self.weight.shape()[1],
        }
    }

    pub fn d_out(&self) -> usize {
        match self.layout {
            WeightLayout::InOut => self.weight.shape()[1],
            WeightLayout::OutIn => self.weight.shape()[0],
        }
    }

    /// The weight as `[in, out]` (a view when stored `[out, in]`).
    pub fn w_in_out(&self) -> Result<Tensor> {
        let w = self.weight.value();
        match self.layout {
            WeightLayout::InOut => Ok(w),
            WeightLayout::OutIn => w.t(),
        }
    }

    /// Keep a 16-bit copy of the weight, which one-row products without
    /// gradients (generating a token) then read instead: half the bytes per
    /// token, each weight rounded to f16 (relative error ≤ 2⁻¹¹).
    pub fn keep_f16_copy(&mut self) -> Result<()> {
        self.f16 = Some(F16Matrix::from_tensor(&self.weight.value())?);
        Ok(())
    }

    /// # Shapes
    /// x `[.., d_in]` → `[.., d_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let one_row = x.numel() == self.d_in();
        let y = match &self.f16 {
            Some(w) if one_row && !is_grad_enabled() => x.matmul_f16(w, self.layout == WeightLayout::OutIn)?,
            _ => x.matmul(&self.w_in_out()?)?,
        };
        match &self.bias {
            // in place over the fresh product when no gradient is recorded
            Some(b) => y.add_into(&b.value()),
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        out.push(NamedParam { name: format!("{prefix}weight"), param: self.weight.clone(), decay: true });
        if let Some(b) = &self.bias {
            out.push(NamedParam { name: format!("{prefix}bias"), param: b.clone(), decay: false });
        }
    }
}
