//! What every training run promises, checked for each task (GPT, masked
//! LM, text classifier, ViT, translation, LSTM and GRU language models):
//!
//! - the same command gives the same weights, bit for bit;
//! - killed at any moment — during a step, an evaluation, a checkpoint write
//!   or a metrics line — `qkv train --resume` ends with exactly the weights
//!   of a run that was never stopped (a torn checkpoint is never resumed from,
//!   a torn metrics line is dropped with a note);
//! - Ctrl-C and SIGTERM finish the step, write a checkpoint, print the
//!   resume command and exit with 130; a second Ctrl-C exits at once;
//! - an absurd learning rate stops the run with one line naming the step,
//!   and no checkpoint ever holds a weight that is not finite;
//! - a full disk is a clear error that leaves the previous checkpoint intact;
//! - `metrics.jsonl` has the same fields for every task, each meaning what it says.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use qkv::io::safetensors::load;

mod common;
use common::{
    char_lm_report, close, corpus, count, fails_with, num, ok, pictures, qkv, qkv_env, read_json, reviews, s, scratch,
    stderr, stdout, svg, toy_pairs, vocab,
};

/// One task's command line (without --out-dir), with its data made in `dir`.
struct Case {
    args: Vec<String>,
    accuracy: bool,
}

fn case(name: &'static str, dir: &Path) -> Case {
    let common =
        ["--threads", "2", "train", "--quiet", "--sample-chars", "0", "--max-steps", "12", "--eval-interval", "4"];
    let mut args: Vec<String> = common.iter().map(|a| a.to_string()).collect();
    let extra: Vec<String> = match name {
        "gpt" => {
            let data = corpus(dir);
            #[rustfmt::skip]
            let a = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
                "--eval-batches", "2", "--warmup-steps", "2", "--dropout", "0.1", "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "mlm" => {
            let data = corpus(dir);
            #[rustfmt::skip]
            let a = ["--model", "bert", "--task", "mlm", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                "--max-len", "16", "--batch-size", "8", "--eval-batches", "2", "--tokenizer", &vocab(), "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "classify" => {
            let data = dir.join("reviews.csv");
            reviews(&data, None);
            #[rustfmt::skip]
            let a = ["--model", "bert", "--task", "classify", "--n-layer", "1", "--n-head", "2", "--n-embd", "32",
                "--max-len", "16", "--batch-size", "32", "--tokenizer", &vocab(), "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "vit" => {
            let data = dir.join("pictures");
            pictures(&data);
            #[rustfmt::skip]
            let a = ["--model", "vit", "--image-size", "12", "--patch-size", "4", "--channels", "1", "--n-layer", "1",
                "--n-head", "2", "--n-embd", "16", "--batch-size", "8", "--dropout", "0.1", "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "seq2seq" => {
            let data = toy_pairs(dir);
            #[rustfmt::skip]
            let a = ["--model", "seq2seq", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--max-tokens", "64",
                "--max-len", "16", "--vocab-size", "60", "--group-column", "group", "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "lstm" | "gru" => {
            let data = corpus(dir);
            // 256 streams of 116 tokens: 7 windows of 16, so the 12 steps
            // wrap around the streams (and reset the state) once
            #[rustfmt::skip]
            let a = ["--model", name, "--n-layer", "2", "--n-embd", "8", "--hidden", "12", "--block-size", "16",
                "--batch-size", "256", "--eval-batches", "2", "--warmup-steps", "2", "--dropout", "0.1", "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        "mamba" => {
            let data = corpus(dir);
            #[rustfmt::skip]
            let a = ["--model", "mamba", "--n-layer", "2", "--n-embd", "16", "--state-size", "4", "--block-size", "16",
                "--batch-size", "8", "--eval-batches", "2", "--warmup-steps", "2", "--data", s(&data)];
            a.iter().map(|x| x.to_string()).collect()
        }
        _ => unreachable!(),
    };
    args.extend(extra);
    Case { args, accuracy: !matches!(name, "gpt" | "seq2seq" | "lstm" | "gru" | "mamba") }
}

impl Case {
    /// The same case with `flag` set to `value` instead.
    fn with(mut self, flag: &str, value: &str) -> Case {
        let at = self.args.iter().position(|a| a == flag).expect("the case has the flag");
        self.args[at + 1] = value.to_string();
        self
    }

    fn command(&self, out: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = self.args.clone();
        a.extend(["--out-dir".to_string(), s(out).to_string()]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    }

    fn train(&self, out: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let a = self.command(out, extra);
        qkv_env(&a.iter().map(String::as_str).collect::<Vec<_>>(), env)
    }
}

fn resume(dir: &Path) -> Output {
    qkv(&["--threads", "2", "train", "--resume", s(dir), "--quiet", "--sample-chars", "0"])
}

/// Every tensor of both files, bit for bit (and the same step).
fn same_tensors(a: &Path, b: &Path, what: &str) {
    let (x, y) = (load(a).unwrap(), load(b).unwrap());
    assert_eq!(x.metadata.get("step"), y.metadata.get("step"), "{what}: step");
    assert_eq!(x.tensors.len(), y.tensors.len(), "{what}: tensor count");
    for (name, t) in &x.tensors {
        let (u, v) = (t.to_vec(), y.tensors[name].to_vec());
        let same = u.iter().zip(&v).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same && u.len() == v.len(), "{what}: {name} differs");
    }
}

/// The end of run `b` is bit-identical to the end of run `a`.
fn same_run(a: &Path, b: &Path, what: &str) {
    let bytes = |d: &Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert!(bytes(a) == bytes(b), "{what}: model.safetensors differs");
    same_tensors(&a.join("checkpoint.safetensors"), &b.join("checkpoint.safetensors"), what);
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn crashed(o: &Output, what: &str) {
    assert!(!o.status.success(), "{what}: the run should have been killed: {}", stderr(o));
    assert!(stderr(o).contains("QKV_CRASH_AT: aborting"), "{what}: did not reach its crash point: {}", stderr(o));
}

/// Two straight runs agree; each crash point, resumed, ends where they did.
fn kill_and_resume(name: &'static str) {
    let d = scratch(&format!("runs-{name}"));
    let c = case(name, &d);
    let (one, two) = (d.join("one"), d.join("two"));
    let first = c.train(&one, &[], &[]);
    ok(&first);
    ok(&c.train(&two, &[], &[]));
    same_run(&one, &two, &format!("{name}: two straight runs"));

    // the same fields in every task's metrics; classifiers add accuracy
    let m = metrics(&one);
    assert_eq!(m.len(), 12);
    let mut elapsed = 0.0;
    for (i, line) in m.iter().enumerate() {
        assert_eq!(line["step"].as_u64(), Some(i as u64 + 1), "{name}: one line per step, in order: {line}");
        for k in ["train_loss", "lr", "tokens_per_s"] {
            assert!(num(&line[k]) > 0.0, "{name}: {k} should be positive: {line}");
        }
        assert!(num(&line["grad_norm"]) >= 0.0, "{name}: {line}");
        let t = num(&line["elapsed_s"]);
        assert!(t >= elapsed, "{name}: elapsed_s goes back: {line}");
        elapsed = t;
    }
    let evals: Vec<&serde_json::Value> = m.iter().filter(|l| l.get("val_loss").is_some()).collect();
    assert_eq!(evals.iter().map(|l| l["step"].as_u64().unwrap()).collect::<Vec<_>>(), [4, 8, 12], "{name}");
    for e in &evals {
        let loss = e["val_loss"].as_f64().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{name}: {e}");
        match e.get("val_accuracy").and_then(|a| a.as_f64()) {
            Some(acc) => {
                assert!(c.accuracy && (0.0..=1.0).contains(&acc), "{name}: {e}");
                assert!((loss - (1.0 - acc)).abs() > 1e-6, "{name}: val_loss must be a loss, not an error rate: {e}");
            }
            None => assert!(!c.accuracy, "{name}: no val_accuracy: {e}"),
        }
    }
    report_agrees(name, &one, &m, &first);
    // the loss curve: a marker for each of the 3 evaluations
    assert_eq!(count(&svg(&one.join("loss.svg")), "<circle"), 3, "{name}: loss.svg");

    // killed at every kind of moment, then resumed
    for point in ["step:7", "eval:2", "checkpoint:2", "metrics:6"] {
        let run = d.join(point.replace(':', "-"));
        crashed(&c.train(&run, &[], &[("QKV_CRASH_AT", point)]), &format!("{name} {point}"));
        let r = resume(&run);
        ok(&r);
        assert!(stderr(&r).contains("at step 4"), "{name} {point}: resumed from {}", stderr(&r));
        if point.starts_with("metrics") {
            assert!(stderr(&r).contains("torn last line"), "{name}: no note of the torn line: {}", stderr(&r));
        }
        same_run(&one, &run, &format!("{name} killed at {point}, resumed"));
        // one metrics line per step, none lost or repeated, the numbers of the straight run
        let again = metrics(&run);
        assert_eq!(again.len(), 12, "{name} {point}: one metrics line per step");
        for (x, y) in m.iter().zip(&again) {
            for k in ["step", "train_loss", "lr", "grad_norm", "val_loss", "val_accuracy"] {
                assert_eq!(x.get(k), y.get(k), "{name} {point}: {k} differs from the straight run: {x} vs {y}");
            }
        }
        let stray = std::fs::read_dir(&run)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"));
        assert_eq!(stray.count(), 0, "{name} {point}: a crashed write's temporary file is left behind");
    }
    // the very first checkpoint torn: nothing to resume, and the message says so
    let first = d.join("first");
    crashed(&c.train(&first, &[], &[("QKV_CRASH_AT", "checkpoint:1")]), &format!("{name} checkpoint:1"));
    fails_with(&resume(&first), &["no checkpoint yet", "--force"]);
    ok(&c.train(&first, &["--force"], &[]));
    same_run(&one, &first, &format!("{name}: started over"));
}

/// The run's `report.json` (and, for the tasks that print it, standard
/// output) agrees with its metrics: the last evaluation's numbers, the step,
/// the training time; each task's own fields in their ranges.
fn report_agrees(name: &str, dir: &Path, m: &[serde_json::Value], out: &Output) {
    let report = read_json(&dir.join("report.json"));
    let last = &m[m.len() - 1];
    assert_eq!(report["steps"].as_u64(), Some(12), "{name}: {report}");
    assert!(close(num(&report["train_seconds"]), num(&last["elapsed_s"]), 1e-6), "{name}: {report} vs {last}");
    let val_loss = num(&last["val_loss"]);
    match name {
        "gpt" | "lstm" | "gru" | "mamba" => {
            char_lm_report(dir);
            assert_eq!(report["task"], "next-token", "{report}");
            if name != "gpt" && name != "mamba" {
                assert_eq!(report["model"], name, "{report}");
            }
            assert!(out.stdout.is_empty(), "{name}: no sample asked for: {}", stdout(out));
            return;
        }
        "classify" => {
            assert_eq!(report["task"], "text-classification", "{report}");
            assert!(close(num(&report["test_loss"]), val_loss, 1e-6), "{report} vs {last}");
            assert!(close(num(&report["accuracy"]), num(&last["val_accuracy"]), 1e-12), "{report} vs {last}");
            let (train, test) = (report["train"].as_u64().unwrap(), report["test"].as_u64().unwrap());
            let kept = report["rows"].as_u64().unwrap() - report["duplicates_dropped"].as_u64().unwrap();
            assert!(train + test == kept && test > 0 && kept == 240, "{name}: every row in one split: {report}");
            assert_eq!(report["labels"], serde_json::json!(["neg", "pos"]), "{report}");
            let f1: Vec<f64> = report["per_class_f1"].as_array().unwrap().iter().map(num).collect();
            assert!(f1.len() == 2 && f1.iter().all(|f| (0.0..=1.0).contains(f)), "{report}");
            assert!(close(num(&report["macro_f1"]), (f1[0] + f1[1]) / 2.0, 1e-9), "{report}");
            for k in ["accuracy", "macro_f1"] {
                assert!((0.0..=1.0).contains(&num(&report["majority_baseline"][k])), "{report}");
            }
        }
        "vit" => {
            assert_eq!(report["task"], "image-classification", "{report}");
            assert!(close(num(&report["test_loss"]), val_loss, 1e-6), "{report} vs {last}");
            assert!(close(num(&report["accuracy"]), num(&last["val_accuracy"]), 1e-12), "{report} vs {last}");
            assert!((0.0..=1.0).contains(&num(&report["macro_f1"])), "{report}");
            // every 10th of the 30 pictures of each of the 2 classes
            assert_eq!(report["test_images"].as_u64(), Some(6), "{report}");
        }
        "mlm" => {
            assert_eq!(report["task"], "masked-lm", "{report}");
            let t = &report["test"];
            let masked = t["masked"].as_u64().unwrap() as f64;
            assert!(masked > 0.0 && num(&t["loss"]) > 0.0, "{report}");
            for k in ["accuracy", "unigram_accuracy"] {
                let hits = num(&t[k]) * masked;
                assert!(hits >= 0.0 && hits <= masked && close(hits, hits.round(), 1e-6), "{k}: {report}");
            }
        }
        "seq2seq" => {
            assert_eq!(report["task"], "translation", "{report}");
            assert!(close(num(&report["test_loss"]), val_loss, 1e-6), "{report} vs {last}");
            // one whole group of the six held out: 50 of the 300 pairs
            let n = report["test_pairs"].as_u64().unwrap();
            assert_eq!(n, 50, "{report}");
            assert_eq!(report["samples"].as_array().unwrap().len() as u64, n.min(10), "{report}");
            for k in ["bleu", "chrf"] {
                assert!((0.0..=100.0).contains(&num(&report[k])), "{report}");
                assert!((0.0..=100.0).contains(&num(&report["copy_source_baseline"][k])), "{report}");
            }
            assert!(close(num(&report["bleu"]), num(&report["bleu_detail"]["score"]), 1e-12), "{report}");
        }
        _ => unreachable!(),
    }
    // the tasks without a sample print their report
    let printed: serde_json::Value = serde_json::from_str(stdout(out).trim()).expect("the report on standard output");
    assert_eq!(printed, report, "{name}: standard output and report.json differ");
}

#[test]
fn gpt_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("gpt");
}

#[test]
fn mlm_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("mlm");
}

#[test]
fn classifier_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("classify");
}

#[test]
fn vit_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("vit");
}

#[test]
fn translation_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("seq2seq");
}

#[test]
fn lstm_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    // the carried state is part of the checkpoint: a resume that lost it would differ
    kill_and_resume("lstm");
}

