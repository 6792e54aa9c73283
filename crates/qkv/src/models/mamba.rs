//! A Mamba language model, as Hugging Face's `MambaForCausalLM` lays it
//! out: `backbone.embeddings` → `backbone.layers.N` ([`MambaBlock`]) →
//! `backbone.norm_f` (RMSNorm) → the head (`lm_head`, tied to the
//! embeddings by default). Loads `transformers` directories; generation
//! carries each block's fixed-size state ([`MixerState`]), so every new
//! token costs the same.

use std::path::Path;

use serde::{Deserialize, Serialize};

use qkv_tensor::{Rng, Tensor, no_grad};

use super::MAX_PARAMS;
use crate::error::{Error, Result};
use crate::io::hf;
use crate::nn::embedding::Embedding;
use crate::nn::mamba::{MambaBlock, MixerShape, MixerState};
use crate::nn::norm::{Norm, NormKind};
use crate::nn::{Module, NamedParam};

/// `MambaConfig` as `transformers` writes it (the fields qkv reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MambaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    /// N. Default 16.
    #[serde(default = "sixteen")]
    pub state_size: usize,
    pub num_hidden_layers: usize,
    /// K. Default 4.
    #[serde(default = "four")]
    pub conv_kernel: usize,
    /// E = expand · C. Default 2.
    #[serde(default = "two")]
    pub expand: usize,
    /// E, when given (must equal expand · hidden_size).
    pub intermediate_size: Option<usize>,
    /// R: a number, or "auto" for ⌈C / 16⌉.
    #[serde(default)]
    pub time_step_rank: Option<serde_json::Value>,
    #[serde(default)]
    pub use_bias: bool,
    #[serde(default = "yes")]
    pub use_conv_bias: bool,
    #[serde(default = "eps")]
    pub layer_norm_epsilon: f32,
    #[serde(default = "silu")]
    pub hidden_act: String,
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn sixteen() -> usize {
    16
}
fn four() -> usize {
    4
}
fn two() -> usize {
    2
}
fn yes() -> bool {
    true
}
fn eps() -> f32 {
    1e-5
}
fn silu() -> String {
    "silu".into()
}

impl Default for MambaConfig {
    /// A small character-level Mamba for `qkv train --model mamba`: 6 blocks
    /// of width 192 (E = 384, N = 16), about as many parameters as the
    /// default GPT (two Mamba blocks hold about what one transformer block holds).
    fn default() -> Self {
        MambaConfig {
            vocab_size: 65,
            hidden_size: 192,
            state_size: 16,
            num_hidden_layers: 6,
            conv_kernel: 4,
            expand: 2,
            intermediate_size: None,
            time_step_rank: None,
            use_bias: false,
            use_conv_bias: true,
            layer_norm_epsilon: 1e-5,
            hidden_act: silu(),
            tie_word_embeddings: true,
            eos_token_id: None,
        }
    }
}

