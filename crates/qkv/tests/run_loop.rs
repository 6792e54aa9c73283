//! The run loop in-process: a run asked to stop (as Ctrl-C asks) writes a
//! checkpoint of the step it finished, and resuming it ends with exactly the
//! weights of a run that never stopped. The command-line tests do the same
//! with real signals and crashes, for every task.

use std::path::Path;

use qkv::models::gpt::GptConfig;
use qkv::train::next_token::NextTokenSpec;
use qkv::train::run::{Control, Event, Outcome};
use qkv::train::setup::{ResumeChanges, RunSpec, TaskSpec, resume, start};
use qkv::train::{TaskKind, TrainConfig};

fn spec(data: &Path) -> RunSpec {
    let model = GptConfig { n_layer: 1, n_head: 2, n_embd: 16, block_size: 16, dropout: 0.1, ..GptConfig::default() };
    let train = TrainConfig {
        batch_size: 4,
        max_steps: 10,
        eval_interval: Some(4),
        eval_batches: 2,
        warmup_steps: 2,
        ..TrainConfig::for_task(TaskKind::NextToken, false)
    };
    let task = TaskSpec::NextToken(NextTokenSpec { model, data: Some(data.to_path_buf()), tokenizer: None });
    RunSpec { task, train, data_fingerprint: String::new() }
}

fn weights(dir: &Path) -> Vec<(String, Vec<u32>)> {
    let l = qkv::io::safetensors::load(&dir.join("checkpoint.safetensors")).unwrap();
    l.tensors.iter().map(|(k, t)| (k.clone(), t.to_vec().iter().map(|x| x.to_bits()).collect())).collect()
}

#[test]
fn a_run_asked_to_stop_checkpoints_its_step_and_resumes_exactly() {
    let dir = std::env::temp_dir().join(format!("qkv-run-loop-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("corpus.txt");
    std::fs::write(&data, "to be or not to be, that is the question.\n".repeat(300)).unwrap();

    let straight = dir.join("straight");
    let mut run = start(spec(&data), &straight, false).unwrap();
    assert_eq!(run.train(u64::MAX, &Control::default(), &mut |_| {}).unwrap(), Outcome::Reached { step: 10 });

    let stopped = dir.join("stopped");
    let mut run = start(spec(&data), &stopped, false).unwrap();
    let control = Control::default();
    let (mut evaluations, mut checkpoints) = (Vec::new(), Vec::new());
    let outcome = run
        .train(u64::MAX, &control.clone(), &mut |e| match e {
            Event::Step { step: 5, .. } => control.request_stop(),
            Event::Evaluated { step, evaluation } => evaluations.push((step, evaluation.loss)),
            Event::Checkpoint { step } => checkpoints.push(step),
            Event::Step { .. } => {}
        })
        .unwrap();
    assert_eq!(outcome, Outcome::Interrupted { step: 5 });
    assert_eq!(checkpoints, [4, 5], "the evaluation's checkpoint, then the one of the interrupted step");
    assert_eq!(evaluations.len(), 1);
    assert!(evaluations[0].1.is_finite());

    let mut run = resume(&stopped, &ResumeChanges::default()).unwrap();
    assert_eq!(run.trainer.step, 5);
    assert_eq!(run.train(u64::MAX, &Control::default(), &mut |_| {}).unwrap(), Outcome::Reached { step: 10 });
    assert_eq!(weights(&straight), weights(&stopped), "resumed weights differ from the straight run's");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rewrite one entry of the checkpoint's metadata (where the run's state lives).
fn set_metadata(dir: &Path, key: &str, value: &str) {
    let path = dir.join("checkpoint.safetensors");
    let mut l = qkv::io::safetensors::load(&path).unwrap();
    l.metadata.insert(key.into(), value.into());
    let tensors: Vec<(String, qkv_tensor::Tensor)> = l.tensors.into_iter().collect();
    qkv::io::safetensors::save(&path, &tensors, &l.metadata).unwrap();
}

fn resume_error(dir: &Path) -> String {
    match resume(dir, &ResumeChanges::default()) {
        Ok(_) => panic!("{} resumed", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// What `--resume` reads besides the weights — run.json and the state in the
/// checkpoint's metadata — edited into things it cannot use: each is refused
/// with what is wrong, and nothing is allocated for a model the checkpoint
/// cannot hold. (The `resume` fuzz target tries many more.)
#[test]
fn a_resume_refuses_run_files_that_do_not_fit_together() {
    let dir = std::env::temp_dir().join(format!("qkv-run-loop-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("corpus.txt");
    std::fs::write(&data, "to be or not to be, that is the question.\n".repeat(300)).unwrap();
    let run_dir = dir.join("run");
    let mut run = start(spec(&data), &run_dir, false).unwrap();
    run.train(2, &Control::default(), &mut |_| {}).unwrap();
    run.checkpoint().unwrap();
    let fresh = |name: &str| {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).unwrap();
        for f in std::fs::read_dir(&run_dir).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, d.join(f.file_name().unwrap())).unwrap();
        }
        d
    };
    // the untouched copy resumes at the step it was saved at
    assert_eq!(resume(&fresh("copy"), &ResumeChanges::default()).unwrap().trainer.step, 2);

    // run.json asking for a model of 2^33 parameters (n_embd 16 → 32768, 8
    // layers): refused from the checkpoint's size, before anything is built
    let big = fresh("big");
    let text = std::fs::read_to_string(big.join("run.json")).unwrap();
    let mut spec_json: serde_json::Value = serde_json::from_str(&text).unwrap();
    spec_json["model"]["n_embd"] = 32768.into();
    spec_json["model"]["n_layer"] = 8.into();
    std::fs::write(big.join("run.json"), spec_json.to_string()).unwrap();
    let e = resume_error(&big);
    assert!(e.contains("cannot hold them") && e.contains("run.json"), "{e}");

    for (key, value, want) in [
        ("state", "{", "unreadable state"),
        ("state", r#"{"step":2,"tokens_seen":1,"elapsed_s":0,"val_loss":null,"val_accuracy":null,"task":{}}"#, "rng"),
        (
            "state",
            r#"{"step":2,"tokens_seen":1,"elapsed_s":0,"val_loss":null,"val_accuracy":null,"task":{"rng":[1,2,-3,4]}}"#,
            "rng",
        ),
        ("adamw_step", "two", "adamw_step"),
        ("format", "pt", "not a qkv checkpoint"),
    ] {
        let d = fresh(&format!("{key}-{}", want.replace(' ', "-")));
        set_metadata(&d, key, value);
        let e = resume_error(&d);
        assert!(e.contains(want), "{key} = {value}: {e}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
