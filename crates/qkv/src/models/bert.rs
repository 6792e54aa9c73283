//! BERT: a transformer *encoder*. Every token attends to every other token —
//! no causal mask — so each output vector describes its token in the context
//! of the whole sentence. Padding positions are hidden with a key mask.
//!
//! ids (+ positions + segment ids) → embeddings → LayerNorm → N post-norm
//! blocks → one vector per token. On top, a head:
//!
//! - **masked language modelling** (pre-training): some tokens are replaced
//!   by `[MASK]` and the model predicts the originals from both sides;
//! - **classification** (fine-tuning): the `[CLS]` vector (through the
//!   pooler) or the mean of all token vectors → class scores.
//!
//! Names and weight layout follow Hugging Face's `BertForMaskedLM` /
//! `BertForSequenceClassification` (`bert.embeddings.word_embeddings`,
//! `bert.encoder.layer.0.attention.self.query`, … with `nn.Linear` weights
//! stored `[out, in]`), and the configuration is read and written with the
//! field names of its `config.json`, so checkpoints move between qkv and
//! `transformers` as they are.

use serde::{Deserialize, Serialize};

use qkv_tensor::{Param, Rng, Tensor};

use crate::error::{Error, Result};
use crate::nn::attention::Attention;
use crate::nn::block::{Block, Naming, Placement};
use crate::nn::embedding::Embedding;
use crate::nn::linear::Linear;
use crate::nn::mlp::{Activation, Mlp};
use crate::nn::norm::{Norm, NormKind};
use crate::nn::{Dropout, Module, NamedParam};

/// BERT's architecture, in the field names of Hugging Face's `BertConfig`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BertConfig {
    /// V. Default 30522 (bert-base-uncased).
    pub vocab_size: usize,
    /// C. Default 768.
    pub hidden_size: usize,
    /// Encoder blocks. Default 12.
    pub num_hidden_layers: usize,
    /// Heads per block. Default 12.
    pub num_attention_heads: usize,
    /// F, the MLP width. Default 3072.
    pub intermediate_size: usize,
    /// "gelu" (exact) or "gelu_new"/"gelu_pytorch_tanh" (tanh approximation) or "relu". Default "gelu".
    pub hidden_act: String,
    /// Dropout on embeddings and sublayer outputs while training. Default 0.1.
    pub hidden_dropout_prob: f32,
    /// Longest input in tokens. Default 512.
    pub max_position_embeddings: usize,
    /// Segment ids (sentence A/B). Default 2.
    pub type_vocab_size: usize,
    /// Default 1e-12.
    pub layer_norm_eps: f32,
    /// Id of `[PAD]`. Default 0.
    pub pad_token_id: u32,
    /// Everything else a `config.json` may hold (kept when writing it back).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Default for BertConfig {
    fn default() -> Self {
        BertConfig {
            vocab_size: 30522,
            hidden_size: 768,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            intermediate_size: 3072,
            hidden_act: "gelu".into(),
            hidden_dropout_prob: 0.1,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            pad_token_id: 0,
            extra: Default::default(),
        }
    }
}

impl BertConfig {
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size ({}) must be a multiple of num_attention_heads ({})",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(0.0..1.0).contains(&self.hidden_dropout_prob) {
            return bad(format!("hidden_dropout_prob {} must be in [0, 1)", self.hidden_dropout_prob));
        }
        self.activation()?;
        if let Some(kind) = self.extra.get("position_embedding_type").and_then(|v| v.as_str())
            && kind != "absolute"
        {
            return bad(format!("position_embedding_type {kind:?} is not supported (absolute)"));
        }
        if self.extra.get("is_decoder").and_then(|v| v.as_bool()) == Some(true) {
            return bad("is_decoder = true (a causal BERT) is not supported; qkv's BERT is an encoder".into());
        }
        super::within_bounds(self.checked_params(), "this BERT configuration")
    }

    /// About the parameter count (tables, layers, pooler and MLM head), with
    /// checked arithmetic: `None` when it overflows.
    pub fn checked_params(&self) -> Option<usize> {
        let c = self.hidden_size;
        let layer =
            c.checked_mul(c)?.checked_mul(4)?.checked_add(c.checked_mul(self.intermediate_size)?.checked_mul(2)?)?;
        let tables = self
            .vocab_size
            .checked_add(self.max_position_embeddings)?
            .checked_add(self.type_vocab_size)?
            .checked_mul(c)?;
        layer.checked_mul(self.num_hidden_layers)?.checked_add(tables)?.checked_add(c.checked_mul(c)?.checked_mul(2)?)
    }

    pub fn activation(&self) -> Result<Activation> {
        match self.hidden_act.as_str() {
            "gelu" => Ok(Activation::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(Activation::GeluTanh),
            "relu" => Ok(Activation::Relu),
            other => Err(Error::Config(format!(
                "hidden_act {other:?} is not supported (gelu, gelu_new, gelu_pytorch_tanh, relu)"
            ))),
        }
    }
}

