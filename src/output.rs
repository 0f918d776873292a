//! Model-output functions f(z; θ) and their Q weights.
//!
//! TRAK attributes a scalar *model output* f, computed from the model's raw outputs z (logits
//! or a scalar prediction) and the example's [`Target`]. Each output function also fixes the
//! training loss L it belongs to, and the per-example weight
//!
//! Q = −∂L/∂f,
//!
//! the sign chosen so that Q ≥ 0 for the classification losses (Q = 1 − p_correct for the
//! margin, as in the TRAK paper). Scores are then signed so that a positive score means
//! "including this training example increases f on the target".
//!
//! | function | raw outputs | f | training loss L | Q = −∂L/∂f | r = ∂²L/∂f² |
//! |---|---|---|---|---|---|
//! | [`Margin`] | c ≥ 2 logits | z_y − log Σ_{j≠y} exp z_j | cross-entropy | 1 − softmax(z)_y = σ(−f) | σ(f) σ(−f) = p(1 − p) |
//! | [`Logistic`] | 1 logit | s·z, s = ±1 for class 1/0 | log(1 + e^{−f}) | σ(−f) | σ(f) σ(−f) |
//! | [`Regression`] | 1 prediction | z | ½ (z − y)² | y − z (the residual) | 1 |
//!
//! **Curvature.** r = ∂²L/∂f² is the weight of the example in the Gauss-Newton Hessian
//! Σ_i r_i ∇f_i ∇f_iᵀ. For the margin, cross-entropy is exactly log(1 + e^{−f}) as a function
//! of f (softmax(z)_y = σ(f) because f = z_y − log Σ_{j≠y} e^{z_j}), so Q = σ(−f) and
//! r = −dQ/df = σ(f)σ(−f) = p(1 − p) with p = softmax(z)_y; the same holds for the
//! binary logistic output. For squared loss r = 1. [`OutputFn::curvature`] gives it; an output
//! function that does not know it returns `None`.
//!
//! For regression Q is the signed residual: the one-step Newton estimate of adding example i
//! moves the target's prediction by φ(z)ᵀ(ΦᵀΦ)⁻¹φ_i (y_i − ŷ_i). A perfectly fitted example
//! therefore has no influence, and attribution is sign-aware.
//!
//! For token sequences (language models), [`sequence::SequenceLogProb`] gives the
//! log-probability of the counted tokens, with Q = 1 (derivation in [`sequence`]).
//!
//! Implement [`OutputFn`] for your own output function; the built-in models are generic over it.
//! All three built-ins compute in f64 internally and are numerically stable for any finite z.

use serde::{Deserialize, Serialize};

use crate::data::Target;

pub mod sequence;
pub use sequence::SequenceLogProb;

/// The value of an output function at one example.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutputValue {
    /// The model output f.
    pub f: f32,
    /// Q = −∂L/∂f.
    pub q: f32,
}

/// A model-output function: maps raw model outputs z and a target to the scalar f that TRAK
/// attributes, its gradient ∂f/∂z, the weight Q, and the training loss it belongs to.
pub trait OutputFn: Send + Sync {
    /// Checks that a model with `n_outputs` raw outputs can be evaluated on `target`;
    /// returns a human-readable reason otherwise. Called before [`OutputFn::eval`] and
    /// [`OutputFn::loss`], which may then assume a valid target.
    fn validate(&self, n_outputs: usize, target: &Target) -> Result<(), String>;

    /// Evaluates f at raw outputs `z`, writes ∂f/∂z into `df_dz` (same length as `z`) and
    /// returns f and Q.
    fn eval(&self, z: &[f32], target: &Target, df_dz: &mut [f32]) -> OutputValue;

    /// The training loss L at `z` (returned) and ∂L/∂z (written into `dl_dz`).
    fn loss(&self, z: &[f32], target: &Target, dl_dz: &mut [f32]) -> f32;

    /// The curvature r = ∂²L/∂f² of the training loss as a function of f at `z`: the
    /// example's Gauss-Newton weight. `None` (the default) when the output function does not
    /// know it; kernel weightings that need r then refuse the model.
    fn curvature(&self, z: &[f32], target: &Target) -> Option<f32> {
        let _ = (z, target);
        None
    }

