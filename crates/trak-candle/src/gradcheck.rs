//! The builder's gradient check: candle's backward pass against finite differences.
//!
//! The adapter trusts candle to back-propagate through every op the network applies after a
//! recorded layer. To check that trust, the builder takes the probe chunk and, for each
//! attributed layer (nearest the output first), compares two values of the directional
//! derivative of F = Σ_b f_b with respect to the layer's output y, along u = δ/‖δ‖ where δ is
//! the tap gradient the backward pass gives:
//!
//! - by backward: ⟨δ, u⟩ = ‖δ‖;
//! - by central differences: (F(y + h u) − F(y − h u)) / 2h, with h = 10⁻⁴ ‖y_S‖ (y on the
//!   entries where δ ≠ 0, so that each moved output moves by about 10⁻⁴ of its size), the
//!   offset added to the layer's output inside the forward pass.
//!
//! At exact ties (a max-pool over MNIST's constant background, a ReLU at exactly 0) F is not
//! differentiable and central differences average two one-sided slopes, so the check runs at
//! a nearby generic point: the probe inputs plus a seeded jitter of 10⁻² of their RMS (float
//! inputs only; token ids are left alone). The two values must agree to 5 %; a wrong backward
//! (a rescaled or misrouted gradient) fails by far more. The layer named is the one nearest the
//! output whose check fails, so the faulty op lies between it and the next recorded layer.
//!
//! Even at a generic point a ReLU or a max-pool may switch inside ±h (the jitter opens gaps,
//! but with hundreds of units one of them can be narrower than the step; parameters are
//! never jittered). A central difference across such a kink is off by part of the kink's
//! jump, so a difference counts only where F is linear across ±h (its one-sided slopes
//! (F(+h) − F(0)) / h and (F(0) − F(−h)) / h agree to the same 5 %), and a check that fails
//! is retried with the step halved (up to 6 times, while the rounding floor stays
//! under the tolerance). A layer or parameter is refused only when no retried step agrees and
//! one of them was linear. A wrong backward leaves F smooth and disagrees at every step, so it
//! is still caught; a correct one passes at the first step but for a kink.

use candle::Tensor;
use trak::Unattributable;

use crate::error::{CandleContext, refuse};
use crate::network::Network;
use crate::objective::Objective;
use crate::pass::{eval_outputs, forward};
use crate::recorder::Mode;

/// Relative tolerance of the check.
const TOLERANCE: f64 = 0.05;
/// Finite-difference step, relative to the moved outputs.
const STEP: f64 = 1e-4;
/// Input jitter, relative to the inputs' RMS.
const JITTER: f32 = 1e-2;
/// Rounding error of one f32 model output f, as a multiple of |f| + 1: differences of F
/// below it are noise.
const ROUNDING: f64 = 1e-5;
/// Times the step is halved when a difference is not trusted (h down to h₀ / 64).
const HALVINGS: usize = 6;

/// Whether the backward pass's directional derivative `backward` agrees with central
/// differences of F along the same unit direction. `at(s)` is F moved by s along the
/// direction, `f0` is F unmoved, `noise` the rounding error of one value of F.
///
/// A difference at step h counts only where F is linear across ±h: its one-sided slopes
/// agree to [`TOLERANCE`] (a ReLU or max-pool switching inside ±h makes them differ by the
/// kink's jump). The step is halved while the difference is not linear or disagrees, as long
/// as the rounding floor noise/h stays under TOLERANCE·|backward| (h₀ always counts). The
/// first disagreeing linear difference is returned when no counted step agrees; `None` when
/// one agrees or none is linear (F kinked at every step: nothing to judge).
fn disagreement(
    at: &mut dyn FnMut(f64) -> trak::Result<f64>,
    (f0, h0, noise): (f64, f64, f64),
    backward: f64,
) -> trak::Result<Option<f64>> {
    let mut first = None;
    let mut h = h0;
    for k in 0..=HALVINGS {
        let floor = noise / h;
        if k > 0 && floor > TOLERANCE * backward.abs() {
            break;
        }
        let (plus, minus) = (at(h)?, at(-h)?);
        let (ahead, behind) = ((plus - f0) / h, (f0 - minus) / h);
        let linear =
            (ahead - behind).abs() <= TOLERANCE * ahead.abs().max(behind.abs()) + 2.0 * floor;
        let fd = (ahead + behind) / 2.0;
        if linear {
            if (fd - backward).abs() <= TOLERANCE * backward.abs().max(fd.abs()) + floor {
                return Ok(None);
            }
            first = first.or(Some(fd));
        }
        h /= 2.0;
    }
    Ok(first)
}