/// Token + position + segment embeddings, then LayerNorm.
pub struct BertEmbeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: Norm,
}

/// The encoder without a head (Hugging Face's `BertModel`).
pub struct Bert {
    pub config: BertConfig,
    pub embeddings: BertEmbeddings,
    pub layers: Vec<Block>,
    /// `tanh(dense([CLS]))`, the sentence vector BERT's classifiers use
    /// (absent in the masked-LM model, as in Hugging Face's).
    pub pooler: Option<Linear>,
}

/// One batch of token ids with its padding.
pub struct Batch<'a> {
    /// `[B, T]`
    pub ids: &'a [u32],
    /// `[B, T]` segment ids; `None` means all 0.
    pub type_ids: Option<&'a [u32]>,
    /// `[B, T]`: `true` for real tokens, `false` for padding.
    pub mask: &'a [bool],
    pub b: usize,
    pub t: usize,
}

impl Bert {
    /// A freshly initialised encoder (BERT's scheme: N(0, 0.02) weights, zero
    /// biases, unit LayerNorms).
    pub fn new(config: BertConfig, pooler: bool, rng: &mut Rng) -> Result<Bert> {
        config.validate()?;
        let c = &config;
        let std = 0.02;
        let norm = || Norm::new(NormKind::LayerNorm, c.hidden_size, true, c.layer_norm_eps);
        let embeddings = BertEmbeddings {
            word_embeddings: Embedding::new(c.vocab_size, c.hidden_size, std, rng),
            position_embeddings: Embedding::new(c.max_position_embeddings, c.hidden_size, std, rng),
            token_type_embeddings: Embedding::new(c.type_vocab_size, c.hidden_size, std, rng),
            layer_norm: norm(),
        };
        let act = c.activation()?;
        let layers = (0..c.num_hidden_layers)
            .map(|_| Block {
                ln_1: norm(),
                attn: Attention::new_separate(c.hidden_size, c.num_attention_heads, true, std, rng),
                ln_2: norm(),
                mlp: Mlp::new_out_in(c.hidden_size, c.intermediate_size, act, true, std, rng),
                placement: Placement::Post,
                naming: Naming::Bert,
            })
            .collect();
        let pooler = pooler.then(|| Linear::new_out_in(c.hidden_size, c.hidden_size, true, std, rng));
        Ok(Bert { config, embeddings, layers, pooler })
    }

    fn check(&self, x: &Batch) -> Result<()> {
        let c = &self.config;
        if x.ids.len() != x.b * x.t || x.mask.len() != x.b * x.t || x.t == 0 {
            return Err(Error::Data(format!("ids and mask do not form a [{}, {}] batch", x.b, x.t)));
        }
        if x.t > c.max_position_embeddings {
            return Err(Error::Data(format!(
                "{} tokens exceed the model's {} positions",
                x.t, c.max_position_embeddings
            )));
        }
        if let Some(&id) = x.ids.iter().find(|&&id| id as usize >= c.vocab_size) {
            return Err(Error::Data(format!("token id {id} is outside the vocabulary of {}", c.vocab_size)));
        }
        if let Some(tt) = x.type_ids {
            if tt.len() != x.ids.len() {
                return Err(Error::Data("segment ids do not match the token ids".into()));
            }
            if let Some(&id) = tt.iter().find(|&&id| id as usize >= c.type_vocab_size) {
                return Err(Error::Data(format!("segment id {id} is outside the {} segments", c.type_vocab_size)));
            }
        }
        Ok(())
    }

