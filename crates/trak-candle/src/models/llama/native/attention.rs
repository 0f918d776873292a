//! Causal self-attention with grouped key/value heads, in blocks of [`ROWS`] query positions:
//! a block's scores reach only the keys up to its last position (the masked upper triangle
//! is never computed), the forward pass runs its blocks in parallel, the backward pass its
//! heads. No head's `T × T` probabilities are kept: the backward pass recomputes each
//! block's (a 512-token document would keep 283 MB of them in SmolLM2).
//!
//! The blocks are fixed (positions 0..64, 64..128, …) and every block's and head's results
//! are combined in a fixed order, so the bits do not depend on the thread count.

use rayon::prelude::*;

use super::exp::{exp_sum, max};
use super::ops::{gemm, view, view_mut};

/// Query positions per block.
const ROWS: usize = 64;

/// The attention's shape: query heads, key/value heads, head width.
#[derive(Debug, Clone, Copy)]
pub(super) struct Heads {
    pub n: usize,
    pub kv: usize,
    pub hd: usize,
}

impl Heads {
    fn q_dim(&self) -> usize {
        self.n * self.hd
    }

    fn kv_dim(&self) -> usize {
        self.kv * self.hd
    }

    /// The key/value head serving query head `h` (Hugging Face's `repeat_kv`).
    fn group(&self, h: usize) -> usize {
        h / (self.n / self.kv)
    }
}

/// Query, key and value rows of one sequence (rotary embeddings applied to q and k).
#[derive(Debug, Clone, Copy)]
pub(super) struct Qkv<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
}

/// Head `h`'s probabilities for the query positions `r0..r1` into `p` (`(r1 − r0) × r1`,
/// zero past each row's own position): `softmax(q_h k_gᵀ / √hd)` over the keys up to it.
fn probs(p: &mut [f32], x: Qkv<'_>, (shape, h): (Heads, usize), (r0, r1): (usize, usize)) {
    let (hd, g, b) = (shape.hd, shape.group(h), r1 - r0);
    let q = view(&x.q[r0 * shape.q_dim() + h * hd..], b, hd, shape.q_dim());
    let k = view(&x.k[g * hd..], r1, hd, shape.kv_dim());
    gemm(view_mut(p, b, r1, r1), q, k.transpose(), false);
    let sq = (hd as f32).sqrt();
    for (i, row) in p.chunks_mut(r1).take(b).enumerate() {
        let (live, masked) = row.split_at_mut(r0 + i + 1);
        live.iter_mut().for_each(|v| *v /= sq);
        let inv = (1.0 / exp_sum(live, max(live))) as f32;
        live.iter_mut().for_each(|v| *v *= inv);
        masked.fill(0.0);
    }
}

/// The attention output `y` (`t × q_dim`): head h's columns `P_h v_g`, blocks of query
/// positions in parallel.
pub(super) fn forward(y: &mut [f32], x: Qkv<'_>, shape: Heads) {
    let (hd, qd, kvd) = (shape.hd, shape.q_dim(), shape.kv_dim());
    y.par_chunks_mut(ROWS * qd)
        .enumerate()
        .for_each(|(blk, y)| {
            let (r0, b) = (blk * ROWS, y.len() / qd);
            let r1 = r0 + b;
            let mut p = vec![0.0; b * r1];
            for h in 0..shape.n {
                probs(&mut p, x, (shape, h), (r0, r1));
                let v = view(&x.v[shape.group(h) * hd..], r1, hd, kvd);
                gemm(
                    view_mut(&mut y[h * hd..], b, hd, qd),
                    view(&p, b, r1, r1),
                    v,
                    false,
                );
            }
        });
}

/// Head `h`'s gradients from `dy`: its q columns, and its share of its key/value head's
/// k and v gradients (`t × hd` each). Per block, with `P` recomputed and
/// `dP = dy_h v_gᵀ`: `dv += Pᵀ dy_h`, `dS = P ⊙ (dP − rowsum(P ⊙ dP)) / √hd`,
/// `dq_h = dS k_g`, `dk += dSᵀ q_h`.
fn head_backward(dy: &[f32], x: Qkv<'_>, (shape, h): (Heads, usize), t: usize) -> [Vec<f32>; 3] {
    let (hd, qd, kvd, g) = (shape.hd, shape.q_dim(), shape.kv_dim(), shape.group(h));
    let [mut dq, mut dk, mut dv] = [(); 3].map(|_| vec![0.0f32; t * hd]);
    let (mut p, mut dp) = (vec![0.0; ROWS * t], vec![0.0; ROWS * t]);
    let sq = (hd as f32).sqrt();
    for r0 in (0..t).step_by(ROWS) {
        let r1 = (r0 + ROWS).min(t);
        let b = r1 - r0;
        probs(&mut p, x, (shape, h), (r0, r1));
        let dy_h = view(&dy[r0 * qd + h * hd..], b, hd, qd);
        let v = view(&x.v[g * hd..], r1, hd, kvd);
        gemm(view_mut(&mut dp, b, r1, r1), dy_h, v.transpose(), false);
        let pm = view(&p, b, r1, r1);
        gemm(view_mut(&mut dv, r1, hd, hd), pm.transpose(), dy_h, true);
        for (i, (dr, pr)) in dp.chunks_mut(r1).zip(p.chunks(r1)).take(b).enumerate() {
            let live = r0 + i + 1;
            let c: f32 = dr[..live].iter().zip(&pr[..live]).map(|(d, p)| d * p).sum();
            for (d, &p) in dr[..live].iter_mut().zip(&pr[..live]) {
                *d = p * (*d - c) / sq;
            }
            dr[live..].fill(0.0);
        }
        let ds = view(&dp, b, r1, r1);
        let k = view(&x.k[g * hd..], r1, hd, kvd);
        gemm(view_mut(&mut dq[r0 * hd..], b, hd, hd), ds, k, false);
        let q = view(&x.q[r0 * qd + h * hd..], b, hd, qd);
        gemm(view_mut(&mut dk, r1, hd, hd), ds.transpose(), q, true);
    }
    [dq, dk, dv]
}

/// Gradients of q, k and v (before the rotary embedding's backward) from the output's
/// `dy`, all overwritten: heads in parallel, a key/value head's shares added in head order.
pub(super) fn backward(
    (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
    dy: &[f32],
    x: Qkv<'_>,
    (shape, t): (Heads, usize),
) {
    let (hd, qd, kvd) = (shape.hd, shape.q_dim(), shape.kv_dim());
    let parts: Vec<[Vec<f32>; 3]> = (0..shape.n)
        .into_par_iter()
        .map(|h| head_backward(dy, x, (shape, h), t))
        .collect();
    dk.fill(0.0);
    dv.fill(0.0);
    for (h, [pq, pk, pv]) in parts.iter().enumerate() {
        let g = shape.group(h);
        for r in 0..t {
            dq[r * qd + h * hd..][..hd].copy_from_slice(&pq[r * hd..(r + 1) * hd]);
            let (k, v) = (&pk[r * hd..(r + 1) * hd], &pv[r * hd..(r + 1) * hd]);
            let at = r * kvd + g * hd;
            dk[at..at + hd].iter_mut().zip(k).for_each(|(a, b)| *a += b);
            dv[at..at + hd].iter_mut().zip(v).for_each(|(a, b)| *a += b);
        }
    }
}
