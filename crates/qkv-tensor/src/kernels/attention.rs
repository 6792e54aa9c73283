//! Attention: `O = softmax(Q·Kᵀ·scale + bias) · V`, for every batch entry and
//! head.
//!
//! Two kernels compute the same thing:
//!
//! - [`attention_naive`] / [`attention_backward_naive`] build the whole
//!   `Tq × Tk` score matrix of a head, softmax it, multiply by V. Easy to read,
//!   but its memory grows with T²: 8 heads at T = 16384 need 8 GiB of scores.
//! - [`attention_flash`] / [`attention_flash_backward`] (the FlashAttention
//!   idea) walk the keys in tiles and keep, per query row, a running maximum `m`
//!   and running sum `l` of the exponentials (the *online softmax*): when a new
//!   tile raises the maximum, what was summed so far is rescaled by
//!   `exp(m_old - m_new)`. Only one tile of scores exists per task at a time, so
//!   extra memory is linear in T. Backward recomputes the tiles from the saved
//!   log-sum-exp of each row instead of storing the probabilities.
//! - [`attention_rows`] serves the forward pass when a head has only a few
//!   queries (one per step of generation), where a 64-row tile is mostly
//!   padding; [`attention_forward`] picks between it and the tiled kernel.
//!
//! Layouts. Q, K, V are [`Heads`]: logical `[B, H, T, D]` with any strides
//! (a view into a fused QKV projection needs no copy), unit stride along D.
//! Outputs and input gradients are written in `[B, T, H, D]` memory, which is
//! exactly the `[B, T, C]` the next projection reads.
//!
//! Masks. Query `i` sits at absolute position `i + Tk - Tq` (the queries are the
//! last `Tq` positions: a KV cache during generation). Causal masking hides keys
//! after that position; a key-padding mask hides padded keys; ALiBi adds
//! `-slope_h · |pos_i - j|`. A query that sees no key at all gets a zero output
//! and zero gradients, never NaN.

use rayon::prelude::*;

use super::SharedMut;
use super::tile::TileProduct;
use crate::simd;

/// Rows of a tile along the dimension that the inner loop walks (keys in the
/// forward pass, queries in backward).
pub const TILE: usize = 64;

/// Rows of the block a task owns (queries in the forward pass, keys in
/// backward). Longer sequences get larger blocks: each block streams the whole
/// other side (every key, or every query) through the cache once, so larger
/// blocks mean fewer passes over memory, at the price of a little work wasted
/// on the causal diagonal.
pub fn block_rows(t: usize) -> usize {
    match t {
        0..=4096 => 64,
        4097..=8192 => 128,
        _ => 256,
    }
}

/// Largest `Tq × D` for which the backward pass accumulates a head's dQ in a
/// contiguous buffer of its own (one per running task) before copying it out.
/// The rows of dQ in the output lie `H·D` floats (or `3C`) apart, so adding
/// tile after tile into them in place thrashes a few L1 sets; the buffer is
/// faster (T = 4096: 2–14 % on the whole forward+backward, or level), but at
/// T = 16384 its 4 MiB per thread would lift peak memory above PyTorch's.
const DQ_BUFFER_MAX: usize = 1 << 19;

/// Whether the backward pass accumulates dQ in place (see [`DQ_BUFFER_MAX`]).
fn dq_in_place(tq: usize, d: usize) -> bool {
    tq * d > DQ_BUFFER_MAX
}

/// A `[B, H, T, D]` view: element `(b, h, t, d)` at
/// `data[offset + b*sb + h*sh + t*st + d]`.
#[derive(Clone, Copy, Debug)]
pub struct Heads<'a> {
    pub data: &'a [f32],
    pub offset: usize,
    pub b: usize,
    pub h: usize,
    pub t: usize,
    pub d: usize,
    pub sb: usize,
    pub sh: usize,
    pub st: usize,
}

impl<'a> Heads<'a> {
    /// Heads packed as `[B, T, H, D]` (the layout of this module's outputs).
    pub fn bthd(data: &'a [f32], b: usize, h: usize, t: usize, d: usize) -> Self {
        Heads { data, offset: 0, b, h, t, d, sb: t * h * d, sh: d, st: h * d }
    }

    #[inline]
    fn at(&self, b: usize, h: usize, t: usize, d: usize) -> f32 {
        self.data[self.offset + b * self.sb + h * self.sh + t * self.st + d]
    }

    /// True when every element lies inside `data`.
    pub fn fits(&self) -> bool {
        [self.b, self.h, self.t, self.d].contains(&0)
            || self.offset + (self.b - 1) * self.sb + (self.h - 1) * self.sh + (self.t - 1) * self.st + self.d
                <= self.data.len()
    }
}

/// What hides or tilts the scores.
#[derive(Clone, Copy, Debug, Default)]
pub struct AttnMask<'a> {
    /// Keys after a query's position are hidden.
    pub causal: bool,
    /// `[B, Tk]`: `false` hides that key (padding).
    pub key_mask: Option<&'a [bool]>,
    /// `[H]`: ALiBi slopes.
    pub alibi: Option<&'a [f32]>,
}

impl AttnMask<'_> {
    /// The additive term for score `(b, h, query position p, key j)`, or `None` if hidden.
    #[inline]
    fn bias(&self, b: usize, h: usize, tk: usize, p: isize, j: usize) -> Option<f32> {
        if self.causal && j as isize > p {
            return None;
        }
        if let Some(m) = self.key_mask
            && !m[b * tk + j]
        {
            return None;
        }
        Some(match self.alibi {
            Some(s) => -s[h] * (p - j as isize).unsigned_abs() as f32,
            None => 0.0,
        })
    }
}

pub struct AttnOut {
    /// `[B, Tq, H, D]`
    pub out: Vec<f32>,
    /// `[B, H, Tq]`: log Σ_j exp(score_ij), +inf for a query that sees nothing.
    pub lse: Vec<f32>,
}

pub struct AttnGrads {
    /// `[B, Tq, H, D]`
    pub dq: Vec<f32>,
    /// `[B, Tk, H, D]`
    pub dk: Vec<f32>,
    /// `[B, Tk, H, D]`
    pub dv: Vec<f32>,
}

// ------------------------------------------------------------------ naive twin

