//! Shape ops. Most are views (no copy): reshape of a packed tensor, permute,
//! transpose, narrow, split. Their backward passes re-shape the gradient the
//! other way. `contiguous` and `concat` copy.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::tensor::Tensor;

/// The elements of a strided layout gathered row-major into a new buffer.
/// Copies whole rows when the last axis is packed, rows in parallel when large.
pub(crate) fn gather(layout: &Layout, buf: &[f32]) -> Vec<f32> {
    let n = layout.numel();
    if layout.is_contiguous() {
        return buf[layout.offset()..layout.offset() + n].to_vec();
    }
    let rank = layout.rank();
    let last = layout.shape()[rank - 1];
    if last == 0 || n == 0 {
        return Vec::new();
    }
    let mut out = crate::pool::take(n);
    if layout.strides()[rank - 1] == 1 {
        // start index of each row: the layout with the last axis dropped
        let rows =
            Layout::new(layout.shape()[..rank - 1].to_vec(), layout.strides()[..rank - 1].to_vec(), layout.offset());
        let starts: Vec<usize> = rows.indices().collect();
        let copy = |(o, &s): (&mut [f32], &usize)| o.copy_from_slice(&buf[s..s + last]);
        if n >= crate::kernels::elementwise::PAR_MIN {
            out.par_chunks_mut(last).zip(starts.par_iter()).for_each(copy);
        } else {
            out.chunks_mut(last).zip(starts.iter()).for_each(copy);
        }
    } else {
        for (o, i) in out.iter_mut().zip(layout.indices()) {
            *o = buf[i];
        }
    }
    out
}

impl Tensor {
    /// The same elements packed row-major (a copy only when not packed already).
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            return self.clone();
        }
        let data = gather(self.layout(), self.storage_slice());
        Tensor::from_op(data, self.shape(), &[self], |g| Ok(vec![Some(g.clone())]))
    }

    /// A new shape with the same number of elements. A view when possible.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::mismatch(
                "reshape",
                self.shape(),
                shape,
                format!("{} elements cannot take a shape of {n}", self.numel()),
            ));
        }
        let src_shape = self.shape().to_vec();
        match self.layout().reshape(shape) {
            Some(layout) => Ok(self.view_op(layout, move |g| Ok(vec![Some(g.reshape(&src_shape)?)]))),
            None => self.contiguous().reshape(shape),
        }
    }

    /// Insert an axis of size 1 at `axis`.
    pub fn unsqueeze(&self, axis: usize) -> Result<Tensor> {
        if axis > self.rank() {
            return Err(Error::AxisOutOfRange { op: "unsqueeze", axis, rank: self.rank() });
        }
        let mut s = self.shape().to_vec();
        s.insert(axis, 1);
        self.reshape(&s)
    }

    /// Reorder axes (a view). `permute(&[0, 2, 1, 3])`: `[B, T, H, D]` → `[B, H, T, D]`.
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor> {
        let layout = self.layout().permute(axes)?;
        let mut inverse = vec![0; axes.len()];
        for (i, &a) in axes.iter().enumerate() {
            inverse[a] = i;
        }
        Ok(self.view_op(layout, move |g| Ok(vec![Some(g.permute(&inverse)?)])))
    }

    /// Swap two axes (a view); negative axes count from the end.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let (a, b) = (self.axis("transpose", a)?, self.axis("transpose", b)?);
        let mut axes: Vec<usize> = (0..self.rank()).collect();
        axes.swap(a, b);
        self.permute(&axes)
    }

    /// The transpose of the last two axes (a view).
    pub fn t(&self) -> Result<Tensor> {
        if self.rank() < 2 {
            return Err(Error::bad_shape("t", self.shape(), "at least 2 axes"));
        }
        self.transpose(-2, -1)
    }

    /// Entries `start .. start + len` of `axis` (a view).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let axis = self.axis("narrow", axis)?;
        let layout = self.layout().narrow(axis, start, len)?;
        let src_shape = self.shape().to_vec();
        Ok(self.view_op(layout, move |g| Ok(vec![Some(pad_narrow(g, &src_shape, axis, start)?)])))
    }

    /// Cut `axis` into pieces of the given sizes (views). Splitting a fused
    /// QKV projection: `qkv.split(-1, &[c, c, c])`.
    pub fn split(&self, axis: isize, sizes: &[usize]) -> Result<Vec<Tensor>> {
        let a = self.axis("split", axis)?;
        let total: usize = sizes.iter().sum();
        if total != self.shape()[a] {
            return Err(Error::invalid(
                "split",
                format!(
                    "sizes {sizes:?} add up to {total}, but axis {a} of {:?} has {}",
                    self.shape(),
                    self.shape()[a]
                ),
            ));
        }
        let mut start = 0;
        sizes
            .iter()
            .map(|&len| {
                let t = self.narrow(a as isize, start, len);
                start += len;
                t
            })
            .collect()
    }

    /// Join tensors along `axis`; all other sizes must agree.
    pub fn concat(tensors: &[&Tensor], axis: isize) -> Result<Tensor> {
        let first = tensors.first().ok_or_else(|| Error::invalid("concat", "no tensors given"))?;
        let a = first.axis("concat", axis)?;
        for t in tensors {
            let same = t.rank() == first.rank()
                && t.shape().iter().zip(first.shape()).enumerate().all(|(i, (x, y))| i == a || x == y);
            if !same {
                return Err(Error::mismatch(
                    "concat",
                    first.shape(),
                    t.shape(),
                    format!("all sizes but axis {a} must agree"),
                ));
            }
        }
        let mut shape = first.shape().to_vec();
        shape[a] = tensors.iter().map(|t| t.shape()[a]).sum();
        let outer: usize = shape[..a].iter().product();
        let inner: usize = shape[a + 1..].iter().product();
        let mut out = crate::pool::take(shape.iter().product());
        let row = shape[a] * inner;
        let mut col = 0;
        let sizes: Vec<usize> = tensors.iter().map(|t| t.shape()[a]).collect();
        for t in tensors {
            let d = t.data();
            let w = t.shape()[a] * inner;
            for o in 0..outer {
                out[o * row + col..o * row + col + w].copy_from_slice(&d[o * w..(o + 1) * w]);
            }
            col += w;
        }
        Ok(Tensor::from_op(out, &shape, tensors, move |g| {
            let mut start = 0;
            sizes
                .iter()
                .map(|&len| {
                    let piece = g.narrow(a as isize, start, len)?.contiguous();
                    start += len;
                    Ok(Some(piece))
                })
                .collect()
        }))
    }

    /// Stretch size-1 axes (and add leading axes) to `shape`: a view with
    /// stride 0 along the stretched axes. Backward sums over them.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let layout = self.layout().broadcast_to(shape)?;
        let src_shape = self.shape().to_vec();
        Ok(self.view_op(layout, move |g| Ok(vec![Some(g.sum_to(&src_shape)?)])))
    }
}

