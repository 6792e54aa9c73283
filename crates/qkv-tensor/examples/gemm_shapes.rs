//! GFLOP/s of the GEMM shapes the benches run (2 threads), to compare with
//! PyTorch on the same shapes:
//!
//!     cargo run --release -p qkv-tensor --example gemm_shapes [train|encoder|square|head] [--ab]
//!
//! `train`: one train-small step (forward, input and weight gradients, the
//! head); `encoder`: x·Wᵀ at all-MiniLM-L6-v2's shapes, batch 8 × 128;
//! `square`: 1024³ and 2048³; `head`: GPT-2's tied LM head over 1024
//! positions. With `--ab`, the packed GEMM and `matrixmultiply` alternate in
//! one process (9 rounds) instead: their median GFLOP/s, the median of the
//! per-round ratios, and which one the default picks — the evidence behind
//! `Backend::PackedWhereFaster`'s rule.
use qkv_tensor::kernels::gemm::{Backend, Mat, MatMut, RawMatMut, Threads, matmul, matmul_raw_with};
use std::time::Instant;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    qkv_tensor::init_threads(None).unwrap();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ab = args.iter().any(|a| a == "--ab");
    // (M, K, N, A transposed, B transposed)
    let shapes: Vec<(usize, usize, usize, bool, bool)> = match args.iter().find(|a| *a != "--ab").map(String::as_str) {
        Some("encoder") => vec![
            (1024, 384, 1152, false, true),
            (1024, 384, 384, false, true),
            (1024, 384, 1536, false, true),
            (1024, 1536, 384, false, true),
            (1024, 768, 2304, false, true),
            (1024, 768, 768, false, true),
            (1024, 768, 3072, false, true),
            (1024, 3072, 768, false, true),
        ],
        Some("square") => vec![(1024, 1024, 1024, false, false), (2048, 2048, 2048, false, false)],
        Some("head") => vec![(1024, 768, 50257, false, true), (1024, 50257, 768, false, false)],
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
            let flops = 2.0 * (m * n * k) as f64;
            let reps = ((if ab { 1e9 } else { 4e9 } / flops) as usize).max(1);
            let name = format!("{m}x{k}x{n} ta={ta} tb={tb}");
            if !ab {
                let mut best = f64::MAX;
                for _ in 0..3 {
                    let t = Instant::now();
                    for _ in 0..reps {
                        matmul(MatMut::rows(&mut c, m, n), am, bm, 1.0, false, Threads::All);
                    }
                    best = best.min(t.elapsed().as_secs_f64());
                }
                println!("{name}: {:.1}", flops * reps as f64 / best / 1e9);
                continue;
            }
            let mut gflops = [vec![], vec![]];
            for _round in 0..9 {
                for (i, backend) in [Backend::Packed, Backend::MatrixMultiply].into_iter().enumerate() {
                    let t = Instant::now();
                    for _ in 0..reps {
                        let cm = RawMatMut { ptr: c.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                        // SAFETY: c holds the m × n matrix and is not otherwise used.
                        unsafe { matmul_raw_with(backend, cm, am, bm, 1.0, false, Threads::All) };
                    }
                    gflops[i].push(flops * reps as f64 / t.elapsed().as_secs_f64() / 1e9);
                }
            }
            let ratios: Vec<f64> = gflops[0].iter().zip(&gflops[1]).map(|(p, q)| p / q).collect();
            println!(
                "{name}: packed {:.1}, matrixmultiply {:.1} GFLOP/s, ratio {:.3} (default: {})",
                median(&gflops[0]),
                median(&gflops[1]),
                median(&ratios),
                Backend::PackedWhereFaster.for_shape(&am, k, n).name()
            );
        }
    });
}
