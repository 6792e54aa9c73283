//! A cache of freed tensor buffers, so a training step reuses the memory of
//! the previous one instead of asking the operating system again.
//!
//! Without it every step maps fresh pages for its activations and gradients
//! and the kernel zeroes each page on first touch (page faults showed up as a
//! few percent of a training step). Buffers are cached by exact length — a
//! step allocates the same sizes every time — up to [`CAP_BYTES`] in all.
//!
//! [`take`] returns a buffer whose contents are unspecified but always valid
//! numbers (zeros when new, old values when reused), for kernels that write
//! every element; [`take_zeroed`] clears it.

use std::collections::HashMap;
use std::sync::Mutex;

/// Buffers smaller than this are left to the allocator (its own caches are good at small sizes).
const MIN_LEN: usize = 1 << 12;
/// At most this many bytes wait in the cache.
pub const CAP_BYTES: usize = 1 << 30;
/// At most this many buffers of one length.
const PER_LEN: usize = 16;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut guard = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let pool = guard.get_or_insert_with(|| Pool { free: HashMap::new(), bytes: 0 });
    f(pool)
}

/// A buffer of `n` floats with unspecified (but initialised) contents.
pub fn take(n: usize) -> Vec<f32> {
    if n >= MIN_LEN
        && let Some(v) = with_pool(|p| {
            let v = p.free.get_mut(&n)?.pop()?;
            p.bytes -= n * 4;
            Some(v)
        })
    {
        return v;
    }
    vec![0.0; n]
}

/// A buffer of `n` zeros.
pub fn take_zeroed(n: usize) -> Vec<f32> {
    let mut v = take(n);
    v.fill(0.0);
    v
}

/// Hand a buffer back for reuse (dropped instead when the cache is full).
pub fn give(v: Vec<f32>) {
    let n = v.len();
    if n < MIN_LEN || v.capacity() != n {
        return;
    }
    with_pool(|p| {
        let list = p.free.entry(n).or_default();
        if list.len() < PER_LEN && p.bytes + n * 4 <= CAP_BYTES {
            p.bytes += n * 4;
            list.push(v);
        }
    });
}

/// Drop every cached buffer (returns the bytes released).
pub fn clear() -> usize {
    with_pool(|p| {
        let b = p.bytes;
        p.free.clear();
        p.bytes = 0;
        b
    })
}

/// Overwrite every cached buffer with `pattern`, repeated: what a reused
/// buffer may hold is up to whoever held it last, so tests fill the cache
/// with garbage (NaN, infinities, huge numbers) and check that kernels give
/// the same bits as over fresh memory — no kernel may read what it did not
/// write.
pub fn scribble(pattern: &[f32]) {
    assert!(!pattern.is_empty(), "scribble needs a pattern");
    with_pool(|p| {
        for v in p.free.values_mut().flatten() {
            for (x, &y) in v.iter_mut().zip(pattern.iter().cycle()) {
                *x = y;
            }
        }
    });
}

/// Bytes waiting in the cache.
pub fn cached_bytes() -> usize {
    with_pool(|p| p.bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_buffers_of_the_same_length() {
        let n = MIN_LEN + 123; // a length no other test uses
        let v = take_zeroed(n);
        let ptr = v.as_ptr();
        give(v);
        let w = take(n);
        assert_eq!(w.as_ptr(), ptr, "the freed buffer comes back");
        assert_eq!(w.len(), n);
        let z = take_zeroed(n);
        assert!(z.iter().all(|&x| x == 0.0));
    }
}
