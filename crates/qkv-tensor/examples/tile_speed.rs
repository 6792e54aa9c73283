//! Measures the attention tile product alone (single thread): GFLOP/s of
//! 64×64×64 and 64×256×64 products, the shapes the flash kernel uses.
use qkv_tensor::kernels::tile::TileProduct;
use std::time::Instant;
fn main() {
    for &(m, n, k, ar, ac) in &[(64, 64, 64, 64, 1), (64, 256, 64, 64, 1), (256, 64, 64, 1, 256), (64, 64, 64, 1, 64)] {
        let a = vec![0.5f32; m * k * 4];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let t = TileProduct { m, n, k, ar, ac, ldb: n, ldc: n, s: 1.0, accumulate: true };
        let reps = 20000 * 64 * 64 / (m * n);
        let start = Instant::now();
        for _ in 0..reps {
            t.run(&mut c, &a, &b);
        }
        let s = start.elapsed().as_secs_f64();
        println!("{m}x{n}x{k} (ar={ar}, ac={ac}): {:.1} GFLOP/s", 2.0 * (m * n * k * reps) as f64 / s / 1e9);
    }
}