    /// Hessian-vector products of the training loss in z: for each direction `v` (the rows
    /// of `vs`, each `z.len()` long), writes ∇²_z L · v into the same row of `hv`. Returns
    /// `false` (the default) when the output function does not know its loss Hessian;
    /// metagradients ([`crate::metagrad`]) then refuse the model.
    fn loss_hvp(&self, z: &[f32], target: &Target, vs: &[f32], hv: &mut [f32]) -> bool {
        let _ = (z, target, vs, hv);
        false
    }
}

/// σ(x) = 1 / (1 + e^{−x}), stable for large |x|.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// softplus(x) = log(1 + e^x), stable for large |x|.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

fn class_of(target: &Target) -> usize {
    match *target {
        Target::Class(y) => y,
        Target::Value(_) => unreachable!("validated by OutputFn::validate"),
    }
}

/// Multiclass margin: f = z_y − log Σ_{j≠y} exp z_j, trained with cross-entropy;
/// Q = 1 − softmax(z)_y.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Margin;

impl Margin {
    /// Returns (f, max_{j≠y} z_j, Σ_{j≠y} exp(z_j − max)).
    fn parts(z: &[f32], y: usize) -> (f64, f64, f64) {
        let m = z
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != y)
            .map(|(_, &v)| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != y)
            .map(|(_, &v)| (v as f64 - m).exp())
            .sum();
        (z[y] as f64 - (m + s.ln()), m, s)
    }
}

impl OutputFn for Margin {
    fn validate(&self, n_outputs: usize, target: &Target) -> Result<(), String> {
        if n_outputs < 2 {
            return Err(format!(
                "the margin needs at least 2 classes, the model has {n_outputs} output(s)"
            ));
        }
        match *target {
            Target::Class(y) if y < n_outputs => Ok(()),
            Target::Class(y) => Err(format!("class {y} out of range for {n_outputs} classes")),
            Target::Value(v) => Err(format!("the margin needs a class label, got the value {v}")),
        }
    }

    fn eval(&self, z: &[f32], target: &Target, df_dz: &mut [f32]) -> OutputValue {
        let y = class_of(target);
        let (f, m, s) = Self::parts(z, y);
        for (j, (g, &v)) in df_dz.iter_mut().zip(z).enumerate() {
            *g = if j == y {
                1.0
            } else {
                (-(v as f64 - m).exp() / s) as f32
            };
        }
        OutputValue {
            f: f as f32,
            q: sigmoid(-f) as f32,
        }
    }

    fn loss(&self, z: &[f32], target: &Target, dl_dz: &mut [f32]) -> f32 {
        let y = class_of(target);
        let m = z
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let s: f64 = z.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (j, (g, &v)) in dl_dz.iter_mut().zip(z).enumerate() {
            let p = (v as f64 - m).exp() / s;
            *g = (p - if j == y { 1.0 } else { 0.0 }) as f32;
        }
        (m + s.ln() - z[y] as f64) as f32
    }

    fn curvature(&self, z: &[f32], target: &Target) -> Option<f32> {
        let (f, _, _) = Self::parts(z, class_of(target));
        Some((sigmoid(f) * sigmoid(-f)) as f32)
    }

    /// Cross-entropy's Hessian in z is diag(p) − p pᵀ (p = softmax(z)): ∇²L·v = p ⊙ (v − p·v).
    fn loss_hvp(&self, z: &[f32], _: &Target, vs: &[f32], hv: &mut [f32]) -> bool {
        let m = z
            .iter()
            .map(|&v| v as f64)
            .fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = z.iter().map(|&v| (v as f64 - m).exp()).collect();
        let s: f64 = e.iter().sum();
        let p: Vec<f64> = e.iter().map(|e| e / s).collect();
        for (v, out) in vs.chunks_exact(z.len()).zip(hv.chunks_exact_mut(z.len())) {
            let pv: f64 = p.iter().zip(v).map(|(p, &v)| p * v as f64).sum();
            for ((o, &p), &v) in out.iter_mut().zip(&p).zip(v) {
                *o = (p * (v as f64 - pv)) as f32;
            }
        }
        true
    }
}

