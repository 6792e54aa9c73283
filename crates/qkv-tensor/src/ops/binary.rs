//! Element-wise arithmetic between two tensors, with NumPy broadcasting
//! (`[B, T, C] + [C]` adds a bias to every token). Backward sums the gradient
//! over the broadcast axes ([`Tensor::sum_to`]).

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::elementwise::{self, PAR_MIN};
use crate::layout::broadcast_shape;
use crate::tensor::Tensor;

/// True when a tensor shaped `row` is one row repeated along the leading axes
/// of `full` (`full` ends with `row`, which is not empty): a bias.
fn is_row_of(row: &[usize], full: &[usize]) -> bool {
    row.iter().product::<usize>() > 0 && full.ends_with(row)
}

/// `f(a, b)` over the broadcast shape of `a` and `b`.
fn broadcast_apply(
    op: &'static str,
    a: &Tensor,
    b: &Tensor,
    f: impl Fn(f32, f32) -> f32 + Sync + Send + Copy,
) -> Result<(Vec<f32>, Vec<usize>)> {
    if a.shape() == b.shape() {
        return Ok((elementwise::zip_map(&a.data(), &b.data(), f), a.shape().to_vec()));
    }
    let shape = broadcast_shape(op, a.shape(), b.shape())?;
    // Common case: one side is a row repeated along the leading axes (a bias).
    if a.shape() == shape.as_slice() && is_row_of(b.shape(), &shape) {
        return Ok((elementwise::zip_rows(&a.data(), &b.data(), f), shape));
    }
    if b.shape() == shape.as_slice() && is_row_of(a.shape(), &shape) {
        return Ok((elementwise::zip_rows(&b.data(), &a.data(), move |y, x| f(x, y)), shape));
    }
    let la = a.layout().broadcast_to(&shape)?;
    let lb = b.layout().broadcast_to(&shape)?;
    let (da, db) = (a.storage_slice(), b.storage_slice());
    let out = la.indices().zip(lb.indices()).map(|(i, j)| f(da[i], db[j])).collect();
    Ok((out, shape))
}

