//! The Vision Transformer: an image cut into patches is a sequence of tokens.
//!
//! image → patches → projected to C (the patch embedding) → a learned `[CLS]`
//! token in front → learned positions added → N pre-norm encoder blocks
//! (bidirectional attention: every patch sees every patch) → LayerNorm → the
//! `[CLS]` vector → class scores.
//!
//! Names and layouts follow Hugging Face's `ViTForImageClassification`
//! (`vit.embeddings.patch_embeddings.projection` as a convolution weight
//! `[C, ch, P, P]`, `vit.encoder.layer.0.attention.attention.query`, …), and
//! the configuration uses the field names of its `config.json`.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Param, Rng, Tensor};

use crate::error::{Error, Result};
use crate::nn::attention::Attention;
use crate::nn::block::{Block, Naming, Placement};
use crate::nn::linear::Linear;
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::norm::{Norm, NormKind};
use crate::nn::patch::PatchEmbedding;
use crate::nn::{Dropout, Module, NamedParam};

/// ViT's architecture, in the field names of Hugging Face's `ViTConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VitConfig {
    /// Side of the (square) input image in pixels. Default 28 (MNIST).
    pub image_size: usize,
    /// Side of a patch. Default 7 (16 patches of an MNIST digit).
    pub patch_size: usize,
    /// 1 for grey, 3 for RGB. Default 1.
    pub num_channels: usize,
    /// C. Default 64.
    pub hidden_size: usize,
    /// Default 4.
    pub num_hidden_layers: usize,
    /// Default 4.
    pub num_attention_heads: usize,
    /// F. Default 128.
    pub intermediate_size: usize,
    /// Default "gelu".
    pub hidden_act: String,
    /// Default 0.0.
    pub hidden_dropout_prob: f32,
    /// Default 1e-12.
    pub layer_norm_eps: f32,
    /// Biases on query, key and value. Default true.
    pub qkv_bias: bool,
    /// Class names by id (Hugging Face writes `id2label` as `{"0": "cat", …}`).
    pub id2label: std::collections::BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for VitConfig {
    fn default() -> Self {
        VitConfig {
            image_size: 28,
            patch_size: 7,
            num_channels: 1,
            hidden_size: 64,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            intermediate_size: 128,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.0,
            layer_norm_eps: 1e-12,
            qkv_bias: true,
            id2label: Default::default(),
            extra: Default::default(),
        }
    }
}

impl VitConfig {
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Class names in id order.
    pub fn labels(&self) -> Result<Vec<String>> {
        let n = self.id2label.len();
        (0..n)
            .map(|i| {
                self.id2label
                    .get(&i.to_string())
                    .cloned()
                    .ok_or_else(|| Error::Config(format!("id2label lacks id {i}")))
            })
            .collect()
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.patch_size == 0 || self.image_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return bad(format!("image_size {} must be a multiple of patch_size {}", self.image_size, self.patch_size));
        }
        if self.num_channels == 0 || self.hidden_size == 0 || self.num_hidden_layers == 0 || self.intermediate_size == 0
        {
            return bad("num_channels, hidden_size, num_hidden_layers and intermediate_size must be at least 1".into());
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if self.id2label.len() < 2 {
            return bad("a classifier needs at least 2 labels".into());
        }
        self.labels()?;
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            return bad(format!("hidden_dropout_prob {} must be in [0, 1)", self.hidden_dropout_prob));
        }
        match self.hidden_act.as_str() {
            "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "relu" => {}
            other => return bad(format!("hidden_act {other:?} is not supported")),
        }
        super::within_bounds(self.checked_params(), "this ViT configuration")
    }

    /// About the parameter count (patch projection, positions, layers,
    /// classifier), with checked arithmetic: `None` when it overflows.
    pub fn checked_params(&self) -> Option<usize> {
        let c = self.hidden_size;
        let side = self.image_size / self.patch_size.max(1);
        let patches = side.checked_mul(side)?.checked_add(1)?;
        let patch = self.patch_size.checked_mul(self.patch_size)?.checked_mul(self.num_channels)?.checked_mul(c)?;
        let layer =
            c.checked_mul(c)?.checked_mul(4)?.checked_add(c.checked_mul(self.intermediate_size)?.checked_mul(2)?)?;
        layer
            .checked_mul(self.num_hidden_layers)?
            .checked_add(patch)?
            .checked_add(patches.checked_mul(c)?)?
            .checked_add(self.id2label.len().checked_mul(c)?)
    }

    fn activation(&self) -> Activation {
        match self.hidden_act.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            _ => Activation::Gelu,
        }
    }
}

pub struct Vit {
    pub config: VitConfig,
    pub patch_embeddings: PatchEmbedding,
    /// `[1, 1, C]`: the learned token whose output vector classifies the image.
    pub cls_token: Param,
    /// `[1, N + 1, C]`
    pub position_embeddings: Param,
    pub layers: Vec<Block>,
    pub layernorm: Norm,
    /// `[labels, C]`
    pub classifier: Linear,
}

