//! Crash points, for the tests that prove a run survives being killed at any
//! moment. `QKV_CRASH_AT=<point>:<n>` makes the process abort (no
//! destructors, no flushing: what `kill -9` or a power cut leaves) the `n`-th
//! time it reaches `point`:
//!
//! | point | where |
//! |---|---|
//! | `step` | after a step's backward pass, before the weights change |
//! | `eval` | in the middle of an evaluation |
//! | `checkpoint` | half-way through writing a checkpoint's temporary file |
//! | `metrics` | half-way through appending a line to `metrics.jsonl` |
//!
//! Unset (always, outside those tests), a point costs one check of a cached value.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
static HITS: AtomicU64 = AtomicU64::new(0);

fn target() -> &'static Option<(String, u64)> {
    TARGET.get_or_init(|| {
        let v = std::env::var("QKV_CRASH_AT").ok()?;
        let (point, n) = v.split_once(':')?;
        Some((point.to_string(), n.parse().ok()?))
    })
}

/// Abort here if this is the chosen point and its chosen visit.
pub fn point(name: &str) {
    if let Some((p, n)) = target()
        && p == name
        && HITS.fetch_add(1, Ordering::Relaxed) + 1 == *n
    {
        eprintln!("QKV_CRASH_AT: aborting at {name} #{n}");
        std::process::abort();
    }
}