/// Scores of one head, `[Tq, Tk]`, with masked entries at -inf.
fn scores_naive(q: &Heads, k: &Heads, mask: &AttnMask, scale: f32, b: usize, h: usize) -> Vec<f64> {
    let (tq, tk, d) = (q.t, k.t, q.d);
    let off = tk as isize - tq as isize;
    let mut s = vec![f64::NEG_INFINITY; tq * tk];
    for i in 0..tq {
        for j in 0..tk {
            if let Some(bias) = mask.bias(b, h, tk, i as isize + off, j) {
                let dot: f64 = (0..d).map(|x| q.at(b, h, i, x) as f64 * k.at(b, h, j, x) as f64).sum();
                s[i * tk + j] = dot * scale as f64 + bias as f64;
            }
        }
    }
    s
}

/// Softmax of each score row in place; returns the log-sum-exp of each row.
fn softmax_naive(s: &mut [f64], tk: usize) -> Vec<f32> {
    s.chunks_exact_mut(tk.max(1))
        .map(|row| {
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            if m == f64::NEG_INFINITY {
                row.fill(0.0);
                return f32::INFINITY;
            }
            let sum: f64 = row.iter().map(|x| (x - m).exp()).sum();
            row.iter_mut().for_each(|x| *x = (*x - m).exp() / sum);
            (m + sum.ln()) as f32
        })
        .collect()
}

/// Reference forward: materialises each head's `Tq × Tk` probabilities.
pub fn attention_naive(q: &Heads, k: &Heads, v: &Heads, mask: &AttnMask, scale: f32) -> AttnOut {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    let mut out = vec![0.0; bn * tq * hn * d];
    let mut lse = vec![0.0; bn * hn * tq];
    for b in 0..bn {
        for h in 0..hn {
            let mut p = scores_naive(q, k, mask, scale, b, h);
            let l = softmax_naive(&mut p, tk);
            lse[(b * hn + h) * tq..][..tq].copy_from_slice(&l);
            for i in 0..tq {
                for x in 0..d {
                    let o: f64 = (0..tk).map(|j| p[i * tk + j] * v.at(b, h, j, x) as f64).sum();
                    out[((b * tq + i) * hn + h) * d + x] = o as f32;
                }
            }
        }
    }
    AttnOut { out, lse }
}

/// The probabilities themselves, `[B, H, Tq, Tk]`: what each query gives each
/// key, for pictures of attention. Computed as [`attention_naive`] computes
/// them (f64 scores, the same masks), so they are the weights behind its output;
/// a query that sees no key gets a row of zeros.
pub fn probabilities_naive(q: &Heads, k: &Heads, mask: &AttnMask, scale: f32) -> Vec<f32> {
    let (bn, hn, tq, tk) = (q.b, q.h, q.t, k.t);
    let mut out = Vec::with_capacity(bn * hn * tq * tk);
    for b in 0..bn {
        for h in 0..hn {
            let mut p = scores_naive(q, k, mask, scale, b, h);
            softmax_naive(&mut p, tk);
            out.extend(p.iter().map(|&x| x as f32));
        }
    }
    out
}

/// Reference backward. With `P` the probabilities and `dO` the output gradient:
/// `dV = Pᵀ·dO`, `dP = dO·Vᵀ`, `dS = P ∘ (dP - rowsum(dP ∘ P))`,
/// `dQ = scale·dS·K`, `dK = scale·dSᵀ·Q`.
pub fn attention_backward_naive(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    dout: &Heads,
    mask: &AttnMask,
    scale: f32,
) -> AttnGrads {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    let mut dq = vec![0.0; bn * tq * hn * d];
    let mut dk = vec![0.0; bn * tk * hn * d];
    let mut dv = vec![0.0; bn * tk * hn * d];
    for b in 0..bn {
        for h in 0..hn {
            let mut p = scores_naive(q, k, mask, scale, b, h);
            softmax_naive(&mut p, tk);
            let mut dp = vec![0.0f64; tq * tk];
            for i in 0..tq {
                for j in 0..tk {
                    dp[i * tk + j] = (0..d).map(|x| dout.at(b, h, i, x) as f64 * v.at(b, h, j, x) as f64).sum();
                }
                let row_dot: f64 = (0..tk).map(|j| dp[i * tk + j] * p[i * tk + j]).sum();
                for j in 0..tk {
                    dp[i * tk + j] = p[i * tk + j] * (dp[i * tk + j] - row_dot); // now dS
                }
            }
            for j in 0..tk {
                for x in 0..d {
                    let gv: f64 = (0..tq).map(|i| p[i * tk + j] * dout.at(b, h, i, x) as f64).sum();
                    let gk: f64 = (0..tq).map(|i| dp[i * tk + j] * q.at(b, h, i, x) as f64).sum();
                    dv[((b * tk + j) * hn + h) * d + x] = gv as f32;
                    dk[((b * tk + j) * hn + h) * d + x] = (gk * scale as f64) as f32;
                }
            }
            for i in 0..tq {
                for x in 0..d {
                    let gq: f64 = (0..tk).map(|j| dp[i * tk + j] * k.at(b, h, j, x) as f64).sum();
                    dq[((b * tq + i) * hn + h) * d + x] = (gq * scale as f64) as f32;
                }
            }
        }
    }
    AttnGrads { dq, dk, dv }
}

// ------------------------------------------------------------------ flash

/// A raw pointer that parallel tasks share; each writes its own elements.
/// Apply masking/bias to a tile of scores `s` (`br × bc`, row stride `bc`)
/// for query rows `i0..` and keys `j0..`. Returns quickly when nothing applies.
#[allow(clippy::too_many_arguments)]
fn mask_tile(
    s: &mut [f32],
    br: usize,
    bc: usize,
    i0: usize,
    j0: usize,
    off: isize,
    tk: usize,
    b: usize,
    h: usize,
    mask: &AttnMask,
) {
    let crosses_diagonal = mask.causal && (j0 + bc - 1) as isize > i0 as isize + off;
    let has_padding = mask.key_mask.is_some_and(|m| m[b * tk + j0..b * tk + j0 + bc].iter().any(|&keep| !keep));
    if !crosses_diagonal && !has_padding && mask.alibi.is_none() {
        return;
    }
    for r in 0..br {
        let p = (i0 + r) as isize + off;
        let row = &mut s[r * bc..(r + 1) * bc];
        for (c, x) in row.iter_mut().enumerate() {
            match mask.bias(b, h, tk, p, j0 + c) {
                Some(bias) => *x += bias,
                None => *x = f32::NEG_INFINITY,
            }
        }
    }
}

