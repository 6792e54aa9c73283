//! Errors of the library. Each says what was wrong and, where it helps, what
//! to do about it; the CLI prints them as one line.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tensor(#[from] qkv_tensor::Error),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A model or training configuration that cannot work.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Input data (a corpus, a prompt, a batch) that the model cannot take.
    #[error("{0}")]
    Data(String),

    /// A file in the wrong format: which file, and what is wrong with it.
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// A checkpoint that is missing a tensor, has one of the wrong shape, or is inconsistent.
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },

    /// Training produced a loss or gradient that is not a finite number; the
    /// step stopped before changing any weight.
    #[error(
        "training diverged at step {step}: the {what} is {value}; no weight was changed and the last checkpoint \
         is kept; try a lower --lr (this step's learning rate was {lr:.3e})"
    )]
    Diverged { step: u64, what: &'static str, value: f32, lr: f32 },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }

    pub fn checkpoint(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.into(), msg: msg.into() }
    }
}
