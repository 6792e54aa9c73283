//! `qkv train --resume`: what it reads besides the weights — `run.json` and
//! the run's state in the checkpoint's metadata (`state`, `adamw_step`) — in
//! a real run directory (a GPT and an LSTM, whose state carries the recurrent
//! state's numbers), then one training step from the restored state.
//!
//! Input: one byte choosing the run, then up to three parts (`run.json`,
//! `state`, `adamw_step`); an empty part keeps the real run's.
#![no_main]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use qkv::train::run::Control;
use qkv::train::setup::{ResumeChanges, RunSpec, resume, start};

#[path = "common.rs"]
mod common;

/// The runs' corpus, at a fixed path so that the seeds' run.json name it
/// (a small one: reading the bundled Shakespeare would take most of each run).
const CORPUS: &str = "/tmp/qkv-fuzz-resume-corpus.txt";

/// The two runs (`qkv train --data /tmp/qkv-fuzz-resume-corpus.txt
/// --max-steps 2 --batch-size 2 --n-layer 1` with `--n-embd 16 --n-head 2
/// --block-size 16`, or `--model lstm --n-embd 8 --hidden 8 --block-size 8`).
const RUNS: [&str; 2] = [
    r#"{"task":"next-token","model":{"vocab_size":27,"block_size":16,"n_layer":1,"n_head":2,"n_embd":16},
        "data":"/tmp/qkv-fuzz-resume-corpus.txt","tokenizer":null,
        "train":{"batch_size":2,"max_steps":2,"eval_interval":2,"eval_batches":1}}"#,
    r#"{"task":"recurrent-lm","model":{"kind":"lstm","vocab_size":27,"n_embd":8,"hidden":8,"n_layer":1,"block_size":8},
        "data":"/tmp/qkv-fuzz-resume-corpus.txt","tokenizer":null,
        "train":{"batch_size":2,"max_steps":2,"eval_interval":2,"eval_batches":1}}"#,
];

/// The corpus: 26 letters and the space, 8 KB.
fn corpus() -> String {
    "the quick brown fox jumps over the lazy dog ".repeat(186)
}

/// Each run trained two steps and checkpointed, once per process.
fn templates() -> &'static [PathBuf; 2] {
    static T: OnceLock<[PathBuf; 2]> = OnceLock::new();
    T.get_or_init(|| {
        std::fs::write(CORPUS, corpus()).expect("the runs' corpus");
        std::array::from_fn(|i| {
            let dir = common::scratch();
            let spec: RunSpec = serde_json::from_str(RUNS[i]).expect("the template's run.json");
            let mut run = start(spec, &dir, true).expect("the template run starts");
            run.train(2, &Control::default(), &mut |_| {}).expect("the template run trains");
            run.checkpoint().expect("the template run checkpoints");
            dir
        })
    })
}

fn copy_run(from: &Path, to: &Path) {
    for f in std::fs::read_dir(from).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let template = &templates()[which as usize % 2];
    let p = common::parts(rest, 3);
    let dir = common::scratch();
    copy_run(template, &dir);
    if !p[0].is_empty() {
        std::fs::write(dir.join("run.json"), p[0]).unwrap();
    }
    if !p[1].is_empty() || !p[2].is_empty() {
        let path = dir.join("checkpoint.safetensors");
        let l = qkv::io::safetensors::load(&path).unwrap();
        let mut meta: BTreeMap<String, String> = l.metadata;
        for (key, part) in [("state", p[1]), ("adamw_step", p[2])] {
            if !part.is_empty() {
                meta.insert(key.into(), String::from_utf8_lossy(part).into_owned());
            }
        }
        let tensors: Vec<_> = l.tensors.into_iter().collect();
        qkv::io::safetensors::save(&path, &tensors, &meta).unwrap();
    }
    if let Ok(mut run) = resume(&dir, &ResumeChanges::default()) {
        let _ = run.trainer.train_step();
    }
    let _ = std::fs::remove_dir_all(&dir);
});
