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

/// A network from an unmodified forward pass (`x ↦ raw outputs`) that routes nothing
/// through the recorder: attribute its weights with
/// [`crate::CandleModelBuilder::all_parameters`] (for example those of a
/// [`crate::capture::VarCapture`]). Build it with [`from_fn`].
#[derive(Debug, Clone, Copy)]
pub struct FnNetwork<F>(F);

/// Wraps an unmodified forward pass as a [`Network`] (see [`FnNetwork`]).
pub fn from_fn<F>(forward: F) -> FnNetwork<F>
where
    F: Fn(&Tensor) -> candle::Result<Tensor> + Sync,
{
    FnNetwork(forward)
}

impl<F> Network for FnNetwork<F>
where
    F: Fn(&Tensor) -> candle::Result<Tensor> + Sync,
{
    fn forward(&self, x: &Tensor, _rec: &mut Recorder) -> candle::Result<Tensor> {
        (self.0)(x)
    }
}
