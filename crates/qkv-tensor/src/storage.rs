//! The buffer behind a tensor. Several tensors (views) may share one buffer;
//! it is immutable while shared. The optimizer updates a parameter in place
//! only when it holds the buffer alone (`Arc::get_mut`), which is the case once
//! `backward()` has freed the graph of the step.
//!
//! A buffer may also carry inference copies of itself ([`crate::copies`]):
//! every write goes through [`Storage::as_mut_slice`], which drops them.

use std::sync::Arc;

use crate::copies::Copies;

/// Memory that someone else owns, such as a memory-mapped checkpoint: the
/// library implements this for its files so the engine stays free of I/O.
pub trait ExternalBuffer: Send + Sync {
    fn as_f32(&self) -> &[f32];
}

pub struct Storage {
    data: Data,
    /// Packed or 16-bit copies of the numbers, made for inference; only
    /// ever as new as `data`, since writing drops them.
    copies: Copies,
}

enum Data {
    Owned(Vec<f32>),
    External(Arc<dyn ExternalBuffer>),
}

impl Storage {
    /// A buffer that owns `v`.
    pub fn owned(v: Vec<f32>) -> Storage {
        Storage { data: Data::Owned(v), copies: Copies::default() }
    }

    /// A buffer over memory someone else owns.
    pub fn external(e: Arc<dyn ExternalBuffer>) -> Storage {
        Storage { data: Data::External(e), copies: Copies::default() }
    }

    pub fn as_slice(&self) -> &[f32] {
        match &self.data {
            Data::Owned(v) => v,
            Data::External(e) => e.as_f32(),
        }
    }

    /// Mutable access, only for owned buffers. The inference copies are
    /// dropped first: after a write they could be stale.
    pub fn as_mut_slice(&mut self) -> Option<&mut [f32]> {
        match &mut self.data {
            Data::Owned(v) => {
                self.copies.clear();
                Some(v)
            }
            Data::External(_) => None,
        }
    }

    pub fn len(&self) -> usize {
        self.as_slice().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The inference copies this buffer carries.
    pub(crate) fn copies(&self) -> &Copies {
        &self.copies
    }

    /// The owned buffer, without a copy (`None` for external memory).
    pub fn into_vec(mut self) -> Option<Vec<f32>> {
        match &mut self.data {
            Data::Owned(v) => Some(std::mem::take(v)),
            Data::External(_) => None,
        }
    }
}

/// Owned buffers go back to the [`crate::pool`] for the next step to reuse.
impl Drop for Storage {
    fn drop(&mut self) {
        if let Data::Owned(v) = &mut self.data {
            crate::pool::give(std::mem::take(v));
        }
    }
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.data {
            Data::Owned(v) => write!(f, "Owned({} floats)", v.len()),
            Data::External(e) => write!(f, "External({} floats)", e.as_f32().len()),
        }
    }
}
