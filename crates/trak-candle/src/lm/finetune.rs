//! Fine-tuning a Llama-family checkpoint: AdamW ([`super::AdamW`], candle's arithmetic in one
//! pass per tensor, its moments readable) on the mean token loss of
//! [`super::logprob`], a seeded data order, tensors frozen by name, per-example weights on
//! the loss, and a callback after every epoch (to save or snapshot the checkpoint).
//!
//! **Weights.** Batch b's loss is Σ_i w_i ℓ_i / Σ_i w_i n_i, with ℓ_i = −Σ log p of example
//! i's counted tokens and n_i their number: the mean loss per kept token. The order and the
//! batches do not depend on the weights, so a leave-out run is the same call with the left
//! out examples' weights at 0 (same seed, same batches, the rest of each batch unchanged).
//! A zero-weighted example is dropped from its batch's forward pass (so nothing of it, not
//! even its length, reaches the computation), and a batch whose weights are all 0 is skipped
//! (no optimiser step, whose moments would otherwise still move the weights).
//!
//! **Gradients.** By candle's autograd, or with [`FineTune::native`] (when only block
//! linears and norm scales are trained) by the native pass
//! ([`crate::models::llama::native::train`]: equal to candle's to 1e-5; faster on long
//! documents, slower on short ones in batches).
//!
//! **Determinism.** Same settings, same data, same machine ⇒ the same weights bit for bit
//! (candle's and faer's CPU kernels may differ across CPUs).

use std::time::Instant;

use candle_nn::ParamsAdamW;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trak::Error;

use super::adamw::AdamW;
use super::logprob::{counted, sequence_log_probs};
use crate::error::CandleContext;
use crate::models::llama::native::train;
use crate::models::llama::{Llama, LlamaCheckpoint, layout};
use crate::sequence::TokenSeq;

/// Fine-tuning settings; [`FineTune::default`] is `smollm_facts`' recipe (AdamW, lr 3e-4,
/// no weight decay, batches of 8, 5 epochs, the token embedding frozen, seed 0).
#[derive(Debug, Clone, PartialEq)]
pub struct FineTune {
    /// Passes over the data.
    pub epochs: usize,
    /// AdamW's learning rate.
    pub lr: f64,
    /// AdamW's decoupled weight decay.
    pub weight_decay: f64,
    /// Examples per step.
    pub batch: usize,
    /// The data order's seed.
    pub seed: u64,
    /// Tensors left as they are: a Hugging Face name, or a prefix of names
    /// (`model.layers.0.`); each must name at least one tensor.
    pub frozen: Vec<String>,
    /// Compute each step's gradients by the native pass
    /// ([`crate::models::llama::native::train`]) when everything trained is a block linear
    /// or a norm scale (the token embedding, and an untied head, frozen); else, and by
    /// default, by candle's autograd. The two agree to rounding (a test). The native pass
    /// runs a batch's sequences one after another, each reading every weight: 1.5× faster on
    /// documents of hundreds of tokens, 1.75× slower on the facts corpus (about 25 tokens,
    /// batches of 8), so it is not the default.
    pub native: bool,
}

impl Default for FineTune {
    fn default() -> Self {
        Self {
            epochs: 5,
            lr: 3e-4,
            weight_decay: 0.0,
            batch: 8,
            seed: 0,
            frozen: vec![layout::EMBED.to_string()],
            native: false,
        }
    }
}

/// What the callback sees after an epoch.
#[derive(Debug)]
pub struct Epoch<'a> {
    /// 1-based.
    pub index: usize,
    /// Mean token loss over the epoch's weighted examples.
    pub mean_loss: f64,
    /// Seconds since fine-tuning started.
    pub elapsed: f64,
    /// The weights after this epoch (trained on in place: snapshot or save them to keep).
    pub checkpoint: &'a LlamaCheckpoint,
    /// The optimiser after this epoch: its moments (TrackStar's preconditioner is the second
    /// moment) and step count.
    pub optimizer: &'a AdamW,
}