/// Binary logistic output: one logit z, f = s·z with s = +1 for class 1 and −1 for class 0,
/// trained with log(1 + e^{−f}); Q = σ(−f).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logistic;

fn sign_of(target: &Target) -> f64 {
    if class_of(target) == 1 { 1.0 } else { -1.0 }
}

impl OutputFn for Logistic {
    fn validate(&self, n_outputs: usize, target: &Target) -> Result<(), String> {
        if n_outputs != 1 {
            return Err(format!(
                "binary logistic needs 1 output, the model has {n_outputs}"
            ));
        }
        match *target {
            Target::Class(0 | 1) => Ok(()),
            Target::Class(y) => Err(format!("binary logistic needs class 0 or 1, got {y}")),
            Target::Value(v) => Err(format!(
                "binary logistic needs a class label, got the value {v}"
            )),
        }
    }

    fn eval(&self, z: &[f32], target: &Target, df_dz: &mut [f32]) -> OutputValue {
        let s = sign_of(target);
        let f = s * z[0] as f64;
        df_dz[0] = s as f32;
        OutputValue {
            f: f as f32,
            q: sigmoid(-f) as f32,
        }
    }

    fn loss(&self, z: &[f32], target: &Target, dl_dz: &mut [f32]) -> f32 {
        let s = sign_of(target);
        let f = s * z[0] as f64;
        dl_dz[0] = (-s * sigmoid(-f)) as f32;
        softplus(-f) as f32
    }

    fn curvature(&self, z: &[f32], target: &Target) -> Option<f32> {
        let f = sign_of(target) * z[0] as f64;
        Some((sigmoid(f) * sigmoid(-f)) as f32)
    }

    /// L = log(1 + e^{−sz}) has ∂²L/∂z² = σ(f)σ(−f) (s² = 1).
    fn loss_hvp(&self, z: &[f32], target: &Target, vs: &[f32], hv: &mut [f32]) -> bool {
        let f = sign_of(target) * z[0] as f64;
        let r = sigmoid(f) * sigmoid(-f);
        for (o, &v) in hv.iter_mut().zip(vs) {
            *o = (r * v as f64) as f32;
        }
        true
    }
}

/// Regression output: f = z (one prediction), trained with ½ (z − y)²; Q = y − z.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Regression;

fn value_of(target: &Target) -> f64 {
    match *target {
        Target::Value(v) => v as f64,
        Target::Class(_) => unreachable!("validated by OutputFn::validate"),
    }
}

impl OutputFn for Regression {
    fn validate(&self, n_outputs: usize, target: &Target) -> Result<(), String> {
        if n_outputs != 1 {
            return Err(format!(
                "regression needs 1 output, the model has {n_outputs}"
            ));
        }
        match *target {
            Target::Value(v) if v.is_finite() => Ok(()),
            Target::Value(v) => Err(format!("regression target {v} is not finite")),
            Target::Class(y) => Err(format!("regression needs a real target, got class {y}")),
        }
    }

    fn eval(&self, z: &[f32], target: &Target, df_dz: &mut [f32]) -> OutputValue {
        df_dz[0] = 1.0;
        OutputValue {
            f: z[0],
            q: (value_of(target) - z[0] as f64) as f32,
        }
    }

    fn loss(&self, z: &[f32], target: &Target, dl_dz: &mut [f32]) -> f32 {
        let r = z[0] as f64 - value_of(target);
        dl_dz[0] = r as f32;
        (0.5 * r * r) as f32
    }

    fn curvature(&self, _: &[f32], _: &Target) -> Option<f32> {
        Some(1.0)
    }

