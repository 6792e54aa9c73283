//! The selective scan of a Mamba block, forward and backward, as a
//! **chunked parallel scan**.
//!
//! Every channel `e` of every sequence carries a state of `N` numbers:
//!
//! ```text
//! h_t = exp(Δ_t·A_e) ⊙ h_{t-1} + Δ_t·u_t·B_t        y_t = C_t·h_t + D_e·u_t
//! ```
//!
//! The recurrence is *linear* in `h`, which is what lets time be cut into
//! chunks that run at the same time (the training-time advantage Mamba has
//! over an LSTM, whose state goes through a tanh):
//!
//! 1. each chunk but the last scans from a zero state, keeping only where it
//!    ends, and the product of its decays `P = exp(A·ΣΔ)`;
//! 2. walking the chunks in order, the true starting state of chunk `k+1` is
//!    `P_k ⊙ start_k + end_k` — a few multiply-adds per chunk;
//! 3. every chunk scans again from its true start, writing `y` and the states.
//!
//! Backward does the same in reverse for the gradient reaching each state,
//! which obeys `dh_{t-1} = exp(Δ_t·A) ⊙ (dh_t + dy_t·C_t)`: linear again.
//!
//! The units of work are (sequence, chunk). With enough sequences to keep
//! every thread busy, [`chunk_len`] gives one chunk per sequence — phases 1
//! and 2 vanish and nothing is computed twice; a single long sequence is cut
//! into chunks so that all cores share it. The partial sums of `dA` and `dD`
//! are added in unit order, so results depend only on the chunking (and so
//! on the thread count, when a batch is smaller than it).
//!
//! The innermost loops run over the state (`N`) and are vectorised through
//! [`simd::dispatch`] with its polynomial `exp`. [`forward_naive`] and
//! [`backward_naive`] are the twins: the plain sequential scan in f64.

use rayon::prelude::*;

use crate::simd;

/// One scan's inputs, row-major: `u`, `dt` `[B, L, E]`; `a` `[E, N]`; `bm`,
/// `cm` `[B, L, N]`; `d` `[E]`.
#[derive(Clone, Copy)]
pub struct Scan<'a> {
    pub u: &'a [f32],
    pub dt: &'a [f32],
    pub a: &'a [f32],
    pub bm: &'a [f32],
    pub cm: &'a [f32],
    pub d: &'a [f32],
    pub b: usize,
    pub l: usize,
    pub e: usize,
    pub n: usize,
}

/// The gradients of a scan's six inputs, shaped like them.
pub struct ScanGrads {
    pub du: Vec<f32>,
    pub ddt: Vec<f32>,
    pub da: Vec<f32>,
    pub dbm: Vec<f32>,
    pub dcm: Vec<f32>,
    pub dd: Vec<f32>,
}

/// One chunk's gradient rows — `du`, `dΔ`, `dB`, `dC` — and its unit's
/// partial sums of `dA` and `dD`.
type Grads<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// Shortest chunk worth a unit of its own.
const MIN_CHUNK: usize = 16;

/// Steps per chunk for `b` sequences of `l` steps: the whole sequence when
/// the sequences alone give every thread work, else short enough that
/// (sequence, chunk) units give each thread about two, but not below 16 steps.
pub fn chunk_len(b: usize, l: usize) -> usize {
    let threads = rayon::current_num_threads();
    if b >= threads || l <= MIN_CHUNK {
        return l.max(1);
    }
    let chunks = (2 * threads).div_ceil(b);
    l.div_ceil(chunks).max(MIN_CHUNK)
}

/// `buf` of `b` sequences of `l` rows of `w` numbers, cut into one mutable
/// slice per (sequence, chunk of `chunk` rows), in that order.
fn unit_slices(buf: &mut [f32], b: usize, l: usize, w: usize, chunk: usize) -> Vec<&mut [f32]> {
    let mut out = Vec::with_capacity(b * l.div_ceil(chunk));
    let mut rest = buf;
    for _ in 0..b {
        for t0 in (0..l).step_by(chunk) {
            let rows = chunk.min(l - t0);
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(rows * w);
            out.push(head);
            rest = tail;
        }
    }
    out
}

