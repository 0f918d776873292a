//! A Llama-family checkpoint in memory: its configuration and every tensor as an f32
//! variable, read from a Hugging Face directory (or from tensors), each tensor checked
//! against the configuration.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use candle::{DType, Device, Tensor, Var};
use trak::{CheckpointProblem, Error};

use super::{Llama, LlamaConfig, layout};
use crate::error::CandleContext;

/// A checkpoint: the configuration and its tensors as f32 [`Var`]s, in the order of
/// [`layout::tensors`] (embedding, blocks, final norm, head).
#[derive(Debug)]
pub struct LlamaCheckpoint {
    config: LlamaConfig,
    vars: Vec<(String, Var)>,
}

/// [`Error::Checkpoint`] for `path` (the one constructor of the llama loaders).
pub(super) fn problem(path: &Path, problem: CheckpointProblem) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        problem,
    }
}

impl LlamaCheckpoint {
    /// Reads a Hugging Face model directory: `config.json`, and `model.safetensors` or the
    /// shards listed by `model.safetensors.index.json`. Tensors are converted to f32 (from
    /// f16, bf16 or f64); tensors the architecture does not use are not read, except that
    /// blocks past `num_hidden_layers` are [`CheckpointProblem::UnexpectedTensor`]. A file
    /// whose size disagrees with its header is [`CheckpointProblem::FileSize`] (truncated).
    pub fn from_hf_dir(dir: &Path, device: &Device) -> trak::Result<Self> {
        let config = LlamaConfig::from_file(&dir.join("config.json"))?;
        let wanted: HashSet<String> = layout::tensors(&config).into_iter().map(|t| t.0).collect();
        let mut tensors = HashMap::new();
        for file in safetensors_files(dir)? {
            if !file.is_file() {
                let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
                return Err(Error::Io { path: file, source });
            }
            tensors.extend(super::safetensors::read(&file, &wanted, &config, device)?);
        }
        Self::from_tensors(config, tensors, dir)
    }

    /// Checks `tensors` (Hugging Face names) against `config` and keeps the ones the
    /// architecture uses, as f32 variables. `path` is named in errors: a missing tensor, a
    /// shape that disagrees with the configuration, a non-float tensor, a NaN or ±∞ in a
    /// tensor ([`Error::Checkpoint`]).
    pub fn from_tensors(
        config: LlamaConfig,
        mut tensors: HashMap<String, Tensor>,
        path: &Path,
    ) -> trak::Result<Self> {
        config.validate().map_err(|p| problem(path, p))?;
        let mut vars = Vec::new();
        for (name, shape) in layout::tensors(&config) {
            let t = tensors.remove(&name).ok_or_else(|| {
                problem(
                    path,
                    CheckpointProblem::MissingTensor { name: name.clone() },
                )
            })?;
            if t.dims() != shape.as_slice() {
                let found = t.dims().to_vec();
                let p = CheckpointProblem::TensorShape {
                    name,
                    expected: shape,
                    found,
                };
                return Err(problem(path, p));
            }
            if !matches!(
                t.dtype(),
                DType::F32 | DType::F16 | DType::BF16 | DType::F64
            ) {
                let p = CheckpointProblem::TensorType {
                    name,
                    found: t.dtype().as_str().to_string(),
                    supported: "f32, f16, bf16, f64".into(),
                };
                return Err(problem(path, p));
            }
            let t = t.to_dtype(DType::F32).ctx("converting a tensor to f32")?;
            let values = t.flatten_all().and_then(|f| f.to_vec1::<f32>());
            let values = values.ctx("reading a tensor")?;
            if let Some(index) = values.iter().position(|v| !v.is_finite()) {
                return Err(problem(
                    path,
                    CheckpointProblem::NonFiniteTensor { name, index },
                ));
            }
            // The checked values become the variable (no third copy of the weights).
            let var = Var::from_vec(values, shape, t.device()).ctx("making a variable")?;
            drop(t);
            vars.push((name, var));
        }
        Ok(Self { config, vars })
    }

    /// A checkpoint of `config` with seeded pseudo-random weights (uniform ±0.5/√fan-in for
    /// matrices and the embedding, 1 ± 0.1 for norm scales, ±0.1 for biases), for tests and
    /// quick modes. Same seed, same weights.
    pub fn random(config: LlamaConfig, seed: u64, device: &Device) -> trak::Result<Self> {
        let mut tensors = HashMap::new();
        for (i, (name, shape)) in layout::tensors(&config).into_iter().enumerate() {
            let n: usize = shape.iter().product();
            let (center, half) = match shape.len() {
                1 if name.ends_with("bias") => (0.0, 0.1),
                1 => (1.0, 0.1),
                _ => (0.0, 0.5 / (shape[1] as f32).sqrt()),
            };
            let mut state = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let values: Vec<f32> = (0..n)
                .map(|_| center + half * (2.0 * unit(&mut state) - 1.0))
                .collect();
            let t = Tensor::from_vec(values, shape, device).ctx("making a random tensor")?;
            tensors.insert(name, t);
        }
        Self::from_tensors(config, tensors, Path::new("<random>"))
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Every tensor as a variable, by Hugging Face name (for training, and for
    /// [`crate::CandleModelBuilder::all_parameters`]); a tied head has no entry of its own.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The network, computing with these variables.
    pub fn model(&self) -> trak::Result<Llama> {
        self.model_frozen(|_| false)
    }

    /// The network, computing with these variables except those `frozen` names, which it
    /// reads detached: the backward pass computes no gradient for them (for fine-tuning with
    /// frozen tensors; a frozen tied embedding also spares the head's weight gradient).
    pub(crate) fn model_frozen(&self, frozen: impl Fn(&str) -> bool) -> trak::Result<Llama> {
        let weights = self
            .vars
            .iter()
            .map(|(n, v)| match frozen(n) {
                true => (n.clone(), v.as_tensor().detach()),
                false => (n.clone(), v.as_tensor().clone()),
            })
            .collect();
        Llama::new(&self.config, &weights).ctx("building the network")
    }
}

/// The weight files of a Hugging Face directory: the shards of the index if there is one.
fn safetensors_files(dir: &Path) -> trak::Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    if !index.is_file() {
        return Ok(vec![dir.join("model.safetensors")]);
    }
    let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
        path: index.clone(),
        source,
    })?;
    let bad = |reason: String| {
        let field = "weight_map".to_string();
        problem(&index, CheckpointProblem::ConfigField { field, reason })
    };
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| bad("missing or not an object".into()))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for file in map.values() {
        let f = file
            .as_str()
            .ok_or_else(|| bad(format!("{file} is not a file name")))?;
        let f = dir.join(f);
        if !files.contains(&f) {
            files.push(f);
        }
    }
    Ok(files)
}

/// A uniform number in [0, 1) from a splitmix64 stream.
fn unit(state: &mut u64) -> f32 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
}
