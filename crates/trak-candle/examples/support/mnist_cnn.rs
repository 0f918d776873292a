//! The CNN of the examples: two 3×3 conv + ReLU + 2×2 max-pool blocks and a linear head, on
//! 28×28 MNIST digits; seeded initialisation and AdamW training in candle.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use candle::{DType, Device, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Linear, Optimizer, VarBuilder, VarMap};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use trak::data::{Sample, Target};
use trak_candle::ops::max_pool2d;
use trak_candle::{Network, Recorder};

// Each support file that seeds a network includes this one; a program may include several.
#[allow(clippy::duplicate_mod)]
#[path = "seeded.rs"]
mod seeded;

/// Channels of the two convolutions.
pub const CHANNELS: (usize, usize) = (8, 16);

/// conv(1→8, 3×3, pad 1) → ReLU → pool → conv(8→16, 3×3, pad 1) → ReLU → pool → linear(784→10).
pub struct MnistCnn {
    c1: Conv2d,
    c2: Conv2d,
    fc: Linear,
}

impl Network for MnistCnn {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let h = max_pool2d(&rec.conv2d("conv1", &self.c1, x)?.relu()?, 2)?;
        let h = max_pool2d(&rec.conv2d("conv2", &self.c2, &h)?.relu()?, 2)?;
        rec.linear("fc", &self.fc, &h.flatten_from(1)?)
    }
}

/// Training settings.
#[derive(Debug, Clone, Copy)]
pub struct Training {
    /// Passes over the data.
    pub epochs: usize,
    /// Minibatch size.
    pub batch: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
}

impl Default for Training {
    fn default() -> Self {
        Self {
            epochs: 8,
            batch: 64,
            lr: 3e-3,
            weight_decay: 1e-4,
        }
    }
}

impl MnistCnn {
    /// The network on the weights of `vb`, named as a PyTorch state dict of the same module
    /// names would name them (`conv1.weight`, `conv1.bias`, …, `fc.bias`).
    pub fn from_vb(vb: VarBuilder) -> candle::Result<Self> {
        let pad = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        let (a, b) = CHANNELS;
        Ok(Self {
            c1: candle_nn::conv2d(1, a, 3, pad, vb.pp("conv1"))?,
            c2: candle_nn::conv2d(a, b, 3, pad, vb.pp("conv2"))?,
            fc: candle_nn::linear(b * 49, 10, vb.pp("fc"))?,
        })
    }

    /// A network whose weights are the variables of `map`, initialised from `seed` as PyTorch
    /// does (U(±1/√fan_in) for weights and biases), with ChaCha8 so that it is reproducible.
    pub fn init(map: &VarMap, seed: u64) -> candle::Result<Self> {
        let net = Self::from_vb(VarBuilder::from_varmap(map, DType::F32, &Device::Cpu))?;
        seeded::seed_vars(map, seed)?;
        Ok(net)
    }

    /// Trains a fresh network (seed `seed`) on `data` and returns it with its variables.
    pub fn train(data: &[Sample], seed: u64, t: Training) -> candle::Result<(Self, VarMap)> {
        let map = VarMap::new();
        let net = Self::init(&map, seed)?;
        let params = candle_nn::ParamsAdamW {
            lr: t.lr,
            weight_decay: t.weight_decay,
            ..Default::default()
        };
        let mut opt = candle_nn::AdamW::new(map.all_vars(), params)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        let mut order: Vec<usize> = (0..data.len()).collect();
        for _ in 0..t.epochs {
            order.shuffle(&mut rng);
            for idx in order.chunks(t.batch) {
                let batch: Vec<Sample> = idx.iter().map(|&i| data[i].clone()).collect();
                let (x, y) = tensors(&batch)?;
                let logits = net.forward(&x, &mut Recorder::training())?;
                let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
                opt.backward_step(&loss)?;
            }
        }
        Ok((net, map))
    }

    /// Margins (correct logit minus logsumexp of the others) on `data`.
    pub fn margins(&self, data: &[Sample]) -> candle::Result<Vec<f32>> {
        use trak::output::OutputFn;
        let mut out = Vec::with_capacity(data.len());
        for chunk in data.chunks(256) {
            let (x, _) = tensors(chunk)?;
            let z = self
                .forward(&x, &mut Recorder::training())?
                .to_vec2::<f32>()?;
            for (row, s) in z.iter().zip(chunk) {
                let mut g = vec![0.0; row.len()];
                out.push(trak::output::Margin.eval(row, &s.target, &mut g).f);
            }
        }
        Ok(out)
    }

    /// Accuracy (argmax of the logits) on `data`.
    pub fn accuracy(&self, data: &[Sample]) -> candle::Result<f64> {
        let mut right = 0;
        for chunk in data.chunks(256) {
            let (x, y) = tensors(chunk)?;
            let z = self.forward(&x, &mut Recorder::training())?;
            let hit = z.argmax(1)?.eq(&y)?.to_dtype(DType::F32)?.sum_all()?;
            right += hit.to_scalar::<f32>()? as usize;
        }
        Ok(right as f64 / data.len() as f64)
    }
}

/// Images `B × 1 × 28 × 28` and labels of a batch.
pub fn tensors(batch: &[Sample]) -> candle::Result<(Tensor, Tensor)> {
    let x: Vec<f32> = batch.iter().flat_map(|s| s.x.iter().copied()).collect();
    let y: Vec<u32> = batch
        .iter()
        .map(|s| match s.target {
            Target::Class(c) => c as u32,
            Target::Value(_) => 0,
        })
        .collect();
    let n = batch.len();
    Ok((
        Tensor::from_vec(x, (n, 1, 28, 28), &Device::Cpu)?,
        Tensor::from_vec(y, n, &Device::Cpu)?,
    ))
}