    /// ½ (z − y)² has Hessian 1.
    fn loss_hvp(&self, _: &[f32], _: &Target, vs: &[f32], hv: &mut [f32]) -> bool {
        hv.copy_from_slice(vs);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margin_q_is_one_minus_p_correct() {
        let z = [1.0f32, -0.5, 2.0];
        let mut g = [0.0; 3];
        let v = Margin.eval(&z, &Target::Class(2), &mut g);
        let e: Vec<f64> = z.iter().map(|&v| (v as f64).exp()).collect();
        let p2 = e[2] / e.iter().sum::<f64>();
        assert!((v.q as f64 - (1.0 - p2)).abs() < 1e-6);
        assert!((v.f as f64 - (2.0 - (e[0] + e[1]).ln())).abs() < 1e-6);
        assert_eq!(g[2], 1.0);
        assert!((g[0] + g[1] + 1.0).abs() < 1e-6);
    }

    /// r = ∂²L/∂f² against a central second difference of the loss along the direction in z
    /// that moves f at unit rate (only z_y moves f linearly for the margin when the others
    /// are fixed: ∂f/∂z_y = 1, and L depends on z_y only through f).
    #[test]
    fn curvature_matches_a_second_difference_of_the_loss() {
        let h = 5e-2f32;
        let second = |o: &dyn OutputFn, z: &[f32], t: &Target, i: usize| {
            let mut g = vec![0.0; z.len()];
            let mut at = |d: f32| {
                let mut w = z.to_vec();
                w[i] += d;
                o.loss(&w, t, &mut g) as f64
            };
            (at(h) - 2.0 * at(0.0) + at(-h)) / (h as f64 * h as f64)
        };
        let z = [0.3f32, -1.2, 0.8];
        let t = Target::Class(2);
        let r = Margin.curvature(&z, &t).unwrap() as f64;
        assert!((second(&Margin, &z, &t, 2) - r).abs() < 2e-3, "margin");
        for (t, s) in [(Target::Class(1), 0usize), (Target::Class(0), 0)] {
            let z = [0.7f32];
            let r = Logistic.curvature(&z, &t).unwrap() as f64;
            assert!(
                (second(&Logistic, &z, &t, s) - r).abs() < 2e-3,
                "logistic {t:?}"
            );
        }
        let z = [2.5f32];
        let r = Regression.curvature(&z, &Target::Value(1.0)).unwrap() as f64;
        assert!((second(&Regression, &z, &Target::Value(1.0), 0) - r).abs() < 1e-2);
    }

    /// ∇²_z L · v against a central difference of ∂L/∂z along v, for every built-in.
    #[test]
    fn loss_hvp_matches_a_difference_of_the_loss_gradient() {
        let cases: [(&dyn OutputFn, Vec<f32>, Target); 4] = [
            (&Margin, vec![0.3, -1.2, 0.8], Target::Class(2)),
            (&Logistic, vec![0.7], Target::Class(0)),
            (&Logistic, vec![-0.4], Target::Class(1)),
            (&Regression, vec![2.5], Target::Value(1.0)),
        ];
        for (o, z, t) in cases {
            let c = z.len();
            let vs: Vec<f32> = (0..2 * c).map(|i| (i as f32 * 0.7).sin()).collect();
            let mut hv = vec![0.0; 2 * c];
            assert!(o.loss_hvp(&z, &t, &vs, &mut hv));
            let h = 1e-2f32;
            for (v, hv) in vs.chunks(c).zip(hv.chunks(c)) {
                let grad_at = |s: f32| {
                    let zz: Vec<f32> = z.iter().zip(v).map(|(z, v)| z + s * v).collect();
                    let mut g = vec![0.0; c];
                    o.loss(&zz, &t, &mut g);
                    g
                };
                let (gp, gm) = (grad_at(h), grad_at(-h));
                for k in 0..c {
                    let fd = (gp[k] - gm[k]) / (2.0 * h);
                    assert!((fd - hv[k]).abs() < 1e-3, "{t:?} {k}: {fd} vs {}", hv[k]);
                }
            }
        }
    }

    #[test]
    fn stable_at_extreme_logits() {
        let z = [1e4f32, -1e4, 0.0];
        let mut g = [0.0; 3];
        let v = Margin.eval(&z, &Target::Class(1), &mut g);
        assert!(v.f.is_finite() && v.q.is_finite() && g.iter().all(|x| x.is_finite()));
        let l = Margin.loss(&z, &Target::Class(1), &mut g);
        assert!(l.is_finite() && g.iter().all(|x| x.is_finite()));
        let mut g1 = [0.0; 1];
        assert!(
            Logistic
                .loss(&[-1e4], &Target::Class(1), &mut g1)
                .is_finite()
        );
    }
}
