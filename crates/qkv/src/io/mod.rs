//! Files: atomic writes, safetensors, JSON configs.

pub mod atomic;
pub mod crash;
pub mod hf;
pub mod safetensors;
