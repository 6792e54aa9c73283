//! Labelled tables (CSV, TSV, JSONL) as `train --task classify` and `eval`
//! read them, gzip included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qkv::data::classify::read_labeled;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 2);
    let ext = ["csv", "tsv", "jsonl"][p[0].first().copied().unwrap_or(0) as usize % 3];
    let dir = common::scratch();
    let path = dir.join(format!("table.{ext}"));
    std::fs::write(&path, p[1]).unwrap();
    if let Ok(mut t) = read_labeled(&path, "text", "label", data.len() % 2 == 0) {
        t.dedup();
        let _ = t.split(0.1, 7);
    }
    let _ = std::fs::remove_dir_all(&dir);
});