impl Scan<'_> {
    fn chunks(&self, chunk: usize) -> usize {
        self.l.div_ceil(chunk)
    }

    /// Row `t` of sequence `bi`: its `u` and `Δ` (E each), its `B` and `C` (N each).
    #[inline(always)]
    fn row(&self, bi: usize, t: usize) -> (&[f32], &[f32], &[f32], &[f32]) {
        let (e, n) = (self.e, self.n);
        let r = bi * self.l + t;
        (&self.u[r * e..][..e], &self.dt[r * e..][..e], &self.bm[r * n..][..n], &self.cm[r * n..][..n])
    }

    /// `P = exp(A·ΣΔ)` over steps `t0..t1` of sequence `bi`: the product of the decays, `[E, N]`.
    fn decay_product(&self, bi: usize, t0: usize, t1: usize) -> Vec<f32> {
        let (e, n) = (self.e, self.n);
        let mut sum = vec![0.0f32; e];
        for t in t0..t1 {
            let dt = self.row(bi, t).1;
            sum.iter_mut().zip(dt).for_each(|(s, &x)| *s += x);
        }
        let mut p = vec![0.0f32; e * n];
        simd::dispatch(
            #[inline(always)]
            || {
                for c in 0..e {
                    let (pc, ac) = (&mut p[c * n..(c + 1) * n], &self.a[c * n..(c + 1) * n]);
                    pc.iter_mut().zip(ac).for_each(|(p, &a)| *p = simd::exp(a * sum[c]));
                }
            },
        );
        p
    }

    /// Steps `t0..t1` of sequence `bi` from state `h` (`[E, N]`, advanced in
    /// place). With `out`, also writes `y` (`[t1 - t0, E]`) and every state
    /// (`[t1 - t0, E, N]`).
    fn run(&self, bi: usize, t0: usize, t1: usize, h: &mut [f32], out: Option<(&mut [f32], &mut [f32])>) {
        // Mamba's N is 16: a state then fills two AVX2 registers, and with
        // its length known the loops over it unroll completely
        match self.n {
            16 => self.run_n::<16>(bi, t0, t1, h, out),
            _ => self.run_n::<0>(bi, t0, t1, h, out),
        }
    }

    /// [`Scan::run`] for states of `N` numbers (0: `self.n`, not known at compile time).
    fn run_n<const N: usize>(
        &self,
        bi: usize,
        t0: usize,
        t1: usize,
        h: &mut [f32],
        mut out: Option<(&mut [f32], &mut [f32])>,
    ) {
        let (e, n) = (self.e, if N > 0 { N } else { self.n });
        simd::dispatch(
            #[inline(always)]
            || {
                for t in t0..t1 {
                    let (u, dt, bt, ct) = self.row(bi, t);
                    // every length said to be n, so the loops over the state vectorise
                    let (bt, ct) = (&bt[..n], &ct[..n]);
                    for c in 0..e {
                        let hc = &mut h[c * n..(c + 1) * n];
                        let ac = &self.a[c * n..(c + 1) * n];
                        let (dtc, du) = (dt[c], dt[c] * u[c]);
                        for ((h, &a), &b) in hc.iter_mut().zip(ac).zip(bt) {
                            *h = simd::exp(dtc * a) * *h + du * b;
                        }
                        if let Some((y, _)) = out.as_mut() {
                            y[(t - t0) * e + c] = simd::dot(hc, ct) + self.d[c] * u[c];
                        }
                    }
                    if let Some((_, hs)) = out.as_mut() {
                        hs[(t - t0) * e * n..][..e * n].copy_from_slice(h);
                    }
                }
            },
        );
    }

    /// Reverse steps `t1-1 ..= t0` of sequence `bi`, with `dh` the gradient
    /// reaching the state after step `t1 - 1` (advanced in place to the one
    /// reaching the state before `t0`). With `out`, also the gradients of
    /// the chunk's rows — `du`, `dΔ` (`[t1 - t0, E]`), `dB`, `dC`
    /// (`[t1 - t0, N]`) — and adds to `dA`, `dD`; `hs` then holds every state
    /// of the sequence (`[L, E, N]`).
    #[allow(clippy::too_many_arguments)]
    fn run_back(&self, bi: usize, t0: usize, t1: usize, dy: &[f32], dh: &mut [f32], hs: &[f32], out: Option<Grads>) {
        match self.n {
            16 => self.run_back_n::<16>(bi, t0, t1, dy, dh, hs, out),
            _ => self.run_back_n::<0>(bi, t0, t1, dy, dh, hs, out),
        }
    }

    /// [`Scan::run_back`] for states of `N` numbers (0: `self.n`).
    #[allow(clippy::too_many_arguments)]
    fn run_back_n<const N: usize>(
        &self,
        bi: usize,
        t0: usize,
        t1: usize,
        dy: &[f32],
        dh: &mut [f32],
        hs: &[f32],
        mut out: Option<Grads>,
    ) {
        let (e, n, l) = (self.e, if N > 0 { N } else { self.n }, self.l);
        let (mut t1s, mut t2s) = (vec![0.0f32; n], vec![0.0f32; n]);
        let zero = vec![0.0f32; n];
        simd::dispatch(
            #[inline(always)]
            || {
                for t in (t0..t1).rev() {
                    let (u, dt, bt, ct) = self.row(bi, t);
                    let dyt = &dy[(bi * l + t) * e..][..e];
                    for c in 0..e {
                        let (dtc, uc, g_y) = (dt[c], u[c], dyt[c]);
                        let dhc = &mut dh[c * n..(c + 1) * n];
                        let ac = &self.a[c * n..(c + 1) * n];
                        let Some((du, ddt, dbm, dcm, da, dd)) = out.as_mut() else {
                            // only the gradient that flows on
                            for ((g, &a), &cv) in dhc.iter_mut().zip(ac).zip(ct) {
                                *g = (*g + g_y * cv) * simd::exp(dtc * a);
                            }
                            continue;
                        };
                        let h_t = &hs[(t * e + c) * n..][..n];
                        let h_prev = if t > 0 { &hs[((t - 1) * e + c) * n..][..n] } else { &zero[..] };
                        let r = t - t0;
                        let dct = &mut dcm[r * n..(r + 1) * n];
                        dct.iter_mut().zip(h_t).for_each(|(d, &h)| *d += g_y * h);
                        let dbt = &mut dbm[r * n..(r + 1) * n];
                        let dac = &mut da[c * n..(c + 1) * n];
                        let (ct, bt, h_prev) = (&ct[..n], &bt[..n], &h_prev[..n]);
                        let (dac, dbt, t1s, t2s) = (&mut dac[..n], &mut dbt[..n], &mut t1s[..n], &mut t2s[..n]);
                        for s in 0..n {
                            let g = dhc[s] + g_y * ct[s]; // all of h_t's gradient
                            let decay = simd::exp(dtc * ac[s]);
                            // h_t = decay·h_{t-1} + Δ·u·B
                            t1s[s] = g * (ac[s] * decay * h_prev[s] + uc * bt[s]);
                            t2s[s] = g * bt[s];
                            dac[s] += g * dtc * decay * h_prev[s];
                            dbt[s] += g * dtc * uc;
                            dhc[s] = g * decay;
                        }
                        ddt[r * e + c] = simd::sum(t1s);
                        du[r * e + c] = g_y * self.d[c] + dtc * simd::sum(t2s);
                        dd[c] += g_y * uc;
                    }
                }
            },
        );
    }
}

