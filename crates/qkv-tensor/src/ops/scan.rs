//! The two sequence ops of a Mamba block, as differentiable ops.
//!
//! - [`causal_conv1d`]: a depthwise convolution along time that sees only
//!   the present and the `K - 1` previous positions.
//! - [`selective_scan`]: the selective state-space recurrence. Every
//!   channel `e` carries a state of `N` numbers through time,
//!   `h_t = exp(Δ_t·A_e) ⊙ h_{t-1} + Δ_t·u_t·B_t`, and reads it out as
//!   `y_t = C_t·h_t + D_e·u_t`. Δ, B and C depend on the input ("selective"):
//!   the model decides per token how much to remember.
//!
//! The convolution runs the sequences in parallel; the scan is the chunked
//! parallel scan of [`crate::kernels::scan`]. The twins in the tests build
//! both from elementary ops.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::scan::{self, Scan};
use crate::tensor::Tensor;

/// Depthwise causal convolution along time.
///
/// # Shapes
/// x `[B, L, E]`, w `[E, K]`, bias `[E]` → `[B, L, E]`:
/// `y[b, t, e] = bias[e] + Σ_j w[e, j] · x[b, t - (K - 1) + j, e]` (zero before the start).
pub fn causal_conv1d(x: &Tensor, w: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let op = "causal_conv1d";
    let (b, l, e) = x.dims3().map_err(|_| Error::bad_shape(op, x.shape(), "inputs as [B, L, E]"))?;
    let (we, k) = w.dims2().map_err(|_| Error::bad_shape(op, w.shape(), "weights as [E, K]"))?;
    if we != e || k == 0 || bias.shape() != [e] {
        return Err(Error::invalid(
            op,
            format!(
                "inputs {:?} need weights [{e}, K ≥ 1] and bias [{e}]; got {:?} and {:?}",
                x.shape(),
                w.shape(),
                bias.shape()
            ),
        ));
    }
    let (xd, wd, bd) = (x.contiguous().to_vec(), w.contiguous().to_vec(), bias.to_vec());
    let mut y = vec![0.0f32; b * l * e];
    y.par_chunks_mut(l * e).enumerate().for_each(|(bi, yb)| {
        let xb = &xd[bi * l * e..(bi + 1) * l * e];
        for t in 0..l {
            let row = &mut yb[t * e..(t + 1) * e];
            row.copy_from_slice(&bd);
            for j in 0..k {
                // tap j reads position t - (K - 1) + j
                let Some(s) = (t + j).checked_sub(k - 1) else { continue };
                for (c, out) in row.iter_mut().enumerate() {
                    *out += wd[c * k + j] * xb[s * e + c];
                }
            }
        }
    });
    let y = Tensor::from_vec(y, &[b, l, e])?;
    Ok(Tensor::with_grad_fn(&y, &[x, w, bias], move |g| {
        let gd = g.contiguous().to_vec();
        let mut dx = vec![0.0f32; b * l * e];
        // per sequence: its rows of dx, and partial sums of dw and db (added in order)
        let partial: Vec<(Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(l * e)
            .enumerate()
            .map(|(bi, dxb)| {
                let (mut dw, mut db) = (vec![0.0f32; e * k], vec![0.0f32; e]);
                let xb = &xd[bi * l * e..(bi + 1) * l * e];
                for t in 0..l {
                    let dy = &gd[(bi * l + t) * e..(bi * l + t + 1) * e];
                    db.iter_mut().zip(dy).for_each(|(d, &g)| *d += g);
                    for j in 0..k {
                        let Some(s) = (t + j).checked_sub(k - 1) else { continue };
                        for c in 0..e {
                            dxb[s * e + c] += wd[c * k + j] * dy[c];
                            dw[c * k + j] += dy[c] * xb[s * e + c];
                        }
                    }
                }
                (dw, db)
            })
            .collect();
        let (mut dw, mut db) = (vec![0.0f32; e * k], vec![0.0f32; e]);
        for (pw, pb) in &partial {
            dw.iter_mut().zip(pw).for_each(|(x, y)| *x += y);
            db.iter_mut().zip(pb).for_each(|(x, y)| *x += y);
        }
        Ok(vec![
            Some(Tensor::from_vec(dx, &[b, l, e])?),
            Some(Tensor::from_vec(dw, &[e, k])?),
            Some(Tensor::from_vec(db, &[e])?),
        ])
    }))
}

/// The selective scan: `y` for every channel, from a zero state.
///
/// # Shapes
/// u, delta `[B, L, E]`, a `[E, N]`, bm, cm `[B, L, N]`, d `[E]` → y `[B, L, E]`.
pub fn selective_scan(u: &Tensor, delta: &Tensor, a: &Tensor, bm: &Tensor, cm: &Tensor, d: &Tensor) -> Result<Tensor> {
    let op = "selective_scan";
    let (b, l, e) = u.dims3().map_err(|_| Error::bad_shape(op, u.shape(), "inputs u as [B, L, E]"))?;
    let (ae, n) = a.dims2().map_err(|_| Error::bad_shape(op, a.shape(), "A as [E, N]"))?;
    if delta.shape() != u.shape() || ae != e || bm.shape() != [b, l, n] || cm.shape() != [b, l, n] || d.shape() != [e] {
        return Err(Error::invalid(
            op,
            format!(
                "u {:?} needs Δ of the same shape, A [{e}, N], B and C [{b}, {l}, N], D [{e}]; got Δ {:?}, A {:?}, B {:?}, C {:?}, D {:?}",
                u.shape(),
                delta.shape(),
                a.shape(),
                bm.shape(),
                cm.shape(),
                d.shape()
            ),
        ));
    }
    let v = |t: &Tensor| t.contiguous().to_vec();
    let (ud, dd, ad, bd, cd, d_) = (v(u), v(delta), v(a), v(bm), v(cm), v(d));
    let chunk = scan::chunk_len(b, l);
    let s = Scan { u: &ud, dt: &dd, a: &ad, bm: &bd, cm: &cd, d: &d_, b, l, e, n };
    // every state h_t, kept for backward: [B, L, E, N]
    let (y, hs) = scan::forward(&s, chunk);
    let y = Tensor::from_vec(y, &[b, l, e])?;
    Ok(Tensor::with_grad_fn(&y, &[u, delta, a, bm, cm, d], move |g| {
        let s = Scan { u: &ud, dt: &dd, a: &ad, bm: &bd, cm: &cd, d: &d_, b, l, e, n };
        let g = scan::backward(&s, &hs, &g.contiguous().to_vec(), chunk);
        crate::pool::give(hs);
        Ok(vec![
            Some(Tensor::from_vec(g.du, &[b, l, e])?),
            Some(Tensor::from_vec(g.ddt, &[b, l, e])?),
            Some(Tensor::from_vec(g.da, &[e, n])?),
            Some(Tensor::from_vec(g.dbm, &[b, l, n])?),
            Some(Tensor::from_vec(g.dcm, &[b, l, n])?),
            Some(Tensor::from_vec(g.dd, &[e])?),
        ])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::GradCheck;
    use crate::{Param, Rng};

    /// [`selective_scan`] from elementary ops: the twin.
    fn scan_composed(u: &Tensor, delta: &Tensor, a: &Tensor, bm: &Tensor, cm: &Tensor, d: &Tensor) -> Tensor {
        let (b, l, e) = u.dims3().unwrap();
        let n = a.dims2().unwrap().1;
        let mut h = Tensor::zeros(&[b, e, n]);
        let mut ys = Vec::new();
        for t in 0..l {
            let step = |x: &Tensor, w: usize| x.narrow(1, t, 1).unwrap().reshape(&[b, w]).unwrap();
            let (dt, ut, bt, ct) = (step(delta, e), step(u, e), step(bm, n), step(cm, n));
            let decay = dt.reshape(&[b, e, 1]).unwrap().mul(&a.reshape(&[1, e, n]).unwrap()).unwrap().exp();
            let input =
                dt.mul(&ut).unwrap().reshape(&[b, e, 1]).unwrap().mul(&bt.reshape(&[b, 1, n]).unwrap()).unwrap();
            h = decay.mul(&h).unwrap().add(&input).unwrap();
            let read = h.mul(&ct.reshape(&[b, 1, n]).unwrap()).unwrap().sum(-1, false).unwrap();
            let y = read.add(&ut.mul(&d.reshape(&[1, e]).unwrap()).unwrap()).unwrap();
            ys.push(y.reshape(&[b, 1, e]).unwrap());
        }
        Tensor::concat(&ys.iter().collect::<Vec<_>>(), 1).unwrap()
    }

    fn scan_inputs(rng: &mut Rng, b: usize, l: usize, e: usize, n: usize) -> Vec<Tensor> {
        vec![
            Tensor::randn(&[b, l, e], 1.0, rng),
            Tensor::rand_uniform(&[b, l, e], 0.05, 0.8, rng),
            Tensor::rand_uniform(&[e, n], -2.0, -0.2, rng),
            Tensor::randn(&[b, l, n], 1.0, rng),
            Tensor::randn(&[b, l, n], 1.0, rng),
            Tensor::randn(&[e], 1.0, rng),
        ]
    }

    #[test]
    fn selective_scan_matches_the_composed_ops_forward_and_backward() {
        let mut rng = Rng::new(31);
        let inputs = scan_inputs(&mut rng, 3, 6, 5, 4);
        let dy = Tensor::randn(&[3, 6, 5], 1.0, &mut rng);
        let params: Vec<Param> = inputs.iter().map(|t| Param::new(t.clone())).collect();
        let mut got = Vec::new();
        for fused in [true, false] {
            params.iter().for_each(Param::zero_grad);
            let v: Vec<Tensor> = params.iter().map(Param::value).collect();
            let y = if fused {
                selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]).unwrap()
            } else {
                scan_composed(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5])
            };
            y.mul(&dy).unwrap().sum_all().backward().unwrap();
            let mut all = vec![y.to_vec()];
            all.extend(params.iter().map(|p| p.grad().unwrap().to_vec()));
            got.push(all);
        }
        for (i, (f, c)) in got[0].iter().zip(&got[1]).enumerate() {
            for (j, (x, y)) in f.iter().zip(c).enumerate() {
                assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "output/gradient {i} [{j}]: {x} vs {y}");
            }
        }
    }

    #[test]
    fn scan_and_conv_gradients_match_finite_differences() {
        let mut rng = Rng::new(32);
        let gc = GradCheck { step: 1e-2, atol: 3e-3, rtol: 3e-2 };
        let inputs = scan_inputs(&mut rng, 2, 4, 3, 2);
        let r = gc.run(&inputs, |x| selective_scan(&x[0], &x[1], &x[2], &x[3], &x[4], &x[5])).unwrap();
        if let Err(m) = r {
            panic!("scan: {m}");
        }
        let conv = [
            Tensor::randn(&[2, 5, 3], 1.0, &mut rng),
            Tensor::randn(&[3, 4], 0.5, &mut rng),
            Tensor::randn(&[3], 0.5, &mut rng),
        ];
        let r = gc.run(&conv, |x| causal_conv1d(&x[0], &x[1], &x[2])).unwrap();
        if let Err(m) = r {
            panic!("conv: {m}");
        }
    }

    #[test]
    fn the_convolution_sees_only_the_past() {
        // a spike at position 2 moves the outputs at 2, 3 and 4 (K = 3), never before
        let mut x = vec![0.0f32; 6];
        x[2] = 1.0;
        let y = causal_conv1d(
            &Tensor::from_vec(x, &[1, 6, 1]).unwrap(),
            &Tensor::from_vec(vec![0.5, 0.25, 2.0], &[1, 3]).unwrap(),
            &Tensor::zeros(&[1]),
        )
        .unwrap()
        .to_vec();
        assert_eq!(y, [0.0, 0.0, 2.0, 0.25, 0.5, 0.0]);
    }

    #[test]
    fn mismatched_shapes_are_refused() {
        let z = |s: &[usize]| Tensor::zeros(s);
        let e = selective_scan(&z(&[2, 3, 4]), &z(&[2, 3, 4]), &z(&[4, 2]), &z(&[2, 3, 5]), &z(&[2, 3, 2]), &z(&[4]))
            .unwrap_err();
        assert!(e.to_string().contains("B and C"), "{e}");
        let e = causal_conv1d(&z(&[2, 3, 4]), &z(&[4, 0]), &z(&[4])).unwrap_err();
        assert!(e.to_string().contains("K ≥ 1"), "{e}");
    }
}
