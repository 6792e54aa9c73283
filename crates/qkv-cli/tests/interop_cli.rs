//! Hugging Face interop from the command line: `qkv export` writes a GPT as
//! GPT-2, `qkv generate`/`qkv eval` run such a directory and give what the
//! run gives, inexpressible models are refused with the reason, and `qkv
//! embed` refuses what is not a BERT.

use std::path::Path;

use qkv::io::safetensors::load;

mod common;
use common::{chars_of, close, continues, corpus, fails_with, ok, qkv, read_json, scratch};

fn train(data: &Path, out: &Path, extra: &[&str]) {
    #[rustfmt::skip]
    let mut args = vec![
        "--threads", "2", "train", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--eval-batches", "2", "--warmup-steps", "2", "--sample-chars", "0", "--quiet",
        "--max-steps", "15", "--data", data.to_str().unwrap(), "--out-dir", out.to_str().unwrap(),
    ];
    args.extend(extra);
    ok(&qkv(&args));
}

#[test]
fn exported_gpt_generates_and_scores_exactly_as_its_run() {
    let d = scratch("export");
    let data = corpus(&d);
    let run = d.join("run");
    train(&data, &run, &[]);
    let out = d.join("hf");
    let (run_s, out_s) = (run.to_str().unwrap(), out.to_str().unwrap());
    ok(&qkv(&["export", "--model", run_s, "--format", "hf-gpt2", "-o", out_s]));
    let config = read_json(&out.join("config.json"));
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["model_type"], "gpt2");
    let sizes = ["vocab_size", "n_positions", "n_embd", "n_head", "n_layer", "n_inner"].map(|k| config[k].as_u64());
    assert_eq!(sizes, [28, 16, 16, 2, 1, 64].map(Some), "the run's shape: {config}");
    assert!(config["eos_token_id"].is_null(), "a character vocabulary has no <|endoftext|>");
    assert_eq!(read_json(&out.join("tokenizer_config.json"))["model_max_length"], 16);
    // the tokenizer: the run's 28 characters
    let tokenizer = read_json(&out.join("tokenizer.json"));
    let vocab = tokenizer["model"]["vocab"].as_object().unwrap();
    assert_eq!(vocab.len(), 28, "{tokenizer}");
    let mut ids: Vec<u64> = vocab.values().map(|i| i.as_u64().unwrap()).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..28).collect::<Vec<_>>(), "ids 0 to 27");
    let alphabet = chars_of(&data);
    assert!(vocab.keys().all(|k| k.chars().count() == 1 && alphabet.contains(&k.chars().next().unwrap())));
    // the weights under GPT-2's names, in GPT-2's shapes (Conv1D: in × out)
    let weights = load(&out.join("model.safetensors")).unwrap();
    let shapes: Vec<(&str, Vec<usize>)> =
        weights.tensors.iter().map(|(k, t)| (k.as_str(), t.shape().to_vec())).collect();
    #[rustfmt::skip]
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("transformer.h.0.attn.c_attn.bias", vec![48]), ("transformer.h.0.attn.c_attn.weight", vec![16, 48]),
        ("transformer.h.0.attn.c_proj.bias", vec![16]), ("transformer.h.0.attn.c_proj.weight", vec![16, 16]),
        ("transformer.h.0.ln_1.bias", vec![16]), ("transformer.h.0.ln_1.weight", vec![16]),
        ("transformer.h.0.ln_2.bias", vec![16]), ("transformer.h.0.ln_2.weight", vec![16]),
        ("transformer.h.0.mlp.c_fc.bias", vec![64]), ("transformer.h.0.mlp.c_fc.weight", vec![16, 64]),
        ("transformer.h.0.mlp.c_proj.bias", vec![16]), ("transformer.h.0.mlp.c_proj.weight", vec![64, 16]),
        ("transformer.ln_f.bias", vec![16]), ("transformer.ln_f.weight", vec![16]),
        ("transformer.wpe.weight", vec![16, 16]), ("transformer.wte.weight", vec![28, 16]),
    ];
    assert_eq!(shapes, want);
    assert!(weights.tensors.values().all(|t| t.to_vec().iter().all(|x| x.is_finite())), "finite weights");
    // the exported directory is a model qkv runs: same greedy text, same loss
    let greedy = |m: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--model", m, "--prompt", "to be", "--greedy", "--max-new-tokens", "40"];
        args.extend(extra);
        let o = qkv(&args);
        ok(&o);
        continues(&String::from_utf8_lossy(&o.stdout), "to be", 40, &alphabet);
        o.stdout
    };
    assert_eq!(greedy(run_s, &[]), greedy(out_s, &[]), "greedy continuations differ");
    // 16-bit weights for the generated tokens: the same text here (the logits move ~1e-4)
    assert_eq!(greedy(out_s, &[]), greedy(out_s, &["--f16-weights"]), "--f16-weights changed the greedy text");
    let loss = |m: &str| {
        let o = qkv(&["eval", "--model", m, "--data", data.to_str().unwrap(), "--json"]);
        ok(&o);
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["loss"].as_f64().unwrap()
    };
    let (a, b) = (loss(run_s), loss(out_s));
    assert!(a > 0.0 && close(a, b, 1e-6), "loss of the run {a} vs the exported model {b}");
    // an existing export is not overwritten by accident; with --force it is, with the same files
    let before = std::fs::read(out.join("model.safetensors")).unwrap();
    std::fs::write(out.join("config.json"), "{}").unwrap();
    fails_with(&qkv(&["export", "--model", run_s, "-o", out_s]), &["already holds a model", "--force"]);
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "{}", "untouched without --force");
    ok(&qkv(&["export", "--model", run_s, "-o", out_s, "--force"]));
    assert_eq!(read_json(&out.join("config.json")), config, "config.json written again");
    assert!(std::fs::read(out.join("model.safetensors")).unwrap() == before, "the same weights, byte for byte");
}

#[test]
fn inexpressible_gpts_and_wrong_models_are_refused() {
    let d = scratch("refuse");
    let data = corpus(&d);
    let rope = d.join("rope");
    train(&data, &rope, &["--positions", "rope"]);
    let o = qkv(&["export", "--model", rope.to_str().unwrap(), "-o", d.join("x").to_str().unwrap()]);
    fails_with(&o, &["cannot export", "learned positions"]);
    assert!(!d.join("x").join("config.json").exists(), "nothing written for a refused export");
    // a GPT is not a sentence encoder
    fails_with(&qkv(&["embed", "--model", rope.to_str().unwrap(), "hello"]), &["not a BERT"]);
    // a GPT-2 directory without tokenizer files says what is missing
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qkv/tests/fixtures/hf/gpt2-odd");
    let o = qkv(&["generate", "--model", fixture.to_str().unwrap(), "--prompt", "hi", "--max-new-tokens", "3"]);
    fails_with(&o, &["tokenizer"]);
    fails_with(
        &qkv(&["export", "--model", d.to_str().unwrap(), "-o", d.join("y").to_str().unwrap()]),
        &["config.json"],
    );
}