/// The scan from a zero state: `y` `[B, L, E]` and every state `[B, L, E, N]`
/// (for backward), in chunks of `chunk` steps (see [`chunk_len`]).
pub fn forward(s: &Scan, chunk: usize) -> (Vec<f32>, Vec<f32>) {
    let (b, l, e, n) = (s.b, s.l, s.e, s.n);
    let chunk = chunk.clamp(1, l.max(1));
    let nch = s.chunks(chunk);
    // phases 1 and 2: every chunk's true starting state
    let starts: Vec<Vec<f32>> = if nch == 1 {
        vec![vec![0.0; e * n]; b]
    } else {
        let ends: Vec<(Vec<f32>, Vec<f32>)> = (0..b * (nch - 1))
            .into_par_iter()
            .map(|unit| {
                let (bi, k) = (unit / (nch - 1), unit % (nch - 1));
                let (t0, t1) = (k * chunk, ((k + 1) * chunk).min(l));
                let mut h = vec![0.0f32; e * n];
                s.run(bi, t0, t1, &mut h, None);
                (h, s.decay_product(bi, t0, t1))
            })
            .collect();
        let mut starts = Vec::with_capacity(b * nch);
        for bi in 0..b {
            let mut h = vec![0.0f32; e * n];
            starts.push(h.clone());
            for (end, p) in &ends[bi * (nch - 1)..(bi + 1) * (nch - 1)] {
                h.iter_mut().zip(p).zip(end).for_each(|((h, &p), &x)| *h = p * *h + x);
                starts.push(h.clone());
            }
        }
        starts
    };
    // phase 3: every chunk from its true start
    // from the buffer pool: phase 3 writes every row of both
    let mut y = crate::pool::take(b * l * e);
    let mut hs = crate::pool::take(b * l * e * n);
    let units: Vec<_> =
        unit_slices(&mut y, b, l, e, chunk).into_iter().zip(unit_slices(&mut hs, b, l, e * n, chunk)).collect();
    units.into_par_iter().zip(starts).enumerate().for_each(|(unit, ((yu, hu), mut h))| {
        let (bi, k) = (unit / nch, unit % nch);
        let (t0, t1) = (k * chunk, ((k + 1) * chunk).min(l));
        s.run(bi, t0, t1, &mut h, Some((yu, hu)));
    });
    (y, hs)
}

