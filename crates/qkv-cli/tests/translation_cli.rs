//! The encoder–decoder from the command line: `qkv train --model seq2seq`
//! on a table of pairs, `qkv translate` (arguments, standard input, JSON,
//! greedy and beam), `qkv eval` (BLEU and chrF on the held-out groups beside
//! the copy-the-source baseline), Marian directories, and the bad input each
//! must refuse clearly.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::{fails_with, ok, qkv, s, scratch, stderr, stdout, toy_pairs};

#[rustfmt::skip]
fn tiny(data: &Path, out: &Path) -> Vec<String> {
    ["--threads", "2", "train", "--model", "seq2seq", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
     "--max-tokens", "128", "--max-len", "24", "--vocab-size", "120", "--group-column", "group", "--max-steps", "600",
     "--eval-interval", "200", "--lr", "3e-3", "--warmup-steps", "50", "--quiet", "--data", s(data), "--out-dir", s(out)]
        .map(String::from).to_vec()
}

fn run(args: &[String]) -> std::process::Output {
    qkv(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn a_seq2seq_trains_translates_and_is_scored_on_held_out_groups() {
    let d = scratch("s2s");
    let data = toy_pairs(&d);
    let model = d.join("run");
    let o = run(&tiny(&data, &model));
    ok(&o);
    let err = stderr(&o);
    assert!(err.contains("held out from 1 whole groups") || err.contains("whole groups"), "{err}");
    assert!(err.contains("pairs cut to 24 tokens: 0"), "{err}");
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(report["samples"].as_array().is_some_and(|s| !s.is_empty()), "{report}");
    for f in ["config.json", "tokenizer.json", "model.safetensors", "run.json"] {
        assert!(model.join(f).exists(), "{f}");
    }
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["architectures"][0], "MarianMTModel");
    // translate: arguments, JSON, greedy = beam 1
    let t = qkv(&["translate", "--model", s(&model), "--json", "the cat sees a dog", "", "small house"]);
    ok(&t);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&t)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[1]["translation"], "", "an empty line translates to an empty line");
    assert!(!rows[0]["translation"].as_str().unwrap().is_empty());
    // standard input, one sentence per line, in order; the same as arguments
    let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["translate", "--model", s(&model)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"the cat sees a dog\n\nsmall house\n").unwrap();
    let piped = child.wait_with_output().unwrap();
    ok(&piped);
    let lines: Vec<String> = stdout(&piped).lines().map(String::from).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], rows[0]["translation"].as_str().unwrap());
    // eval: the held-out groups, against the copy-the-source baseline
    let e = qkv(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!(r["split"], "held-out pairs");
    let (bleu, copy) = (r["bleu"].as_f64().unwrap(), r["copy_source_bleu"].as_f64().unwrap());
    assert!(bleu > copy, "the model ({bleu}) must beat copying the source ({copy})");
    assert!(r["chrf"].as_f64().unwrap() > r["copy_source_chrf"].as_f64().unwrap());
    assert_eq!(r["pairs"].as_u64().unwrap(), report["test_pairs"].as_u64().unwrap(), "the same held-out pairs");
    let greedy = qkv(&["eval", "--model", s(&model), "--data", s(&data), "--json", "--beam", "1"]);
    ok(&greedy);
    // the cross-attention picture, and its weights: one row per target token, each a distribution
    let svg = d.join("cross.svg");
    let a = qkv(&["attention", "--model", s(&model), "--source", "the cat sees a dog", "-o", s(&svg), "--json"]);
    ok(&a);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<svg"));
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let (src, tgt) = (maps["keys"].as_array().unwrap().len(), maps["queries"].as_array().unwrap().len());
    assert_eq!(maps["kind"], "cross-attention");
    assert_eq!(maps["translation"], rows[0]["translation"], "drawn for the model's own translation by default");
    let layers = maps["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["heads"].as_array().unwrap().len(), 2, "two heads");
    for head in layers[0]["heads"].as_array().unwrap() {
        let weights = head["weights"].as_array().unwrap();
        assert_eq!(weights.len(), tgt);
        for row in weights {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(row.len(), src);
            let sum: f64 = row.iter().sum();
            assert!((sum - 1.0).abs() < 1e-4, "a row of attention sums to {sum}");
        }
    }
    fails_with(
        &qkv(&["attention", "--model", s(&model), "--source", "x", "--layer", "3", "-o", s(&svg)]),
        &["--layer 3", "1 to 1"],
    );
    // bad input
    fails_with(&qkv(&["translate", "--model", s(&model), "--beam", "0", "x"]), &["beam of 0"]);
    fails_with(&qkv(&["translate", "--model", s(&model), "--beam", "1000000000000", "x"]), &["at most 256"]);
    // a length budget past every number still ends at the model's positions
    let o = qkv(&["translate", "--model", s(&model), "--max-len-extra", &usize::MAX.to_string(), "the dog"]);
    ok(&o);
    assert!(!stdout(&o).trim().is_empty(), "a translation");
    fails_with(&qkv(&["translate", "--model", s(&d), "x"]), &["not a model directory"]);
}

#[test]
fn bad_tables_and_unsupported_marian_options_are_refused_clearly() {
    let d = scratch("s2s-bad");
    let data = toy_pairs(&d);
    let out = d.join("run");
    let mut args = tiny(&data, &out);
    args.extend(["--source-column".into(), "english".into()]);
    fails_with(&run(&args), &["\"english\"", "--source-column"]);
    let stray = d.join("stray.tsv");
    std::fs::write(&stray, "group\ten\tes\ng1\ta b\tc d\ng2\te f\tg\th\n").unwrap();
    fails_with(&run(&tiny(&stray, &out)), &["row 3", "stray tab"]);
    let one = d.join("one.tsv");
    std::fs::write(&one, "group\ten\tes\ng1\ta b\tc d\ng1\te f\tg h\n").unwrap();
    fails_with(&run(&tiny(&one, &out)), &["at least two"]);
    assert!(!out.join("run.json").exists(), "nothing written for refused runs");
    // pairs longer than --max-len are cut, and counted
    let mut short = tiny(&data, &d.join("short"));
    let at = short.iter().position(|a| a == "--max-len").unwrap();
    short[at + 1] = "6".into();
    let at = short.iter().position(|a| a == "--max-steps").unwrap();
    short[at + 1] = "2".into();
    let o = run(&short);
    ok(&o);
    let cut: usize =
        stderr(&o).split("pairs cut to 6 tokens: ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(cut > 100, "most toy pairs are longer than 6 tokens: {cut}");
    // a Marian directory with an option qkv does not implement
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qkv/tests/fixtures/hf/marian-odd");
    let m = d.join("marian");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(fixture.join("model.safetensors"), m.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    config["normalize_embedding"] = true.into();
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    fails_with(&qkv(&["translate", "--model", s(&m), "x"]), &["normalize_embedding"]);
    // without a tokenizer, a Marian directory cannot read text
    std::fs::copy(fixture.join("config.json"), m.join("config.json")).unwrap();
    fails_with(&qkv(&["translate", "--model", s(&m), "x"]), &["tokenizer"]);
}

/// A T5ForConditionalGeneration directory (the fixture, with a word-level
/// tokenizer of its 41 ids written beside it) translates, is scored and
/// drawn by the same commands as a Marian one.
#[test]
fn a_t5_directory_translates_is_scored_and_drawn() {
    let d = scratch("t5");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qkv/tests/fixtures/hf/t5-odd");
    let m = d.join("t5");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), m.join(f)).unwrap();
    }
    let mut vocab = serde_json::Map::new();
    for (i, w) in
        ["<pad>", "</s>", "<unk>"].iter().map(|s| s.to_string()).chain((3..41).map(|i| format!("w{i}"))).enumerate()
    {
        vocab.insert(w, i.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [
            {"id": 0, "content": "<pad>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
            {"id": 1, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
        ],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"},
    });
    std::fs::write(m.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    let t = qkv(&["translate", "--model", s(&m), "--json", "w3 w9 w17 w4", "w5 w5"]);
    ok(&t);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&t)).unwrap();
    for row in rows.as_array().unwrap() {
        let words = row["translation"].as_str().unwrap();
        assert!(!words.is_empty() && words.split(' ').all(|w| w.starts_with('w')), "{row}");
    }
    // eval on a table of pairs: every pair (the directory records no split)
    let data = d.join("pairs.tsv");
    std::fs::write(&data, "en\tes\nw3 w9 w17 w4\tw10 w12\nw5 w5\tw7\n").unwrap();
    let e = qkv(&["eval", "--model", s(&m), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!((r["split"].as_str(), r["pairs"].as_u64()), (Some("every pair"), Some(2)), "{r}");
    assert!(r["bleu"].as_f64().is_some_and(f64::is_finite), "{r}");
    // cross-attention: 2 layers × 3 heads
    let svg = d.join("t5.svg");
    let a = qkv(&[
        "attention",
        "--model",
        s(&m),
        "--source",
        "w3 w9 w17 w4",
        "--target",
        "w10 w12",
        "-o",
        s(&svg),
        "--json",
    ]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(maps["layers"].as_array().unwrap().len(), 2);
    assert_eq!(maps["layers"][0]["heads"].as_array().unwrap().len(), 3);
    // an option qkv does not implement, named
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    config["feed_forward_proj"] = "gated-tanh".into();
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    fails_with(&qkv(&["translate", "--model", s(&m), "w3"]), &["feed_forward_proj", "gated-tanh"]);
}
