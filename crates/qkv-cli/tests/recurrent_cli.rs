//! Recurrent language models from the command line: train an LSTM and a
//! GRU, generate from them and evaluate them; configurations that cannot
//! work are refused with the setting named.

mod common;
use common::{corpus, fails_with, ok, qkv, s, scratch, stderr};

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
        assert!(stderr(&o).contains(&kind.to_uppercase()), "{kind}: {}", stderr(&o));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["model"], kind, "{report}");
        let bpc = report["bits_per_char"].as_f64().unwrap();
        assert!(bpc.is_finite() && bpc > 0.0 && bpc < 8.0, "{kind}: {report}");

        let g = qkv(&["generate", "--model", s(&dir), "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
        ok(&g);
        let text = String::from_utf8_lossy(&g.stdout).to_string();
        assert!(text.starts_with("to be") && text.trim_end().chars().count() > "to be".len(), "{kind}: {text:?}");
        // the same seed, the same text
        let again =
            qkv(&["generate", "--model", s(&dir), "--prompt", "to be", "--max-new-tokens", "20", "--seed", "3"]);
        assert_eq!(g.stdout, again.stdout, "{kind}: generation is not reproducible");

        let e = qkv(&["eval", "--model", s(&dir), "--data", s(&data), "--json"]);
        ok(&e);
        let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
        let loss = v["loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0 && v["tokens"].as_u64().unwrap() > 0, "{kind}: {v}");
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
    fails_with(&run(&["--batch-size", "100000"]), &["streams", "--batch-size"]);
    // --hidden is for the recurrent networks only
    let gpt = qkv(&["--threads", "2", "train", "--hidden", "8", "--data", s(&data), "--out-dir", s(&d.join("g"))]);
    fails_with(&gpt, &["--hidden", "not used"]);
}
