//! Training the Vision Transformer to classify images.

use qkv_tensor::{Rng, Tensor, no_grad};

use crate::data::images::{ImageData, ImageSet};
use crate::error::{Error, Result};
use crate::metrics::{ClassificationReport, classification_report};
use crate::models::vit::Vit;
use crate::nn::{Dropout, Module};
use crate::train::optimizer::Optimizer;
use crate::train::{StepStats, TrainConfig};

/// Index of the largest score in each row of `[N, K]` logits.
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    let k = logits.dim(-1)?;
    Ok(logits
        .data()
        .chunks(k)
        .map(|row| {
            row.iter().enumerate().fold((0, f32::NEG_INFINITY), |m, (i, &v)| if v > m.1 { (i, v) } else { m }).0 as u32
        })
        .collect())
}

/// Move each image by a random offset of up to `max` pixels (filling with
/// the background value, -1): a cheap augmentation that teaches a small ViT
/// that a digit is the same digit a little to the left.
pub fn random_shift(pixels: &mut [f32], channels: usize, size: usize, max: usize, rng: &mut Rng) {
    let per = channels * size * size;
    let span = 2 * max as u64 + 1;
    let mut tmp = vec![0.0f32; per];
    for img in pixels.chunks_mut(per) {
        let dy = rng.below(span) as isize - max as isize;
        let dx = rng.below(span) as isize - max as isize;
        if dy == 0 && dx == 0 {
            continue;
        }
        tmp.fill(-1.0);
        for c in 0..channels {
            for y in 0..size as isize {
                let sy = y - dy;
                if sy < 0 || sy >= size as isize {
                    continue;
                }
                for x in 0..size as isize {
                    let sx = x - dx;
                    if sx >= 0 && sx < size as isize {
                        tmp[(c * size + y as usize) * size + x as usize] =
                            img[(c * size + sy as usize) * size + sx as usize];
                    }
                }
            }
        }
        img.copy_from_slice(&tmp);
    }
}

pub struct VitTrainer {
    pub model: Vit,
    pub opt: Optimizer,
    pub data: ImageData,
    pub config: TrainConfig,
    /// Largest random shift in pixels (0: no augmentation).
    pub shift: usize,
    rng: Rng,
    order: Vec<usize>,
    next: usize,
    pub epoch: usize,
}

impl VitTrainer {
    pub fn new(model: Vit, config: TrainConfig, data: ImageData, shift: usize) -> Result<VitTrainer> {
        config.validate()?;
        let c = &model.config;
        if data.train.channels != c.num_channels || data.train.size != c.image_size {
            return Err(Error::Data(format!(
                "images are {}×{}×{}, the model takes {}×{}×{}",
                data.train.channels, data.train.size, data.train.size, c.num_channels, c.image_size, c.image_size
            )));
        }
        if let Some(&l) = data.train.labels.iter().chain(&data.test.labels).find(|&&l| l as usize >= c.id2label.len()) {
            return Err(Error::Data(format!("label {l} is outside the model's {} classes", c.id2label.len())));
        }
        let opt = Optimizer::new(model.named_params(), &config);
        let rng = Rng::new(config.seed ^ 0x5EED_1A6E);
        Ok(VitTrainer { model, opt, data, config, shift, rng, order: Vec::new(), next: usize::MAX, epoch: 0 })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.config.batch_size)
    }

    /// The next batch of a shuffled pass over the training images.
    fn batch(&mut self) -> (Vec<usize>, bool) {
        let n = self.data.train.len();
        let mut new_epoch = false;
        if self.next >= n {
            self.order = (0..n).collect();
            for i in (1..n).rev() {
                self.order.swap(i, self.rng.below(i as u64 + 1) as usize);
            }
            self.next = 0;
            new_epoch = true;
        }
        let end = (self.next + self.config.batch_size).min(n);
        let idx = self.order[self.next..end].to_vec();
        self.next = end;
        (idx, new_epoch)
    }

    pub fn train_step(&mut self) -> Result<StepStats> {
        let (idx, new_epoch) = self.batch();
        if new_epoch && self.opt.step > 0 {
            self.epoch += 1;
        }
        let b = idx.len();
        let set = &self.data.train;
        let mut pixels = set.gather(&idx);
        if self.shift > 0 {
            random_shift(&mut pixels, set.channels, set.size, self.shift, &mut self.rng);
        }
        let labels: Vec<u32> = idx.iter().map(|&i| set.labels[i]).collect();
        let drop = Dropout { p: self.model.config.hidden_dropout_prob, seed: Some(self.rng.next_u64()) };
        self.opt.zero_grad();
        let logits = self.model.forward(&pixels, b, &drop)?;
        let loss = qkv_tensor::cross_entropy(&logits, &labels, None)?;
        let value = loss.item()?;
        loss.backward()?;
        let (grad_norm, lr) = self.opt.step();
        if !value.is_finite() {
            return Err(Error::Data(format!("training diverged at step {}: loss {value}", self.opt.step)));
        }
        Ok(StepStats { loss: value, lr, grad_norm, tokens: b })
    }

    /// Accuracy, macro-F1 and mean loss on a set of images.
    pub fn evaluate(&self, set: &ImageSet) -> Result<(ClassificationReport, f32)> {
        evaluate_vit(&self.model, set, self.config.batch_size.max(64))
    }
}

/// Accuracy, macro-F1 and mean cross-entropy of `model` on `set`, in no-grad mode.
pub fn evaluate_vit(model: &Vit, set: &ImageSet, batch: usize) -> Result<(ClassificationReport, f32)> {
    let n = set.len();
    let mut predicted = Vec::with_capacity(n);
    let mut total = 0.0f64;
    no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch) {
            let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
            let logits = model.forward(&set.gather(&idx), idx.len(), &Dropout::default())?;
            let labels: Vec<u32> = idx.iter().map(|&i| set.labels[i]).collect();
            total += qkv_tensor::cross_entropy(&logits, &labels, None)?.item()? as f64 * idx.len() as f64;
            predicted.extend(argmax_rows(&logits)?);
        }
        Ok(())
    })?;
    let report = classification_report(&predicted, &set.labels, model.config.id2label.len());
    Ok((report, (total / n.max(1) as f64) as f32))
}
