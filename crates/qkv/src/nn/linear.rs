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
    /// used for one-row inputs without gradients while the weight is
    /// unchanged. Not a parameter: training and saving see only `weight`.
    pub f16: Option<Derived<F16Matrix>>,
    /// The weight packed for the GEMM ([`Linear::keep_packed`]); used for
    /// inputs of several rows without gradients while the weight is unchanged.
    pub packed: Option<Derived<PackedMatrix>>,
}

/// A copy derived from weights for inference (packed for the GEMM, or
/// rounded to f16), with the versions of the weights it was made from
/// ([`Param::version`]): once training changes a weight, the copy is stale and
/// is no longer used.
#[derive(Clone, Debug)]
pub struct Derived<T> {
    pub copy: T,
    pub versions: Vec<u64>,
}

impl<T> Derived<T> {
    /// `copy`, made from `params` as they are now.
    pub fn new(copy: T, params: &[&Param]) -> Derived<T> {
        Derived { copy, versions: params.iter().map(|p| p.version()).collect() }
    }

    /// The copy, while `params` are as they were when it was made.
    pub fn fresh(&self, params: &[&Param]) -> Option<&T> {
        params.iter().map(|p| p.version()).eq(self.versions.iter().copied()).then_some(&self.copy)
    }
}

/// Pack `w` (`[in, out]`, maybe a view) made from `params`; `None` where the
/// CPU gains nothing from it.
pub fn pack(w: &Tensor, params: &[&Param]) -> Result<Option<Derived<PackedMatrix>>> {
    Ok(PackedMatrix::from_tensor(w)?.map(|m| Derived::new(m, params)))
}

/// The packed weight to use for `x`: there is one, `x` has several rows, no
/// gradient is recorded, and `params` are unchanged since it was packed.
pub fn packed_for<'a>(
    packed: &'a Option<Derived<PackedMatrix>>,
    x: &Tensor,
    params: &[&Param],
) -> Option<&'a PackedMatrix> {
    let p = packed.as_ref()?;
    let rows = x.numel() / p.copy.shape()[0].max(1);
    if rows > 1 && !is_grad_enabled() { p.fresh(params) } else { None }
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
        self.f16 = Some(Derived::new(F16Matrix::from_tensor(&self.weight.value())?, &[&self.weight]));
        Ok(())
    }

    /// Keep the weight packed into the GEMM's panels, which products of
    /// several rows without gradients (an encoder's inference) then read
    /// instead of packing the weight on every call. Costs a second copy of the
    /// weight; ignored once the weight changes.
    pub fn keep_packed(&mut self) -> Result<()> {
        self.packed = pack(&self.w_in_out()?, &[&self.weight])?;
        Ok(())
    }

    /// # Shapes
    /// x `[.., d_in]` → `[.., d_out]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let one_row = x.numel() == self.d_in();
        let f16 = self.f16.as_ref().filter(|_| one_row && !is_grad_enabled()).and_then(|w| w.fresh(&[&self.weight]));
        let y = match (f16, packed_for(&self.packed, x, &[&self.weight])) {
            (Some(w), _) => x.matmul_f16(w, self.layout == WeightLayout::OutIn)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use qkv_tensor::no_grad;

    #[test]
    fn derived_copies_are_used_only_while_the_weight_is_unchanged() {
        let mut rng = Rng::new(1);
        let mut l = Linear::new(64, 48, true, 1.0, &mut rng);
        l.keep_f16_copy().unwrap();
        l.keep_packed().unwrap();
        let one = Tensor::randn(&[1, 64], 1.0, &mut rng);
        let rows = Tensor::randn(&[5, 64], 1.0, &mut rng);
        let f32_product = |l: &Linear, x: &Tensor| no_grad(|| x.matmul(&l.w_in_out().unwrap()).unwrap());
        let forward = |l: &Linear, x: &Tensor| no_grad(|| l.forward(x).unwrap());
        // one row reads the f16 copy: the weights' rounding shows, a little
        let d = forward(&l, &one).max_abs_diff(&f32_product(&l, &one)).unwrap();
        assert!(d > 0.0 && d < 0.05, "f16 copy in use: {d}");
        // several rows read the packed copy, or (without AVX2) the weight: the same numbers
        assert!(forward(&l, &rows).max_abs_diff(&f32_product(&l, &rows)).unwrap() < 1e-4);
        // training changes the weight: both copies are stale and step aside
        l.weight.update(|w, _| w.iter_mut().for_each(|v| *v *= 0.5));
        assert_eq!(forward(&l, &one).max_abs_diff(&f32_product(&l, &one)).unwrap(), 0.0);
        assert_eq!(forward(&l, &rows).max_abs_diff(&f32_product(&l, &rows)).unwrap(), 0.0);
    }
}
