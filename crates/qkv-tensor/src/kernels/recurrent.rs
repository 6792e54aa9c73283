//! One time step of a recurrent cell — Elman (tanh), LSTM or GRU — for a
//! whole batch: fused kernels that turn a step's gate pre-activations into
//! the new state in one pass over memory, and their backward.
//!
//! A cell with `G` gates per hidden unit reads, for each batch row, the
//! input's share of the gates `x` (`G·H`: `x_t·W_ihᵀ + b_ih`, computed for
//! every step at once by one big product) and the hidden state's share `hg`
//! (`G·H`: `h_{t-1}·W_hhᵀ + b_hh`, one product per step). The gate order is
//! PyTorch's: LSTM `i, f, g, o`; GRU `r, z, n`.
//!
//! - Elman: `h = tanh(x + hg)`.
//! - LSTM: `i, f, o = σ(·)`, `g = tanh(·)`, `c = f·c_prev + i·g`, `h = o·tanh(c)`.
//! - GRU: `r, z = σ(x + hg)`, `n = tanh(x_n + r·hg_n)`, `h = (1 - z)·n + z·h_prev`
//!   (the reset gate scales the hidden share *with* its bias, as PyTorch does).
//!
//! Forward saves what backward needs per unit ([`Cell::saved`]). The
//! `*_naive` functions are the twins: each formula written out in f64.
//! [`StepWeight`] is the recurrent weight as the per-step product reads it,
//! packed once per sequence instead of once per step.

use rayon::prelude::*;

use super::elementwise::PAR_MIN;
use super::gemm::{Mat, MatMut, RawMatMut, Threads, matmul};
use super::packed::{PackedB, available, gemm_prepacked};
use crate::simd;

/// Which recurrent cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// Elman's RNN: `h = tanh(x + hg)`.
    Tanh,
    Lstm,
    Gru,
}

