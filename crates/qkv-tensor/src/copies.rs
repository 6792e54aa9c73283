//! Inference copies: a buffer may carry copies of its numbers in the forms
//! that inference reads fastest, and [`Tensor::matmul`] reads a copy instead
//! of the f32 numbers when no gradient is recorded. Made for weights, which
//! every product of a forward pass reads unchanged.
//!
//! * **packed** ([`Tensor::attach_packed_copy`]): a 2-D view of the buffer as
//!   the GEMM's `B` (a weight stored `[in, out]`, or the transposed view of
//!   one stored `[out, in]`), already cut into the panels that every product
//!   would otherwise pack again ([`crate::kernels::packed::PackedB`]). Read by
//!   products of several rows by exactly that view. The same sweeps of the
//!   same kernel, so the same numbers as a product that packs `B` itself.
//! * **f16** ([`Tensor::attach_f16_copy`]): a 2-D view rounded to 16-bit
//!   floats (relative error ≤ 2⁻¹¹ per weight), read by one-row products (a
//!   generated token) by that view or its transpose, through
//!   [`crate::kernels::gemv_f16`]: half the bytes to stream, sums still f32.
//!
//! The copies belong to the buffer, not to one tensor: every view or clone of
//! it sees them. Nothing writes a buffer except through
//! [`crate::storage::Storage::as_mut_slice`] — [`crate::Param::update`] in
//! place, [`Tensor::make_mut`], in-place ops — and that drops its copies;
//! [`crate::Param::set_value`] and copy-on-write give the value a new buffer,
//! without copies. So a copy is never older than the numbers it was made
//! from, and nobody has to check.
//!
//! Products that record gradients never read a copy, and neither do the
//! products of a backward pass (their numbers are those of the plain f32
//! weights, bit for bit).

use std::sync::{Arc, RwLock};

use half::f16;

use crate::autograd::is_grad_enabled;
use crate::error::{Error, Result};
use crate::kernels::gemm::{Mat, RawMatMut};
use crate::kernels::gemv_f16::gemv_f16;
use crate::kernels::packed::{PackedB, available, gemm_prepacked};
use crate::layout::Layout;
use crate::tensor::Tensor;

/// Which copy a product reads ([`Tensor::inference_copy_for`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InferenceCopy {
    /// The packed panels of `B`: several rows, no gradients.
    Packed,
    /// The 16-bit weights: one row, no gradients.
    F16,
}

/// The copies one buffer carries, each with the view it was made from.
#[derive(Default)]
pub(crate) struct Copies(RwLock<Vec<Kept>>);

struct Kept {
    view: Layout,
    form: Form,
}

#[derive(Clone)]
enum Form {
    Packed(Arc<PackedB>),
    /// The view's elements row-major, `[rows, cols]` its shape.
    F16(Arc<[f16]>),
}

/// The copy a product reads, taken out of the lock.
pub(crate) enum Chosen {
    Packed(Arc<PackedB>),
    /// `transposed`: the copy is of `Bᵀ` (`[N, K]` row-major).
    F16 {
        w: Arc<[f16]>,
        transposed: bool,
    },
}

