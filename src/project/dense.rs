//! Dense random projection with on-the-fly Philox tiles.
//!
//! # The matrix
//! For a projector with seed s and a checkpoint id c, the Philox key is derived from (s, c)
//! by SplitMix64 mixing, and entry P[i, j] (row i < p, column j < k) is
//!
//! - Rademacher: bit (j mod 128) of Philox(key, counter = [j / 128, i mod 2³², i / 2³², 0]),
//!   read as +1/√k if set and −1/√k otherwise;
//! - Gaussian: Box–Muller (f32, on the top 24 bits of each word, with IEEE-exact polynomial
//!   ln/sin/cos so the values do not depend on the platform's maths library) on words of
//!   Philox(key, [j / 4, i mod 2³², i / 2³², 1]): columns 4q, 4q+1 use words 0, 1 and
//!   columns 4q+2, 4q+3 use words 2, 3; scaled by 1/√k.
//!
//! So P is a pure function of (seed, checkpoint, p, k), independent of tiling and threads.
//!
//! # The computation
//! Columns are split into blocks of 256 (`COL_BLOCK`); rayon runs one task per block. A task
//! walks the p rows in tiles of 256 (`ROW_TILE`): it generates the tile once (packed in strips of
//! 16 (`NR`) columns) and applies it to every example of the batch with an `MR × NR`
//! register-blocked kernel. Each output entry is accumulated over i = 0, 1, …, p−1 in order,
//! one multiply-add at a time, whatever the batch size, row grouping or thread count: the
//! features are bit-identical for any of them.

use ndarray::{Array2, ArrayView2, ArrayViewMut2, s};
use rayon::prelude::*;

use super::philox::{philox4x32_10, philox4x32_10_lanes, splitmix64};
use super::{Distribution, Projector, checked_batch};

use crate::error::{Result, invalid};

/// Output columns handled by one parallel task (a multiple of 128 and of [`NR`]).
pub(crate) const COL_BLOCK: usize = 256;
/// Rows of P generated at once.
pub(crate) const ROW_TILE: usize = 256;
/// Columns per register block of the kernel.
pub(crate) const NR: usize = 16;
/// Examples per register block of the kernel.
pub(crate) const MR: usize = 4;

/// A dense p × k random projection, never stored whole. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct DenseProjector {
    p: usize,
    k: usize,
    dist: Distribution,
    seed: u64,
    scale: f32,
}

/// Multiply-add flavour: fused where the CPU has FMA, plain otherwise. One flavour is chosen
/// per machine, so results are reproducible on that machine.
pub(crate) trait Arith {
    fn madd(a: f32, b: f32, c: f32) -> f32;
}

#[allow(dead_code)] // unused on targets without an FMA path
pub(crate) struct Fused;
impl Arith for Fused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