fn invalid(parameter: &'static str, value: String, expected: &str) -> Error {
    Error::InvalidParameter {
        parameter,
        value,
        expected: expected.into(),
    }
}

impl FineTune {
    /// Checks the settings against the data ([`Error::InvalidParameter`] naming the setting).
    pub fn validate(&self, n: usize, weights: Option<&[f32]>) -> trak::Result<()> {
        if self.epochs == 0 {
            return Err(invalid("epochs", "0".into(), "at least 1"));
        }
        if self.batch == 0 {
            return Err(invalid("batch", "0".into(), "at least 1 example per step"));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(invalid(
                "learning rate",
                self.lr.to_string(),
                "a positive number",
            ));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            let v = self.weight_decay.to_string();
            return Err(invalid("weight decay", v, "a number ≥ 0"));
        }
        if n == 0 {
            return Err(Error::Empty("training set"));
        }
        if let Some(w) = weights {
            if w.len() != n {
                return Err(Error::ShapeMismatch {
                    what: "example weights",
                    expected: n.to_string(),
                    got: w.len().to_string(),
                });
            }
            if let Some(i) = w.iter().position(|v| !(v.is_finite() && *v >= 0.0)) {
                let v = format!("{} (example {i})", w[i]);
                return Err(invalid("example weight", v, "finite and ≥ 0"));
            }
        }
        Ok(())
    }

