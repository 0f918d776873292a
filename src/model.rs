//! The pluggable model interface.
//!
//! TRAK needs two things from a model at a checkpoint θ, for a batch of examples:
//! the per-example gradient of the model output, ∇_θ f(z_b; θ), and the per-example weight
//! Q_b = −∂L/∂f (see [`crate::output`] for the sign convention). Implement [`Model`] for your
//! own type — a network written with another Rust ML library, a hand-written model, a wrapper
//! that calls batch-size-1 backward passes — and every part of the pipeline works with it.
//!
//! ```
//! use ndarray::{ArrayViewMut1, ArrayViewMut2};
//! use trak::{Model, Result};
//!
//! /// f(x; θ) = θ·x, trained with squared loss against y: ∇f = x, Q = y − θ·x.
//! struct Dot { theta: Vec<f32> }
//!
//! impl Model for Dot {
//!     type Example = (Vec<f32>, f32);
//!     fn num_params(&self) -> usize { self.theta.len() }
//!     fn output_grads(&self, batch: &[Self::Example], mut grads: ArrayViewMut2<'_, f32>) -> Result<()> {
//!         for (mut row, (x, _)) in grads.rows_mut().into_iter().zip(batch) {
//!             row.assign(&ndarray::ArrayView1::from(x.as_slice()));
//!         }
//!         Ok(())
//!     }
//!     fn output_q(&self, batch: &[Self::Example], mut q: ArrayViewMut1<'_, f32>) -> Result<()> {
//!         for (q, (x, y)) in q.iter_mut().zip(batch) {
//!             *q = y - x.iter().zip(&self.theta).map(|(a, b)| a * b).sum::<f32>();
//!         }
//!         Ok(())
//!     }
//! }
//! # let m = Dot { theta: vec![1.0, 2.0] };
//! # assert_eq!(m.num_params(), 2);
//! ```

use ndarray::{Array2, ArrayViewMut1, ArrayViewMut2};
use serde::{Deserialize, Serialize};

use crate::error::Result;

pub mod batch_check;

/// A model at one checkpoint, able to give per-example output gradients and Q weights.
///
/// The pipeline calls these methods with batches of consecutive examples and checks the
/// results: a NaN or infinite value is reported as [`crate::Error::NonFiniteGradient`] or
/// [`crate::Error::NonFiniteQ`] naming the example, so implementations need not check.
/// Implementations must be deterministic and **batch-independent**: the same example must give
/// the same gradient and Q whatever batch it is in, or scores change with the batch size and
/// the pipeline's bit-for-bit reproducibility is lost. Test your model for it with
/// [`batch_check::check_batch_independence`] (an example's results alone against inside a
/// batch, e.g. `check_batch_independence(&model, &train[..64], 0.0)` for the same bits, or a
/// small tolerance such as 1e-5 when your kernels round differently for other row counts), or
/// have every featurisation check its first batch with
/// [`crate::TrakBuilder::check_batch_independence`].
pub trait Model: Sync {
    /// One example: whatever your model consumes (input and label/target).
    type Example: Sync;

    /// Number of parameters p; every gradient row has this length.
    fn num_params(&self) -> usize;