    /// One vector per token.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, C]`
    pub fn forward(&self, x: &Batch, drop: &Dropout) -> Result<Tensor> {
        let mut h = self.embed(x, drop)?;
        // every query may see every real token; padding keys are hidden
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h, Some(x.mask), None, drop, 2 + 2 * i as u64)?;
        }
        Ok(h)
    }

    /// Word, position and segment embeddings, summed and normalised: the
    /// input of the first layer.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, C]`
    pub fn embed(&self, x: &Batch, drop: &Dropout) -> Result<Tensor> {
        self.check(x)?;
        let e = &self.embeddings;
        let pos: Vec<u32> = (0..x.t as u32).collect();
        let zeros;
        let types = match x.type_ids {
            Some(t) => t,
            None => {
                zeros = vec![0u32; x.ids.len()];
                &zeros
            }
        };
        let h = e
            .word_embeddings
            .forward(x.ids, &[x.b, x.t])?
            .add(&e.position_embeddings.forward(&pos, &[x.t])?)?
            .add(&e.token_type_embeddings.forward(types, &[x.b, x.t])?)?;
        Ok(drop.apply(&e.layer_norm.forward(&h)?, 0)?)
    }

    /// The attention probabilities of every layer (padding keys get 0).
    ///
    /// # Shapes
    /// ids `[B, T]` → one `[B, H, T, T]` per layer
    pub fn attention_maps(&self, x: &Batch) -> Result<Vec<Tensor>> {
        qkv_tensor::no_grad(|| {
            let mut h = self.embed(x, &Dropout::default())?;
            let mut maps = Vec::with_capacity(self.layers.len());
            for layer in &self.layers {
                let (out, probs) = layer.forward_with_probabilities(&h, Some(x.mask))?;
                maps.push(probs);
                h = out;
            }
            Ok(maps)
        })
    }

    /// `tanh(dense(h[CLS]))`.
    ///
    /// # Shapes
    /// h `[B, T, C]` → `[B, C]`
    pub fn pool_cls(&self, h: &Tensor) -> Result<Tensor> {
        let (b, _, c) = h.dims3()?;
        let cls = h.narrow(1, 0, 1)?.reshape(&[b, c])?;
        let pooler =
            self.pooler.as_ref().ok_or_else(|| Error::Config("this BERT has no pooler; use mean pooling".into()))?;
        Ok(pooler.forward(&cls)?.tanh())
    }

    /// The mean of the real tokens' vectors (sentence-transformers' pooling).
    ///
    /// # Shapes
    /// h `[B, T, C]`, mask `[B, T]` → `[B, C]`
    pub fn pool_mean(h: &Tensor, mask: &[bool]) -> Result<Tensor> {
        let (b, t, _) = h.dims3()?;
        let counts: Vec<f32> = mask.chunks(t).map(|m| m.iter().filter(|&&k| k).count().max(1) as f32).collect();
        let w: Vec<f32> = mask.iter().enumerate().map(|(i, &k)| if k { 1.0 / counts[i / t] } else { 0.0 }).collect();
        let w = Tensor::from_vec(w, &[b, t, 1])?;
        Ok(h.mul(&w)?.sum(1, false)?)
    }
}

impl Module for Bert {
    /// `BertModel` names (no `bert.` prefix; the task models add it).
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        let e = &self.embeddings;
        e.word_embeddings.collect_params(&format!("{prefix}embeddings.word_embeddings."), out);
        e.position_embeddings.collect_params(&format!("{prefix}embeddings.position_embeddings."), out);
        e.token_type_embeddings.collect_params(&format!("{prefix}embeddings.token_type_embeddings."), out);
        e.layer_norm.collect_params(&format!("{prefix}embeddings.LayerNorm."), out);
        for (i, l) in self.layers.iter().enumerate() {
            l.collect_params(&format!("{prefix}encoder.layer.{i}."), out);
        }
        if let Some(p) = &self.pooler {
            p.collect_params(&format!("{prefix}pooler.dense."), out);
        }
    }
}

/// Predicts the original token at masked positions: `dense → GELU →
/// LayerNorm → · Wᵀ + b` with `W` the word-embedding matrix (tied).
pub struct MlmHead {
    pub dense: Linear,
    pub layer_norm: Norm,
    pub activation: Activation,
    /// `[V]`
    pub bias: Param,
}

impl MlmHead {
    pub fn new(config: &BertConfig, rng: &mut Rng) -> Result<MlmHead> {
        Ok(MlmHead {
            dense: Linear::new_out_in(config.hidden_size, config.hidden_size, true, 0.02, rng),
            layer_norm: Norm::new(NormKind::LayerNorm, config.hidden_size, true, config.layer_norm_eps),
            activation: config.activation()?,
            bias: Param::new(Tensor::zeros(&[config.vocab_size])),
        })
    }

    /// # Shapes
    /// h `[.., C]`, word embeddings `[V, C]` → `[.., V]`
    pub fn forward(&self, h: &Tensor, word_embeddings: &Tensor) -> Result<Tensor> {
        let x = self.dense.forward(h)?;
        let x = match self.activation {
            Activation::GeluTanh => x.gelu_tanh(),
            Activation::Relu => x.relu(),
            _ => x.gelu(),
        };
        let x = self.layer_norm.forward(&x)?;
        Ok(x.matmul(&word_embeddings.t()?)?.add(&self.bias.value())?)
    }
}

impl Module for MlmHead {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.dense.collect_params(&format!("{prefix}transform.dense."), out);
        self.layer_norm.collect_params(&format!("{prefix}transform.LayerNorm."), out);
        out.push(NamedParam { name: format!("{prefix}bias"), param: self.bias.clone(), decay: false });
    }
}

