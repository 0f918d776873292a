//! The built-in MLP's architecture as a candle network (shared by the examples and tests).
// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use candle::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use trak::models::Mlp;
use trak::output::Margin;
use trak_candle::{Network, Recorder};

// Each support file that seeds a network includes this one; a program may include several.
#[allow(clippy::duplicate_mod)]
#[path = "seeded.rs"]
mod seeded;

/// A ReLU MLP: `fc0 … fcL`, ReLU between layers.
pub struct MlpNet {
    /// The layers, input first.
    pub layers: Vec<Linear>,
}

impl Network for MlpNet {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let mut h = x.clone();
        for (l, layer) in self.layers.iter().enumerate() {
            h = rec.linear(&format!("fc{l}"), layer, &h)?;
            if l + 1 < self.layers.len() {
                h = h.relu()?;
            }
        }
        Ok(h)
    }
}

impl MlpNet {
    /// The built-in MLP's weights as candle layers (plain tensors).
    pub fn from_builtin(m: &Mlp<Margin>) -> Self {
        let dev = Device::Cpu;
        let layers = m
            .layers()
            .iter()
            .map(|l| {
                let w = l.w.as_standard_layout();
                let w = Tensor::from_slice(w.as_slice().unwrap(), l.w.dim(), &dev).unwrap();
                let b = Tensor::from_slice(l.b.as_slice().unwrap(), l.b.len(), &dev).unwrap();
                Linear::new(w, Some(b))
            })
            .collect();
        Self { layers }
    }

    /// A network whose weights are the Vars of `map` (`fc{l}.weight`, `fc{l}.bias`), seeded
    /// from 0 (PyTorch's U(±1/√fan_in), ChaCha8).
    pub fn with_vars(sizes: &[usize], map: &VarMap) -> Self {
        let vb = VarBuilder::from_varmap(map, DType::F32, &Device::Cpu);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(l, w)| candle_nn::linear(w[0], w[1], vb.pp(format!("fc{l}"))).unwrap())
            .collect();
        seeded::seed_vars(map, 0).unwrap();
        Self { layers }
    }
}
