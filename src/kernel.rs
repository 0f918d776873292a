//! The kernel step: Gram matrix, ridge, Cholesky factor, solves and the score product.
//!
//! Numerics (DESIGN §4): features are f32; everything here is f64. The Gram matrix is
//! K = ΦᵀΦ, the regularised matrix A = K + λI is factorised once by Cholesky (never
//! inverted), and scores for targets Ψ are S = Φ (A⁻¹ Ψᵀ), the n × k matrix being read once.
//!
//! Determinism: faer runs single-threaded (`Par::Seq`) inside tiles of a fixed partition, and
//! rayon runs the tiles. The partition depends only on the problem's shape, so results are
//! bit-identical whatever the number of threads.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, shape_err};

/// Side of the square output tiles of the Gram matrix.
const GRAM_TILE: usize = 256;
/// Rows of Φ per task in the score product.
pub const SCORE_ROWS: usize = 512;

/// The ridge λ added to the Gram matrix's diagonal.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Ridge {
    /// λ = c · trace(ΦᵀΦ) / n = c · mean_i ‖φ_i‖²: relative to the mean squared norm of a
    /// training feature. Because a JL projection preserves norms, this λ hardly depends on k,
    /// and neither does the best c (the default rule, [`DEFAULT_RIDGE`]).
    MeanSquaredNorm(f64),
    /// λ = c · trace(ΦᵀΦ) / k: c times the mean eigenvalue of the Gram matrix. The best c
    /// grows roughly in proportion to k (docs/VALIDATION.md).
    Relative(f64),
    /// λ as given.
    Absolute(f64),
}

/// The default ridge rule, λ = 2 · trace(ΦᵀΦ)/n, chosen by the LDS sweep of
/// docs/VALIDATION.md: on MNIST (logistic regression and MLP, k ∈ {512, 2048, 4096},
/// M ∈ {1, 5, 10}) it is within 0.02 LDS of the best λ measured in every configuration, and it
/// stays well defined for k ≥ n, where λ = 0 fails.
pub const DEFAULT_RIDGE: Ridge = Ridge::MeanSquaredNorm(2.0);

impl Default for Ridge {
    fn default() -> Self {
        DEFAULT_RIDGE
    }
}

impl Ridge {
    /// Checks the constant is finite and non-negative.
    pub fn validate(&self) -> Result<()> {
        let c = match *self {
            Ridge::MeanSquaredNorm(c) | Ridge::Relative(c) | Ridge::Absolute(c) => c,
        };
        if !(c.is_finite() && c >= 0.0) {
            return Err(Error::InvalidConfig(format!(
                "ridge must be finite and ≥ 0, got {self:?}"
            )));
        }
        Ok(())
    }

    /// λ for a Gram matrix with the given trace, dimension k, from n training examples.
    pub fn lambda(&self, trace: f64, k: usize, n: usize) -> f64 {
        match *self {
            Ridge::MeanSquaredNorm(c) => c * trace / n.max(1) as f64,
            Ridge::Relative(c) => c * trace / k as f64,
            Ridge::Absolute(l) => l,
        }
    }
}

fn to_f64_mat(phi: ArrayView2<'_, f32>) -> Mat<f64> {
    Mat::from_fn(phi.nrows(), phi.ncols(), |i, j| phi[(i, j)] as f64)
}

/// K = ΦᵀΦ (k × k) in f64 for Φ of shape n × k.
pub fn gram(phi: ArrayView2<'_, f32>) -> Array2<f64> {
    let k = phi.ncols();
    let phi = to_f64_mat(phi);
    let nt = k.div_ceil(GRAM_TILE);
    let pairs: Vec<(usize, usize)> = (0..nt).flat_map(|a| (a..nt).map(move |b| (a, b))).collect();
    let tiles: Vec<Mat<f64>> = pairs
        .par_iter()
        .map(|&(a, b)| {
            let (ia, ib) = (a * GRAM_TILE, b * GRAM_TILE);
            let (wa, wb) = (GRAM_TILE.min(k - ia), GRAM_TILE.min(k - ib));
            let mut dst = Mat::<f64>::zeros(wa, wb);
            matmul(
                dst.as_mut(),
                Accum::Replace,
                phi.subcols(ia, wa).transpose(),
                phi.subcols(ib, wb),
                1.0,
                Par::Seq,
            );
            dst
        })
        .collect();
    let mut out = Array2::<f64>::zeros((k, k));
    for (&(a, b), t) in pairs.iter().zip(&tiles) {
        let (ia, ib) = (a * GRAM_TILE, b * GRAM_TILE);
        for j in 0..t.ncols() {
            for i in 0..t.nrows() {
                out[(ia + i, ib + j)] = t[(i, j)];
                out[(ib + j, ia + i)] = t[(i, j)];
            }
        }
    }
    out
}

