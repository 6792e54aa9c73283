//! `qkv compare` end to end on a small corpus: every model trains, the
//! report, its JSON and the three charts are written, a recurrent network's
//! and Mamba's memory per sequence does not grow with the context, and bad requests are
//! refused with the reason.

mod common;
use common::{corpus, fails_with, ok, qkv, s, scratch};

#[test]
fn compare_trains_each_model_and_writes_the_report_and_charts() {
    let d = scratch("compare-cli");
    let data = corpus(&d);
    let out = d.join("cmp");
    #[rustfmt::skip]
    let o = qkv(&["--threads", "2", "compare", "--models", "rnn,gru,mamba", "--budget", "2s", "--contexts", "1,4,64",
        "--data", s(&data), "--out-dir", s(&out)]);
    ok(&o);
    for f in ["report.md", "report.json", "bits_per_char.svg", "time_per_token.svg", "memory_per_sequence.svg"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let models = r["models"].as_array().unwrap();
    assert_eq!(models.len(), 3);
    for m in models {
        assert!(m["steps"].as_u64().unwrap() >= 1, "{m}");
        let bpc = m["final_bits_per_char"].as_f64().unwrap();
        assert!(bpc.is_finite() && bpc > 0.0, "{m}");
        // a recurrent network and Mamba keep the same state at any context
        let mem: Vec<u64> = m["memory"].as_array().unwrap().iter().map(|p| p[1].as_u64().unwrap()).collect();
        assert!(mem.len() == 3 && mem.iter().all(|&b| b == mem[0] && b > 0), "{m}");
        let per: Vec<f64> = m["per_token"].as_array().unwrap().iter().map(|p| p[1].as_f64().unwrap()).collect();
        assert!(per.iter().all(|t| t.is_finite() && *t > 0.0), "{m}");
        // the sample is text the model can write: some characters, each one of the corpus's
        let sample = m["sample"].as_str().unwrap();
        let corpus_text = std::fs::read_to_string(&data).unwrap();
        assert!(sample.chars().count() >= 10 && sample.chars().all(|c| corpus_text.contains(c)), "{sample:?}");
        // each model's run stays, for qkv generate and qkv eval
        assert!(out.join(m["model"].as_str().unwrap()).join("model.safetensors").exists());
    }
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| rnn") && md.contains("| gru") && md.contains("| mamba"), "{md}");
    assert!(md.contains("time_per_token.svg"), "{md}");
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let d = scratch("compare-cli-bad");
    let data = corpus(&d);
    let run = |extra: &[&str]| {
        let mut a = vec!["compare", "--data", s(&data), "--out-dir", s(&d)];
        a.extend(extra);
        qkv(&a)
    };
    fails_with(&run(&["--models", "gpt,transformer-xl"]), &["transformer-xl", "gpt, rnn, lstm, gru, mamba"]);
    fails_with(&run(&["--budget", "ten minutes"]), &["budget"]);
    fails_with(&run(&["--budget", "0s"]), &["budget"]);
    fails_with(&run(&["--contexts", "0,8"]), &["--contexts"]);
}
