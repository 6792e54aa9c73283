//! Hugging Face model directories made by `transformers` itself
//! (`scripts/make_hf_fixtures.py`: random GPT-2, BERT and ViT models with
//! awkward sizes) run in qkv with the same numbers.

use std::path::PathBuf;

use qkv::generate::{Sampling, generate};
use qkv::io::safetensors::{Loaded, load};
use qkv::models::bert::{Batch, Bert, BertConfig};
use qkv::models::gpt2_hf;
use qkv::models::inference::InferenceWeights;
use qkv::models::load::{Model, open};
use qkv::nn::{Dropout, Module};
use qkv_tensor::{Tensor, no_grad};

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

fn reference(name: &str) -> Loaded {
    load(&dir(name).join("reference.safetensors")).expect("regenerate with scripts/make_hf_fixtures.py")
}

fn ids_of(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|&v| v as u32).collect()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    a.max_abs_diff(b).unwrap()
}

#[test]
fn gpt2_logits_and_greedy_continuations_match_transformers() {
    for name in ["gpt2-3heads", "gpt2-odd", "gpt2-untied"] {
        let r = reference(name);
        let model = gpt2_hf::load(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (b, t) = r.tensors["ids"].dims2().unwrap();
        let logits = no_grad(|| model.forward(&ids_of(&r.tensors["ids"]), b, t, &Dropout::default())).unwrap();
        let d = max_abs(&logits, &r.tensors["logits"]);
        assert!(d <= 1e-4, "{name}: logits differ by {d}");
        let greedy = Sampling { greedy: true, ..Default::default() };
        let expected = ids_of(&r.tensors["greedy"]);
        let ours = generate(&model, &ids_of(&r.tensors["prompt"]), expected.len(), &greedy, |_| Ok(true)).unwrap();
        assert_eq!(ours, expected, "{name}: greedy continuation");
    }
}

#[test]
fn gpt2_with_f16_weights_decodes_close_to_transformers() {
    for name in ["gpt2-3heads", "gpt2-odd", "gpt2-untied"] {
        let r = reference(name);
        let model = gpt2_hf::load(&dir(name)).unwrap();
        let (_, t) = r.tensors["ids"].dims2().unwrap();
        let ids = ids_of(&r.tensors["ids"]);
        let want = r.tensors["logits"].narrow(0, 0, 1).unwrap().reshape(&[t, model.config.vocab_size]).unwrap();
        // training and full passes keep using the f32 weights, bit for bit
        let before = model.forward(&ids[..t], 1, t, &Dropout::default()).unwrap();
        let model = model.prepared_for_inference(InferenceWeights::F16).unwrap();
        let after = model.forward(&ids[..t], 1, t, &Dropout::default()).unwrap();
        assert_eq!(before.to_vec(), after.to_vec(), "{name}: a pass with gradients must not read the f16 copies");
        // one token at a time through the cache: every product reads f16 weights
        let mut caches = model.new_caches(1);
        let mut worst = 0.0f32;
        for pos in 0..t {
            let got = no_grad(|| model.next_logits(&ids[pos..pos + 1], 1, 1, &mut caches)).unwrap();
            let d = max_abs(&got.reshape(&[1, model.config.vocab_size]).unwrap(), &want.narrow(0, pos, 1).unwrap());
            worst = worst.max(d);
        }
        // f16 rounding (2^-11 relative per weight) moves the logits, but only a little
        assert!(worst > 0.0 && worst < 2e-3, "{name}: f16 logits differ by {worst}");
        let greedy = Sampling { greedy: true, ..Default::default() };
        let expected = ids_of(&r.tensors["greedy"]);
        let ours = generate(&model, &ids_of(&r.tensors["prompt"]), expected.len(), &greedy, |_| Ok(true)).unwrap();
        assert_eq!(ours, expected, "{name}: greedy continuation with f16 weights");
    }
}

#[test]
fn gpt2_round_trip_through_export() {
    let model = gpt2_hf::load(&dir("gpt2-odd")).unwrap();
    let out = std::env::temp_dir().join(format!("qkv-export-{}", std::process::id()));
    gpt2_hf::export(&model, &out, &[]).unwrap();
    let again = gpt2_hf::load(&out).unwrap();
    let ids = [1u32, 5, 9, 2];
    let a = no_grad(|| model.forward(&ids, 1, 4, &Dropout::default())).unwrap();
    let b = no_grad(|| again.forward(&ids, 1, 4, &Dropout::default())).unwrap();
    assert_eq!(a.to_vec(), b.to_vec());
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn bert_masked_lm_classifier_and_bare_encoder_match_transformers() {
    for name in ["bert-mlm", "bert-classifier", "bert-bare"] {
        let r = reference(name);
        let (b, t) = r.tensors["ids"].dims2().unwrap();
        let ids = ids_of(&r.tensors["ids"]);
        let mask: Vec<bool> = r.tensors["attention_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
        let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b, t };
        let out = if name == "bert-bare" {
            let config: BertConfig =
                serde_json::from_str(&std::fs::read_to_string(dir(name).join("config.json")).unwrap()).unwrap();
            let bert = Bert::new(config, true, &mut qkv_tensor::Rng::new(0)).unwrap();
            let tensors = qkv::io::hf::read_weights(&dir(name)).unwrap();
            qkv::io::hf::assign(&dir(name), &bert.named_params(), &tensors, "").unwrap();
            no_grad(|| bert.forward(&batch, &Dropout::default())).unwrap()
        } else {
            match open(&dir(name)).unwrap_or_else(|e| panic!("{name}: {e}")) {
                Model::MaskedLm { model, .. } => no_grad(|| model.forward(&batch, &Dropout::default())).unwrap(),
                Model::TextClassifier { model, labels, .. } => {
                    assert_eq!(labels, vec!["neg", "neu", "pos"]);
                    no_grad(|| model.forward(&batch, &Dropout::default())).unwrap()
                }
                _ => panic!("{name}: wrong kind"),
            }
        };
        let d = max_abs(&out, &r.tensors["output"]);
        assert!(d <= 1e-4, "{name}: outputs differ by {d}");
    }
}

#[test]
fn vit_classifier_matches_transformers() {
    let r = reference("vit-classifier");
    let Model::ImageClassifier { model, labels } = open(&dir("vit-classifier")).unwrap() else {
        panic!("not an image classifier");
    };
    assert_eq!(labels.len(), 4);
    let b = r.tensors["images"].shape()[0];
    let logits = no_grad(|| model.forward(&r.tensors["images"].to_vec(), b, &Dropout::default())).unwrap();
    let d = max_abs(&logits, &r.tensors["output"]);
    assert!(d <= 1e-4, "logits differ by {d}");
}

#[test]
fn broken_directories_name_what_is_wrong() {
    let tmp = std::env::temp_dir().join(format!("qkv-hf-bad-{}", std::process::id()));
    let copy = |name: &str| {
        let d = tmp.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in ["config.json", "model.safetensors"] {
            std::fs::copy(dir(name).join(f), d.join(f)).unwrap();
        }
        d
    };
    // a tensor of the wrong shape
    let d = copy("gpt2-3heads");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["n_positions"] = serde_json::json!(40);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = gpt2_hf::load(&d).err().unwrap().to_string();
    assert!(e.contains("transformer.wpe.weight") && e.contains("[32, 48]") && e.contains("[40, 48]"), "{e}");
    // an option qkv does not support
    cfg["n_positions"] = serde_json::json!(32);
    cfg["scale_attn_by_inverse_layer_idx"] = serde_json::json!(true);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = gpt2_hf::load(&d).err().unwrap().to_string();
    assert!(e.contains("scale_attn_by_inverse_layer_idx"), "{e}");
    // a truncated weights file
    let d = copy("vit-classifier");
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() - 100]).unwrap();
    let e = open(&d).err().unwrap().to_string();
    assert!(e.contains("model.safetensors"), "{e}");
    // an architecture qkv does not run
    let d = copy("bert-mlm");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["architectures"] = serde_json::json!(["BertForQuestionAnswering"]);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let e = open(&d).err().unwrap().to_string();
    assert!(e.contains("BertForQuestionAnswering"), "{e}");
    // a vocabulary larger than the model's embedding table (97 rows): its
    // last ids would index past the table in `qkv eval`
    let d = copy("bert-mlm");
    let vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .map(String::from)
        .chain((0..115).map(|i| format!("w{i}")))
        .collect();
    std::fs::write(d.join("vocab.txt"), vocab.join("\n")).unwrap();
    let e = open(&d).err().unwrap().to_string();
    assert!(e.contains("120 tokens") && e.contains("97"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The attention maps are the probabilities `transformers` computes
/// (`output_attentions=True`, eager attention) for the same inputs: GPT-2
/// (causal), BERT (a second sequence padded: its padded keys get 0) and ViT.
/// Fixtures: `scripts/make_attention_fixtures.py`.
#[test]
fn attention_maps_match_transformers_output_attentions() {
    let expected = |name: &str| {
        load(&dir(name).join("attentions.safetensors")).expect("regenerate with scripts/make_attention_fixtures.py")
    };
    let check = |name: &str, maps: Vec<Tensor>| {
        let want = expected(name);
        assert_eq!(maps.len(), want.tensors.len(), "{name}: layers");
        for (l, got) in maps.iter().enumerate() {
            let d = max_abs(got, &want.tensors[&format!("layer.{l}")]);
            assert!(d <= 1e-5, "{name} layer {l}: probabilities differ by {d}");
        }
    };
    for name in ["gpt2-odd", "gpt2-3heads"] {
        let r = reference(name);
        let model = gpt2_hf::load(&dir(name)).unwrap();
        let (b, t) = r.tensors["ids"].dims2().unwrap();
        check(name, model.attention_maps(&ids_of(&r.tensors["ids"]), b, t).unwrap());
    }
    let r = reference("bert-mlm");
    let Model::MaskedLm { model, .. } = open(&dir("bert-mlm")).unwrap() else { panic!("not a masked LM") };
    let (b, t) = r.tensors["ids"].dims2().unwrap();
    let ids = ids_of(&r.tensors["ids"]);
    let mask: Vec<bool> = r.tensors["attention_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
    check("bert-mlm", model.bert.attention_maps(&Batch { ids: &ids, type_ids: None, mask: &mask, b, t }).unwrap());
    let r = reference("vit-classifier");
    let Model::ImageClassifier { model, .. } = open(&dir("vit-classifier")).unwrap() else { panic!("not a ViT") };
    let b = r.tensors["images"].shape()[0];
    check("vit-classifier", model.attention_maps(&r.tensors["images"].to_vec(), b).unwrap());
}

/// `qkv explain` on a masked LM: the distribution at each `[MASK]` is the
/// softmax of the model's own logits there, and every layer's maps are the
/// ones `Bert::attention_maps` gives.
#[test]
fn the_explain_walk_of_a_masked_lm_is_the_models_numbers() {
    let tmp = std::env::temp_dir().join(format!("qkv-hf-walk-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(dir("bert-mlm").join(f), tmp.join(f)).unwrap();
    }
    // a vocabulary of exactly the model's 97 rows
    let vocab: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .into_iter()
        .map(String::from)
        .chain((0..92).map(|i| format!("w{i}")))
        .collect();
    std::fs::write(tmp.join("vocab.txt"), vocab.join("\n")).unwrap();
    let model = open(&tmp).unwrap();
    let walk = qkv::explain::walk_text(&model, "w1 [MASK] w3", &Sampling::default(), 97).unwrap();
    let Model::MaskedLm { model: mlm, .. } = &model else { panic!("not a masked LM") };
    let ids: Vec<u32> = walk.tokens.iter().map(|t| t.id).collect();
    assert_eq!(ids, vec![2, 6, 4, 8, 3], "[CLS] w1 [MASK] w3 [SEP]");
    assert_eq!(walk.masks.len(), 1);
    assert_eq!(walk.masks[0].position, 2);
    let mask = vec![true; 5];
    let batch = Batch { ids: &ids, type_ids: None, mask: &mask, b: 1, t: 5 };
    let probs = no_grad(|| mlm.forward(&batch, &Dropout::default())).unwrap().softmax().to_vec();
    let at = &probs[2 * 97..3 * 97];
    assert_eq!(walk.masks[0].candidates.len(), 97);
    for c in &walk.masks[0].candidates {
        let d = (c.probability - at[c.id as usize] as f64).abs();
        assert!(d < 1e-6, "token {}: {} vs {}", c.id, c.probability, at[c.id as usize]);
    }
    let maps = mlm.bert.attention_maps(&batch).unwrap();
    for (l, layer) in walk.layers.iter().enumerate() {
        let want = maps[l].to_vec();
        let got: Vec<f32> = layer.attention.iter().flatten().flatten().copied().collect();
        assert_eq!(got, want, "layer {l}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}
