//! `x ↦ exp(x − shift)` over a slice, with the sum: the softmaxes' inner loop (attention and
//! the output head's 49,152-way softmax in SmolLM2), and the sigmoid of SiLU, vectorised.
//! libm's scalar `exp` and `expf` took a fifth of the pass's time.
//!
//! Cephes' single-precision polynomial on `r = x − n ln 2`, `|r| ≤ ln 2 / 2`, scaled by
//! `2ⁿ` through the exponent bits (relative error about 2e-7); arguments are clamped to
//! [−87, 88], so `exp` of anything below −87 is 1.6e-38 instead of a denormal or 0. The sum
//! runs in eight fixed f64 lanes, added in a fixed order: the same bits on one machine
//! whatever the thread count. The AVX2 + FMA build is chosen at run time, like the dense projector's
//! kernel, so results may differ in the last bits between machines.

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

#[inline(always)]
fn exp1(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let p = p * r * r + r + 1.0;
    let bits = (t.to_bits().wrapping_sub(ROUND.to_bits()) as i32 + 127) << 23;
    p * f32::from_bits(bits as u32)
}

#[inline(always)]
fn body(x: &mut [f32], shift: f32) -> f64 {
    let mut lanes = [0.0f64; 8];
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        for (v, l) in c.iter_mut().zip(lanes.iter_mut()) {
            *v = exp1(*v - shift);
            *l += *v as f64;
        }
    }
    let mut tail = 0.0;
    for v in chunks.into_remainder() {
        *v = exp1(*v - shift);
        tail += *v as f64;
    }
    let l = lanes;
    (((l[0] + l[4]) + (l[2] + l[6])) + ((l[1] + l[5]) + (l[3] + l[7]))) + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn body_avx2(x: &mut [f32], shift: f32) -> f64 {
    body(x, shift)
}

/// `x[i] ← exp(x[i] − shift)`; returns Σ x[i] afterwards, summed in f64 (49,152 terms in
/// f32 would be off by about 1e-5).
pub(super) fn exp_sum(x: &mut [f32], shift: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { body_avx2(x, shift) };
    }
    body(x, shift)
}

#[inline(always)]
fn sigmoid_body(s: &mut [f32], x: &[f32]) {
    for (s, &x) in s.iter_mut().zip(x) {
        *s = 1.0 / (1.0 + exp1(-x));
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sigmoid_avx2(s: &mut [f32], x: &[f32]) {
    sigmoid_body(s, x)
}

/// `s[i] ← σ(x[i]) = 1 / (1 + exp(−x[i]))`, for SiLU `x σ(x)` and its derivative.
pub(super) fn sigmoid(s: &mut [f32], x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (checked above).
        return unsafe { sigmoid_avx2(s, x) };
    }
    sigmoid_body(s, x)
}

/// The largest value (−∞ for an empty slice), in eight lanes.
pub(super) fn max(x: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (v, l) in c.iter().zip(lanes.iter_mut()) {
            *l = l.max(*v);
        }
    }
    let tail = chunks.remainder().iter().copied();
    lanes
        .into_iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_3e_7_relative_and_sums() {
        let mut x: Vec<f32> = (0..2001).map(|i| -80.0 + i as f32 * 0.04).collect();
        let want: Vec<f64> = x.iter().map(|&v| ((v - 0.5) as f64).exp()).collect();
        let sum = exp_sum(&mut x, 0.5);
        for (g, w) in x.iter().zip(&want) {
            assert!(((*g as f64 - w) / w).abs() < 3e-7, "{g} vs {w}");
        }
        let total: f64 = want.iter().sum();
        assert!(((sum - total) / total).abs() < 1e-6);
        let x = [-86.0f32, -3.0, 0.0, 0.5, 20.0, 95.0];
        let mut sig = [0.0f32; 6];
        sigmoid(&mut sig, &x);
        for (s, &x) in sig.iter().zip(&x) {
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!(
                (*s as f64 - want).abs() <= 3e-7 * want,
                "σ({x}) = {s}, not {want}"
            );
        }
        assert_eq!(
            max(&[1.0, 5.0, -2.0, 3.0, 0.0, 1.0, 2.0, 4.0, 7.0, -1.0]),
            7.0
        );
    }
}
