//! The training trajectory for the reverse pass: the first pass trains and keeps what the
//! plan says; [`Trajectory::segment_states`] gives back the parameters θ_t before every step
//! of a segment, replaying it from its checkpoint when the plan keeps checkpoints only.

use ndarray::Array2;

use super::plan::ReplayPlan;
use crate::attribute::memory::zeros2;
use crate::error::{Error, Result};
use crate::models::sgd::SgdState;
use crate::models::{Sgd, Trainable};

/// What the first pass kept.
pub(crate) struct Trajectory<'a, M: Trainable> {
    sgd: &'a Sgd,
    data: &'a [M::Example],
    batches: Vec<Vec<usize>>,
    plan: ReplayPlan,
    /// Every θ_t (T × p), or the checkpoints' θ (one row per segment start).
    thetas: Array2<f32>,
    /// The checkpoints' velocities (one row per segment start; empty when every state is kept).
    velocities: Array2<f32>,
    /// θ_T.
    pub(crate) final_theta: Vec<f32>,
}

impl<'a, M: Trainable> Trajectory<'a, M> {
    /// Trains `model` (which ends at θ_T) from its parameters, keeping the plan's states.
    pub(crate) fn first_pass(
        sgd: &'a Sgd,
        model: &mut M,
        data: &'a [M::Example],
        plan: ReplayPlan,
    ) -> Result<Self> {
        sgd.prepare(model, data, None)?;
        let p = model.param_count();
        let batches = sgd.batches(data.len());
        let kept = if plan.keeps_every_state {
            plan.steps
        } else {
            plan.steps.div_ceil(plan.segment)
        };
        let mut thetas = zeros2((kept, p), "metagradient trajectory")?;
        let vel_rows = if plan.keeps_every_state { 0 } else { kept };
        let mut velocities = zeros2((vel_rows, p), "metagradient checkpoints")?;
        let mut state = SgdState::of(model);
        let per_epoch = sgd.steps_per_epoch(data.len());
        for (t, batch) in batches.iter().enumerate() {
            if plan.keeps_every_state {
                thetas
                    .row_mut(t)
                    .as_slice_mut()
                    .expect("row")
                    .copy_from_slice(&state.theta);
            } else if t % plan.segment == 0 {
                let c = t / plan.segment;
                thetas
                    .row_mut(c)
                    .as_slice_mut()
                    .expect("row")
                    .copy_from_slice(&state.theta);
                let v = velocities.row_mut(c);
                v.into_slice()
                    .expect("row")
                    .copy_from_slice(&state.velocity);
            }
            sgd.step(model, data, None, batch, t / per_epoch, &mut state)?;
        }
        Ok(Self {
            sgd,
            data,
            batches,
            plan,
            thetas,
            velocities,
            final_theta: state.theta,
        })
    }

    /// Number of segments.
    pub(crate) fn segments(&self) -> usize {
        self.plan.steps.div_ceil(self.plan.segment)
    }

    /// The steps of segment `s`.
    pub(crate) fn steps_of(&self, s: usize) -> std::ops::Range<usize> {
        let start = s * self.plan.segment;
        start..(start + self.plan.segment).min(self.plan.steps)
    }

    /// The minibatch of step `t`.
    pub(crate) fn batch(&self, t: usize) -> &[usize] {
        &self.batches[t]
    }

    /// θ_t for every step t of segment `s`, as rows of `buf` (at least the segment's
    /// length): copied when every state is kept, otherwise replayed with `model` from the
    /// segment's checkpoint and checked bit for bit against the next checkpoint.
    pub(crate) fn segment_states<'b>(
        &'b self,
        s: usize,
        model: &mut M,
        buf: &'b mut Array2<f32>,
    ) -> Result<ndarray::ArrayView2<'b, f32>> {
        let steps = self.steps_of(s);
        if self.plan.keeps_every_state {
            return Ok(self.thetas.slice(ndarray::s![steps, ..]));
        }
        let theta = self.thetas.row(s).to_vec();
        let velocity = self.velocities.row(s).to_vec();
        model.write_params(&theta);
        let mut state = SgdState::from_parts(theta, velocity);
        let per_epoch = self.sgd.steps_per_epoch(self.data.len());
        for (r, t) in steps.clone().enumerate() {
            buf.row_mut(r)
                .as_slice_mut()
                .expect("row")
                .copy_from_slice(&state.theta);
            let batch = &self.batches[t];
            self.sgd
                .step(model, self.data, None, batch, t / per_epoch, &mut state)?;
        }
        let expected = if s + 1 < self.thetas.nrows() {
            self.thetas.row(s + 1).to_vec()
        } else {
            self.final_theta.clone()
        };
        let same = expected
            .iter()
            .zip(&state.theta)
            .all(|(a, b)| a.to_bits() == b.to_bits());
        if !same {
            return Err(Error::NotReplayable {
                step: steps.end - 1,
            });
        }
        Ok(buf.slice(ndarray::s![..steps.len(), ..]))
    }
}
