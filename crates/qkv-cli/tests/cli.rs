//! The `qkv` command end to end: training resumes exactly, generation and
//! evaluation work on a trained run, and bad input gets one clear error line.

use std::path::Path;
use std::process::Output;

use qkv::generate::{Sampling, generate};
use qkv::io::safetensors::load;
use qkv::models::load::{Model, open};

mod common;
use common::{char_lm_eval, chars_of, continues, corpus, count, fails_with, ok, qkv, scratch, stderr, stdout, svg};

#[rustfmt::skip]
const TINY: &[&str] = &[
    "--threads", "2", "train", "--n-layer", "1", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
    "--eval-batches", "2", "--warmup-steps", "2", "--sample-chars", "0", "--quiet",
];

fn train(extra: &[&str]) -> Output {
    let mut args: Vec<&str> = TINY.iter().chain(extra).copied().collect();
    if !extra.contains(&"--n-head") {
        args.extend(["--n-head", "2"]);
    }
    qkv(&args)
}

#[test]
fn stop_and_resume_ends_with_exactly_the_weights_of_one_run() {
    let d = scratch("resume");
    let data = corpus(&d);
    let (one, two) = (d.join("one"), d.join("two"));
    let data_s = data.to_str().unwrap();
    ok(&train(&["--data", data_s, "--out-dir", one.to_str().unwrap(), "--max-steps", "12", "--eval-interval", "4"]));
    ok(&train(&[
        "--data",
        data_s,
        "--out-dir",
        two.to_str().unwrap(),
        "--max-steps",
        "12",
        "--eval-interval",
        "4",
        "--stop-at",
        "8",
    ]));
    assert_eq!(load(&two.join("checkpoint.safetensors")).unwrap().metadata["step"], "8");
    ok(&qkv(&["--threads", "2", "train", "--resume", two.to_str().unwrap(), "--sample-chars", "0", "--quiet"]));
    for f in ["model.safetensors", "checkpoint.safetensors"] {
        let (a, b) = (load(&one.join(f)).unwrap(), load(&two.join(f)).unwrap());
        for key in ["step", "adamw_step"] {
            assert_eq!(a.metadata.get(key), b.metadata.get(key), "{f}: {key}");
        }
        assert_eq!(a.tensors.len(), b.tensors.len());
        for (name, t) in &a.tensors {
            assert!(
                t.to_vec() == b.tensors[name].to_vec(),
                "{f}: {name} differs between the straight run and the resumed one"
            );
        }
    }
    // one metrics line per step, in order, the resumed run's the same numbers
    let steps = |p: &Path| -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(p.join("metrics.jsonl")).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    let (a, b) = (steps(&one), steps(&two));
    assert_eq!(a.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    assert_eq!(b.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(&b) {
        for k in ["train_loss", "lr", "grad_norm"] {
            assert!(x[k].as_f64().is_some_and(f64::is_finite) && x[k] == y[k], "{k}: {x} vs {y}");
        }
        assert_eq!(x.get("val_loss"), y.get("val_loss"), "{x} vs {y}");
    }
    // the loss curve: a point for each of the 3 evaluations, both axes named
    let picture = svg(&one.join("loss.svg"));
    assert_eq!(count(&picture, "<circle"), 3, "one marker per evaluation");
    for label in ["step", "loss (nats per token)", "train", "validation"] {
        assert!(picture.contains(&format!("\n{label}\n")), "no {label:?} in the loss curve");
    }
}

#[test]
fn generate_and_eval_use_a_trained_run() {
    let d = scratch("gen");
    let data = corpus(&d);
    let run = d.join("run");
    ok(&train(&["--data", data.to_str().unwrap(), "--out-dir", run.to_str().unwrap(), "--max-steps", "20"]));
    let run_s = run.to_str().unwrap();
    let sample = |seed: &str| {
        qkv(&["generate", "--model", run_s, "--prompt", "to be", "--max-new-tokens", "30", "--seed", seed])
    };
    let (a, b) = (sample("7"), sample("7"));
    ok(&a);
    assert_eq!(a.stdout, b.stdout, "same seed, same text");
    let alphabet = chars_of(&data);
    assert_eq!(alphabet.len(), 28);
    continues(&stdout(&a), "to be", 30, &alphabet);
    // greedy: the library's own greedy continuation
    let greedy = qkv(&["generate", "--model", run_s, "--prompt", "line", "--greedy", "--max-new-tokens", "10"]);
    ok(&greedy);
    continues(&stdout(&greedy), "line", 10, &alphabet);
    let Model::Gpt { model, tokenizer, .. } = open(&run).unwrap() else { panic!("not a GPT") };
    let greedy_sampling = Sampling { greedy: true, ..Default::default() };
    let ids = generate(&model, &tokenizer.encode("line").unwrap(), 10, &greedy_sampling, |_| Ok(true)).unwrap();
    assert_eq!(stdout(&greedy), format!("line{}\n", tokenizer.decode(&ids).unwrap()));
    let e = qkv(&["eval", "--model", run_s, "--data", data.to_str().unwrap(), "--json"]);
    ok(&e);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let loss = char_lm_eval(&v, &data, 16);
    assert!(loss < (28f64).ln(), "loss {loss} should beat uniform guessing over the 28 characters");
}

#[test]
fn bad_corpora_are_refused_with_the_reason() {
    let d = scratch("badcorpus");
    let out = d.join("run");
    let out_s = out.to_str().unwrap();
    let empty = d.join("empty.txt");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&train(&["--data", empty.to_str().unwrap(), "--out-dir", out_s]), &["empty"]);
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait").unwrap();
    fails_with(&train(&["--data", latin1.to_str().unwrap(), "--out-dir", out_s]), &["UTF-8", "offset 3"]);
    let short = d.join("short.txt");
    std::fs::write(&short, "just a few words here").unwrap();
    fails_with(&train(&["--data", short.to_str().unwrap(), "--out-dir", out_s]), &["too short", "--block-size"]);
    let missing = d.join("missing.txt");
    fails_with(&train(&["--data", missing.to_str().unwrap(), "--out-dir", out_s]), &["missing.txt"]);
    fails_with(&train(&["--out-dir", out_s, "--n-head", "3"]), &["multiple of n_head"]);
    // batches that would be allocated whole: refused before anything is
    let big = |batch: &str| qkv(&["--threads", "2", "train", "--out-dir", out_s, "--batch-size", batch, "--quiet"]);
    fails_with(&big("1000000000000"), &["batch_size", "65536"]);
    fails_with(&big("60000"), &["60000 windows of 128 tokens", "4194304"]);
    assert!(!out.join("model.safetensors").exists(), "nothing written for refused runs");
}

#[test]
fn runs_are_protected_and_checkpoints_checked() {
    let d = scratch("protect");
    let data = corpus(&d);
    let data_s = data.to_str().unwrap();
    let run = d.join("run");
    let run_s = run.to_str().unwrap();
    std::fs::create_dir_all(&run).unwrap();
    std::fs::write(run.join("notes.txt"), "mine").unwrap();
    ok(&train(&["--data", data_s, "--out-dir", run_s, "--max-steps", "2"]));
    fails_with(
        &train(&["--data", data_s, "--out-dir", run_s, "--max-steps", "2"]),
        &["already holds a run", "--force"],
    );
    ok(&train(&["--data", data_s, "--out-dir", run_s, "--max-steps", "2", "--force"]));
    assert_eq!(std::fs::read_to_string(run.join("notes.txt")).unwrap(), "mine", "--force keeps other files");
    // resume refuses a directory without a run and flags that would change the run
    fails_with(&qkv(&["train", "--resume", d.to_str().unwrap()]), &["not a qkv run directory"]);
    fails_with(&qkv(&["train", "--resume", run_s, "--lr", "0.1"]), &["--lr"]);
    // generation: unknown characters, a context beyond the model's, an empty prompt
    fails_with(&qkv(&["generate", "--model", run_s, "--prompt", "ZZZ~"]), &["'Z'", "vocabulary"]);
    fails_with(&qkv(&["generate", "--model", run_s, "--prompt", "to", "--block-size", "64"]), &["context of 16"]);
    fails_with(&qkv(&["generate", "--model", run_s, "--prompt", ""]), &["empty"]);
    // more new tokens than memory could hold: they stream (nothing reserved
    // up front); the test stops reading after a while
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["generate", "--model", run_s, "--prompt", "to", "--max-new-tokens", &usize::MAX.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 2000];
    std::io::Read::read_exact(child.stdout.as_mut().unwrap(), &mut first).expect("2000 bytes of generated text");
    child.kill().unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(!stderr(&o).contains("allocation"), "{}", stderr(&o));
    // the prompt, then characters of the corpus (one byte each: it is ASCII)
    let alphabet = chars_of(&data);
    let streamed = std::str::from_utf8(&first).expect("UTF-8 text");
    assert!(streamed.starts_with("to") && streamed.chars().all(|c| alphabet.contains(&c)), "{streamed:?}");
    fails_with(&qkv(&["generate", "--model", d.to_str().unwrap(), "--prompt", "to"]), &["not a model directory"]);
    // a truncated checkpoint is an error, not a crash
    let model = run.join("model.safetensors");
    let bytes = std::fs::read(&model).unwrap();
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&qkv(&["generate", "--model", run_s, "--prompt", "to"]), &["model.safetensors"]);
    let checkpoint = run.join("checkpoint.safetensors");
    let bytes = std::fs::read(&checkpoint).unwrap();
    std::fs::write(&checkpoint, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(&qkv(&["train", "--resume", run_s]), &["checkpoint.safetensors"]);
}

#[test]
fn unknown_options_and_config_fields_are_errors() {
    let o = qkv(&["train", "--learning-rate", "3"]);
    assert_eq!(o.status.code(), Some(2), "clap usage error");
    assert!(stderr(&o).contains("--learning-rate"));
    let d = scratch("config");
    let cfg = d.join("cfg.json");
    std::fs::write(&cfg, r#"{"model": {"n_layers": 3}}"#).unwrap();
    fails_with(&train(&["--config", cfg.to_str().unwrap(), "--out-dir", d.join("r").to_str().unwrap()]), &["n_layers"]);
    std::fs::write(&cfg, r#"{"model": {"n_layer": 1}, "train": {"max_steps": 2}}"#).unwrap();
    let data = corpus(&d);
    let r = d.join("r2");
    ok(&train(&[
        "--config",
        cfg.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out-dir",
        r.to_str().unwrap(),
    ]));
    let read =
        |f: &str| -> serde_json::Value { serde_json::from_str(&std::fs::read_to_string(r.join(f)).unwrap()).unwrap() };
    assert_eq!(read("run.json")["train"]["max_steps"], 2);
    assert_eq!(read("run.json")["model"]["n_layer"], 1, "flags override the file only when given");
    assert_eq!(read("config.json")["n_layer"], 1, "config.json describes the model");
}

#[test]
fn bench_cases_are_checked_before_anything_runs() {
    fails_with(&qkv(&["bench", "encoder", "--case", "large"]), &["minilm, base and real"]);
    fails_with(&qkv(&["bench", "encoder", "--case", "real"]), &["--model DIR"]);
    fails_with(&qkv(&["bench", "gemm", "--case", "big"]), &["sizes", "--case 2048"]);
    fails_with(&qkv(&["bench", "attention", "--case", "4k"]), &["sizes"]);
}
