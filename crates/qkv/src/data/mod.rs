//! Data: corpora, labelled texts and images, the held-out splits that
//! training and evaluation share, and how each is fed to a model.

pub mod bert_input;
pub mod classify;
pub mod images;
pub mod mlm;
pub mod parallel;
pub mod shuffle;
pub mod text;
pub mod token_cache;
pub mod tokens;

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The most bytes a gzip file may unpack to: a crafted file of a few
/// kilobytes can ask for gigabytes.
pub const MAX_UNPACKED: u64 = 4 << 30;

/// The bytes of a file, un-gzipped when they start with gzip's magic number.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    gunzip_if_gz(raw).map_err(|e| Error::format(path, e))
}

/// `bytes` un-gzipped when they start with gzip's magic number, at most
/// [`MAX_UNPACKED`] of them; as they are otherwise.
pub fn gunzip_if_gz(bytes: Vec<u8>) -> std::result::Result<Vec<u8>, String> {
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(bytes);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .take(MAX_UNPACKED + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("not a valid gzip file: {e}"))?;
    if out.len() as u64 > MAX_UNPACKED {
        return Err(format!("unpacks to more than {} GiB; qkv refuses it", MAX_UNPACKED >> 30));
    }
    Ok(out)
}
