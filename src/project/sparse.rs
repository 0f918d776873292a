//! Sparse Johnson–Lindenstrauss projection: one pass over the gradient, no multiplications
//! by a dense matrix.
//!
//! # The matrix
//! The block construction of Kane and Nelson ("Sparser Johnson–Lindenstrauss transforms",
//! J. ACM 2014): the k output coordinates are split into s blocks, block r covering columns
//! `r·k/s .. (r+1)·k/s` (integer division). Input coordinate i has exactly one non-zero in each
//! block, at column h_r(i), with value σ_r(i)/√s, σ_r(i) = ±1. So every row of P has s
//! non-zeros, in distinct columns, and E\[P Pᵀ\] = I: inner products are unbiased, with the
//! same variance as a dense Rademacher projection, (‖a‖²‖b‖² + (aᵀb)² − 2Σ aᵢ²bᵢ²)/k, when s
//! divides k.
//!
//! The hashes come from SplitMix64 (a seekable generator: its n-th output is a pure function
//! of (seed, n)). With a key derived from (seed, checkpoint), the 64-bit word
//! w = output number n + 1 of SplitMix64 seeded with the key, n = i·⌈s/2⌉ + q, gives the hashes of blocks 2q (low 32 bits) and
//! 2q + 1 (high 32 bits); of each 32-bit half, bit 31 is the sign (set: −) and the low 31
//! bits u give the column `block_start + ⌊u · block_len / 2³¹⌋`.
//!
//! # The computation
//! Input coordinates are split into fixed chunks of [`SPARSE_CHUNK`]; rayon runs one task per
//! chunk. A task fills a small table of columns and values for 1,024 coordinates at a time
//! and scatters every example's gradient entries through it into a B × k partial sum. The
//! partial sums are added in chunk order. Each feature is therefore the same sum in the same
//! order whatever the thread count, batch size or row grouping: bit-identical features.
//! Zero gradient entries are skipped (ReLU networks have many), which changes nothing but the
//! time.

use ndarray::{ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::philox::splitmix64;
use super::{Projector, checked_batch};
use crate::error::{Result, invalid};

/// Input coordinates per parallel task. Part of the definition of the floating-point sums
/// (partial sums are formed per chunk), so it is a constant, not a tuning knob.
pub const SPARSE_CHUNK: usize = 32_768;
/// Coordinates whose hashes are tabulated at once inside a task (fits in L1/L2).
const SUB: usize = 1024;
/// The largest number of non-zeros per input coordinate accepted.
pub const MAX_NNZ: usize = 64;

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// A sparse p × k random projection with s non-zeros ±1/√s per input coordinate. See the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct SparseProjector {
    p: usize,
    k: usize,
    s: usize,
    seed: u64,
    scale: f32,
    /// (first column, width) of each of the s column blocks.
    blocks: Vec<(u64, u64)>,
}

impl SparseProjector {
    /// A projector from R^p to R^k with `s` non-zeros per input coordinate (1 ≤ s ≤ k,
    /// s ≤ [`MAX_NNZ`]; s ∈ {1, 2, 4, 8} are the usual choices), keyed by `seed`.
    pub fn new(p: usize, k: usize, s: usize, seed: u64) -> Result<Self> {
        if p == 0 {
            return Err(invalid("projector input dimension p", 0, "p ≥ 1"));
        }
        if k == 0 {
            return Err(invalid("projection dimension k", 0, "k ≥ 1"));
        }
        if s == 0 || s > k || s > MAX_NNZ {
            return Err(invalid(
                "sparse non-zeros per coordinate s",
                s,
                format!("1 ≤ s ≤ {}", k.min(MAX_NNZ)),
            ));
        }
        if k > u32::MAX as usize {
            return Err(invalid("projection dimension k", k, "k ≤ 2³² − 1"));
        }
        Ok(Self {
            p,
            k,
            s,
            seed,
            scale: (1.0 / (s as f64).sqrt()) as f32,
            blocks: (0..s as u64)
                .map(|r| {
                    let (start, end) = (r * k as u64 / s as u64, (r + 1) * k as u64 / s as u64);
                    (start, end - start)
                })
                .collect(),
        })
    }

    /// Non-zeros per input coordinate.
    pub fn nnz(&self) -> usize {
        self.s
    }

    fn key(&self, checkpoint: u64) -> u64 {
        splitmix64(self.seed ^ splitmix64(checkpoint ^ 0x5452_414B_5350_4152))
    }

