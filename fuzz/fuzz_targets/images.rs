//! Image data: IDX files (raw or gzip) in a directory, the 8×8 digits CSV,
//! and single pictures (PNG, JPEG) as `classify-image` and `explain` read them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qkv::data::images;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let p = common::parts(data, 5);
    let kind = p[0].first().copied().unwrap_or(0) % 3;
    let dir = common::scratch();
    match kind {
        0 => {
            let names = [
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            ];
            for (name, bytes) in names.iter().zip(&p[1..]) {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            let _ = images::load(&dir, 1, 8);
        }
        1 => {
            let path = dir.join("digits.csv");
            std::fs::write(&path, p[1]).unwrap();
            let _ = images::load(&path, 1, 8);
        }
        _ => {
            let _ = images::image_from_bytes(p[1], 3, 16);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
});
