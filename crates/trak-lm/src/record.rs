//! What a command records for the next one: `finetune.json` in a fine-tuning directory
//! (what `verify` needs to repeat the run) and `trak-lm.json` in an index run (the corpus,
//! the checkpoints and the settings that `query` and `verify` reuse).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use trak_candle::lm::{Fields, FineTune};
use trak_candle::trak::{self, Error};

/// The corpus fields, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldNames {
    /// The text field.
    pub text: String,
    /// The prompt field.
    pub prompt: String,
    /// The completion field.
    pub completion: String,
}

impl From<&Fields> for FieldNames {
    fn from(f: &Fields) -> Self {
        Self {
            text: f.text.clone(),
            prompt: f.prompt.clone(),
            completion: f.completion.clone(),
        }
    }
}

impl FieldNames {
    /// Back to the library's type.
    pub fn fields(&self) -> Fields {
        Fields {
            text: self.text.clone(),
            prompt: self.prompt.clone(),
            completion: self.completion.clone(),
        }
    }
}

/// `DIR/finetune.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneRecord {
    /// The base model (absolute path).
    pub model: PathBuf,
    /// The training data (absolute path).
    pub data: PathBuf,
    /// Its fields.
    pub fields: FieldNames,
    /// Epochs.
    pub epochs: usize,
    /// Learning rate.
    pub lr: f64,
    /// Weight decay.
    pub weight_decay: f64,
    /// Examples per step.
    pub batch: usize,
    /// Data order seed.
    pub seed: u64,
    /// Frozen tensors (names or prefixes).
    pub frozen: Vec<String>,
}

impl FinetuneRecord {
    /// The library's settings.
    pub fn settings(&self) -> FineTune {
        FineTune {
            epochs: self.epochs,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch: self.batch,
            seed: self.seed,
            frozen: self.frozen.clone(),
            ..FineTune::default()
        }
    }
}

/// `RUN/trak-lm.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// The training data (absolute path).
    pub data: PathBuf,
    /// Its fields.
    pub fields: FieldNames,
    /// The checkpoints, in id order (absolute paths).
    pub checkpoints: Vec<PathBuf>,
    /// `all`, `mlp` or `attention`.
    pub layers: String,
    /// Feature dimension.
    pub k: usize,
    /// Projection seed.
    pub seed: u64,
    /// Sequences per forward + backward pass.
    pub chunk: usize,
    /// Documents per stored block.
    pub block_rows: usize,
}

/// Reads a record ([`Error::Io`] if missing, [`Error::Parse`] if malformed).
pub fn read<T: for<'de> Deserialize<'de>>(path: &Path) -> trak::Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| Error::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        reason: e.to_string(),
    })
}

/// Writes a record atomically.
pub fn write<T: Serialize>(path: &Path, value: &T) -> trak::Result<()> {
    let text = serde_json::to_string_pretty(value).expect("a record serialises");
    trak::store::write_atomic(path, text.as_bytes())
}

/// `path` made absolute (against the current directory); it must exist.
pub fn absolute(path: &Path) -> trak::Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
