//! The packed GEMM against `matrixmultiply`, alternating in one process (9
//! rounds), on the shapes of the benches: the evidence behind
//! `Backend::PackedWhereFaster`'s rule. Prints each one's median GFLOP/s, the
//! median of the per-round ratios, and which one the default picks.
//!
//!     cargo run --release -p qkv-tensor --example gemm_ab [square|encoder|head|train]
use qkv_tensor::kernels::gemm::{Backend, Mat, RawMatMut, Threads, matmul_raw_with};
use std::time::Instant;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    qkv_tensor::init_threads(None).unwrap();
    // (M, K, N, A transposed, B transposed)
    let shapes: Vec<(usize, usize, usize, bool, bool)> = match std::env::args().nth(1).as_deref() {
        Some("square") => vec![(1024, 1024, 1024, false, false), (2048, 2048, 2048, false, false)],
        // x·Wᵀ at all-MiniLM-L6-v2's shapes, batch 8 × 128
        Some("encoder") => vec![
            (1024, 384, 1152, false, true),
            (1024, 384, 384, false, true),
            (1024, 384, 1536, false, true),
            (1024, 1536, 384, false, true),
        ],
        // GPT-2's tied LM head over 1024 positions: logits, and the input gradient
        Some("head") => vec![(1024, 768, 50257, false, true), (1024, 50257, 768, false, false)],
        // one train-small step: forward, input gradients, weight gradients, the head
        _ => vec![
            (2048, 256, 768, false, false),
            (2048, 256, 1024, false, false),
            (2048, 1024, 256, false, false),
            (2048, 768, 256, false, true),
            (256, 2048, 768, true, false),
            (256, 2048, 1024, true, false),
            (2048, 256, 65, false, true),
        ],
    };
    qkv_tensor::in_pool(|| {
        for &(m, k, n, ta, tb) in &shapes {
            let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
            let mut c = vec![0.0f32; m * n];
            let am = if ta { Mat::rows(&a, k, m).t() } else { Mat::rows(&a, m, k) };
            let bm = if tb { Mat::rows(&b, n, k).t() } else { Mat::rows(&b, k, n) };
            let reps = ((1e9 / (2.0 * (m * n * k) as f64)) as usize).max(1);
            let mut gflops = [vec![], vec![]];
            for _round in 0..9 {
                for (i, backend) in [Backend::Packed, Backend::MatrixMultiply].into_iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..reps {
                        let cm = RawMatMut { ptr: c.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                        // SAFETY: c holds the m × n matrix and is not otherwise used.
                        unsafe { matmul_raw_with(backend, cm, am, bm, 1.0, false, Threads::All) };
                    }
                    gflops[i].push(2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9);
                }
            }
            let ratios: Vec<f64> = gflops[0].iter().zip(&gflops[1]).map(|(p, q)| p / q).collect();
            println!(
                "{m}x{k}x{n} ta={ta} tb={tb}: packed {:.1}, matrixmultiply {:.1} GFLOP/s, ratio {:.3} (default: {})",
                median(&gflops[0]),
                median(&gflops[1]),
                median(&ratios),
                Backend::PackedWhereFaster.for_shape(&am, k, n).name()
            );
        }
    });
}
