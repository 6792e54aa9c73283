//! Where a tensor's elements sit in its buffer: a shape, a stride per axis, and
//! an offset. Views (transpose, permute, narrow, split) only change the layout,
//! so they cost nothing; kernels that need rows packed together ask for
//! [`Layout::is_contiguous`] and copy when it is false.

use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    /// Elements to skip in the buffer to move one step along each axis.
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides: the last axis moves by one element.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        debug_assert_eq!(shape.len(), strides.len());
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// True when the elements are packed row-major from `offset` on, so the
    /// tensor is the slice `buf[offset .. offset + numel]`.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// One past the largest buffer index this layout touches.
    pub fn required_len(&self) -> usize {
        if self.numel() == 0 {
            return self.offset;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    /// Buffer index of each element, in row-major order of the logical shape.
    pub fn indices(&self) -> StridedIndex<'_> {
        StridedIndex::new(self)
    }

    pub fn check_axis(&self, op: &'static str, axis: usize) -> Result<()> {
        if axis >= self.rank() {
            return Err(Error::AxisOutOfRange { op, axis, rank: self.rank() });
        }
        Ok(())
    }

    /// Swap the order of axes: `permute(&[0, 2, 1, 3])` turns `[B, T, H, D]` into `[B, H, T, D]`.
    pub fn permute(&self, axes: &[usize]) -> Result<Layout> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if axes.len() != r || axes.iter().any(|&a| a >= r || std::mem::replace(&mut seen[a], true)) {
            return Err(Error::invalid(
                "permute",
                format!("{axes:?} is not a permutation of the {r} axes of {:?}", self.shape),
            ));
        }
        Ok(Layout {
            shape: axes.iter().map(|&a| self.shape[a]).collect(),
            strides: axes.iter().map(|&a| self.strides[a]).collect(),
            offset: self.offset,
        })
    }

    /// Keep `len` entries of `axis` starting at `start`.
    pub fn narrow(&self, axis: usize, start: usize, len: usize) -> Result<Layout> {
        self.check_axis("narrow", axis)?;
        if start + len > self.shape[axis] {
            return Err(Error::invalid(
                "narrow",
                format!(
                    "range {start}..{} is past the end of axis {axis} (size {}) of {:?}",
                    start + len,
                    self.shape[axis],
                    self.shape
                ),
            ));
        }
        let mut l = self.clone();
        l.offset += start * self.strides[axis];
        l.shape[axis] = len;
        Ok(l)
    }

    /// A new shape over the same elements, if it can be expressed with strides
    /// (always when contiguous; otherwise only when the merged or split axes are
    /// themselves packed). `None` means the caller must copy first.
    pub fn reshape(&self, shape: &[usize]) -> Option<Layout> {
        if self.is_contiguous() {
            return Some(Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: self.offset });
        }
        // Split/merge axes group by group, as PyTorch's `view` does.
        let old: Vec<(usize, usize)> =
            self.shape.iter().zip(&self.strides).filter(|(d, _)| **d != 1).map(|(&d, &s)| (d, s)).collect();
        let mut strides = vec![0; shape.len()];
        let (mut oi, mut ni) = (0, 0);
        while ni < shape.len() || oi < old.len() {
            // skip unit axes of the new shape
            if ni < shape.len() && shape[ni] == 1 {
                strides[ni] = 1;
                ni += 1;
                continue;
            }
            if oi >= old.len() || ni >= shape.len() {
                return None;
            }
            // gather old axes until their product equals the product of new axes
            let (mut op, mut np) = (old[oi].0, shape[ni]);
            let (o0, n0) = (oi, ni);
            oi += 1;
            ni += 1;
            while op != np {
                if op < np {
                    if oi >= old.len() {
                        return None;
                    }
                    op *= old[oi].0;
                    oi += 1;
                } else {
                    while ni < shape.len() && shape[ni] == 1 {
                        strides[ni] = 1;
                        ni += 1;
                    }
                    if ni >= shape.len() {
                        return None;
                    }
                    np *= shape[ni];
                    ni += 1;
                }
            }
            // the old group must be packed: stride[i] == stride[i+1] * dim[i+1]
            for j in o0..oi - 1 {
                if old[j].1 != old[j + 1].1 * old[j + 1].0 {
                    return None;
                }
            }
            let mut s = old[oi - 1].1;
            for j in (n0..ni).rev() {
                strides[j] = s;
                s *= shape[j];
            }
        }
        Some(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// Stretch axes of size 1 (or new leading axes) to `shape` with stride 0.
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Layout> {
        if shape.len() < self.rank() {
            return Err(Error::mismatch("broadcast", &self.shape, shape, "cannot broadcast to fewer axes"));
        }
        let pad = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[pad + i]);
            if d == t {
                strides[pad + i] = self.strides[i];
            } else if d != 1 {
                return Err(Error::mismatch(
                    "broadcast",
                    &self.shape,
                    shape,
                    format!("axis {i} has size {d}, which is neither 1 nor {t}"),
                ));
            }
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }
}

/// The shape two operands broadcast to (NumPy rules: align from the right,
/// sizes equal or one of them 1).
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::mismatch(
                op,
                a,
                b,
                format!("sizes {da} and {db} cannot broadcast (one must be 1 or both equal)"),
            ));
        };
    }
    Ok(out)
}

/// Iterator over buffer indices of a strided layout, last axis fastest.
pub struct StridedIndex<'a> {
    layout: &'a Layout,
    index: Vec<usize>,
    next: Option<usize>,
}

impl<'a> StridedIndex<'a> {
    fn new(layout: &'a Layout) -> Self {
        let next = if layout.numel() == 0 { None } else { Some(layout.offset) };
        StridedIndex { layout, index: vec![0; layout.rank()], next }
    }
}

impl Iterator for StridedIndex<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        let current = self.next?;
        let mut pos = current;
        let mut done = true;
        for ax in (0..self.layout.rank()).rev() {
            self.index[ax] += 1;
            if self.index[ax] < self.layout.shape[ax] {
                pos += self.layout.strides[ax];
                done = false;
                break;
            }
            pos -= (self.layout.shape[ax] - 1) * self.layout.strides[ax];
            self.index[ax] = 0;
        }
        self.next = if done { None } else { Some(pos) };
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_of_transposed_view_needs_copy_only_when_axes_mix() {
        let l = Layout::contiguous(&[2, 3, 4]);
        let t = l.permute(&[1, 0, 2]).unwrap(); // [3, 2, 4], strides [4, 12, 1]
        assert!(!t.is_contiguous());
        // merging the two permuted axes is impossible without a copy
        assert!(t.reshape(&[6, 4]).is_none());
        // splitting the last axis is fine
        let s = t.reshape(&[3, 2, 2, 2]).unwrap();
        assert_eq!(s.strides(), &[4, 12, 2, 1]);
        let idx: Vec<usize> = t.indices().collect();
        let idx2: Vec<usize> = s.indices().collect();
        assert_eq!(idx, idx2);
    }

    #[test]
    fn strided_index_walks_a_transpose() {
        let t = Layout::contiguous(&[2, 3]).permute(&[1, 0]).unwrap();
        assert_eq!(t.indices().collect::<Vec<_>>(), vec![0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
    }
}
