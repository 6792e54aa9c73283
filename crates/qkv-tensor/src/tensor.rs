//! `Tensor`: f32 numbers with a shape, shared cheaply (an `Arc`), plus the
//! record of how it was computed when gradients are wanted.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::autograd::{self, BackwardFn, GradKind, Node};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::rng::Rng;
use crate::storage::{ExternalBuffer, Storage};

#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    /// Creation order. Inputs are always created before outputs, so walking
    /// ids downwards replays the tape backwards.
    pub(crate) id: u64,
    pub(crate) storage: Arc<Storage>,
    pub(crate) layout: Layout,
    pub(crate) grad: GradKind,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

impl Tensor {
    // ---------------------------------------------------------------- creation

    pub(crate) fn from_parts(storage: Arc<Storage>, layout: Layout, grad: GradKind) -> Tensor {
        Tensor(Arc::new(Inner { id: next_id(), storage, layout, grad }))
    }

    /// A tensor that owns `data`, laid out row-major in `shape`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if data.len() != n {
            return Err(Error::invalid(
                "from_vec",
                format!("{} values cannot fill shape {shape:?} ({n} values)", data.len()),
            ));
        }
        Ok(Self::from_parts(Arc::new(Storage::owned(data)), Layout::contiguous(shape), GradKind::None))
    }

    /// A tensor over memory someone else owns (e.g. a memory-mapped file).
    pub fn from_external(buf: Arc<dyn ExternalBuffer>, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        let len = buf.as_f32().len();
        if len != n {
            return Err(Error::invalid(
                "from_external",
                format!("{len} values cannot fill shape {shape:?} ({n} values)"),
            ));
        }
        Ok(Self::from_parts(Arc::new(Storage::external(buf)), Layout::contiguous(shape), GradKind::None))
    }

    /// Output of an op: owns `data`; records `backward` when gradients are on
    /// and some input needs them. `backward` gets the gradient of the output
    /// and returns one gradient (or `None`) per input.
    pub(crate) fn from_op(
        data: Vec<f32>,
        shape: &[usize],
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        debug_assert_eq!(data.len(), shape.iter().product::<usize>());
        let grad = Self::record(inputs, backward);
        Self::from_parts(Arc::new(Storage::owned(data)), Layout::contiguous(shape), grad)
    }

    /// `value`'s buffer and layout, recorded as the output of an op over
    /// `inputs` (lets a backward closure keep the output without a copy).
    pub(crate) fn with_grad_fn(
        value: &Tensor,
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let grad = Self::record(inputs, backward);
        Self::from_parts(value.0.storage.clone(), value.0.layout.clone(), grad)
    }

    /// A view: same buffer, new layout, with its own backward.
    pub(crate) fn view_op(
        &self,
        layout: Layout,
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let grad = Self::record(&[self], backward);
        Self::from_parts(self.0.storage.clone(), layout, grad)
    }

    fn record(
        inputs: &[&Tensor],
        backward: impl FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> GradKind {
        if autograd::is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
            let f: BackwardFn = Box::new(backward);
            GradKind::Op(Node::new(inputs.iter().map(|t| (*t).clone()).collect(), f))
        } else {
            GradKind::None
        }
    }

    pub fn zeros(shape: &[usize]) -> Tensor {
        Self::full(shape, 0.0)
    }

    pub fn ones(shape: &[usize]) -> Tensor {
        Self::full(shape, 1.0)
    }

    pub fn full(shape: &[usize], value: f32) -> Tensor {
        let n = shape.iter().product();
        Self::from_vec(vec![value; n], shape).expect("length matches by construction")
    }

    pub fn scalar(value: f32) -> Tensor {
        Self::full(&[], value)
    }

    /// Normal samples with mean 0 and standard deviation `std`.
    pub fn randn(shape: &[usize], std: f32, rng: &mut Rng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| rng.normal() * std).collect();
        Self::from_vec(data, shape).expect("length matches by construction")
    }

    /// Uniform samples in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
        let n = shape.iter().product();
        let data = (0..n).map(|_| lo + (hi - lo) * rng.uniform()).collect();
        Self::from_vec(data, shape).expect("length matches by construction")
    }

    // ---------------------------------------------------------------- looking

    pub fn shape(&self) -> &[usize] {
        self.0.layout.shape()
    }

    pub fn rank(&self) -> usize {
        self.0.layout.rank()
    }

    pub fn numel(&self) -> usize {
        self.0.layout.numel()
    }

    /// Size of `axis`; negative counts from the end (`dim(-1)` is the last).
    pub fn dim(&self, axis: isize) -> Result<usize> {
        let a = self.axis("dim", axis)?;
        Ok(self.shape()[a])
    }

    /// Resolve a possibly negative axis.
    pub fn axis(&self, op: &'static str, axis: isize) -> Result<usize> {
        let r = self.rank() as isize;
        let a = if axis < 0 { axis + r } else { axis };
        if a < 0 || a >= r {
            return Err(Error::AxisOutOfRange { op, axis: axis.unsigned_abs(), rank: self.rank() });
        }
        Ok(a as usize)
    }

    pub fn dims2(&self) -> Result<(usize, usize)> {
        match *self.shape() {
            [a, b] => Ok((a, b)),
            _ => Err(Error::bad_shape("dims2", self.shape(), "2 axes")),
        }
    }

    pub fn dims3(&self) -> Result<(usize, usize, usize)> {
        match *self.shape() {
            [a, b, c] => Ok((a, b, c)),
            _ => Err(Error::bad_shape("dims3", self.shape(), "3 axes")),
        }
    }

    pub fn dims4(&self) -> Result<(usize, usize, usize, usize)> {
        match *self.shape() {
            [a, b, c, d] => Ok((a, b, c, d)),
            _ => Err(Error::bad_shape("dims4", self.shape(), "4 axes")),
        }
    }

    pub fn layout(&self) -> &Layout {
        &self.0.layout
    }

    pub fn id(&self) -> u64 {
        self.0.id
    }

    pub fn is_contiguous(&self) -> bool {
        self.0.layout.is_contiguous()
    }

    /// The whole buffer (views index into it with their layout).
    pub fn storage_slice(&self) -> &[f32] {
        self.0.storage.as_slice()
    }

    /// The elements in row-major order: borrowed when the tensor is contiguous,
    /// gathered into a new buffer otherwise.
    pub fn data(&self) -> Cow<'_, [f32]> {
        let l = &self.0.layout;
        let buf = self.0.storage.as_slice();
        if l.is_contiguous() {
            Cow::Borrowed(&buf[l.offset()..l.offset() + l.numel()])
        } else {
            Cow::Owned(crate::ops::view::gather(l, buf))
        }
    }

    pub fn to_vec(&self) -> Vec<f32> {
        self.data().into_owned()
    }

    /// The elements row-major, taking the buffer without a copy when this
    /// tensor is its only, packed holder.
    pub fn into_vec(self) -> Vec<f32> {
        if self.is_contiguous() && self.0.layout.offset() == 0 {
            let n = self.numel();
            match Arc::try_unwrap(self.0) {
                Ok(inner) => {
                    let Inner { storage, .. } = inner;
                    return match Arc::try_unwrap(storage) {
                        Ok(s) => match s.into_vec() {
                            Some(v) if v.len() == n => v,
                            Some(v) => v[..n].to_vec(),
                            None => unreachable!("external buffers are never unique-owned vectors"),
                        },
                        Err(s) => s.as_slice()[..n].to_vec(),
                    };
                }
                Err(inner) => return Tensor(inner).to_vec(),
            }
        }
        self.to_vec()
    }

    /// The value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return Err(Error::bad_shape("item", self.shape(), "exactly one element"));
        }
        Ok(self.data()[0])
    }

    /// True when this tensor, outside any graph, is the only holder of a
    /// packed buffer of exactly its elements: writing to it in place then
    /// changes nothing anyone else can see.
    pub(crate) fn is_sole_packed_owner(&mut self) -> bool {
        let n = self.numel();
        self.is_contiguous()
            && self.0.layout.offset() == 0
            && !self.requires_grad()
            && Arc::get_mut(&mut self.0).is_some_and(|inner| {
                Arc::get_mut(&mut inner.storage).is_some_and(|s| s.as_mut_slice().is_some_and(|b| b.len() == n))
            })
    }

    /// Write access to the elements (row-major), copy-on-write: when the buffer
    /// is shared with another tensor, or this tensor is a view, it first gets a
    /// packed buffer of its own. The result is cut from the graph (a constant),
    /// since changing values under a recorded op would corrupt its gradients.
    pub fn make_mut(&mut self) -> &mut [f32] {
        if !self.is_sole_packed_owner() {
            *self = Tensor::from_vec(self.to_vec(), self.shape()).expect("same length");
        }
        let inner = Arc::get_mut(&mut self.0).expect("unique after the check or the copy");
        Arc::get_mut(&mut inner.storage)
            .and_then(|s| s.as_mut_slice())
            .expect("unique, owned after the check or the copy")
    }

    /// The same numbers, cut from the graph: no gradient flows through it.
    pub fn detach(&self) -> Tensor {
        Self::from_parts(self.0.storage.clone(), self.0.layout.clone(), GradKind::None)
    }

    /// True when `other` views the same buffer (a view, not a copy).
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }

    /// Largest absolute difference to `other` (same shape), for tests.
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape() != other.shape() {
            return Err(Error::mismatch("max_abs_diff", self.shape(), other.shape(), "shapes must be equal"));
        }
        Ok(crate::max_or_nan(self.data().iter().zip(other.data().iter()).map(|(a, b)| (a - b).abs())))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let d = self.data();
        let head: Vec<f32> = d.iter().take(8).copied().collect();
        write!(f, "Tensor{:?} {:?}{}", self.shape(), head, if d.len() > 8 { " …" } else { "" })
    }
}
