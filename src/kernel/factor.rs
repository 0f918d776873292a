//! The Cholesky factor of the regularised Gram matrix, and solves against it.

use faer::{Mat, Par};
use ndarray::ArrayView2;

use crate::error::{Error, Result, shape_err};

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
