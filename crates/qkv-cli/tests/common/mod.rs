//! Helpers shared by the command-line tests: run the `qkv` binary, give each
//! test its own scratch directory, and check for success or for one clear error.
#![allow(dead_code)] // each test file uses its own subset

use std::path::PathBuf;
use std::process::{Command, Output};

/// Run the `qkv` binary built for these tests.
pub fn qkv(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_qkv")).args(args).output().expect("the qkv binary runs")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh scratch directory for one test (per process, so test binaries never collide).
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("qkv-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn ok(o: &Output) {
    assert!(o.status.success(), "qkv failed: {}", stderr(o));
}

/// Fails with exit code 1, no panic, and an error that contains every `needle`.
pub fn fails_with(o: &Output, needles: &[&str]) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected a failure, got success: {err}");
    assert!(!err.contains("panicked"), "a panic instead of an error: {err}");
    for n in needles {
        assert!(err.contains(n), "error should mention {n:?}: {err}");
    }
}

/// A small corpus with some structure (so the loss moves), written into `dir`.
pub fn corpus(dir: &std::path::Path) -> PathBuf {
    let p = dir.join("corpus.txt");
    let text: String = (0..600).map(|i| format!("line {i}: to be or not to be, that is the question.\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}
