//! Helpers shared by the golden tests: load a fixture, set parameters from
//! it, compare tensors.
#![allow(dead_code)] // each test file uses its own subset

use std::collections::BTreeMap;
use std::path::PathBuf;

use qkv::io::safetensors::{Loaded, load};
use qkv::nn::NamedParam;
use qkv_tensor::Tensor;

/// `tests/fixtures/<name>`, made by `scripts/make_fixtures.py`.
pub fn fixture(name: &str) -> Loaded {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    load(&p).unwrap_or_else(|e| panic!("{e} (regenerate with scripts/make_fixtures.py)"))
}

/// Set each parameter from `tensors[prefix + name]`.
pub fn set_params(params: &[NamedParam], tensors: &BTreeMap<String, Tensor>, prefix: &str) {
    for p in params {
        let key = format!("{prefix}{}", p.name);
        let t = tensors.get(&key).unwrap_or_else(|| panic!("fixture lacks {key}"));
        p.param.set_value(t).unwrap();
    }
}

/// |a - e| <= tol·(1 + |e|) everywhere.
pub fn assert_close(what: &str, actual: &Tensor, expected: &Tensor, tol: f32) {
    assert_eq!(actual.shape(), expected.shape(), "{what}: shape");
    let (a, e) = (actual.to_vec(), expected.to_vec());
    // NaN-propagating: an output of NaNs or infinities is never close
    let worst = qkv_tensor::max_or_nan(a.iter().zip(&e).map(|(x, y)| (x - y).abs() / (1.0 + y.abs())));
    assert!(worst <= tol, "{what}: worst relative difference {worst:e} > {tol:e}");
}