/// How a sentence becomes one vector for classification.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// BERT's pooler on the `[CLS]` token.
    #[default]
    Cls,
    /// The mean of all real tokens' vectors.
    Mean,
}

impl std::str::FromStr for Pooling {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            _ => Err(format!("unknown pooling {s:?}: use cls or mean")),
        }
    }
}

/// BERT with a masked-language-model head (`BertForMaskedLM` names).
pub struct BertForMaskedLm {
    pub bert: Bert,
    pub head: MlmHead,
}

impl BertForMaskedLm {
    pub fn new(config: BertConfig, seed: u64) -> Result<Self> {
        let mut rng = Rng::new(seed);
        let head = MlmHead::new(&config, &mut rng)?;
        Ok(BertForMaskedLm { bert: Bert::new(config, false, &mut rng)?, head })
    }

    /// Scores over the vocabulary at every position.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, T, V]`
    pub fn forward(&self, x: &Batch, drop: &Dropout) -> Result<Tensor> {
        let h = self.bert.forward(x, drop)?;
        self.head.forward(&h, &self.bert.embeddings.word_embeddings.weight.value())
    }
}

impl BertForMaskedLm {
    /// Scores only at `positions` (flat indices into the `[B, T]` batch): the
    /// head's `C × V` product is the costly part, and the loss needs it only
    /// at the masked positions.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[positions, V]`
    pub fn forward_at(&self, x: &Batch, positions: &[u32], drop: &Dropout) -> Result<Tensor> {
        let h = self.bert.forward(x, drop)?;
        let c = self.bert.config.hidden_size;
        let rows = h.reshape(&[x.b * x.t, c])?;
        // gathering rows is an embedding lookup into the hidden states (its backward scatters back)
        let picked = qkv_tensor::embedding(&rows, positions, &[positions.len()])?;
        self.head.forward(&picked, &self.bert.embeddings.word_embeddings.weight.value())
    }
}

impl Module for BertForMaskedLm {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.bert.collect_params(&format!("{prefix}bert."), out);
        self.head.collect_params(&format!("{prefix}cls.predictions."), out);
    }
}

/// BERT with a classification head (`BertForSequenceClassification` names).
pub struct BertClassifier {
    pub bert: Bert,
    pub pooling: Pooling,
    /// `[labels, C]`
    pub classifier: Linear,
}

impl BertClassifier {
    pub fn new(config: BertConfig, num_labels: usize, pooling: Pooling, seed: u64) -> Result<Self> {
        if num_labels < 2 {
            return Err(Error::Config(format!("a classifier needs at least 2 labels, got {num_labels}")));
        }
        let mut rng = Rng::new(seed);
        let bert = Bert::new(config, pooling == Pooling::Cls, &mut rng)?;
        let classifier = Linear::new_out_in(bert.config.hidden_size, num_labels, true, 0.02, &mut rng);
        Ok(BertClassifier { bert, pooling, classifier })
    }

    /// Class scores per sequence.
    ///
    /// # Shapes
    /// ids `[B, T]` → `[B, labels]`
    pub fn forward(&self, x: &Batch, drop: &Dropout) -> Result<Tensor> {
        let h = self.bert.forward(x, drop)?;
        let pooled = match self.pooling {
            Pooling::Cls => self.bert.pool_cls(&h)?,
            Pooling::Mean => Bert::pool_mean(&h, x.mask)?,
        };
        let pooled = drop.apply(&pooled, 1)?;
        Ok(self.classifier.forward(&pooled)?)
    }
}

impl BertClassifier {
    /// Class probabilities of `[CLS] … [SEP]` sequences, in batches of
    /// `batch` (padded to their longest), without gradients.
    ///
    /// # Shapes
    /// N sequences → N rows of `labels` probabilities
    pub fn probabilities(&self, seqs: &[&[u32]], pad: u32, batch: usize) -> Result<Vec<Vec<f32>>> {
        let mut probs = Vec::with_capacity(seqs.len());
        qkv_tensor::no_grad(|| -> Result<()> {
            for chunk in seqs.chunks(batch.max(1)) {
                let (ids, mask, t) = crate::data::bert_input::pad_batch(chunk, pad);
                let x = Batch { ids: &ids, type_ids: None, mask: &mask, b: chunk.len(), t };
                let p = self.forward(&x, &Dropout::default())?.softmax();
                let k = p.dim(-1)?;
                probs.extend(p.data().chunks(k).map(|r| r.to_vec()));
            }
            Ok(())
        })?;
        Ok(probs)
    }
}

impl Module for BertClassifier {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.bert.collect_params(&format!("{prefix}bert."), out);
        self.classifier.collect_params(&format!("{prefix}classifier."), out);
    }
}
