//! How close the one-row product gets to memory bandwidth: GEMV over GPT-2's
//! weight shapes, each matrix read once per call (far larger than the caches).
//!
//!     cargo run --release -p qkv-tensor --example gemv_speed

use std::time::Instant;

use qkv_tensor::kernels::gemm::{Mat, MatMut, Threads, matmul};

fn main() {
    qkv_tensor::init_threads(None).unwrap();
    qkv_tensor::in_pool(|| {
        let bw = qkv_tensor::kernels::gemv::read_bandwidth();
        println!("read bandwidth (the bound): {:5.1} GB/s", bw / 1e9);
        // (K, N, transposed): c_attn, attn c_proj, c_fc, mlp c_proj, the tied head
        let shapes =
            [(768, 2304, false), (768, 768, false), (768, 3072, false), (3072, 768, false), (768, 50257, true)];
        // 12 copies of each layer matrix so that nothing stays in cache between calls
        for (k, n, t) in shapes {
            let copies = if t { 1 } else { 12 };
            let w: Vec<Vec<f32>> = (0..copies).map(|i| vec![0.001 * (i + 1) as f32; k * n]).collect();
            let x = vec![1.0f32; k];
            let mut y = vec![0.0f32; n];
            let reps = 20;
            let start = Instant::now();
            for r in 0..reps {
                let wi = &w[r % copies];
                let b = if t { Mat::rows(wi, n, k).t() } else { Mat::rows(wi, k, n) };
                matmul(MatMut::rows(&mut y, 1, n), Mat::rows(&x, 1, k), b, 1.0, false, Threads::All);
            }
            let secs = start.elapsed().as_secs_f64() / reps as f64;
            println!(
                "K={k:5} N={n:6} {}: {:7.3} ms, {:5.1} GB/s",
                if t { "Bᵀ" } else { "B " },
                secs * 1e3,
                (k * n * 4) as f64 / secs / 1e9
            );
        }
    });
}
