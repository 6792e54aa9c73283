//! A recurrent layer's walk through time as one differentiable op.
//!
//! A recurrent network reads one token at a time and carries a fixed-size
//! state: `h_t = cell(x_t, h_{t-1})`. The input's share of every step's gates
//! does not depend on the state, so the caller computes it for all steps at
//! once (`xg = x·W_ihᵀ + b_ih`, one large product); what is left is
//! inherently sequential: per step, one product of the state with `W_hh` and
//! the fused cell ([`crate::kernels::recurrent`]).
//!
//! Backward runs the steps in reverse (back-propagation through time),
//! keeps each step's gradient of the gates, and forms `W_hh`'s gradient at
//! the end as one product over all steps, `dGᵀ·H_prev`, instead of `T` thin
//! ones. Every step works on time-major buffers (`[T, B, ·]`), so a step's
//! rows are contiguous.
//!
//! The initial state is a constant: truncated back-propagation through time
//! carries it over from the previous window, detached.

use crate::error::{Error, Result};
use crate::kernels::gemm::{Mat, MatMut, Threads, matmul};
use crate::kernels::recurrent::{Cell, StepGradIn, StepIn, StepWeight, step_backward, step_forward};
use crate::tensor::Tensor;

/// The outputs of [`recurrence`].
#[derive(Debug)]
pub struct Recurrence {
    /// Every step's hidden state, `[B, T, H]`: differentiable.
    pub y: Tensor,
    /// The last hidden state, `[B, H]`: the next window's `h0` (a constant).
    pub h: Tensor,
    /// The last cell state, `[B, H]` (LSTM): the next window's `c0`.
    pub c: Option<Tensor>,
}

/// `[A, B, W]` → `[B, A, W]`.
fn swap_outer(src: &[f32], a: usize, b: usize, w: usize) -> Vec<f32> {
    let mut out = crate::pool::take(src.len()); // every element written below
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * w..(j * a + i + 1) * w].copy_from_slice(&src[(i * b + j) * w..(i * b + j + 1) * w]);
        }
    }
    out
}

