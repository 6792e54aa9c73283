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
