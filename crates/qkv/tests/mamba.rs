//! Mamba against PyTorch and `transformers` (fixtures from
//! scripts/make_mamba_fixtures.py): the selective scan with its gate equals a
//! plain PyTorch scan, output and every gradient; a `MambaForCausalLM` with
//! odd sizes gives the same logits, token by token through its recurrent
//! step as well as all at once, and the same greedy text as `generate`.

use std::path::PathBuf;

use qkv::io::safetensors::load;
use qkv::models::mamba::{Mamba, MambaConfig};
use qkv_tensor::ops::scan::selective_scan;
use qkv_tensor::{Param, Tensor, no_grad};

mod common;
use common::assert_close;

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path)
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.to_vec().iter().map(|&v| v as u32).collect()
}

#[test]
fn the_gated_selective_scan_matches_pytorch_with_every_gradient() {
    let f = load(&fixture("mamba_scan.safetensors")).expect("regenerate with scripts/make_mamba_fixtures.py");
    let names = ["u", "delta", "A", "Bm", "Cm", "Dv", "z"];
    let p: Vec<Param> = names.iter().map(|n| Param::new(f.tensors[*n].clone())).collect();
    let v: Vec<Tensor> = p.iter().map(Param::value).collect();
    let out = selective_scan(&v[0], &v[1], &v[2], &v[3], &v[4], &v[5]).unwrap().mul(&v[6].silu()).unwrap();
    assert_close("out", &out, &f.tensors["out"], 1e-5);
    out.backward_with(&f.tensors["dout"]).unwrap();
    for (n, param) in names.iter().zip(&p) {
        assert_close(&format!("grad.{n}"), &param.grad().unwrap(), &f.tensors[&format!("grad.{n}")], 1e-4);
    }
}

#[test]
fn mamba_for_causal_lm_matches_transformers_logits_steps_and_greedy_text() {
    let dir = fixture("hf/mamba-odd");
    let r = load(&dir.join("reference.safetensors")).expect("regenerate with scripts/make_mamba_fixtures.py");
    let model = Mamba::load(&dir).unwrap();
    let input = ids(&r.tensors["input_ids"]);
    let (b, l) = (r.tensors["input_ids"].shape()[0], r.tensors["input_ids"].shape()[1]);
    let logits = no_grad(|| model.forward(&input, b, l)).unwrap();
    assert_close("logits", &logits, &r.tensors["logits"], 1e-4);
    // the recurrent step, one token at a time for both rows, gives the same scores
    let mut states = model.zero_state(b);
    let v = model.config.vocab_size;
    let want = r.tensors["logits"].to_vec();
    for t in 0..l {
        let col: Vec<u32> = (0..b).map(|bi| input[bi * l + t]).collect();
        let step = no_grad(|| model.step(&col, &mut states)).unwrap().to_vec();
        for bi in 0..b {
            for (j, (g, w)) in step[bi * v..(bi + 1) * v].iter().zip(&want[(bi * l + t) * v..][..v]).enumerate() {
                assert!((g - w).abs() < 1e-4, "step {t}, row {bi}, token {j}: {g} vs {w}");
            }
        }
    }
    let greedy = ids(&r.tensors["greedy"]);
    let prompt = &greedy[..5];
    assert_eq!(model.greedy(prompt, 8).unwrap(), greedy[5..], "greedy continuation of {prompt:?}");
}

#[test]
fn options_qkv_does_not_support_are_named() {
    let base = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(fixture("hf/mamba-odd/config.json")).unwrap(),
    )
    .unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut c = base.clone();
        c[key] = value;
        let c: MambaConfig = serde_json::from_value(c).unwrap();
        c.shape().unwrap_err().to_string()
    };
    assert!(with("hidden_act", "gelu".into()).contains("hidden_act"));
    assert!(with("intermediate_size", 30.into()).contains("intermediate_size"));
    assert!(with("state_size", 0.into()).contains("state_size"));
    assert!(with("time_step_rank", "huge".into()).contains("time_step_rank"));
    assert!(with("num_hidden_layers", (1u64 << 40).into()).contains("parameters"));
}

#[test]
fn a_config_counts_the_parameters_its_model_has() {
    use qkv::nn::Module;
    for (bias, conv_bias, tied) in [(false, true, true), (true, false, false), (true, true, true)] {
        let c = MambaConfig {
            vocab_size: 37,
            hidden_size: 12,
            state_size: 5,
            num_hidden_layers: 3,
            conv_kernel: 3,
            use_bias: bias,
            use_conv_bias: conv_bias,
            tie_word_embeddings: tied,
            ..MambaConfig::default()
        };
        let mut built = Mamba::new(c.clone(), 0).unwrap().num_params();
        if !tied {
            built += 37 * 12; // an untied head is read from the checkpoint, not made
        }
        assert_eq!(c.num_params(), Some(built), "bias {bias}, conv bias {conv_bias}, tied {tied}");
    }
    let huge = MambaConfig { hidden_size: usize::MAX / 2, ..MambaConfig::default() };
    assert_eq!(huge.num_params(), None);
}