/// [`mask_tile`] for a transposed tile `sᵀ` (`bc × br`, row stride `br`).
#[allow(clippy::too_many_arguments)]
fn mask_tile_t(
    s: &mut [f32],
    br: usize,
    bc: usize,
    i0: usize,
    j0: usize,
    off: isize,
    tk: usize,
    b: usize,
    h: usize,
    mask: &AttnMask,
) {
    let crosses_diagonal = mask.causal && (j0 + bc - 1) as isize > i0 as isize + off;
    let has_padding = mask.key_mask.is_some_and(|m| m[b * tk + j0..b * tk + j0 + bc].iter().any(|&keep| !keep));
    if !crosses_diagonal && !has_padding && mask.alibi.is_none() {
        return;
    }
    for c in 0..bc {
        let row = &mut s[c * br..(c + 1) * br];
        for (r, x) in row.iter_mut().enumerate() {
            match mask.bias(b, h, tk, (i0 + r) as isize + off, j0 + c) {
                Some(bias) => *x += bias,
                None => *x = f32::NEG_INFINITY,
            }
        }
    }
}

/// Number of key columns a causal query block `i0..i1` can see.
fn visible_keys(mask: &AttnMask, i1: usize, off: isize, tk: usize) -> usize {
    if mask.causal { ((i1 as isize - 1 + off + 1).max(0) as usize).min(tk) } else { tk }
}

/// Rows `t0 .. t0 + rows` of head `(b, h)` as the slice starting at row `t0`
/// plus its row stride (unit stride along D).
fn head_rows<'a>(x: &Heads<'a>, b: usize, h: usize, t0: usize) -> (&'a [f32], usize) {
    (&x.data[x.offset + b * x.sb + h * x.sh + t0 * x.st..], x.st)
}