/// The gradients of the scan, given `dy` `[B, L, E]` and the states `hs`
/// that [`forward`] returned; chunked like it.
pub fn backward(s: &Scan, hs: &[f32], dy: &[f32], chunk: usize) -> ScanGrads {
    let (b, l, e, n) = (s.b, s.l, s.e, s.n);
    let chunk = chunk.clamp(1, l.max(1));
    let nch = s.chunks(chunk);
    // phases 1 and 2: the gradient reaching the end of every chunk from the ones after it
    let incoming: Vec<Vec<f32>> = if nch == 1 {
        vec![vec![0.0; e * n]; b]
    } else {
        let outs: Vec<(Vec<f32>, Vec<f32>)> = (0..b * (nch - 1))
            .into_par_iter()
            .map(|unit| {
                let (bi, k) = (unit / (nch - 1), unit % (nch - 1) + 1);
                let (t0, t1) = (k * chunk, ((k + 1) * chunk).min(l));
                let mut dh = vec![0.0f32; e * n];
                s.run_back(bi, t0, t1, dy, &mut dh, &[], None);
                (dh, s.decay_product(bi, t0, t1))
            })
            .collect();
        let mut incoming = vec![Vec::new(); b * nch];
        for bi in 0..b {
            let mut dh = vec![0.0f32; e * n];
            incoming[bi * nch + nch - 1] = dh.clone();
            for k in (1..nch).rev() {
                let (out, p) = &outs[bi * (nch - 1) + k - 1];
                dh.iter_mut().zip(p).zip(out).for_each(|((g, &p), &x)| *g = p * *g + x);
                incoming[bi * nch + k - 1] = dh.clone();
            }
        }
        incoming
    };
    // phase 3: every chunk's gradients, from its true incoming gradient
    // every row of du and dΔ is written; dB and dC are sums over the channels
    let (mut du, mut ddt) = (crate::pool::take(b * l * e), crate::pool::take(b * l * e));
    let (mut dbm, mut dcm) = (crate::pool::take_zeroed(b * l * n), crate::pool::take_zeroed(b * l * n));
    let rows: Vec<_> = unit_slices(&mut du, b, l, e, chunk)
        .into_iter()
        .zip(unit_slices(&mut ddt, b, l, e, chunk))
        .zip(unit_slices(&mut dbm, b, l, n, chunk).into_iter().zip(unit_slices(&mut dcm, b, l, n, chunk)))
        .collect();
    let partial: Vec<(Vec<f32>, Vec<f32>)> = rows
        .into_par_iter()
        .zip(incoming)
        .enumerate()
        .map(|(unit, (((du, ddt), (dbm, dcm)), mut dh))| {
            let (bi, k) = (unit / nch, unit % nch);
            let (t0, t1) = (k * chunk, ((k + 1) * chunk).min(l));
            let (mut da, mut dd) = (vec![0.0f32; e * n], vec![0.0f32; e]);
            let hb = &hs[bi * l * e * n..(bi + 1) * l * e * n];
            s.run_back(bi, t0, t1, dy, &mut dh, hb, Some((du, ddt, dbm, dcm, &mut da, &mut dd)));
            (da, dd)
        })
        .collect();
    let (mut da, mut dd) = (vec![0.0f32; e * n], vec![0.0f32; e]);
    for (pa, pd) in &partial {
        da.iter_mut().zip(pa).for_each(|(x, y)| *x += y);
        dd.iter_mut().zip(pd).for_each(|(x, y)| *x += y);
    }
    ScanGrads { du, ddt, da, dbm, dcm, dd }
}

