//! A Hugging Face `MambaForCausalLM` directory (the test fixture, with a
//! word-level tokenizer of its 37 ids written beside it) generates and is
//! evaluated by the same commands as a GPT; without a tokenizer, the
//! commands say what is missing.

use std::path::Path;

mod common;
use common::{fails_with, ok, qkv, s, scratch, stdout};

#[test]
fn a_mamba_directory_generates_and_is_evaluated() {
    let d = scratch("mamba-cli");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../qkv/tests/fixtures/hf/mamba-odd");
    let m = d.join("mamba");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture.join(f), m.join(f)).unwrap();
    }
    // no tokenizer yet: a clear message, not a panic
    fails_with(&qkv(&["generate", "--model", s(&m), "--prompt", "w3"]), &["tokenizer"]);
    let mut vocab = serde_json::Map::new();
    for (i, w) in
        ["<pad>", "<s>", "</s>"].iter().map(|s| s.to_string()).chain((3..37).map(|i| format!("w{i}"))).enumerate()
    {
        vocab.insert(w, i.into());
    }
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<pad>"},
    });
    std::fs::write(m.join("tokenizer.json"), tokenizer.to_string()).unwrap();
    // greedy: the fixture's own greedy continuation of w10 w33 w35 w11 w15 (from transformers' generate)
    let g =
        qkv(&["generate", "--model", s(&m), "--prompt", "w10 w33 w35 w11 w15", "--greedy", "--max-new-tokens", "8"]);
    ok(&g);
    let words: Vec<String> = stdout(&g).split_whitespace().map(str::to_string).collect();
    assert_eq!(
        words,
        ["w10", "w33", "w35", "w11", "w15", "w34", "w34", "w34", "w4", "w4", "w4", "w4", "w4"],
        "{words:?}"
    );
    let data = d.join("text.txt");
    let text: String = (0..300).map(|i| format!("w{} ", 3 + (i * 7) % 34)).collect();
    std::fs::write(&data, text).unwrap();
    let e = qkv(&["eval", "--model", s(&m), "--data", s(&data), "--json"]);
    ok(&e);
    let r: serde_json::Value = serde_json::from_str(&stdout(&e)).unwrap();
    assert!(r["loss"].as_f64().is_some_and(|l| l.is_finite() && l > 0.0) && r["tokens"].as_u64() == Some(256), "{r}");
}
