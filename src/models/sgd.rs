//! Seeded minibatch SGD with momentum and weight decay.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use crate::error::{Error, Result, invalid};
use crate::models::Mlp;
use crate::output::OutputFn;

/// Minibatch SGD, PyTorch convention: g ← ∇L + wd·θ; v ← μ v + g; θ ← θ − lr·v.
///
/// Each epoch visits the data in a fresh random order drawn from `seed` (ChaCha8); the last
/// batch of an epoch may be smaller. Training is single-threaded and deterministic: the same
/// seed, model and data give bit-identical parameters on every run. Train many models at once
/// by running several `fit` calls in parallel (e.g. with rayon).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
    /// Momentum μ (0 for plain SGD).
    pub momentum: f32,
    /// L2 weight decay coefficient (applied to all parameters).
    pub weight_decay: f32,
    /// Number of passes over the data.
    pub epochs: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Seed of the shuffling order.
    pub seed: u64,
}

impl Default for Sgd {
    fn default() -> Self {
        Self {
            lr: 0.05,
            momentum: 0.9,
            weight_decay: 5e-4,
            epochs: 10,
            batch_size: 64,
            seed: 0,
        }
    }
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean minibatch loss of each epoch.
    pub epoch_losses: Vec<f32>,
}

impl Sgd {
    fn check(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid("SGD learning rate", self.lr, "a finite value > 0"));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(invalid("SGD momentum", self.momentum, "0 ≤ momentum < 1"));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            let wd = self.weight_decay;
            return Err(invalid("SGD weight decay", wd, "a finite value ≥ 0"));
        }
        if self.batch_size == 0 {
            return Err(invalid("SGD batch size", 0, "≥ 1"));
        }
        Ok(())
    }

    /// Trains `model` on `data`.
    pub fn fit<O: OutputFn>(&self, model: &mut Mlp<O>, data: &[Sample]) -> Result<TrainReport> {
        self.fit_with(model, data, |_, _| {})
    }

    /// Trains `model` on `data`, calling `after_epoch(epoch, model)` after each epoch (e.g. to
    /// keep checkpoints along the trajectory). Fails with [`Error::Diverged`] if the loss
    /// becomes NaN or infinite.
    pub fn fit_with<O: OutputFn>(
        &self,
        model: &mut Mlp<O>,
        data: &[Sample],
        mut after_epoch: impl FnMut(usize, &Mlp<O>),
    ) -> Result<TrainReport> {
        self.check()?;
        if data.is_empty() {
            return Err(Error::Empty("training data"));
        }
        // Checked here so that an error names the example's index in `data`, not in a
        // shuffled minibatch.
        model.check_shapes()?;
        for (i, s) in data.iter().enumerate() {
            model.check_sample(s, i)?;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut order: Vec<usize> = (0..data.len()).collect();
        let p = model.params_flat().len();
        let mut grad = vec![0.0f32; p];
        let mut velocity = vec![0.0f32; p];
        let mut batch = Vec::with_capacity(self.batch_size);
        let mut epoch_losses = Vec::with_capacity(self.epochs);
        for epoch in 0..self.epochs {
            order.shuffle(&mut rng);
            let mut sum = 0.0f64;
            let mut count = 0usize;
            for idx in order.chunks(self.batch_size) {
                batch.clear();
                batch.extend(idx.iter().map(|&i| &data[i]));
                let loss = model.loss_and_grad(&batch, &mut grad)?;
                if !loss.is_finite() {
                    return Err(Error::Diverged { epoch, loss });
                }
                sum += loss as f64;
                count += 1;
                let mut off = 0;
                for layer in model.layers_mut() {
                    for theta in layer.w.iter_mut().chain(layer.b.iter_mut()) {
                        let g = grad[off] + self.weight_decay * *theta;
                        let v = self.momentum * velocity[off] + g;
                        velocity[off] = v;
                        *theta -= self.lr * v;
                        off += 1;
                    }
                }
            }
            epoch_losses.push((sum / count as f64) as f32);
            after_epoch(epoch, model);
        }
        Ok(TrainReport { epoch_losses })
    }
}
