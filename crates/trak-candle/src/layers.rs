//! The attributable layers of a network, as discovered from one forward pass, and the
//! gradient layout they define.
//!
//! **Layout.** Each layer y = W a + b is one [`trak::model::LinearLayer`] of shape
//! `out × (in + 1)` (the bias is the weight of a constant-1 input appended after the inputs;
//! `out × in` without a bias). For a convolution, `in = C·kh·kw` in the order of the weight
//! tensor `out × C × kh × kw`, and the layer is applied at every output position (H'·W').
//! [`trak::Model::output_grads`] writes, for each selected layer in call order, W row-major
//! and then b: the order of a PyTorch state dict, and of [`trak::models::Mlp`].

use candle::Tensor;
use trak::Unattributable;
use trak::model::LinearLayer;

use crate::error::refuse;
use crate::recorder::Call;

/// What kind of layer a recorder call was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `y = x Wᵀ + b` over the last dimension.
    Linear,
    /// A 2-D convolution (groups = dilation = 1).
    Conv2d {
        /// Kernel height and width.
        kernel: (usize, usize),
        /// Zero padding on each side.
        padding: usize,
        /// Stride.
        stride: usize,
    },
}

/// One attributable layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// The name the network gave it.
    pub name: String,
    /// Linear or convolution.
    pub kind: LayerKind,
    /// Output features (rows of W).
    pub out_dim: usize,
    /// Input features per position (columns of W, the bias excluded): `d` for a linear
    /// layer, `C·kh·kw` for a convolution.
    pub in_features: usize,
    /// Whether the layer has a bias.
    pub bias: bool,
    /// Positions per example: 1 for a linear layer on `B × d`, T on `B × T × d`, H'·W' for a
    /// convolution.
    pub positions: usize,
    /// For a tied layer ([`crate::Recorder::tied_linear`]), the other use of its weight: not
    /// attributed by default, refused when selected.
    pub tied_to: Option<String>,
}

impl LayerInfo {
    /// Parameters of the layer: `out · in` plus `out` for the bias.
    pub fn num_params(&self) -> usize {
        self.out_dim * (self.in_features + self.bias as usize)
    }

    /// The layer as the factored projector sees it (bias as an extra input column).
    pub fn linear_layer(&self) -> LinearLayer {
        LinearLayer {
            out_dim: self.out_dim,
            in_dim: self.in_features + self.bias as usize,
        }
    }

    /// Describes a recorded call of a batch of `batch` examples.
    pub(crate) fn from_call(call: &Call, batch: usize) -> candle::Result<Self> {
        let out_dim = call.weight.dim(0)?;
        let in_features = call.weight.elem_count() / out_dim;
        let rows = call.output.elem_count() / out_dim;
        Ok(Self {
            name: call.name.clone(),
            kind: call.kind,
            out_dim,
            in_features,
            bias: call.bias.is_some(),
            positions: rows / batch,
            tied_to: call.tied_to.clone(),
        })
    }
}

/// Checks that every call is a distinct layer with its own weights.
pub(crate) fn check_distinct(calls: &[Call]) -> trak::Result<()> {
    for (i, c) in calls.iter().enumerate() {
        for prev in &calls[..i] {
            if prev.name == c.name || prev.weight_id == c.weight_id {
                let with = prev.name.clone();
                return Err(refuse(&c.name, Unattributable::SharedWeights { with }));
            }
        }
    }
    Ok(())
}

/// Which layers are attributed, as a mask over the discovered layers; `None` selects all but
/// the tied ones. Naming a tied layer is [`Unattributable::SharedWeights`].
pub(crate) fn select(layers: &[LayerInfo], names: Option<&[String]>) -> trak::Result<Vec<bool>> {
    let Some(names) = names else {
        return Ok(layers.iter().map(|l| l.tied_to.is_none()).collect());
    };
    if names.is_empty() {
        return Err(trak::Error::Empty("selected layers"));
    }
    let mut mask = vec![false; layers.len()];
    for n in names {
        let Some(i) = layers.iter().position(|l| &l.name == n) else {
            let known: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
            return Err(trak::Error::InvalidParameter {
                parameter: "layer name",
                value: n.clone(),
                expected: format!("one of the network's layers {known:?}"),
            });
        };
        if let Some(with) = &layers[i].tied_to {
            let with = with.clone();
            return Err(refuse(n, Unattributable::SharedWeights { with }));
        }
        mask[i] = true;
    }
    Ok(mask)
}

/// xxh3-64 of the names, selection and exact weight bits of the layers.
pub(crate) fn fingerprint(calls: &[Call], mask: &[bool]) -> candle::Result<u64> {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for (c, &m) in calls.iter().zip(mask) {
        h.update(c.name.as_bytes());
        h.update(&[m as u8]);
        for t in std::iter::once(&c.weight).chain(c.bias.as_ref()) {
            hash_tensor(&mut h, t)?;
        }
    }
    Ok(h.digest())
}

/// Values per `update` of [`hash_tensor`].
const HASH_BLOCK: usize = 1 << 14;

/// Feeds a tensor's shape and f32 bits to `h`.
pub(crate) fn hash_tensor(h: &mut xxhash_rust::xxh3::Xxh3, t: &Tensor) -> candle::Result<()> {
    for &d in t.dims() {
        h.update(&(d as u64).to_le_bytes());
    }
    // The bits in blocks: one `update` per value cost ~5 ns each, 0.5 s for SmolLM2's
    // weights; the digest of the concatenation is the same.
    let values = t.flatten_all()?.to_vec1::<f32>()?;
    let mut bytes = Vec::with_capacity(4 * HASH_BLOCK);
    for block in values.chunks(HASH_BLOCK) {
        bytes.clear();
        bytes.extend(block.iter().flat_map(|v| v.to_bits().to_le_bytes()));
        h.update(&bytes);
    }
    Ok(())
}
