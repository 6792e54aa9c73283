//! Finite-difference gradient checks for every differentiable op.
//! Tolerances are for f32 forward passes (see `qkv_tensor::gradcheck`).

// `check(&[x.clone()], …)` reads better here than `std::slice::from_ref(&x)`.
#![allow(clippy::cloned_ref_to_slice_refs)]

use qkv_tensor::gradcheck::GradCheck;
use qkv_tensor::{AttentionKernel, AttentionOpts, Result, Rng, Tensor};

fn randn(shape: &[usize], seed: u64) -> Tensor {
    Tensor::randn(shape, 1.0, &mut Rng::new(seed))
}

fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    check_with(GradCheck::default(), inputs, f)
}

fn check_with(gc: GradCheck, inputs: &[Tensor], f: impl Fn(&[Tensor]) -> Result<Tensor>) {
    if let Err(msg) = gc.run(inputs, f).expect("forward/backward ran") {
        panic!("{msg}");
    }
}

#[test]
fn arithmetic_with_broadcasting() {
    let (a, b, row, col) = (randn(&[2, 3, 4], 1), randn(&[2, 3, 4], 2), randn(&[4], 3), randn(&[3, 1], 4));
    check(&[a.clone(), b.clone()], |x| x[0].add(&x[1]));
    check(&[a.clone(), row.clone()], |x| x[0].sub(&x[1]));
    check(&[a.clone(), col.clone()], |x| x[0].mul(&x[1]));
    check(&[row.clone(), a.clone()], |x| x[0].mul(&x[1]));
    let pos = Tensor::rand_uniform(&[3, 1], 0.5, 2.0, &mut Rng::new(5));
    check(&[a.clone(), pos], |x| x[0].div(&x[1]));
    check(&[a.clone()], |x| Ok(x[0].scale(-1.5).add_scalar(2.0)));
    check(&[row], |x| x[0].broadcast_to(&[2, 3, 4]));
}

#[test]
fn matmul_plain_batched_broadcast_and_transposed() {
    check(&[randn(&[3, 4], 1), randn(&[4, 5], 2)], |x| x[0].matmul(&x[1]));
    // x · W with x [B, T, C]: the folded path
    check(&[randn(&[2, 3, 4], 3), randn(&[4, 5], 4)], |x| x[0].matmul(&x[1]));
    check(&[randn(&[2, 3, 4], 5), randn(&[2, 4, 5], 6)], |x| x[0].matmul(&x[1]));
    check(&[randn(&[2, 1, 3, 4], 7), randn(&[3, 4, 2], 8)], |x| x[0].matmul(&x[1]));
    // A·Bᵀ and Aᵀ·B through views
    check(&[randn(&[2, 3, 4], 9), randn(&[2, 5, 4], 10)], |x| x[0].matmul(&x[1].t()?));
    check(&[randn(&[4, 3], 11), randn(&[4, 5], 12)], |x| x[0].t()?.matmul(&x[1]));
}

#[test]
fn views_and_copies() {
    let x = randn(&[2, 3, 4], 1);
    check(&[x.clone()], |x| x[0].reshape(&[4, 6]));
    check(&[x.clone()], |x| x[0].permute(&[2, 0, 1])?.contiguous().reshape(&[24]));
    check(&[x.clone()], |x| x[0].transpose(0, 2)?.reshape(&[4, 6]));
    check(&[x.clone()], |x| x[0].narrow(2, 1, 2));
    check(&[x.clone()], |x| {
        let p = x[0].split(-1, &[1, 3])?;
        p[1].mul(&p[1].narrow(2, 0, 1)?)
    });
    check(&[x.clone(), randn(&[2, 1, 4], 2)], |x| Tensor::concat(&[&x[0], &x[1]], 1));
    check(&[x.clone()], |x| x[0].unsqueeze(1)?.permute(&[1, 0, 2, 3]));
}

#[test]
fn reductions() {
    let x = randn(&[3, 4, 5], 1);
    check(&[x.clone()], |x| x[0].sum(1, false));
    check(&[x.clone()], |x| x[0].sum(-1, true));
    check(&[x.clone()], |x| x[0].mean(0, false));
    check(&[x.clone()], |x| x[0].max(2, false));
    check(&[x.clone()], |x| Ok(x[0].sum_all()));
    check(&[x.clone()], |x| Ok(x[0].mean_all()));
}

#[test]
fn activations() {
    let x = randn(&[3, 7], 1).scale(2.0);
    check(&[x.clone()], |x| Ok(x[0].gelu()));
    check(&[x.clone()], |x| Ok(x[0].gelu_tanh()));
    check(&[x.clone()], |x| Ok(x[0].silu()));
    check(&[x.clone()], |x| Ok(x[0].softplus()));
    check(&[x.clone()], |x| Ok(x[0].tanh()));
    check(&[x.clone()], |x| Ok(x[0].sigmoid()));
    check(&[x.clone()], |x| Ok(x[0].exp()));
    check(&[x.clone()], |x| Ok(x[0].square()));
    // ReLU's kink: keep inputs away from 0 by more than the step
    let away =
        Tensor::from_vec(x.to_vec().iter().map(|v| if v.abs() < 0.1 { 0.5 } else { *v }).collect(), x.shape()).unwrap();
    check(&[away], |x| Ok(x[0].relu()));
    let pos = Tensor::rand_uniform(&[3, 7], 0.5, 3.0, &mut Rng::new(2));
    check(&[pos.clone()], |x| Ok(x[0].log()));
    check(&[pos], |x| Ok(x[0].sqrt()));
}

