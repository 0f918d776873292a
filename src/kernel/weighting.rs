//! Weighting of the training examples in the kernel: K = Φᵀ W Φ + λI, W = diag(w).
//!
//! TRAK's estimator uses the plain Gram matrix ΦᵀΦ. Its derivation starts from the one-step
//! Newton step of logistic regression, whose Hessian in feature space is the Gauss-Newton
//! matrix Φᵀ R Φ with r_i = ∂²L/∂f² at example i (p(1 − p) for the margin; see
//! [`crate::output`]). Scores keep TRAK's form, τ(z) = φ(z)ᵀ (ΦᵀWΦ + λI)⁻¹ Φᵀ Q, and only the
//! kernel changes:
//!
//! | [`Weighting`] | w_i | needs |
//! |---|---|---|
//! | `None` | 1 (plain TRAK) | nothing |
//! | `GaussNewton` | r_i | [`crate::Model::output_curvature`] |
//! | `Q` | Q_i | Q ≥ 0 (the classification outputs; not regression's signed residual) |
//!
//! **The default is `Q`.** On the crate's LDS protocols (docs/VALIDATION.md: logistic
//! regression and the MLP on MNIST at M = 1, 5, 20, the candle CNN) both weightings beat the
//! plain kernel at its best λ everywhere (+0.02 to +0.06); Q has the best mean and wins on
//! logistic regression, the MLP at M = 1 and the CNN, Gauss-Newton wins the MLP at M ≥ 5 by
//! ≤ 0.007; and Q needs nothing from the model. The ridge rule stays λ = 2·tr(ΦᵀWΦ)/n (the
//! trace of the weighted kernel): within 0.008 of each weighting's best over seven rules.
//!
//! With the identity projector and λ equal to an L2 penalty, `GaussNewton` on logistic
//! regression is exactly the one-step Newton estimate g_zᵀ H⁻¹ ∇ℓ_i of the regularised loss
//! (tests/weighting.rs). A weight that is negative or not finite is refused
//! ([`crate::Error::BadKernelWeight`]). Ridge rules apply to the weighted Gram matrix (its
//! trace). Every path that builds a Gram matrix takes the weighting: in memory
//! ([`crate::TrainFeatures::finalize`]) and the store ([`crate::store::Run::with_weighting`]:
//! curvature recorded per block, weighted Gram matrix merged in block order, out-of-core
//! scoring with it).

use ndarray::{Array1, ArrayView1};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How training examples are weighted in the kernel; see the module docs. The default is
/// [`Weighting::Q`]: the best LDS across the crate's protocols (docs/VALIDATION.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Weighting {
    /// W = I: plain TRAK.
    None,
    /// W = diag(r), r_i = ∂²L/∂f² (the Gauss-Newton Hessian).
    GaussNewton,
    /// W = diag(Q) (the default).
    #[default]
    Q,
}

impl Weighting {
    /// Every weighting, plain first.
    pub const ALL: [Weighting; 3] = [Weighting::None, Weighting::GaussNewton, Weighting::Q];

    /// Whether featurisation must record each training example's curvature r.
    pub fn needs_curvature(self) -> bool {
        self == Weighting::GaussNewton
    }

    /// A short lower-case name (`plain`, `gn`, `q`), used in file names of the store.
    pub fn tag(self) -> &'static str {
        match self {
            Weighting::None => "plain",
            Weighting::GaussNewton => "gn",
            Weighting::Q => "q",
        }
    }

    /// Position in [`Weighting::ALL`].
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The weights of consecutive training examples of one checkpoint, the first being
    /// example `first` of the training set (`None` for plain TRAK), checked finite and ≥ 0
    /// (an error names the example by its index in the training set). `r` is the curvature,
    /// if any.
    pub(crate) fn weights(
        self,
        q: ArrayView1<'_, f32>,
        r: Option<ArrayView1<'_, f32>>,
        (checkpoint, first): (u64, usize),
    ) -> Result<Option<Array1<f64>>> {
        let w = match self {
            Weighting::None => return Ok(None),
            Weighting::Q => q,
            Weighting::GaussNewton => r.ok_or(Error::NoCurvature)?,
        };
        if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(Error::BadKernelWeight {
                example: first + i,
                checkpoint,
                value: w[i],
            });
        }
        Ok(Some(w.mapv(|v| v as f64)))
    }
}
