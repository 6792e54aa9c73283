//! A Hugging Face `MambaForCausalLM` directory (the test fixture, with a
//! word-level tokenizer of its 37 ids written beside it) generates and is
//! evaluated by the same commands as a GPT; without a tokenizer, the
//! commands say what is missing. `qkv train --model mamba` writes such a
//! directory, and refuses what cannot work.

use std::path::Path;

mod common;
use common::{
    char_lm_eval, char_lm_report, chars_of, close, continues, corpus, fails_with, num, ok, qkv, read_json, s, scratch,
    stderr, stdout,
};

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
    // 2 windows of 128 of the 300 words (not a qkv run: no window of its own); each word a token
    assert_eq!((r["window"].as_u64(), r["tokens"].as_u64()), (Some(128), Some(256)), "{r}");
    // the characters of the scored words (the 2nd to the 257th) and the spaces between them
    let scored: usize = (1..257).map(|i| format!("w{}", 3 + (i * 7) % 34).len()).sum::<usize>() + 255;
    assert_eq!(r["chars"].as_u64(), Some(scored as u64), "{r}");
    let loss = num(&r["loss"]);
    assert!(loss > 0.0 && close(num(&r["perplexity"]), loss.exp(), 1e-6 * loss.exp()), "{r}");
    let bpc = loss * 256.0 / scored as f64 / std::f64::consts::LN_2;
    assert!(close(num(&r["bits_per_char"]), bpc, 1e-9), "{r}");
}

#[test]
fn a_trained_mamba_is_a_mamba_directory_that_generates_and_is_evaluated() {
    let d = scratch("mamba-train-cli");
    let data = corpus(&d);
    let dir = d.join("run");
    #[rustfmt::skip]
    let o = qkv(&["--threads", "2", "train", "--model", "mamba", "--quiet", "--sample-chars", "30", "--n-layer", "2",
        "--n-embd", "16", "--state-size", "4", "--block-size", "16", "--batch-size", "8", "--max-steps", "6",
        "--eval-interval", "3", "--eval-batches", "2", "--data", s(&data), "--out-dir", s(&dir)]);
    ok(&o);
    assert!(stderr(&o).contains("Mamba 2 blocks × 16 wide (E = 32, state N = 4"), "{}", stderr(&o));
    // transformers' own config: the architecture, every size written out
    let config = read_json(&dir.join("config.json"));
    assert_eq!(config["architectures"][0], "MambaForCausalLM", "{config}");
    assert_eq!((config["intermediate_size"].as_u64(), config["time_step_rank"].as_u64()), (Some(32), Some(1)));
    let sizes = ["hidden_size", "num_hidden_layers", "state_size", "vocab_size"].map(|k| config[k].as_u64());
    assert_eq!(sizes, [16, 2, 4, 28].map(Some), "{config}");
    let report = char_lm_report(&dir);
    assert_eq!((report["task"].as_str(), report["steps"].as_u64()), (Some("next-token"), Some(6)), "{report}");
    let bpc = num(&report["bits_per_char"]);
    assert!(bpc > 0.0 && bpc < 8.0, "{report}");
    // the sample it printed: 30 characters of the corpus
    let alphabet = chars_of(&data);
    continues(&stdout(&o), "", 30, &alphabet);

    let generate =
        || qkv(&["generate", "--model", s(&dir), "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
    let g = generate();
    ok(&g);
    continues(&stdout(&g), "to be", 20, &alphabet);
    assert_eq!(g.stdout, generate().stdout, "generation is not reproducible");

    // scored in the windows it was trained on
    let e = qkv(&["eval", "--model", s(&dir), "--data", s(&data), "--json"]);
    ok(&e);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let loss = char_lm_eval(&v, &data, 16);
    assert!(loss < 6.0, "{v}");
}

#[test]
fn mamba_configurations_that_cannot_work_are_refused() {
    let d = scratch("mamba-train-bad");
    let data = corpus(&d);
    let out = d.join("bad");
    let run = |extra: &[&str]| {
        let mut a =
            vec!["--threads", "2", "train", "--model", "mamba", "--quiet", "--data", s(&data), "--out-dir", s(&out)];
        a.extend(extra);
        qkv(&a)
    };
    fails_with(&run(&["--state-size", "0"]), &["state_size", "at least 1"]);
    fails_with(&run(&["--n-embd", "0"]), &["hidden_size", "at least 1"]);
    fails_with(&run(&["--block-size", "0"]), &["block_size", "at least 1"]);
    fails_with(&run(&["--dropout", "0.1"]), &["--dropout", "not used"]);
    fails_with(&run(&["--hidden", "8"]), &["--hidden", "not used"]);
    // --state-size is Mamba's alone
    let gpt = qkv(&["--threads", "2", "train", "--state-size", "8", "--data", s(&data), "--out-dir", s(&out)]);
    fails_with(&gpt, &["--state-size", "not used"]);
}
