//! Element-wise functions: the MLP's activations (GELU, ReLU, SiLU) and the
//! basic `exp`, `tanh`, `sigmoid`, `log`, `sqrt`. Each derivative sits beside
//! its function.

use crate::kernels::elementwise;
use crate::simd;
use crate::tensor::Tensor;

const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// 1 / sqrt(2π)
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// GELU, exact: `x · Φ(x)` with Φ the standard normal CDF.
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    x * simd::normal_cdf_and_gauss(x).0
}
/// `Φ(x) + x · φ(x)`, φ(x) = e^(-x²/2) / √(2π)
#[inline(always)]
pub fn gelu_grad(x: f32) -> f32 {
    let (phi, gauss) = simd::normal_cdf_and_gauss(x);
    phi + x * INV_SQRT_2PI * gauss
}

/// GELU, tanh approximation (GPT-2's): `½x(1 + tanh(√(2/π)(x + 0.044715x³)))`.
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + simd::tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)))
}
#[inline(always)]
pub fn gelu_tanh_grad(x: f32) -> f32 {
    let t = simd::tanh(SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x));
    0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044_715 * x * x)
}

/// SiLU (swish): `x · σ(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x * simd::sigmoid(x)
}
#[inline(always)]
pub fn silu_grad(x: f32) -> f32 {
    let s = simd::sigmoid(x);
    s * (1.0 + x * (1.0 - s))
}

/// A unary op whose derivative is computed from the input `x`.
fn unary_from_input(
    x: &Tensor,
    f: impl Fn(f32) -> f32 + Sync + Send,
    df: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Tensor {
    let y = elementwise::map(&x.data(), f);
    let xs = x.detach();
    Tensor::from_op(y, x.shape(), &[x], move |g| {
        let dx = elementwise::zip_map(&g.data(), &xs.data(), |g, x| g * df(x));
        Ok(vec![Some(Tensor::from_vec(dx, xs.shape())?)])
    })
}

/// A unary op whose derivative is computed from the output `y` (cheaper: no recomputation).
fn unary_from_output(
    x: &Tensor,
    f: impl Fn(f32) -> f32 + Sync + Send,
    df: impl Fn(f32) -> f32 + Sync + Send + 'static,
) -> Tensor {
    let y = elementwise::map(&x.data(), f);
    let shape = x.shape().to_vec();
    let ys = Tensor::from_vec(y.clone(), &shape).expect("same length");
    Tensor::from_op(y, x.shape(), &[x], move |g| {
        let dx = elementwise::zip_map(&g.data(), &ys.data(), |g, y| g * df(y));
        Ok(vec![Some(Tensor::from_vec(dx, &shape)?)])
    })
}

impl Tensor {
    /// Exact GELU (BERT, ViT, PyTorch's default `nn.GELU()`).
    pub fn gelu(&self) -> Tensor {
        unary_from_input(self, gelu, gelu_grad)
    }

    /// Tanh-approximated GELU (GPT-2, `nn.GELU(approximate="tanh")`).
    pub fn gelu_tanh(&self) -> Tensor {
        unary_from_input(self, gelu_tanh, gelu_tanh_grad)
    }

    pub fn relu(&self) -> Tensor {
        unary_from_input(self, |x| x.max(0.0), |x| if x > 0.0 { 1.0 } else { 0.0 })
    }

    pub fn silu(&self) -> Tensor {
        unary_from_input(self, silu, silu_grad)
    }

    pub fn tanh(&self) -> Tensor {
        unary_from_output(self, simd::tanh, |y| 1.0 - y * y)
    }

    pub fn sigmoid(&self) -> Tensor {
        unary_from_output(self, simd::sigmoid, |y| y * (1.0 - y))
    }

    pub fn exp(&self) -> Tensor {
        unary_from_output(self, simd::exp, |y| y)
    }

    /// Natural logarithm.
    pub fn log(&self) -> Tensor {
        unary_from_input(self, f32::ln, |x| 1.0 / x)
    }

    pub fn sqrt(&self) -> Tensor {
        unary_from_output(self, f32::sqrt, |y| 0.5 / y)
    }

    pub fn square(&self) -> Tensor {
        unary_from_input(self, |x| x * x, |x| 2.0 * x)
    }

    /// `ln(1 + eˣ)`, a smooth ReLU that stays positive (Mamba's step sizes);
    /// `x` itself above 20, as PyTorch's `softplus` does.
    pub fn softplus(&self) -> Tensor {
        unary_from_input(self, softplus, |x| if x > 20.0 { 1.0 } else { simd::sigmoid(x) })
    }
}

/// [`Tensor::softplus`] of one number.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    simd::softplus(x)
}
