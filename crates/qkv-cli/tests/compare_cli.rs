//! `qkv compare` end to end on a small corpus: every model trains, the
//! report, its JSON and the three charts are written, a recurrent network's
//! and Mamba's memory per sequence does not grow with the context, and bad requests are
//! refused with the reason.

use qkv::io::safetensors::load;

mod common;
use common::{chars_of, close, corpus, count, fails_with, num, ok, qkv, read_json, s, scratch, stdout, svg};

#[test]
fn compare_trains_each_model_and_writes_the_report_and_charts() {
    let d = scratch("compare-cli");
    let data = corpus(&d);
    let out = d.join("cmp");
    #[rustfmt::skip]
    let o = qkv(&["--threads", "2", "compare", "--models", "rnn,gru,mamba", "--budget", "2s", "--contexts", "1,4,64",
        "--data", s(&data), "--out-dir", s(&out)]);
    ok(&o);
    assert_eq!(stdout(&o), format!("{}\n", out.join("report.md").display()), "the report's path");
    let r = read_json(&out.join("report.json"));
    assert_eq!(r["budget_s"].as_f64(), Some(2.0), "{r}");
    let models = r["models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["model"].as_str().unwrap()).collect();
    assert_eq!(names, ["rnn", "gru", "mamba"]);
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    let alphabet = chars_of(&data);
    let mut curve_points = 0;
    for m in models {
        let name = m["model"].as_str().unwrap();
        // each model's run stays, for qkv generate and qkv eval; the report's numbers are its
        let run = out.join(name);
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
        let metrics: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let steps = m["steps"].as_u64().unwrap();
        assert!(steps >= 1 && metrics.last().unwrap()["step"].as_u64() == Some(steps), "{m}");
        assert!(close(num(&m["train_seconds"]), num(&metrics.last().unwrap()["elapsed_s"]), 1e-9), "{m}");
        let mean_speed = metrics.iter().map(|l| num(&l["tokens_per_s"])).sum::<f64>() / metrics.len() as f64;
        assert!(close(num(&m["tokens_per_s"]), mean_speed, 1e-6 * mean_speed) && mean_speed > 0.0, "{m}");
        // the learning curve: (seconds, bits per character) at each evaluation; one token per
        // character (metrics.jsonl prints the loss to f32 precision)
        let want: Vec<(f64, f64)> = metrics
            .iter()
            .filter(|l| l.get("val_loss").is_some())
            .map(|l| (num(&l["elapsed_s"]), num(&l["val_loss"]) / std::f64::consts::LN_2))
            .collect();
        let curve: Vec<(f64, f64)> = m["curve"].as_array().unwrap().iter().map(|p| (num(&p[0]), num(&p[1]))).collect();
        assert!(!curve.is_empty() && curve.len() == want.len(), "{m}");
        for (got, want) in curve.iter().zip(&want) {
            assert!(close(got.0, want.0, 1e-9) && close(got.1, want.1, 1e-6), "{name}: {got:?} vs {want:?}");
        }
        curve_points += curve.len();
        let bpc = num(&m["final_bits_per_char"]);
        assert!(bpc == curve[curve.len() - 1].1 && bpc > 0.0 && bpc < 8.0, "{m}");
        // the parameters are the weights the run saved
        let weights = load(&run.join("model.safetensors")).unwrap();
        let count_params: usize = weights.tensors.values().map(|t| t.shape().iter().product::<usize>()).sum();
        assert_eq!(m["parameters"].as_u64(), Some(count_params as u64), "{m}");
        // a recurrent network and Mamba keep the same state at any context: its size in bytes
        let config = read_json(&run.join("config.json"));
        let size = |k: &str| config[k].as_u64().unwrap_or_else(|| panic!("{k} in {config}"));
        let state = match name {
            "mamba" => {
                size("num_hidden_layers") * size("intermediate_size") * (size("state_size") + size("conv_kernel") - 1)
            }
            _ => size("n_layer") * size("hidden"),
        };
        let mem: Vec<(u64, u64)> =
            m["memory"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap())).collect();
        assert_eq!(mem, [(1, 4 * state), (4, 4 * state), (64, 4 * state)], "{name}: 4-byte floats of its state");
        let per: Vec<(u64, f64)> =
            m["per_token"].as_array().unwrap().iter().map(|p| (p[0].as_u64().unwrap(), num(&p[1]))).collect();
        assert_eq!(per.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 4, 64], "{m}");
        assert!(per.iter().all(|p| p.1 > 0.0 && p.1 < 1.0), "{m}");
        assert_eq!(m["per_token_uncached"], serde_json::json!([]), "only a GPT has a KV cache to do without");
        // the sample is text the model can write: some characters, each one of the corpus's
        let sample = m["sample"].as_str().unwrap();
        assert!(sample.chars().count() >= 10 && sample.chars().all(|c| alphabet.contains(&c)), "{sample:?}");
        // the report's row: name, description, parameters, steps, bits per character
        let row = format!(
            "| {name} ({}) | {:.2} M | {steps} | {:.0} | {bpc:.3} |",
            m["describe"].as_str().unwrap(),
            count_params as f64 / 1e6,
            num(&m["tokens_per_s"])
        );
        assert!(md.contains(&row), "no row {row:?} in {md}");
        assert!(md.contains(&format!("### {name}\n\n```text\n{}\n```", sample.trim())), "{md}");
    }
    // the charts: a marker per point, every model named
    for (f, points) in
        [("bits_per_char.svg", curve_points), ("time_per_token.svg", 3 * 3), ("memory_per_sequence.svg", 3 * 3)]
    {
        let picture = svg(&out.join(f));
        assert_eq!(count(&picture, "<circle"), points, "{f}");
        for name in ["rnn", "gru", "mamba"] {
            assert!(picture.contains(&format!("\n{name}\n")), "{f}: no {name}");
        }
        assert!(md.contains(&format!("]({f})")), "report.md shows {f}");
    }
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
