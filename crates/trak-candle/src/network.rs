//! The network interface: a forward pass that routes its layers through a [`Recorder`].

use candle::Tensor;

use crate::recorder::Recorder;

/// A candle network whose attributable layers go through the recorder.
///
/// `forward` maps the collated input (first dimension = batch) to raw outputs `B × c` (logits
/// or predictions), calling [`Recorder::linear`] / [`Recorder::conv2d`] for every linear and
/// convolutional layer. It must treat examples independently (no batch statistics; see
/// [`Recorder::batch_norm`]) and call the same layers in the same order for every batch.
/// References and `Arc`s of a network are networks, so one network can back several adapters.
pub trait Network: Sync {
    /// Raw outputs of `x`.
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor>;
}

impl<N: Network + ?Sized> Network for &N {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        (**self).forward(x, rec)
    }
}

impl<N: Network + ?Sized + Send> Network for std::sync::Arc<N> {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        (**self).forward(x, rec)
    }
}
