//! Image classification: the Vision Transformer cuts each image into
//! patches, reads them as tokens, and its `[CLS]` vector goes through a
//! linear layer to one score per class (cross-entropy against the label).
//! Training images are shifted by a few pixels at random (augmentation).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use qkv_tensor::{Rng, no_grad};

use crate::data::images::{self, ImageData, ImageSet};
use crate::data::shuffle::Epochs;
use crate::error::{Error, Result};
use crate::metrics::{ClassificationReport, argmax_rows, classification_report};
use crate::models::load::vit_config_json;
use crate::models::vit::{Vit, VitConfig};
use crate::nn::{Dropout, Module, NamedParam};
use crate::train::setup::{Built, Mode};
use crate::train::task::{Evaluation, Loss, Task, epochs_state, restore_epochs};
use crate::train::{Fnv1a, TrainConfig};

/// What an image-classification run trains, and on what.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageClassificationSpec {
    /// The ViT; its classes (`id2label`) come from the data. Default
    /// [`VitConfig::default`]: 28×28 grey images, 7×7 patches, 4 layers, 4
    /// heads, width 64, MLP 128.
    pub model: VitConfig,
    /// A directory of MNIST IDX files or of class folders, or a digits CSV.
    pub data: Option<PathBuf>,
    /// Largest random shift of a training image, in pixels (0: none). Default 2.
    pub shift: usize,
}

impl Default for ImageClassificationSpec {
    fn default() -> Self {
        ImageClassificationSpec { model: VitConfig::default(), data: None, shift: 2 }
    }
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

/// A ViT and its images.
pub struct ImageClassifier {
    pub model: Vit,
    pub data: ImageData,
    /// Largest random shift in pixels (0: no augmentation).
    pub shift: usize,
    pub batch_size: usize,
    /// Shuffles each epoch.
    seed: u64,
    /// Where the run is in its passes over the training images.
    epochs: Epochs,
    /// Draws shifts and dropout seeds.
    rng: Rng,
}

impl ImageClassifier {
    pub fn new(model: Vit, data: ImageData, shift: usize, config: &TrainConfig) -> Result<ImageClassifier> {
        let c = &model.config;
        if data.train.channels != c.num_channels || data.train.size != c.image_size {
            return Err(Error::Data(format!(
                "images are {}×{}×{}, the model takes {}×{}×{}",
                data.train.channels, data.train.size, data.train.size, c.num_channels, c.image_size, c.image_size
            )));
        }
        if data.train.is_empty() || data.test.is_empty() {
            return Err(Error::Data("need both training and test images".into()));
        }
        if let Some(&l) = data.train.labels.iter().chain(&data.test.labels).find(|&&l| l as usize >= c.id2label.len()) {
            return Err(Error::Data(format!("label {l} is outside the model's {} classes", c.id2label.len())));
        }
        Ok(ImageClassifier {
            model,
            data,
            shift,
            batch_size: config.batch_size,
            seed: config.seed,
            epochs: Epochs::default(),
            rng: Rng::new(config.seed ^ 0x5EED_1A6E),
        })
    }

