//! Reductions over one axis: sum, mean, max (and over everything).

use crate::error::Result;
use crate::simd;
use crate::tensor::Tensor;

/// `[outer, n, inner]` sizes around `axis`.
fn split_dims(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (shape[..axis].iter().product(), shape[axis], shape[axis + 1..].iter().product())
}

fn reduced_shape(shape: &[usize], axis: usize, keepdim: bool) -> Vec<usize> {
    let mut s = shape.to_vec();
    if keepdim {
        s[axis] = 1;
    } else {
        s.remove(axis);
    }
    s
}

impl Tensor {
    /// Sum over `axis` (negative counts from the end).
    pub fn sum(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("sum", axis)?;
        let (outer, n, inner) = split_dims(self.shape(), a);
        let x = self.data();
        let mut out = vec![0.0f32; outer * inner];
        for o in 0..outer {
            if inner == 1 {
                out[o] = simd::sum(&x[o * n..(o + 1) * n]);
            } else {
                let dst = &mut out[o * inner..(o + 1) * inner];
                for k in 0..n {
                    let src = &x[(o * n + k) * inner..(o * n + k + 1) * inner];
                    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                }
            }
        }
        let shape = reduced_shape(self.shape(), a, keepdim);
        let (src_shape, kept) = (self.shape().to_vec(), reduced_shape(self.shape(), a, true));
        Ok(Tensor::from_op(out, &shape, &[self], move |g| {
            Ok(vec![Some(g.reshape(&kept)?.broadcast_to(&src_shape)?.contiguous())])
        }))
    }

    pub fn mean(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let n = self.dim(axis)?;
        Ok(self.sum(axis, keepdim)?.scale(1.0 / n as f32))
    }

    /// Largest value over `axis`; the gradient goes to the first largest entry.
    pub fn max(&self, axis: isize, keepdim: bool) -> Result<Tensor> {
        let a = self.axis("max", axis)?;
        let (outer, n, inner) = split_dims(self.shape(), a);
        if n == 0 {
            return Err(crate::error::Error::invalid("max", "cannot take the max over an empty axis"));
        }
        let x = self.data();
        let mut out = vec![f32::NEG_INFINITY; outer * inner];
        let mut arg = vec![0usize; outer * inner];
        for o in 0..outer {
            for k in 0..n {
                for i in 0..inner {
                    let v = x[(o * n + k) * inner + i];
                    if v > out[o * inner + i] || k == 0 {
                        out[o * inner + i] = v;
                        arg[o * inner + i] = k;
                    }
                }
            }
        }
        let shape = reduced_shape(self.shape(), a, keepdim);
        let src_shape = self.shape().to_vec();
        Ok(Tensor::from_op(out, &shape, &[self], move |g| {
            let gd = g.data();
            let mut dx = vec![0.0f32; outer * n * inner];
            for o in 0..outer {
                for i in 0..inner {
                    dx[(o * n + arg[o * inner + i]) * inner + i] = gd[o * inner + i];
                }
            }
            Ok(vec![Some(Tensor::from_vec(dx, &src_shape)?)])
        }))
    }

    /// Sum of every element, as a scalar.
    pub fn sum_all(&self) -> Tensor {
        let s = simd::sum(&self.data());
        let shape = self.shape().to_vec();
        Tensor::from_op(vec![s], &[], &[self], move |g| Ok(vec![Some(Tensor::full(&shape, g.item()?))]))
    }

    /// Mean of every element, as a scalar.
    pub fn mean_all(&self) -> Tensor {
        let n = self.numel().max(1);
        self.sum_all().scale(1.0 / n as f32)
    }
}
