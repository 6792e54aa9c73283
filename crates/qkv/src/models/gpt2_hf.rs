//! GPT-2 in Hugging Face's layout, both ways: load a `GPT2LMHeadModel`
//! directory as a qkv [`Gpt`], and write a qkv GPT as one.
//!
//! Nothing needs transposing: GPT-2's `Conv1D` stores weights `[in, out]`,
//! qkv's [`crate::nn::linear::Linear`] too, and the fused `c_attn` (queries,
//! keys, values side by side) is qkv's fused projection. What differs is
//! only the configuration's vocabulary (`n_positions` is `block_size`,
//! `activation_function: "gelu_new"` is the tanh GELU, …) and the name prefix:
//! checkpoints store the body either under `transformer.` or bare.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use qkv_tensor::Tensor;

use crate::error::{Error, Result};
use crate::io::hf;
use crate::models::gpt::{Gpt, GptConfig};
use crate::nn::block::Placement;
use crate::nn::mlp::Activation;
use crate::nn::norm::NormKind;
use crate::nn::positional::Positions;
use crate::nn::{Module, NamedParam};

/// A qkv GPT configuration from a GPT-2 `config.json`; options qkv cannot
/// honour are refused by name.
pub fn config_from_hf(c: &Value) -> Result<GptConfig> {
    let path = "config.json";
    let usize_of = |k: &str| -> Result<usize> {
        c.get(k)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| Error::Config(format!("{path}: missing or non-integer {k:?}")))
    };
    let flag = |k: &str| c.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    for unsupported in ["scale_attn_by_inverse_layer_idx", "add_cross_attention"] {
        if flag(unsupported) {
            return Err(Error::Config(format!("GPT-2 option {unsupported:?} = true is not supported")));
        }
    }
    if c.get("scale_attn_weights").and_then(|v| v.as_bool()) == Some(false) {
        return Err(Error::Config("GPT-2 option \"scale_attn_weights\" = false is not supported".into()));
    }
    let n_embd = usize_of("n_embd")?;
    let activation = match c.get("activation_function").and_then(|v| v.as_str()).unwrap_or("gelu_new") {
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::Gelu,
        "relu" => Activation::Relu,
        "silu" | "swish" => Activation::Silu,
        other => {
            return Err(Error::Config(format!("GPT-2 activation_function {other:?} is not supported")));
        }
    };
    let n_inner = match c.get("n_inner") {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as usize,
        _ => 4 * n_embd,
    };
    let config = GptConfig {
        vocab_size: usize_of("vocab_size")?,
        block_size: usize_of("n_positions")?,
        n_layer: usize_of("n_layer")?,
        n_head: usize_of("n_head")?,
        n_embd,
        mlp_ratio: n_inner as f32 / n_embd as f32,
        activation,
        norm: NormKind::LayerNorm,
        norm_placement: Placement::Pre,
        norm_eps: c.get("layer_norm_epsilon").and_then(|v| v.as_f64()).unwrap_or(1e-5) as f32,
        positions: Positions::Learned,
        bias: true,
        dropout: 0.0,
        tie_embeddings: c.get("tie_word_embeddings").and_then(|v| v.as_bool()).unwrap_or(true),
    };
    config.validate()?;
    if config.mlp_hidden() != n_inner {
        return Err(Error::Config(format!(
            "n_inner {n_inner} is not a whole multiple of n_embd {n_embd} that qkv can express"
        )));
    }
    Ok(config)
}

/// True when `config` is a GPT-2 one (`model_type` or architecture).
pub fn is_gpt2(config: &Value) -> bool {
    config.get("model_type").and_then(|v| v.as_str()) == Some("gpt2")
        || hf::architecture(config).is_some_and(|a| a.starts_with("GPT2"))
}

