//! From the user's examples to the network's input tensor.

use candle::{Device, Tensor};
use trak::data::Sample;

/// Stacks examples of type `E` into the network's input.
pub trait Collate<E>: Sync {
    /// The input tensor of `batch`; its first dimension must be `batch.len()`, and row b
    /// must depend on `batch[b]` only.
    fn inputs(&self, batch: &[E], device: &Device) -> candle::Result<Tensor>;

    /// Checks one example before it is collated (e.g. that a sequence fits the context); an
    /// `Err` is reported as [`trak::Error::InvalidExample`] naming the example. The default
    /// accepts everything.
    fn check(&self, e: &E) -> Result<(), String> {
        let _ = e;
        Ok(())
    }

    /// An example made only of the padding this collation adds (for a token collation, the
    /// pad token), so that the builder can check the padding with the objective's
    /// [`crate::Objective::check`]; `None` (the default) when it pads with nothing to check.
    fn padding(&self) -> Option<E> {
        None
    }
}

/// Collates [`trak::data::Sample`]s: each input vector reshaped to `shape`
/// (e.g. `[784]` for an MLP, `[1, 28, 28]` for a CNN), stacked into `B × shape`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleCollate {
    shape: Vec<usize>,
}

impl SampleCollate {
    /// Inputs of `shape` per example; its product must be the samples' input length.
    pub fn new(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
        }
    }
}

impl Collate<Sample> for SampleCollate {
    fn inputs(&self, batch: &[Sample], device: &Device) -> candle::Result<Tensor> {
        let d: usize = self.shape.iter().product();
        let mut flat = Vec::with_capacity(batch.len() * d);
        for (b, s) in batch.iter().enumerate() {
            if s.x.len() != d {
                candle::bail!(
                    "example {b} has {} inputs, the shape {:?} needs {d}",
                    s.x.len(),
                    self.shape
                );
            }
            flat.extend_from_slice(&s.x);
        }
        let mut dims = vec![batch.len()];
        dims.extend_from_slice(&self.shape);
        Tensor::from_vec(flat, dims, device)
    }
}
