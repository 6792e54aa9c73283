//! Files: atomic writes, safetensors, JSON configs.

pub mod atomic;
pub mod safetensors;
