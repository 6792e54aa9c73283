//! A projection: `y = x · W + b`.

use qkv_tensor::{Param, Result, Rng, Tensor};

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
}

impl Linear {
    /// Weights drawn from N(0, std²), bias zero, stored `[in, out]`.
    pub fn new(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_in, d_out], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::InOut,
        }
    }

    /// The same, stored `[out, in]` like PyTorch's `nn.Linear`.
    pub fn new_out_in(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_out, d_in], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::OutIn,
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

    /// # Shapes
    /// x `[.., d_in]` → `[.., d_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.w_in_out()?)?;
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