/// Ask the CPU to start bringing `rows` rows of `len` floats, `stride` apart,
/// at the start of `x` into its L2 cache: the next query tile that the
/// backward pass will stream in. The hardware prefetcher alone left each
/// tile's first product waiting on Q, dO and dQ rows from L3; asking one tile
/// ahead made the backward pass 3–7 % faster at T = 4096. Only a hint: it
/// reads nothing and stops at the end of `x`.
#[inline]
fn prefetch_rows(x: &[f32], stride: usize, rows: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T1, _mm_prefetch};
        for r in 0..rows {
            // one hint per 64-byte line
            for c in (0..len).step_by(16) {
                if let Some(at) = x.get(r * stride + c) {
                    // SAFETY: a prefetch of an address inside `x` has no effect but on caches.
                    unsafe { _mm_prefetch::<_MM_HINT_T1>(std::ptr::from_ref(at).cast::<i8>()) };
                }
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (x, stride, rows, len);
}

/// Copy `rows` rows of a head, transposed, into `dst` as `D × rows` (row stride `rows`).
///
/// Written one row of `dst` at a time (reading down a column of the head).
/// The other order, reading a row and scattering it down a column of `dst`,
/// took twice as long, most likely because its scattered stores kept
/// matching later loads' addresses modulo 4 KiB, which makes the loads wait.
/// In the MiniLM encoder's attention (T = 128, D = 32) this copy went from
/// ~19 % to ~9 % of a forward task's cycles.
fn pack_transposed(dst: &mut [f32], x: &Heads, b: usize, h: usize, t0: usize, rows: usize) {
    if rows == 0 {
        return;
    }
    let (src, st) = head_rows(x, b, h, t0);
    for (dd, col) in dst.chunks_exact_mut(rows).take(x.d).enumerate() {
        for (r, v) in col.iter_mut().enumerate() {
            *v = src[r * st + dd];
        }
    }
}

/// One key tile's step of the online softmax for queries `q0 .. q0 + W`:
/// `W` columns of the tile `Sᵀ` (`bc × br`), whose running max and sum stay
/// in registers while every key row goes by. Raises the max `m`, turns the
/// scores into `exp(s - m)` in place, adds them to the sum `l`, and leaves in
/// `alpha` the factor `exp(m_old - m_new)` by which the output accumulated so
/// far must shrink (exactly 1 when the max stays). Keeping the statistics in
/// registers instead of sweeping `br`-long arrays once per key row made the
/// whole forward pass 5–8 % faster at T = 4096.
#[inline(always)]
fn softmax_columns<const W: usize>(
    st: &mut [f32],
    br: usize,
    q0: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    let cols = q0..q0 + W;
    let mut mx: [f32; W] = m[cols.clone()].try_into().expect("W columns");
    for row in st.chunks_exact(br) {
        for (mx, &x) in mx.iter_mut().zip(&row[cols.clone()]) {
            // one vmaxps; a NaN score leaves the max alone and stays NaN below
            *mx = if x > *mx { x } else { *mx };
        }
    }
    // a query that sees nothing yet keeps max -inf; exp against 0 then gives 0, not NaN
    for mx in mx.iter_mut() {
        if *mx == f32::NEG_INFINITY {
            *mx = 0.0;
        }
    }
    let mut sum = [0.0f32; W];
    for row in st.chunks_exact_mut(br) {
        for ((x, &mx), sum) in row[cols.clone()].iter_mut().zip(&mx).zip(&mut sum) {
            *x = simd::exp_shifted(*x - mx);
            *sum += *x;
        }
    }
    for (i, r) in cols.enumerate() {
        alpha[r] = simd::exp_shifted(m[r] - mx[i]);
        l[r] = l[r] * alpha[r] + sum[i];
        m[r] = if l[r] > 0.0 { mx[i] } else { f32::NEG_INFINITY };
    }
}

/// Tiled forward with online softmax. Memory beyond the output: one tile of
/// scores and one accumulator per running task.
///
/// A task owns one block of queries of one head ([`block_rows`]). It keeps the scores
/// transposed (`Sᵀ`, keys × queries), so that the per-query running max and
/// sum are updated for all its queries at once, as vectors, and only its own
/// queries need a transposed copy (once per task, not once per key tile).
pub fn attention_flash(q: &Heads, k: &Heads, v: &Heads, mask: &AttnMask, scale: f32) -> AttnOut {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    assert!(q.fits() && k.fits() && v.fits(), "attention: a view reaches past its buffer");
    let off = tk as isize - tq as isize;
    let mut out = crate::pool::take(bn * tq * hn * d);
    let mut lse = crate::pool::take(bn * hn * tq);
    let block = block_rows(tq);
    let nq = tq.div_ceil(block);
    let (out_ptr, lse_ptr) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    (0..bn * hn * nq).into_par_iter().for_each(move |task| {
        let (b, h, qb) = (task / (hn * nq), task / nq % hn, task % nq);
        let i0 = qb * block;
        let br = block.min(tq - i0);
        let mut qt = vec![0.0f32; d * br]; // Q_iᵀ: D × br
        pack_transposed(&mut qt, q, b, h, i0, br);
        let mut st = vec![0.0f32; TILE * br]; // Sᵀ, then Pᵀ: bc × br
        let mut acc = vec![0.0f32; br * d]; // Σ_j P·V, rescaled as the max grows
        let mut m = vec![f32::NEG_INFINITY; br]; // running max per query
        let mut l = vec![0.0f32; br]; // running Σ exp(s - m) per query
        let mut alpha = vec![0.0f32; br]; // exp(m_old - m_new) per query, this tile
        let keys = visible_keys(mask, i0 + br, off, tk);
        let mut j0 = 0;
        while j0 < keys {
            let bc = TILE.min(keys - j0);
            let st = &mut st[..bc * br];
            // Sᵀ = scale · K_j · Q_iᵀ
            let (kj, k_st) = head_rows(k, b, h, j0);
            TileProduct { m: bc, n: br, k: d, ar: k_st, ac: 1, ldb: br, ldc: br, s: scale, accumulate: false }
                .run(st, kj, &qt);
            mask_tile_t(st, br, bc, i0, j0, off, tk, b, h, mask);
            simd::dispatch(
                #[inline(always)]
                || {
                    // 16 queries at a time (two AVX registers of each running statistic)
                    let mut q0 = 0;
                    while q0 + 16 <= br {
                        softmax_columns::<16>(st, br, q0, &mut m, &mut l, &mut alpha);
                        q0 += 16;
                    }
                    for q0 in q0..br {
                        softmax_columns::<1>(st, br, q0, &mut m, &mut l, &mut alpha);
                    }
                    for (r, &a) in alpha.iter().enumerate() {
                        if a != 1.0 {
                            acc[r * d..(r + 1) * d].iter_mut().for_each(|x| *x *= a);
                        }
                    }
                },
            );
            // acc += P · V_j   (P read through Pᵀ's strides)
            let (vj, v_st) = head_rows(v, b, h, j0);
            TileProduct { m: br, n: d, k: bc, ar: 1, ac: br, ldb: v_st, ldc: d, s: 1.0, accumulate: true }
                .run(&mut acc, st, vj);
            j0 += bc;
        }
        // O_i = acc / l, through slices so that it becomes vector code: as
        // scalar stores through a raw pointer it took twice as long (T = 128:
        // ~15 % of a forward task's cycles, now ~7 %).
        simd::dispatch(
            #[inline(always)]
            || {
                for (r, (a, &l)) in acc.chunks_exact(d).zip(&l).enumerate() {
                    let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
                    // SAFETY: task (b, h, qb) alone writes rows i0..i0+br of head h
                    // of batch b, out[b, i, h, :], which lie inside `out`.
                    let o = unsafe {
                        std::slice::from_raw_parts_mut(out_ptr.ptr().add(((b * tq + i0 + r) * hn + h) * d), d)
                    };
                    for (o, &a) in o.iter_mut().zip(a) {
                        *o = a * inv;
                    }
                }
            },
        );
        for (r, (&m, &l)) in m.iter().zip(&l).enumerate() {
            // SAFETY: as above, for lse[b, h, i0 + r].
            unsafe {
                *lse_ptr.ptr().add((b * hn + h) * tq + i0 + r) = if l > 0.0 { m + l.ln() } else { f32::INFINITY };
            }
        }
    });
    AttnOut { out, lse }
}

/// Most queries per head that [`attention_forward`] sends to
/// [`attention_rows`] instead of the tiled kernel.
pub const FEW_QUERIES: usize = 4;

/// Least work (`B·H·Tq·Tk·D`) for which [`attention_rows`] spreads its heads
/// over threads; below it, waking them costs more than the products.
pub const ROWS_PAR_MIN: usize = 1 << 15;

/// The forward pass the op runs: [`attention_rows`] for a few queries per
/// head (decoding with a KV cache adds one), [`attention_flash`] otherwise.
/// Both leave the same `out` and `lse`, so either feeds the tiled backward.
pub fn attention_forward(q: &Heads, k: &Heads, v: &Heads, mask: &AttnMask, scale: f32) -> AttnOut {
    if q.t <= FEW_QUERIES { attention_rows(q, k, v, mask, scale) } else { attention_flash(q, k, v, mask, scale) }
}

/// Attention one query row at a time, for a few queries per head. A flash
/// tile is 64 queries by 64 keys; with one query (each step of generation),
/// 15 of the 16 columns of the tile kernel's `K·Qᵀ` and 5 of the 6 rows of
/// its `P·V` would compute padding. Here a query's scores are dot products
/// along D, its softmax runs along the keys, and the values are summed with
/// those weights along D: all of it vector code without waste. Memory: one
/// row of `Tk` scores per task (a task is one head of one sequence).
pub fn attention_rows(q: &Heads, k: &Heads, v: &Heads, mask: &AttnMask, scale: f32) -> AttnOut {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    assert!(q.fits() && k.fits() && v.fits(), "attention: a view reaches past its buffer");
    let off = tk as isize - tq as isize;
    let mut out = crate::pool::take(bn * tq * hn * d);
    let mut lse = crate::pool::take(bn * hn * tq);
    let (out_ptr, lse_ptr) = (SharedMut(out.as_mut_ptr()), SharedMut(lse.as_mut_ptr()));
    let task = move |task: usize| {
        let (b, h) = (task / hn, task % hn);
        let mut scores = vec![0.0f32; tk];
        let mut acc = vec![0.0f32; d];
        let (keys_all, k_st) = head_rows(k, b, h, 0);
        let (values_all, v_st) = head_rows(v, b, h, 0);
        for i in 0..tq {
            let (qi, _) = head_rows(q, b, h, i);
            let qi = &qi[..d];
            let keys = visible_keys(mask, i + 1, off, tk);
            let s = &mut scores[..keys];
            row_scores(s, qi, keys_all, k_st, scale);
            if keys > 0 {
                mask_tile(s, 1, keys, i, 0, off, tk, b, h, mask);
            }
            // softmax along the keys: p_j = exp(s_j - max), l = Σ_j p_j
            let (m, l) = simd::dispatch(
                #[inline(always)]
                || {
                    let m = simd::max(s);
                    // a query that sees no key: exp(-inf - 0) = 0, so l = 0 and the output 0
                    let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
                    s.iter_mut().for_each(|x| *x = simd::exp_shifted(*x - m));
                    (m, simd::sum(s))
                },
            );
            // acc = Σ_j p_j · v_j, normalised below
            row_weighted_sum(&mut acc, s, values_all, v_st);
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            // SAFETY: task (b, h) alone writes row i of head h of batch b,
            // out[b, i, h, :] and lse[b, h, i], which lie inside their buffers.
            unsafe {
                let o = std::slice::from_raw_parts_mut(out_ptr.ptr().add(((b * tq + i) * hn + h) * d), d);
                for (o, &a) in o.iter_mut().zip(&acc) {
                    *o = a * inv;
                }
                *lse_ptr.ptr().add((b * hn + h) * tq + i) = if l > 0.0 { m + l.ln() } else { f32::INFINITY };
            }
        }
    };
    if bn * hn * tq * tk * d >= ROWS_PAR_MIN {
        (0..bn * hn).into_par_iter().for_each(task);
    } else {
        (0..bn * hn).for_each(task);
    }
    AttnOut { out, lse }
}

/// `s[j] = scale · q · k_j` for the rows `k_j = keys[j·st .. j·st + D]`
/// (`D = q.len()`): eight keys at a time in AVX2 registers when D is a
/// multiple of 8 ([`row_scores_plain`] is its twin). Left to LLVM, the plain
/// loop became 4-lane multiplies and shuffles, slower than the tile kernel.
fn row_scores(s: &mut [f32], q: &[f32], keys: &[f32], st: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd::instruction_set() == "avx2+fma" && q.len().is_multiple_of(8) && !s.is_empty() {
        assert!((s.len() - 1) * st + q.len() <= keys.len(), "row_scores: keys past their buffer");
        // SAFETY: AVX2+FMA present; every key row lies in `keys` (checked above).
        unsafe { avx2::row_scores(s, q, keys, st, scale) };
        return;
    }
    row_scores_plain(s, q, keys, st, scale);
}

/// [`row_scores`] one product at a time.
fn row_scores_plain(s: &mut [f32], q: &[f32], keys: &[f32], st: usize, scale: f32) {
    let d = q.len();
    for (j, x) in s.iter_mut().enumerate() {
        *x = scale * q.iter().zip(&keys[j * st..j * st + d]).map(|(a, b)| a * b).sum::<f32>();
    }
}

/// `acc = Σ_j p[j] · v_j` for the rows `v_j = values[j·st .. j·st + D]`
/// (`D = acc.len()`): 64 columns at a time in eight AVX2 registers when D is
/// a multiple of 8 ([`row_weighted_sum_plain`] is its twin).
fn row_weighted_sum(acc: &mut [f32], p: &[f32], values: &[f32], st: usize) {
    #[cfg(target_arch = "x86_64")]
    if simd::instruction_set() == "avx2+fma" && acc.len().is_multiple_of(8) && !p.is_empty() {
        assert!((p.len() - 1) * st + acc.len() <= values.len(), "row_weighted_sum: values past their buffer");
        // SAFETY: AVX2+FMA present; every value row lies in `values` (checked above).
        unsafe { avx2::row_weighted_sum(acc, p, values, st) };
        return;
    }
    row_weighted_sum_plain(acc, p, values, st);
}

/// [`row_weighted_sum`] one product at a time.
fn row_weighted_sum_plain(acc: &mut [f32], p: &[f32], values: &[f32], st: usize) {
    let d = acc.len();
    acc.fill(0.0);
    for (j, &w) in p.iter().enumerate() {
        for (a, &x) in acc.iter_mut().zip(&values[j * st..j * st + d]) {
            *a += w * x;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// [`super::row_scores`] for D a multiple of 8.
    ///
    /// # Safety
    /// AVX2+FMA present; `keys` holds `(s.len() - 1)·st + q.len()` floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_scores(s: &mut [f32], q: &[f32], keys: &[f32], st: usize, scale: f32) {
        let (n, d) = (s.len(), q.len());
        let (qp, kp) = (q.as_ptr(), keys.as_ptr());
        let sv = _mm256_set1_ps(scale);
        let mut j = 0;
        // SAFETY (whole body): row j + r < n reads keys[(j + r)·st .. + d], inside `keys`.
        unsafe {
            while j + 8 <= n {
                // eight dot products side by side, each in its own register
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in (0..d).step_by(8) {
                    let qv = _mm256_loadu_ps(qp.add(c));
                    for (r, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add((j + r) * st + c)), *a);
                    }
                }
                // horizontal sums: after three rounds of hadd, lane r of the
                // low half plus lane r of the high half is key j + r's score
                let h01 = _mm256_hadd_ps(acc[0], acc[1]);
                let h23 = _mm256_hadd_ps(acc[2], acc[3]);
                let h45 = _mm256_hadd_ps(acc[4], acc[5]);
                let h67 = _mm256_hadd_ps(acc[6], acc[7]);
                let (h0123, h4567) = (_mm256_hadd_ps(h01, h23), _mm256_hadd_ps(h45, h67));
                let lo = _mm256_permute2f128_ps::<0x20>(h0123, h4567);
                let hi = _mm256_permute2f128_ps::<0x31>(h0123, h4567);
                _mm256_storeu_ps(s.as_mut_ptr().add(j), _mm256_mul_ps(sv, _mm256_add_ps(lo, hi)));
                j += 8;
            }
            for (j, x) in s.iter_mut().enumerate().skip(j) {
                let mut a = _mm256_setzero_ps();
                for c in (0..d).step_by(8) {
                    a = _mm256_fmadd_ps(_mm256_loadu_ps(qp.add(c)), _mm256_loadu_ps(kp.add(j * st + c)), a);
                }
                let h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
                let h = _mm_hadd_ps(h, h);
                *x = scale * _mm_cvtss_f32(_mm_hadd_ps(h, h));
            }
        }
    }

    /// [`super::row_weighted_sum`] for D a multiple of 8.
    ///
    /// # Safety
    /// AVX2+FMA present; `values` holds `(p.len() - 1)·st + acc.len()` floats.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_weighted_sum(acc: &mut [f32], p: &[f32], values: &[f32], st: usize) {
        let d = acc.len();
        let vp = values.as_ptr();
        let mut c0 = 0;
        // SAFETY (whole body): row j < p.len() reads values[j·st + c0 .. + 64 or + 8], inside `values`.
        unsafe {
            // 64 columns at a time: eight independent sums, each row of V read once
            while c0 + 64 <= d {
                let mut a = [_mm256_setzero_ps(); 8];
                for (j, &w) in p.iter().enumerate() {
                    let wv = _mm256_set1_ps(w);
                    for (r, a) in a.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(wv, _mm256_loadu_ps(vp.add(j * st + c0 + 8 * r)), *a);
                    }
                }
                for (r, a) in a.iter().enumerate() {
                    _mm256_storeu_ps(acc.as_mut_ptr().add(c0 + 8 * r), *a);
                }
                c0 += 64;
            }
            while c0 < d {
                let mut a = _mm256_setzero_ps();
                for (j, &w) in p.iter().enumerate() {
                    a = _mm256_fmadd_ps(_mm256_set1_ps(w), _mm256_loadu_ps(vp.add(j * st + c0)), a);
                }
                _mm256_storeu_ps(acc.as_mut_ptr().add(c0), a);
                c0 += 8;
            }
        }
    }
}

