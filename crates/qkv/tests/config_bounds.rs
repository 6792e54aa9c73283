//! Model files that would fail later, refused when they load.
//!
//! A config.json may ask for any model size, and the model is allocated
//! before a weight is read: every family checks its parameter count, with
//! checked arithmetic, against `MAX_PARAMS` first. Each directory here is a
//! real fixture whose config was edited to ask for too much; loading it must
//! end in an error that says so (not in an allocation failure, an abort or an
//! overflow).

use std::path::{Path, PathBuf};

use qkv::models::load::open;
use qkv::models::{MAX_PARAMS, gpt2_hf};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

/// A copy of fixture `name` with `edits` applied to its config.json.
fn edited(name: &str, edits: &[(&str, serde_json::Value)], tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkv-bounds-{}-{name}-{tag}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::copy(fixture(name).join("model.safetensors"), d.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(name).join("config.json")).unwrap()).unwrap();
    for (k, v) in edits {
        cfg[*k] = v.clone();
    }
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    d
}

fn refused(dir: &Path, load: impl Fn(&Path) -> Option<String>) {
    let e = load(dir).unwrap_or_else(|| panic!("{} loaded", dir.display()));
    assert!(e.contains("parameters") && e.contains(&MAX_PARAMS.to_string()), "{}: {e}", dir.display());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn configs_that_ask_for_too_many_parameters_are_refused_before_allocating() {
    let huge = serde_json::json!(1u64 << 40);
    let wide = serde_json::json!(1u64 << 20);
    let via_open = |d: &Path| open(d).err().map(|e| e.to_string());
    let via_gpt2 = |d: &Path| gpt2_hf::load(d).err().map(|e| e.to_string());
    // large but countable, and so large that the count overflows
    refused(&edited("gpt2-odd", &[("n_layer", huge.clone())], "layers"), via_gpt2);
    refused(
        &edited("gpt2-odd", &[("n_embd", wide.clone()), ("n_head", 1.into()), ("n_inner", wide.clone())], "wide"),
        via_gpt2,
    );
    refused(&edited("gpt2-odd", &[("vocab_size", serde_json::json!(u32::MAX))], "vocab"), via_gpt2);
    refused(&edited("bert-mlm", &[("num_hidden_layers", huge.clone())], "layers"), via_open);
    refused(&edited("bert-mlm", &[("max_position_embeddings", huge.clone())], "positions"), via_open);
    refused(&edited("vit-classifier", &[("num_hidden_layers", huge.clone())], "layers"), via_open);
    refused(
        &edited("vit-classifier", &[("image_size", serde_json::json!(1u64 << 30)), ("patch_size", 1.into())], "image"),
        via_open,
    );
    refused(&edited("marian-odd", &[("encoder_layers", huge.clone())], "layers"), via_open);
    refused(
        &edited(
            "marian-odd",
            &[
                ("d_model", serde_json::json!(1u64 << 33)),
                ("encoder_attention_heads", 1.into()),
                ("decoder_attention_heads", 1.into()),
            ],
            "wide",
        ),
        via_open,
    );
    refused(&edited("t5-odd", &[("num_layers", huge.clone())], "layers"), via_open);
    refused(&edited("mamba-odd", &[("num_hidden_layers", huge)], "layers"), via_open);
}

/// Below the limit, a config may still ask for far more than its weights
/// hold (a GPT-2 of 8192 × 8 layers, 6.4 billion parameters, beside a file of
/// a few kilobytes): every family compares its count with the size of the
/// weights files (at least 2 bytes a parameter) before building the model.
#[test]
fn configs_larger_than_their_weights_are_refused_before_allocating() {
    let many = |name: &str, edits: &[(&str, serde_json::Value)]| {
        let d = edited(name, edits, "weights");
        let e = match open(&d) {
            Ok(_) => panic!("{name} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("cannot hold them") && e.contains("model.safetensors"), "{name}: {e}");
        std::fs::remove_dir_all(&d).unwrap();
    };
    let n = |v: u64| serde_json::json!(v);
    many("gpt2-odd", &[("n_embd", n(8192)), ("n_head", n(2)), ("n_layer", n(8)), ("n_inner", n(32768))]);
    many("bert-mlm", &[("hidden_size", n(8192)), ("num_attention_heads", n(2)), ("intermediate_size", n(32768))]);
    many("vit-classifier", &[("hidden_size", n(8192)), ("num_attention_heads", n(2)), ("intermediate_size", n(32768))]);
    many("marian-odd", &[("encoder_layers", n(100_000)), ("decoder_layers", n(100_000))]);
    many("t5-odd", &[("num_layers", n(1_000_000))]);
    many("mamba-odd", &[("num_hidden_layers", n(1_000_000))]);
}

/// A weight that is NaN or infinite is reported by name when the directory
/// loads, instead of showing up as NaN logits.
#[test]
fn weights_that_are_not_finite_are_named() {
    use qkv::io::safetensors::{load, save};
    for (name, bad) in [("bert-mlm", f32::NAN), ("vit-classifier", f32::INFINITY)] {
        let d = edited(name, &[], "nan");
        let mut tensors = load(&d.join("model.safetensors")).unwrap().tensors;
        let key = tensors.keys().find(|k| k.ends_with("intermediate.dense.weight")).unwrap().clone();
        let mut v = tensors[&key].to_vec();
        v[5] = bad;
        tensors.insert(key.clone(), qkv_tensor::Tensor::from_vec(v, tensors[&key].shape()).unwrap());
        let list: Vec<(String, qkv_tensor::Tensor)> = tensors.into_iter().collect();
        save(&d.join("model.safetensors"), &list, &Default::default()).unwrap();
        let e = open(&d).err().map(|e| e.to_string()).unwrap_or_else(|| panic!("{name} loaded"));
        assert!(e.contains(&key) && e.contains("element 5") && e.contains("finite"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }
}