impl Vit {
    pub fn new(config: VitConfig, seed: u64) -> Result<Vit> {
        config.validate()?;
        let c = &config;
        let mut rng = Rng::new(seed);
        let std = 0.02;
        let norm = || Norm::new(NormKind::LayerNorm, c.hidden_size, true, c.layer_norm_eps);
        let patch_embeddings = PatchEmbedding::new(c.num_channels, c.patch_size, c.hidden_size, &mut rng);
        let cls_token = Param::new(Tensor::randn(&[1, 1, c.hidden_size], std, &mut rng));
        let position_embeddings = Param::new(Tensor::randn(&[1, c.num_patches() + 1, c.hidden_size], std, &mut rng));
        let layers = (0..c.num_hidden_layers)
            .map(|_| Block {
                ln_1: norm(),
                attn: Attention::new_separate(c.hidden_size, c.num_attention_heads, c.qkv_bias, std, &mut rng),
                ln_2: norm(),
                mlp: Mlp::new_out_in(c.hidden_size, c.intermediate_size, c.activation(), true, std, &mut rng),
                placement: Placement::Pre,
                naming: Naming::Vit,
            })
            .collect();
        let layernorm = norm();
        let classifier = Linear::new_out_in(c.hidden_size, c.id2label.len(), true, std, &mut rng);
        Ok(Vit { config, patch_embeddings, cls_token, position_embeddings, layers, layernorm, classifier })
    }

    /// The final, normalised token vectors (`[CLS]` first).
    ///
    /// # Shapes
    /// images `[B, ch, H, W]` (flat, H = W = image_size) → `[B, N + 1, C]`
    pub fn hidden(&self, images: &[f32], b: usize, drop: &Dropout) -> Result<Tensor> {
        let mut h = self.embed(images, b, drop)?;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, None, None, drop, 2 + 2 * i as u64)?;
        }
        Ok(self.layernorm.forward(&h)?)
    }

    /// The patches as tokens: `[CLS]`, then one embedded patch per token,
    /// plus the position embeddings.
    ///
    /// # Shapes
    /// images `[B, ch, H, W]` → `[B, N + 1, C]`
    pub fn embed(&self, images: &[f32], b: usize, drop: &Dropout) -> Result<Tensor> {
        let s = self.config.image_size;
        let c = self.config.hidden_size;
        let patches = self.patch_embeddings.forward(images, b, s, s)?; // [B, N, C]
        let cls = self.cls_token.value().broadcast_to(&[b, 1, c])?;
        let h = Tensor::concat(&[&cls, &patches], 1)?.add(&self.position_embeddings.value())?;
        Ok(drop.apply(&h, 0)?)
    }

    /// The attention probabilities of every layer, over `[CLS]` and the patches.
    ///
    /// # Shapes
    /// images `[B, ch, H, W]` → one `[B, H, N + 1, N + 1]` per layer
    pub fn attention_maps(&self, images: &[f32], b: usize) -> Result<Vec<Tensor>> {
        qkv_tensor::no_grad(|| {
            let mut h = self.embed(images, b, &Dropout::default())?;
            let mut maps = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let (out, probs) = layer.forward_with_probabilities(&h, None)?;
                maps.push(probs);
                h = out;
            }
            Ok(maps)
        })
    }

    /// Class scores from the `[CLS]` vector.
    ///
    /// # Shapes
    /// images `[B, ch, H, W]` → `[B, labels]`
    pub fn forward(&self, images: &[f32], b: usize, drop: &Dropout) -> Result<Tensor> {
        let h = self.hidden(images, b, drop)?;
        let c = self.config.hidden_size;
        let cls = h.narrow(1, 0, 1)?.reshape(&[b, c])?;
        Ok(self.classifier.forward(&cls)?)
    }
}

impl Module for Vit {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let p = |s: &str| format!("{prefix}{s}");
        out.push(NamedParam { name: p("vit.embeddings.cls_token"), param: self.cls_token.clone(), decay: false });
        out.push(NamedParam {
            name: p("vit.embeddings.position_embeddings"),
            param: self.position_embeddings.clone(),
            decay: false,
        });
        self.patch_embeddings.collect_params(&p("vit.embeddings.patch_embeddings.projection."), out);
        for (i, l) in self.layers.iter().enumerate() {
            l.collect_params(&p(&format!("vit.encoder.layer.{i}.")), out);
        }
        self.layernorm.collect_params(&p("vit.layernorm."), out);
        self.classifier.collect_params(&p("classifier."), out);
    }
}

/// The checkpoint name qkv uses for `name`. Hugging Face's ViT checkpoints
/// name encoder layers `vit.encoder.layer.{i}.attention.attention.query…`;
/// `transformers` 5 saves the same tensors as `vit.layers.{i}.attention.q_proj…`.
/// Both are read; the first is written (every version of `transformers` loads it).
pub fn legacy_name(name: &str) -> String {
    let Some(rest) = name.strip_prefix("vit.layers.") else {
        return name.to_string();
    };
    let Some((i, tail)) = rest.split_once('.') else {
        return name.to_string();
    };
    let tail = [
        ("attention.q_proj.", "attention.attention.query."),
        ("attention.k_proj.", "attention.attention.key."),
        ("attention.v_proj.", "attention.attention.value."),
        ("attention.o_proj.", "attention.output.dense."),
        ("mlp.fc1.", "intermediate.dense."),
        ("mlp.fc2.", "output.dense."),
    ]
    .iter()
    .find_map(|(new, old)| tail.strip_prefix(new).map(|t| format!("{old}{t}")))
    .unwrap_or_else(|| tail.to_string());
    format!("vit.encoder.layer.{i}.{tail}")
}

/// Rename a checkpoint's tensors to [`legacy_name`]s.
pub fn legacy_names(tensors: std::collections::BTreeMap<String, Tensor>) -> std::collections::BTreeMap<String, Tensor> {
    tensors.into_iter().map(|(k, v)| (legacy_name(&k), v)).collect()
}