impl Cell {
    /// Gate blocks per hidden unit: `W_ih` and `W_hh` have `G·H` rows.
    pub fn gates(self) -> usize {
        match self {
            Cell::Tanh => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    /// Floats saved per hidden unit for backward: `h` (Elman); `i, f, g, o,
    /// tanh c` (LSTM); `r, z, n, hg_n` (GRU).
    pub fn saved(self) -> usize {
        match self {
            Cell::Tanh => 1,
            Cell::Lstm => 5,
            Cell::Gru => 4,
        }
    }
}

/// Rows of one output buffer, handed out to parallel tasks by index.
struct RowsMut {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks take disjoint rows (see `row`).
unsafe impl Send for RowsMut {}
unsafe impl Sync for RowsMut {}

impl RowsMut {
    fn new(buf: &mut [f32], rows: usize) -> RowsMut {
        RowsMut { ptr: buf.as_mut_ptr(), len: buf.len().checked_div(rows).unwrap_or(0) }
    }

    /// Row `r`.
    ///
    /// # Safety
    /// `r` is below the row count given to `new`, and no other borrow of row
    /// `r` is alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, r: usize) -> &mut [f32] {
        // SAFETY: by the caller's contract the row lies in the buffer and is not shared.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(r * self.len), self.len) }
    }
}

/// `f(row)` for every batch row, on the pool when the step is large enough.
fn each_row(rows: usize, floats_per_row: usize, f: impl Fn(usize) + Sync + Send) {
    if rows * floats_per_row >= PAR_MIN {
        (0..rows).into_par_iter().for_each(f);
    } else {
        (0..rows).for_each(f);
    }
}

/// Buffers of one step, all `[B, ·]` row-major.
pub struct StepIn<'a> {
    /// The input's share of the gates, `[B, G·H]`.
    pub x: &'a [f32],
    /// The hidden state's share, `[B, G·H]` (bias included).
    pub hg: &'a [f32],
    /// `h_{t-1}`, `[B, H]`.
    pub h_prev: &'a [f32],
    /// `c_{t-1}`, `[B, H]` (LSTM; empty otherwise).
    pub c_prev: &'a [f32],
}

/// One step forward: writes `h` `[B, H]`, `c` `[B, H]` (LSTM; empty
/// otherwise) and `saved` `[B, S·H]`.
pub fn step_forward(cell: Cell, hidden: usize, inp: &StepIn, h: &mut [f32], c: &mut [f32], saved: &mut [f32]) {
    let (g, s) = (cell.gates() * hidden, cell.saved() * hidden);
    let b = h.len().checked_div(hidden).unwrap_or(0);
    assert!(inp.x.len() == b * g && inp.hg.len() == b * g && inp.h_prev.len() == b * hidden, "step: sizes");
    assert!(saved.len() == b * s, "step: saved size");
    if cell == Cell::Lstm {
        assert!(inp.c_prev.len() == b * hidden && c.len() == b * hidden, "step: LSTM cell state sizes");
    }
    let (h_rows, c_rows, s_rows) = (RowsMut::new(h, b), RowsMut::new(c, b), RowsMut::new(saved, b));
    each_row(b, g, |r| {
        let (x, hg) = (&inp.x[r * g..(r + 1) * g], &inp.hg[r * g..(r + 1) * g]);
        let hp = &inp.h_prev[r * hidden..(r + 1) * hidden];
        // SAFETY: each task takes row r of each output, and only it.
        let (h, sv) = unsafe { (h_rows.row(r), s_rows.row(r)) };
        simd::dispatch(
            #[inline(always)]
            || match cell {
                Cell::Tanh => {
                    for j in 0..hidden {
                        h[j] = simd::tanh(x[j] + hg[j]);
                        sv[j] = h[j];
                    }
                }
                Cell::Lstm => {
                    // SAFETY: as above.
                    let c = unsafe { c_rows.row(r) };
                    let cp = &inp.c_prev[r * hidden..(r + 1) * hidden];
                    let n = hidden;
                    for j in 0..n {
                        let i = simd::sigmoid(x[j] + hg[j]);
                        let f = simd::sigmoid(x[n + j] + hg[n + j]);
                        let gg = simd::tanh(x[2 * n + j] + hg[2 * n + j]);
                        let o = simd::sigmoid(x[3 * n + j] + hg[3 * n + j]);
                        let cj = f * cp[j] + i * gg;
                        let tc = simd::tanh(cj);
                        c[j] = cj;
                        h[j] = o * tc;
                        (sv[j], sv[n + j], sv[2 * n + j], sv[3 * n + j], sv[4 * n + j]) = (i, f, gg, o, tc);
                    }
                }
                Cell::Gru => {
                    let n = hidden;
                    for j in 0..n {
                        let rr = simd::sigmoid(x[j] + hg[j]);
                        let z = simd::sigmoid(x[n + j] + hg[n + j]);
                        let hn = hg[2 * n + j];
                        let nn = simd::tanh(x[2 * n + j] + rr * hn);
                        h[j] = (1.0 - z) * nn + z * hp[j];
                        (sv[j], sv[n + j], sv[2 * n + j], sv[3 * n + j]) = (rr, z, nn, hn);
                    }
                }
            },
        );
    });
}

/// What one step backward reads, all `[B, ·]` row-major.
pub struct StepGradIn<'a> {
    /// What forward saved, `[B, S·H]`.
    pub saved: &'a [f32],
    /// `h_{t-1}`, `[B, H]` (GRU; may be empty otherwise).
    pub h_prev: &'a [f32],
    /// `c_{t-1}`, `[B, H]` (LSTM; empty otherwise).
    pub c_prev: &'a [f32],
    /// The whole gradient reaching `h_t`, `[B, H]`.
    pub dh: &'a [f32],
}