impl MambaConfig {
    /// The block's sizes, after checking what qkv supports (named in the error).
    pub fn shape(&self) -> Result<MixerShape> {
        let bad = |m: String| Err(Error::Config(m));
        if self.hidden_act != "silu" {
            return bad(format!("hidden_act {:?}: qkv's Mamba supports silu only", self.hidden_act));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("state_size", self.state_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("conv_kernel", self.conv_kernel),
            ("expand", self.expand),
        ] {
            if v == 0 {
                return bad(format!("{name} must be at least 1"));
            }
        }
        let inner = self
            .expand
            .checked_mul(self.hidden_size)
            .ok_or_else(|| Error::Config("expand · hidden_size overflows".into()))?;
        if let Some(i) = self.intermediate_size
            && i != inner
        {
            return bad(format!("intermediate_size {i} is not expand · hidden_size = {inner}: not supported"));
        }
        let dt_rank = match &self.time_step_rank {
            None => self.hidden_size.div_ceil(16),
            Some(v) if v.as_str() == Some("auto") => self.hidden_size.div_ceil(16),
            Some(v) => match v.as_u64() {
                Some(r) if r > 0 => r as usize,
                _ => return bad(format!("time_step_rank {v}: a positive number or \"auto\"")),
            },
        };
        let shape =
            MixerShape { hidden: self.hidden_size, inner, state: self.state_size, conv: self.conv_kernel, dt_rank };
        match self.count(dt_rank) {
            Some(p) if p <= MAX_PARAMS => Ok(shape),
            _ => bad(format!("this configuration asks for more than {MAX_PARAMS} parameters")),
        }
    }

    /// Parameters of the model this config describes, counted from its sizes
    /// without building it (`None`: unsupported options, or a count that overflows).
    pub fn num_params(&self) -> Option<usize> {
        self.count(self.shape().ok()?.dt_rank)
    }

    /// Every weight of the blocks, the final norm, the embeddings and an untied head, with checked products.
    fn count(&self, dt_rank: usize) -> Option<usize> {
        let (c, n, k, r) = (self.hidden_size, self.state_size, self.conv_kernel, dt_rank);
        let e = self.expand.checked_mul(c)?;
        let bias = self.use_bias as usize;
        let weights = [
            c.checked_mul(e.checked_mul(2)?)?,                    // in_proj
            e.checked_mul(k)?,                                    // conv1d
            e.checked_mul(r.checked_add(n.checked_mul(2)?)?)?,    // x_proj
            e.checked_mul(r)?,                                    // dt_proj
            e.checked_mul(n)?,                                    // A_log
            c.checked_mul(e)?,                                    // out_proj
            c,                                                    // the block's norm
            e.checked_mul(self.use_conv_bias as usize + 2)?,      // conv1d's and dt_proj's biases, D
            e.checked_mul(2)?.checked_add(c)?.checked_mul(bias)?, // in_proj's and out_proj's biases
        ];
        let per_block = weights.iter().try_fold(0usize, |a, &x| a.checked_add(x))?;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size.checked_mul(c)? };
        per_block
            .checked_mul(self.num_hidden_layers)?
            .checked_add(self.vocab_size.checked_mul(c)?)?
            .checked_add(head)?
            .checked_add(c)
    }
}

pub struct Mamba {
    pub config: MambaConfig,
    pub embeddings: Embedding,
    pub layers: Vec<MambaBlock>,
    pub norm_f: Norm,
    /// `[V, C]` when not tied to the embeddings.
    pub lm_head: Option<Tensor>,
}

impl Mamba {
    pub fn new(config: MambaConfig, seed: u64) -> Result<Mamba> {
        let shape = config.shape()?;
        let mut rng = Rng::new(seed);
        let embeddings = Embedding::new(config.vocab_size, config.hidden_size, 0.02, &mut rng);
        // as `transformers` initialises it (`rescale_prenorm_residual`): each
        // block's output projection scaled by 1/√layers, so the residual
        // stream's variance does not grow with depth
        let rescale = (config.num_hidden_layers as f32).powf(-0.5);
        let layers = (0..config.num_hidden_layers)
            .map(|_| {
                let block =
                    MambaBlock::new(shape, config.use_bias, config.use_conv_bias, config.layer_norm_epsilon, &mut rng);
                let w = &block.mixer.out_proj.weight;
                w.set_value(&w.value().scale(rescale)).expect("the same shape");
                block
            })
            .collect();
        let norm_f = Norm::new(NormKind::RmsNorm, config.hidden_size, false, config.layer_norm_epsilon);
        Ok(Mamba { config, embeddings, layers, norm_f, lm_head: None })
    }

    /// A `transformers` `MambaForCausalLM` directory.
    pub fn load(dir: &Path) -> Result<Mamba> {
        let cfg_path = dir.join(hf::CONFIG);
        let config: MambaConfig = serde_json::from_value(hf::read_config(dir)?)
            .map_err(|e| Error::format(&cfg_path, format!("not a Mamba config: {e}")))?;
        hf::weights_can_hold(dir, config.num_params())?;
        let mut model = Mamba::new(config, 0).map_err(|e| Error::format(&cfg_path, e.to_string()))?;
        let tensors = hf::read_weights(dir)?;
        let path = dir.join(hf::WEIGHTS);
        for name in hf::assign(&path, &model.named_params(), &tensors, "")? {
            let t = &tensors[&name];
            if name == "lm_head.weight" && t.shape() == model.embeddings.weight.shape() {
                model.lm_head = Some(t.clone());
            } else {
                return Err(Error::checkpoint(&path, format!("unexpected tensor {name:?} {:?}", t.shape())));
            }
        }
        if !model.config.tie_word_embeddings && model.lm_head.is_none() {
            return Err(Error::checkpoint(&path, "tie_word_embeddings is false but there is no lm_head.weight"));
        }
        Ok(model)
    }