/// The Cholesky factor L of A = K + λI (A = L Lᵀ).
#[derive(Debug, Clone)]
pub struct Factor {
    l: Mat<f64>,
    lambda: f64,
}

impl Factor {
    /// Factorises K + λI. Fails with [`Error::NotPositiveDefinite`] (tagged with `checkpoint`)
    /// if a pivot is not positive — e.g. λ = 0 and rank(K) < k.
    pub fn new(gram: ArrayView2<'_, f64>, lambda: f64, checkpoint: u64) -> Result<Self> {
        let k = gram.nrows();
        if gram.ncols() != k {
            return Err(shape_err(
                "Gram matrix",
                "square",
                format!("{:?}", gram.dim()),
            ));
        }
        let mut a = Mat::from_fn(k, k, |i, j| {
            gram[(i, j)] + if i == j { lambda } else { 0.0 }
        });
        let mut mem = faer::dyn_stack::MemBuffer::new(
            faer::linalg::cholesky::llt::factor::cholesky_in_place_scratch::<f64>(
                k,
                Par::Seq,
                Default::default(),
            ),
        );
        let stack = faer::dyn_stack::MemStack::new(&mut mem);
        faer::linalg::cholesky::llt::factor::cholesky_in_place(
            a.as_mut(),
            Default::default(),
            Par::Seq,
            stack,
            Default::default(),
        )
        .map_err(|e| match e {
            faer::linalg::cholesky::llt::factor::LltError::NonPositivePivot { index } => {
                Error::NotPositiveDefinite {
                    checkpoint,
                    pivot: index,
                    lambda,
                }
            }
        })?;
        // Only the lower triangle holds L; clear the rest so `l` is exactly L.
        for j in 0..k {
            for i in 0..j {
                a[(i, j)] = 0.0;
            }
        }
        Ok(Self { l: a, lambda })
    }

    /// The ridge λ this factor was built with.
    pub fn lambda(&self) -> f64 {
        self.lambda
    }

    /// Dimension k.
    pub fn dim(&self) -> usize {
        self.l.nrows()
    }

    /// Y = A⁻¹ Ψᵀ for target features Ψ (m × k); returns Y as k × m.
    pub fn solve_targets(&self, psi: ArrayView2<'_, f32>) -> Result<Mat<f64>> {
        if psi.ncols() != self.dim() {
            return Err(shape_err("target feature columns", self.dim(), psi.ncols()));
        }
        let mut y = Mat::from_fn(self.dim(), psi.nrows(), |i, j| psi[(j, i)] as f64);
        let mut mem = faer::dyn_stack::MemBuffer::new(
            faer::linalg::cholesky::llt::solve::solve_in_place_scratch::<f64>(
                self.dim(),
                psi.nrows(),
                Par::Seq,
            ),
        );
        let stack = faer::dyn_stack::MemStack::new(&mut mem);
        faer::linalg::cholesky::llt::solve::solve_in_place(
            self.l.as_ref(),
            y.as_mut(),
            Par::Seq,
            stack,
        );
        Ok(y)
    }
}

/// Adds Φ Y (n × m) to `acc`, for Φ of shape n × k and Y of shape k × m. `acc` must be in
/// standard (row-major) layout. Parallel over fixed blocks of [`SCORE_ROWS`] rows, so the
/// result does not depend on the thread count.
pub fn add_scores(
    phi: ArrayView2<'_, f32>,
    y: &Mat<f64>,
    mut acc: ArrayViewMut2<'_, f64>,
) -> Result<()> {
    let (n, k) = phi.dim();
    if y.nrows() != k {
        return Err(shape_err("solved targets rows", k, y.nrows()));
    }
    if acc.dim() != (n, y.ncols()) {
        return Err(shape_err(
            "score accumulator",
            format!("{n} × {}", y.ncols()),
            format!("{:?}", acc.dim()),
        ));
    }
    let m = y.ncols();
    if n == 0 || m == 0 {
        return Ok(());
    }
    let acc = acc.as_slice_mut().ok_or_else(|| {
        shape_err(
            "score accumulator layout",
            "standard (row-major)",
            "strided",
        )
    })?;
    // Each task owns SCORE_ROWS rows of the accumulator: it widens its rows of Φ to f64 and
    // adds their product with Y in place (faer, sequential inside the task).
    acc.par_chunks_mut(SCORE_ROWS * m)
        .enumerate()
        .for_each(|(bi, dst)| {
            let r0 = bi * SCORE_ROWS;
            let rows = dst.len() / m;
            let mut block = Vec::with_capacity(rows * k);
            for row in phi.slice(ndarray::s![r0..r0 + rows, ..]).rows() {
                block.extend(row.iter().map(|&v| v as f64));
            }
            let lhs = MatRef::from_row_major_slice(&block, rows, k);
            let dst = MatMut::from_row_major_slice_mut(dst, rows, m);
            matmul(dst, Accum::Add, lhs, y.as_ref(), 1.0, Par::Seq);
        });
    Ok(())
}
