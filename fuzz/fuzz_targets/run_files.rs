//! A run directory's own files, as `--resume` and `qkv eval` read them:
//! `metrics.jsonl` (read and truncated to a step) and the token cache.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qkv::data::token_cache;
use qkv::train::checkpoint;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 2);
    let dir = common::scratch();
    std::fs::write(dir.join("metrics.jsonl"), p[0]).unwrap();
    let _ = checkpoint::read_metrics(&dir);
    let _ = checkpoint::truncate_metrics(&dir, 3);
    let tok = qkv::tokenize::Tokenizer::from(qkv::tokenize::char::CharTokenizer::from_text("abc"));
    let key = token_cache::Key::new("abc", &tok);
    let cache = dir.join(key.file_name());
    std::fs::write(&cache, p[1]).unwrap();
    let _ = token_cache::read(&cache, &key);
    let _ = std::fs::remove_dir_all(&dir);
});
