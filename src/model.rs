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

use ndarray::{ArrayViewMut1, ArrayViewMut2};

use crate::error::Result;

/// A model at one checkpoint, able to give per-example output gradients and Q weights.
///
/// The pipeline calls these methods with batches of consecutive examples and checks the
/// results: a NaN or infinite value is reported as [`crate::Error::NonFiniteGradient`] or
/// [`crate::Error::NonFiniteQ`] naming the example, so implementations need not check.
/// Implementations must be deterministic: the same example must give the same gradient
/// whatever batch it is in, or the pipeline's bit-for-bit reproducibility is lost.
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
}
