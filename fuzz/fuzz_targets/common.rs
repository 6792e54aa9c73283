//! Shared by the fuzz targets: each input becomes files in a directory of its
//! own, which qkv then reads as a user's file would be read. Whatever qkv
//! answers (a value or an error) is fine; a panic, an abort, an allocation
//! past the fuzzer's limit or a time-out is a finding.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Split the input at the byte 0xFF 0x00 0xFF (a separator seeds use) into
/// at most `n` parts; missing parts are empty.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    while out.len() + 1 < n {
        match rest.windows(3).position(|w| w == [0xFF, 0x00, 0xFF]) {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 3..];
            }
            None => break,
        }
    }
    out.push(rest);
    while out.len() < n {
        out.push(&[]);
    }
    out
}

/// A fresh, empty directory for one input (removed by the caller).
pub fn scratch() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!("qkv-fuzz-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("a scratch directory");
    d
}