impl Copies {
    /// Forget every copy (the buffer is about to be written).
    pub(crate) fn clear(&mut self) {
        self.0.get_mut().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Keep `form` made from `view`, instead of any copy of the same form and view.
    fn add(&self, view: Layout, form: Form) {
        let mut kept = self.0.write().unwrap_or_else(|e| e.into_inner());
        let same = |k: &Kept| k.view == view && std::mem::discriminant(&k.form) == std::mem::discriminant(&form);
        kept.retain(|k| !same(k));
        kept.push(Kept { view, form });
    }

    fn bytes(&self) -> usize {
        let kept = self.0.read().unwrap_or_else(|e| e.into_inner());
        kept.iter()
            .map(|k| match &k.form {
                Form::Packed(p) => p.floats() * 4,
                Form::F16(w) => w.len() * 2,
            })
            .sum()
    }

    /// The copy for `rows` rows times `b` (a 2-D view of this buffer).
    fn find(&self, rows: usize, b: &Layout) -> Option<Chosen> {
        let kept = self.0.read().unwrap_or_else(|e| e.into_inner());
        kept.iter().find_map(|k| match &k.form {
            Form::Packed(p) if rows > 1 && k.view == *b => Some(Chosen::Packed(p.clone())),
            Form::F16(w) if rows == 1 && k.view == *b => Some(Chosen::F16 { w: w.clone(), transposed: false }),
            Form::F16(w) if rows == 1 && transposed(&k.view) == *b => {
                Some(Chosen::F16 { w: w.clone(), transposed: true })
            }
            _ => None,
        })
    }
}

fn transposed(l: &Layout) -> Layout {
    let (s, st) = (l.shape(), l.strides());
    Layout::new(vec![s[1], s[0]], vec![st[1], st[0]], l.offset())
}

/// The copy `a.matmul(b)` reads, if any: no gradient is recorded, `b` is one
/// matrix (`[K, N]`) and `a` holds rows of K (all checked by the caller but
/// the first).
pub(crate) fn chosen(a: &Tensor, b: &Tensor) -> Option<Chosen> {
    if is_grad_enabled() || b.rank() != 2 || b.numel() == 0 {
        return None;
    }
    let rows = a.numel() / b.shape()[0];
    if rows == 0 {
        return None;
    }
    b.0.storage.copies().find(rows, b.layout())
}

impl Chosen {
    /// `a · B` with `B` read from the copy: `a` `[.., K]`, the result's `rows × N` values.
    pub(crate) fn product(&self, a: &Tensor, k: usize, n: usize) -> Vec<f32> {
        let rows = a.numel() / k;
        match self {
            Chosen::Packed(w) => {
                let x = a.contiguous();
                let am = Mat { data: x.storage_slice(), offset: x.layout().offset(), rows, cols: k, rs: k, cs: 1 };
                let mut out = crate::pool::take(rows * n);
                let c = RawMatMut { ptr: out.as_mut_ptr(), rows, cols: n, rs: n, cs: 1 };
                // SAFETY: `out` holds the rows × n result and nothing else sees
                // it; `am` is x's contiguous rows; `available()` held when `w`
                // was packed.
                unsafe { gemm_prepacked(c, am, w, 1.0, false, rayon::current_num_threads() > 1) };
                out
            }
            Chosen::F16 { w, transposed } => {
                debug_assert_eq!(rows, 1);
                gemv_f16(&a.data(), w, k, n, *transposed, true)
            }
        }
    }
}

impl Tensor {
    /// Keep, beside this 2-D tensor's buffer, this view packed as the GEMM's
    /// `B` (`[K, N]`; e.g. `w.t()` for a weight stored `[out, in]`).
    /// [`Tensor::matmul`] by exactly this view then reads it for products of
    /// several rows without gradients, instead of packing `B` on every call.
    /// Costs about the view's size again in memory (columns rounded up to 16).
    /// Returns `false`, keeping nothing, where the CPU lacks the packed GEMM
    /// (AVX2 and FMA): there is nothing to gain.
    pub fn attach_packed_copy(&self) -> Result<bool> {
        self.dims2()?;
        if !available() {
            return Ok(false);
        }
        let packed = PackedB::new(crate::ops::matmul::mat_of(self, 0));
        self.0.storage.copies().add(self.layout().clone(), Form::Packed(Arc::new(packed)));
        Ok(true)
    }

    /// Keep, beside this 2-D tensor's buffer, a 16-bit copy of this view
    /// (nearest, ties to even). One-row products without gradients by this
    /// view or its transpose then read it: half the bytes, and the rounding
    /// of every weight (≤ 2⁻¹¹ relative) in the result. Costs half the view's
    /// size in memory. Values beyond f16's range (±65504) are refused: they
    /// would become infinities.
    pub fn attach_f16_copy(&self) -> Result<()> {
        self.dims2()?;
        let data = self.data();
        if let Some(x) = data.iter().find(|x| x.abs() > f16::MAX.to_f32()) {
            return Err(Error::invalid("attach_f16_copy", format!("a weight of {x} is beyond f16's range (±65504)")));
        }
        let w: Arc<[f16]> = data.iter().map(|&x| f16::from_f32(x)).collect();
        drop(data);
        self.0.storage.copies().add(self.layout().clone(), Form::F16(w));
        Ok(())
    }

