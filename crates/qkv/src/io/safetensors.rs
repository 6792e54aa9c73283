//! Tensors in the safetensors format (a JSON header naming each tensor's
//! dtype, shape and byte range, then the raw little-endian data).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use qkv_tensor::Tensor;

use crate::error::{Error, Result};

/// An f32 tensor ready to be written.
struct F32View {
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &F32View {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Write named tensors (and string metadata) to `path`, atomically.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    let views: Vec<(String, F32View)> = tensors
        .iter()
        .map(|(name, t)| {
            let data = t.data().iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), F32View { shape: t.shape().to_vec(), data })
        })
        .collect();
    let info: HashMap<String, String> = metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(info))
        .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    crate::io::atomic::write_atomic(path, &bytes)
}

/// The tensors of a safetensors file, converted to f32.
pub struct Loaded {
    pub tensors: BTreeMap<String, Tensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Read every tensor of `path`. F32, F16 and BF16 are converted to f32;
/// integer tensors (index buffers such as BERT's `position_ids`, never
/// weights) are skipped; other dtypes are an error naming the tensor.
///
/// The file is memory-mapped, so each weight is copied once, from the page
/// cache straight into its f32 tensor; the safetensors crate checks the header
/// against the file's length, so a truncated file is an error, not an
/// out-of-bounds read.
pub fn load(path: &Path) -> Result<Loaded> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only inside this function; a file
    // changed underneath us by another process while loading is outside what
    // qkv can guard against (as for every program that maps model files).
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let bytes: &[u8] = &map;
    let bad = |e: safetensors::SafeTensorError| Error::format(path, format!("not a valid safetensors file ({e})"));
    let st = SafeTensors::deserialize(bytes).map_err(bad)?;
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
    let metadata = meta.metadata().clone().unwrap_or_default().into_iter().collect();
    let mut tensors = BTreeMap::new();
    for (name, view) in st.tensors() {
        let raw = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL => continue,
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor {name:?} has dtype {other:?}; qkv reads F32, F16 and BF16"),
                ));
            }
        };
        let t =
            Tensor::from_vec(values, view.shape()).map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))?;
        tensors.insert(name, t);
    }
    Ok(Loaded { tensors, metadata })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = std::env::temp_dir().join(format!("qkv-st-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        let a = Tensor::from_vec(vec![1.0, -2.5, 3.25, 0.0, 7.0, 8.0], &[2, 3]).unwrap();
        let mut meta = BTreeMap::new();
        meta.insert("step".to_string(), "12".to_string());
        save(&p, &[("a.weight".into(), a.clone())], &meta).unwrap();
        let l = load(&p).unwrap();
        assert_eq!(l.tensors["a.weight"].to_vec(), a.to_vec());
        assert_eq!(l.tensors["a.weight"].shape(), &[2, 3]);
        assert_eq!(l.metadata["step"], "12");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_and_garbage_files_are_errors() {
        let dir = std::env::temp_dir().join(format!("qkv-st-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.safetensors");
        let a = Tensor::ones(&[4, 4]);
        save(&p, &[("w".into(), a)], &BTreeMap::new()).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
        assert!(load(&p).is_err());
        std::fs::write(&p, b"hello, not a checkpoint").unwrap();
        let e = load(&p).err().unwrap().to_string();
        assert!(e.contains("safetensors"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