#[allow(dead_code)] // unused on targets where FMA is always present
pub(crate) struct Unfused;
impl Arith for Unfused {
    #[inline(always)]
    fn madd(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[cfg(target_arch = "aarch64")]
pub(crate) type Portable = Fused;
#[cfg(not(target_arch = "aarch64"))]
pub(crate) type Portable = Unfused;

/// The features a dense projection of dimension `k` would give, from features of a larger
/// dimension k₀ = `features.ncols()` under the same seed: entry (i, j) of the k-dimensional
/// matrix is entry (i, j) of the k₀-dimensional one rescaled from 1/√k₀ to 1/√k, so these are
/// the first k columns times √(k₀/k). Equal to projecting at k up to f32 rounding; one
/// projection at the largest k thus serves a sweep over k.
pub fn prefix_features(features: ArrayView2<'_, f32>, k: usize) -> Result<Array2<f32>> {
    let cur = features.ncols();
    if k == 0 || k > cur {
        return Err(invalid("prefix dimension", k, format!("1 ≤ k ≤ {cur}")));
    }
    let scale = ((cur as f64) / (k as f64)).sqrt() as f32;
    Ok(features.slice(s![.., ..k]).mapv(|v| v * scale))
}

impl DenseProjector {
    /// A projector from R^p to R^k with entries of `dist`, keyed by `seed`.
    pub fn new(p: usize, k: usize, dist: Distribution, seed: u64) -> Result<Self> {
        if p == 0 {
            return Err(invalid("projector input dimension p", 0, "p ≥ 1"));
        }
        if k == 0 {
            return Err(invalid("projection dimension k", 0, "k ≥ 1"));
        }
        if k.div_ceil(4) > u32::MAX as usize {
            return Err(invalid("projection dimension k", k, "k ≤ 4·(2³² − 1)"));
        }
        Ok(Self {
            p,
            k,
            dist,
            seed,
            scale: (1.0 / (k as f64).sqrt()) as f32,
        })
    }

    /// The entry distribution.
    pub fn distribution(&self) -> Distribution {
        self.dist
    }

    fn key(&self, checkpoint: u64) -> [u32; 2] {
        let h = splitmix64(self.seed ^ splitmix64(checkpoint ^ 0x5452_414B_5052_4F4A));
        [h as u32, (h >> 32) as u32]
    }

    /// Entry P[i, j] for `checkpoint`, including the 1/√k scaling.
    pub fn entry(&self, checkpoint: u64, i: usize, j: usize) -> f32 {
        let key = self.key(checkpoint);
        match self.dist {
            Distribution::Rademacher => {
                let w = philox4x32_10(rademacher_ctr(i, j / 128), key);
                let t = j % 128;
                if (w[t / 32] >> (t % 32)) & 1 == 1 {
                    self.scale
                } else {
                    -self.scale
                }
            }
            Distribution::Gaussian => gaussian_quad(key, i, j / 4, self.scale)[j % 4],
        }
    }

    /// The whole matrix P (p × k) for `checkpoint`, materialised. For tests and small problems.
    pub fn matrix(&self, checkpoint: u64) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_fn((self.p, self.k), |(i, j)| self.entry(checkpoint, i, j))
    }

    /// Fills a packed tile of rows `r0..r0+rt` and columns `c0..c0+COL_BLOCK`: strip `s`
    /// (columns `c0 + s·NR ..`) occupies `tile[s·rt·NR .. (s+1)·rt·NR]`, row-major within the
    /// strip. Columns ≥ k are zero.
    #[inline(always)]
    fn fill_tile(&self, key: [u32; 2], r0: usize, rt: usize, c0: usize, tile: &mut [f32]) {
        let strip_len = rt * NR;
        match self.dist {
            Distribution::Rademacher => {
                let (pos, neg) = (self.scale, -self.scale);
                for ii in 0..rt {
                    for chunk in 0..COL_BLOCK / 128 {
                        let w = philox4x32_10(rademacher_ctr(r0 + ii, c0 / 128 + chunk), key);
                        for sub in 0..128 / NR {
                            let bitpos = sub * NR;
                            let bits = w[bitpos / 32] >> (bitpos % 32);
                            let strip = chunk * (128 / NR) + sub;
                            let dst = &mut tile[strip * strip_len + ii * NR..][..NR];
                            for (t, d) in dst.iter_mut().enumerate() {
                                *d = if (bits >> t) & 1 == 1 { pos } else { neg };
                            }
                        }
                    }
                }
            }
            Distribution::Gaussian => {
                const L: usize = GAUSS_LANES;
                for ii in 0..rt {
                    for group in 0..COL_BLOCK / (4 * L) {
                        let q0 = group * L;
                        let v = gaussian_lanes::<L>(key, r0 + ii, c0 / 4 + q0, self.scale);
                        #[allow(clippy::needless_range_loop)] // l indexes lanes of v[w] and columns
                        for l in 0..L {
                            let lc = (q0 + l) * 4;
                            let dst = &mut tile[(lc / NR) * strip_len + ii * NR + lc % NR..][..4];
                            for (w, d) in dst.iter_mut().enumerate() {
                                *d = v[w][l];
                            }
                        }
                    }
                }
            }
        }
        // Zero the padding columns of the last block.
        let valid = self.k.saturating_sub(c0).min(COL_BLOCK);
        if valid < COL_BLOCK {
            for lc in valid..COL_BLOCK {
                for ii in 0..rt {
                    tile[(lc / NR) * strip_len + ii * NR + lc % NR] = 0.0;
                }
            }
        }
    }

    /// Projects the batch onto columns `c0..c0+COL_BLOCK`; returns a B × COL_BLOCK row-major block.
    #[inline(always)]
    fn block_impl<A: Arith>(&self, key: [u32; 2], g: &ArrayView2<'_, f32>, c0: usize) -> Vec<f32> {
        let b = g.nrows();
        let mut acc = vec![0.0f32; b * COL_BLOCK];
        let mut tile = vec![0.0f32; ROW_TILE * COL_BLOCK];
        let mut r0 = 0;
        while r0 < self.p {
            let rt = ROW_TILE.min(self.p - r0);
            let tile = &mut tile[..rt * COL_BLOCK];
            self.fill_tile(key, r0, rt, c0, tile);
            for (s, strip) in tile.chunks_exact(rt * NR).enumerate() {
                let mut row = 0;
                while row + MR <= b {
                    let rows: [&[f32]; MR] = std::array::from_fn(|r| row_slice(g, row + r, r0, rt));
                    kernel::<A, MR>(&rows, strip, &mut acc[row * COL_BLOCK + s * NR..]);
                    row += MR;
                }
                while row < b {
                    kernel::<A, 1>(
                        &[row_slice(g, row, r0, rt)],
                        strip,
                        &mut acc[row * COL_BLOCK + s * NR..],
                    );
                    row += 1;
                }
            }
            r0 += rt;
        }
        acc
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    fn block_avx2(&self, key: [u32; 2], g: &ArrayView2<'_, f32>, c0: usize) -> Vec<f32> {
        self.block_impl::<Fused>(key, g, c0)
    }

    fn block(&self, key: [u32; 2], g: &ArrayView2<'_, f32>, c0: usize) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features `block_avx2` is compiled for.
            return unsafe { self.block_avx2(key, g, c0) };
        }
        self.block_impl::<Portable>(key, g, c0)
    }
}

#[inline(always)]
fn rademacher_ctr(i: usize, chunk: usize) -> [u32; 4] {
    let i = i as u64;
    [chunk as u32, i as u32, (i >> 32) as u32, 0]
}

/// Quads of columns generated together by the vectorised Gaussian tile fill.
const GAUSS_LANES: usize = 8;

/// Four scaled standard normals for columns 4·quad .. 4·quad+4 of row i: Box–Muller on the
/// top 24 bits of the Philox words (tails truncated at √(50 ln 2) ≈ 5.9 standard deviations).
/// Only IEEE-exact operations (+, −, ×, ÷, √) are used — no platform `ln`/`sin`/`cos`, whose
/// last bits vary between C libraries — so the matrix is the same on every machine.
#[inline(always)]
fn gaussian_quad(key: [u32; 2], i: usize, quad: usize, scale: f32) -> [f32; 4] {
    let v = gaussian_lanes::<1>(key, i, quad, scale);
    [v[0][0], v[1][0], v[2][0], v[3][0]]
}

/// [`gaussian_quad`] for quads `quad0 .. quad0 + L` of row i, as `out[column in quad][lane]`:
/// the same operations lane by lane (so the same bits), in a form the compiler vectorises.
#[inline(always)]
fn gaussian_lanes<const L: usize>(
    key: [u32; 2],
    i: usize,
    quad0: usize,
    scale: f32,
) -> [[f32; L]; 4] {
    let i = i as u64;
    let w = philox4x32_10_lanes(
        [
            std::array::from_fn(|l| (quad0 + l) as u32),
            [i as u32; L],
            [(i >> 32) as u32; L],
            [1; L],
        ],
        key,
    );
    let mut out = [[0.0f32; L]; 4];
    const INV_2_24: f32 = 1.0 / 16_777_216.0;
    for pair in 0..2 {
        for l in 0..L {
            let u1 = ((w[2 * pair][l] >> 8) as f32 + 0.5) * INV_2_24; // (0, 1): log is finite
            let r = (-2.0 * ln_f32(u1)).sqrt() * scale;
            let (sin, cos) = sin_cos_turns(w[2 * pair + 1][l] >> 8);
            out[2 * pair][l] = r * cos;
            out[2 * pair + 1][l] = r * sin;
        }
    }
    out
}

/// ln x for finite x > 0 (normal), relative error ≈ 1e-7: x = m·2^e with m ∈ [√½, √2), and
/// ln m = 2 atanh s, s = (m − 1)/(m + 1), |s| ≤ 0.172, by its odd series to s¹¹.
#[inline(always)]
fn ln_f32(x: f32) -> f32 {
    let bits = x.to_bits();
    let m1 = f32::from_bits((bits & 0x007f_ffff) | 0x3f80_0000); // [1, 2)
    // Branch-free (for vectorisation): halve m and bump e when m > √2.
    let big = m1 > std::f32::consts::SQRT_2;
    let e = ((bits >> 23) & 0xff) as i32 - 127 + i32::from(big);
    let m = if big { m1 * 0.5 } else { m1 };
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    const A: [f32; 5] = [1.0 / 3.0, 1.0 / 5.0, 1.0 / 7.0, 1.0 / 9.0, 1.0 / 11.0];
    let poly = 1.0 + s2 * (A[0] + s2 * (A[1] + s2 * (A[2] + s2 * (A[3] + s2 * A[4]))));
    e as f32 * std::f32::consts::LN_2 + 2.0 * s * poly
}

/// (sin θ, cos θ) for θ = 2π·t/2²⁴, t < 2²⁴: the quadrant from the top two bits, then Taylor
/// polynomials on [0, π/2) (absolute error < 1e-7).
#[inline(always)]
fn sin_cos_turns(t: u32) -> (f32, f32) {
    let quadrant = t >> 22;
    let x = (t & 0x3f_ffff) as f32 * (std::f32::consts::FRAC_PI_2 / 4_194_304.0);
    let x2 = x * x;
    // Taylor coefficients ±1/n!, as f32 constants (multiplications only, no divisions).
    const S: [f32; 5] = [
        -1.0 / 6.0,
        1.0 / 120.0,
        -1.0 / 5040.0,
        1.0 / 362_880.0,
        -1.0 / 39_916_800.0,
    ];
    const C: [f32; 6] = [
        -0.5,
        1.0 / 24.0,
        -1.0 / 720.0,
        1.0 / 40_320.0,
        -1.0 / 3_628_800.0,
        1.0 / 479_001_600.0,
    ];
    let sin = x * (1.0 + x2 * (S[0] + x2 * (S[1] + x2 * (S[2] + x2 * (S[3] + x2 * S[4])))));
    let cos = 1.0 + x2 * (C[0] + x2 * (C[1] + x2 * (C[2] + x2 * (C[3] + x2 * (C[4] + x2 * C[5])))));
    // Quadrants 0..3 give (sin, cos), (cos, −sin), (−sin, −cos), (−cos, sin): written
    // branch-free (swap on odd quadrants, sign flips by exact negation) for vectorisation.
    let odd = quadrant & 1 == 1;
    let (a, b) = if odd { (cos, sin) } else { (sin, cos) };
    let neg_a = quadrant >= 2;
    let neg_b = quadrant == 1 || quadrant == 2;
    (if neg_a { -a } else { a }, if neg_b { -b } else { b })
}

#[inline(always)]
fn row_slice<'a>(g: &'a ArrayView2<'_, f32>, row: usize, r0: usize, rt: usize) -> &'a [f32] {
    let full = g
        .row(row)
        .to_slice()
        .expect("rows are contiguous (standard layout)");
    &full[r0..r0 + rt]
}

/// acc[r·COL_BLOCK + t] += Σ_i g[r][i] · strip[i·NR + t], one multiply-add at a time in order of i.
#[inline(always)]
fn kernel<A: Arith, const R: usize>(g: &[&[f32]; R], strip: &[f32], acc: &mut [f32]) {
    let rt = strip.len() / NR;
    let mut c = [[0.0f32; NR]; R];
    for r in 0..R {
        c[r].copy_from_slice(&acc[r * COL_BLOCK..r * COL_BLOCK + NR]);
    }
    let g: [&[f32]; R] = std::array::from_fn(|r| &g[r][..rt]);
    for (ii, pv) in strip.chunks_exact(NR).enumerate() {
        for r in 0..R {
            let gv = g[r][ii];
            for t in 0..NR {
                c[r][t] = A::madd(gv, pv[t], c[r][t]);
            }
        }
    }
    for r in 0..R {
        acc[r * COL_BLOCK..r * COL_BLOCK + NR].copy_from_slice(&c[r]);
    }
}

impl Projector for DenseProjector {
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
        let blocks: Vec<Vec<f32>> = (0..self.k.div_ceil(COL_BLOCK))
            .into_par_iter()
            .map(|bi| self.block(key, &g, bi * COL_BLOCK))
            .collect();
        for (bi, block) in blocks.iter().enumerate() {
            let c0 = bi * COL_BLOCK;
            let width = COL_BLOCK.min(self.k - c0);
            let src = ndarray::ArrayView2::from_shape((b, COL_BLOCK), block).expect("block shape");
            out.slice_mut(s![.., c0..c0 + width])
                .assign(&src.slice(s![.., ..width]));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polynomial_ln_and_sincos_are_accurate() {
        for k in 1..20_000u32 {
            let x = k as f32 / 20_000.0;
            let err = (ln_f32(x) as f64 - (x as f64).ln()).abs();
            assert!(err < 2e-6 * (x as f64).ln().abs().max(1.0), "ln {x}: {err}");
        }
        for t in (0..1u32 << 24).step_by(997) {
            let th = std::f64::consts::TAU * t as f64 / 16_777_216.0;
            let (s, c) = sin_cos_turns(t);
            assert!(
                (s as f64 - th.sin()).abs() < 5e-7 && (c as f64 - th.cos()).abs() < 5e-7,
                "t = {t}"
            );
        }
    }
}