    /// The copy `self.matmul(rhs)` would read now, if any.
    pub fn inference_copy_for(&self, rhs: &Tensor) -> Option<InferenceCopy> {
        if self.rank() < 2 || rhs.rank() != 2 || self.shape()[self.rank() - 1] != rhs.shape()[0] {
            return None;
        }
        match chosen(self, rhs)? {
            Chosen::Packed(_) => Some(InferenceCopy::Packed),
            Chosen::F16 { .. } => Some(InferenceCopy::F16),
        }
    }

    /// Bytes of the inference copies this tensor's buffer carries.
    pub fn inference_copy_bytes(&self) -> usize {
        self.0.storage.copies().bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Param, Rng, no_grad};

    /// `a` and `b` within `tol` of each other, relative to `b`.
    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        assert_eq!(a.shape(), b.shape());
        for (g, e) in a.data().iter().zip(b.data().iter()) {
            assert!((g - e).abs() <= tol * (1.0 + e.abs()), "{g} vs {e}");
        }
    }

    #[test]
    fn products_read_the_packed_copy_for_rows_and_the_f16_copy_for_one_row() {
        let mut rng = Rng::new(1);
        let x = Tensor::randn(&[2, 5, 40], 1.0, &mut rng);
        let xt = x.transpose(0, 1).unwrap();
        let one = Tensor::randn(&[1, 40], 1.0, &mut rng);
        // [in, out] as stored, and [out, in] read through its transpose
        for w in [Tensor::randn(&[40, 33], 0.1, &mut rng), Tensor::randn(&[33, 40], 0.1, &mut rng).t().unwrap()] {
            // the plain products, before there is any copy to read
            let part = w.narrow(1, 0, 16).unwrap();
            let plain = |a: &Tensor, b: &Tensor| a.matmul(b).unwrap();
            let (want, want_t, want_one, want_part) =
                (plain(&x, &w), plain(&xt, &w), plain(&one, &w), plain(&x, &part));
            let packed = w.attach_packed_copy().unwrap();
            assert_eq!(packed, available());
            let stored = if w.is_contiguous() { w.clone() } else { w.t().unwrap() };
            stored.attach_f16_copy().unwrap();
            assert!(w.inference_copy_bytes() >= 40 * 33 * 2 + if packed { 40 * 33 * 4 } else { 0 });
            no_grad(|| {
                // several rows: the packed copy, the same numbers
                let want_copy = if packed { Some(InferenceCopy::Packed) } else { None };
                assert_eq!(x.inference_copy_for(&w), want_copy);
                close(&x.matmul(&w).unwrap(), &want, 1e-5);
                // a strided input is read as its values
                close(&xt.matmul(&w).unwrap(), &want_t, 1e-5);
                // one row: the f16 copy, in either orientation; the rounding shows, a little
                assert_eq!(one.inference_copy_for(&w), Some(InferenceCopy::F16));
                let d = one.matmul(&w).unwrap().max_abs_diff(&want_one).unwrap();
                assert!(d > 0.0 && d < 2e-3, "f16 copy in use: {d}");
                // another view of the buffer has no copy of its own
                assert_eq!(x.inference_copy_for(&part), None);
                assert_eq!(one.inference_copy_for(&part), None);
                assert_eq!(x.matmul(&part).unwrap().to_vec(), want_part.to_vec());
            });
            // gradients recorded (even where nothing needs one): never a copy
            assert_eq!(x.inference_copy_for(&w), None);
            assert_eq!(one.inference_copy_for(&w), None);
            assert_eq!(plain(&one, &w).to_vec(), want_one.to_vec());
        }
    }

