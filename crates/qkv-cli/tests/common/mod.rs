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

/// A toy translation task: sentences of a small English vocabulary and
/// their word-by-word "Spanish", 300 pairs in 6 groups, as a TSV in `dir`.
pub fn toy_pairs(dir: &Path) -> PathBuf {
    let words = [
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