/// Tiled backward (FlashAttention-2 order: key tiles outer, query tiles inner),
/// one task per `(batch, head)`. `out` and `lse` come from the forward pass;
/// `dout` is the output gradient as `[B, H, Tq, D]` heads. The gradients come
/// back in `[B, T, H, D]` layout.
#[allow(clippy::too_many_arguments)]
pub fn attention_flash_backward(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    out: &[f32],
    lse: &[f32],
    dout: &Heads,
    mask: &AttnMask,
    scale: f32,
) -> AttnGrads {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    let mut dq = crate::pool::take(bn * tq * hn * d);
    let mut dk = crate::pool::take(bn * tk * hn * d);
    let mut dv = crate::pool::take(bn * tk * hn * d);
    let grads = GradsOut {
        dq: SharedMut(dq.as_mut_ptr()),
        dk: SharedMut(dk.as_mut_ptr()),
        dv: SharedMut(dv.as_mut_ptr()),
        q_rs: hn * d,
        kv_rs: hn * d,
        dq_in_place: dq_in_place(tq, d),
    };
    // SAFETY: the three buffers have exactly the [B, T, H, D] sizes that the
    // row strides describe.
    unsafe { flash_backward(q, k, v, out, lse, dout, mask, scale, grads) };
    AttnGrads { dq, dk, dv }
}

