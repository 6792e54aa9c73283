//! T5 against `transformers`: two fixtures with odd sizes made by
//! scripts/make_t5_fixtures.py — T5 1.0's layout (ReLU, tied and scaled
//! output) and T5 1.1's (gated GELU) — give the same logits (the relative
//! position buckets reach past the exact ones into the logarithmic ones),
//! the same cross-attention probabilities, and the same greedy and beam-4
//! outputs as `generate`.

use std::path::PathBuf;

use qkv::io::safetensors::load;
use qkv::models::t5::{T5, T5Config, relative_bucket};
use qkv::translate::{Decoding, EarlyStopping, EncoderDecoder, translate};
use qkv_tensor::{Tensor, no_grad};

const FIXTURES: [&str; 2] = ["t5-odd", "t5-v1_1-odd"];

fn dir(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hf").join(name)
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    let w = t.shape()[1];
    t.to_vec().chunks(w).map(<[f32]>::to_vec).collect()
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|&v| v as u32).collect()
}

#[test]
fn t5_logits_match_transformers() {
    for name in FIXTURES {
        let r = load(&dir(name).join("reference.safetensors")).expect("regenerate with scripts/make_t5_fixtures.py");
        let model = T5::load(&dir(name)).unwrap();
        let (b, ts) = (r.tensors["src"].shape()[0], r.tensors["src"].shape()[1]);
        let tt = r.tensors["dec_in"].shape()[1];
        let mask: Vec<bool> = r.tensors["src_mask"].to_vec().iter().map(|&v| v > 0.5).collect();
        let logits = no_grad(|| {
            let memory = model.encode(&ids(&r.tensors["src"]), &mask, b, ts)?;
            let memories = model.memories(&memory, &mask)?;
            let (h, _) = model.decode(&ids(&r.tensors["dec_in"]), b, tt, &memories, None)?;
            model.logits(&h)
        })
        .unwrap();
        let want = &r.tensors["logits"];
        assert_eq!(logits.shape(), want.shape());
        let d = logits.max_abs_diff(want).unwrap();
        assert!(d < 1e-4, "{name}: logits differ from transformers' by {d}");
    }
}

#[test]
fn t5_cross_attention_matches_output_attentions() {
    for name in FIXTURES {
        let r = load(&dir(name).join("reference.safetensors")).unwrap();
        let model = T5::load(&dir(name)).unwrap();
        let (ts, tt) = (r.tensors["src"].shape()[1], r.tensors["dec_in"].shape()[1]);
        let maps = model.cross_attention(&ids(&r.tensors["src"])[..ts], &ids(&r.tensors["dec_in"])[..tt]).unwrap();
        let want = &r.tensors["cross_attentions"]; // [L, H, Tt, Ts]
        assert_eq!(maps.len(), want.shape()[0]);
        let per = want.shape()[1..].iter().product::<usize>();
        for (l, m) in maps.iter().enumerate() {
            assert_eq!(m.shape(), &want.shape()[1..]);
            let w = Tensor::from_vec(want.to_vec()[l * per..(l + 1) * per].to_vec(), m.shape()).unwrap();
            let d = m.max_abs_diff(&w).unwrap();
            assert!(d < 1e-5, "{name} layer {l}: cross-attention differs by {d}");
        }
    }
}

#[test]
fn t5_greedy_and_beam_translations_match_generate() {
    for name in FIXTURES {
        let r = load(&dir(name).join("reference.safetensors")).unwrap();
        let model = T5::load(&dir(name)).unwrap();
        let max_new: usize = r.metadata["max_new_tokens"].parse().unwrap();
        let (src, mask) = (rows(&r.tensors["src"]), rows(&r.tensors["src_mask"]));
        let sources: Vec<Vec<u32>> = src
            .iter()
            .zip(&mask)
            .map(|(s, m)| s.iter().zip(m).filter(|(_, m)| **m > 0.5).map(|(&x, _)| x as u32).collect())
            .collect();
        let fixed = Decoding { max_len_ratio: 0.0, max_len_extra: max_new, ..Decoding::default() };
        for (case, how) in [
            ("greedy", Decoding { beam: 1, ..fixed }),
            ("beam4", Decoding { beam: 4, length_penalty: 1.0, early_stopping: EarlyStopping::Heuristic, ..fixed }),
        ] {
            let want: Vec<Vec<u32>> = rows(&r.tensors[case])
                .iter()
                .map(|row| row.iter().filter(|&&x| x >= 0.0).map(|&x| x as u32).collect())
                .collect();
            let got = translate(&model, &sources, &how).unwrap();
            assert_eq!(got, want, "{name} {case}");
        }
    }
}

/// The buckets of Mesh TensorFlow's rule, worked by hand for 32 buckets
/// and a maximum distance of 128 (T5's defaults), and checked against
/// `transformers`' `_relative_position_bucket`.
#[test]
fn relative_buckets_follow_t5s_rule() {
    // bidirectional: 16 buckets a side, 8 exact, keys after the query in the upper half
    assert_eq!(relative_bucket(0, true, 32, 128), 0);
    assert_eq!(relative_bucket(-7, true, 32, 128), 7);
    assert_eq!(relative_bucket(7, true, 32, 128), 16 + 7);
    // 8 + floor(ln(n/8) / ln(16) · 8): n = 16 → 8 + 2, n = 64 → 8 + 6, n ≥ 128 → 15
    assert_eq!(relative_bucket(-16, true, 32, 128), 10);
    assert_eq!(relative_bucket(-64, true, 32, 128), 14);
    assert_eq!(relative_bucket(-500, true, 32, 128), 15);
    assert_eq!(relative_bucket(500, true, 32, 128), 31);
    // causal: keys after the query all share bucket 0; 16 exact, then logarithmic to 31
    assert_eq!(relative_bucket(5, false, 32, 128), 0);
    assert_eq!(relative_bucket(-15, false, 32, 128), 15);
    assert_eq!(relative_bucket(-32, false, 32, 128), 16 + 5); // 16 + floor(ln 2 / ln 8 · 16)
    assert_eq!(relative_bucket(-1000, false, 32, 128), 31);
}

#[test]
fn t5_configs_that_cannot_work_are_refused_with_the_option_named() {
    let base: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir("t5-odd").join("config.json")).unwrap()).unwrap();
    for (key, value, says) in [
        ("feed_forward_proj", serde_json::json!("gated-tanh"), "feed_forward_proj"),
        ("num_heads", serde_json::json!(0), "num_heads"),
        ("d_model", serde_json::json!(1u64 << 40), "parameters"),
        ("eos_token_id", serde_json::json!(41), "outside the vocabulary"),
    ] {
        let mut c = base.clone();
        c[key] = value;
        let config: T5Config = serde_json::from_value(c).unwrap();
        let err = T5::new(config).err().unwrap_or_else(|| panic!("{key} accepted")).to_string();
        assert!(err.contains(says), "{key}: {err}");
    }
}
