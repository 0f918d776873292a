//! What the built-in trainer and the metagradients need from a model.

use ndarray::{ArrayView2, ArrayViewMut2};

use crate::error::Result;

/// A model that [`crate::models::Sgd`] can train and [`crate::metagrad`] can differentiate
/// through: its parameters as one flat vector, and the gradient and Hessian-vector products
/// of the **weighted batch loss**
///
/// L_w(θ; B) = (1/|B|) Σ_{i∈B} w_i ℓ_i(θ),
///
/// where |B| counts every example of the batch, whatever its weight (so w_i = 0 removes
/// example i's term and changes nothing else), and ℓ_i is the training loss of example i.
///
/// [`crate::models::Mlp`] implements it for every [`crate::output::OutputFn`] whose
/// [`loss_hvp`](crate::output::OutputFn::loss_hvp) is known (all the built-in ones). Another
/// model plugs into the trainer and the metagradients by implementing these methods; the
/// metagradient tests' finite-difference checks are the way to validate an implementation.
pub trait Trainable: Sync {
    /// The example type (inputs and target).
    type Example: Sync;

    /// Number of parameters p.
    fn param_count(&self) -> usize;

    /// Writes the parameters into `out` (length p), in the model's fixed layout.
    fn read_params(&self, out: &mut [f32]);

    /// Overwrites the parameters from `params` (length p). Called by the trainer after every
    /// step without checking finiteness: a diverging run shows as a non-finite loss.
    fn write_params(&mut self, params: &[f32]);

    /// Checks example `index` of the training set against the model (shapes, finite inputs,
    /// a valid target), so that an error names it by its index in the training set.
    fn check_example(&self, example: &Self::Example, index: usize) -> Result<()>;

    /// L_w and ∇_θ L_w at the current parameters, the gradient written into `grad` (length
    /// p). `weights[b]` is the weight of `batch[b]`.
    fn weighted_loss_grad(
        &self,
        batch: &[&Self::Example],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f32>;

    /// For every direction v_j (row j of `dirs`, m × p) at the current parameters:
    /// - row j of `hv` (m × p) ← ∇²_θ L_w · v_j;
    /// - `dots[b, j]` (|B| × m) ← ∂/∂w_b (∇_θ L_w · v_j) = (1/|B|) ∇ℓ_b · v_j.
    ///
    /// The results must not depend on the thread count.
    fn weighted_hvp(
        &self,
        batch: &[&Self::Example],
        weights: &[f32],
        dirs: ArrayView2<'_, f32>,
        hv: ArrayViewMut2<'_, f32>,
        dots: ArrayViewMut2<'_, f32>,
    ) -> Result<()>;

    /// Gradients ∇_θ f of the attributed output at each target (row j of `out`, m × p).
    fn target_grads(&self, targets: &[Self::Example], out: ArrayViewMut2<'_, f32>) -> Result<()>;
}
