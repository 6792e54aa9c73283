//! The Mamba block (Mamba-1): a recurrent model whose training runs over a
//! whole sequence at once. Each of its `E` channels carries a small state
//! (`N` numbers) through time, like an RNN — but the recurrence is linear in
//! the state, so it is a scan, and its step size Δ and its read-in and
//! read-out vectors B and C are computed from each token ("selective"): the
//! model chooses, token by token, what to keep and what to forget.
//!
//! One block, in the order of the checkpoint's names (`mixer.*`):
//!
//! 1. `in_proj`: the token (width C) to two streams of width E — `x`, and
//!    the gate `z`;
//! 2. `conv1d`: a depthwise causal convolution over the last `K` positions
//!    of `x`, then SiLU → `u`;
//! 3. `x_proj`: `u` to `[dt (R) | B (N) | C (N)]`; `dt_proj` widens `dt` to
//!    E channels and `softplus` makes it a positive step Δ;
//! 4. the selective scan with `A = -exp(A_log)` and the skip `D`;
//! 5. the output gated by `SiLU(z)`, then `out_proj` back to width C.
//!
//! The block is pre-norm (RMSNorm) with a residual connection. Generation
//! runs [`MambaMixer::step`]: a constant amount of work and memory per token
//! (the last `K - 1` inputs of the convolution and the `E × N` state).

use qkv_tensor::ops::scan::{causal_conv1d, selective_scan};
use qkv_tensor::ops::unary::{silu, softplus};
use qkv_tensor::{Param, Result, Rng, Tensor, simd};

use super::linear::Linear;
use super::norm::{Norm, NormKind};
use super::{Module, NamedParam};

/// The sizes of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MixerShape {
    /// C, the width of the residual stream.
    pub hidden: usize,
    /// E, the channels of the scan (`expand · C`).
    pub inner: usize,
    /// N, the state of each channel.
    pub state: usize,
    /// K, the convolution's width.
    pub conv: usize,
    /// R, the rank of the step-size projection.
    pub dt_rank: usize,
}

#[derive(Clone, Debug)]
pub struct MambaMixer {
    pub shape: MixerShape,
    /// `[2E, C]`
    pub in_proj: Linear,
    /// `[E, 1, K]`, as `nn.Conv1d(groups = E)` stores it.
    pub conv_weight: Param,
    /// `[E]`
    pub conv_bias: Option<Param>,
    /// `[R + 2N, E]`
    pub x_proj: Linear,
    /// `[E, R]` with bias `[E]`
    pub dt_proj: Linear,
    /// `[E, N]`: `A = -exp(A_log)`, so every channel's memory decays.
    pub a_log: Param,
    /// `[E]`: the skip from `u` to the output.
    pub d: Param,
    /// `[C, E]`
    pub out_proj: Linear,
}

/// One block's state during generation: per batch row, the last `K - 1`
/// inputs of the convolution (`[B, K - 1, E]`) and the scan's state (`[B, E, N]`).
#[derive(Clone, Debug)]
pub struct MixerState {
    pub conv: Vec<f32>,
    pub ssm: Vec<f32>,
}

