//! [`Tokens`]: the token ids of a corpus as training reads them — held in
//! memory, or memory-mapped from a cached token file of 16- or 32-bit ids
//! ([`super::token_cache`]) — and [`TokenIds`], what batches are cut from.
//!
//! A `Tokens` is a cheap view: cloning or slicing it (the training and
//! validation parts of a [`super::text::Split`]) shares the ids, never copies them.

use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

/// A sequence of token ids from which windows can be copied out.
pub trait TokenIds {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append the ids in `range` to `out`.
    fn extend_window(&self, range: Range<usize>, out: &mut Vec<u32>);

    /// The ids in `range`, as a vector.
    fn window(&self, range: Range<usize>) -> Vec<u32> {
        let mut v = Vec::with_capacity(range.len());
        self.extend_window(range, &mut v);
        v
    }
}

impl TokenIds for [u32] {
    fn len(&self) -> usize {
        <[u32]>::len(self)
    }

    fn extend_window(&self, range: Range<usize>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self[range]);
    }
}

impl TokenIds for Vec<u32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }

    fn extend_window(&self, range: Range<usize>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self[range]);
    }
}

/// How wide each stored id is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    U16,
    U32,
}

impl Width {
    /// The narrowest width that holds every id below `vocab_size`.
    pub fn for_vocab(vocab_size: usize) -> Width {
        if vocab_size <= 1 << 16 { Width::U16 } else { Width::U32 }
    }

    pub fn bytes(self) -> usize {
        match self {
            Width::U16 => 2,
            Width::U32 => 4,
        }
    }
}

/// Where the ids live.
#[derive(Debug)]
enum Store {
    Owned(Vec<u32>),
    /// Little-endian ids of `width` from byte `offset` of the mapped file.
    Mapped {
        map: Mmap,
        offset: usize,
        width: Width,
    },
}

/// Token ids, owned or memory-mapped; see the module documentation.
#[derive(Clone, Debug)]
pub struct Tokens {
    store: Arc<Store>,
    /// The view: ids `start .. start + len` of the store.
    start: usize,
    len: usize,
}

impl From<Vec<u32>> for Tokens {
    fn from(ids: Vec<u32>) -> Tokens {
        let len = ids.len();
        Tokens { store: Arc::new(Store::Owned(ids)), start: 0, len }
    }
}

impl Tokens {
    /// `count` ids of `width` stored little-endian from byte `offset` of `map`.
    /// Panics if the map is too short (the caller checks the file's length).
    pub fn mapped(map: Mmap, offset: usize, width: Width, count: usize) -> Tokens {
        assert!(map.len() >= offset + count * width.bytes(), "the mapped file is shorter than its ids");
        Tokens { store: Arc::new(Store::Mapped { map, offset, width }), start: 0, len: count }
    }

    /// True when the ids are read from a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.store, Store::Mapped { .. })
    }

    /// The ids in `range` of this view, sharing the storage.
    pub fn slice(&self, range: Range<usize>) -> Tokens {
        assert!(range.start <= range.end && range.end <= self.len, "slice {range:?} of {} tokens", self.len);
        Tokens { store: Arc::clone(&self.store), start: self.start + range.start, len: range.len() }
    }

    /// Every id, copied out.
    pub fn to_vec(&self) -> Vec<u32> {
        self.window(0..self.len)
    }
}

impl TokenIds for Tokens {
    fn len(&self) -> usize {
        self.len
    }

    fn extend_window(&self, range: Range<usize>, out: &mut Vec<u32>) {
        assert!(range.end <= self.len, "window {range:?} of {} tokens", self.len);
        let (a, b) = (self.start + range.start, self.start + range.end);
        match &*self.store {
            Store::Owned(v) => out.extend_from_slice(&v[a..b]),
            Store::Mapped { map, offset, width } => {
                let w = width.bytes();
                let bytes = &map[offset + a * w..offset + b * w];
                match width {
                    Width::U16 => out.extend(bytes.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]]) as u32)),
                    Width::U32 => {
                        out.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_share_and_window() {
        let t = Tokens::from((0..10).collect::<Vec<u32>>());
        let s = t.slice(2..8);
        assert_eq!(s.len(), 6);
        assert_eq!(s.window(1..3), [3, 4]);
        assert_eq!(s.slice(4..6).to_vec(), [6, 7]);
        assert!(!s.is_mapped());
        assert_eq!(Width::for_vocab(65_536), Width::U16);
        assert_eq!(Width::for_vocab(65_537), Width::U32);
    }
}
