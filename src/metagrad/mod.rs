//! Metagradients: exact attribution of a training run by differentiating through it (MAGIC,
//! Ilyas & Engstrom 2025), with the REPLAY recomputation of the states.
//!
//! Put a weight w_i on every training example's loss. Training with [`Sgd::fit_weighted`]
//! is a deterministic function θ_T(w), and the metagradient of a target's output f is
//!
//! τ_i = ∂f(target; θ_T(w)) / ∂w_i at w = 1.
//!
//! Removing a set S of examples moves its weights from 1 to w_S = 0, so the first-order
//! change of f is **−Σ_{i∈S} τ_i**, for **this** run (the same initialisation, seed and
//! minibatch order); [`crate::eval::DropSets`] is that protocol. Where training is smooth
//! (small learning rate, large batches, few epochs: [`Sgd::smooth`]) that first-order model
//! is near-exact; where it is chaotic it is not (docs/VALIDATION.md measures both). Scores
//! come as a [`Scores`] (n_train × n_targets, positive = the example raises f), so `top_k`,
//! the eval module and `.npy` export work unchanged.
//!
//! A removal predicted and retrained, on a tiny model:
//! ```
//! use trak::data::Dataset;
//! use trak::metagrad::{metagradients, MetagradOptions};
//! use trak::models::{Mlp, Sgd};
//! use trak::output::Margin;
//!
//! let data = Dataset::blobs(81, 4, 3, 7)?.samples();
//! let (train, target) = (&data[..80], &data[80..]);
//! let init = Mlp::new(&[4, 3], Margin, 0)?;
//! let sgd = Sgd { epochs: 3, batch_size: 16, ..Sgd::smooth() };
//! let out = metagradients(&sgd, &init, train, target, &MetagradOptions::default())?;
//! let f_full = out.model.outputs(target)?[0].f;
//!
//! // Remove examples 0..4: weight 0, the same seed and order.
//! let removed = 0..4;
//! let mut w = vec![1.0f32; train.len()];
//! removed.clone().for_each(|i| w[i] = 0.0);
//! let mut retrained = init.clone();
//! sgd.fit_weighted(&mut retrained, train, &w)?;
//! let actual = retrained.outputs(target)?[0].f - f_full;
//!
//! let predicted: f32 = -removed.map(|i| out.scores.values()[(i, 0)]).sum::<f32>();
//! assert!((predicted - actual).abs() < 0.05 * actual.abs(), "{predicted} vs {actual}");
//! # Ok::<(), trak::Error>(())
//! ```
//!
//! **Checking the metagradients of your own run.** Retrain it without a few small random
//! sets ([`crate::eval::DropSets`] and [`Sgd::fit_weighted`]) and take their LDS, as above.
//! Finite differences in a weight (w_i = 1 ± ε) are the wrong check for a ReLU network in
//! f32: see "Why not finite differences" below.
//!
//! # Why not finite differences
//! For a ReLU network, the trained output is not differentiable in w_i at the scale of a
//! finite difference: ReLU's derivative steps at 0, so an SGD step is discontinuous wherever a
//! pre-activation of a batch example crosses 0, and along a run some crosses for almost any
//! ε. On the MNIST MLP (`Sgd::smooth()`), (f(1 + ε) − f(1 − ε)) / 2ε misses τ_i by factors up
//! to 27, with either sign, for ε from 1e-4 to 1e-2: the output jumps by about 1e-3 whatever
//! ε is, 1,000× its f32 rounding. At ε = 1 (a removal) the difference agrees with τ_i to
//! 10 %, and logistic regression (no kink) agrees within 1.2 % for ε from 1e-3 to 0.1
//! (docs/VALIDATION.md, "Checking metagradients yourself"; `metagrad_lds --fd`). The
//! metagradient is the slope of the smooth pieces, and predicts removals: check it with
//! leave-out retraining ([`crate::eval::DropSets`]), as the example above does.
//!
//! # How it is computed
//! Reverse mode through every optimiser step, momentum and weight decay included
//! ([`adjoint`](self) has the step's adjoint). The reverse pass needs θ_t at every step, in
//! reverse order:
//! - the first pass trains (bit-identical to [`Sgd::fit`]) and keeps every θ_t if it fits
//!   the memory limit, otherwise a (θ, v) checkpoint every K ≈ √(2T) steps;
//! - each pass of targets then walks the segments backwards, replaying each from its
//!   checkpoint (checked bit for bit against the next one: [`Error::NotReplayable`]) and
//!   stepping back through it.
//!
//! The plan is checked against the limit before anything is allocated
//! ([`Error::MemoryBudget`]). Each step back costs one Hessian-vector product per target
//! (for the MLP: Pearlmutter's R-operator, about one training step's GEMMs per target)
//! and shares the batch's forward and backward pass across targets; the first pass and any
//! replay cost one training run each. A pass over m targets therefore costs about
//! m + 2 training runs' worth of arithmetic, spread over the threads.
//!
//! # Precision and determinism
//! The trajectory is the trainer's own f32 run. The adjoint θ̄ and the metagradients, which
//! sum over every step, accumulate in f64 ([`Precision::F64`], the default); the direction
//! u = v̄ − η θ̄ that each HVP consumes is held in f32, and the HVPs run in f32.
//! [`Precision::F32`] also rounds θ̄ and the metagradients to f32 after every step, to
//! measure what f32 accumulation loses (on MNIST: about 1e-7 relative, docs/VALIDATION.md).
//! Work is split by target, never inside a sum, so the bits do not depend on the thread
//! count.
//!
//! # Example
//! ```
//! use trak::data::Dataset;
//! use trak::metagrad::{metagradients, MetagradOptions};
//! use trak::models::{Mlp, Sgd};
//! use trak::output::Margin;
//!
//! let data = Dataset::blobs(60, 4, 3, 7)?.samples();
//! let (train, targets) = (&data[..50], &data[50..]);
//! let init = Mlp::new(&[4, 8, 3], Margin, 0)?;
//! let sgd = Sgd { lr: 0.05, epochs: 2, batch_size: 10, ..Sgd::default() };
//! let out = metagradients(&sgd, &init, train, targets, &MetagradOptions::default())?;
//! assert_eq!((out.scores.n_train(), out.scores.n_targets()), (50, 10));
//! # Ok::<(), trak::Error>(())
//! ```