/// Load a Hugging Face GPT-2 directory (`GPT2LMHeadModel` or `GPT2Model`).
pub fn load(dir: &Path) -> Result<Gpt> {
    let config = hf::read_config(dir)?;
    if !is_gpt2(&config) {
        return Err(Error::Config(format!("{}: not a GPT-2 model directory", dir.display())));
    }
    let gpt_config = config_from_hf(&config).map_err(|e| Error::format(dir.join(hf::CONFIG), e.to_string()))?;
    hf::weights_can_hold(dir, gpt_config.checked_params())?;
    let model = Gpt::new(gpt_config, 0)?;
    let tensors = hf::read_weights(dir)?;
    // bodies stored bare ("h.0.attn…") get the "transformer." prefix qkv uses
    let tensors: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| {
            if k.starts_with("transformer.") || k.starts_with("lm_head.") {
                (k, v)
            } else {
                (format!("transformer.{k}"), v)
            }
        })
        .collect();
    let unused = hf::assign(&dir.join(hf::WEIGHTS), &model.named_params(), &tensors, "")?;
    // causal-mask buffers of old checkpoints, and a tied head stored anyway, carry nothing new
    let harmless = |k: &str| k.ends_with(".attn.bias") || k.ends_with(".attn.masked_bias") || k == "lm_head.weight";
    if let Some(k) = unused.iter().find(|k| !harmless(k)) {
        return Err(Error::checkpoint(
            dir.join(hf::WEIGHTS),
            format!("unexpected tensor {k:?}: not a GPT-2 this config describes"),
        ));
    }
    Ok(model)
}

/// Why a qkv GPT cannot be written as GPT-2 (`None` when it can).
pub fn inexpressible(c: &GptConfig) -> Option<String> {
    if c.positions != Positions::Learned {
        return Some(format!("GPT-2 has learned positions only, this model uses {:?}", c.positions));
    }
    if c.norm != NormKind::LayerNorm {
        return Some("GPT-2 uses LayerNorm, this model RMSNorm".into());
    }
    if c.norm_placement != Placement::Pre {
        return Some("GPT-2 normalises before each sublayer (pre-norm), this model after (post-norm)".into());
    }
    if c.activation == Activation::SwiGlu {
        return Some("GPT-2's MLP has no gated (SwiGLU) variant".into());
    }
    None
}

/// Write `model` as a Hugging Face GPT-2 directory (`config.json` and
/// `model.safetensors`). Missing biases (a model trained with `bias: false`)
/// are written as zeros, which computes the same function.
pub fn export(model: &Gpt, dir: &Path, extra_config: &[(&str, Value)]) -> Result<()> {
    let c = &model.config;
    if let Some(why) = inexpressible(c) {
        return Err(Error::Config(format!("cannot export as GPT-2: {why}")));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let activation = match c.activation {
        Activation::Gelu => "gelu",
        Activation::GeluTanh => "gelu_new",
        Activation::Relu => "relu",
        Activation::Silu => "silu",
        Activation::SwiGlu => unreachable!("refused above"),
    };
    let mut config = json!({
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": c.vocab_size,
        "n_positions": c.block_size,
        "n_ctx": c.block_size,
        "n_embd": c.n_embd,
        "n_layer": c.n_layer,
        "n_head": c.n_head,
        "n_inner": c.mlp_hidden(),
        "activation_function": activation,
        "layer_norm_epsilon": c.norm_eps,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": 0.0,
        "tie_word_embeddings": c.tie_embeddings,
        "scale_attn_weights": true,
        "use_cache": true,
    });
    for (k, v) in extra_config {
        config[*k] = v.clone();
    }
    hf::write_config(dir, &config)?;
    // every GPT-2 parameter, with zeros where this model has no bias
    let mut params: Vec<NamedParam> = model.named_params();
    let have: std::collections::HashSet<String> = params.iter().map(|p| p.name.clone()).collect();
    let zeros =
        |name: String, n: usize| NamedParam { name, param: qkv_tensor::Param::new(Tensor::zeros(&[n])), decay: false };
    let (e, f) = (c.n_embd, c.mlp_hidden());
    let mut wanted = vec![("transformer.ln_f.bias".to_string(), e)];
    for i in 0..c.n_layer {
        let p = |s: &str| format!("transformer.h.{i}.{s}");
        wanted.extend([
            (p("ln_1.bias"), e),
            (p("attn.c_attn.bias"), 3 * e),
            (p("attn.c_proj.bias"), e),
            (p("ln_2.bias"), e),
            (p("mlp.c_fc.bias"), f),
            (p("mlp.c_proj.bias"), e),
        ]);
    }
    for (name, n) in wanted {
        if !have.contains(&name) {
            params.push(zeros(name, n));
        }
    }
    hf::write_weights(dir, &params)
}
