//! `matmul`: the product over the last two axes, leading (batch) axes
//! broadcast. Operands may be views — a transpose (`w.t()`), a head of a fused
//! projection — and are read through their strides, never copied.
//!
//! Backward: `dA = dC · Bᵀ` and `dB = Aᵀ · dC`, again with transposed views.
//! When `B` is one matrix shared by a batch of rows (a projection `x · W` with
//! x `[B, T, C]`), the batch is folded into the rows, so `dW = xᵀ · dC` is one
//! big product instead of a sum of small ones.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::gemm::{Mat, MatMut, Threads, matmul};
use crate::layout::{Layout, broadcast_shape};
use crate::tensor::Tensor;

/// Matrix `idx` of a batched tensor as a [`Mat`] view (batch layout `bl`).
pub(crate) fn mat_of<'a>(t: &'a Tensor, batch_offset: usize) -> Mat<'a> {
    let r = t.rank();
    let (s, st) = (t.shape(), t.layout().strides());
    Mat {
        data: t.storage_slice(),
        offset: t.layout().offset() + batch_offset,
        rows: s[r - 2],
        cols: s[r - 1],
        rs: st[r - 2],
        cs: st[r - 1],
    }
}

impl Tensor {
    /// `[.., M, K] · [.., K, N] → [.., M, N]`.
    ///
    /// Without gradients, a product by a matrix whose buffer carries an
    /// inference copy of it reads the copy ([`crate::copies`]): the packed
    /// copy for several rows, the 16-bit one for one row.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.product(rhs, true)
    }

    /// [`Tensor::matmul`]; `copies`: whether it may read an inference copy
    /// of `rhs` (not in a backward pass, whose numbers are the f32 weights').
    fn product(&self, rhs: &Tensor, copies: bool) -> Result<Tensor> {
        let (a, b) = (self, rhs);
        if a.rank() < 2 || b.rank() < 2 {
            return Err(Error::mismatch("matmul", a.shape(), b.shape(), "both operands need at least 2 axes"));
        }
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k) = (a.shape()[ra - 2], a.shape()[ra - 1]);
        let (k2, n) = (b.shape()[rb - 2], b.shape()[rb - 1]);
        if k != k2 {
            return Err(Error::mismatch(
                "matmul",
                a.shape(),
                b.shape(),
                format!("inner sizes differ ({k} vs {k2}): [.., M, K] · [.., K, N]"),
            ));
        }
        let batch = broadcast_shape("matmul", &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
        let mut out_shape = batch.clone();
        out_shape.extend([m, n]);
        let out = match copies.then(|| crate::copies::chosen(a, b)).flatten() {
            Some(copy) => copy.product(a, k, n),
            None => plain_product(a, b, &batch)?,
        };

        let (ad, bd) = (a.detach(), b.detach());
        let (need_a, need_b) = (a.requires_grad(), b.requires_grad());
        Ok(Tensor::from_op(out, &out_shape, &[a, b], move |g| {
            let ga = if need_a { Some(g.product(&bd.t()?, false)?.sum_to(ad.shape())?) } else { None };
            let gb = if !need_b {
                None
            } else if bd.rank() == 2 && ad.rank() > 2 {
                let k = ad.shape()[ad.rank() - 1];
                let n = g.shape()[g.rank() - 1];
                let rows = ad.numel() / k.max(1);
                Some(ad.reshape(&[rows, k])?.t()?.product(&g.reshape(&[rows, n])?, false)?)
            } else {
                Some(ad.t()?.product(g, false)?.sum_to(bd.shape())?)
            };
            Ok(vec![ga, gb])
        }))
    }
}