    fn head(&self) -> Tensor {
        self.lm_head.clone().unwrap_or_else(|| self.embeddings.weight.value())
    }

    fn check(&self, ids: &[u32]) -> Result<()> {
        let v = self.config.vocab_size;
        match ids.iter().find(|&&i| i as usize >= v) {
            Some(bad) => Err(Error::Data(format!("token id {bad} is outside the vocabulary of {v}"))),
            None => Ok(()),
        }
    }

    /// Scores of the next token at every position.
    ///
    /// # Shapes
    /// ids `[B, L]` → `[B, L, V]`
    pub fn forward(&self, ids: &[u32], b: usize, l: usize) -> Result<Tensor> {
        self.check(ids)?;
        let mut h = self.embeddings.forward(ids, &[b, l])?;
        for block in &self.layers {
            h = block.forward(&h)?;
        }
        Ok(self.norm_f.forward(&h)?.matmul(&self.head().t()?)?)
    }

    /// Mean cross-entropy of predicting `targets` from `ids` at every position.
    ///
    /// # Shapes
    /// ids, targets `[B, L]` → scalar
    pub fn loss(&self, ids: &[u32], targets: &[u32], b: usize, l: usize) -> Result<Tensor> {
        Ok(qkv_tensor::cross_entropy(&self.forward(ids, b, l)?, targets, None)?)
    }

    /// One line: sizes and parameters.
    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "Mamba {} blocks × {} wide (E = {}, state N = {}, conv K = {}), {:.2} M parameters",
            c.num_hidden_layers,
            c.hidden_size,
            c.expand * c.hidden_size,
            c.state_size,
            c.conv_kernel,
            self.num_params() as f64 / 1e6
        )
    }

    /// Floats a sequence's generation state holds, whatever its length:
    /// per block the last `K - 1` convolution inputs and the `E × N` scan state.
    pub fn state_floats(&self) -> usize {
        let c = &self.config;
        let e = c.expand * c.hidden_size;
        c.num_hidden_layers * e * (c.conv_kernel - 1 + c.state_size)
    }

    /// A zero state for `b` sequences: one per block.
    pub fn zero_state(&self, b: usize) -> Vec<MixerState> {
        self.layers.iter().map(|l| l.mixer.zero_state(b)).collect()
    }

    /// Scores of the token after `ids` `[B]`, advancing the states.
    ///
    /// # Shapes
    /// ids `[B]` → `[B, V]`
    pub fn step(&self, ids: &[u32], states: &mut [MixerState]) -> Result<Tensor> {
        self.check(ids)?;
        let mut h = self.embeddings.forward(ids, &[ids.len()])?;
        for (block, st) in self.layers.iter().zip(states.iter_mut()) {
            h = block.step(&h, st)?;
        }
        Ok(self.norm_f.forward(&h)?.matmul(&self.head().t()?)?)
    }

    /// Greedy continuation of `prompt` by `max_new` tokens (stopping at
    /// `eos`), one step per token: the prompt goes through the steps too,
    /// so memory stays that of the states whatever the length.
    pub fn greedy(&self, prompt: &[u32], max_new: usize) -> Result<Vec<u32>> {
        if prompt.is_empty() {
            return Err(Error::Data("the prompt is empty: give at least one token".into()));
        }
        no_grad(|| {
            let mut states = self.zero_state(1);
            let mut logits = Tensor::zeros(&[1]);
            for &t in prompt {
                logits = self.step(&[t], &mut states)?;
            }
            let mut out = Vec::with_capacity(max_new.min(crate::generate::RESERVE_MAX));
            for _ in 0..max_new {
                let next = crate::metrics::argmax(&logits.to_vec());
                out.push(next);
                if Some(next) == self.config.eos_token_id {
                    break;
                }
                logits = self.step(&[next], &mut states)?;
            }
            Ok(out)
        })
    }
}

impl Module for Mamba {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.embeddings.collect_params(&format!("{prefix}backbone.embeddings."), out);
        for (i, l) in self.layers.iter().enumerate() {
            l.collect_params(&format!("{prefix}backbone.layers.{i}."), out);
        }
        self.norm_f.collect_params(&format!("{prefix}backbone.norm_f."), out);
    }
}
