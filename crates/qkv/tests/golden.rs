//! Golden tests against PyTorch: the fixtures in `tests/fixtures/` were made by
//! `scripts/make_fixtures.py` from the PyTorch twins in `scripts/reference.py`.
//! Each test loads the same parameters and inputs, runs qkv, and compares the
//! outputs and every gradient.

use qkv::io::safetensors::Loaded;
use qkv::models::gpt::{Gpt, GptConfig};
use qkv::nn::attention::Attention;
use qkv::nn::block::{Block, Naming, Placement};
use qkv::nn::mlp::{Activation, Mlp};
use qkv::nn::norm::{Norm, NormKind};
use qkv::nn::positional::Positions;
use qkv::nn::{Dropout, Module, NamedParam};
use qkv::train::optimizer::{AdamW, AdamWConfig, clip_grad_norm};
use qkv_tensor::{AttentionKernel, Param, Rng, Tensor};

mod common;
use common::{assert_close, fixture, set_params};

fn meta_usize(f: &Loaded, key: &str) -> usize {
    f.metadata[key].parse().unwrap()
}

/// Forward x through `forward`, backprop `dy`, compare y, dx and every param gradient.
fn check_module(f: &Loaded, params: &[NamedParam], prefix: &str, forward: impl Fn(&Tensor) -> Tensor) {
    set_params(params, &f.tensors, prefix);
    let x = Param::new(f.tensors["x"].clone());
    let y = forward(&x.value());
    assert_close("y", &y, &f.tensors["y"], 1e-5);
    y.backward_with(&f.tensors["dy"]).unwrap();
    assert_close("grad x", &x.grad().unwrap(), &f.tensors["grad.x"], 1e-4);
    for p in params {
        let key = format!("grad.{prefix}{}", p.name);
        assert_close(&key, &p.param.grad().unwrap(), &f.tensors[&key], 1e-4);
    }
}

#[test]
fn multi_head_attention_matches_pytorch_causal_and_padded() {
    for (file, causal) in [("attention_causal.safetensors", true), ("attention_padded.safetensors", false)] {
        let f = fixture(file);
        let h = meta_usize(&f, "n_head");
        let c = f.tensors["x"].shape()[2];
        let key_mask: Option<Vec<bool>> =
            f.tensors.get("key_mask").map(|m| m.to_vec().iter().map(|&v| v > 0.5).collect());
        for kernel in [AttentionKernel::Flash, AttentionKernel::Naive] {
            let mut attn = Attention::new(c, h, true, causal, Positions::None, 0.02, 0.02, &mut Rng::new(0));
            attn.kernel = kernel;
            check_module(&f, &attn.named_params(), "attn.", |x| attn.forward(x, key_mask.as_deref(), None).unwrap());
        }
    }
}

#[test]
fn transformer_block_matches_pytorch() {
    let f = fixture("block.safetensors");
    let h = meta_usize(&f, "n_head");
    let c = f.tensors["x"].shape()[2];
    let mut rng = Rng::new(0);
    let block = Block {
        ln_1: Norm::new(NormKind::LayerNorm, c, true, 1e-5),
        attn: Attention::new(c, h, true, true, Positions::None, 0.02, 0.02, &mut rng),
        ln_2: Norm::new(NormKind::LayerNorm, c, true, 1e-5),
        mlp: Mlp::new(c, 4 * c, Activation::GeluTanh, true, 0.02, 0.02, &mut rng),
        placement: Placement::Pre,
        naming: Naming::Gpt2,
    };
    check_module(&f, &block.named_params(), "", |x| block.forward(x, None, None, &Dropout::default(), 0).unwrap());
}

#[test]
fn tiny_gpt_logits_loss_gradients_and_three_adamw_steps_match_pytorch() {
    let f = fixture("gpt_tiny.safetensors");
    let cfg: serde_json::Value = serde_json::from_str(&f.metadata["config"]).unwrap();
    let opt_cfg: serde_json::Value = serde_json::from_str(&f.metadata["optimizer"]).unwrap();
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap() as usize;
    let config = GptConfig {
        vocab_size: n(&cfg, "vocab_size"),
        block_size: n(&cfg, "block_size"),
        n_layer: n(&cfg, "n_layer"),
        n_head: n(&cfg, "n_head"),
        n_embd: n(&cfg, "n_embd"),
        bias: false,
        activation: Activation::Gelu,
        ..GptConfig::default()
    };
    let model = Gpt::new(config, 0).unwrap();
    let params = model.named_params();
    set_params(&params, &f.tensors, "param.");
    let ids: Vec<u32> = f.tensors["ids"].to_vec().iter().map(|&v| v as u32).collect();
    let targets: Vec<u32> = f.tensors["targets"].to_vec().iter().map(|&v| v as u32).collect();
    let (b, t) = (f.tensors["ids"].shape()[0], f.tensors["ids"].shape()[1]);

    let logits = model.forward(&ids, b, t, &Dropout::default()).unwrap();
    assert_close("logits", &logits, &f.tensors["logits"], 1e-5);
    let loss = qkv_tensor::cross_entropy(&logits, &targets, None).unwrap();
    assert!((loss.item().unwrap() - f.tensors["loss"].to_vec()[0]).abs() < 1e-5);
    loss.backward().unwrap();
    for p in &params {
        let key = format!("grad.{}", p.name);
        assert_close(&key, &p.param.grad().unwrap(), &f.tensors[&key], 1e-4);
    }

    let f32_of = |k: &str| opt_cfg[k].as_f64().unwrap() as f32;
    let betas = opt_cfg["betas"].as_array().unwrap();
    let mut opt = AdamW::new(
        AdamWConfig {
            beta1: betas[0].as_f64().unwrap() as f32,
            beta2: betas[1].as_f64().unwrap() as f32,
            eps: f32_of("eps"),
            weight_decay: f32_of("weight_decay"),
        },
        &params,
    );
    let expected_losses = f.tensors["step_losses"].to_vec();
    for expected in expected_losses {
        params.iter().for_each(|p| p.param.zero_grad());
        let loss = model.loss(&ids, &targets, b, t, &Dropout::default()).unwrap();
        assert!((loss.item().unwrap() - expected).abs() < 1e-5, "step loss {} vs {expected}", loss.item().unwrap());
        loss.backward().unwrap();
        clip_grad_norm(&params, f32_of("clip"));
        opt.update(&params, f32_of("lr"));
    }
    for p in &params {
        let key = format!("after.{}", p.name);
        assert_close(&key, &p.param.value(), &f.tensors[&key], 1e-5);
    }
}