/// `x` plus a seeded jitter (xorshift64*, uniform in ±√3·JITTER·rms, so its RMS is
/// JITTER·rms) when `x` is f32; other inputs unchanged.
pub(crate) fn jitter(x: &Tensor) -> trak::Result<Tensor> {
    if x.dtype() != candle::DType::F32 {
        return Ok(x.clone());
    }
    let go = || -> candle::Result<Tensor> {
        let rms = (x.sqr()?.mean_all()?.to_scalar::<f32>()?).sqrt().max(1e-6);
        let scale = 3f32.sqrt() * JITTER * rms;
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<f32> = (0..x.elem_count())
            .map(|_| {
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let u =
                    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * scale
            })
            .collect();
        x.add(&Tensor::from_vec(noise, x.shape(), x.device())?)
    };
    go().ctx("jittering the gradient check's inputs")
}

/// What the check needs to run the network.
pub(crate) struct Check<'a, E, N, O> {
    pub net: &'a N,
    pub output: &'a O,
    /// The probe chunk's examples (real rows).
    pub chunk: &'a [E],
    /// Its padded input.
    pub x: &'a Tensor,
}

impl<E, N: Network, O: Objective<E>> Check<'_, E, N, O> {
    /// Σ_b f_b over the real rows, with `offset` added to the output of one layer call.
    fn total(&self, offset: Option<(usize, Tensor)>) -> trak::Result<f64> {
        let mode = Mode::Detached { taps: None, offset };
        let (z, _) = forward(self.net, self.x, mode, "the gradient check")?;
        let (_, values) = eval_outputs(self.output, &z, self.chunk, 0)?;
        Ok(values.iter().map(|v| v.f as f64).sum())
    }

    /// Checks the layers of `mask`; the first failure nearest the output is returned.
    pub fn run(&self, mask: &[bool]) -> trak::Result<()> {
        let mode = Mode::detached(Some(mask.to_vec()));
        let (z, calls) = forward(self.net, self.x, mode, "the gradient check")?;
        let (g, values) = eval_outputs(self.output, &z, self.chunk, 0)?;
        // F unmoved (the taps add zeros, so this is the offset-free forward's value).
        let f0: f64 = values.iter().map(|v| v.f as f64).sum();
        // Independent rounding errors of the B outputs add in quadrature.
        let sq: f64 = values
            .iter()
            .map(|v| (v.f.abs() as f64 + 1.0).powi(2))
            .sum();
        let noise = ROUNDING * sq.sqrt();
        let seed = z.mul(&g).and_then(|p| p.sum_all());
        let grads = seed.and_then(|s| s.backward()).ctx("the gradient check")?;
        for (i, call) in calls.iter().enumerate().rev() {
            let Some(delta) = call.tap.as_ref().and_then(|tap| grads.get(tap.as_tensor())) else {
                continue;
            };
            let norm = |t: &Tensor| -> candle::Result<f64> {
                Ok(t.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() as f64)
            };
            // ‖y‖ where δ ≠ 0: the step is 10⁻⁴ of the outputs it actually moves.
            let support = delta.ne(0f32).and_then(|m| m.to_dtype(candle::DType::F32));
            let moved = support.and_then(|m| call.output.mul(&m));
            let (dn, yn) = (norm(delta), moved.and_then(|y| norm(&y)));
            let (dn, yn) = (dn.ctx("the gradient check")?, yn.ctx("the gradient check")?);
            if dn == 0.0 || yn == 0.0 {
                continue;
            }
            let mut at = |s: f64| {
                let step = (delta * (s / dn)).ctx("the gradient check")?;
                self.total(Some((i, step)))
            };
            if let Some(fd) = disagreement(&mut at, (f0, STEP * yn, noise), dn)? {
                let reason = Unattributable::GradientCheck {
                    backward: dn,
                    finite_difference: fd,
                };
                return Err(refuse(&call.name, reason));
            }
        }
        Ok(())
    }
}

/// Directions per parameter of [`check_params`]: the gradient's own, and two seeded random
/// ones (a gradient that misses the part of some paths can be orthogonal to what it keeps).
const PARAM_DIRECTIONS: usize = 3;
/// Parameter step, relative to the parameter's norm.
const PARAM_STEP: f64 = 1e-3;