/// [`attention_flash_backward`] for queries, keys and values packed in one
/// `[B, T, 3C]` tensor (a fused QKV projection): the gradient comes back in
/// that same layout, each row `[dq | dk | dv]`, ready for the projection's
/// backward without splitting or re-assembling.
#[allow(clippy::too_many_arguments)]
pub fn attention_flash_backward_packed(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    out: &[f32],
    lse: &[f32],
    dout: &Heads,
    mask: &AttnMask,
    scale: f32,
) -> Vec<f32> {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    assert_eq!(tq, tk, "packed QKV means self-attention");
    let c = hn * d;
    let mut g = crate::pool::take(bn * tq * 3 * c);
    let base = g.as_mut_ptr();
    // SAFETY: offsets c and 2c stay inside each 3c-wide row of `g`.
    let grads = unsafe {
        GradsOut {
            dq: SharedMut(base),
            dk: SharedMut(base.add(c)),
            dv: SharedMut(base.add(2 * c)),
            q_rs: 3 * c,
            kv_rs: 3 * c,
            dq_in_place: dq_in_place(tq, d),
        }
    };
    // SAFETY: rows of 3c, of which each of dq/dk/dv owns its c columns.
    unsafe { flash_backward(q, k, v, out, lse, dout, mask, scale, grads) };
    g
}

/// Where the backward pass writes: element `(b, t, h, x)` of dq at
/// `dq + (b·Tq + t)·q_rs + h·D + x`, of dk and dv likewise with `kv_rs`.
struct GradsOut {
    dq: SharedMut,
    dk: SharedMut,
    dv: SharedMut,
    q_rs: usize,
    kv_rs: usize,
    /// Accumulate dQ straight into `dq` instead of a per-head buffer.
    dq_in_place: bool,
}

