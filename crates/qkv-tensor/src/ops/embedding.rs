//! Embedding lookup: token ids pick rows of a `[V, C]` table.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::SharedMut;
use crate::tensor::Tensor;

/// Rows of `table` (`[V, C]`) for each id; `ids_shape` is the shape of the ids
/// (e.g. `[B, T]`), the result is `ids_shape + [C]`.
///
/// Backward scatters: row `id` of the table's gradient gets the sum of the
/// output gradients of every position holding `id`.
pub fn embedding(table: &Tensor, ids: &[u32], ids_shape: &[usize]) -> Result<Tensor> {
    let (v, c) = table.dims2().map_err(|_| Error::bad_shape("embedding", table.shape(), "a [V, C] table"))?;
    if ids_shape.iter().product::<usize>() != ids.len() {
        return Err(Error::invalid("embedding", format!("{} ids do not fill shape {ids_shape:?}", ids.len())));
    }
    if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= v) {
        return Err(Error::invalid("embedding", format!("id {id} at position {i} is outside the table ({v} rows)")));
    }
    let w = table.contiguous();
    let wd = w.data();
    let mut out = crate::pool::take(ids.len() * c);
    out.par_chunks_mut(c.max(1))
        .zip(ids.par_iter())
        .with_min_len(64)
        .for_each(|(o, &id)| o.copy_from_slice(&wd[id as usize * c..(id as usize + 1) * c]));
    let mut shape = ids_shape.to_vec();
    shape.push(c);
    let ids = ids.to_vec();
    Ok(Tensor::from_op(out, &shape, &[table], move |g| {
        let gd = g.contiguous();
        let gd = gd.data();
        let mut dw = crate::pool::take_zeroed(v * c);
        // Each task owns a band of columns, so no two tasks write the same element.
        let band = c.div_ceil(rayon::current_num_threads()).max(16).min(c.max(1));
        let bands: Vec<(usize, usize)> = (0..c).step_by(band).map(|s| (s, (s + band).min(c))).collect();
        let dw_ptr = SharedMut(dw.as_mut_ptr());
        bands.par_iter().for_each(|&(s, e)| {
            let p = dw_ptr;
            for (pos, &id) in ids.iter().enumerate() {
                let src = &gd[pos * c + s..pos * c + e];
                // SAFETY: the band [s, e) of every row belongs to this task only.
                let dst = unsafe { std::slice::from_raw_parts_mut(p.ptr().add(id as usize * c + s), e - s) };
                dst.iter_mut().zip(src).for_each(|(d, x)| *d += x);
            }
        });
        Ok(vec![Some(Tensor::from_vec(dw, &[v, c])?)])
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Param, Rng};

    /// Forward (rows copied in parallel from 64 ids on) and backward (the
    /// table's gradient in bands of columns, one task each, from C > 16 on)
    /// against a plain gather and an f64 scatter, with repeated ids, in pools
    /// of 1 to 4 threads.
    #[test]
    fn lookup_and_scatter_match_their_plain_twins() {
        crate::threads::on_pools(&crate::threads::TEST_POOLS, || {
            let mut rng = Rng::new(13);
            for (v, c, n) in [(3, 1, 2), (5, 16, 9), (11, 100, 300), (50, 33, 1000)] {
                let table = Param::new(Tensor::randn(&[v, c], 1.0, &mut rng));
                // every id several times over once n > v
                let ids: Vec<u32> = (0..n).map(|_| rng.below(v as u64) as u32).collect();
                let y = embedding(&table.value(), &ids, &[n]).unwrap();
                let w = table.value().to_vec();
                let want: Vec<f32> =
                    ids.iter().flat_map(|&i| w[i as usize * c..(i as usize + 1) * c].to_vec()).collect();
                assert_eq!(y.to_vec(), want, "lookup V={v} C={c} n={n}");
                let dy = Tensor::randn(&[n, c], 1.0, &mut rng);
                y.mul(&dy).unwrap().sum_all().backward().unwrap();
                let g = table.grad().unwrap().to_vec();
                let dyv = dy.to_vec();
                let mut want = vec![0.0f64; v * c];
                for (pos, &id) in ids.iter().enumerate() {
                    for j in 0..c {
                        want[id as usize * c + j] += dyv[pos * c + j] as f64;
                    }
                }
                for (i, (&a, &b)) in g.iter().zip(&want).enumerate() {
                    assert!((a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()), "dW[{i}] V={v} C={c} n={n}: {a} vs {b}");
                }
            }
        });
    }
}
