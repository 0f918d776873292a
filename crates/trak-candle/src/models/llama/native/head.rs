//! The output head and the objective, a few positions at a time: logits of `ROWS` positions
//! (never all `T × V` at once), f's gradient in them, and its gradient at the final norm's
//! output. Positions before the first counted one (a query's prompt) get no logits at all.
//!
//! f is [`trak::output::SequenceLogProb`]'s, Σ of the counted positions' log p(next token),
//! whose gradient in the logits is `onehot(next) − softmax`, and Q = 1. That objective
//! computes it in f64 with two `exp` per logit; here the softmax is f32 with one vectorised
//! `exp` per logit ([`super::exp`]): the same gradient to about 1e-6 (the tests compare the
//! output gradients of every layer with the candle route's).

use rayon::prelude::*;

use super::exp::{exp_sum, max};
use super::ops::{linear, linear_back};

/// Positions per head GEMM (blocks of a sequence's positions run in parallel, each with
/// its own logits: `ROWS × vocab` twice).
pub(super) const ROWS: usize = 32;

/// The gradient of f at the head's input `hf` (`t × d`) into `dhf` (zero where no position
/// counts), given the next tokens and which count (from [`crate::TokenSeq::next_tokens`]);
/// returns f, Σ of the counted positions' log p(next token).
pub(super) fn backward(
    dhf: &mut [f32],
    hf: &[f32],
    (head, vocab): (&[f32], usize),
    (next, counted): (&[u32], &[bool]),
) -> f64 {
    let d = head.len() / vocab;
    let t = hf.len() / d;
    dhf.fill(0.0);
    let first = counted.iter().position(|&c| c).unwrap_or(t);
    let scratch = || (vec![0.0f32; ROWS * vocab], vec![0.0f32; ROWS * vocab]);
    let parts: Vec<f64> = dhf[first * d..]
        .par_chunks_mut(ROWS * d)
        .zip(hf[first * d..].par_chunks(ROWS * d))
        .enumerate()
        .map_init(scratch, |(z, dz), (blk, (dhf, hf))| {
            let (r0, c) = (first + blk * ROWS, hf.len() / d);
            let (z, dz) = (&mut z[..c * vocab], &mut dz[..c * vocab]);
            linear(z, hf, (head, None), c);
            let rows = z.chunks_mut(vocab).zip(dz.chunks_mut(vocab));
            let mut f = 0.0;
            for ((z, g), t) in rows.zip(r0..r0 + c) {
                f += softmax_gradient(g, z, next[t] as usize, counted[t]);
            }
            linear_back(dhf, dz, head, c, false);
            f
        })
        .collect();
    parts.iter().sum()
}

/// `g = onehot(y) − softmax(z)` (zero when the position does not count); `z` is overwritten.
/// Returns log p_y (0 when the position does not count).
/// `1 − p_y` is computed as the other tokens' share, `Σ_{j≠y} e_j / Σ_j e_j`: as
/// `1 − e_y / Σ` it would lose the digits a confident prediction (p_y near 1) keeps, and with
/// them the accuracy of every gradient below the head.
fn softmax_gradient(g: &mut [f32], z: &mut [f32], y: usize, counted: bool) -> f64 {
    if !counted {
        g.fill(0.0);
        return 0.0;
    }
    let m = max(z);
    let (before, rest) = z.split_at_mut(y);
    let (zy, after) = rest.split_first_mut().expect("y is in the vocabulary");
    let others = exp_sum(before, m) + exp_sum(after, m);
    let shifted = (*zy - m) as f64;
    *zy = (*zy - m).exp();
    let sum = others + *zy as f64;
    let inv = (1.0 / sum) as f32;
    g.iter_mut()
        .zip(z.iter())
        .for_each(|(g, e)| *g = -(e * inv));
    g[y] = (others / sum) as f32;
    shifted - sum.ln()
}