/// # Safety
/// `grads` must point at buffers large enough for its strides, not otherwise
/// in use during the call. Every element of dq, dk and dv is written (none
/// needs zeroing first).
#[allow(clippy::too_many_arguments)]
unsafe fn flash_backward(
    q: &Heads,
    k: &Heads,
    v: &Heads,
    out: &[f32],
    lse: &[f32],
    dout: &Heads,
    mask: &AttnMask,
    scale: f32,
    grads: GradsOut,
) {
    let (bn, hn, tq, tk, d) = (q.b, q.h, q.t, k.t, q.d);
    assert!(q.fits() && k.fits() && v.fits() && dout.fits(), "attention: a view reaches past its buffer");
    assert_eq!(out.len(), bn * tq * hn * d);
    let off = tk as isize - tq as isize;
    let o = Heads::bthd(out, bn, hn, tq, d);
    let GradsOut { dq: dq_ptr, dk: dk_ptr, dv: dv_ptr, q_rs, kv_rs, dq_in_place: in_place } = grads;
    (0..bn * hn).into_par_iter().for_each(move |task| {
        let (b, h) = (task / hn, task % hn);
        let lse = &lse[task * tq..(task + 1) * tq];
        // D_i = rowsum(dO ∘ O): the "row_dot" of the naive backward, from the output.
        let delta: Vec<f32> = (0..tq)
            .map(|i| {
                let (a, _) = head_rows(dout, b, h, i);
                let (c, _) = head_rows(&o, b, h, i);
                simd::dot(&a[..d], &c[..d])
            })
            .collect();
        let block = block_rows(tk);
        let mut p = vec![0.0f32; TILE * block];
        let mut ds = vec![0.0f32; TILE * block];
        let mut kt = vec![0.0f32; d * block];
        let mut vt = vec![0.0f32; d * block];
        let mut dkb = vec![0.0f32; block * d];
        let mut dvb = vec![0.0f32; block * d];
        // dQ of this head, contiguous `[Tq, D]`, copied out once at the end
        // (empty when dQ is accumulated in place: see DQ_BUFFER_MAX)
        let mut dqh = if in_place { Vec::new() } else { crate::pool::take_zeroed(tq * d) };
        if in_place {
            // SAFETY: only task (b, h) touches head h of batch b in dq; its
            // rows lie inside dq by the caller's contract.
            unsafe {
                for i in 0..tq {
                    std::ptr::write_bytes(dq_ptr.ptr().add((b * tq + i) * q_rs + h * d), 0, d);
                }
            }
        }
        let mut j0 = 0;
        while j0 < tk {
            let bc = block.min(tk - j0);
            let (kj, k_st) = head_rows(k, b, h, j0);
            pack_transposed(&mut kt, k, b, h, j0, bc);
            pack_transposed(&mut vt, v, b, h, j0, bc);
            dkb[..bc * d].fill(0.0);
            dvb[..bc * d].fill(0.0);
            // the first query that sees key j0 under a causal mask
            let first_q = if mask.causal { (j0 as isize - off).max(0) as usize } else { 0 };
            let mut i0 = first_q / TILE * TILE;
            while i0 < tq {
                let br = TILE.min(tq - i0);
                let (qi, q_st) = head_rows(q, b, h, i0);
                let (doi, do_st) = head_rows(dout, b, h, i0);
                let p = &mut p[..br * bc];
                let ds = &mut ds[..br * bc];
                if i0 + br < tq {
                    let next = TILE.min(tq - i0 - br);
                    prefetch_rows(&qi[br * q_st..], q_st, next, d);
                    prefetch_rows(&doi[br * do_st..], do_st, next, d);
                    if !in_place {
                        prefetch_rows(&dqh[(i0 + br) * d..], d, next, d);
                    }
                }
                // P = exp(scale · Q_i · K_jᵀ - lse_i)
                TileProduct { m: br, n: bc, k: d, ar: q_st, ac: 1, ldb: bc, ldc: bc, s: scale, accumulate: false }
                    .run(p, qi, &kt);
                mask_tile(p, br, bc, i0, j0, off, tk, b, h, mask);
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for r in 0..br {
                            let l = lse[i0 + r];
                            for x in p[r * bc..(r + 1) * bc].iter_mut() {
                                *x = simd::exp_shifted(*x - l);
                            }
                        }
                    },
                );
                // dV_j += Pᵀ · dO_i
                TileProduct { m: bc, n: d, k: br, ar: 1, ac: bc, ldb: do_st, ldc: d, s: 1.0, accumulate: true }.run(
                    &mut dvb[..bc * d],
                    p,
                    doi,
                );
                // dP = dO_i · V_jᵀ, then dS = P ∘ (dP - D_i)
                TileProduct { m: br, n: bc, k: d, ar: do_st, ac: 1, ldb: bc, ldc: bc, s: 1.0, accumulate: false }
                    .run(ds, doi, &vt);
                simd::dispatch(
                    #[inline(always)]
                    || {
                        for r in 0..br {
                            let dl = delta[i0 + r];
                            for (g, &pp) in ds[r * bc..(r + 1) * bc].iter_mut().zip(&p[r * bc..(r + 1) * bc]) {
                                *g = pp * (*g - dl);
                            }
                        }
                    },
                );
                // dQ_i += scale · dS · K_j
                let t =
                    TileProduct { m: br, n: d, k: bc, ar: bc, ac: 1, ldb: k_st, ldc: d, s: scale, accumulate: true };
                if in_place {
                    let t = TileProduct { ldc: q_rs, ..t };
                    // SAFETY: only task (b, h) touches head h of batch b in dq; the
                    // rows i0..i0+br of that head lie inside dq.
                    unsafe { t.run_raw(dq_ptr.ptr().add((b * tq + i0) * q_rs + h * d), ds, kj) };
                } else {
                    t.run(&mut dqh[i0 * d..(i0 + br) * d], ds, kj);
                }
                // dK_j += scale · dSᵀ · Q_i
                TileProduct { m: bc, n: d, k: br, ar: 1, ac: bc, ldb: q_st, ldc: d, s: scale, accumulate: true }.run(
                    &mut dkb[..bc * d],
                    ds,
                    qi,
                );
                i0 += br;
            }
            // SAFETY: only task (b, h) touches head h of batch b in dk and dv.
            unsafe {
                for r in 0..bc {
                    let at = (b * tk + j0 + r) * kv_rs + h * d;
                    std::ptr::copy_nonoverlapping(dkb.as_ptr().add(r * d), dk_ptr.ptr().add(at), d);
                    std::ptr::copy_nonoverlapping(dvb.as_ptr().add(r * d), dv_ptr.ptr().add(at), d);
                }
            }
            j0 += bc;
        }
        // SAFETY: only task (b, h) touches head h of batch b in dq; row i of
        // that head lies inside dq by the caller's contract.
        unsafe {
            for (i, row) in dqh.chunks_exact(d.max(1)).enumerate() {
                std::ptr::copy_nonoverlapping(row.as_ptr(), dq_ptr.ptr().add((b * tq + i) * q_rs + h * d), d);
            }
        }
        crate::pool::give(dqh);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    struct Case {
        b: usize,
        h: usize,
        tq: usize,
        tk: usize,
        d: usize,
        causal: bool,
        padding: bool,
        alibi: bool,
    }

    fn check(c: Case, rng: &mut Rng) {
        let Case { b, h, tq, tk, d, causal, padding, alibi } = c;
        let rand = |n: usize, rng: &mut Rng| (0..n).map(|_| rng.normal()).collect::<Vec<f32>>();
        // Q as a [B, T, H, D] buffer viewed as heads (strided), K and V as [B, H, T, D] packed.
        let qd = rand(b * tq * h * d, rng);
        let kd = rand(b * h * tk * d, rng);
        let vd = rand(b * h * tk * d, rng);
        let dod = rand(b * tq * h * d, rng);
        let q = Heads::bthd(&qd, b, h, tq, d);
        let k = Heads { data: &kd, offset: 0, b, h, t: tk, d, sb: h * tk * d, sh: tk * d, st: d };
        let v = Heads { data: &vd, ..k };
        let dout = Heads::bthd(&dod, b, h, tq, d);
        // every other sequence has its last third padded; sequence 0 is fully padded when asked
        let km: Vec<bool> = (0..b * tk).map(|i| !(padding && (i / tk == 0 || i % tk >= tk * 2 / 3))).collect();
        let slopes: Vec<f32> = (0..h).map(|i| 0.5f32.powi(i as i32 + 1)).collect();
        let mask = AttnMask { causal, key_mask: padding.then_some(&km[..]), alibi: alibi.then_some(&slopes[..]) };
        let scale = 1.0 / (d as f32).sqrt();
        let naive = attention_naive(&q, &k, &v, &mask, scale);
        let gn = attention_backward_naive(&q, &k, &v, &dout, &mask, scale);
        let close = |a: &[f32], e: &[f32], what: &str| {
            for (i, (x, y)) in a.iter().zip(e).enumerate() {
                assert!(x.is_finite() || (x == y), "{what}[{i}] = {x}");
                assert!((x - y).abs() < 2e-4 * (1.0 + y.abs()) || x == y, "{what}[{i}]: {x} vs {y}");
            }
        };
        // the references once; the kernels in pools of 1 to 4 threads (their
        // tasks are heads × blocks of queries: how they are dealt out varies)
        crate::threads::on_pools(&crate::threads::TEST_POOLS, || {
            let flash = attention_flash(&q, &k, &v, &mask, scale);
            close(&flash.out, &naive.out, "out");
            close(&flash.lse, &naive.lse, "lse");
            // the row-at-a-time kernel computes the same for any Tq, serial or parallel
            let rows = attention_rows(&q, &k, &v, &mask, scale);
            close(&rows.out, &naive.out, "rows out");
            close(&rows.lse, &naive.lse, "rows lse");
            let gf = attention_flash_backward(&q, &k, &v, &flash.out, &flash.lse, &dout, &mask, scale);
            close(&gf.dq, &gn.dq, "dq");
            close(&gf.dk, &gn.dk, "dk");
            close(&gf.dv, &gn.dv, "dv");
            // dQ accumulated in place (what sequences past DQ_BUFFER_MAX take),
            // into a buffer holding stale values: the kernel zeroes what it adds to
            let mut dq = vec![f32::NAN; b * tq * h * d];
            let (mut dk, mut dv) = (vec![0.0f32; b * tk * h * d], vec![0.0f32; b * tk * h * d]);
            let grads = GradsOut {
                dq: SharedMut(dq.as_mut_ptr()),
                dk: SharedMut(dk.as_mut_ptr()),
                dv: SharedMut(dv.as_mut_ptr()),
                q_rs: h * d,
                kv_rs: h * d,
                dq_in_place: true,
            };
            // SAFETY: [B, T, H, D] buffers for those strides.
            unsafe { flash_backward(&q, &k, &v, &flash.out, &flash.lse, &dout, &mask, scale, grads) };
            close(&dq, &gn.dq, "dq in place");
            close(&dk, &gn.dk, "dk (dq in place)");
        });
    }

    #[test]
    fn flash_matches_naive_forward_and_backward() {
        let mut rng = Rng::new(21);
        let cases = [
            // (b, h, tq, tk, d, causal, padding, alibi)
            (1, 1, 1, 1, 1, false, false, false),
            (1, 1, 1, 1, 8, true, false, false),
            (2, 3, 5, 5, 4, true, false, false),
            (1, 2, 70, 70, 16, true, false, false),
            (2, 2, 130, 130, 8, false, true, false),
            (1, 2, 1, 77, 8, true, false, false), // one new token against a KV cache
            // a few new tokens (the row kernel's cases), above its parallel threshold
            (4, 4, 1, 300, 64, true, true, true),
            (3, 4, 4, 200, 24, true, true, false),
            (5, 2, 2, 33, 64, false, true, false),
            (2, 1, 9, 140, 8, false, true, false), // cross-attention, Tq != Tk
            (1, 3, 67, 67, 5, true, false, true),  // ALiBi
            (3, 2, 65, 129, 7, true, true, true),
            // long enough for the larger blocks (128 and 256 rows per task)
            (1, 1, 4500, 4500, 2, true, false, false),
            (1, 1, 8200, 8200, 1, true, false, false),
            (1, 1, 300, 8300, 2, false, true, true),
        ];
        for (b, h, tq, tk, d, causal, padding, alibi) in cases {
            check(Case { b, h, tq, tk, d, causal, padding, alibi }, &mut rng);
        }
    }

    #[test]
    fn fully_masked_rows_give_zeros_not_nan() {
        let (b, h, t, d) = (1, 1, 3, 4);
        let data: Vec<f32> = (0..b * h * t * d).map(|i| i as f32 * 0.1).collect();
        let x = Heads::bthd(&data, b, h, t, d);
        let km = vec![false; t];
        let mask = AttnMask { causal: false, key_mask: Some(&km), alibi: None };
        let f = attention_flash(&x, &x, &x, &mask, 0.5);
        assert!(f.out.iter().all(|&v| v == 0.0));
        let r = attention_rows(&x, &x, &x, &mask, 0.5);
        assert!(r.out.iter().all(|&v| v == 0.0) && r.lse.iter().all(|&l| l == f32::INFINITY));
        let g = attention_flash_backward(&x, &x, &x, &f.out, &f.lse, &x, &mask, 0.5);
        assert!(g.dq.iter().chain(&g.dk).chain(&g.dv).all(|&v| v == 0.0));
    }
}
