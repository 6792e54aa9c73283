//! Images as tokens: cut each image into P×P patches, flatten each patch, and
//! project it to C features. (A convolution with a P×P kernel and stride P
//! computes exactly this; Hugging Face's ViT stores it as one, so the weight
//! keeps the convolution's shape `[C, channels, P, P]`.)

use qkv_tensor::{Param, Rng, Tensor};

use super::{Module, NamedParam};
use crate::error::Error;

pub struct PatchEmbedding {
    /// `[C, channels, P, P]`
    pub weight: Param,
    /// `[C]`
    pub bias: Param,
    pub patch: usize,
    pub channels: usize,
}

/// Rearrange images `[B, ch, H, W]` into patch rows `[B, N, ch·P·P]`, patches
/// in reading order (left to right, top to bottom), each flattened channel by
/// channel, row by row — the order of a convolution weight `[C, ch, P, P]`.
pub fn patches(images: &[f32], b: usize, ch: usize, h: usize, w: usize, p: usize) -> crate::error::Result<Tensor> {
    if images.len() != b * ch * h * w {
        return Err(Error::Data(format!("{} pixel values do not form [{b}, {ch}, {h}, {w}] images", images.len())));
    }
    if p == 0 || !h.is_multiple_of(p) || !w.is_multiple_of(p) {
        return Err(Error::Data(format!("{h}×{w} images cannot be cut into {p}×{p} patches")));
    }
    let (ny, nx) = (h / p, w / p);
    let n = ny * nx;
    let row = ch * p * p;
    let mut out = vec![0.0f32; b * n * row];
    for bi in 0..b {
        for py in 0..ny {
            for px in 0..nx {
                let dst = &mut out[((bi * n) + py * nx + px) * row..][..row];
                for c in 0..ch {
                    for y in 0..p {
                        let src = ((bi * ch + c) * h + py * p + y) * w + px * p;
                        dst[(c * p + y) * p..(c * p + y) * p + p].copy_from_slice(&images[src..src + p]);
                    }
                }
            }
        }
    }
    Ok(Tensor::from_vec(out, &[b, n, row])?)
}

impl PatchEmbedding {
    pub fn new(channels: usize, patch: usize, dim: usize, rng: &mut Rng) -> PatchEmbedding {
        let fan_in = (channels * patch * patch) as f32;
        PatchEmbedding {
            weight: Param::new(Tensor::randn(&[dim, channels, patch, patch], 1.0 / fan_in.sqrt(), rng)),
            bias: Param::new(Tensor::zeros(&[dim])),
            patch,
            channels,
        }
    }

    /// # Shapes
    /// images `[B, ch, H, W]` (flat) → `[B, N, C]`, N = (H/P)·(W/P)
    pub fn forward(&self, images: &[f32], b: usize, h: usize, w: usize) -> crate::error::Result<Tensor> {
        let x = patches(images, b, self.channels, h, w, self.patch)?; // [B, N, ch·P·P]
        let dim = self.weight.shape()[0];
        let wt = self.weight.value().reshape(&[dim, self.channels * self.patch * self.patch])?;
        Ok(x.matmul(&wt.t()?)?.add(&self.bias.value())?)
    }
}

impl Module for PatchEmbedding {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        out.push(NamedParam { name: format!("{prefix}weight"), param: self.weight.clone(), decay: true });
        out.push(NamedParam { name: format!("{prefix}bias"), param: self.bias.clone(), decay: false });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_follow_reading_order_and_channel_major_flattening() {
        // one 2-channel 4×4 image, pixel value = 100·c + 10·y + x
        let mut img = vec![0.0f32; 2 * 16];
        for c in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    img[(c * 4 + y) * 4 + x] = (100 * c + 10 * y + x) as f32;
                }
            }
        }
        let p = patches(&img, 1, 2, 4, 4, 2).unwrap();
        assert_eq!(p.shape(), &[1, 4, 8]);
        let v = p.to_vec();
        // second patch (top right): channel 0 rows (0,2),(0,3) then (1,2),(1,3), then channel 1
        assert_eq!(&v[8..16], &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]);
        assert!(patches(&img, 1, 2, 4, 4, 3).is_err());
    }
}
