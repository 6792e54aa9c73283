//! Errors of the engine. Every public op checks its arguments before any kernel
//! runs, so a wrong shape from a user becomes one of these, never a panic.

use std::fmt;

/// A shape written the way people read it: `[2, 5, 64]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Dims(pub Vec<usize>);

impl fmt::Debug for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<&[usize]> for Dims {
    fn from(d: &[usize]) -> Self {
        Dims(d.to_vec())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    #[error("{op}: shapes {lhs} and {rhs} do not match ({hint})")]
    ShapeMismatch { op: &'static str, lhs: Dims, rhs: Dims, hint: String },
    /// One operand whose shape is wrong for the op.
    #[error("{op}: got shape {got}, expected {expected}")]
    BadShape { op: &'static str, got: Dims, expected: String },
    /// An axis index past the tensor's rank.
    #[error("{op}: axis {axis} is out of range for a tensor of rank {rank}")]
    AxisOutOfRange { op: &'static str, axis: usize, rank: usize },
    /// An argument that is wrong whatever the shapes (a zero size, an index past the end…).
    #[error("{op}: {msg}")]
    Invalid { op: &'static str, msg: String },
    /// `backward()` called on something it cannot start from.
    #[error("backward: {0}")]
    Backward(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }

    pub fn mismatch(op: &'static str, lhs: &[usize], rhs: &[usize], hint: impl Into<String>) -> Self {
        Error::ShapeMismatch { op, lhs: lhs.into(), rhs: rhs.into(), hint: hint.into() }
    }

    pub fn bad_shape(op: &'static str, got: &[usize], expected: impl Into<String>) -> Self {
        Error::BadShape { op, got: got.into(), expected: expected.into() }
    }
}