/// The product from the f32 numbers: `a` `[.., M, K]` · `b` `[.., K, N]`
/// over the broadcast leading axes `batch`, row-major.
fn plain_product(a: &Tensor, b: &Tensor, batch: &[usize]) -> Result<Vec<f32>> {
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
    let nb: usize = batch.iter().product();
    let mut out = crate::pool::take(nb * m * n);

    // A stack of rows times one matrix: fold the batch into M when a's
    // layout allows it without a copy.
    let folded = if rb == 2 && ra > 2 { a.layout().reshape(&[nb * m, k]) } else { None };
    if let Some(l) = folded {
        let am = Mat {
            data: a.storage_slice(),
            offset: l.offset(),
            rows: nb * m,
            cols: k,
            rs: l.strides()[0],
            cs: l.strides()[1],
        };
        matmul(MatMut::rows(&mut out, nb * m, n), am, mat_of(b, 0), 1.0, false, Threads::All);
    } else {
        // Batch offsets of each operand (stride 0 along broadcast axes).
        let batch_offsets = |t: &Tensor| -> Result<Vec<usize>> {
            let r = t.rank();
            let l = Layout::new(t.shape()[..r - 2].to_vec(), t.layout().strides()[..r - 2].to_vec(), 0);
            Ok(l.broadcast_to(batch)?.indices().collect())
        };
        let (oa, ob) = (batch_offsets(a)?, batch_offsets(b)?);
        let small = m * n * k < 64 * 64 * 64;
        if nb > 1 && small {
            out.par_chunks_mut((m * n).max(1)).enumerate().for_each(|(i, c)| {
                matmul(MatMut::rows(c, m, n), mat_of(a, oa[i]), mat_of(b, ob[i]), 1.0, false, Threads::One)
            });
        } else {
            for (i, c) in out.chunks_mut((m * n).max(1)).enumerate().take(nb) {
                matmul(MatMut::rows(c, m, n), mat_of(a, oa[i]), mat_of(b, ob[i]), 1.0, false, Threads::All);
            }
        }
    }

    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Reference: explicit loops over a batched product with broadcasting.
    fn naive(a: &Tensor, b: &Tensor) -> Vec<f32> {
        let (ra, rb) = (a.rank(), b.rank());
        let (m, k, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 1]);
        let batch = broadcast_shape("t", &a.shape()[..ra - 2], &b.shape()[..rb - 2]).unwrap();
        let mut ashape = batch.clone();
        ashape.extend([m, k]);
        let mut bshape = batch.clone();
        bshape.extend([k, n]);
        let av = a.broadcast_to(&ashape).unwrap().to_vec();
        let bv = b.broadcast_to(&bshape).unwrap().to_vec();
        let nb: usize = batch.iter().product();
        let mut out = vec![0.0; nb * m * n];
        for z in 0..nb {
            for i in 0..m {
                for j in 0..n {
                    out[(z * m + i) * n + j] = (0..k).map(|p| av[(z * m + i) * k + p] * bv[(z * k + p) * n + j]).sum();
                }
            }
        }
        out
    }

    #[test]
    fn batched_broadcast_and_transposed_views() {
        let mut rng = Rng::new(3);
        let cases: &[(&[usize], &[usize])] = &[
            (&[3, 4], &[4, 5]),
            (&[2, 3, 4], &[4, 5]),
            (&[2, 3, 4], &[2, 4, 5]),
            (&[2, 1, 3, 4], &[5, 4, 2]),
            (&[1, 1], &[1, 1]),
        ];
        for (sa, sb) in cases {
            let a = Tensor::randn(sa, 1.0, &mut rng);
            let b = Tensor::randn(sb, 1.0, &mut rng);
            let c = a.matmul(&b).unwrap();
            for (x, y) in c.to_vec().iter().zip(naive(&a, &b)) {
                assert!((x - y).abs() < 1e-4, "{sa:?}·{sb:?}: {x} vs {y}");
            }
        }
        // A·Bᵀ through a view: no copy of B is made, same numbers as a packed transpose.
        let a = Tensor::randn(&[2, 7, 3], 1.0, &mut rng);
        let b = Tensor::randn(&[2, 5, 3], 1.0, &mut rng);
        let bt = b.t().unwrap();
        assert!(bt.shares_storage(&b));
        let c1 = a.matmul(&bt).unwrap();
        let c2 = a.matmul(&bt.contiguous()).unwrap();
        assert!(c1.max_abs_diff(&c2).unwrap() < 1e-5);
    }

    #[test]
    fn mismatched_inner_sizes_name_both_shapes() {
        let e = Tensor::zeros(&[2, 3]).matmul(&Tensor::zeros(&[4, 5])).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("[2, 3]") && msg.contains("[4, 5]"), "{msg}");
    }
}