    /// Fills `cols`/`vals` (length n·s) with the non-zeros of input coordinates i0..i0+n.
    #[inline(always)]
    fn fill(&self, key: u64, i0: usize, n: usize, cols: &mut [u32], vals: &mut [f32]) {
        let s = self.s;
        let words = s.div_ceil(2) as u64;
        for ii in 0..n {
            let base = ((i0 + ii) as u64).wrapping_mul(words);
            for q in 0..words {
                let w = splitmix64(key.wrapping_add(base.wrapping_add(q).wrapping_mul(GAMMA)));
                for (h, half) in [w as u32, (w >> 32) as u32].into_iter().enumerate() {
                    let r = 2 * q as usize + h;
                    if r == s {
                        break;
                    }
                    let (start, width) = self.blocks[r];
                    let col = start + (((half & 0x7fff_ffff) as u64 * width) >> 31);
                    cols[ii * s + r] = col as u32;
                    vals[ii * s + r] = if half >> 31 == 1 {
                        -self.scale
                    } else {
                        self.scale
                    };
                }
            }
        }
    }

    /// The non-zeros (column, value) of row i of P for `checkpoint`.
    pub fn row_entries(&self, checkpoint: u64, i: usize) -> Vec<(usize, f32)> {
        let mut cols = vec![0u32; self.s];
        let mut vals = vec![0f32; self.s];
        self.fill(self.key(checkpoint), i, 1, &mut cols, &mut vals);
        cols.into_iter().map(|c| c as usize).zip(vals).collect()
    }

    /// The whole matrix P (p × k) for `checkpoint`, materialised. For tests and small problems.
    pub fn matrix(&self, checkpoint: u64) -> ndarray::Array2<f32> {
        let mut m = ndarray::Array2::zeros((self.p, self.k));
        for i in 0..self.p {
            for (c, v) in self.row_entries(checkpoint, i) {
                m[(i, c)] = v;
            }
        }
        m
    }

    /// The partial sums of input coordinates `c0..c1` for every example: B × k, row-major.
    fn chunk(&self, key: u64, g: &ArrayView2<'_, f32>, c0: usize, c1: usize) -> Vec<f32> {
        let (b, k, s) = (g.nrows(), self.k, self.s);
        let mut acc = vec![0.0f32; b * k];
        let mut cols = vec![0u32; SUB * s];
        let mut vals = vec![0.0f32; SUB * s];
        let mut i0 = c0;
        while i0 < c1 {
            let n = SUB.min(c1 - i0);
            self.fill(key, i0, n, &mut cols, &mut vals);
            for (row, out) in acc.chunks_exact_mut(k).enumerate() {
                let gr = &g.row(row).to_slice().expect("standard layout")[i0..i0 + n];
                scatter(gr, &cols[..n * s], &vals[..n * s], s, out);
            }
            i0 += n;
        }
        acc
    }
}

/// out[cols[i·s + r]] += g[i] · vals[i·s + r] for every i, r, in order; zero g[i] skipped.
#[inline(always)]
fn scatter(g: &[f32], cols: &[u32], vals: &[f32], s: usize, out: &mut [f32]) {
    match s {
        1 => scatter_n::<1>(g, cols, vals, out),
        2 => scatter_n::<2>(g, cols, vals, out),
        4 => scatter_n::<4>(g, cols, vals, out),
        8 => scatter_n::<8>(g, cols, vals, out),
        _ => {
            for (ii, &gv) in g.iter().enumerate() {
                if gv != 0.0 {
                    for r in 0..s {
                        out[cols[ii * s + r] as usize] += gv * vals[ii * s + r];
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn scatter_n<const S: usize>(g: &[f32], cols: &[u32], vals: &[f32], out: &mut [f32]) {
    for ((&gv, c), v) in g.iter().zip(cols.chunks_exact(S)).zip(vals.chunks_exact(S)) {
        if gv != 0.0 {
            for r in 0..S {
                out[c[r] as usize] += gv * v[r];
            }
        }
    }
}

impl Projector for SparseProjector {
    fn input_dim(&self) -> usize {
        self.p
    }

    fn output_dim(&self) -> usize {
        self.k
    }

    fn project(
        &self,
        checkpoint: u64,
        grads: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        let Some(g) = checked_batch(self.p, self.k, &grads, &out)? else {
            return Ok(());
        };
        let (g, b) = (g.view(), grads.nrows());
        let key = self.key(checkpoint);
        let parts: Vec<Vec<f32>> = (0..self.p.div_ceil(SPARSE_CHUNK))
            .into_par_iter()
            .map(|c| {
                let c0 = c * SPARSE_CHUNK;
                self.chunk(key, &g, c0, (c0 + SPARSE_CHUNK).min(self.p))
            })
            .collect();
        let mut parts = parts.into_iter();
        let first = parts.next().expect("p > 0 gives one chunk");
        let mut sum = ndarray::Array2::from_shape_vec((b, self.k), first).expect("chunk shape");
        for part in parts {
            let part = ndarray::ArrayView2::from_shape((b, self.k), &part).expect("chunk shape");
            sum += &part;
        }
        out.assign(&sum);
        Ok(())
    }
}
