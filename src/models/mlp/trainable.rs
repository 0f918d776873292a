//! The MLP as a [`Trainable`] model: flat parameters, the weighted loss, its HVP.

use ndarray::ArrayViewMut2;

use super::Mlp;
use super::hvp::MlpHvp;
use crate::data::Sample;
use crate::error::{Result, shape_err};
use crate::model::Model;
use crate::models::Trainable;
use crate::output::OutputFn;

impl<O: OutputFn> Trainable for Mlp<O> {
    type Example = Sample;

    fn param_count(&self) -> usize {
        Mlp::param_count(self)
    }

    fn read_params(&self, out: &mut [f32]) {
        let mut off = 0;
        for l in &self.layers {
            for &v in l.w.iter().chain(l.b.iter()) {
                out[off] = v;
                off += 1;
            }
        }
    }

    fn write_params(&mut self, params: &[f32]) {
        let mut off = 0;
        for l in &mut self.layers {
            for v in l.w.iter_mut().chain(l.b.iter_mut()) {
                *v = params[off];
                off += 1;
            }
        }
    }

    fn check_example(&self, example: &Sample, index: usize) -> Result<()> {
        self.check_shapes()?;
        self.check_sample(example, index)
    }

    fn weighted_loss_grad(
        &self,
        batch: &[&Sample],
        weights: &[f32],
        grad: &mut [f32],
    ) -> Result<f32> {
        if weights.len() != batch.len() {
            return Err(shape_err("batch weights", batch.len(), weights.len()));
        }
        self.weighted_loss_and_grad(batch, |b| weights[b], grad)
    }

    type Hvp<'a>
        = MlpHvp<'a, O>
    where
        O: 'a;

    fn weighted_hvp<'a>(&'a self, batch: &[&'a Sample], weights: &[f32]) -> Result<MlpHvp<'a, O>> {
        self.hvp_batch(batch, weights)
    }

    fn target_grads(&self, targets: &[Sample], out: ArrayViewMut2<'_, f32>) -> Result<()> {
        self.output_grads(targets, out)
    }
}
