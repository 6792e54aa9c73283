//! `qkv tokenizer train|encode|decode` and `qkv train --tokenizer` end to end:
//! ids shown beside their pieces, tokenizers learned from files, a GPT trained
//! on subword tokens through the token cache (and resumed exactly), and bad
//! input refused with one clear line.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use qkv::generate::{Sampling, generate};
use qkv::io::safetensors::load;
use qkv::models::load::{Model, open};

mod common;
use common::{chars_of, close, corpus, fails_with, num, ok, qkv, read_json, scratch, stderr, stdout};

/// Run `qkv` with the token cache in `cache` (never the user's), feeding `stdin`.
fn qkv_in(cache: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .env("QKV_CACHE_DIR", cache)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the qkv binary runs");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn bert_vocab() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qkv/tests/fixtures/tokenizers/bert-uncased-vocab.txt")
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn encode_shows_pieces_and_decode_gives_the_text_back() {
    let o = qkv(&["tokenizer", "encode", "--tokenizer", "gpt2", "Hello world"]);
    ok(&o);
    let table = stdout(&o);
    assert!(table.contains("15496") && table.contains("Ġworld") && table.contains("\" world\""), "{table}");
    let o = qkv(&["tokenizer", "encode", "--tokenizer", "gpt2", "--json", "Hello world"]);
    ok(&o);
    assert_eq!(json(&o), serde_json::json!({"ids": [15496, 995], "tokens": ["Hello", "Ġworld"]}));
    // standard input, byte for byte: whitespace alone is text
    let cache = std::env::temp_dir();
    let o = qkv_in(&cache, &["tokenizer", "encode", "--tokenizer", "gpt2", "--json"], Some(b"  \n\t"));
    ok(&o);
    assert_eq!(json(&o)["ids"], serde_json::json!([220, 220, 198, 197]));
    let o = qkv_in(&cache, &["tokenizer", "encode", "--tokenizer", "gpt2"], Some(b"caf\xe9"));
    fails_with(&o, &["UTF-8", "offset 3", "--lossy"]);
    let o = qkv_in(&cache, &["tokenizer", "encode", "--tokenizer", "gpt2", "--lossy", "--json"], Some(b"caf\xe9"));
    ok(&o);
    let replaced = qkv(&["tokenizer", "encode", "--tokenizer", "gpt2", "--json", "caf\u{FFFD}"]);
    assert_eq!(json(&o), json(&replaced), "the bad byte read as U+FFFD");
    // decode: arguments or standard input; the text exactly
    let o = qkv(&["tokenizer", "decode", "--tokenizer", "gpt2", "15496", "995"]);
    ok(&o);
    assert_eq!(stdout(&o), "Hello world");
    let o = qkv_in(&cache, &["tokenizer", "decode", "--tokenizer", "gpt2"], Some(b"15496, 995\n"));
    assert_eq!(stdout(&o), "Hello world");
    fails_with(&qkv(&["tokenizer", "decode", "--tokenizer", "gpt2", "15496", "50257"]), &["50257", "vocabulary"]);
    assert_eq!(
        qkv(&["tokenizer", "decode", "--tokenizer", "gpt2", "x1"]).status.code(),
        Some(2),
        "not a number: a usage error"
    );
    // BERT from a vocab.txt, with [CLS] … [SEP] when asked
    let vocab = bert_vocab();
    let o = qkv(&["tokenizer", "encode", "--tokenizer", &vocab, "--json", "--special", "Héllo!"]);
    ok(&o);
    assert_eq!(json(&o)["ids"], serde_json::json!([101, 7592, 999, 102]));
    fails_with(
        &qkv(&["tokenizer", "encode", "--tokenizer", "no/such/tokenizer.json", "x"]),
        &["no/such/tokenizer.json", "gpt2"],
    );
}