    #[test]
    fn the_backward_pass_never_reads_a_copy() {
        let mut rng = Rng::new(4);
        let w = Param::new(Tensor::randn(&[24, 16], 0.5, &mut rng));
        let x = Param::new(Tensor::randn(&[1, 24], 1.0, &mut rng));
        let grads = || {
            x.zero_grad();
            w.zero_grad();
            x.value().matmul(&w.value()).unwrap().square().sum_all().backward().unwrap();
            (x.grad().unwrap().to_vec(), w.grad().unwrap().to_vec())
        };
        let before = grads();
        // dx = dy · wᵀ is a one-row product by the transpose of w's buffer
        w.value().attach_f16_copy().unwrap();
        w.value().t().unwrap().attach_packed_copy().unwrap();
        assert_eq!(grads(), before);
    }

    #[test]
    fn writing_a_buffer_drops_its_copies() {
        let mut rng = Rng::new(2);
        let x = Tensor::randn(&[3, 8], 1.0, &mut rng);
        let one = Tensor::randn(&[1, 8], 1.0, &mut rng);
        let attach = |w: &Tensor| {
            w.attach_packed_copy().unwrap();
            w.attach_f16_copy().unwrap();
            assert!(w.inference_copy_bytes() > 0);
            assert_eq!(no_grad(|| one.inference_copy_for(w)), Some(InferenceCopy::F16));
        };
        // no copy left: products without gradients are the plain ones (with gradients on), bit for bit
        let exact = |w: &Tensor| {
            for x in [&x, &one] {
                assert_eq!(no_grad(|| x.inference_copy_for(w)), None);
                assert_eq!(no_grad(|| x.matmul(w)).unwrap().to_vec(), x.matmul(w).unwrap().to_vec());
            }
        };

        // an optimizer step, in place (the param holds its buffer alone)
        let p = Param::new(Tensor::randn(&[8, 5], 1.0, &mut rng));
        attach(&p.value());
        p.update(|w, _| w.iter_mut().for_each(|v| *v *= 0.5));
        assert_eq!(p.value().inference_copy_bytes(), 0);
        exact(&p.value());

        // an update while a view holds the buffer: the param moves to a new
        // buffer (no copies); the view keeps the old numbers and their copies
        attach(&p.value());
        let old = p.value().detach();
        p.update(|w, _| w.iter_mut().for_each(|v| *v += 1.0));
        assert!(!old.shares_storage(&p.value()));
        exact(&p.value());
        assert_eq!(no_grad(|| one.inference_copy_for(&old)), Some(InferenceCopy::F16));

        // a new value (loading a checkpoint)
        attach(&p.value());
        p.set_value(&Tensor::randn(&[8, 5], 1.0, &mut rng)).unwrap();
        exact(&p.value());

        // writing through make_mut, in place
        let mut w = Tensor::randn(&[8, 5], 1.0, &mut rng);
        attach(&w);
        let before = w.storage_slice().as_ptr();
        w.make_mut()[0] = 7.0;
        assert_eq!(w.storage_slice().as_ptr(), before, "written in place");
        assert_eq!(w.inference_copy_bytes(), 0);
        exact(&w);
    }

    #[test]
    fn only_matrices_get_copies_and_f16_refuses_huge_weights() {
        assert!(Tensor::ones(&[4]).attach_packed_copy().is_err());
        assert!(Tensor::ones(&[2, 3, 4]).attach_f16_copy().is_err());
        let e = Tensor::full(&[1, 2], 1e6).attach_f16_copy().unwrap_err().to_string();
        assert!(e.contains("range"), "{e}");
        // K = 0: every output is an empty sum
        let w = Tensor::zeros(&[0, 2]);
        w.attach_f16_copy().unwrap();
        w.attach_packed_copy().unwrap();
        for x in [Tensor::zeros(&[1, 0]), Tensor::zeros(&[3, 0])] {
            let y = no_grad(|| x.matmul(&w)).unwrap();
            assert_eq!(y.to_vec(), vec![0.0; y.numel()]);
        }
    }
}
