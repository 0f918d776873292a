//! Reading one safetensors file of a Hugging Face checkpoint: its header checked against the
//! file's size, only the tensors the configuration uses decoded, each of a float type.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use candle::safetensors::SliceSafetensors;
use candle::{Device, Tensor};
use serde_json::Value;
use trak::{CheckpointProblem, Error};

use super::load::problem;
use super::{LlamaConfig, layout};
use crate::error::CandleContext;

/// The tensors of `file` named in `wanted`. Errors: [`Error::Io`];
/// [`CheckpointProblem::FileSize`] for a file shorter or longer than its header says;
/// [`Error::WrongFormat`] for a header that is not safetensors';
/// [`CheckpointProblem::TensorType`] for a wanted tensor of a non-float type;
/// [`CheckpointProblem::UnexpectedTensor`] for a block past the configuration's count.
pub(crate) fn read(
    file: &Path,
    wanted: &HashSet<String>,
    config: &LlamaConfig,
    device: &Device,
) -> trak::Result<HashMap<String, Tensor>> {
    let data = std::fs::read(file).map_err(|source| Error::Io {
        path: file.to_path_buf(),
        source,
    })?;
    let header = check_size(file, &data)?;
    let mut names: Vec<&String> = header.keys().filter(|n| *n != "__metadata__").collect();
    names.sort();
    for name in &names {
        check_block(file, name, config)?;
    }
    let st = SliceSafetensors::new(&data).ctx(&format!("reading {}", file.display()))?;
    let mut out = HashMap::new();
    for name in names.into_iter().filter(|n| wanted.contains(*n)) {
        let dtype = header[name]
            .get("dtype")
            .and_then(Value::as_str)
            .unwrap_or("?");
        if !matches!(dtype, "F32" | "F16" | "BF16" | "F64") {
            let p = CheckpointProblem::TensorType {
                name: name.clone(),
                found: dtype.to_string(),
                supported: "F32, F16, BF16, F64".into(),
            };
            return Err(problem(file, p));
        }
        let t = st.load(name, device).ctx(&format!("reading {name}"))?;
        out.insert(name.clone(), t);
    }
    Ok(out)
}

/// The header (name → entry) of a safetensors file whose size is the one the header
/// implies: 8 bytes of header length, the JSON header, then every tensor's bytes.
fn check_size(file: &Path, data: &[u8]) -> trak::Result<serde_json::Map<String, Value>> {
    let found = data.len() as u64;
    let size = |expected: u64| problem(file, CheckpointProblem::FileSize { found, expected });
    let Some(head) = data.get(..8) else {
        return Err(size(8));
    };
    let n = u64::from_le_bytes(head.try_into().expect("8 bytes"));
    let end = 8u64.saturating_add(n);
    let json = usize::try_from(end)
        .ok()
        .and_then(|e| data.get(8..e))
        .ok_or_else(|| size(end))?;
    let wrong = |reason: String| Error::WrongFormat {
        path: file.to_path_buf(),
        format: "safetensors file",
        reason,
    };
    let header: serde_json::Map<String, Value> =
        serde_json::from_slice(json).map_err(|e| wrong(format!("its header: {e}")))?;
    let mut bytes = 0u64;
    for (name, entry) in header.iter().filter(|(n, _)| *n != "__metadata__") {
        let offsets = entry.get("data_offsets").and_then(Value::as_array);
        let stop = offsets.and_then(|o| o.get(1)).and_then(Value::as_u64);
        let stop = stop.ok_or_else(|| wrong(format!("tensor {name} has no data_offsets")))?;
        bytes = bytes.max(stop);
    }
    let expected = end.saturating_add(bytes);
    if expected != found {
        return Err(size(expected));
    }
    Ok(header)
}

/// A block tensor (`model.layers.<i>.…`) with i past `num_hidden_layers` is refused.
fn check_block(file: &Path, name: &str, config: &LlamaConfig) -> trak::Result<()> {
    match layout::block_index(name) {
        Some(i) if i >= config.num_hidden_layers => {
            let reason = format!(
                "block {i}, but num_hidden_layers is {}",
                config.num_hidden_layers
            );
            let name = name.to_string();
            Err(problem(
                file,
                CheckpointProblem::UnexpectedTensor { name, reason },
            ))
        }
        _ => Ok(()),
    }
}
