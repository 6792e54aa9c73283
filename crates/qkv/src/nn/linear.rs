//! A projection: `y = x · W + b`.

use qkv_tensor::{Param, Result, Rng, Tensor};

use super::{Module, NamedParam};

/// `y = x · W + b`, tokens as rows.
///
/// The weight is stored `[in, out]`: row `i` says how input feature `i`
/// contributes to each output. This is GPT-2's `Conv1D` layout; PyTorch's
/// `nn.Linear` stores `[out, in]`, and importers of such checkpoints say
/// where they transpose.
#[derive(Clone, Debug)]
pub struct Linear {
    pub weight: Param,
    pub bias: Option<Param>,
}

impl Linear {
    /// Weights drawn from N(0, std²), bias zero.
    pub fn new(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_in, d_out], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
        }
    }

    pub fn d_in(&self) -> usize {
        self.weight.shape()[0]
    }

    pub fn d_out(&self) -> usize {
        self.weight.shape()[1]
    }

    /// # Shapes
    /// x `[.., in]` → `[.., out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x.matmul(&self.weight.value())?;
        match &self.bias {
            Some(b) => y.add(&b.value()),
            None => Ok(y),
        }
    }
}

impl Module for Linear {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        out.push(NamedParam {
            name: format!("{prefix}weight"),
            param: self.weight.clone(),
            decay: true,
        });
        if let Some(b) = &self.bias {
            out.push(NamedParam {
                name: format!("{prefix}bias"),
                param: b.clone(),
                decay: false,
            });
        }
    }
}
