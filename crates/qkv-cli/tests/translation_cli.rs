//! The encoder–decoder from the command line: `qkv train --model seq2seq`
//! on a table of pairs, `qkv translate` (arguments, standard input, JSON,
//! greedy and beam), `qkv eval` (BLEU and chrF on the held-out groups beside
//! the copy-the-source baseline), Marian directories, and the bad input each
//! must refuse clearly.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

mod common;

use qkv::io::safetensors::load;

use common::{
    TOY_WORDS, close, count, fails_with, num, ok, qkv, read_json, s, scratch, stderr, stdout, svg, toy_pairs,
};

/// Every word of `text` a word of the toy task's "Spanish".
fn spanish(text: &str) -> bool {
    !text.is_empty() && text.split(' ').all(|w| TOY_WORDS.iter().any(|&(_, es)| es == w))
}

/// Word by word, as the toy task translates.
fn word_by_word(english: &str) -> String {
    let word = |w: &str| TOY_WORDS.iter().find(|&&(en, _)| en == w).unwrap_or_else(|| panic!("{w:?}")).1;
    english.split(' ').map(word).collect::<Vec<_>>().join(" ")
}

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
    assert!(err.contains("pairs cut to 24 tokens: 0"), "{err}");
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report, read_json(&model.join("report.json")), "the report printed is the one written");
    // whole groups held out: 50 pairs each (300 in 6 groups), named
    let (held, groups) = err.split_once(" held out from ").expect("the split described");
    let held: u64 = held.rsplit(' ').next().unwrap().parse().unwrap();
    let (n_groups, names) = groups.split_once(" whole groups (").unwrap();
    let n_groups: u64 = n_groups.parse().unwrap();
    let names: Vec<&str> = names.split_once(')').unwrap().0.split(", ").collect();
    assert!(n_groups >= 1 && names.len() as u64 == n_groups && held == 50 * n_groups, "{err}");
    assert_eq!(report["test_pairs"].as_u64(), Some(held), "{report}");
    // the samples: held-out pairs, each reference the source word by word
    let table = std::fs::read_to_string(&data).unwrap();
    let held_out: Vec<&str> =
        table.lines().filter_map(|l| l.split_once('\t')).filter(|(g, _)| names.contains(g)).map(|(_, p)| p).collect();
    let samples = report["samples"].as_array().unwrap();
    assert_eq!(samples.len() as u64, held.min(10), "{report}");
    for x in samples {
        let (source, reference) = (x["source"].as_str().unwrap(), x["reference"].as_str().unwrap());
        assert!(held_out.contains(&format!("{source}\t{reference}").as_str()), "not a held-out pair: {x}");
        assert_eq!(reference, word_by_word(source), "{x}");
    }
    for f in ["tokenizer.json", "model.safetensors"] {
        assert!(model.join(f).is_file(), "{f}");
    }
    assert_eq!(read_json(&model.join("run.json"))["task"], "translation");
    let config = read_json(&model.join("config.json"));
    assert_eq!(config["architectures"][0], "MarianMTModel");
    // one shared vocabulary of at most the 120 asked for, the tokenizer's and the embeddings'
    let vocab = config["vocab_size"].as_u64().unwrap();
    assert!(vocab > 12 && vocab <= 120, "{config}");
    assert_eq!(read_json(&model.join("tokenizer.json"))["model"]["vocab"].as_object().unwrap().len() as u64, vocab);
    let weights = load(&model.join("model.safetensors")).unwrap();
    assert!(weights.tensors.values().any(|t| t.shape()[0] as u64 == vocab), "an embedding of the vocabulary");
    assert!(weights.tensors.values().all(|t| t.to_vec().iter().all(|x| x.is_finite())), "finite weights");
    // translate: arguments, JSON, greedy = beam 1
    let t = qkv(&["translate", "--model", s(&model), "--json", "the cat sees a dog", "", "small house"]);
    ok(&t);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&t)).unwrap();
    assert_eq!(rows.as_array().unwrap().len(), 3);
    assert_eq!(rows[1]["translation"], "", "an empty line translates to an empty line");
    for (i, source) in ["the cat sees a dog", "", "small house"].iter().enumerate() {
        assert_eq!(rows[i]["source"].as_str(), Some(*source), "{rows}");
    }
    for i in [0, 2] {
        assert!(spanish(rows[i]["translation"].as_str().unwrap()), "words of the target language: {rows}");
    }
    // the samples are what qkv translate gives at the report's beam
    let sources: Vec<&str> = samples.iter().map(|x| x["source"].as_str().unwrap()).collect();
    let mut args = vec!["translate", "--model", s(&model), "--json", "--beam"];
    let beam = report["beam"].to_string();
    args.extend([beam.as_str()].iter().chain(&sources));
    let again: serde_json::Value = serde_json::from_str(&stdout(&qkv(&args))).unwrap();
    for (x, y) in samples.iter().zip(again.as_array().unwrap()) {
        assert_eq!(x["translation"], y["translation"], "{x} vs {y}");
    }
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
    let want: Vec<&str> = (0..3).map(|i| rows[i]["translation"].as_str().unwrap()).collect();
    assert_eq!(lines, want);
    // eval: the held-out groups, against the copy-the-source baseline; the run's own numbers
    let e = qkv(&["eval", "--model", s(&model), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!(r["split"], "held-out pairs");
    let (bleu, copy) = (num(&r["bleu"]), num(&r["copy_source_bleu"]));
    assert!(bleu > copy, "the model ({bleu}) must beat copying the source ({copy})");
    assert!(num(&r["chrf"]) > num(&r["copy_source_chrf"]));
    assert_eq!(r["pairs"].as_u64().unwrap(), report["test_pairs"].as_u64().unwrap(), "the same held-out pairs");
    assert_eq!(r["beam"], report["beam"]);
    for (ours, theirs) in [
        ("bleu", &report["bleu"]),
        ("chrf", &report["chrf"]),
        ("brevity_penalty", &report["bleu_detail"]["brevity_penalty"]),
        ("copy_source_bleu", &report["copy_source_baseline"]["bleu"]),
        ("copy_source_chrf", &report["copy_source_baseline"]["chrf"]),
    ] {
        assert!(close(num(&r[ours]), num(theirs), 1e-9), "{ours}: {r} vs {report}");
    }
    assert!((0.0..=100.0).contains(&bleu) && (0.0..=100.0).contains(&num(&r["chrf"])), "{r}");
    assert!(num(&r["brevity_penalty"]) > 0.0 && num(&r["brevity_penalty"]) <= 1.0, "{r}");
    // greedy: the BLEU the last evaluation of training printed
    let greedy = qkv(&["eval", "--model", s(&model), "--data", s(&data), "--json", "--beam", "1"]);
    ok(&greedy);
    let g: serde_json::Value = serde_json::from_str(&stdout(&greedy)).unwrap();
    assert_eq!((g["beam"].as_u64(), &g["pairs"]), (Some(1), &r["pairs"]), "{g}");
    let logged = err.lines().rfind(|l| l.contains("(greedy")).expect("an evaluation line");
    let logged: f64 = logged.split("BLEU ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(close(num(&g["bleu"]), logged, 0.051), "{g} vs {logged}");
    // the cross-attention picture, and its weights: one row per target token, each a distribution
    let svg_path = d.join("cross.svg");
    let a = qkv(&["attention", "--model", s(&model), "--source", "the cat sees a dog", "-o", s(&svg_path), "--json"]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let (src, tgt) = (maps["keys"].as_array().unwrap().len(), maps["queries"].as_array().unwrap().len());
    assert_eq!(maps["kind"], "cross-attention");
    assert_eq!(maps["translation"], rows[0]["translation"], "drawn for the model's own translation by default");
    let picture = svg(&svg_path);
    assert_eq!(count(&picture, "<rect"), 1 + 2 * tgt * src, "a cell per weight");
    assert!(picture.contains("layer 1 · head 1") && picture.contains("layer 1 · head 2"), "both heads drawn");
    let layers = maps["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(layers[0]["heads"].as_array().unwrap().len(), 2, "two heads");
    for head in layers[0]["heads"].as_array().unwrap() {
        let weights = head["weights"].as_array().unwrap();
        assert_eq!(weights.len(), tgt);
        for row in weights {
            let row: Vec<f64> = row.as_array().unwrap().iter().map(num).collect();
            assert_eq!(row.len(), src);
            let sum: f64 = row.iter().sum();
            assert!(close(sum, 1.0, 1e-4) && row.iter().all(|&x| x >= 0.0), "a row of attention sums to {sum}");
        }
    }
    fails_with(
        &qkv(&["attention", "--model", s(&model), "--source", "x", "--layer", "3", "-o", s(&svg_path)]),
        &["--layer 3", "1 to 1"],
    );
    // bad input
    fails_with(&qkv(&["translate", "--model", s(&model), "--beam", "0", "x"]), &["beam of 0"]);
    fails_with(&qkv(&["translate", "--model", s(&model), "--beam", "1000000000000", "x"]), &["at most 256"]);
    // a length budget past every number still ends at the model's positions
    let o = qkv(&["translate", "--model", s(&model), "--max-len-extra", &usize::MAX.to_string(), "the dog"]);
    ok(&o);
    let plain = qkv(&["translate", "--model", s(&model), "the dog"]);
    assert!(spanish(stdout(&o).trim_end()), "a translation: {}", stdout(&o));
    assert_eq!(stdout(&o), stdout(&plain), "the translation ends where it would have anyway");
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
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    for row in rows.as_array().unwrap() {
        let words = row["translation"].as_str().unwrap();
        // words of the vocabulary, no special tokens
        let known =
            |w: &str| w.strip_prefix('w').and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| (3..41).contains(&n));
        assert!(!words.is_empty() && words.split(' ').all(known), "{row}");
    }
    // eval on a table of pairs: every pair (the directory records no split)
    let data = d.join("pairs.tsv");
    std::fs::write(&data, "en\tes\nw3 w9 w17 w4\tw10 w12\nw5 w5\tw7\n").unwrap();
    let e = qkv(&["eval", "--model", s(&m), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert_eq!((r["split"].as_str(), r["pairs"].as_u64()), (Some("every pair"), Some(2)), "{r}");
    assert_eq!(r["beam"], 4, "{r}");
    for k in ["bleu", "chrf", "copy_source_bleu", "copy_source_chrf"] {
        assert!((0.0..=100.0).contains(&num(&r[k])), "{k}: {r}");
    }
    assert!(num(&r["brevity_penalty"]) > 0.0 && num(&r["brevity_penalty"]) <= 1.0, "{r}");
    // cross-attention: 2 layers × 3 heads
    let svg_path = d.join("t5.svg");
    let a = qkv(&[
        "attention",
        "--model",
        s(&m),
        "--source",
        "w3 w9 w17 w4",
        "--target",
        "w10 w12",
        "-o",
        s(&svg_path),
        "--json",
    ]);
    ok(&a);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(maps["layers"].as_array().unwrap().len(), 2);
    assert_eq!(maps["layers"][0]["heads"].as_array().unwrap().len(), 3);
    // the target given, read against the source and its </s>
    let keys: Vec<&str> = maps["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(&keys[..4], ["w3", "w9", "w17", "w4"], "{keys:?}");
    let (src, tgt) = (keys.len(), maps["queries"].as_array().unwrap().len());
    assert!(tgt >= 2, "{maps}");
    for layer in maps["layers"].as_array().unwrap() {
        for head in layer["heads"].as_array().unwrap() {
            let rows = head["weights"].as_array().unwrap();
            assert_eq!(rows.len(), tgt);
            for row in rows {
                let row: Vec<f64> = row.as_array().unwrap().iter().map(num).collect();
                assert!(row.len() == src && close(row.iter().sum(), 1.0, 1e-4), "{row:?}");
            }
        }
    }
    assert_eq!(count(&svg(&svg_path), "<rect"), 1 + 2 * 3 * tgt * src, "a cell per weight");
    // an option qkv does not implement, named
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("config.json")).unwrap()).unwrap();
    config["feed_forward_proj"] = "gated-tanh".into();
    std::fs::write(m.join("config.json"), config.to_string()).unwrap();
    fails_with(&qkv(&["translate", "--model", s(&m), "w3"]), &["feed_forward_proj", "gated-tanh"]);
}
