//! Vector instructions without giving up portability.
//!
//! Kernels are written as plain loops over slices. [`dispatch`] runs such a loop
//! compiled for AVX2+FMA when the CPU has them (checked once, at run time), and
//! as baseline x86-64 code otherwise; LLVM turns the loop into vector code for
//! whichever target it is compiled in. The closure must be `#[inline(always)]`
//! so that its body is compiled inside the target-feature function.
//!
//! The math functions below (`exp`, `tanh`, the normal CDF) are branch-free polynomial
//! approximations so that those loops vectorise; each is tested against an
//! f64 reference. They use `mul_add`, one instruction on CPUs
//! with FMA (all x86-64 since 2013, every aarch64); on older x86 it becomes a
//! correct but slow library call.

#[inline(always)]
pub fn dispatch<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the CPU supports the features `run_avx2` is compiled for.
            return unsafe { run_avx2(f) };
        }
    }
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| !forced_portable() && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// `QKV_NO_AVX2=1` makes every kernel take its portable path, as on a CPU
/// without AVX2: how the tests check those paths on machines that have it.
pub fn forced_portable() -> bool {
    std::env::var_os("QKV_NO_AVX2").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Which instruction set the vectorised kernels use on this CPU.
pub fn instruction_set() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            return "avx2+fma";
        }
        "sse2"
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        "portable"
    }
}

/// e^x with relative error below 2e-7 for x in [-87, 88]; 0 below -87.3
/// (so masked scores, set to -inf, vanish), +inf above 88.7. (Cephes `expf`.)
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let y = exp_core(x.clamp(-87.0, 88.0));
    if x < -87.3 {
        0.0
    } else if x > 88.7 {
        f32::INFINITY
    } else {
        y
    }
}

/// [`exp`] for arguments that cannot overflow — a value minus the maximum it
/// was taken from, as in every softmax (x ≤ 0, up to rounding; any x ≤ 88
/// works). Same accuracy above -87; 0 for -inf and below -87.7; NaN stays
/// NaN. Cheaper than [`exp`], which matters in attention's innermost loop:
/// one `max` replaces the clamp and both range tests, because at x = -88 the
/// power of two built from the exponent bits is exactly 0.0 (n = -127).
#[inline(always)]
pub fn exp_shifted(x: f32) -> f32 {
    // `x < -88 ? -88 : x` keeps a NaN (one vmaxps with this operand order)
    exp_core(if x < -88.0 { -88.0 } else { x })
}

/// e^x for x in [-87, 88] (no range handling).
#[inline(always)]
fn exp_core(xc: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let t = xc * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = n.mul_add(-1.428_606_8e-6, n.mul_add(-0.693_145_75, xc));
    let p = 1.987_569_1e-4f32
        .mul_add(r, 1.398_199_9e-3)
        .mul_add(r, 8.333_452e-3)
        .mul_add(r, 4.166_579_6e-2)
        .mul_add(r, 0.166_666_65)
        .mul_add(r, 0.5);
    let p = p.mul_add(r * r, r) + 1.0;
    // 2^n built from its exponent bits; n sits in the low mantissa bits of t.
    let pow2 = f32::from_bits(((t.to_bits() as i32 - 0x4B40_0000 + 127) << 23) as u32);
    p * pow2
}

/// The standard normal CDF Φ(x) = ½(1 + erf(x/√2)) and the Gaussian factor
/// e^(-x²/2) it is built from (GELU's derivative needs both), absolute error
/// below 3e-7: Abramowitz & Stegun 7.1.26 for erfc(|x|/√2) — one reciprocal,
/// a degree-5 polynomial and one `exp`. Its absolute error (1.5e-7) is small
/// next to Φ ≥ ½ near zero, so unlike an `erf` (accurate relative to erf(x),
/// which needs a series there) it needs no second formula: this halved the
/// cost of exact GELU.
#[inline(always)]
pub fn normal_cdf_and_gauss(x: f32) -> (f32, f32) {
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let t = 1.0 / 0.327_591_1f32.mul_add(z, 1.0);
    let poly = t * 1.061_405_4f32
        .mul_add(t, -1.453_152_1)
        .mul_add(t, 1.421_413_7)
        .mul_add(t, -0.284_496_74)
        .mul_add(t, 0.254_829_6);
    let gauss = exp_shifted(-z * z); // e^(-x²/2): 0 for |x| = ∞
    let half_tail = 0.5 * poly * gauss; // ½·erfc(|x|/√2)
    (if x < 0.0 { half_tail } else { 1.0 - half_tail }, gauss)
}