/// Checks each parameter's gradient `row` (the fallback's layout) on one example against
/// central differences of f with respect to the parameter itself, along the gradient and two
/// seeded random directions; the first parameter that fails is refused with
/// [`Unattributable::ParameterGradientCheck`]. The parameters are restored afterwards.
pub(crate) fn check_params(
    f: &dyn Fn() -> trak::Result<f64>,
    vars: &[(String, candle::Var)],
    row: &[f32],
) -> trak::Result<()> {
    // f at the unmoved parameters: the same for every parameter (each is restored).
    let f0 = f()?;
    let mut off = 0;
    for (i, (name, v)) in vars.iter().enumerate() {
        let n = v.elem_count();
        let g = &row[off..off + n];
        off += n;
        let theta = v.as_tensor().copy().ctx("the parameter gradient check")?;
        let result = check_param((f, f0), v, &theta, g, i as u64);
        v.set(&theta).ctx("restoring a parameter")?;
        if let Some((backward, finite_difference)) = result? {
            let reason = Unattributable::ParameterGradientCheck {
                backward,
                finite_difference,
            };
            return Err(refuse(name, reason));
        }
    }
    Ok(())
}

/// The first disagreeing (backward, finite difference) pair of one parameter, if any.
fn check_param(
    (f, f0): (&dyn Fn() -> trak::Result<f64>, f64),
    v: &candle::Var,
    theta: &Tensor,
    g: &[f32],
    seed: u64,
) -> trak::Result<Option<(f64, f64)>> {
    let values = theta
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .ctx("the parameter gradient check")?;
    let norm = |x: &[f32]| x.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let h = PARAM_STEP * norm(&values).max(1e-3);
    for d in 0..PARAM_DIRECTIONS {
        let u = direction(g, d, seed);
        let un = norm(&u);
        if un == 0.0 {
            continue;
        }
        let backward: f64 = g
            .iter()
            .zip(&u)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>()
            / un;
        let mut at = |s: f64| -> trak::Result<f64> {
            let moved: Vec<f32> = values
                .iter()
                .zip(&u)
                .map(|(&x, &b)| (x as f64 + s * b as f64 / un) as f32)
                .collect();
            let t = Tensor::from_vec(moved, theta.shape(), theta.device());
            t.and_then(|t| v.set(&t))
                .ctx("the parameter gradient check")?;
            f()
        };
        let noise = ROUNDING * (f0.abs() + 1.0);
        if let Some(fd) = disagreement(&mut at, (f0, h, noise), backward)? {
            return Ok(Some((backward, fd)));
        }
    }
    Ok(None)
}

/// Direction `d` of a parameter: its gradient for d = 0, else seeded uniform ±1 entries.
fn direction(g: &[f32], d: usize, seed: u64) -> Vec<f32> {
    if d == 0 {
        return g.to_vec();
    }
    let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0xd134_2543_de82_ef95) ^ d as u64;
    (0..g.len())
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            if state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 63 == 0 {
                1.0
            } else {
                -1.0
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::disagreement;

    /// F(t) = 2t + 3·relu(t − a) + c·relu(−t − b): slope 2 at 0, kinks at a and −b.
    fn kinked(a: f64, b: f64, c: f64) -> impl FnMut(f64) -> trak::Result<f64> {
        move |t| Ok(2.0 * t + 3.0 * (t - a).max(0.0) + c * (-t - b).max(0.0))
    }

    #[test]
    fn a_kink_inside_the_first_step_is_stepped_over() {
        // Central difference at h = 1: 3.05, 53 % off; the step is halved past the kink.
        let mut f = kinked(0.3, 10.0, 0.0);
        assert_eq!(disagreement(&mut f, (0.0, 1.0, 1e-9), 2.0).unwrap(), None);
        // A wrong backward still fails, with the linear step's difference.
        let fd = disagreement(&mut f, (0.0, 1.0, 1e-9), 1.0)
            .unwrap()
            .unwrap();
        assert!((fd - 2.0).abs() < 1e-9, "{fd}");
    }

    #[test]
    fn kinks_on_both_sides_that_look_linear_are_retried() {
        // One-sided slopes 3.5 and 3.5 at h = 1 (both kinks at ±0.5): linear-looking, off.
        let mut f = kinked(0.5, 0.5, -3.0);
        assert_eq!(disagreement(&mut f, (0.0, 1.0, 1e-9), 2.0).unwrap(), None);
        let fd = disagreement(&mut f, (0.0, 1.0, 1e-9), 2.4)
            .unwrap()
            .unwrap();
        assert!((fd - 3.5).abs() < 1e-9, "the first linear difference: {fd}");
    }

    #[test]
    fn rounding_does_not_rescue_a_wrong_backward_at_small_steps() {
        // A smooth F whose backward is 10 % low: the halvings stop before noise/h can
        // absorb the error, so it is refused.
        let mut f = |t: f64| Ok(2.0 * t);
        let noise = 0.02;
        assert!(
            disagreement(&mut f, (0.0, 1.0, noise), 1.8)
                .unwrap()
                .is_some()
        );
        assert_eq!(disagreement(&mut f, (0.0, 1.0, noise), 2.0).unwrap(), None);
    }
}
