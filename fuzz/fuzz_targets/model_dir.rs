//! Model directories: `config.json` + `model.safetensors` (+ a sentence-
//! transformers pooling file), in every layout `models::load::open` reads —
//! qkv runs and Hugging Face GPT-2, BERT, ViT, Marian, T5 and Mamba.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 3);
    let dir = common::scratch();
    std::fs::write(dir.join("config.json"), p[0]).unwrap();
    std::fs::write(dir.join("model.safetensors"), p[1]).unwrap();
    if !p[2].is_empty() {
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        std::fs::write(dir.join("1_Pooling/config.json"), p[2]).unwrap();
    }
    let _ = qkv::models::load::open(&dir);
    let _ = qkv::io::safetensors::load(&dir.join("model.safetensors"));
    let _ = std::fs::remove_dir_all(&dir);
});