mod adjoint;
mod plan;
mod trajectory;

use std::time::Instant;

use ndarray::{Array2, s};

pub use plan::ReplayPlan;

use crate::attribute::Scores;
use crate::attribute::memory::zeros2;
use crate::error::{Error, Result, invalid};
use crate::models::{Sgd, Trainable};
use adjoint::Adjoint;
use trajectory::Trajectory;

/// Where the adjoint accumulates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Precision {
    /// θ̄ and the metagradients in f64 (the default).
    #[default]
    F64,
    /// θ̄ and the metagradients rounded to f32 after every step (for measuring what f32
    /// accumulation loses; the memory is the same).
    F32,
}

/// Settings of [`metagradients`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetagradOptions {
    /// Targets differentiated together in one reverse pass (default 64). More amortise the
    /// replay over more targets; the adjoint needs 12 bytes per parameter per target.
    pub targets_per_pass: usize,
    /// Memory limit in bytes for the trajectory and the adjoint (default: the machine's
    /// RAM + swap).
    pub memory_limit: Option<usize>,
    /// Accumulation precision (default f64).
    pub precision: Precision,
}

impl Default for MetagradOptions {
    fn default() -> Self {
        Self {
            targets_per_pass: 64,
            memory_limit: None,
            precision: Precision::F64,
        }
    }
}

/// The metagradients of a training run, the model it trained, and what it cost.
#[derive(Debug, Clone)]
pub struct Metagradients<M> {
    /// τ_ij = ∂f(target j; θ_T(w))/∂w_i at w = 1, n_train × n_targets.
    pub scores: Scores,
    /// The trained model (bit-identical to [`Sgd::fit`] from the same start).
    pub model: M,
    /// The replay plan that was used.
    pub plan: ReplayPlan,
    /// Number of reverse passes (⌈targets / targets_per_pass⌉).
    pub passes: usize,
    /// Seconds of the first pass (one training run: the unit of cost).
    pub train_seconds: f64,
    /// Seconds of everything.
    pub total_seconds: f64,
}

