//! Helpers shared by the command-line tests: run the `qkv` binary, give each
//! test its own scratch directory, and check for success or for one clear error.
#![allow(dead_code)] // each test file uses its own subset

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run the `qkv` binary built for these tests.
pub fn qkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkv")).args(args).output().expect("the qkv binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh scratch directory for one test (per process, so test binaries never collide).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkv-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn ok(o: &Output) {
    assert!(o.status.success(), "qkv failed: {}", stderr(o));
}

/// Fails with exit code 1, no panic, and an error that contains every `needle`.
pub fn fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected a failure, got success: {err}");
    assert!(!err.contains("panicked"), "a panic instead of an error: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

/// A small corpus with some structure (so the loss moves), written into `dir`.
pub fn corpus(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    let text: String = (0..600).map(|i| format!("line {i}: to be or not to be, that is the question.\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

pub fn vocab() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../qkv/tests/fixtures/tokenizers/bert-uncased-vocab.txt")
        .to_string_lossy()
        .into_owned()
}

pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Sentences whose label is the verb they contain.
pub fn reviews(path: &Path, extra_label: Option<&str>) {
    let mut csv = String::from("id,text,label\n");
    let things = ["movie", "film", "book", "song", "show", "play", "meal", "game"];
    for i in 0..240 {
        let (verb, label) = if i % 2 == 0 { ("love", "pos") } else { ("hate", "neg") };
        csv.push_str(&format!("{i},\"i {verb} this {} number {i}\",{label}\n", things[i % things.len()]));
    }
    if let Some(l) = extra_label {
        for i in 0..60 {
            csv.push_str(&format!("{},\"something else entirely {i}\",{l}\n", 1000 + i));
        }
    }
    std::fs::write(path, csv).unwrap();
}

/// A 12×12 grey picture: class "left" is bright on the left half, "right" on the right.
pub fn picture(path: &Path, left: bool, seed: u32) {
    let img = image::GrayImage::from_fn(12, 12, |x, y| {
        let bright = (x < 6) == left;
        let noise = ((x * 7 + y * 13 + seed * 31) % 40) as u8;
        image::Luma([if bright { 200 + noise / 2 } else { noise }])
    });
    img.save(path).unwrap();
}

/// Class folders `left/` and `right/` of 30 pictures each under `dir`.
pub fn pictures(dir: &Path) {
    for (class, left) in [("left", true), ("right", false)] {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for i in 0..30 {
            picture(&dir.join(class).join(format!("{i}.png")), left, i);
        }
    }
}

/// Run `qkv` with extra environment variables.
pub fn qkv_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_qkv"));
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("the qkv binary runs")
}

/// The toy translation task's dictionary: each English word and its "Spanish".
pub const TOY_WORDS: [(&str, &str); 12] = [
    ("the", "el"),
    ("cat", "gato"),
    ("dog", "perro"),
    ("sees", "ve"),
    ("a", "un"),
    ("big", "grande"),
    ("small", "pequeño"),
    ("house", "casa"),
    ("eats", "come"),
    ("bread", "pan"),
    ("and", "y"),
    ("runs", "corre"),
];

/// A toy translation task: sentences of a small English vocabulary and
/// their word-by-word "Spanish", 300 pairs in 6 groups, as a TSV in `dir`.
pub fn toy_pairs(dir: &Path) -> PathBuf {
    let words = TOY_WORDS;
    let mut tsv = String::from("group\ten\tes\n");
    for i in 0..300usize {
        let n = 3 + i % 5;
        let pick: Vec<usize> = (0..n).map(|j| (i * 7 + j * 5 + j * j * 3) % words.len()).collect();
        let en: Vec<&str> = pick.iter().map(|&k| words[k].0).collect();
        let es: Vec<&str> = pick.iter().map(|&k| words[k].1).collect();
        tsv.push_str(&format!("g{}\t{}\t{}\n", i % 6, en.join(" "), es.join(" ")));
    }
    let p = dir.join("pairs.tsv");
    std::fs::write(&p, tsv).unwrap();
    p
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// An SVG file: one whole `<svg>` document (not cut short), as text.
pub fn svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        text.starts_with("<svg") && text.trim_end().ends_with("</svg>") && count(&text, "<svg") == 1,
        "{} is not one SVG document: {text}",
        path.display()
    );
    text
}

/// How many times `needle` occurs in `text`.
pub fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// `a` within `tol` of `b`; false for NaN and infinities.
pub fn close(a: f64, b: f64, tol: f64) -> bool {
    a.is_finite() && b.is_finite() && (a - b).abs() <= tol
}

/// A JSON number that must be there and finite.
pub fn num(v: &serde_json::Value) -> f64 {
    let x = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!(x.is_finite(), "not finite: {v}");
    x
}

/// The characters a corpus file is made of.
pub fn chars_of(path: &Path) -> std::collections::BTreeSet<char> {
    std::fs::read_to_string(path).unwrap().chars().collect()
}

/// What `qkv generate` prints for a character-level model: the prompt, then
/// exactly `n` new characters, each one of `alphabet`, then a newline.
pub fn continues(out: &str, prompt: &str, n: usize, alphabet: &std::collections::BTreeSet<char>) {
    let text = out.strip_suffix('\n').unwrap_or_else(|| panic!("no final newline: {out:?}"));
    let new = text.strip_prefix(prompt).unwrap_or_else(|| panic!("does not start with {prompt:?}: {out:?}"));
    assert_eq!(new.chars().count(), n, "{n} new characters: {out:?}");
    assert!(new.chars().all(|c| alphabet.contains(&c)), "a character the model never saw: {out:?}");
}

/// A character-level language model's `qkv eval --json` on `data` with
/// windows of `window` tokens: one token per character, every full window of
/// the text scored, and perplexity and bits per character what the loss says.
pub fn char_lm_eval(v: &serde_json::Value, data: &Path, window: u64) -> f64 {
    let loss = num(&v["loss"]);
    assert!(loss > 0.0, "{v}");
    let len = std::fs::read_to_string(data).unwrap().chars().count() as u64;
    let (tokens, chars) = (v["tokens"].as_u64().unwrap(), v["chars"].as_u64().unwrap());
    assert_eq!((v["window"].as_u64(), tokens), (Some(window), (len - 1) / window * window), "{v}");
    assert_eq!(chars, tokens, "a character per token: {v}");
    assert_eq!(v["data"].as_str(), data.to_str(), "{v}");
    assert!(close(num(&v["perplexity"]), loss.exp(), 1e-6 * loss.exp()), "{v}");
    assert!(close(num(&v["bits_per_char"]), loss / std::f64::consts::LN_2, 1e-9), "{v}");
    loss
}

/// A language-model run's `report.json` (character-level): the loss of its
/// last evaluation in `metrics.jsonl`, and perplexity and bits per character
/// what that loss says.
pub fn char_lm_report(run: &Path) -> serde_json::Value {
    let report = read_json(&run.join("report.json"));
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let last = text.lines().rfind(|l| l.contains("val_loss")).expect("an evaluation");
    let last: serde_json::Value = serde_json::from_str(last).unwrap();
    let loss = num(&report["val_loss"]);
    assert!(close(loss, num(&last["val_loss"]), 1e-6), "{report} vs {last}");
    assert_eq!(report["steps"], last["step"], "{report}");
    assert!(close(num(&report["perplexity"]), loss.exp(), 1e-6 * loss.exp()), "{report}");
    assert!(close(num(&report["bits_per_char"]), loss / std::f64::consts::LN_2, 1e-9), "{report}");
    report
}
