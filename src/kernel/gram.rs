//! The Gram matrix K = ΦᵀΦ (or ΦᵀWΦ), tile by tile.

use faer::linalg::matmul::matmul;
use faer::{Accum, Mat, Par};
use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;

/// Side of the square output tiles of the Gram matrix.
const GRAM_TILE: usize = 256;

fn to_f64_mat(phi: ArrayView2<'_, f32>, w: Option<&[f64]>) -> Mat<f64> {
    match w {
        None => Mat::from_fn(phi.nrows(), phi.ncols(), |i, j| phi[(i, j)] as f64),
        Some(w) => {
            let s: Vec<f64> = w.iter().map(|v| v.sqrt()).collect();
            Mat::from_fn(phi.nrows(), phi.ncols(), |i, j| s[i] * phi[(i, j)] as f64)
        }
    }
}

/// K = ΦᵀΦ (k × k) in f64 for Φ of shape n × k.
pub fn gram(phi: ArrayView2<'_, f32>) -> Array2<f64> {
    gram_weighted(phi, None)
}

/// K = ΦᵀWΦ (k × k) in f64, W = diag(`w`) (w ≥ 0, length n; `None`: W = I), computed as
/// (W^½Φ)ᵀ(W^½Φ) so that it stays exactly symmetric and positive semi-definite.
pub fn gram_weighted(phi: ArrayView2<'_, f32>, w: Option<&[f64]>) -> Array2<f64> {
    let k = phi.ncols();
    let phi = to_f64_mat(phi, w);
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
