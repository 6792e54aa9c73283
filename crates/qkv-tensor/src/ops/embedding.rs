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