/// One step backward. `dc` holds the gradient reaching `c_t` from later
/// steps and leaves with the one reaching `c_{t-1}` (LSTM; empty
/// otherwise). Writes `dx` `[B, G·H]` (the gradient of the input's share of
/// the gates), `dhg` `[B, G·H]` (the hidden share's; GRU only, since for the
/// others it equals `dx`: pass it empty) and `dh_prev` `[B, H]`, the part of
/// `h_{t-1}`'s gradient that does not go through `W_hh` (GRU: `dh·z`; zero
/// otherwise).
pub fn step_backward(
    cell: Cell,
    hidden: usize,
    inp: &StepGradIn,
    dc: &mut [f32],
    dx: &mut [f32],
    dhg: &mut [f32],
    dh_prev: &mut [f32],
) {
    let (g, s) = (cell.gates() * hidden, cell.saved() * hidden);
    let b = inp.dh.len().checked_div(hidden).unwrap_or(0);
    assert!(inp.saved.len() == b * s && dx.len() == b * g && dh_prev.len() == b * hidden, "step backward: sizes");
    match cell {
        Cell::Lstm => assert!(inp.c_prev.len() == b * hidden && dc.len() == b * hidden, "step backward: LSTM sizes"),
        Cell::Gru => assert!(inp.h_prev.len() == b * hidden && dhg.len() == b * g, "step backward: GRU sizes"),
        Cell::Tanh => {}
    }
    let (dc_rows, dx_rows, dhg_rows, dhp_rows) =
        (RowsMut::new(dc, b), RowsMut::new(dx, b), RowsMut::new(dhg, b), RowsMut::new(dh_prev, b));
    each_row(b, g, |r| {
        let sv = &inp.saved[r * s..(r + 1) * s];
        let dh = &inp.dh[r * hidden..(r + 1) * hidden];
        // SAFETY: each task takes row r of each output, and only it.
        let (dx, dhp) = unsafe { (dx_rows.row(r), dhp_rows.row(r)) };
        let n = hidden;
        simd::dispatch(
            #[inline(always)]
            || match cell {
                Cell::Tanh => {
                    for j in 0..n {
                        dx[j] = dh[j] * (1.0 - sv[j] * sv[j]);
                        dhp[j] = 0.0;
                    }
                }
                Cell::Lstm => {
                    // SAFETY: as above.
                    let dc = unsafe { dc_rows.row(r) };
                    let cp = &inp.c_prev[r * n..(r + 1) * n];
                    for j in 0..n {
                        let (i, f, gg, o, tc) = (sv[j], sv[n + j], sv[2 * n + j], sv[3 * n + j], sv[4 * n + j]);
                        let dcj = dc[j] + dh[j] * o * (1.0 - tc * tc);
                        dx[j] = dcj * gg * i * (1.0 - i);
                        dx[n + j] = dcj * cp[j] * f * (1.0 - f);
                        dx[2 * n + j] = dcj * i * (1.0 - gg * gg);
                        dx[3 * n + j] = dh[j] * tc * o * (1.0 - o);
                        dc[j] = dcj * f;
                        dhp[j] = 0.0;
                    }
                }
                Cell::Gru => {
                    // SAFETY: as above.
                    let dhg = unsafe { dhg_rows.row(r) };
                    let hp = &inp.h_prev[r * n..(r + 1) * n];
                    for j in 0..n {
                        let (rr, z, nn, hn) = (sv[j], sv[n + j], sv[2 * n + j], sv[3 * n + j]);
                        let da = dh[j] * (1.0 - z) * (1.0 - nn * nn);
                        let dr = da * hn * rr * (1.0 - rr);
                        let dz = dh[j] * (hp[j] - nn) * z * (1.0 - z);
                        (dx[j], dx[n + j], dx[2 * n + j]) = (dr, dz, da);
                        (dhg[j], dhg[n + j], dhg[2 * n + j]) = (dr, dz, da * rr);
                        dhp[j] = dh[j] * z;
                    }
                }
            },
        );
    });
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// [`step_forward`] with each formula written out, in f64: `(h, c)`.
pub fn step_forward_naive(cell: Cell, hidden: usize, inp: &StepIn) -> (Vec<f32>, Vec<f32>) {
    let (n, g) = (hidden, cell.gates() * hidden);
    let b = inp.h_prev.len() / n.max(1);
    let (mut h, mut c) = (Vec::new(), Vec::new());
    for r in 0..b {
        let a = |k: usize| inp.x[r * g + k] as f64 + inp.hg[r * g + k] as f64;
        for j in 0..n {
            match cell {
                Cell::Tanh => h.push(a(j).tanh() as f32),
                Cell::Lstm => {
                    let (i, f, gg, o) =
                        (sigmoid64(a(j)), sigmoid64(a(n + j)), a(2 * n + j).tanh(), sigmoid64(a(3 * n + j)));
                    let cj = f * inp.c_prev[r * n + j] as f64 + i * gg;
                    c.push(cj as f32);
                    h.push((o * cj.tanh()) as f32);
                }
                Cell::Gru => {
                    let (rr, z) = (sigmoid64(a(j)), sigmoid64(a(n + j)));
                    let hn = inp.hg[r * g + 2 * n + j] as f64;
                    let nn = (inp.x[r * g + 2 * n + j] as f64 + rr * hn).tanh();
                    h.push(((1.0 - z) * nn + z * inp.h_prev[r * n + j] as f64) as f32);
                }
            }
        }
    }
    (h, c)
}

/// The gradients of one step, from scratch in f64 (recomputing the gates
/// from the step's inputs, not from saved values): `(dx, dhg, dh_prev
/// direct, dc_prev)` given `dh` and `dc` reaching `h_t` and `c_t`.
pub fn step_backward_naive(
    cell: Cell,
    hidden: usize,
    inp: &StepIn,
    dh: &[f32],
    dc: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let (n, g) = (hidden, cell.gates() * hidden);
    let b = inp.h_prev.len() / n.max(1);
    let (mut dx, mut dhg, mut dhp, mut dcp) =
        (vec![0.0f32; b * g], vec![0.0f32; b * g], vec![0.0f32; b * n], vec![0.0f32; b * n]);
    for r in 0..b {
        let a = |k: usize| inp.x[r * g + k] as f64 + inp.hg[r * g + k] as f64;
        for j in 0..n {
            let d = dh[r * n + j] as f64;
            match cell {
                Cell::Tanh => {
                    let h = a(j).tanh();
                    dx[r * g + j] = (d * (1.0 - h * h)) as f32;
                    dhg[r * g + j] = dx[r * g + j];
                }
                Cell::Lstm => {
                    let (i, f, gg, o) =
                        (sigmoid64(a(j)), sigmoid64(a(n + j)), a(2 * n + j).tanh(), sigmoid64(a(3 * n + j)));
                    let cp = inp.c_prev[r * n + j] as f64;
                    let tc = (f * cp + i * gg).tanh();
                    // dL/dc = from later steps + through h = o·tanh(c)
                    let dcj = dc[r * n + j] as f64 + d * o * (1.0 - tc * tc);
                    let grads = [
                        dcj * gg * i * (1.0 - i),
                        dcj * cp * f * (1.0 - f),
                        dcj * i * (1.0 - gg * gg),
                        d * tc * o * (1.0 - o),
                    ];
                    for (k, v) in grads.into_iter().enumerate() {
                        dx[r * g + k * n + j] = v as f32;
                        dhg[r * g + k * n + j] = v as f32;
                    }
                    dcp[r * n + j] = (dcj * f) as f32;
                }
                Cell::Gru => {
                    let (rr, z) = (sigmoid64(a(j)), sigmoid64(a(n + j)));
                    let hn = inp.hg[r * g + 2 * n + j] as f64;
                    let nn = (inp.x[r * g + 2 * n + j] as f64 + rr * hn).tanh();
                    let hp = inp.h_prev[r * n + j] as f64;
                    // h = (1 - z)·n + z·h_prev
                    let da = d * (1.0 - z) * (1.0 - nn * nn);
                    let dr = da * hn * rr * (1.0 - rr);
                    let dz = d * (hp - nn) * z * (1.0 - z);
                    for (k, (vx, vh)) in [(dr, dr), (dz, dz), (da, da * rr)].into_iter().enumerate() {
                        dx[r * g + k * n + j] = vx as f32;
                        dhg[r * g + k * n + j] = vh as f32;
                    }
                    dhp[r * n + j] = (d * z) as f32;
                }
            }
        }
    }
    (dx, dhg, dhp, dcp)
}

/// The `B` operand of the per-step products (`W_hhᵀ` forward, `W_hh`
/// backward), packed into the GEMM's panels once per sequence: re-packing a
/// 2048 × 512 weight at every step cost more than the step's product with 32
/// rows. Falls back to the strided weight where the packed kernel is absent.
pub struct StepWeight<'a> {
    view: Mat<'a>,
    packed: Option<PackedB>,
}

