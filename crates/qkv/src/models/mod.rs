//! Whole models, one family per file.

pub mod bert;
pub mod gpt;
pub mod gpt2_hf;
pub mod inference;
pub mod load;
pub mod mamba;
pub mod recurrent;
pub mod sentence;
pub mod seq2seq;
pub mod t5;
pub mod vit;

/// The largest model a configuration may ask for (2^34 ≈ 17 billion
/// parameters, 64 GiB of f32): checked, with checked arithmetic, before
/// anything is allocated, so a config.json cannot ask for unbounded memory.
pub const MAX_PARAMS: usize = 1 << 34;

/// `Ok` when `count` (a checked parameter count, `None` when it overflowed)
/// is within [`MAX_PARAMS`]; else an error that says what was asked.
pub fn within_bounds(count: Option<usize>, what: &str) -> crate::error::Result<()> {
    match count {
        Some(n) if n <= MAX_PARAMS => Ok(()),
        Some(n) => Err(crate::error::Error::Config(format!(
            "{what} asks for {n} parameters; qkv refuses more than {MAX_PARAMS} (2^34)"
        ))),
        None => Err(crate::error::Error::Config(format!(
            "{what} asks for more parameters than a 64-bit count holds; qkv refuses more than {MAX_PARAMS} (2^34)"
        ))),
    }
}
