//! Output functions of token sequences, for causal language models.
//!
//! A causal LM reads tokens y_0 … y_{n−1} and gives, at position t, logits z_t ∈ R^V for the
//! next token y_{t+1}. Attribution asks how a training document changed the probability of a
//! sequence. [`SequenceLogProb`] defines, for a set S of counted positions,
//!
//! f = Σ_{t ∈ S} log p(y_{t+1} | y_{≤t}),  p = softmax(z_t),
//!
//! - for a **target** (a completion given a prompt), S = the positions that predict the
//!   completion's tokens: f is the completion's log-probability given the prompt;
//! - for a **training document**, S = every predicted token: f = log p(document) = −L, where L
//!   is the document's training loss (its summed token cross-entropy).
//!
//! **Q.** For a training document L = −f exactly, so Q = −∂L/∂f = 1, with no approximation:
//! the gradient of the document's loss is −∇f, which is what TRAK's one-step Newton estimate
//! uses (τ = φ(z)ᵀ(ΦᵀΦ + λI)⁻¹ φ_i Q_i with Q_i = 1). The estimator in the README is therefore
//! unchanged; only f differs between the target and the training set, as TRAK allows.
//!
//! **Why not per-token margins.** TRAK's classification output is the margin
//! log(p/(1 − p)), whose Q = 1 − p down-weights examples the model already fits. Summing
//! per-token margins over a document gives a scalar f whose loss is not a function of f (each
//! token has its own 1 − p_t), so a scalar Q would be an approximation of a per-token
//! weighting. The log-probability keeps the derivation exact; documents the model fits well
//! still have small gradients ∇f, since ∂ log p/∂z = onehot − p vanishes as p → 1.
//!
//! All arithmetic is in f64 with a stable log-sum-exp.

use serde::{Deserialize, Serialize};

use super::OutputValue;

/// f = Σ over counted positions of log p(next token); see the module docs. Q = 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequenceLogProb;

impl SequenceLogProb {
    /// Checks shapes and tokens: `z` holds T × `vocab` logits (row-major), `next` and
    /// `counted` have T entries, every counted `next[t]` is below `vocab`, and at least one
    /// position counts.
    pub fn validate(
        &self,
        z_len: usize,
        vocab: usize,
        next: &[u32],
        counted: &[bool],
    ) -> Result<(), String> {
        let t = next.len();
        if vocab == 0 || z_len != t * vocab || counted.len() != t {
            return Err(format!(
                "{z_len} logits, {t} next tokens and {} counted flags do not fit a vocabulary of {vocab}",
                counted.len()
            ));
        }
        if let Some(p) = (0..t).find(|&p| counted[p] && next[p] as usize >= vocab) {
            return Err(format!(
                "token {} at position {p} is outside the vocabulary of {vocab}",
                next[p]
            ));
        }
        if !counted.iter().any(|&c| c) {
            return Err("no position counts: the sequence's f would be empty".into());
        }
        Ok(())
    }

    /// f, Q = 1, and ∂f/∂z into `df_dz` (zero on positions that do not count). Call
    /// [`SequenceLogProb::validate`] first.
    pub fn eval(
        &self,
        z: &[f32],
        vocab: usize,
        next: &[u32],
        counted: &[bool],
        df_dz: &mut [f32],
    ) -> OutputValue {
        let mut f = 0.0f64;
        for ((row, grad), (&y, &c)) in z
            .chunks(vocab)
            .zip(df_dz.chunks_mut(vocab))
            .zip(next.iter().zip(counted))
        {
            if !c {
                grad.fill(0.0);
                continue;
            }
            let m = row
                .iter()
                .map(|&v| v as f64)
                .fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
            let y = y as usize;
            f += row[y] as f64 - m - s.ln();
            for (j, (g, &v)) in grad.iter_mut().zip(row).enumerate() {
                let p = (v as f64 - m).exp() / s;
                *g = ((j == y) as u8 as f64 - p) as f32;
            }
        }
        OutputValue {
            f: f as f32,
            q: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f and ∂f/∂z against central differences; Q = −∂L/∂f with L = −f.
    #[test]
    fn gradient_matches_finite_differences() {
        let (t, v) = (3, 4);
        let z: Vec<f32> = (0..t * v)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) * 0.3)
            .collect();
        let (next, counted) = ([2u32, 0, 3], [false, true, true]);
        SequenceLogProb
            .validate(z.len(), v, &next, &counted)
            .unwrap();
        let mut g = vec![0.0; t * v];
        let out = SequenceLogProb.eval(&z, v, &next, &counted, &mut g);
        assert_eq!(out.q, 1.0);
        assert!(
            g[..v].iter().all(|&x| x == 0.0),
            "uncounted position has no gradient"
        );
        for i in 0..t * v {
            let mut zp = z.clone();
            let mut zm = z.clone();
            zp[i] += 1e-2;
            zm[i] -= 1e-2;
            let mut scratch = vec![0.0; t * v];
            let fp = SequenceLogProb
                .eval(&zp, v, &next, &counted, &mut scratch)
                .f as f64;
            let fm = SequenceLogProb
                .eval(&zm, v, &next, &counted, &mut scratch)
                .f as f64;
            let fd = (fp - fm) / 2e-2;
            assert!(
                (fd - g[i] as f64).abs() < 1e-3,
                "entry {i}: {fd} vs {}",
                g[i]
            );
        }
        // f is the sum of the counted positions' log-softmax entries.
        let lp = |row: &[f32], y: usize| {
            let s: f64 = row.iter().map(|&x| (x as f64).exp()).sum();
            row[y] as f64 - s.ln()
        };
        let want = lp(&z[v..2 * v], 0) + lp(&z[2 * v..], 3);
        assert!((out.f as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn bad_shapes_and_tokens_are_named() {
        let s = SequenceLogProb;
        assert!(s.validate(8, 4, &[1, 2], &[true]).is_err());
        assert!(
            s.validate(8, 4, &[1, 9], &[true, true])
                .unwrap_err()
                .contains("token 9")
        );
        assert!(s.validate(8, 4, &[1, 9], &[true, false]).is_ok());
        assert!(
            s.validate(8, 4, &[1, 2], &[false, false])
                .unwrap_err()
                .contains("no position")
        );
    }
}
