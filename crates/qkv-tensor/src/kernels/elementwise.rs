//! Element-wise loops over contiguous slices, split across the thread pool
//! when large enough to pay for it, and vectorised through [`crate::simd`].

use rayon::prelude::*;

use crate::simd::dispatch;

/// Below this many elements a loop runs on the calling thread.
pub const PAR_MIN: usize = 1 << 15;
/// Elements per parallel task.
const CHUNK: usize = 1 << 14;

/// `out[i] = f(x[i])`
pub fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) -> Vec<f32> {
    let mut out = crate::pool::take(x.len());
    map_into(&mut out, x, f);
    out
}

pub fn map_into(out: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32 + Sync + Send) {
    assert_eq!(out.len(), x.len());
    let body = |o: &mut [f32], x: &[f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = f(x);
                }
            },
        )
    };
    if x.len() < PAR_MIN {
        body(out, x);
    } else {
        out.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(o, x)| body(o, x));
    }
}

/// `out[i] = f(a[i], b[i])`
pub fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    assert_eq!(a.len(), b.len());
    let mut out = crate::pool::take(a.len());
    let body = |o: &mut [f32], a: &[f32], b: &[f32]| {
        dispatch(
            #[inline(always)]
            || {
                for ((o, &a), &b) in o.iter_mut().zip(a).zip(b) {
                    *o = f(a, b);
                }
            },
        )
    };
    if a.len() < PAR_MIN {
        body(&mut out, a, b);
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| body(o, a, b));
    }
    out
}

/// `out[r, j] = f(a[r, j], b[j])`: `b` is one row repeated down `a` (a bias).
pub fn zip_rows(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync + Send) -> Vec<f32> {
    let n = b.len();
    assert!(n > 0 && a.len().is_multiple_of(n));
    let mut out = crate::pool::take(a.len());
    let rows_per_task = (CHUNK / n).max(1);
    let body = |o: &mut [f32], a: &[f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (o_row, a_row) in o.chunks_exact_mut(n).zip(a.chunks_exact(n)) {
                    for ((o, &a), &b) in o_row.iter_mut().zip(a_row).zip(b) {
                        *o = f(a, b);
                    }
                }
            },
        )
    };
    if a.len() < PAR_MIN {
        body(&mut out, a);
    } else {
        out.par_chunks_mut(rows_per_task * n).zip(a.par_chunks(rows_per_task * n)).for_each(|(o, a)| body(o, a));
    }
    out
}

/// `acc[i] += x[i]`
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    assert_eq!(acc.len(), x.len());
    let body = |acc: &mut [f32], x: &[f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (a, &x) in acc.iter_mut().zip(x) {
                    *a += x;
                }
            },
        )
    };
    if x.len() < PAR_MIN {
        body(acc, x);
    } else {
        acc.par_chunks_mut(CHUNK).zip(x.par_chunks(CHUNK)).for_each(|(a, x)| body(a, x));
    }
}

/// `acc[r, i] += row[i]` for every row of `acc` (a bias added in place).
pub fn add_row_assign(acc: &mut [f32], row: &[f32]) {
    let n = row.len();
    assert!(n > 0 && acc.len().is_multiple_of(n));
    let body = |acc: &mut [f32]| {
        dispatch(
            #[inline(always)]
            || {
                for a_row in acc.chunks_exact_mut(n) {
                    for (a, &b) in a_row.iter_mut().zip(row) {
                        *a += b;
                    }
                }
            },
        )
    };
    if acc.len() < PAR_MIN {
        body(acc);
    } else {
        acc.par_chunks_mut((CHUNK / n).max(1) * n).for_each(body);
    }
}

/// Run `f(row_index, out_row, in_row)` over the rows of two row-major buffers
/// (row length `n_out` and `n_in`), in parallel when the work is large.
pub fn for_rows(
    out: &mut [f32],
    n_out: usize,
    x: &[f32],
    n_in: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync + Send,
) {
    if n_out == 0 || n_in == 0 {
        return;
    }
    let rows = out.len() / n_out;
    assert_eq!(rows, x.len() / n_in);
    let rows_per_task = (CHUNK / n_in.max(n_out)).max(1);
    let body = |start: usize, o: &mut [f32], x: &[f32]| {
        dispatch(
            #[inline(always)]
            || {
                for (r, (o, x)) in o.chunks_exact_mut(n_out).zip(x.chunks_exact(n_in)).enumerate() {
                    f(start + r, o, x);
                }
            },
        )
    };
    if x.len() < PAR_MIN || rows == 1 {
        body(0, out, x);
    } else {
        out.par_chunks_mut(rows_per_task * n_out)
            .zip(x.par_chunks(rows_per_task * n_in))
            .enumerate()
            .for_each(|(t, (o, x))| body(t * rows_per_task, o, x));
    }
}