impl Tensor {
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        let (data, shape) = broadcast_apply("add", self, rhs, |a, b| a + b)?;
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(Tensor::from_op(data, &shape, &[self, rhs], move |g| Ok(vec![Some(g.sum_to(&sa)?), Some(g.sum_to(&sb)?)])))
    }

    /// `self + rhs`, written over `self`'s buffer when that changes nothing
    /// anyone can see: no gradient is being recorded, `self` is the only
    /// holder of its packed buffer, and `rhs` has `self`'s shape or is a row
    /// repeated along it (a bias). One pass over memory instead of reading
    /// two tensors into a third (in inference, every linear layer's bias and
    /// every residual connection). Otherwise the same as [`Tensor::add`].
    pub fn add_into(mut self, rhs: &Tensor) -> Result<Tensor> {
        let recorded = crate::autograd::is_grad_enabled() && (self.requires_grad() || rhs.requires_grad());
        let fits = rhs.shape() == self.shape() || is_row_of(rhs.shape(), self.shape());
        if recorded || !fits || !self.is_sole_packed_owner() {
            return self.add(rhs);
        }
        let r = rhs.data();
        let acc = self.make_mut();
        if r.len() == acc.len() {
            elementwise::add_assign(acc, &r);
        } else {
            elementwise::add_row_assign(acc, &r);
        }
        Ok(self)
    }

    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        let (data, shape) = broadcast_apply("sub", self, rhs, |a, b| a - b)?;
        let (sa, sb) = (self.shape().to_vec(), rhs.shape().to_vec());
        Ok(Tensor::from_op(data, &shape, &[self, rhs], move |g| {
            Ok(vec![Some(g.sum_to(&sa)?), Some(g.sum_to(&sb)?.scale(-1.0))])
        }))
    }

    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        let (data, shape) = broadcast_apply("mul", self, rhs, |a, b| a * b)?;
        let (a, b) = (self.detach(), rhs.detach());
        Ok(Tensor::from_op(data, &shape, &[self, rhs], move |g| {
            Ok(vec![Some(g.mul(&b)?.sum_to(a.shape())?), Some(g.mul(&a)?.sum_to(b.shape())?)])
        }))
    }

    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        let (data, shape) = broadcast_apply("div", self, rhs, |a, b| a / b)?;
        let (a, b) = (self.detach(), rhs.detach());
        Ok(Tensor::from_op(data, &shape, &[self, rhs], move |g| {
            let ga = g.div(&b)?.sum_to(a.shape())?;
            // d(a/b)/db = -a / b²
            let (gb, _) = broadcast_apply("div", &g.mul(&a)?, &b, |ga, b| -ga / (b * b))?;
            let gb = Tensor::from_vec(gb, g.shape())?.sum_to(b.shape())?;
            Ok(vec![Some(ga), Some(gb)])
        }))
    }

    /// `self * s` for a number `s`.
    pub fn scale(&self, s: f32) -> Tensor {
        let data = elementwise::map(&self.data(), move |x| x * s);
        Tensor::from_op(data, self.shape(), &[self], move |g| Ok(vec![Some(g.scale(s))]))
    }

    /// `self + s` for a number `s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        let data = elementwise::map(&self.data(), move |x| x + s);
        Tensor::from_op(data, self.shape(), &[self], |g| Ok(vec![Some(g.clone())]))
    }

    pub fn neg(&self) -> Tensor {
        self.scale(-1.0)
    }

    /// Sum a (broadcast) gradient down to `shape`: over the extra leading axes
    /// and over the axes where `shape` has size 1.
    pub fn sum_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let full = self.shape();
        if shape.len() > full.len() || broadcast_shape("sum_to", shape, full)? != full {
            return Err(Error::mismatch("sum_to", full, shape, "the target must broadcast to the source"));
        }
        let pad = full.len() - shape.len();
        let n: usize = shape.iter().product();
        let data = self.data();
        // Fast path: `shape` is a suffix of `full` (a bias): sum the rows.
        if full[pad..] == *shape {
            let rows = data.len() / n.max(1);
            let out = if data.len() >= PAR_MIN {
                // partial sums over fixed blocks, added in order: the same
                // result whatever thread computed which block
                let per = rows.div_ceil(rayon::current_num_threads() * 4).max(1);
                let partials: Vec<Vec<f32>> = data
                    .par_chunks(per * n)
                    .map(|block| {
                        let mut acc = vec![0.0f32; n];
                        for r in block.chunks_exact(n) {
                            elementwise::add_assign(&mut acc, r);
                        }
                        acc
                    })
                    .collect();
                let mut acc = vec![0.0f32; n];
                for p in &partials {
                    elementwise::add_assign(&mut acc, p);
                }
                acc
            } else {
                let mut acc = vec![0.0f32; n];
                for r in data.chunks_exact(n.max(1)) {
                    elementwise::add_assign(&mut acc, r);
                }
                acc
            };
            return Tensor::from_vec(out, shape);
        }
        // General case: walk the source; each element lands at its index with
        // the summed axes set to 0.
        let mut target = vec![1usize; full.len()];
        target[pad..].copy_from_slice(shape);
        let tl = crate::layout::Layout::contiguous(&target);
        let mut strides = tl.strides().to_vec();
        for (i, s) in strides.iter_mut().enumerate() {
            if target[i] == 1 {
                *s = 0;
            }
        }
        let walk = crate::layout::Layout::new(full.to_vec(), strides, 0);
        let mut out = crate::pool::take_zeroed(n);
        for (v, i) in data.iter().zip(walk.indices()) {
            out[i] += v;
        }
        Tensor::from_vec(out, shape)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_forms_agree() {
        let a = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        let row = Tensor::from_vec(vec![10.0, 20.0, 30.0], &[3]).unwrap();
        let col = Tensor::from_vec(vec![1.0, 2.0], &[2, 1]).unwrap();
        assert_eq!(a.add(&row).unwrap().to_vec(), vec![10.0, 21.0, 32.0, 13.0, 24.0, 35.0]);
        assert_eq!(row.sub(&a).unwrap().to_vec(), vec![10.0, 19.0, 28.0, 7.0, 16.0, 25.0]);
        assert_eq!(a.mul(&col).unwrap().to_vec(), vec![0.0, 1.0, 2.0, 6.0, 8.0, 10.0]);
        assert_eq!(a.sum_to(&[3]).unwrap().to_vec(), vec![3.0, 5.0, 7.0]);
        assert_eq!(a.sum_to(&[2, 1]).unwrap().to_vec(), vec![3.0, 12.0]);
        assert!(a.add(&Tensor::zeros(&[2])).is_err());
    }

    #[test]
    fn add_into_writes_in_place_only_when_no_one_can_see_it() {
        let mut rng = crate::Rng::new(4);
        let big = |rng: &mut crate::Rng| Tensor::randn(&[70, 600], 1.0, rng); // above PAR_MIN: the parallel loop
        for (rows, cols) in [(2, 3), (70, 600)] {
            let a = if rows == 2 { Tensor::randn(&[2, 3], 1.0, &mut rng) } else { big(&mut rng) };
            let bias = Tensor::randn(&[cols], 1.0, &mut rng);
            let same = Tensor::randn(&[rows, cols], 1.0, &mut rng);
            for rhs in [&bias, &same] {
                let want = a.add(rhs).unwrap().to_vec();
                // the only holder: the sum lands in a's own buffer
                let owned = Tensor::from_vec(a.to_vec(), a.shape()).unwrap();
                let ptr = owned.storage_slice().as_ptr();
                let got = owned.add_into(rhs).unwrap();
                assert_eq!(got.to_vec(), want);
                assert_eq!(got.storage_slice().as_ptr(), ptr, "written in place");
                // shared with a view: a new buffer, the other holder unchanged
                let shared = Tensor::from_vec(a.to_vec(), a.shape()).unwrap();
                let other = shared.reshape(&[rows * cols]).unwrap();
                let got = shared.add_into(rhs).unwrap();
                assert_eq!(got.to_vec(), want);
                assert_eq!(other.to_vec(), a.to_vec(), "the other holder still sees the old values");
            }
        }
        // a broadcast the in-place form cannot hold (the result is larger): as add
        let row = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3]).unwrap();
        let a = Tensor::from_vec((0..6).map(|i| i as f32).collect(), &[2, 3]).unwrap();
        assert_eq!(row.add_into(&a).unwrap().to_vec(), vec![1.0, 3.0, 5.0, 4.0, 6.0, 8.0]);
        assert!(Tensor::zeros(&[2, 3]).add_into(&Tensor::zeros(&[2])).is_err());
    }

    #[test]
    fn add_into_records_gradients_like_add() {
        let x = crate::Param::new(Tensor::from_vec(vec![1.0, 2.0, 3.0, 4.0], &[2, 2]).unwrap());
        let b = crate::Param::new(Tensor::from_vec(vec![0.5, -0.5], &[2]).unwrap());
        let y = x.value().scale(2.0).add_into(&b.value()).unwrap();
        assert_eq!(y.to_vec(), vec![2.5, 3.5, 6.5, 7.5]);
        y.sum_all().backward().unwrap();
        assert_eq!(x.grad().unwrap().to_vec(), vec![2.0; 4]);
        assert_eq!(b.grad().unwrap().to_vec(), vec![2.0, 2.0]);
    }

    /// `sum_to` against an f64 twin: a bias's gradient (rows summed; in
    /// parallel blocks from PAR_MIN values on, whose partial sums are added
    /// in order) and the general walk (a middle axis kept at 1), below and
    /// above the threshold, in pools of 1 to 4 threads.
    #[test]
    fn sum_to_matches_an_f64_twin_below_and_above_the_parallel_threshold() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, || {
            let mut rng = crate::Rng::new(14);
            for (rows, n) in [(1, 1), (3, 5), (PAR_MIN / 64 + 3, 64), (7, PAR_MIN + 5)] {
                let x = Tensor::randn(&[rows, n], 1.0, &mut rng);
                let xv = x.to_vec();
                let got = x.sum_to(&[n]).unwrap().to_vec();
                for (j, &g) in got.iter().enumerate() {
                    let want: f64 = (0..rows).map(|r| xv[r * n + j] as f64).sum();
                    let tol = 1e-5 * (1.0 + rows as f64).sqrt() * (1.0 + want.abs());
                    assert!((g as f64 - want).abs() < tol, "{rows}×{n} column {j}: {g} vs {want}");
                }
                // [rows, 2, n/…] summed to [1, 2, 1]: not a suffix, the general walk
                let x3 = Tensor::randn(&[rows, 2, n], 1.0, &mut rng);
                let v3 = x3.to_vec();
                let got = x3.sum_to(&[1, 2, 1]).unwrap().to_vec();
                for (k, &g) in got.iter().enumerate() {
                    let want: f64 = (0..rows)
                        .flat_map(|r| (0..n).map(move |j| (r, j)))
                        .map(|(r, j)| v3[(r * 2 + k) * n + j] as f64)
                        .sum();
                    let tol = 1e-5 * ((rows * n) as f64).sqrt() * (1.0 + want.abs());
                    assert!((g as f64 - want).abs() < tol, "{rows}×2×{n} middle {k}: {g} vs {want}");
                }
            }
        });
    }
}
