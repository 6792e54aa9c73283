//! Determinism is a correctness property: a kernel gives the same bits for the
//! same inputs and thread count, whatever the buffers it borrows from the
//! pool held before. Each case runs once, fills every cached buffer with
//! garbage (NaN, infinities, huge and tiny numbers), and runs again.

use qkv_tensor::kernels::gemm::{Backend, Mat, RawMatMut, Threads, matmul_raw_with};
use qkv_tensor::{AttentionKernel, AttentionOpts, Param, Rng, Tensor, attention, cross_entropy, layer_norm, pool};

const GARBAGE: [f32; 7] = [f32::NAN, f32::INFINITY, -3.0e38, f32::NEG_INFINITY, 1.0e-40, 7.0, -f32::NAN];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `f` twice: over whatever the pool holds, then over garbage; the same bits.
fn same_bits_over_garbage(what: &str, f: impl Fn() -> Vec<f32>) {
    let first = f();
    assert!(first.iter().all(|x| x.is_finite()), "{what}: non-finite output");
    for _ in 0..2 {
        pool::scribble(&GARBAGE);
        assert_eq!(bits(&f()), bits(&first), "{what}: the result depends on what the pool held");
    }
}

fn backends() -> Vec<Backend> {
    let mut b = vec![Backend::MatrixMultiply, Backend::Gemm];
    if qkv_tensor::kernels::packed::available() {
        b.extend([Backend::Packed, Backend::PackedWhereFaster]);
    }
    b
}

#[test]
fn every_gemm_backend_gives_the_same_bits_over_a_dirty_pool() {
    let mut rng = Rng::new(21);
    // below and above the packed GEMM's thresholds (K >= 128, N >= 384), its
    // NC block (4096 columns), one slice of K and several, one row (GEMV)
    for &(m, k, n) in &[(7, 33, 17), (64, 200, 390), (1, 300, 500), (50, 700, 40), (130, 130, 4100), (96, 768, 768)] {
        let a: Vec<f32> = (0..m * k).map(|_| rng.normal()).collect();
        let b: Vec<f32> = (0..k * n).map(|_| rng.normal()).collect();
        for backend in backends() {
            for (tb, threads) in [(false, Threads::All), (true, Threads::All), (false, Threads::One)] {
                let run = || {
                    let mut c = pool::take(m * n); // garbage, like any output buffer
                    let bm = if tb { Mat::rows(&b, n, k).t() } else { Mat::rows(&b, k, n) };
                    let raw = RawMatMut { ptr: c.as_mut_ptr(), rows: m, cols: n, rs: n, cs: 1 };
                    // SAFETY: c holds the m × n product; a and b lie in their vectors.
                    unsafe { matmul_raw_with(backend, raw, Mat::rows(&a, m, k), bm, 1.0, false, threads) };
                    let out = c.clone();
                    pool::give(c);
                    out
                };
                same_bits_over_garbage(&format!("{backend:?} {m}x{k}x{n} tb={tb} {threads:?}"), run);
            }
        }
    }
}

#[test]
fn a_training_step_gives_the_same_bits_over_a_dirty_pool() {
    // every pooled op of a transformer step, forward and backward: products,
    // LayerNorm, attention (flash and naive), GELU, softmax + cross-entropy
    let mut rng = Rng::new(5);
    let (b, t, c, h, v) = (2, 70, 96, 4, 300);
    let x = Tensor::randn(&[b, t, c], 1.0, &mut rng);
    let w_qkv = Param::new(Tensor::randn(&[c, 3 * c], 0.1, &mut rng));
    let w_out = Param::new(Tensor::randn(&[c, v], 0.1, &mut rng));
    let gain = Param::new(Tensor::ones(&[c]));
    let targets: Vec<u32> = (0..b * t).map(|_| rng.below(v as u64) as u32).collect();
    for kernel in [AttentionKernel::Flash, AttentionKernel::Naive] {
        let step = || {
            for p in [&w_qkv, &w_out, &gain] {
                p.zero_grad();
            }
            let y = layer_norm(&x, &gain.value(), None, 1e-5).unwrap();
            let qkv = y.matmul(&w_qkv.value()).unwrap();
            let heads = |i: usize| {
                qkv.narrow(2, i * c, c).unwrap().reshape(&[b, t, h, c / h]).unwrap().permute(&[0, 2, 1, 3]).unwrap()
            };
            let opts = AttentionOpts { kernel, ..AttentionOpts::causal() };
            let a = attention(&heads(0), &heads(1), &heads(2), &opts).unwrap();
            let a = a.transpose(1, 2).unwrap().reshape(&[b, t, c]).unwrap().gelu();
            let loss = cross_entropy(&a.matmul(&w_out.value()).unwrap(), &targets, None).unwrap();
            loss.backward().unwrap();
            let mut out = loss.to_vec();
            for p in [&w_qkv, &w_out, &gain] {
                out.extend(p.grad().unwrap().to_vec());
            }
            out
        };
        same_bits_over_garbage(&format!("{kernel:?} attention step"), step);
    }
}