#[test]
fn gru_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("gru");
}

#[test]
fn mamba_runs_are_deterministic_and_resume_exactly_after_a_kill() {
    kill_and_resume("mamba");
}

/// A GPT run long enough to be stopped from outside.
fn long_gpt(dir: &Path, out: &Path, steps: &str) -> Vec<String> {
    let data = corpus(dir);
    #[rustfmt::skip]
    let a = ["--threads", "2", "train", "--quiet", "--sample-chars", "0", "--n-layer", "2", "--n-head", "2",
        "--n-embd", "32", "--block-size", "32", "--batch-size", "8", "--eval-batches", "1", "--max-steps", steps,
        "--eval-interval", "25", "--data", s(&data), "--out-dir", s(out)];
    a.iter().map(|x| x.to_string()).collect()
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("qkv starts")
}

/// Wait until the run has logged `lines` steps.
fn wait_for_steps(run: &Path, lines: usize) {
    let t0 = Instant::now();
    while std::fs::read_to_string(run.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < lines {
        assert!(t0.elapsed() < Duration::from_secs(120), "the run never reached step {lines}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &std::process::Child, sig: &str) {
    let status = Command::new("sh").args(["-c", &format!("kill -{sig} {}", child.id())]).status().unwrap();
    assert!(status.success(), "kill -{sig}");
}

fn finish(child: std::process::Child) -> Output {
    child.wait_with_output().expect("qkv ends")
}

#[test]
fn ctrl_c_and_sigterm_checkpoint_the_step_and_kill_9_loses_nothing_but_time() {
    let d = scratch("signals");
    let straight = d.join("straight");
    ok(&qkv(&long_gpt(&d, &straight, "200").iter().map(String::as_str).collect::<Vec<_>>()));
    for sig in ["INT", "TERM"] {
        let run = d.join(format!("sig-{sig}"));
        let child = spawn(&long_gpt(&d, &run, "200"));
        wait_for_steps(&run, 30);
        signal(&child, sig);
        let out = finish(child);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(130), "SIG{sig}: exit status 130: {err}");
        assert!(err.contains(&format!("qkv train --resume {}", run.display())), "SIG{sig}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // the checkpoint is of the last step logged
        let step: u64 = load(&run.join("checkpoint.safetensors")).unwrap().metadata["step"].parse().unwrap();
        assert_eq!(metrics(&run).last().unwrap()["step"].as_u64().unwrap(), step, "SIG{sig}");
        assert!((30..200).contains(&step), "SIG{sig}: stopped at {step}");
        ok(&resume(&run));
        same_run(&straight, &run, &format!("SIG{sig}, resumed"));
    }
    // a second Ctrl-C exits at once; the last complete checkpoint stays usable
    let run = d.join("twice");
    let child = spawn(&long_gpt(&d, &run, "200"));
    wait_for_steps(&run, 30);
    signal(&child, "INT");
    signal(&child, "INT");
    let out = finish(child);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    ok(&resume(&run));
    same_run(&straight, &run, "two Ctrl-C, resumed");
    // kill -9 at moments nobody chose
    for (i, wait) in [35usize, 60, 95].into_iter().enumerate() {
        let run = d.join(format!("kill9-{i}"));
        let mut child = spawn(&long_gpt(&d, &run, "200"));
        wait_for_steps(&run, wait);
        std::thread::sleep(Duration::from_millis(7 * i as u64));
        child.kill().unwrap(); // SIGKILL
        let _ = finish(child);
        ok(&resume(&run));
        same_run(&straight, &run, &format!("kill -9 after step {wait}, resumed"));
    }
}

#[test]
fn an_absurd_learning_rate_stops_every_task_before_a_non_finite_weight_is_saved() {
    for name in ["gpt", "mlm", "classify", "vit", "seq2seq"] {
        let d = scratch(&format!("diverge-{name}"));
        let c = case(name, &d).with("--eval-interval", "1");
        let run = d.join("run");
        let o = c.train(&run, &["--lr", "1e30"], &[]);
        fails_with(&o, &["training diverged at step", "--lr"]);
        let err = stderr(&o);
        assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1, "{name}: one line: {err}");
        // whatever checkpoint exists holds finite numbers only, and resumes
        if run.join("checkpoint.safetensors").exists() {
            let ck = load(&run.join("checkpoint.safetensors")).unwrap();
            for (k, t) in &ck.tensors {
                assert!(t.to_vec().iter().all(|x| x.is_finite()), "{name}: {k} is not finite in the checkpoint");
            }
        }
    }
}

/// `bash -c` with a file-size limit (in KiB): writes past it fail with
/// "File too large", as on a full disk (SIGXFSZ ignored, so it is an error, not a kill).
fn with_file_limit(kib: usize, args: &[String]) -> Output {
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let script = format!("trap '' XFSZ; ulimit -f {kib}; exec '{}' {}", env!("CARGO_BIN_EXE_qkv"), quoted.join(" "));
    Command::new("bash").args(["-c", &script]).output().expect("bash runs")
}

#[test]
fn a_full_disk_or_an_unwritable_directory_leaves_the_last_checkpoint_resumable() {
    let d = scratch("storage");
    let c = case("gpt", &d);
    let straight = d.join("straight");
    ok(&c.train(&straight, &[], &[]));
    let run = d.join("run");
    ok(&c.train(&run, &["--stop-at", "4"], &[]));
    let before = std::fs::read(run.join("checkpoint.safetensors")).unwrap();
    // the checkpoint of step 8 does not fit
    let args: Vec<String> =
        ["--threads", "2", "train", "--resume", s(&run), "--quiet", "--sample-chars", "0"].map(String::from).to_vec();
    let o = with_file_limit(24, &args);
    fails_with(&o, &["checkpoint", "previous checkpoint is intact"]);
    assert!(before.len() > 24 * 1024, "the test needs a checkpoint larger than the limit");
    assert_eq!(std::fs::read(run.join("checkpoint.safetensors")).unwrap(), before, "the last checkpoint is untouched");
    ok(&resume(&run));
    same_run(&straight, &run, "resumed after a full disk");

    // a run directory that cannot be made
    let file = d.join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    fails_with(&c.train(&file.join("run"), &[], &[]), &[s(&file.join("run")), "Not a directory"]);

    // a read-only run directory (only where permissions bind: not for root)
    let ro = d.join("ro");
    ok(&c.train(&ro, &["--stop-at", "4"], &[]));
    set_mode(&ro, 0o555);
    let probe = std::fs::write(ro.join("probe"), b"x");
    if probe.is_err() {
        let o = resume(&ro);
        fails_with(&o, &[s(&ro)]);
        set_mode(&ro, 0o755);
        ok(&resume(&ro));
        same_run(&straight, &ro, "resumed after a read-only directory");
    } else {
        eprintln!("running as root: a read-only directory does not stop writes; the file-size limit above stands in");
        set_mode(&ro, 0o755);
    }
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}
