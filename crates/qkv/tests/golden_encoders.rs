//! Encoders against `transformers` itself: fixtures made by
//! `scripts/make_fixtures.py` (`encoder_fixtures`) from `BertLayer`,
//! `ViTPatchEmbeddings`, `BertForMaskedLM`, `ViTForImageClassification` and
//! `DataCollatorForLanguageModeling`.

use std::collections::BTreeMap;

use qkv::data::mlm::{IGNORE, MaskingRule, mask_tokens};
use qkv::models::bert::{Batch, BertConfig, BertForMaskedLm};
use qkv::models::vit::{Vit, VitConfig};
use qkv::nn::attention::Attention;
use qkv::nn::block::{Block, Naming, Placement};
use qkv::nn::mlp::{Activation, Mlp};
use qkv::nn::norm::{Norm, NormKind};
use qkv::nn::patch::PatchEmbedding;
use qkv::nn::{Dropout, Module};
use qkv_tensor::{Param, Rng, Tensor};

mod common;
use common::{assert_close, fixture, set_params};

#[test]
fn bert_layer_with_padding_matches_transformers() {
    let f = fixture("bert_layer.safetensors");
    let h: usize = f.metadata["n_head"].parse().unwrap();
    let ff: usize = f.metadata["intermediate_size"].parse().unwrap();
    let c = f.tensors["x"].shape()[2];
    let mut rng = Rng::new(0);
    let layer = Block {
        ln_1: Norm::new(NormKind::LayerNorm, c, true, 1e-12),
        attn: Attention::new_separate(c, h, true, 0.02, &mut rng),
        ln_2: Norm::new(NormKind::LayerNorm, c, true, 1e-12),
        mlp: Mlp::new_out_in(c, ff, Activation::Gelu, true, 0.02, &mut rng),
        placement: Placement::Post,
        naming: Naming::Bert,
    };
    let params = layer.named_params();
    set_params(&params, &f.tensors, "");
    let keep: Vec<bool> = f.tensors["key_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
    let x = Param::new(f.tensors["x"].clone());
    let y = layer.forward(&x.value(), Some(&keep), None, &Dropout::default(), 0).unwrap();
    assert_close("y", &y, &f.tensors["y"], 1e-5);
    y.backward_with(&f.tensors["dy"]).unwrap();
    assert_close("grad x", &x.grad().unwrap(), &f.tensors["grad.x"], 1e-4);
    for p in &params {
        let key = format!("grad.{}", p.name);
        assert_close(&key, &p.param.grad().unwrap(), &f.tensors[&key], 1e-4);
    }
}

#[test]
fn patch_embedding_matches_the_strided_convolution() {
    let f = fixture("vit_patches.safetensors");
    let images = &f.tensors["images"];
    let (b, ch, hh, ww) = images.dims4().unwrap();
    let p: usize = f.metadata["patch_size"].parse().unwrap();
    let c: usize = f.metadata["hidden_size"].parse().unwrap();
    let pe = PatchEmbedding::new(ch, p, c, &mut Rng::new(0));
    let params = pe.named_params();
    set_params(&params, &f.tensors, "projection.");
    let y = pe.forward(&images.to_vec(), b, hh, ww).unwrap();
    assert_close("patches", &y, &f.tensors["y"], 1e-5);
    y.backward_with(&f.tensors["dy"]).unwrap();
    for p in &params {
        let key = format!("grad.projection.{}", p.name);
        assert_close(&key, &p.param.grad().unwrap(), &f.tensors[&key], 1e-4);
    }
}

#[test]
fn tiny_bert_masked_lm_logits_match_transformers() {
    let f = fixture("bert_mlm_tiny.safetensors");
    let cfg: BertConfig = serde_json::from_str(&f.metadata["config"]).unwrap();
    let model = BertForMaskedLm::new(cfg, 0).unwrap();
    set_params(&model.named_params(), &f.tensors, "param.");
    let (b, t) = f.tensors["ids"].dims2().unwrap();
    let ids: Vec<u32> = f.tensors["ids"].to_vec().iter().map(|&v| v as u32).collect();
    let mask: Vec<bool> = f.tensors["attention_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
    let logits = model.forward(&Batch { ids: &ids, type_ids: None, mask: &mask, b, t }, &Dropout::default()).unwrap();
    assert_close("logits", &logits, &f.tensors["logits"], 1e-4);
}

#[test]
fn tiny_vit_logits_match_transformers() {
    let f = fixture("vit_tiny.safetensors");
    let cfg: VitConfig = serde_json::from_str(&f.metadata["config"]).unwrap();
    let model = Vit::new(cfg, 0).unwrap();
    // transformers 5 names ViT's layers `vit.layers.0.attention.q_proj…`; qkv reads both schemes
    let renamed: BTreeMap<String, Tensor> = f
        .tensors
        .iter()
        .map(|(k, v)| (k.strip_prefix("param.").map_or(k.clone(), qkv::models::vit::legacy_name), v.clone()))
        .collect();
    set_params(&model.named_params(), &renamed, "");
    let b = f.tensors["images"].shape()[0];
    let logits = model.forward(&f.tensors["images"].to_vec(), b, &Dropout::default()).unwrap();
    assert_close("logits", &logits, &f.tensors["logits"], 1e-4);
}

#[test]
fn masking_statistics_match_the_transformers_collator() {
    let f = fixture("mlm_masking_stats.safetensors");
    let expected = f.tensors["stats"].to_vec(); // chosen, masked among chosen, kept among chosen
    let n = 200_000;
    let mut rng = Rng::new(3);
    let original: Vec<u32> = (0..n).map(|_| 10 + rng.below(1000) as u32).collect();
    let mut ids = original.clone();
    let ordinary: Vec<u32> = (5..1010).collect();
    let labels = mask_tokens(&mut ids, &vec![false; n], 3, &ordinary, &MaskingRule::default(), &mut rng);
    let chosen: Vec<usize> = (0..n).filter(|&i| labels[i] != IGNORE).collect();
    let ours = [
        chosen.len() as f32 / n as f32,
        chosen.iter().filter(|&&i| ids[i] == 3).count() as f32 / chosen.len() as f32,
        chosen.iter().filter(|&&i| ids[i] == original[i]).count() as f32 / chosen.len() as f32,
    ];
    for (what, (a, e)) in ["chosen", "masked", "kept"].iter().zip(ours.iter().zip(&expected)) {
        assert!((a - e).abs() < 0.008, "{what}: qkv {a} vs transformers {e}");
    }
}
