//! Tensors in the safetensors format (a JSON header naming each tensor's
//! dtype, shape and byte range, then the raw little-endian data).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};

use qkv_tensor::Tensor;

use crate::error::{Error, Result};

/// The JSON header of f32 `tensors` laid out one after another in the given
/// order, `__metadata__` first, padded with spaces to a multiple of 8 bytes
/// (so the data that follows stays aligned), with its 8-byte length in front.
///
/// Written here rather than by the `safetensors` crate, whose serializer takes
/// the metadata as a `HashMap`: its order changes from process to process, and
/// with it the bytes of every checkpoint — the same run must give the same file.
fn header(tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Vec<u8> {
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut entries = Vec::with_capacity(tensors.len() + 1);
    if !metadata.is_empty() {
        let meta: Vec<String> = metadata.iter().map(|(k, v)| format!("{}:{}", json(k), json(v))).collect();
        entries.push(format!("\"__metadata__\":{{{}}}", meta.join(",")));
    }
    let mut offset = 0usize;
    for (name, t) in tensors {
        let end = offset + 4 * t.numel();
        let shape: Vec<String> = t.shape().iter().map(usize::to_string).collect();
        entries.push(format!(
            "{}:{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{offset},{end}]}}",
            json(name),
            shape.join(",")
        ));
        offset = end;
    }
    let mut text = format!("{{{}}}", entries.join(",")).into_bytes();
    text.resize(text.len().next_multiple_of(8), b' ');
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out
}

/// Write named tensors (and string metadata) to `path`, atomically. The same
/// tensors and metadata always give the same bytes.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &BTreeMap<String, String>) -> Result<()> {
    save_with(path, tensors, metadata, || {})
}

/// [`save`], calling `halfway` once half of the tensors are written (the
/// crash tests abort there: see [`crate::io::crash`]).
pub fn save_with(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &BTreeMap<String, String>,
    halfway: impl FnOnce(),
) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    if let Some((dup, _)) = tensors.iter().find(|(n, _)| !names.insert(n.as_str())) {
        return Err(Error::format(path, format!("cannot save two tensors named {dup:?}")));
    }
    crate::io::atomic::write_atomic_with(path, |f| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        w.write_all(&header(tensors, metadata))?;
        let mut halfway = Some(halfway);
        for (i, (_, t)) in tensors.iter().enumerate() {
            if i == tensors.len() / 2 {
                w.flush()?;
                if let Some(h) = halfway.take() {
                    h();
                }
            }
            for chunk in t.data().chunks(1 << 14) {
                let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                w.write_all(&bytes)?;
            }
        }
        w.flush()
    })
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
    fn the_same_tensors_always_give_the_same_bytes() {
        // several metadata keys: a hash map's order would differ between saves
        let dir = std::env::temp_dir().join(format!("qkv-st-same-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let tensors = [("b".to_string(), Tensor::ones(&[3, 2])), ("a".to_string(), Tensor::zeros(&[5]))];
        let meta: BTreeMap<String, String> = (0..8).map(|i| (format!("key{i}"), format!("value \"{i}\""))).collect();
        let p = dir.join("t.safetensors");
        save(&p, &tensors, &meta).unwrap();
        let first = std::fs::read(&p).unwrap();
        for _ in 0..20 {
            save(&p, &tensors, &meta).unwrap();
            assert_eq!(std::fs::read(&p).unwrap(), first);
        }
        // the header keeps the metadata sorted and is padded to 8 bytes; the safetensors crate reads it
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let text = std::str::from_utf8(&first[8..8 + n]).unwrap();
        assert!(text.starts_with(r#"{"__metadata__":{"key0":"value \"0\"","key1""#), "{text}");
        let l = load(&p).unwrap();
        assert_eq!(l.tensors["b"].to_vec(), vec![1.0; 6]);
        assert_eq!(l.tensors["a"].shape(), &[5]);
        assert_eq!(l.metadata["key7"], "value \"7\"");
        let dup = save(&p, &[tensors[0].clone(), tensors[0].clone()], &meta).unwrap_err().to_string();
        assert!(dup.contains("two tensors named \"b\""), "{dup}");
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
