//! Networks shared by the adapter's tests.
#![allow(dead_code, unused_imports)]

use candle::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, VarBuilder, VarMap};
use trak::data::Sample;
use trak_candle::ops::max_pool2d;
use trak_candle::{Network, Recorder};

pub mod llama;
#[path = "../../examples/support/mlp_net.rs"]
mod mlp_net;
pub use mlp_net::MlpNet;
// Each support file that seeds a network includes this one; a program may include several.
#[allow(clippy::duplicate_mod)]
#[path = "../../examples/support/seeded.rs"]
mod seeded;
pub use seeded::{Fill, seed_vars, seed_vars_with};

/// A small CNN on `side × side` single-channel images: conv (pad 1) → ReLU → 2×2 max-pool →
/// conv (stride 2, pad 1) → ReLU → flatten → linear.
pub struct Cnn {
    pub c1: Conv2d,
    pub c2: Conv2d,
    pub fc: Linear,
    pub side: usize,
}

impl Network for Cnn {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = max_pool2d(&rec.conv2d("c1", &self.c1, x)?.relu()?, 2)?;
        let h = rec.conv2d("c2", &self.c2, &h)?.relu()?;
        let h = h.flatten_from(1)?;
        rec.linear("fc", &self.fc, &h)
    }
}

impl Cnn {
    /// Weights as Vars of `map`, seeded (PyTorch's U(±1/√fan_in), ChaCha8 from `seed`).
    pub fn new(side: usize, classes: usize, map: &VarMap) -> Self {
        Self::seeded(side, classes, map, 0)
    }

    /// [`Cnn::new`] from another seed.
    pub fn seeded(side: usize, classes: usize, map: &VarMap, seed: u64) -> Self {
        let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let strided = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let c1 = candle_nn::conv2d(1, 4, 3, pad, vb.pp("c1")).unwrap();
        let c2 = candle_nn::conv2d(4, 6, 3, strided, vb.pp("c2")).unwrap();
        let s = (side / 2).div_ceil(2);
        let fc = candle_nn::linear(6 * s * s, classes, vb.pp("fc")).unwrap();
        seed_vars(map, seed).unwrap();
        Self { c1, c2, fc, side }
    }

    /// The variables in gradient-layout order.
    pub fn vars(map: &VarMap) -> Vec<(String, candle::Var)> {
        let data = map.data().lock().unwrap();
        ["c1", "c2", "fc"]
            .iter()
            .flat_map(|l| ["weight", "bias"].map(|p| format!("{l}.{p}")))
            .map(|n| (n.clone(), data[&n].clone()))
            .collect()
    }
}

/// `n` Gaussian-blob samples of dimension `d` with `classes` classes.
pub fn samples(n: usize, d: usize, classes: usize, seed: u64) -> Vec<Sample> {
    trak::data::Dataset::blobs(n, d, classes, seed)
        .unwrap()
        .samples()
}

/// The model's per-example output gradients of `batch`.
pub fn grads<M: trak::Model>(m: &M, batch: &[M::Example]) -> ndarray::Array2<f32> {
    let mut g = ndarray::Array2::zeros((batch.len(), m.num_params()));
    m.output_grads(batch, g.view_mut()).unwrap();
    g
}

/// max |a − b| / max |a|.
pub fn rel_err(a: &ndarray::Array2<f32>, b: &ndarray::Array2<f32>) -> f32 {
    assert_eq!(a.dim(), b.dim());
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}
