//! A projection: `y = x · W + b`.

use qkv_tensor::{F16Matrix, PackedMatrix, Param, Result, Rng, Tensor, is_grad_enabled};

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
    /// The weight packed for the GEMM ([`Linear::keep_packed`]); used for
    /// inputs of several rows without gradients while the weight is unchanged.
    pub packed: Option<Packed>,
}

/// A weight packed for inference, and the version of the weight it was
/// packed from ([`Param::version`]): once training changes the weight, the
/// copy is stale and no longer used.
#[derive(Clone, Debug)]
pub struct Packed {
    pub matrix: PackedMatrix,
    pub versions: Vec<u64>,
}

impl Packed {
    /// Pack `w` (`[in, out]`, maybe a view), made from `params` as they are now.
    /// `None` where the CPU gains nothing from it.
    pub fn new(w: &Tensor, params: &[&Param]) -> Result<Option<Packed>> {
        let versions = params.iter().map(|p| p.version()).collect();
        Ok(PackedMatrix::from_tensor(w)?.map(|matrix| Packed { matrix, versions }))
    }

    /// The packed weight, when `x` has several rows, no gradient is recorded,
    /// and `params` are still as they were when packed.
    pub fn usable(&self, x: &Tensor, params: &[&Param]) -> Option<&PackedMatrix> {
        let rows = x.numel() / self.matrix.shape()[0].max(1);
        let fresh = params.iter().map(|p| p.version()).eq(self.versions.iter().copied());
        (rows > 1 && fresh && !is_grad_enabled()).then_some(&self.matrix)
    }
}

impl Linear {
    /// Weights drawn from N(0, std²), bias zero, stored `[in, out]`.
    pub fn new(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_in, d_out], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::InOut,
            f16: None,
            packed: None,
        }
    }

    /// The same, stored `[out, in]` like PyTorch's `nn.Linear`.
    pub fn new_out_in(d_in: usize, d_out: usize, bias: bool, std: f32, rng: &mut Rng) -> Linear {
        Linear {
            weight: Param::new(Tensor::randn(&[d_out, d_in], std, rng)),
            bias: bias.then(|| Param::new(Tensor::zeros(&[d_out]))),
            layout: WeightLayout::OutIn,
            f16: None,
            packed: None,
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

    /// Keep the weight packed into the GEMM's panels, which products of
    /// several rows without gradients (an encoder's inference) then read
    /// instead of packing the weight on every call. Costs a second copy of the
    /// weight; ignored once the weight changes.
    pub fn keep_packed(&mut self) -> Result<()> {
        self.packed = Packed::new(&self.w_in_out()?, &[&self.weight])?;
        Ok(())
    }

    /// # Shapes
    /// x `[.., d_in]` → `[.., d_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let one_row = x.numel() == self.d_in();
        let packed = self.packed.as_ref().and_then(|p| p.usable(x, &[&self.weight]));
        let y = match (&self.f16, packed) {
            (Some(w), _) if one_row && !is_grad_enabled() => x.matmul_f16(w, self.layout == WeightLayout::OutIn)?,
            (_, Some(w)) => x.matmul_packed(w)?,
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
