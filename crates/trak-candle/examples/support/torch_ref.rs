//! The PyTorch checkpoint of `data/torch_cnn.py` and its reference values: the CNN's state
//! dict loaded by name from safetensors, and PyTorch's own margins and per-example gradients
//! on four held-out digits to check the adapter against.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use ndarray::{Array1, Array2};
use trak::data::Sample;
use trak::{Error, Model, Result};
use trak_candle::CandleContext;

use super::mnist_cnn::MnistCnn;

/// `crates/trak-candle/data/<name>`.
pub fn data_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(name)
}

/// The tensors of a safetensors file.
pub fn read(name: &str) -> Result<HashMap<String, Tensor>> {
    candle::safetensors::load(data_file(name), &Device::Cpu).ctx("reading a safetensors file")
}

/// The PyTorch-trained CNN, its state dict read by name (upcast to f32 if it were not).
pub fn torch_cnn() -> Result<MnistCnn> {
    let vb = VarBuilder::from_tensors(read("torch_cnn.safetensors")?, DType::F32, &Device::Cpu);
    MnistCnn::from_vb(vb).ctx("building the CNN from the state dict")
}

/// The split `data/torch_cnn.py` trained with: digits with index i % 5 ≠ 0 are the training
/// set (4,000), the others held out (1,000). Returns (train, held out, held-out indices).
pub fn torch_split() -> Result<(Vec<Sample>, Vec<Sample>, Vec<usize>)> {
    let all = trak_demo::mnist_5k()?.samples();
    let (mut train, mut held, mut idx) = (Vec::new(), Vec::new(), Vec::new());
    for (i, s) in all.into_iter().enumerate() {
        if i % 5 == 0 {
            held.push(s);
            idx.push(i);
        } else {
            train.push(s);
        }
    }
    Ok((train, held, idx))
}

/// How far the adapter is from PyTorch on the reference digits.
pub struct TorchCheck {
    /// max |f_candle − f_torch| over the reference digits.
    pub margins_max_abs_err: f32,
    /// max |∇_candle − ∇_torch| / max |∇_torch|.
    pub grads_rel_err: f32,
}

/// Compares `model`'s margins and per-example gradients with PyTorch's.
pub fn check<M: Model<Example = Sample>>(net: &MnistCnn, model: &M) -> Result<TorchCheck> {
    let r = read("torch_cnn_reference.safetensors")?;
    let get = |k: &str| {
        r.get(k)
            .ok_or(Error::Empty("a tensor of the reference file"))
    };
    let indices = get("indices")?.to_vec1::<i64>().ctx("reading indices")?;
    let all = trak_demo::mnist_5k()?.samples();
    let digits: Vec<Sample> = indices.iter().map(|&i| all[i as usize].clone()).collect();
    let torch_f = get("margins")?.to_vec1::<f32>().ctx("reading margins")?;
    let ours_f = net.margins(&digits).ctx("computing margins")?;
    let margins_max_abs_err = ours_f
        .iter()
        .zip(&torch_f)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let g = get("grads")?.to_vec2::<f32>().ctx("reading gradients")?;
    let torch_g = Array2::from_shape_vec((g.len(), g[0].len()), g.concat()).expect("rectangular");
    let mut ours = Array2::zeros((digits.len(), model.num_params()));
    model.output_grads(&digits, ours.view_mut())?;
    let scale = torch_g.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = Array1::from_iter(ours.iter().zip(&torch_g).map(|(a, b)| (a - b).abs()));
    let grads_rel_err = diff.fold(0f32, |m, v| m.max(*v)) / scale;
    if ours.dim() != torch_g.dim() {
        return Err(Error::ShapeMismatch {
            what: "PyTorch gradients",
            expected: format!("{:?}", ours.dim()),
            got: format!("{:?}", torch_g.dim()),
        });
    }
    Ok(TorchCheck {
        margins_max_abs_err,
        grads_rel_err,
    })
}
