//! Tokenizer files: `tokenizer.json`, `vocab.txt` (WordPiece), `vocab.json` +
//! `merges.txt` (byte-level BPE); each loaded, then used to encode and decode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qkv::tokenize::Tokenizer;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 4);
    let (kind, body) = (p[0].first().copied().unwrap_or(0) % 3, &p[1..]);
    let dir = common::scratch();
    let files: &[&str] = match kind {
        0 => &["tokenizer.json"],
        1 => &["vocab.txt"],
        _ => &["vocab.json", "merges.txt"],
    };
    for (name, bytes) in files.iter().zip(body) {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    if let Ok(tok) = Tokenizer::load(&dir.to_string_lossy()) {
        let text = String::from_utf8_lossy(body.last().copied().unwrap_or_default());
        if let Ok(ids) = tok.encode(&text) {
            let _ = tok.decode(&ids);
            let mut stream = tok.stream();
            for &id in ids.iter().take(64) {
                let _ = stream.step(id);
            }
        }
        let _ = tok.decode(&[0, 1, u32::MAX]);
    }
    let _ = std::fs::remove_dir_all(&dir);
});
