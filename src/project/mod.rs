//! Random projections of per-example gradients: φ = Pᵀ g.
//!
//! A [`Projector`] maps a batch of p-dimensional gradients (B × p) to k-dimensional features
//! (B × k). The matrix may differ per checkpoint: it is keyed by (seed, checkpoint id).
//!
//! - [`DenseProjector`]: P with i.i.d. Rademacher (default) or Gaussian entries scaled by
//!   1/√k (Johnson–Lindenstrauss scaling, so E\[φ_aᵀφ_b\] = g_aᵀg_b). P is never stored: its
//!   entries are computed on the fly from the Philox4x32-10 counter-based generator, tile by
//!   tile, each tile reused across the whole batch.
//! - [`SparseProjector`]: sparse JL, s non-zeros ±1/√s per input coordinate; one pass over
//!   the gradient, memory-bound.
//! - [`FactoredProjector`]: per-layer Kronecker projection from layer inputs and output
//!   gradients ([`crate::model::FactoredModel`]); never forms the p-dimensional gradient.
//! - [`IdentityProjector`]: φ = g (k = p), for exactness checks on small models.
//!
//! Every projector here gives bit-identical features for a given (seed, checkpoint) whatever
//! the thread count and batch size: each output entry is accumulated over the p inputs in
//! the same fixed order on every run. (Across machines, results agree to rounding: a CPU with
//! FMA instructions rounds once per multiply-add, one without rounds twice.)

pub mod dense;
pub mod factored;
pub mod philox;
pub mod sparse;

pub use dense::DenseProjector;
pub use factored::{FactoredMatrices, FactoredProjector, LayerPlan};
pub use sparse::SparseProjector;

use ndarray::{ArrayView2, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, invalid, shape_err};

/// Distribution of the entries of a dense projection matrix (before the 1/√k scaling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Distribution {
    /// ±1 with probability ½ each (one random bit per entry).
    #[default]
    Rademacher,
    /// Standard normal (Box–Muller on Philox output).
    Gaussian,
}

/// Which projector the attribution pipeline builds for each checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ProjectorKind {
    /// Dense random projection with i.i.d. Rademacher entries (the default).
    #[default]
    Rademacher,
    /// Dense random projection with i.i.d. Gaussian entries.
    Gaussian,
    /// No projection: features are the raw gradients (k = p). For small models and tests.
    Identity,
    /// Sparse JL projection with `s` non-zeros per input coordinate ([`SparseProjector`]).
    Sparse {
        /// Non-zeros per input coordinate (1, 2, 4 or 8 are the usual choices).
        s: usize,
    },
    /// Per-layer Kronecker projection with small factors and no sketch
    /// ([`FactoredProjector::new`]): the factored projector of trak 0.1, kept for the runs
    /// made with it; [`ProjectorKind::FACTORED`] is more accurate and usually faster. Needs
    /// a model with a [`crate::model::FactoredModel`] view; the feature dimension is at most
    /// the configured k.
    FactoredSmall,
    /// Per-layer Kronecker projection to a larger intermediate (about `expansion` × the
    /// layer's share of k), sketched down to the share ([`FactoredProjector::sketched`]);
    /// never forms the p-dimensional gradient. Needs a model whose [`crate::Model::factored`]
    /// returns its [`crate::model::FactoredModel`] view. See [`factored`] for the plan and
    /// [`ProjectorKind::FACTORED`] for the default expansion.
    Factored {
        /// Intermediate size over the layer's share of k (≥ 2).
        expansion: usize,
    },
}

impl ProjectorKind {
    /// The sparse projector's default: s = 1 non-zero per input coordinate (CountSketch).
    /// On the MNIST LDS protocol s ∈ {1, 2, 4, 8} give the same LDS within noise (for s
    /// dividing k the inner-product variance does not depend on s), and s = 1 is the
    /// fastest (one scattered update per gradient entry); see docs/VALIDATION.md and
    /// docs/PERFORMANCE.md.
    pub const SPARSE: ProjectorKind = ProjectorKind::Sparse { s: 1 };

    /// The factored projector's default expansion, chosen by the LDS of the MNIST MLP (see
    /// [`factored`] and docs/VALIDATION.md).
    pub const FACTORED: ProjectorKind = ProjectorKind::Factored {
        expansion: factored::DEFAULT_EXPANSION,
    };

    /// Whether this kind works on layer factors ([`crate::model::FactoredModel`]) rather than
    /// on p-dimensional gradients.
    pub fn is_factored(self) -> bool {
        matches!(
            self,
            ProjectorKind::Factored { .. } | ProjectorKind::FactoredSmall
        )
    }
}