impl MambaMixer {
    /// Mamba's initialisation: `A_log = ln(1..=N)` per channel, `D = 1`, and
    /// `dt_proj`'s bias the inverse softplus of steps between 1e-3 and 1e-1.
    pub fn new(shape: MixerShape, bias: bool, conv_bias: bool, rng: &mut Rng) -> MambaMixer {
        let MixerShape { hidden, inner, state, conv, dt_rank } = shape;
        let lin = |i, o, b, rng: &mut Rng| Linear::new_out_in(i, o, b, 0.02, rng);
        let mut dt_proj = Linear::new_out_in(dt_rank, inner, true, (dt_rank as f32).powf(-0.5), rng);
        let steps: Vec<f32> = (0..inner)
            .map(|_| {
                let dt = (rng.uniform() * (0.1f32.ln() - 0.001f32.ln()) + 0.001f32.ln()).exp().max(1e-4);
                dt + (-(-dt).exp_m1()).ln() // softplus⁻¹(dt) = dt + ln(1 - e^-dt)
            })
            .collect();
        dt_proj.bias = Some(Param::new(Tensor::from_vec(steps, &[inner]).expect("E steps")));
        let a_log = (0..inner).flat_map(|_| (1..=state).map(|s| (s as f32).ln())).collect();
        MambaMixer {
            shape,
            in_proj: lin(hidden, 2 * inner, bias, rng),
            conv_weight: Param::new(Tensor::randn(&[inner, 1, conv], (conv as f32).powf(-0.5), rng)),
            conv_bias: conv_bias.then(|| Param::new(Tensor::zeros(&[inner]))),
            x_proj: lin(inner, dt_rank + 2 * state, false, rng),
            dt_proj,
            a_log: Param::new(Tensor::from_vec(a_log, &[inner, state]).expect("E × N")),
            d: Param::new(Tensor::ones(&[inner])),
            out_proj: lin(inner, hidden, bias, rng),
        }
    }

    /// The whole sequence at once, from a zero state.
    ///
    /// # Shapes
    /// x `[B, L, C]` → `[B, L, C]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let MixerShape { inner: e, state: n, conv: k, dt_rank: r, .. } = self.shape;
        let xz = self.in_proj.forward(x)?; // [B, L, 2E]
        let (xs, z) = (xz.narrow(-1, 0, e)?, xz.narrow(-1, e, e)?);
        let bias = self.conv_bias.as_ref().map_or_else(|| Tensor::zeros(&[e]), Param::value);
        let u = causal_conv1d(&xs, &self.conv_weight.value().reshape(&[e, k])?, &bias)?.silu();
        let proj = self.x_proj.forward(&u)?; // [B, L, R + 2N]
        let delta = self.dt_proj.forward(&proj.narrow(-1, 0, r)?)?.softplus();
        let (bm, cm) = (proj.narrow(-1, r, n)?.contiguous(), proj.narrow(-1, r + n, n)?.contiguous());
        let a = self.a_log.value().exp().scale(-1.0);
        let y = selective_scan(&u, &delta, &a, &bm, &cm, &self.d.value())?;
        self.out_proj.forward(&y.mul(&z.silu())?)
    }

    /// A zero state for `b` sequences.
    pub fn zero_state(&self, b: usize) -> MixerState {
        let MixerShape { inner, state, conv, .. } = self.shape;
        MixerState { conv: vec![0.0; b * (conv - 1) * inner], ssm: vec![0.0; b * inner * state] }
    }

    /// One token of each of `B` sequences, advancing their states: the same
    /// numbers as [`MambaMixer::forward`] at that position.
    ///
    /// # Shapes
    /// x `[B, C]` → `[B, C]`
    pub fn step(&self, x: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        let MixerShape { inner: e, state: n, conv: k, dt_rank: r, .. } = self.shape;
        let b = x.dims2()?.0;
        let xz = self.in_proj.forward(x)?.to_vec(); // [B, 2E]
        let w = self.conv_weight.value().to_vec(); // [E, K]
        let cb = self.conv_bias.as_ref().map_or_else(|| vec![0.0; e], |p| p.value().to_vec());
        let mut u = vec![0.0f32; b * e];
        for bi in 0..b {
            let window = &mut st.conv[bi * (k - 1) * e..(bi + 1) * (k - 1) * e]; // oldest first
            for c in 0..e {
                let new = xz[bi * 2 * e + c];
                let mut acc = cb[c] + w[c * k + k - 1] * new;
                for j in 0..k - 1 {
                    acc += w[c * k + j] * window[j * e + c];
                }
                u[bi * e + c] = silu(acc);
            }
            // the window moves on by one position
            window.copy_within(e.., 0);
            let last = (k - 2) * e;
            for c in 0..e {
                if k > 1 {
                    window[last + c] = xz[bi * 2 * e + c];
                }
            }
        }
        let ut = Tensor::from_vec(u.clone(), &[b, e])?;
        let proj = self.x_proj.forward(&ut)?.to_vec(); // [B, R + 2N]
        let dt_in = Tensor::from_vec(proj.chunks(r + 2 * n).flat_map(|p| p[..r].to_vec()).collect(), &[b, r])?;
        let dt = self.dt_proj.forward(&dt_in)?.to_vec(); // [B, E], before softplus
        let d = self.d.value().to_vec();
        let mut y = vec![0.0f32; b * e];
        simd::dispatch(
            #[inline(always)]
            || {
                let a: Vec<f32> = self.a_log.value().to_vec().iter().map(|&l| -simd::exp(l)).collect();
                for bi in 0..b {
                    let p = &proj[bi * (r + 2 * n)..(bi + 1) * (r + 2 * n)];
                    let (bm, cm) = (&p[r..r + n], &p[r + n..r + 2 * n]);
                    for c in 0..e {
                        let (delta, uc) = (softplus(dt[bi * e + c]), u[bi * e + c]);
                        let h = &mut st.ssm[(bi * e + c) * n..(bi * e + c + 1) * n];
                        for ((h, &a), &bv) in h.iter_mut().zip(&a[c * n..(c + 1) * n]).zip(bm) {
                            *h = simd::exp(delta * a) * *h + delta * uc * bv;
                        }
                        let gate = silu(xz[bi * 2 * e + e + c]);
                        y[bi * e + c] = (simd::dot(h, cm) + d[c] * uc) * gate;
                    }
                }
            },
        );
        self.out_proj.forward(&Tensor::from_vec(y, &[b, e])?)
    }
}

