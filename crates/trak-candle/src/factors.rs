//! Per-layer factors from one tapped forward and one backward pass per chunk, and the
//! per-example gradients they assemble into.
//!
//! For a layer applied at T positions, example b has inputs a_{b,t} and output gradients
//! δ_{b,t} = ∂f_b/∂y_{b,t} (the gradient of its tap). Its weight gradient is
//! Σ_t δ_{b,t} a_{b,t}ᵀ and its bias gradient Σ_t δ_{b,t}. A convolution's inputs are its
//! im2col patches: the padded input unfolded over both spatial dimensions, so that each
//! output position is one row of `C·kh·kw` inputs ordered as the weight tensor's columns.

use candle::Tensor;
use ndarray::{Array2, ArrayViewMut1, s};
use trak::model::LayerFactors;

use crate::layers::{LayerInfo, LayerKind};
use crate::pass::to_vec;
use crate::recorder::Call;

/// Factors of the real rows of one chunk for one layer: row-major `rows·T × in_features`
/// inputs (no bias column) and `rows·T × out` output gradients.
pub(crate) struct ChunkLayer {
    pub acts: Vec<f32>,
    pub deltas: Vec<f32>,
}

/// Inputs and output gradients of the first `real` examples of a chunk at one layer.
pub(crate) fn chunk_layer(
    call: &Call,
    info: &LayerInfo,
    grad: Option<&Tensor>,
    real: usize,
) -> candle::Result<ChunkLayer> {
    // Padded examples are dropped first: no im2col or copy is spent on them.
    let input = call.input.narrow(0, 0, real)?;
    let acts = match info.kind {
        LayerKind::Linear => input.reshape(((), info.in_features))?,
        LayerKind::Conv2d {
            kernel,
            padding,
            stride,
        } => im2col(&input, kernel, padding, stride)?,
    };
    let acts = to_vec(&acts)?;
    let deltas = match grad {
        Some(g) => {
            let g = g.narrow(0, 0, real)?;
            let g = match info.kind {
                LayerKind::Linear => g.reshape(((), info.out_dim))?,
                LayerKind::Conv2d { .. } => g
                    .permute([0, 2, 3, 1])?
                    .contiguous()?
                    .reshape(((), info.out_dim))?,
            };
            to_vec(&g)?
        }
        // The output does not depend on this layer: its gradient is zero.
        None => vec![0.0; real * info.positions * info.out_dim],
    };
    Ok(ChunkLayer { acts, deltas })
}

/// im2col of `x` (B × C × H × W): `B·H'·W' × C·kh·kw`, rows in (b, h', w') order.
pub(crate) fn im2col(
    x: &Tensor,
    (kh, kw): (usize, usize),
    padding: usize,
    stride: usize,
) -> candle::Result<Tensor> {
    let x = x
        .pad_with_zeros(2, padding, padding)?
        .pad_with_zeros(3, padding, padding)?;
    let u = x.unfold(2, kh, stride)?.unfold(3, kw, stride)?;
    let dims = u.dims().to_vec();
    let (b, c, ho, wo) = (dims[0], dims[1], dims[2], dims[3]);
    u.permute([0, 2, 3, 1, 4, 5])?
        .contiguous()?
        .reshape((b * ho * wo, c * kh * kw))
}

/// Stacks the chunks' factors of one layer into [`LayerFactors`] for `n` examples, with the
/// constant-1 bias column appended when the layer has a bias.
pub(crate) fn assemble(info: &LayerInfo, chunks: &[&ChunkLayer], n: usize) -> LayerFactors {
    let (t, inf, out) = (info.positions, info.in_features, info.out_dim);
    let in_dim = info.linear_layer().in_dim;
    let mut acts = Array2::ones((n * t, in_dim));
    let mut deltas = Array2::zeros((n * t, out));
    let mut row = 0;
    for c in chunks {
        let rows = c.deltas.len() / out;
        let a = ndarray::ArrayView2::from_shape((rows, inf), &c.acts).expect("chunk shape");
        let d = ndarray::ArrayView2::from_shape((rows, out), &c.deltas).expect("chunk shape");
        acts.slice_mut(s![row..row + rows, ..inf]).assign(&a);
        deltas.slice_mut(s![row..row + rows, ..]).assign(&d);
        row += rows;
    }
    LayerFactors {
        positions: t,
        acts,
        deltas,
    }
}

/// Writes example `b`'s gradient for one layer into `dst` (length `info.num_params()`):
/// Σ_t δ_t a_tᵀ row-major, then Σ_t δ_t if the layer has a bias.
pub(crate) fn example_gradient(
    info: &LayerInfo,
    f: &LayerFactors,
    b: usize,
    mut dst: ArrayViewMut1<'_, f32>,
) {
    let (t, inf, out) = (info.positions, info.in_features, info.out_dim);
    let a = f.acts.slice(s![b * t..(b + 1) * t, ..inf]);
    let d = f.deltas.slice(s![b * t..(b + 1) * t, ..]);
    let w = d.t().dot(&a);
    let flat = w.as_standard_layout();
    let flat = flat.as_slice().expect("standard layout");
    dst.slice_mut(s![..out * inf])
        .assign(&ndarray::ArrayView1::from(flat));
    if info.bias {
        dst.slice_mut(s![out * inf..])
            .assign(&d.sum_axis(ndarray::Axis(0)));
    }
}