#[test]
fn softmax_and_cross_entropy() {
    let x = randn(&[4, 6], 1);
    check(&[x.clone()], |x| Ok(x[0].softmax()));
    check(&[x.clone()], |x| Ok(x[0].log_softmax()));
    let targets = [1u32, 5, 0, 3];
    check(&[x.clone()], |x| qkv_tensor::cross_entropy(&x[0], &targets, None));
    // an ignored row contributes nothing and the mean is over the rest
    let with_ignored = [1u32, 99, 0, 99];
    check(&[randn(&[2, 2, 6], 2)], |x| qkv_tensor::cross_entropy(&x[0], &with_ignored, Some(99)));
    check(&[randn(&[2, 2, 6], 3)], |x| qkv_tensor::cross_entropy_smoothed(&x[0], &with_ignored, Some(99), 0.1));
}

#[test]
fn norms() {
    let x = randn(&[3, 5, 8], 1);
    let w = randn(&[8], 2);
    let b = randn(&[8], 3);
    check(&[x.clone(), w.clone(), b], |x| qkv_tensor::layer_norm(&x[0], &x[1], Some(&x[2]), 1e-5));
    check(&[x.clone(), w.clone()], |x| qkv_tensor::layer_norm(&x[0], &x[1], None, 1e-5));
    check(&[x, w], |x| qkv_tensor::rms_norm(&x[0], &x[1], 1e-6));
}

#[test]
fn embedding_scatters_repeated_ids() {
    let table = randn(&[5, 3], 1);
    let ids = [0u32, 4, 4, 2, 0, 1];
    check(&[table], |x| qkv_tensor::embedding(&x[0], &ids, &[2, 3]));
}

#[test]
fn dropout_with_a_fixed_seed() {
    let x = randn(&[4, 8], 1);
    check(&[x], |x| qkv_tensor::dropout(&x[0], 0.3, 42));
}

#[test]
fn attention_all_masks_both_kernels() {
    // (B, H, Tq, Tk, D, causal, padding, alibi)
    let cases = [
        (1, 1, 1, 1, 2, true, false, false),
        (2, 2, 4, 4, 3, true, false, false),
        (1, 2, 3, 5, 2, false, true, false),
        (2, 1, 2, 6, 3, true, true, true),
        (1, 3, 5, 5, 2, false, false, true),
    ];
    for kernel in [AttentionKernel::Flash, AttentionKernel::Naive] {
        for (i, &(b, h, tq, tk, d, causal, padding, alibi)) in cases.iter().enumerate() {
            let seed = 10 * i as u64;
            let (q, k, v) =
                (randn(&[b, h, tq, d], seed), randn(&[b, h, tk, d], seed + 1), randn(&[b, h, tk, d], seed + 2));
            let opts = AttentionOpts {
                causal,
                key_mask: padding.then(|| (0..b * tk).map(|j| j % tk != 1).collect()),
                alibi: alibi.then(|| (0..h).map(|j| 0.5f32.powi(j as i32 + 1)).collect()),
                scale: None,
                kernel,
            };
            check(&[q, k, v], |x| qkv_tensor::attention(&x[0], &x[1], &x[2], &opts));
        }
    }
}

#[test]
fn attention_on_views_of_a_fused_projection() {
    // q, k, v cut from one [B, T, 3C] tensor and viewed as heads, as a GPT does.
    let (b, t, h, d) = (2, 3, 2, 2);
    let c = h * d;
    check(&[randn(&[b, t, 3 * c], 1)], |x| {
        let parts = x[0].split(-1, &[c, c, c])?;
        let heads = |p: &Tensor| p.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]);
        let y = qkv_tensor::attention(
            &heads(&parts[0])?,
            &heads(&parts[1])?,
            &heads(&parts[2])?,
            &AttentionOpts::causal(),
        )?;
        y.transpose(1, 2)?.reshape(&[b, t, c])
    });
}

#[test]
fn packed_qkv_attention_matches_the_split_heads_path() {
    let (b, t, h, d) = (2, 5, 2, 3);
    let c = h * d;
    let x = randn(&[b, t, 3 * c], 7);
    let split = |x: &Tensor, opts: &AttentionOpts| -> Result<Tensor> {
        let p = x.split(-1, &[c, c, c])?;
        let heads = |p: &Tensor| p.reshape(&[b, t, h, d])?.permute(&[0, 2, 1, 3]);
        qkv_tensor::attention(&heads(&p[0])?, &heads(&p[1])?, &heads(&p[2])?, opts)?
            .transpose(1, 2)?
            .reshape(&[b, t, c])
    };
    for opts in [
        AttentionOpts::causal(),
        AttentionOpts {
            key_mask: Some((0..b * t).map(|j| j % t != 2).collect()),
            alibi: Some(vec![0.5, 0.25]),
            ..Default::default()
        },
    ] {
        // same values
        let a = qkv_tensor::attention_qkv(&x, h, &opts).unwrap();
        let e = split(&x, &opts).unwrap();
        assert!(a.max_abs_diff(&e).unwrap() < 1e-6);
        // and correct gradients
        check(std::slice::from_ref(&x), |xs| qkv_tensor::attention_qkv(&xs[0], h, &opts));
    }
    assert!(qkv_tensor::attention_qkv(&randn(&[1, 2, 10], 1), 2, &AttentionOpts::causal()).is_err());
}