/// Hyperbolic tangent from one `exp`; absolute error below 3e-7.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs().min(9.0);
    let e = exp(-2.0 * a);
    let y = (1.0 - e) / (1.0 + e);
    if x < 0.0 { -y } else { y }
}

/// ln(1 + y) for y in [0, 1], relative error below 1e-7: the series of
/// 2·atanh(s) with s = y / (2 + y) ≤ 1/3 (so s² ≤ 1/9 and seven terms
/// suffice). Small y loses nothing: s is computed from y, not from 1 + y.
#[inline(always)]
pub fn ln_1p_unit(y: f32) -> f32 {
    let s = y / (2.0 + y);
    let s2 = s * s;
    let p = (1.0f32 / 13.0)
        .mul_add(s2, 1.0 / 11.0)
        .mul_add(s2, 1.0 / 9.0)
        .mul_add(s2, 1.0 / 7.0)
        .mul_add(s2, 1.0 / 5.0)
        .mul_add(s2, 1.0 / 3.0)
        .mul_add(s2, 1.0);
    2.0 * s * p
}

/// ln(1 + eˣ) without overflow: `max(x, 0) + ln(1 + e^-|x|)`; `x` itself
/// above 20 (as PyTorch's `softplus`). Vectorises: no library calls.
#[inline(always)]
pub fn softplus(x: f32) -> f32 {
    let y = x.max(0.0) + ln_1p_unit(exp(-x.abs()));
    if x > 20.0 { x } else { y }
}

/// 1 / (1 + e^-x)
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Sum with eight independent partial sums, so it vectorises (floating-point
/// addition is not associative, so LLVM will not reorder a plain sum).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for v in rest {
        s += v;
    }
    s
}

