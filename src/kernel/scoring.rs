//! The scoring core shared by the in-memory index and the on-disk run: factor with the ridge,
//! check target features, solve, accumulate Φ Y and Q, and combine with Q̄.
//!
//! For checkpoints m = 1..M with training features Φ_m, Q_m and target features Ψ_m:
//!
//! τ = (1/M Σ_m Φ_m (Φ_mᵀΦ_m + λ_m I)⁻¹ Ψ_mᵀ) ⊙ (1/M Σ_m Q_m)
//!
//! [`crate::TrakIndex::score_features`] runs it over all n rows at once; the store runs it
//! block by block of rows. Each step is the same function with the same operation order, so
//! the two agree bit for bit when given the same Gram matrices.

use std::collections::BTreeSet;

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, MatMut, MatRef, Par};
use ndarray::{ArrayView1, ArrayView2, ArrayViewMut2};
use rayon::prelude::*;

use super::{Factor, Ridge};
use crate::error::{Error, Result, shape_err};

/// Rows of Φ per task in the score product. Part of the determinism contract: a score row's
/// value depends on the partition only through this constant.
pub(crate) const SCORE_ROWS: usize = 512;

/// The Cholesky factor of K + λI for one checkpoint, with λ from `ridge` (the trace of K, its
/// dimension and the training set size `n`).
pub(crate) fn factor_with_ridge(
    gram: ArrayView2<'_, f64>,
    ridge: Ridge,
    n: usize,
    checkpoint: u64,
) -> Result<Factor> {
    let trace: f64 = gram.diag().sum();
    let lambda = ridge.lambda(trace, gram.nrows(), n);
    Factor::new(gram, lambda, checkpoint)
}

/// Checks a list of per-checkpoint target features Ψ_m (targets × dim): non-empty, no
/// checkpoint twice, every checkpoint known (`dim_of` returns its feature dimension or
/// [`Error::UnknownCheckpoint`]), the same number of targets m ≥ 1 for each, the right
/// number of columns, finite values. Returns m.
pub(crate) fn check_targets(
    targets: &[(u64, ArrayView2<'_, f32>)],
    mut dim_of: impl FnMut(u64) -> Result<usize>,
) -> Result<usize> {
    let Some((_, first)) = targets.first() else {
        return Err(Error::Empty("checkpoint list"));
    };
    let mut seen = BTreeSet::new();
    for (id, _) in targets {
        dim_of(*id)?;
        if !seen.insert(*id) {
            return Err(Error::DuplicateCheckpoint(*id));
        }
    }
    let m = first.nrows();
    if m == 0 {
        return Err(Error::Empty("target set"));
    }
    for (id, psi) in targets {
        if psi.nrows() != m {
            return Err(shape_err(
                "target features rows (same targets for every checkpoint)",
                m,
                psi.nrows(),
            ));
        }
        let dim = dim_of(*id)?;
        if psi.ncols() != dim {
            return Err(shape_err("target feature columns", dim, psi.ncols()));
        }
        if let Some(index) = psi.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                what: "target features",
                index,
            });
        }
    }
    Ok(m)
}

/// Adds one checkpoint's contribution to the accumulators of some training rows: `acc += Φ Y`
/// ([`add_scores`]) and `qsum += Q` (in f64).
pub(crate) fn accumulate(
    phi: ArrayView2<'_, f32>,
    q: ArrayView1<'_, f32>,
    y: &Mat<f64>,
    acc: ArrayViewMut2<'_, f64>,
    qsum: &mut [f64],
) -> Result<()> {
    if q.len() != qsum.len() {
        return Err(shape_err("Q accumulator", q.len(), qsum.len()));
    }
    qsum.iter_mut().zip(q).for_each(|(s, &v)| *s += v as f64);
    add_scores(phi, y, acc)
}

/// The final scores of the accumulated rows, row-major: τ_ij = (acc_ij / M) · (qsum_i / M)
/// rounded to f32, for M = `count` checkpoints. `acc` holds the rows one after another, one
/// value per target (`qsum.len()` rows).
pub(crate) fn combine<'a>(
    acc: &'a [f64],
    qsum: &'a [f64],
    count: usize,
) -> impl Iterator<Item = f32> + 'a {
    let count = count as f64;
    let cols = acc.len() / qsum.len().max(1);
    acc.chunks_exact(cols.max(1))
        .zip(qsum)
        .flat_map(move |(row, &qi)| {
            row.iter()
                .map(move |&v| ((v / count) * (qi / count)) as f32)
        })
}

/// Adds Φ Y (n × m) to `acc`, for Φ of shape n × k and Y of shape k × m. `acc` must be in
/// standard (row-major) layout. Parallel over fixed blocks of 512 rows, so the
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
