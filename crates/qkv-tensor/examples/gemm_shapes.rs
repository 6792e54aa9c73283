//! GFLOP/s of the GEMM shapes of one train-small step (2 threads), or with the
//! argument `encoder` those of the encoder bench (batch 8 × 128 tokens), to
//! compare with PyTorch on the same shapes.
use qkv_tensor::kernels::gemm::{Mat, MatMut, Threads, matmul};
use std::time::Instant;
fn main() {
    qkv_tensor::init_threads(None).unwrap();
    // (M, K, N, transpose A, transpose B)
    let train = [
        (2048, 256, 768, false, false),
        (2048, 256, 1024, false, false),
        (2048, 1024, 256, false, false),
        (2048, 768, 256, false, true),
        (256, 2048, 768, true, false),
        (256, 2048, 1024, true, false),
        (2048, 256, 65, false, true),
    ];
    // x·Wᵀ as nn::Linear does it (weights stored out × in)
    let encoder = [
        (1024, 384, 1152, false, true),
        (1024, 384, 384, false, true),
        (1024, 384, 1536, false, true),
        (1024, 1536, 384, false, true),
        (1024, 768, 2304, false, true),
        (1024, 768, 768, false, true),
        (1024, 768, 3072, false, true),
        (1024, 3072, 768, false, true),
    ];
    let shapes: &[_] = if std::env::args().any(|a| a == "encoder") { &encoder } else { &train };
    qkv_tensor::in_pool(|| {
        for &(m, k, n, ta, tb) in shapes {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0.0f32; m * n];
            let am = if ta { Mat::rows(&a, k, m).t() } else { Mat::rows(&a, m, k) };
            let bm = if tb { Mat::rows(&b, n, k).t() } else { Mat::rows(&b, k, n) };
            let reps = ((4e9 / (2.0 * (m * n * k) as f64)) as usize).max(2);
            let mut best = f64::MAX;
            for _ in 0..3 {
                let t = Instant::now();
                for _ in 0..reps {
                    matmul(MatMut::rows(&mut c, m, n), am, bm, 1.0, false, Threads::All);
                }
                best = best.min(t.elapsed().as_secs_f64());
            }
            println!("{m}x{k}x{n} ta={ta} tb={tb}: {:.1}", 2.0 * (m * n * k * reps) as f64 / best / 1e9);
        }
    });
}
