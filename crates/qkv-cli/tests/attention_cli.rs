//! `qkv attention` end to end: the maps it prints are the library's, each
//! row a distribution with the causal zeros where a GPT may not look; SVG
//! and PNG pictures; long text cut with a note; bad requests refused.

use qkv::attention_maps;
use qkv::models::load::open;

mod common;
use common::server::tiny_gpt;
use common::{count, fails_with, ok, qkv, s, stderr, stdout, svg};

/// Every head's rows as numbers: `[layer][head][query][key]`.
fn weights(maps: &serde_json::Value) -> Vec<Vec<Vec<Vec<f64>>>> {
    let num = |v: &serde_json::Value| v.as_f64().expect("a number");
    maps["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["heads"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    h["weights"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_array().unwrap().iter().map(num).collect())
                        .collect()
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_gpt_draws_its_causal_attention_and_prints_the_library_numbers() {
    let run = tiny_gpt("attention-gpt");
    let d = run.parent().unwrap().to_path_buf();
    let svg_path = d.join("maps.svg");
    let text = "line 7: to be";
    let a = qkv(&["attention", "--model", s(&run), "--text", text, "-o", s(&svg_path), "--json"]);
    ok(&a);
    let picture = svg(&svg_path);
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    assert_eq!(maps["kind"], "causal self-attention");
    let t = text.chars().count(); // the default tokenizer reads characters
    assert_eq!(maps["queries"].as_array().unwrap().len(), t);
    // every layer and head drawn: a panel each, of t × t cells (and the background)
    for (l, h) in [(1, 1), (1, 2), (2, 1), (2, 2)] {
        assert_eq!(count(&picture, &format!("layer {l} · head {h}")), 1, "the panel of layer {l} head {h}");
    }
    assert_eq!(count(&picture, "<rect"), 1 + 2 * 2 * t * t, "a cell for every weight");
    let labels: Vec<String> = text.chars().map(|c| if c == ' ' { "␣".into() } else { c.to_string() }).collect();
    assert_eq!(maps["queries"], serde_json::json!(labels), "one token per character, each labelled");
    assert_eq!(maps["queries"][4], "␣", "a space is labelled");
    let w = weights(&maps);
    assert_eq!((w.len(), w[0].len()), (2, 2), "2 layers × 2 heads");
    // the same numbers as the library computes, to printing precision
    let lib = attention_maps::of_text(&open(&run).unwrap(), text).unwrap();
    for (l, layer) in w.iter().enumerate() {
        for (h, rows) in layer.iter().enumerate() {
            let want = lib.map(l, h);
            for (i, row) in rows.iter().enumerate() {
                assert_eq!(row.len(), t);
                let sum: f64 = row.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "layer {l} head {h} row {i} sums to {sum}");
                for (j, &x) in row.iter().enumerate() {
                    assert!(
                        (x - want[i][j] as f64).abs() < 1e-6,
                        "layer {l} head {h} [{i}][{j}]: {x} vs {}",
                        want[i][j]
                    );
                    if j > i {
                        assert_eq!(x, 0.0, "token {i} sees the later token {j}");
                    }
                }
                assert!(row[..=i].iter().all(|&x| x > 0.0), "token {i} gives every earlier token some weight");
            }
        }
    }
    // one layer and head, as a PNG
    let png = d.join("one.png");
    ok(&qkv(&["attention", "--model", s(&run), "--text", text, "--layer", "2", "--head", "1", "-o", s(&png)]));
    let bytes = std::fs::read(&png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG file");
    let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
    // one panel of 12-pixel cells with an 8-pixel margin on each side
    assert_eq!((img.width(), img.height()), (12 * t as u32 + 16, 12 * t as u32 + 16));
    // each cell shaded by its weight (layer 2, head 1): white where the token may not look,
    // blue elsewhere, darker for more weight
    let want = lib.map(1, 0);
    let red = |i: usize, j: usize| {
        let p = img.get_pixel(8 + 12 * j as u32 + 6, 8 + 12 * i as u32 + 6);
        assert_eq!(p[2], 255, "cells are white to blue");
        p[0]
    };
    assert_eq!(want.len(), t);
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            assert_eq!(red(i, j) == 255, j > i, "cell [{i}][{j}] of weight {w}");
            for (k, &other) in row.iter().enumerate().take(i + 1) {
                if w > other + 0.01 {
                    assert!(red(i, j) < red(i, k), "row {i}: the weight of {j} is larger than that of {k}");
                }
            }
        }
    }
    // longer than the context: cut to its 16 tokens, with a note
    let long = "to be ".repeat(7);
    assert_eq!(long.len(), 42);
    let a = qkv(&["attention", "--model", s(&run), "--text", &long, "-o", s(&svg_path), "--json"]);
    ok(&a);
    assert!(stderr(&a).contains("42 tokens") && stderr(&a).contains("kept the first 16"), "{}", stderr(&a));
    let maps: serde_json::Value = serde_json::from_str(&stdout(&a)).unwrap();
    let first: Vec<String> = long.chars().take(16).map(|c| if c == ' ' { "␣".into() } else { c.to_string() }).collect();
    assert_eq!(maps["queries"], serde_json::json!(first), "the first 16 characters");
    assert_eq!(count(&svg(&svg_path), "<rect"), 1 + 2 * 2 * 16 * 16, "the picture of the 16 kept");
    // bad requests
    fails_with(&qkv(&["attention", "--model", s(&run), "--text", "to be", "--head", "3"]), &["--head 3", "1 to 2"]);
    fails_with(&qkv(&["attention", "--model", s(&run), "--source", "x"]), &["needs --text"]);
    fails_with(
        &qkv(&["attention", "--model", s(&run), "--text", "to be", "-o", s(&d.join("m.gif"))]),
        &[".gif", ".svg or .png"],
    );
    fails_with(&qkv(&["attention", "--model", s(&d), "--text", "x"]), &["not a model directory"]);
}