#[test]
fn tokenizers_train_from_files_and_bad_files_are_named() {
    let d = scratch("train");
    let data = corpus(&d);
    let data_s = data.to_str().unwrap();
    let out = d.join("bpe.json");
    let out_s = out.to_str().unwrap();
    let o = qkv(&["tokenizer", "train", "--kind", "byte-bpe", "--vocab-size", "300", data_s, "-o", out_s]);
    ok(&o);
    assert!(stderr(&o).contains("<|endoftext|> = 0"), "{}", stderr(&o));
    let text = "line 7: to be or not to be? 😀";
    let o = qkv(&["tokenizer", "encode", "--tokenizer", out_s, "--json", text]);
    ok(&o);
    let ids: Vec<String> = json(&o)["ids"].as_array().unwrap().iter().map(|i| i.to_string()).collect();
    let mut args = vec!["tokenizer", "decode", "--tokenizer", out_s];
    args.extend(ids.iter().map(String::as_str));
    assert_eq!(stdout(&qkv(&args)), text, "byte-level round trip");
    let trained = read_json(&out);
    assert_eq!(trained["model"]["type"], "BPE");
    assert_eq!(trained["model"]["vocab"].as_object().unwrap().len(), 300, "the vocabulary asked for");
    for (kind, size, model) in [("bpe", 200, "BPE"), ("wordpiece", 200, "WordPiece"), ("unigram", 150, "Unigram")] {
        let p = d.join(format!("{kind}.json"));
        let p_s = p.to_str().unwrap();
        let o = qkv(&["tokenizer", "train", "--kind", kind, "--vocab-size", &size.to_string(), data_s, "-o", p_s]);
        ok(&o);
        // as many tokens as it says it learnt (this little text supports fewer than asked), of its kind
        let t = read_json(&p);
        assert_eq!(t["model"]["type"], model, "{kind}");
        let n = t["model"]["vocab"].as_array().map_or_else(|| t["model"]["vocab"].as_object().unwrap().len(), Vec::len);
        assert!(n > 28 && n <= size, "{kind}: {n} tokens");
        assert!(stderr(&o).contains(&format!("trained {model}, {n} tokens from 1 file")), "{kind}: {}", stderr(&o));
        // ids of its vocabulary, one per token, and the text back
        let text = "to be or not";
        let e = qkv(&["tokenizer", "encode", "--tokenizer", p_s, "--json", text]);
        ok(&e);
        let (ids, tokens) = (json(&e)["ids"].clone(), json(&e)["tokens"].clone());
        let ids: Vec<String> = ids.as_array().unwrap().iter().map(|i| i.to_string()).collect();
        assert!(ids.len() == tokens.as_array().unwrap().len() && (2..text.len()).contains(&ids.len()), "{kind}");
        assert!(ids.iter().all(|i| i.parse::<usize>().unwrap() < n), "{kind}: {ids:?}");
        let mut args = vec!["tokenizer", "decode", "--tokenizer", p_s];
        args.extend(ids.iter().map(String::as_str));
        assert_eq!(stdout(&qkv(&args)), text, "{kind}: round trip");
    }
    let ch = d.join("char.json");
    ok(&qkv(&["tokenizer", "train", "--kind", "char", data_s, "-o", ch.to_str().unwrap()]));
    let chars: String = chars_of(&data).into_iter().collect();
    assert_eq!(
        read_json(&ch),
        serde_json::json!({"kind": "char", "chars": chars}),
        "the corpus's characters, in order"
    );
    fails_with(
        &qkv(&["tokenizer", "train", "--kind", "char", "--vocab-size", "9", data_s, "-o", out_s]),
        &["--vocab-size"],
    );
    // a vocabulary the trainers would reserve terabytes for is refused up front
    for kind in ["bpe", "byte-bpe", "wordpiece", "unigram"] {
        fails_with(
            &qkv(&["tokenizer", "train", "--kind", kind, "--vocab-size", "5000000000", data_s, "-o", out_s]),
            &["5000000000", "at most 1048576"],
        );
    }
    // non-UTF-8 text: the file and the byte offset, unless --lossy
    let latin1 = d.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9 au lait, caf\xe9 noir\n").unwrap();
    let l = latin1.to_str().unwrap();
    fails_with(
        &qkv(&["tokenizer", "train", "--kind", "byte-bpe", l, "-o", out_s]),
        &["latin1.txt", "offset 3", "--lossy"],
    );
    let o = qkv(&["tokenizer", "train", "--kind", "byte-bpe", "--lossy", l, "-o", out_s]);
    ok(&o);
    assert!(stderr(&o).contains("replaced 2"), "{}", stderr(&o));
    assert_eq!(read_json(&out)["model"]["type"], "BPE", "a tokenizer written over the last one");
    // a malformed tokenizer.json names the line; merges.txt the line too
    let bad = d.join("bad.json");
    std::fs::write(&bad, "{\n \"model\": {\"type\": \"BPE\",\n \"vocab\": [}\n}").unwrap();
    fails_with(&qkv(&["tokenizer", "encode", "--tokenizer", bad.to_str().unwrap(), "x"]), &["bad.json", "line 3"]);
    let gpt = d.join("gpt");
    std::fs::create_dir_all(&gpt).unwrap();
    std::fs::write(gpt.join("vocab.json"), r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
    std::fs::write(gpt.join("merges.txt"), "#version: 0.2\na b\nb c\n").unwrap();
    fails_with(
        &qkv(&["tokenizer", "encode", "--tokenizer", gpt.to_str().unwrap(), "ab"]),
        &["merges.txt", "line 3", "\"c\""],
    );
    assert_eq!(qkv(&["tokenizer", "train", "--kind", "sentencepiece", data_s, "-o", out_s]).status.code(), Some(2));
}

#[rustfmt::skip]
const TINY: &[&str] = &[
    "--threads", "2", "train", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
    "--batch-size", "4", "--eval-batches", "2", "--warmup-steps", "2", "--sample-chars", "0", "--quiet",
];

#[test]
fn a_gpt_trains_on_subword_tokens_and_resumes_exactly() {
    let d = scratch("gpt");
    let cache = d.join("cache");
    let data = corpus(&d);
    let data_s = data.to_str().unwrap();
    let tok = d.join("bpe.json");
    let tok_s = tok.to_str().unwrap();
    ok(&qkv(&["tokenizer", "train", "--kind", "byte-bpe", "--vocab-size", "300", data_s, "-o", tok_s]));
    let train = |extra: &[&str]| {
        let args: Vec<&str> = TINY.iter().chain(extra).copied().collect();
        qkv_in(&cache, &args, None)
    };
    let (one, two) = (d.join("one"), d.join("two"));
    let (one_s, two_s) = (one.to_str().unwrap(), two.to_str().unwrap());
    let common = ["--data", data_s, "--tokenizer", tok_s, "--max-steps", "8", "--eval-interval", "4"];
    let o = train(&[&common[..], &["--out-dir", one_s]].concat());
    ok(&o);
    assert!(stderr(&o).contains("tokenized"), "{}", stderr(&o));
    assert!(stderr(&o).contains("vocabulary 300 (byte-level BPE"), "{}", stderr(&o));
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 1, "one token file in the cache");
    let o = train(&[&common[..], &["--out-dir", two_s, "--stop-at", "4"]].concat());
    ok(&o);
    assert!(stderr(&o).contains("tokens of"), "the cache is reused: {}", stderr(&o));
    assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1, "the same token file");
    let o = qkv_in(&cache, &["--threads", "2", "train", "--resume", two_s, "--quiet", "--sample-chars", "0"], None);
    ok(&o);
    for f in ["model.safetensors", "checkpoint.safetensors"] {
        let (a, b) = (load(&one.join(f)).unwrap(), load(&two.join(f)).unwrap());
        assert_eq!(a.metadata.get("step"), b.metadata.get("step"), "{f}");
        assert_eq!(a.tensors.len(), b.tensors.len(), "{f}");
        for (name, t) in &a.tensors {
            assert!(
                t.to_vec() == b.tensors[name].to_vec(),
                "{f}: {name} differs between the straight run and the resumed one"
            );
        }
    }
    // the run keeps a Hugging Face tokenizer.json and records the spec
    assert_eq!(read_json(&one.join("tokenizer.json")), read_json(&tok), "the tokenizer it was given");
    let spec = read_json(&one.join("run.json"));
    assert_eq!(spec["tokenizer"].as_str(), Some(tok_s), "{spec}");
    assert_eq!(read_json(&one.join("config.json"))["vocab_size"], 300);
    fails_with(&qkv_in(&cache, &["train", "--resume", two_s, "--tokenizer", "gpt2"], None), &["--tokenizer"]);
    // generation and evaluation use the run's tokenizer
    let g = qkv(&["generate", "--model", one_s, "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
    ok(&g);
    // the library's 20 tokens for that seed, decoded as they arrive
    let Model::Gpt { model, tokenizer, .. } = open(&one).unwrap() else { panic!("not a GPT") };
    let prompt = tokenizer.encode("to be").unwrap();
    let ids = generate(&model, &prompt, 20, &Sampling { seed: 3, ..Default::default() }, |_| Ok(true)).unwrap();
    assert_eq!(ids.len(), 20);
    let mut stream = tokenizer.stream();
    for &id in &prompt {
        stream.step(id).unwrap();
    }
    let text: String = ids.iter().map(|&id| stream.step(id).unwrap()).collect();
    assert_eq!(stdout(&g), format!("to be{text}\n"));
    let e = qkv(&["eval", "--model", one_s, "--data", data_s, "--json"]);
    ok(&e);
    let v = json(&e);
    let (loss, tokens, chars) = (num(&v["loss"]), num(&v["tokens"]), num(&v["chars"]));
    assert!(loss > 0.0 && tokens > 0.0 && chars > 1.5 * tokens, "subword tokens span several characters: {v}");
    assert_eq!(v["tokens"].as_u64().unwrap() % 16, 0, "whole windows of 16: {v}");
    let bpc = loss * tokens / chars / std::f64::consts::LN_2;
    assert!(close(num(&v["bits_per_char"]), bpc, 1e-9), "{v}");
    assert!(close(num(&v["perplexity"]), loss.exp(), 1e-6 * loss.exp()), "{v}");
}

#[test]
fn gpt2_tokens_train_and_an_unwritable_cache_falls_back_to_the_run() {
    let d = scratch("gpt2");
    let data = corpus(&d);
    let blocked = d.join("not-a-directory");
    std::fs::write(&blocked, "x").unwrap();
    let run = d.join("run");
    let args: Vec<&str> = TINY
        .iter()
        .copied()
        .chain([
            "--data",
            data.to_str().unwrap(),
            "--tokenizer",
            "gpt2",
            "--max-steps",
            "2",
            "--out-dir",
            run.to_str().unwrap(),
        ])
        .collect();
    let o = qkv_in(&blocked, &args, None);
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("vocabulary 50257") && err.contains("warning"), "{err}");
    let in_run = std::fs::read_dir(&run)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "tokens"))
        .count();
    assert_eq!(in_run, 1, "the token file went to the run directory");
    fails_with(
        &qkv(&["train", "--tokenizer", "nope.json", "--out-dir", d.join("r2").to_str().unwrap()]),
        &["--tokenizer", "nope.json"],
    );
}
