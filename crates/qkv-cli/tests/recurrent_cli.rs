//! Recurrent language models from the command line: train an LSTM and a
//! GRU, generate from them and evaluate them; configurations that cannot
//! work are refused with the setting named.

mod common;
use common::{
    char_lm_eval, char_lm_report, chars_of, continues, corpus, fails_with, num, ok, qkv, read_json, s, scratch, stderr,
    stdout,
};

fn train(kind: &str, dir: &std::path::Path, data: &std::path::Path) -> std::process::Output {
    #[rustfmt::skip]
    let a = ["--threads", "2", "train", "--model", kind, "--quiet", "--sample-chars", "30", "--n-layer", "1",
        "--n-embd", "8", "--hidden", "16", "--block-size", "16", "--batch-size", "8", "--max-steps", "6",
        "--eval-interval", "3", "--eval-batches", "2", "--data", s(data), "--out-dir", s(dir)];
    qkv(&a)
}

#[test]
fn a_recurrent_run_trains_generates_and_evaluates() {
    let d = scratch("recurrent-cli");
    let data = corpus(&d);
    for kind in ["lstm", "gru", "rnn"] {
        let dir = d.join(kind);
        let o = train(kind, &dir, &data);
        ok(&o);
        // the run describes its network, and its report names the cell
        let cell = kind.to_uppercase();
        let line = format!("qkv train: {cell} 1 layers × 16 state, embedding 8, window 16");
        assert!(stderr(&o).contains(&line), "{kind}: {}", stderr(&o));
        let config = read_json(&dir.join("config.json"));
        let sizes = ["n_layer", "hidden", "n_embd", "block_size", "vocab_size"].map(|k| config[k].as_u64());
        assert_eq!((config["kind"].as_str(), sizes), (Some(kind), [1, 16, 8, 16, 28].map(Some)), "{config}");
        let report = char_lm_report(&dir);
        assert_eq!(report["model"], kind, "{report}");
        assert_eq!(report["steps"], 6, "{report}");
        let bpc = num(&report["bits_per_char"]);
        assert!(bpc > 0.0 && bpc < 8.0, "{kind}: {report}");
        // its sample: 30 characters of the corpus
        let alphabet = chars_of(&data);
        continues(&stdout(&o), "", 30, &alphabet);

        let g = qkv(&["generate", "--model", s(&dir), "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
        ok(&g);
        continues(&stdout(&g), "to be", 20, &alphabet);
        // the same seed, the same text
        let again =
            qkv(&["generate", "--model", s(&dir), "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
        assert_eq!(g.stdout, again.stdout, "{kind}: generation is not reproducible");

        let e = qkv(&["eval", "--model", s(&dir), "--data", s(&data), "--json"]);
        ok(&e);
        let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        char_lm_eval(&v, &data, 16);
    }
    // GPT-only options are refused for a recurrent network
    let f = qkv(&["generate", "--model", s(&d.join("lstm")), "--prompt", "to", "--block-size", "4"]);
    fails_with(&f, &["--block-size", "recurrent"]);
}

#[test]
fn configurations_that_cannot_work_are_refused() {
    let d = scratch("recurrent-cli-bad");
    let data = corpus(&d);
    let base = ["--threads", "2", "train", "--model", "lstm", "--quiet", "--data", s(&data), "--out-dir"];
    let run = |extra: &[&str]| {
        let out = d.join("bad");
        let mut a: Vec<&str> = base.to_vec();
        a.push(s(&out));
        a.extend(extra);
        qkv(&a)
    };
    fails_with(&run(&["--hidden", "0"]), &["hidden", "at least 1"]);
    fails_with(&run(&["--block-size", "0"]), &["block_size", "at least 1"]);
    fails_with(&run(&["--n-head", "2"]), &["--n-head", "not used"]);
    // more streams than the text can fill with a window each (100000 would be refused
    // earlier, as more than one micro-batch)
    fails_with(&run(&["--batch-size", "5000"]), &["5000 streams", "--batch-size"]);
    // --hidden is for the recurrent networks only
    let gpt = qkv(&["--threads", "2", "train", "--hidden", "8", "--data", s(&data), "--out-dir", s(&d.join("g"))]);
    fails_with(&gpt, &["--hidden", "not used"]);
}
