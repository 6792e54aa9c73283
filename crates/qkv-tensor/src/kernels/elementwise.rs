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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    /// Each loop against its plain sequential twin (an iterator), at lengths
    /// below PAR_MIN and above it (split into CHUNK-sized tasks, with a ragged
    /// last task): the results must be the same bits.
    #[test]
    fn parallel_loops_equal_their_sequential_twins() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, parallel_loops_equal_their_sequential_twins_here);
    }

    fn parallel_loops_equal_their_sequential_twins_here() {
        let mut rng = Rng::new(4);
        for len in [0, 1, 37, PAR_MIN - 1, PAR_MIN + 1, 3 * CHUNK + 777] {
            let a: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
            let b: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
            let f = |x: f32| x.mul_add(1.5, -0.25).tanh();
            assert_eq!(map(&a, f), a.iter().map(|&x| f(x)).collect::<Vec<_>>(), "map {len}");
            let g = |x: f32, y: f32| x * y - y.abs();
            assert_eq!(
                zip_map(&a, &b, g),
                a.iter().zip(&b).map(|(&x, &y)| g(x, y)).collect::<Vec<_>>(),
                "zip_map {len}"
            );
            let mut acc = a.clone();
            add_assign(&mut acc, &b);
            assert_eq!(acc, a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>(), "add_assign {len}");
        }
        // row-wise: a bias row repeated down the rows
        for (rows, n) in [(1, 1), (3, 5), (PAR_MIN / 100 + 7, 100), (40, 1000)] {
            let a: Vec<f32> = (0..rows * n).map(|_| rng.normal()).collect();
            let row: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
            let want: Vec<f32> = a.iter().enumerate().map(|(i, &x)| x - 2.0 * row[i % n]).collect();
            assert_eq!(zip_rows(&a, &row, |x, r| x - 2.0 * r), want, "zip_rows {rows}×{n}");
            let mut acc = a.clone();
            add_row_assign(&mut acc, &row);
            assert_eq!(acc, a.iter().enumerate().map(|(i, &x)| x + row[i % n]).collect::<Vec<_>>(), "add_row_assign");
            // for_rows sees every row once, with its index, output rows of another length
            let mut out = vec![0.0f32; rows * 2];
            for_rows(&mut out, 2, &a, n, |r, o, x| {
                o[0] = r as f32;
                o[1] = x.iter().sum();
            });
            for r in 0..rows {
                assert_eq!(out[2 * r], r as f32, "for_rows index");
                assert_eq!(out[2 * r + 1], a[r * n..(r + 1) * n].iter().sum::<f32>(), "for_rows row {r}");
            }
        }
    }
}