/// The twin of [`forward`]: the plain sequential scan, in f64. Returns `y`.
pub fn forward_naive(s: &Scan) -> Vec<f64> {
    naive(s, None).0
}

/// The twin of [`backward`], in f64: `[du, dΔ, dA, dB, dC, dD]`.
pub fn backward_naive(s: &Scan, dy: &[f32]) -> [Vec<f64>; 6] {
    naive(s, Some(dy)).1.expect("gradients were asked for")
}

fn naive(s: &Scan, dy: Option<&[f32]>) -> (Vec<f64>, Option<[Vec<f64>; 6]>) {
    let (b, l, e, n) = (s.b, s.l, s.e, s.n);
    let f = |x: f32| x as f64;
    let mut y = vec![0.0f64; b * l * e];
    let mut hs = vec![0.0f64; b * l * e * n];
    for bi in 0..b {
        for c in 0..e {
            let mut h = vec![0.0f64; n];
            for t in 0..l {
                let r = bi * l + t;
                let (dt, u) = (f(s.dt[r * e + c]), f(s.u[r * e + c]));
                let mut acc = f(s.d[c]) * u;
                for k in 0..n {
                    h[k] = (dt * f(s.a[c * n + k])).exp() * h[k] + dt * u * f(s.bm[r * n + k]);
                    acc += h[k] * f(s.cm[r * n + k]);
                    hs[(r * e + c) * n + k] = h[k];
                }
                y[r * e + c] = acc;
            }
        }
    }
    let Some(dy) = dy else { return (y, None) };
    let mut g = [
        vec![0.0f64; b * l * e],
        vec![0.0f64; b * l * e],
        vec![0.0f64; e * n],
        vec![0.0f64; b * l * n],
        vec![0.0f64; b * l * n],
        vec![0.0f64; e],
    ];
    for bi in 0..b {
        for c in 0..e {
            let mut dh = vec![0.0f64; n]; // reaching h_t from the steps after t
            for t in (0..l).rev() {
                let r = bi * l + t;
                let (dt, u, gy) = (f(s.dt[r * e + c]), f(s.u[r * e + c]), f(dy[r * e + c]));
                g[5][c] += gy * u;
                g[0][r * e + c] += gy * f(s.d[c]);
                for k in 0..n {
                    let a = f(s.a[c * n + k]);
                    let h_prev = if t > 0 { hs[((r - 1) * e + c) * n + k] } else { 0.0 };
                    let gh = dh[k] + gy * f(s.cm[r * n + k]);
                    let decay = (dt * a).exp();
                    g[4][r * n + k] += gy * hs[(r * e + c) * n + k];
                    g[1][r * e + c] += gh * (a * decay * h_prev + u * f(s.bm[r * n + k]));
                    g[2][c * n + k] += gh * dt * decay * h_prev;
                    g[3][r * n + k] += gh * dt * u;
                    g[0][r * e + c] += gh * dt * f(s.bm[r * n + k]);
                    dh[k] = gh * decay;
                }
            }
        }
    }
    (y, Some(g))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rng;

    struct Owned {
        v: Vec<Vec<f32>>,
        dims: [usize; 4],
    }

    impl Owned {
        fn new(rng: &mut Rng, b: usize, l: usize, e: usize, n: usize) -> Owned {
            let mut draw = |len: usize, lo: f32, hi: f32| (0..len).map(|_| lo + (hi - lo) * rng.uniform()).collect();
            let v = vec![
                draw(b * l * e, -1.5, 1.5),
                draw(b * l * e, 0.02, 0.6),
                draw(e * n, -2.0, -0.1),
                draw(b * l * n, -1.5, 1.5),
                draw(b * l * n, -1.5, 1.5),
                draw(e, -1.0, 1.0),
            ];
            Owned { v, dims: [b, l, e, n] }
        }

        fn scan(&self) -> Scan<'_> {
            let [b, l, e, n] = self.dims;
            let v = &self.v;
            Scan { u: &v[0], dt: &v[1], a: &v[2], bm: &v[3], cm: &v[4], d: &v[5], b, l, e, n }
        }
    }

    fn close(got: &[f32], want: &[f64], what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let ok = (g as f64 - w).abs() <= 2e-4 * (1.0 + w.abs());
            assert!(ok, "{what}[{i}]: {g} against the twin's {w}");
        }
    }

    /// One chunk per sequence, and chunks shorter than the sequence (with a
    /// ragged last one): forward and backward equal the sequential f64 scan.
    #[test]
    fn the_chunked_scan_equals_the_sequential_twin() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, the_chunked_scan_equals_the_sequential_twin_here);
    }

    fn the_chunked_scan_equals_the_sequential_twin_here() {
        let mut rng = Rng::new(41);
        for (b, l, e, n) in [(1, 1, 3, 2), (2, 37, 19, 5), (1, 64, 9, 16), (3, 50, 8, 16)] {
            let x = Owned::new(&mut rng, b, l, e, n);
            let s = x.scan();
            let dy: Vec<f32> = (0..b * l * e).map(|_| rng.uniform() * 2.0 - 1.0).collect();
            let want_y = forward_naive(&s);
            let want_g = backward_naive(&s, &dy);
            for chunk in [l, 16, 7, 1, chunk_len(b, l)] {
                let what = format!("B {b} L {l} E {e} N {n}, chunks of {chunk}");
                let (y, hs) = forward(&s, chunk);
                close(&y, &want_y, &format!("{what}: y"));
                let g = backward(&s, &hs, &dy, chunk);
                let names = ["du", "dΔ", "dA", "dB", "dC", "dD"];
                for ((got, want), name) in [&g.du, &g.ddt, &g.da, &g.dbm, &g.dcm, &g.dd].iter().zip(&want_g).zip(names)
                {
                    close(got, want, &format!("{what}: {name}"));
                }
            }
        }
    }

    #[test]
    fn a_single_sequence_is_cut_into_chunks_and_a_large_batch_is_not() {
        crate::threads::on_pools(
            &crate::threads::TEST_POOLS,
            a_single_sequence_is_cut_into_chunks_and_a_large_batch_is_not_here,
        );
    }

    fn a_single_sequence_is_cut_into_chunks_and_a_large_batch_is_not_here() {
        let threads = rayon::current_num_threads();
        assert_eq!(chunk_len(threads, 4096), 4096);
        assert_eq!(chunk_len(1, 8), 8);
        if threads > 1 {
            assert!(chunk_len(1, 4096) < 4096);
            assert!(chunk_len(1, 4096) >= MIN_CHUNK);
        }
    }

    #[test]
    fn results_do_not_depend_on_how_rayon_schedules_the_units() {
        let mut rng = Rng::new(42);
        let x = Owned::new(&mut rng, 2, 40, 11, 16);
        let s = x.scan();
        let dy: Vec<f32> = (0..2 * 40 * 11).map(|_| rng.uniform()).collect();
        let run = || {
            let (y, hs) = forward(&s, 9);
            let g = backward(&s, &hs, &dy, 9);
            (y, g.da, g.dd)
        };
        let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap().install(run);
        let many = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap().install(run);
        assert!(one.0 == many.0 && one.1 == many.1 && one.2 == many.2, "bits differ between thread counts");
    }
}