impl<'a> StepWeight<'a> {
    pub fn new(view: Mat<'a>) -> StepWeight<'a> {
        StepWeight { view, packed: available().then(|| PackedB::new(view)) }
    }

    /// Never packed: the portable path (tests compare the two).
    pub fn plain(view: Mat<'a>) -> StepWeight<'a> {
        StepWeight { view, packed: None }
    }

    /// `c = a·B`, or `c += a·B` when `accumulate`; `a` is `[M, K]`, `c` `[M, N]`.
    pub fn product(&self, c: &mut [f32], a: &[f32], m: usize, accumulate: bool) {
        let (k, n) = (self.view.rows, self.view.cols);
        assert!(a.len() == m * k && c.len() == m * n, "StepWeight: sizes do not chain");
        match &self.packed {
            Some(p) => {
                let cm = RawMatMut { ptr: c.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                // SAFETY: `c` is an exclusively borrowed m × n buffer; `a` holds m × k.
                unsafe { gemm_prepacked(cm, Mat::rows(a, m, k), p, 1.0, accumulate, true) };
            }
            None => matmul(MatMut::rows(c, m, n), Mat::rows(a, m, k), self.view, 1.0, accumulate, Threads::All),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    fn rand(n: usize, rng: &mut Rng) -> Vec<f32> {
        (0..n).map(|_| rng.normal()).collect()
    }

    fn close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= 1e-5 * (1.0 + w.abs()), "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn fused_steps_match_their_naive_twins_serial_and_parallel() {
        crate::threads::on_pools(
            &crate::threads::TEST_POOLS,
            fused_steps_match_their_naive_twins_serial_and_parallel_here,
        );
    }

    fn fused_steps_match_their_naive_twins_serial_and_parallel_here() {
        let mut rng = Rng::new(8);
        for cell in [Cell::Tanh, Cell::Lstm, Cell::Gru] {
            // (3, 5): one thread; (40, 300): above PAR_MIN for every cell
            for (b, n) in [(3, 5), (40, 300)] {
                let g = cell.gates() * n;
                let (x, hg, hp) = (rand(b * g, &mut rng), rand(b * g, &mut rng), rand(b * n, &mut rng));
                let cp = if cell == Cell::Lstm { rand(b * n, &mut rng) } else { vec![] };
                let inp = StepIn { x: &x, hg: &hg, h_prev: &hp, c_prev: &cp };
                let mut h = vec![f32::NAN; b * n];
                let mut c = vec![f32::NAN; cp.len()];
                let mut saved = vec![f32::NAN; b * cell.saved() * n];
                step_forward(cell, n, &inp, &mut h, &mut c, &mut saved);
                let (hw, cw) = step_forward_naive(cell, n, &inp);
                close(&h, &hw, &format!("{cell:?} h, B={b}"));
                close(&c, &cw, &format!("{cell:?} c, B={b}"));
                // backward from saved values against recomputation
                let dh = rand(b * n, &mut rng);
                let dc0 = if cell == Cell::Lstm { rand(b * n, &mut rng) } else { vec![] };
                let mut dc = dc0.clone();
                let (mut dx, mut dhp) = (vec![f32::NAN; b * g], vec![f32::NAN; b * n]);
                let mut dhg = if cell == Cell::Gru { vec![f32::NAN; b * g] } else { vec![] };
                let gin = StepGradIn { saved: &saved, h_prev: &hp, c_prev: &cp, dh: &dh };
                step_backward(cell, n, &gin, &mut dc, &mut dx, &mut dhg, &mut dhp);
                let dc_in = if cell == Cell::Lstm { dc0 } else { vec![0.0; b * n] };
                let (dxw, dhgw, dhpw, dcw) = step_backward_naive(cell, n, &inp, &dh, &dc_in);
                close(&dx, &dxw, &format!("{cell:?} dx, B={b}"));
                close(&dhp, &dhpw, &format!("{cell:?} dh_prev, B={b}"));
                if cell == Cell::Gru {
                    close(&dhg, &dhgw, &format!("{cell:?} dhg, B={b}"));
                }
                if cell == Cell::Lstm {
                    close(&dc, &dcw, &format!("{cell:?} dc, B={b}"));
                }
            }
        }
    }

    #[test]
    fn step_weight_packed_and_plain_give_the_naive_product() {
        let mut rng = Rng::new(9);
        // a weight stored [G·H, H] read as its transpose (forward) and as itself (backward)
        let (gh, h, m) = (52, 13, 7);
        let w = rand(gh * h, &mut rng);
        let wt = Mat::rows(&w, gh, h).t();
        for (view, k, n) in [(wt, h, gh), (Mat::rows(&w, gh, h), gh, h)] {
            let a = rand(m * k, &mut rng);
            let c0 = rand(m * n, &mut rng);
            for accumulate in [false, true] {
                let mut want = c0.clone();
                super::super::gemm::matmul_naive(
                    MatMut::rows(&mut want, m, n),
                    Mat::rows(&a, m, k),
                    view,
                    1.0,
                    accumulate,
                );
                for weight in [StepWeight::new(view), StepWeight::plain(view)] {
                    let mut got = c0.clone();
                    weight.product(&mut got, &a, m, accumulate);
                    close(&got, &want, "product");
                }
            }
        }
    }
}
