//! What the adapter attributes: the scalar f of each example, computed from the network's raw
//! outputs, with its Q and ∂f/∂(raw outputs).
//!
//! Any [`trak::output::OutputFn`] (margin, logistic, regression, your own) is an objective
//! for [`trak::data::Sample`]s, which carry their target; [`WithTarget`] makes it one for any
//! example type that can name its target. Sequences (language models) use
//! [`trak::output::SequenceLogProb`] through [`crate::sequence`].

use trak::data::{Sample, Target};
use trak::output::{OutputFn, OutputValue};

/// f, Q and ∂f/∂z of one example from its row of the network output.
pub trait Objective<E>: Sync {
    /// Evaluates example `e` at raw outputs `z` (its row of the network output, flattened
    /// row-major) and writes ∂f/∂z into `df_dz` (same length). An example the objective cannot
    /// evaluate (a label out of range, a sequence longer than the outputs) is an `Err` with
    /// the reason; the adapter reports it as [`trak::Error::InvalidTarget`].
    fn eval(&self, e: &E, z: &[f32], df_dz: &mut [f32]) -> Result<OutputValue, String>;

    /// The curvature r = ∂²L/∂f² of the training loss at raw outputs `z` (the example's
    /// Gauss-Newton weight, see [`trak::Weighting`]); `None` (the default) if unknown, and
    /// the adapter then refuses Gauss-Newton weighting with [`trak::Error::NoCurvature`].
    fn curvature(&self, e: &E, z: &[f32]) -> Option<f32> {
        let _ = (e, z);
        None
    }

    /// Checks an example before any forward pass (e.g. that every token is in the
    /// vocabulary); an `Err` is reported as [`trak::Error::InvalidExample`] naming the
    /// example. The default accepts everything.
    fn check(&self, e: &E) -> Result<(), String> {
        let _ = e;
        Ok(())
    }

    /// Checks the shape of the network's raw outputs (`B × …`) once they exist (e.g. that a
    /// language model's last dimension is the objective's vocabulary); an `Err` is reported
    /// as [`trak::Error::ShapeMismatch`]. The default accepts every shape.
    fn check_outputs(&self, dims: &[usize]) -> Result<(), String> {
        let _ = dims;
        Ok(())
    }
}

impl<O: OutputFn> Objective<Sample> for O {
    fn eval(&self, e: &Sample, z: &[f32], df_dz: &mut [f32]) -> Result<OutputValue, String> {
        self.validate(z.len(), &e.target)?;
        Ok(OutputFn::eval(self, z, &e.target, df_dz))
    }

    fn curvature(&self, e: &Sample, z: &[f32]) -> Option<f32> {
        self.validate(z.len(), &e.target).ok()?;
        OutputFn::curvature(self, z, &e.target)
    }
}

/// An [`OutputFn`] for examples of any type, with a function that gives each one's target.
#[derive(Debug, Clone, Copy)]
pub struct WithTarget<O, F> {
    output: O,
    target: F,
}

impl<O, F> WithTarget<O, F> {
    /// `output` evaluated against `target(e)`.
    pub fn new(output: O, target: F) -> Self {
        Self { output, target }
    }
}

impl<E, O: OutputFn, F: Fn(&E) -> Target + Sync> Objective<E> for WithTarget<O, F> {
    fn eval(&self, e: &E, z: &[f32], df_dz: &mut [f32]) -> Result<OutputValue, String> {
        let t = (self.target)(e);
        self.output.validate(z.len(), &t)?;
        Ok(self.output.eval(z, &t, df_dz))
    }

    fn curvature(&self, e: &E, z: &[f32]) -> Option<f32> {
        let t = (self.target)(e);
        self.output.validate(z.len(), &t).ok()?;
        self.output.curvature(z, &t)
    }
}
