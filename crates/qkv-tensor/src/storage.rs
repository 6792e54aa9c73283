//! The buffer behind a tensor. Several tensors (views) may share one buffer;
//! it is immutable while shared. The optimizer updates a parameter in place
//! only when it holds the buffer alone (`Arc::get_mut`), which is the case once
//! `backward()` has freed the graph of the step.

use std::sync::Arc;

/// Memory that someone else owns, such as a memory-mapped checkpoint: the
/// library implements this for its files so the engine stays free of I/O.
pub trait ExternalBuffer: Send + Sync {
    fn as_f32(&self) -> &[f32];
}

pub enum Storage {
    Owned(Vec<f32>),
    External(Arc<dyn ExternalBuffer>),
}

impl Storage {
    pub fn as_slice(&self) -> &[f32] {
        match self {
            Storage::Owned(v) => v,
            Storage::External(e) => e.as_f32(),
        }
    }

    /// Mutable access, only for owned buffers.
    pub fn as_mut_slice(&mut self) -> Option<&mut [f32]> {
        match self {
            Storage::Owned(v) => Some(v),
            Storage::External(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Storage {
    /// The owned buffer, without a copy (`None` for external memory).
    pub fn into_vec(mut self) -> Option<Vec<f32>> {
        match &mut self {
            Storage::Owned(v) => Some(std::mem::take(v)),
            Storage::External(_) => None,
        }
    }
}

/// Owned buffers go back to the [`crate::pool`] for the next step to reuse.
impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Owned(v) = self {
            crate::pool::give(std::mem::take(v));
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Storage::Owned(v) => write!(f, "Owned({} floats)", v.len()),
            Storage::External(e) => write!(f, "External({} floats)", e.as_f32().len()),
        }
    }
}
