//! Ops whose candle backward pass is wrong, rewritten from ops whose backward is right.
//!
//! The adapter differentiates through whatever the network computes between its recorded
//! layers, so an op with a wrong backward gives wrong attributions. The builder's gradient
//! check ([`crate::CandleModelBuilder::build`]) catches such an op; this module replaces the
//! ones found so far.
//!
//! - **`Tensor::max_pool2d`** (candle 0.11): its backward multiplies the gradient by
//!   (number of maxima in the window) / (window size) instead of dividing by the number of
//!   maxima, so a unique maximum of a 2 × 2 window gets ¼ of its gradient. Training still
//!   converges (the gradients are only rescaled per pool), but per-example gradients of every
//!   layer before the pool are wrong. [`max_pool2d`] computes the same forward values and
//!   routes the whole gradient to the window's first maximum in row-major order, as
//!   PyTorch does. (A plain `max` reduction would not do: its backward gives the full
//!   gradient to *every* tied maximum, and MNIST's constant background makes exact ties
//!   common.)

use candle::Tensor;

/// 2-D max pooling with a `k × k` window and stride `k` on `B × C × H × W` (remainder rows
/// and columns dropped, as `Tensor::max_pool2d` does), with a correct backward pass.
pub fn max_pool2d(x: &Tensor, k: usize) -> candle::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (ho, wo) = (h / k, w / k);
    let x = if h % k != 0 || w % k != 0 {
        x.narrow(2, 0, ho * k)?.narrow(3, 0, wo * k)?
    } else {
        x.clone()
    };
    let windows = x
        .contiguous()?
        .reshape((b, c, ho, k, wo, k))?
        .permute([0, 1, 2, 4, 3, 5])?
        .contiguous()?
        .reshape((b, c, ho, wo, k * k))?;
    // argmax keeps the first of tied maxima; gather's backward scatters to that index only.
    let first = windows.detach().argmax_keepdim(4)?;
    windows.gather(&first, 4)?.squeeze(4)
}