/// Dot product, vectorised like [`sum`].
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Largest element (-inf for an empty slice), vectorised.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = x.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..8 {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for v in acc.iter().chain(rest) {
        m = if *v > m { *v } else { m };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_forces_the_portable_paths() {
        if forced_portable() {
            assert_ne!(instruction_set(), "avx2+fma");
        }
    }

    /// Every test of this crate again, in a child process with
    /// `QKV_NO_AVX2=1`: the portable loops, which a machine with AVX2 would
    /// otherwise never run, checked against the same twins.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn every_kernel_test_passes_on_the_portable_paths() {
        if forced_portable() || instruction_set() != "avx2+fma" {
            return; // this run is the portable one already
        }
        let exe = std::env::current_exe().expect("the test binary");
        let out = std::process::Command::new(exe)
            .args(["--skip", "every_kernel_test_passes_on_the_portable_paths", "--test-threads", "2"])
            .env("QKV_NO_AVX2", "1")
            .output()
            .expect("the test binary runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "portable paths failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("test result: ok"), "{text}");
    }

    fn grid() -> impl Iterator<Item = f32> {
        (-20_000..=20_000).map(|i| i as f32 * 1e-3)
    }

    #[test]
    fn softplus_and_ln_1p_match_f64() {
        for y in (0..=10_000).map(|i| i as f32 * 1e-4).chain([1e-30, 1e-12, 3e-8]) {
            let want = (y as f64).ln_1p();
            let got = ln_1p_unit(y) as f64;
            assert!((got - want).abs() <= 2e-7 * want.abs() + 1e-37, "ln_1p({y}): {got} vs {want}");
        }
        for x in grid().chain([-100.0, -30.0, 19.99, 20.0, 20.01, 50.0, 1e30]) {
            let xd = x as f64;
            let want = if xd > 20.0 { xd } else { xd.max(0.0) + (-xd.abs()).exp().ln_1p() };
            let got = softplus(x) as f64;
            assert!((got - want).abs() <= 3e-7 * want.abs() + 1e-30, "softplus({x}): {got} vs {want}");
        }
        assert!(softplus(f32::NAN).is_nan());
    }

    #[test]
    fn exp_matches_std() {
        for x in grid().map(|x| x * 4.0) {
            let (a, b) = (exp(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "exp({x}) = {a}, std {b}");
        }
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
    }

    #[test]
    fn exp_shifted_matches_std_where_softmax_calls_it() {
        for x in grid().map(|x| x * 4.0).filter(|&x| x <= 80.0) {
            let (a, b) = (exp_shifted(x), x.exp());
            assert!(((a - b) / b).abs() < 3e-7, "exp_shifted({x}) = {a}, std {b}");
        }
        assert_eq!(exp_shifted(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_shifted(-1000.0), 0.0);
        assert_eq!(exp_shifted(-88.0), 0.0);
        // between -87 and -88: tiny, never negative, never NaN
        for x in [-87.1f32, -87.5, -87.9] {
            let y = exp_shifted(x);
            assert!((0.0..2e-38).contains(&y), "exp_shifted({x}) = {y}");
        }
        assert!(exp_shifted(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_matches_f64() {
        for x in grid() {
            let t = (x as f64).tanh();
            assert!((tanh(x) as f64 - t).abs() < 4e-7, "tanh({x}) = {} vs {t}", tanh(x));
        }
    }

    #[test]
    fn normal_cdf_matches_f64() {
        for x in grid().map(|x| x * 2.0).chain([0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0]) {
            let (phi, gauss) = normal_cdf_and_gauss(x);
            let want = 0.5 * (1.0 + libm_erf(x as f64 / std::f64::consts::SQRT_2));
            assert!((phi as f64 - want).abs() < 3e-7, "Φ({x}) = {phi} vs {want}");
            let g = (-(x as f64) * x as f64 / 2.0).exp();
            // absolute, as GELU's derivative adds x·φ(x) to Φ(x)
            assert!((gauss as f64 - g).abs() < 3e-7, "e^(-x²/2) at {x}: {gauss} vs {g}");
        }
        assert_eq!(normal_cdf_and_gauss(f32::INFINITY), (1.0, 0.0));
        assert_eq!(normal_cdf_and_gauss(f32::NEG_INFINITY), (0.0, 0.0));
        assert!(normal_cdf_and_gauss(f32::NAN).0.is_nan());
    }

    /// erf in f64 by its Taylor series / continued fraction, as an independent reference.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 2.5 {
            // Taylor: erf x = 2/sqrt(pi) * sum (-1)^n x^(2n+1) / (n! (2n+1))
            let mut sum = 0.0;
            let mut term = x;
            let mut n = 0.0;
            while term.abs() > 1e-17 {
                sum += term / (2.0 * n + 1.0);
                n += 1.0;
                term *= -x * x / n;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc continued fraction (Lentz), accurate for |x| >= 2.5
            let a = x.abs();
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            let erfc = (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f);
            (1.0 - erfc) * x.signum()
        }
    }

    #[test]
    fn reductions_match_plain_loops() {
        let x: Vec<f32> = (0..37).map(|i| ((i * 7919) % 101) as f32 - 50.0).collect();
        let y: Vec<f32> = (0..37).map(|i| ((i * 104_729) % 13) as f32 * 0.5).collect();
        assert_eq!(sum(&x), x.iter().sum::<f32>());
        assert_eq!(max(&x), x.iter().cloned().fold(f32::NEG_INFINITY, f32::max));
        let d: f32 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        assert!((dot(&x, &y) - d).abs() < 1e-3);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }
}