/// Trains a copy of `init` on `train` with `sgd`, then computes every training example's
/// metagradient for each target's output f (the model's attributed output; the margin for
/// [`crate::output::Margin`]). See the [module docs](self).
///
/// Errors: `Empty` for no targets; a target the model cannot evaluate is named by its index
/// in `targets`, a bad training example by its index in `train` (both before training);
/// [`Error::MemoryBudget`] when the plan does not fit `options.memory_limit`;
/// [`Error::NoLossHessian`] when the model's output function has no loss Hessian;
/// [`Error::Diverged`] as for [`Sgd::fit`]; [`Error::NotReplayable`] when a replay differs.
pub fn metagradients<M: Trainable + Clone>(
    sgd: &Sgd,
    init: &M,
    train: &[M::Example],
    targets: &[M::Example],
    options: &MetagradOptions,
) -> Result<Metagradients<M>> {
    let start = Instant::now();
    if targets.is_empty() {
        return Err(Error::Empty("metagradient targets"));
    }
    if options.targets_per_pass == 0 {
        return Err(invalid("targets per pass", 0, "≥ 1"));
    }
    let mut model = init.clone();
    for (j, t) in targets.iter().enumerate() {
        model.check_example(t, j)?;
    }
    let p = model.param_count();
    let steps = sgd.epochs * sgd.steps_per_epoch(train.len());
    let per_pass = options.targets_per_pass.min(targets.len());
    let plan = plan::plan(steps, p, per_pass, train.len(), options.memory_limit)?;
    let trajectory = Trajectory::first_pass(sgd, &mut model, train, plan)?;
    let train_seconds = start.elapsed().as_secs_f64();
    let trained = model.clone();
    let mut scores = Array2::zeros((train.len(), targets.len()));
    let mut buf = zeros2(
        (
            if plan.keeps_every_state {
                0
            } else {
                plan.segment
            },
            p,
        ),
        "replay segment",
    )?;
    let mut passes = 0;
    for (c, chunk) in targets.chunks(per_pass).enumerate() {
        model.write_params(&trajectory.final_theta);
        let adjoint = reverse_pass(
            sgd,
            &mut model,
            train,
            chunk,
            &trajectory,
            &mut buf,
            options,
        )?;
        let cols = s![.., c * per_pass..c * per_pass + chunk.len()];
        scores
            .slice_mut(cols)
            .assign(&adjoint.weights.t().mapv(|w| w as f32));
        passes += 1;
    }
    Ok(Metagradients {
        scores: Scores::new(scores),
        model: trained,
        plan,
        passes,
        train_seconds,
        total_seconds: start.elapsed().as_secs_f64(),
    })
}

/// θ̄_T from the targets' gradients at θ_T (which `model` holds), then every step back.
fn reverse_pass<M: Trainable>(
    sgd: &Sgd,
    model: &mut M,
    train: &[M::Example],
    targets: &[M::Example],
    trajectory: &Trajectory<'_, M>,
    buf: &mut Array2<f32>,
    options: &MetagradOptions,
) -> Result<Adjoint> {
    let mut grads = zeros2((targets.len(), model.param_count()), "target gradients")?;
    model.target_grads(targets, grads.view_mut())?;
    let mut adjoint = Adjoint::new(sgd, grads.view(), train.len(), options.precision)?;
    drop(grads);
    for seg in (0..trajectory.segments()).rev() {
        let states = trajectory.segment_states(seg, model, buf)?;
        for (r, t) in trajectory.steps_of(seg).enumerate().rev() {
            model.write_params(states.row(r).as_slice().expect("row"));
            adjoint.step_back(sgd, model, train, trajectory.batch(t))?;
        }
    }
    Ok(adjoint)
}
