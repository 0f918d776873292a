//! What the built-in trainer and the metagradients need from a model.

use ndarray::ArrayViewMut2;

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

    /// What a batch's Hessian-vector products share (for the MLP: the forward pass and the
    /// deltas), at the current parameters, for the examples `batch` with `weights`.
    type Hvp<'a>: BatchHvp
    where
        Self: 'a;

    /// Prepares the Hessian-vector products of L_w over `batch` at the current parameters
    /// ([`BatchHvp::apply`] then takes one direction at a time, from any thread).
    fn weighted_hvp<'a>(
        &'a self,
        batch: &[&'a Self::Example],
        weights: &[f32],
    ) -> Result<Self::Hvp<'a>>;

    /// Gradients ∇_θ f of the attributed output at each target (row j of `out`, m × p).
    fn target_grads(&self, targets: &[Self::Example], out: ArrayViewMut2<'_, f32>) -> Result<()>;
}

/// Hessian-vector products of one batch's weighted loss L_w, one direction at a time.
pub trait BatchHvp: Sync {
    /// For the direction `v` (length p): `hv` ← ∇²_θ L_w · v (length p), and `dots[b]` ←
    /// ∂/∂w_b (∇_θ L_w · v) = (1/|B|) ∇ℓ_b · v (length |B|). The result must depend on `v`
    /// and the batch only (not on the thread or on other directions), so that metagradients
    /// are bit-identical for any thread count.
    ///
    /// # Panics
    /// If a buffer's length is not the one above (a caller's bug, like an index out of
    /// bounds).
    fn apply(&self, v: &[f32], hv: &mut [f32], dots: &mut [f32]);
}