/// Runs `cell` over time.
///
/// # Shapes
/// xg `[B, T, G·H]` (the input's share of the gates, `b_ih` included),
/// w_hh `[G·H, H]`, b_hh `[G·H]`, h0 `[B, H]`, c0 `[B, H]` (LSTM only) →
/// y `[B, T, H]`, h `[B, H]`, c `[B, H]`. Gradients flow to `xg`, `w_hh`
/// and `b_hh`.
pub fn recurrence(
    cell: Cell,
    xg: &Tensor,
    w_hh: &Tensor,
    b_hh: &Tensor,
    h0: &Tensor,
    c0: Option<&Tensor>,
) -> Result<Recurrence> {
    let op = "recurrence";
    let (b, t, gh) = xg.dims3().map_err(|_| Error::bad_shape(op, xg.shape(), "gate inputs as [B, T, G·H]"))?;
    let (rows, n) = w_hh.dims2().map_err(|_| Error::bad_shape(op, w_hh.shape(), "W_hh as [G·H, H]"))?;
    let g = cell.gates();
    if n == 0 || rows != g * n || gh != rows {
        return Err(Error::invalid(
            op,
            format!(
                "{cell:?} needs W_hh [{g}·H, H] and inputs [B, T, {g}·H]; got W_hh {:?} and inputs {:?}",
                w_hh.shape(),
                xg.shape()
            ),
        ));
    }
    if t == 0 || b == 0 {
        return Err(Error::invalid(op, format!("{b} sequences of {t} steps: need at least one of each")));
    }
    if b_hh.shape() != [gh] {
        return Err(Error::bad_shape(op, b_hh.shape(), "b_hh as [G·H]"));
    }
    if h0.shape() != [b, n] {
        return Err(Error::bad_shape(op, h0.shape(), "h0 as [B, H]"));
    }
    let lstm = cell == Cell::Lstm;
    match c0 {
        Some(c) if !lstm || c.shape() != [b, n] => {
            return Err(Error::bad_shape(op, c.shape(), "c0 as [B, H], for an LSTM only"));
        }
        None if lstm => return Err(Error::invalid(op, "an LSTM needs its cell state c0")),
        _ => {}
    }
    let (bh, s) = (b * n, cell.saved() * n);
    let xs = swap_outer(&xg.contiguous().data(), b, t, gh); // [T, B, G·H]
    let w = w_hh.contiguous().detach();
    let bias = b_hh.to_vec();
    // states of steps 0..=T, time-major; step 0 holds h0 (and c0). The
    // buffers come from the pool: every step writes its whole row of them.
    let mut hs = crate::pool::take((t + 1) * bh);
    hs[..bh].copy_from_slice(&h0.contiguous().data());
    let mut cs = if lstm { crate::pool::take((t + 1) * bh) } else { Vec::new() };
    if let Some(c0) = c0 {
        cs[..bh].copy_from_slice(&c0.contiguous().data());
    }
    let mut saved = crate::pool::take(t * b * s);
    {
        let wd = w.data();
        // W_hhᵀ: [H, G·H], packed when several steps will read it (one
        // step — a generated token — reads it once: packing would cost more)
        let view = Mat::rows(&wd, gh, n).t();
        let weight = if t > 1 { StepWeight::new(view) } else { StepWeight::plain(view) };
        let mut hg = vec![0.0f32; b * gh];
        for ti in 0..t {
            // the hidden state's share: h_{t-1}·W_hhᵀ + b_hh
            weight.product(&mut hg, &hs[ti * bh..(ti + 1) * bh], b, false);
            for row in hg.chunks_exact_mut(gh) {
                row.iter_mut().zip(&bias).for_each(|(x, &b)| *x += b);
            }
            let (before, after) = hs.split_at_mut((ti + 1) * bh);
            let (c_prev, c_out): (&[f32], &mut [f32]) = if lstm {
                let (cb, ca) = cs.split_at_mut((ti + 1) * bh);
                (&cb[ti * bh..], &mut ca[..bh])
            } else {
                (&[], &mut [])
            };
            let inp = StepIn { x: &xs[ti * b * gh..(ti + 1) * b * gh], hg: &hg, h_prev: &before[ti * bh..], c_prev };
            step_forward(cell, n, &inp, &mut after[..bh], c_out, &mut saved[ti * b * s..(ti + 1) * b * s]);
        }
    }
    crate::pool::give(xs);
    let y = Tensor::from_vec(swap_outer(&hs[bh..], t, b, n), &[b, t, n])?;
    let h_last = Tensor::from_vec(hs[t * bh..].to_vec(), &[b, n])?;
    let c_last = if lstm { Some(Tensor::from_vec(cs[t * bh..].to_vec(), &[b, n])?) } else { None };
    let y = Tensor::with_grad_fn(&y, &[xg, w_hh, b_hh], move |gy| {
        let dys = swap_outer(&gy.contiguous().data(), b, t, n); // [T, B, H]
        let wd = w.data();
        let view = Mat::rows(&wd, gh, n); // W_hh: [G·H, H]
        let weight = if t > 1 { StepWeight::new(view) } else { StepWeight::plain(view) };
        let gru = cell == Cell::Gru;
        // every step writes its rows of these
        let mut dxs = crate::pool::take(t * b * gh);
        let mut dhgs = if gru { crate::pool::take(t * b * gh) } else { Vec::new() };
        let (mut dh, mut dh_next) = (vec![0.0f32; bh], vec![0.0f32; bh]);
        let mut dc = if lstm { vec![0.0f32; bh] } else { Vec::new() };
        for ti in (0..t).rev() {
            // everything reaching h_t: this step's output and the next step
            for ((d, &y), &nx) in dh.iter_mut().zip(&dys[ti * bh..(ti + 1) * bh]).zip(&dh_next) {
                *d = y + nx;
            }
            let gin = StepGradIn {
                saved: &saved[ti * b * s..(ti + 1) * b * s],
                h_prev: &hs[ti * bh..(ti + 1) * bh],
                c_prev: if lstm { &cs[ti * bh..(ti + 1) * bh] } else { &[] },
                dh: &dh,
            };
            let dx = &mut dxs[ti * b * gh..(ti + 1) * b * gh];
            let dhg: &mut [f32] = if gru { &mut dhgs[ti * b * gh..(ti + 1) * b * gh] } else { &mut [] };
            step_backward(cell, n, &gin, &mut dc, dx, dhg, &mut dh_next);
            if ti > 0 {
                // h_{t-1}'s gradient through W_hh (h0 is a constant)
                let d_hidden =
                    if gru { &dhgs[ti * b * gh..(ti + 1) * b * gh] } else { &dxs[ti * b * gh..(ti + 1) * b * gh] };
                weight.product(&mut dh_next, d_hidden, b, true);
            }
        }
        // W_hh and b_hh: one product and one sum over every (step, row)
        let dhid = if gru { &dhgs } else { &dxs };
        let mut dw = crate::pool::take(gh * n); // written whole by the product
        let a = Mat::rows(dhid, t * b, gh).t(); // [G·H, T·B]
        matmul(MatMut::rows(&mut dw, gh, n), a, Mat::rows(&hs[..t * bh], t * b, n), 1.0, false, Threads::All);
        let mut db = vec![0.0f32; gh];
        for row in dhid.chunks_exact(gh) {
            db.iter_mut().zip(row).for_each(|(d, &x)| *d += x);
        }
        let dxg = swap_outer(&dxs, t, b, gh);
        for buf in [dys, dxs, dhgs, saved, hs, cs] {
            crate::pool::give(buf);
        }
        Ok(vec![
            Some(Tensor::from_vec(dxg, &[b, t, gh])?),
            Some(Tensor::from_vec(dw, &[gh, n])?),
            Some(Tensor::from_vec(db, &[gh])?),
        ])
    });
    Ok(Recurrence { y, h: h_last, c: c_last })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use crate::{Param, Rng};

    /// The same recurrence from elementary ops (matmul, sigmoid, tanh, …),
    /// their autograd giving the gradients: the twin of the fused op.
    fn recurrence_composed(
        cell: Cell,
        xg: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        h0: &Tensor,
        c0: Option<&Tensor>,
    ) -> Tensor {
        let (_, t, gh) = xg.dims3().unwrap();
        let n = w.dims2().unwrap().1;
        let (mut h, mut c) = (h0.clone(), c0.cloned());
        let mut ys = Vec::new();
        for ti in 0..t {
            let x = xg.narrow(1, ti, 1).unwrap().reshape(&[h.shape()[0], gh]).unwrap();
            let hg = h.matmul(&w.t().unwrap()).unwrap().add(bias).unwrap();
            let part = |m: &Tensor, k: usize| m.narrow(1, k * n, n).unwrap();
            h = match cell {
                Cell::Tanh => x.add(&hg).unwrap().tanh(),
                Cell::Lstm => {
                    let a = x.add(&hg).unwrap();
                    let (i, f) = (part(&a, 0).sigmoid(), part(&a, 1).sigmoid());
                    let (g, o) = (part(&a, 2).tanh(), part(&a, 3).sigmoid());
                    let cn = f.mul(c.as_ref().unwrap()).unwrap().add(&i.mul(&g).unwrap()).unwrap();
                    let hn = o.mul(&cn.tanh()).unwrap();
                    c = Some(cn);
                    hn
                }
                Cell::Gru => {
                    let r = part(&x, 0).add(&part(&hg, 0)).unwrap().sigmoid();
                    let z = part(&x, 1).add(&part(&hg, 1)).unwrap().sigmoid();
                    let nn = part(&x, 2).add(&r.mul(&part(&hg, 2)).unwrap()).unwrap().tanh();
                    // (1 - z)·n + z·h = n + z·(h - n)
                    nn.add(&z.mul(&h.sub(&nn).unwrap()).unwrap()).unwrap()
                }
            };
            ys.push(h.reshape(&[h.shape()[0], 1, n]).unwrap());
        }
        Tensor::concat(&ys.iter().collect::<Vec<_>>(), 1).unwrap()
    }

    #[test]
    fn fused_recurrence_matches_the_composed_ops_forward_and_backward() {
        let mut rng = Rng::new(12);
        // one step (a generated token: W_hh read unpacked) and several (packed)
        for (cell, t) in [Cell::Tanh, Cell::Lstm, Cell::Gru].into_iter().flat_map(|c| [(c, 1), (c, 5)]) {
            let (b, n) = (3, 6);
            let gh = cell.gates() * n;
            let xg = Param::new(Tensor::randn(&[b, t, gh], 1.0, &mut rng));
            let w = Param::new(Tensor::randn(&[gh, n], 0.5, &mut rng));
            let bias = Param::new(Tensor::randn(&[gh], 0.5, &mut rng));
            let h0 = Tensor::randn(&[b, n], 0.5, &mut rng);
            let c0 = (cell == Cell::Lstm).then(|| Tensor::randn(&[b, n], 0.5, &mut rng));
            let dy = Tensor::randn(&[b, t, n], 1.0, &mut rng);
            let mut results = Vec::new();
            for fused in [true, false] {
                for p in [&xg, &w, &bias] {
                    p.zero_grad();
                }
                let (x, wv, bv) = (xg.value(), w.value(), bias.value());
                let y = if fused {
                    let r = recurrence(cell, &x, &wv, &bv, &h0, c0.as_ref()).unwrap();
                    // the returned last state is the last step's
                    let last = y_last(&r.y, t);
                    assert_eq!(r.h.to_vec(), last);
                    r.y
                } else {
                    recurrence_composed(cell, &x, &wv, &bv, &h0, c0.as_ref())
                };
                y.mul(&dy).unwrap().sum_all().backward().unwrap();
                results.push((
                    y.to_vec(),
                    xg.grad().unwrap().to_vec(),
                    w.grad().unwrap().to_vec(),
                    bias.grad().unwrap().to_vec(),
                ));
            }
            let (f, c) = (&results[0], &results[1]);
            for (what, got, want) in
                [("y", &f.0, &c.0), ("dxg", &f.1, &c.1), ("dW_hh", &f.2, &c.2), ("db_hh", &f.3, &c.3)]
            {
                for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
                    assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{cell:?} {what}[{i}]: {g} vs {w}");
                }
            }
        }
    }

    fn y_last(y: &Tensor, t: usize) -> Vec<f32> {
        y.narrow(1, t - 1, 1).unwrap().contiguous().to_vec()
    }

    #[test]
    fn recurrence_gradients_match_finite_differences() {
        let mut rng = Rng::new(13);
        for cell in [Cell::Tanh, Cell::Lstm, Cell::Gru] {
            let (b, t, n) = (2, 4, 3);
            let gh = cell.gates() * n;
            let h0 = Tensor::randn(&[b, n], 0.5, &mut rng);
            let c0 = (cell == Cell::Lstm).then(|| Tensor::randn(&[b, n], 0.5, &mut rng));
            let inputs = [
                Tensor::randn(&[b, t, gh], 1.0, &mut rng),
                Tensor::randn(&[gh, n], 0.5, &mut rng),
                Tensor::randn(&[gh], 0.5, &mut rng),
            ];
            let gc = GradCheck { step: 1e-2, atol: 3e-3, rtol: 3e-2 };
            let r = gc.run(&inputs, |x| Ok(recurrence(cell, &x[0], &x[1], &x[2], &h0, c0.as_ref())?.y)).unwrap();
            if let Err(msg) = r {
                panic!("{cell:?}: {msg}");
            }
        }
    }

    #[test]
    fn shapes_that_cannot_work_are_refused() {
        let z = |s: &[usize]| Tensor::zeros(s);
        let lstm = |x: &[usize], w: &[usize], h: &[usize], c: Option<&[usize]>| {
            let c = c.map(z);
            recurrence(Cell::Lstm, &z(x), &z(w), &z(&[w[0]]), &z(h), c.as_ref()).map(|_| ()).unwrap_err().to_string()
        };
        assert!(lstm(&[2, 3, 12], &[12, 3], &[2, 3], None).contains("c0"));
        assert!(lstm(&[2, 3, 12], &[12, 4], &[2, 4], Some(&[2, 4])).contains("W_hh"));
        assert!(lstm(&[2, 0, 12], &[12, 3], &[2, 3], Some(&[2, 3])).contains("steps"));
        assert!(lstm(&[2, 3, 0], &[0, 0], &[2, 0], Some(&[2, 0])).contains("W_hh"));
        let e =
            recurrence(Cell::Gru, &z(&[2, 3, 9]), &z(&[9, 3]), &z(&[9]), &z(&[2, 3]), Some(&z(&[2, 3]))).unwrap_err();
        assert!(e.to_string().contains("LSTM only"), "{e}");
    }
}