impl std::fmt::Display for ProjectorKind {
    /// The kind's name as errors and tables write it: "Rademacher", "Gaussian", "identity",
    /// "sparse (s = 1)", "factored-small", "factored (expansion 32)".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProjectorKind::Rademacher => f.write_str("Rademacher"),
            ProjectorKind::Gaussian => f.write_str("Gaussian"),
            ProjectorKind::Identity => f.write_str("identity"),
            ProjectorKind::Sparse { s } => write!(f, "sparse (s = {s})"),
            ProjectorKind::FactoredSmall => f.write_str("factored-small"),
            ProjectorKind::Factored { expansion } => write!(f, "factored (expansion {expansion})"),
        }
    }
}

/// A linear map from p-dimensional gradients to k-dimensional features.
pub trait Projector: Sync {
    /// Input dimension p.
    fn input_dim(&self) -> usize;
    /// Output dimension k.
    fn output_dim(&self) -> usize;
    /// Writes `grads · P_checkpoint` into `out`; `grads` is B × p, `out` is B × k.
    fn project(
        &self,
        checkpoint: u64,
        grads: ArrayView2<'_, f32>,
        out: ArrayViewMut2<'_, f32>,
    ) -> Result<()>;
}

/// Builds the projector of `kind` for p-dimensional gradients. `k` is ignored for
/// [`ProjectorKind::Identity`] (k = p). The factored kinds do not act on p-dimensional
/// gradients and are refused here; see [`FactoredProjector`].
pub fn build(kind: ProjectorKind, p: usize, k: usize, seed: u64) -> Result<Box<dyn Projector>> {
    Ok(match kind {
        ProjectorKind::Rademacher => {
            Box::new(DenseProjector::new(p, k, Distribution::Rademacher, seed)?)
        }
        ProjectorKind::Gaussian => {
            Box::new(DenseProjector::new(p, k, Distribution::Gaussian, seed)?)
        }
        ProjectorKind::Identity => Box::new(IdentityProjector::new(p)?),
        ProjectorKind::Sparse { s } => Box::new(SparseProjector::new(p, k, s, seed)?),
        ProjectorKind::Factored { .. } | ProjectorKind::FactoredSmall => {
            return Err(Error::UnsupportedProjector {
                projector: kind.to_string(),
                operation: "projecting flat gradients (it works on layer factors: use \
                            FactoredProjector)",
            });
        }
    })
}

pub(crate) fn check_shapes(
    p: usize,
    k: usize,
    grads: &ArrayView2<'_, f32>,
    out: &ArrayViewMut2<'_, f32>,
) -> Result<()> {
    if grads.ncols() != p {
        return Err(shape_err("gradient columns (p)", p, grads.ncols()));
    }
    if out.dim() != (grads.nrows(), k) {
        return Err(shape_err(
            "projection output",
            format!("{} × {k}", grads.nrows()),
            format!("{} × {}", out.nrows(), out.ncols()),
        ));
    }
    Ok(())
}

/// The common start of a `project` call: checks shapes and returns the batch in standard
/// (row-major) layout, borrowed when it already is, or `None` for an empty batch.
pub(crate) fn checked_batch<'a>(
    p: usize,
    k: usize,
    grads: &'a ArrayView2<'a, f32>,
    out: &ArrayViewMut2<'_, f32>,
) -> Result<Option<ndarray::CowArray<'a, f32, ndarray::Ix2>>> {
    check_shapes(p, k, grads, out)?;
    Ok((grads.nrows() > 0).then(|| grads.as_standard_layout()))
}

/// The identity map: features are the gradients themselves (k = p).
#[derive(Debug, Clone)]
pub struct IdentityProjector {
    p: usize,
}

impl IdentityProjector {
    /// Identity on R^p.
    pub fn new(p: usize) -> Result<Self> {
        if p == 0 {
            return Err(invalid("projector input dimension p", 0, "p ≥ 1"));
        }
        Ok(Self { p })
    }
}

impl Projector for IdentityProjector {
    fn input_dim(&self) -> usize {
        self.p
    }
    fn output_dim(&self) -> usize {
        self.p
    }
    fn project(
        &self,
        _checkpoint: u64,
        grads: ArrayView2<'_, f32>,
        mut out: ArrayViewMut2<'_, f32>,
    ) -> Result<()> {
        check_shapes(self.p, self.p, &grads, &out)?;
        out.assign(&grads);
        Ok(())
    }
}