    /// Fine-tunes a copy of `base` on `docs` (each weighted by `weights`, default 1) and
    /// returns it; `on_epoch` runs after every epoch. A non-finite loss is
    /// [`Error::Diverged`].
    pub fn run(
        &self,
        base: &LlamaCheckpoint,
        docs: &[TokenSeq],
        weights: Option<&[f32]>,
        on_epoch: impl FnMut(Epoch<'_>) -> trak::Result<()>,
    ) -> trak::Result<LlamaCheckpoint> {
        self.run_with_steps(base, docs, weights, |_, _| {}, on_epoch)
    }

    /// [`FineTune::run`], also calling `on_step(done, total)` as each batch begins (`done`
    /// counts it; steps of all epochs), for progress reports.
    pub fn run_with_steps(
        &self,
        base: &LlamaCheckpoint,
        docs: &[TokenSeq],
        weights: Option<&[f32]>,
        mut on_step: impl FnMut(usize, usize),
        mut on_epoch: impl FnMut(Epoch<'_>) -> trak::Result<()>,
    ) -> trak::Result<LlamaCheckpoint> {
        self.validate(docs.len(), weights)?;
        check_lengths(docs, base.config().max_position_embeddings)?;
        let total = self.epochs * docs.len().div_ceil(self.batch);
        let mut done = 0;
        let ckpt = base.snapshot()?;
        let mut opt = self.optimizer(&ckpt)?;
        let lm = ckpt.model_frozen(|name| self.is_frozen(name))?;
        let native = self.native && train::trainable(ckpt.config(), |n| !self.is_frozen(n));
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed);
        let mut order: Vec<usize> = (0..docs.len()).collect();
        let t0 = Instant::now();
        for epoch in 0..self.epochs {
            order.shuffle(&mut rng);
            let (mut loss_sum, mut tokens) = (0f64, 0f64);
            for idx in order.chunks(self.batch) {
                done += 1;
                on_step(done, total);
                // Zero-weighted examples are left out of the pass itself (their padding would
                // otherwise change the batch's shape).
                let weight = |i: usize| weights.map_or(1.0, |w| w[i]);
                let kept: Vec<usize> = idx.iter().copied().filter(|&i| weight(i) > 0.0).collect();
                let batch: Vec<TokenSeq> = kept.iter().map(|&i| docs[i].clone()).collect();
                let w: Vec<f32> = kept.iter().map(|&i| weight(i)).collect();
                let denom: f64 = batch
                    .iter()
                    .zip(&w)
                    .map(|(s, &w)| w as f64 * counted(s) as f64)
                    .sum();
                if denom == 0.0 {
                    continue;
                }
                let loss = match native {
                    true => self.native_step(&lm, &mut opt, &batch, (&w, denom))?,
                    false => step(&lm, &mut opt, &batch, &w, denom)?,
                };
                if !loss.is_finite() {
                    return Err(Error::Diverged {
                        epoch,
                        loss: loss as f32,
                    });
                }
                loss_sum += loss * denom;
                tokens += denom;
            }
            on_epoch(Epoch {
                index: epoch + 1,
                mean_loss: loss_sum / tokens.max(f64::MIN_POSITIVE),
                elapsed: t0.elapsed().as_secs_f64(),
                checkpoint: &ckpt,
                optimizer: &opt,
            })?;
        }
        Ok(ckpt)
    }

    /// One optimiser step with the gradients of the native pass; returns the batch's loss.
    fn native_step(
        &self,
        lm: &Llama,
        opt: &mut AdamW,
        batch: &[TokenSeq],
        (w, denom): (&[f32], f64),
    ) -> trak::Result<f64> {
        let (loss, grads) = train::loss_gradients(lm, batch, (w, denom))?;
        opt.step_slices(&grads)?;
        Ok(loss)
    }

    /// Whether tensor `name` is frozen (a name or prefix in [`FineTune::frozen`]).
    fn is_frozen(&self, name: &str) -> bool {
        self.frozen.iter().any(|f| name.starts_with(f.as_str()))
    }

    /// AdamW over every tensor not frozen; a frozen name that matches nothing is refused.
    fn optimizer(&self, ckpt: &LlamaCheckpoint) -> trak::Result<AdamW> {
        if let Some(f) = self
            .frozen
            .iter()
            .find(|f| !ckpt.vars().iter().any(|(n, _)| n.starts_with(f.as_str())))
        {
            return Err(invalid(
                "frozen tensor",
                f.clone(),
                "the name or name prefix of a tensor of the checkpoint",
            ));
        }
        let vars = ckpt
            .vars()
            .iter()
            .filter(|(n, _)| !self.is_frozen(n))
            .cloned()
            .collect();
        let params = ParamsAdamW {
            lr: self.lr,
            weight_decay: self.weight_decay,
            ..Default::default()
        };
        AdamW::new(vars, params)
    }
}

/// Every example must have something to predict and fit the model's context
/// ([`Error::InvalidExample`] naming the first that does not).
fn check_lengths(docs: &[TokenSeq], max: usize) -> trak::Result<()> {
    for (i, d) in docs.iter().enumerate() {
        let n = d.tokens.len();
        let reason = if n < 2 || d.prompt_len == 0 || d.prompt_len >= n {
            format!(
                "{n} tokens with prompt length {}: nothing to predict",
                d.prompt_len
            )
        } else if n - 1 > max {
            format!(
                "{} input positions exceed the model's context of {max}",
                n - 1
            )
        } else {
            continue;
        };
        return Err(Error::InvalidExample { example: i, reason });
    }
    Ok(())
}

/// One optimiser step on the weighted batch; returns its loss (per kept token).
fn step(
    lm: &crate::models::llama::Llama,
    opt: &mut AdamW,
    batch: &[TokenSeq],
    w: &[f32],
    denom: f64,
) -> trak::Result<f64> {
    let run = || -> candle::Result<(f64, candle::backprop::GradStore)> {
        let logp = sequence_log_probs(lm, batch)?;
        let w = candle::Tensor::from_slice(w, w.len(), lm.device())?;
        let loss = ((logp * w)?.sum_all()?.neg()? / denom)?;
        let grads = loss.backward()?;
        Ok((loss.to_scalar::<f32>()? as f64, grads))
    };
    let (loss, grads) = run().ctx("a fine-tuning step")?;
    opt.step(&grads)?;
    Ok(loss)
}