impl Module for MambaMixer {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.in_proj.collect_params(&format!("{prefix}in_proj."), out);
        out.push(NamedParam { name: format!("{prefix}conv1d.weight"), param: self.conv_weight.clone(), decay: true });
        if let Some(b) = &self.conv_bias {
            out.push(NamedParam { name: format!("{prefix}conv1d.bias"), param: b.clone(), decay: false });
        }
        self.x_proj.collect_params(&format!("{prefix}x_proj."), out);
        self.dt_proj.collect_params(&format!("{prefix}dt_proj."), out);
        out.push(NamedParam { name: format!("{prefix}A_log"), param: self.a_log.clone(), decay: false });
        out.push(NamedParam { name: format!("{prefix}D"), param: self.d.clone(), decay: false });
        self.out_proj.collect_params(&format!("{prefix}out_proj."), out);
    }
}

/// A residual block: `x + mixer(RMSNorm(x))`.
#[derive(Clone, Debug)]
pub struct MambaBlock {
    pub norm: Norm,
    pub mixer: MambaMixer,
}

impl MambaBlock {
    pub fn new(shape: MixerShape, bias: bool, conv_bias: bool, eps: f32, rng: &mut Rng) -> MambaBlock {
        MambaBlock {
            norm: Norm::new(NormKind::RmsNorm, shape.hidden, false, eps),
            mixer: MambaMixer::new(shape, bias, conv_bias, rng),
        }
    }

    /// # Shapes
    /// x `[B, L, C]` → `[B, L, C]`
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.add(&self.mixer.forward(&self.norm.forward(x)?)?)
    }

    /// # Shapes
    /// x `[B, C]` → `[B, C]`
    pub fn step(&self, x: &Tensor, st: &mut MixerState) -> Result<Tensor> {
        x.add(&self.mixer.step(&self.norm.forward(x)?, st)?)
    }
}

impl Module for MambaBlock {
    fn collect_params(&self, prefix: &str, out: &mut Vec<NamedParam>) {
        self.norm.collect_params(&format!("{prefix}norm."), out);
        self.mixer.collect_params(&format!("{prefix}mixer."), out);
    }
}
