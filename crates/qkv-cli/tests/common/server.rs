//! A `qkv explain` server for the tests that speak to it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use super::{corpus, ok, qkv, s, scratch};

/// A running `qkv explain`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `qkv explain` on a free port and wait for the line with its address.
pub fn start(model: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qkv"))
        .args(["--threads", "2", "explain", "--model", s(model), "--port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("qkv explain starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr =
        line.split("http://").nth(1).unwrap_or_else(|| panic!("no address in {line:?}")).trim().trim_end_matches('/');
    Server { child, addr: addr.to_string() }
}

/// A tiny character GPT (2 layers × 2 heads, context 16).
pub fn tiny_gpt(name: &str) -> std::path::PathBuf {
    let d = scratch(name);
    let data = corpus(&d);
    let run = d.join("gpt");
    #[rustfmt::skip]
    ok(&qkv(&[
        "--threads", "2", "train", "--n-layer", "2", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "4", "--max-steps", "3", "--eval-batches", "1", "--sample-chars", "0", "--quiet",
        "--data", s(&data), "--out-dir", s(&run),
    ]));
    run
}