    pub fn steps_per_epoch(&self) -> usize {
        self.data.train.len().div_ceil(self.batch_size)
    }
}

/// Accuracy, macro-F1 and mean cross-entropy of `model` on `set`, in no-grad mode.
pub fn score(model: &Vit, set: &ImageSet, batch: usize) -> Result<(ClassificationReport, f32)> {
    let n = set.len();
    let mut predicted = Vec::with_capacity(n);
    let mut total = 0.0f64;
    no_grad(|| -> Result<()> {
        for start in (0..n).step_by(batch.max(1)) {
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

impl Task for ImageClassifier {
    fn params(&self) -> Vec<NamedParam> {
        self.model.named_params()
    }

    fn training_loss(&mut self) -> Result<Option<Loss>> {
        let set = &self.data.train;
        let idx = self.epochs.next_batch(set.len(), self.batch_size, self.seed);
        let mut pixels = set.gather(&idx);
        if self.shift > 0 {
            random_shift(&mut pixels, set.channels, set.size, self.shift, &mut self.rng);
        }
        let labels: Vec<u32> = idx.iter().map(|&i| set.labels[i]).collect();
        let drop = Dropout { p: self.model.config.hidden_dropout_prob, seed: Some(self.rng.next_u64()) };
        let logits = self.model.forward(&pixels, idx.len(), &drop)?;
        let value = qkv_tensor::cross_entropy(&logits, &labels, None)?;
        Ok(Some(Loss { value, tokens: idx.len() * (self.model.config.num_patches() + 1) }))
    }

    fn evaluate(&self) -> Result<Evaluation> {
        let (r, loss) = score(&self.model, &self.data.test, self.batch_size.max(64))?;
        Ok(Evaluation {
            loss,
            accuracy: Some(r.accuracy),
            summary: format!("test accuracy {:.4}, macro-F1 {:.4}", r.accuracy, r.macro_f1),
        })
    }

    fn state(&self) -> Value {
        epochs_state(&self.rng, &self.epochs)
    }

    fn restore(&mut self, state: &Value) -> Result<()> {
        (self.rng, self.epochs) = restore_epochs(state)?;
        Ok(())
    }

    fn report(&self) -> Result<Value> {
        let (r, loss) = score(&self.model, &self.data.test, self.batch_size.max(64))?;
        Ok(json!({
            "task": "image-classification", "accuracy": r.accuracy, "macro_f1": r.macro_f1, "test_loss": loss,
            "test_images": r.examples, "test_source": self.data.test_source,
        }))
    }

    fn describe(&self) -> Vec<String> {
        let c = &self.model.config;
        let side = c.image_size / c.patch_size;
        vec![format!(
            "ViT {} layers × {} heads × {} wide, {side}×{side} patches of {}×{} ({} tokens), {:.2} M parameters; \
             {} training / {} test images ({}), {} classes",
            c.num_hidden_layers,
            c.num_attention_heads,
            c.hidden_size,
            c.patch_size,
            c.patch_size,
            c.num_patches() + 1,
            self.model.num_params() as f64 / 1e6,
            self.data.train.len(),
            self.data.test.len(),
            self.data.test_source,
            self.data.label_names.len(),
        )]
    }
}

/// FNV-1a over the images' pixels and labels: what the run trains on.
fn fingerprint(data: &ImageData) -> String {
    let mut h = Fnv1a::default();
    for set in [&data.train, &data.test] {
        h = set.pixels.iter().fold(h, |h, p| h.update(&p.to_le_bytes()));
        h = set.labels.iter().fold(h, |h, l| h.update(&l.to_le_bytes()));
    }
    h.hex()
}

pub(crate) fn build(spec: &mut ImageClassificationSpec, train: &TrainConfig, _dir: &Path, mode: Mode) -> Result<Built> {
    let path = spec.data.clone().ok_or_else(|| {
        Error::Config(
            "--model vit needs --data (a directory of MNIST IDX files or class folders, or a digits CSV)".into(),
        )
    })?;
    let c = &spec.model;
    if c.num_channels != 1 && c.num_channels != 3 {
        return Err(Error::Config(format!("{} channels: use 1 (grey) or 3 (RGB)", c.num_channels)));
    }
    let started = std::time::Instant::now();
    let data = images::load(&path, c.num_channels, c.image_size)?;
    let id2label = data.label_names.iter().enumerate().map(|(i, l)| (i.to_string(), l.clone())).collect();
    if mode == Mode::New {
        spec.model.id2label = id2label;
    } else if spec.model.id2label != id2label {
        return Err(Error::Data(format!("the classes of {} changed since the run started", path.display())));
    }
    let model = Vit::new(spec.model.clone(), train.seed)?;
    let notes = vec![format!("images loaded in {:.1} s", started.elapsed().as_secs_f64())];
    let fingerprint = fingerprint(&data);
    let config = vit_config_json(&spec.model)?;
    let task = ImageClassifier::new(model, data, spec.shift, train)?;
    Ok(Built {
        steps_per_epoch: Some(task.steps_per_epoch()),
        task: Box::new(task),
        fingerprint,
        config,
        tokenizer: None,
        notes,
    })
}
