//! Hugging Face interop from the command line: `qkv export` writes a GPT as
//! GPT-2, `qkv generate`/`qkv eval` run such a directory and give what the
//! run gives, inexpressible models are refused with the reason, and `qkv
//! embed` refuses what is not a BERT.

use std::path::Path;

mod common;
use common::{corpus, fails_with, ok, qkv, scratch};

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
    for f in ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join(f).exists(), "export wrote no {f}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "GPT2LMHeadModel");
    assert_eq!(config["n_positions"], 16);
    assert!(config["eos_token_id"].is_null(), "a character vocabulary has no <|endoftext|>");
    // the exported directory is a model qkv runs: same greedy text, same loss
    let greedy = |m: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--model", m, "--prompt", "to be", "--greedy", "--max-new-tokens", "40"];
        args.extend(extra);
        let o = qkv(&args);
        ok(&o);
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
    assert!((a - b).abs() < 1e-6, "loss of the run {a} vs the exported model {b}");
    // an existing export is not overwritten by accident
    fails_with(&qkv(&["export", "--model", run_s, "-o", out_s]), &["already holds a model", "--force"]);
    ok(&qkv(&["export", "--model", run_s, "-o", out_s, "--force"]));
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