/// Gradient of `narrow`: zeros of the source shape with `g` placed at `start` along `axis`.
fn pad_narrow(g: &Tensor, shape: &[usize], axis: usize, start: usize) -> Result<Tensor> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let len = g.shape()[axis];
    let gd = g.data();
    let mut out = crate::pool::take_zeroed(shape.iter().product());
    let (row, w) = (shape[axis] * inner, len * inner);
    for o in 0..outer {
        out[o * row + start * inner..o * row + start * inner + w].copy_from_slice(&gd[o * w..(o + 1) * w]);
    }
    Tensor::from_vec(out, shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], s: &[usize]) -> Tensor {
        Tensor::from_vec(v.to_vec(), s).unwrap()
    }

    #[test]
    fn views_share_the_buffer() {
        let x = t(&(0..24).map(|i| i as f32).collect::<Vec<_>>(), &[2, 3, 4]);
        let p = x.permute(&[2, 0, 1]).unwrap();
        assert!(p.shares_storage(&x));
        assert_eq!(p.shape(), &[4, 2, 3]);
        assert_eq!(p.to_vec()[..6], [0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
        let parts = x.split(-1, &[1, 3]).unwrap();
        assert!(parts[1].shares_storage(&x));
        assert_eq!(parts[0].to_vec(), vec![0.0, 4.0, 8.0, 12.0, 16.0, 20.0]);
        let c = Tensor::concat(&[&parts[0], &parts[1]], -1).unwrap();
        assert_eq!(c.to_vec(), x.to_vec());
    }

    #[test]
    fn bad_shapes_are_errors() {
        let x = Tensor::zeros(&[2, 3]);
        assert!(x.reshape(&[4]).is_err());
        assert!(x.permute(&[0, 0]).is_err());
        assert!(x.narrow(1, 2, 2).is_err());
        assert!(x.split(0, &[1, 2]).is_err());
        assert!(Tensor::concat(&[&x, &Tensor::zeros(&[3, 3])], 1).is_err());
        assert!(x.transpose(0, 2).is_err());
    }
}