    /// Writes ∇_θ f(`batch[b]`; θ) into row b of `grads` (shape `batch.len() × num_params()`).
    /// The buffer's previous content is unspecified; every entry must be written.
    fn output_grads(&self, batch: &[Self::Example], grads: ArrayViewMut2<'_, f32>) -> Result<()>;

    /// Writes Q_b = −∂L/∂f at `batch[b]` into `q[b]` (length `batch.len()`); for the
    /// classification margin this is 1 − p(correct class).
    fn output_q(&self, batch: &[Self::Example], q: ArrayViewMut1<'_, f32>) -> Result<()>;

    /// Writes r_b = ∂²L/∂f² at `batch[b]`, the curvature of the training loss in f (the
    /// example's Gauss-Newton weight; see [`crate::output`]), into `r`. Needed only by
    /// [`crate::Weighting::GaussNewton`]. The default refuses with
    /// [`crate::Error::NoCurvature`]; the built-in models implement it through
    /// [`crate::output::OutputFn::curvature`].
    fn output_curvature(&self, batch: &[Self::Example], r: ArrayViewMut1<'_, f32>) -> Result<()> {
        let _ = (batch, r);
        Err(crate::Error::NoCurvature)
    }

    /// The model's per-layer view, if it has one: implement [`FactoredModel`] and return
    /// `Some(self)` here to make the factored projectors ([`crate::project::ProjectorKind::FACTORED`]) available.
    /// The default is `None`.
    fn factored(&self) -> Option<&dyn FactoredModel<Self::Example>> {
        None
    }

    /// The bytes this model allocates while it computes one call on `batch_len` examples
    /// (gradients, Q or layer factors), beyond the buffers trak passes it: a framework's
    /// activations, its autograd graph and gradients, and the layer factors it returns. The
    /// memory plan ([`crate::TrakBuilder::memory_limit`]) counts it for every batch in
    /// flight. The default, 0, suits a model that computes in the buffers it is given (the
    /// built-in models); a framework adapter should give an upper bound.
    fn working_memory(&self, batch_len: usize) -> usize {
        let _ = batch_len;
        0
    }

    /// A fingerprint of the parameters θ (any 64-bit hash of their exact values), used by
    /// [`crate::store`] to refuse resuming or sharding a checkpoint with a different model.
    /// The default is `None`; the store then fingerprints the model through its output
    /// gradient and Q at the first training example, which also changes with θ.
    fn fingerprint(&self) -> Option<u64> {
        None
    }
}

/// Shape of one linear layer y = W a as the factored projector sees it: W is
/// `out_dim × in_dim`. A bias is folded in as an extra input fixed at 1 (so `in_dim` counts it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinearLayer {
    /// Output dimension (rows of W).
    pub out_dim: usize,
    /// Input dimension (columns of W, the bias column included).
    pub in_dim: usize,
}

impl LinearLayer {
    /// Parameters of the layer, `out_dim · in_dim`.
    pub fn num_params(&self) -> usize {
        self.out_dim * self.in_dim
    }
}

/// One linear layer's factors for a batch of B examples, each applying the layer at
/// `positions` places (1 for a dense layer; sequence length or spatial positions for a layer
/// shared across positions, zero-padded to a common count).
///
/// Rows `b·positions .. (b+1)·positions` of both matrices belong to example b. The gradient of
/// f with respect to W for example b is Σ_t δ_{b,t} a_{b,t}ᵀ over those rows.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFactors {
    /// Places the layer is applied at per example (T ≥ 1).
    pub positions: usize,
    /// Inputs a of the layer (with the constant-1 bias column if any): `B·T × in_dim`.
    pub acts: Array2<f32>,
    /// Gradients δ = ∂f/∂y of the layer's outputs: `B·T × out_dim`.
    pub deltas: Array2<f32>,
}

impl LayerFactors {
    /// Zero factors of `layer` for `examples` examples at `positions` places each (to fill
    /// in; a position left at zero adds nothing to a feature).
    pub fn zeros(layer: LinearLayer, examples: usize, positions: usize) -> Self {
        Self {
            positions,
            acts: Array2::zeros((examples * positions, layer.in_dim)),
            deltas: Array2::zeros((examples * positions, layer.out_dim)),
        }
    }
}

/// Per-layer access for the factored (Kronecker) projection: a model whose parameters are all
/// weights of linear layers exposes, per layer, its inputs and the gradient of the output
/// function with respect to its outputs. The projector then computes (P_outᵀδ) ⊗ (P_inᵀa)
/// per layer without ever forming the p-dimensional gradient.
///
/// Requirements, checked by the pipeline: the layers' parameter counts sum to
/// [`Model::num_params`] (every parameter belongs to exactly one layer, biases as an extra
/// input column), and `layer_factors` returns one [`LayerFactors`] per layer with the shapes
/// given by [`FactoredModel::linear_layers`]. Like [`Model`], results must not depend on how
/// examples are batched.
pub trait FactoredModel<E>: Sync {
    /// The linear layers, in a fixed order.
    fn linear_layers(&self) -> Vec<LinearLayer>;
    /// Inputs and output gradients of every layer for `batch`.
    fn layer_factors(&self, batch: &[E]) -> Result<Vec<LayerFactors>>;

    /// [`FactoredModel::layer_factors`] and, when the same pass gives it, each example's Q
    /// (as [`Model::output_q`] would, bit for bit) written into `q`: returns the factors and
    /// whether `q` was written. The default writes nothing (the pipeline then calls
    /// [`Model::output_q`], a second forward pass); override it to save that pass.
    fn layer_factors_and_q(
        &self,
        batch: &[E],
        q: ArrayViewMut1<'_, f32>,
    ) -> Result<(Vec<LayerFactors>, bool)> {
        let _ = q;
        Ok((self.layer_factors(batch)?, false))
    }
}
