//! The Llama family's configuration, read from a Hugging Face `config.json`.

use std::path::Path;

use serde_json::Value;
use trak::{CheckpointProblem, Error};

/// Which member of the family a configuration describes (they share one forward pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `LlamaForCausalLM` (Llama 2/3, SmolLM, SmolLM2).
    Llama,
    /// `MistralForCausalLM`.
    Mistral,
    /// `Qwen2ForCausalLM` (q/k/v projections with biases).
    Qwen2,
}

impl Architecture {
    /// The Hugging Face class names, in the order of the variants.
    pub const HF_NAMES: [&'static str; 3] =
        ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

    fn from_hf(name: &str) -> Option<Self> {
        match name {
            "LlamaForCausalLM" => Some(Self::Llama),
            "MistralForCausalLM" => Some(Self::Mistral),
            "Qwen2ForCausalLM" => Some(Self::Qwen2),
            _ => None,
        }
    }
}

/// A Llama-family network's shape and constants, with Hugging Face's field names.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// The architecture (`architectures[0]` of the file).
    pub architecture: Architecture,
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention; = query heads without it).
    pub num_key_value_heads: usize,
    /// Width of one head (`head_dim`, default `hidden_size / num_attention_heads`).
    pub head_dim: usize,
    /// RMSNorm's ε.
    pub rms_norm_eps: f64,
    /// Rotary embeddings' base θ.
    pub rope_theta: f64,
    /// The longest context the rotary tables cover.
    pub max_position_embeddings: usize,
    /// Whether the output head is the token embedding (`lm_head` not stored).
    pub tie_word_embeddings: bool,
    /// Whether q, k and v have biases (Qwen2, or `attention_bias` of Llama).
    pub qkv_bias: bool,
    /// Mistral's sliding attention window, if any: longer contexts are refused.
    pub sliding_window: Option<usize>,
}

fn field(field: &str, reason: impl Into<String>) -> CheckpointProblem {
    CheckpointProblem::ConfigField {
        field: field.to_string(),
        reason: reason.into(),
    }
}

fn get_usize(v: &Value, name: &str, default: Option<usize>) -> Result<usize, CheckpointProblem> {
    match v.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| field(name, "missing")),
        Some(x) => x
            .as_u64()
            .filter(|&n| n > 0)
            .map(|n| n as usize)
            .ok_or_else(|| field(name, format!("{x} is not a positive integer"))),
    }
}

fn get_f64(v: &Value, name: &str, default: Option<f64>) -> Result<f64, CheckpointProblem> {
    match v.get(name) {
        None | Some(Value::Null) => default.ok_or_else(|| field(name, "missing")),
        Some(x) => x
            .as_f64()
            .filter(|f| f.is_finite() && *f > 0.0)
            .ok_or_else(|| field(name, format!("{x} is not a positive number"))),
    }
}

fn get_bool(v: &Value, name: &str) -> Result<bool, CheckpointProblem> {
    match v.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(x) => x
            .as_bool()
            .ok_or_else(|| field(name, format!("{x} is not true or false"))),
    }
}

impl LlamaConfig {
    /// Reads a Hugging Face `config.json` ([`Error::Io`] if unreadable,
    /// [`Error::Checkpoint`] naming the field that is missing or not supported).
    pub fn from_file(path: &Path) -> trak::Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|problem| Error::Checkpoint {
            path: path.to_path_buf(),
            problem,
        })
    }

    /// Parses the text of a Hugging Face `config.json`.
    pub fn from_json(text: &str) -> Result<Self, CheckpointProblem> {
        let v: Value = serde_json::from_str(text).map_err(|e| field("(file)", e.to_string()))?;
        let arch = v
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str)
            .ok_or_else(|| field("architectures", "missing, or not a list of strings"))?;
        let architecture =
            Architecture::from_hf(arch).ok_or_else(|| CheckpointProblem::UnknownArchitecture {
                found: arch.to_string(),
                supported: Architecture::HF_NAMES.join(", "),
            })?;
        check_supported(&v)?;
        let heads = get_usize(&v, "num_attention_heads", None)?;
        let hidden = get_usize(&v, "hidden_size", None)?;
        if v.get("head_dim").is_none_or(Value::is_null) && !hidden.is_multiple_of(heads) {
            return Err(field(
                "hidden_size",
                format!(
                    "{hidden} is not a multiple of num_attention_heads = {heads}, and head_dim \
                     (hidden_size / num_attention_heads by default) is not given"
                ),
            ));
        }
        let cfg = Self {
            architecture,
            vocab_size: get_usize(&v, "vocab_size", None)?,
            hidden_size: hidden,
            intermediate_size: get_usize(&v, "intermediate_size", None)?,
            num_hidden_layers: get_usize(&v, "num_hidden_layers", None)?,
            num_attention_heads: heads,
            num_key_value_heads: get_usize(&v, "num_key_value_heads", Some(heads))?,
            head_dim: get_usize(&v, "head_dim", Some(hidden / heads))?,
            rms_norm_eps: get_f64(&v, "rms_norm_eps", Some(1e-6))?,
            rope_theta: get_f64(&v, "rope_theta", Some(10_000.0))?,
            max_position_embeddings: get_usize(&v, "max_position_embeddings", None)?,
            tie_word_embeddings: get_bool(&v, "tie_word_embeddings")?,
            qkv_bias: architecture == Architecture::Qwen2 || get_bool(&v, "attention_bias")?,
            sliding_window: sliding_window(&v, architecture)?,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the sizes: each at least 1, the heads divide into key/value groups, an even
    /// head width for the rotary embedding. Both loaders (Hugging Face and GGUF) run it.
    pub fn validate(&self) -> Result<(), CheckpointProblem> {
        let sizes = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = sizes.iter().find(|(_, v)| *v == 0) {
            return Err(field(name, "0 is not a positive integer"));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(field(
                "num_key_value_heads",
                format!(
                    "{} does not divide num_attention_heads = {}",
                    self.num_key_value_heads, self.num_attention_heads
                ),
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            let reason = format!(
                "{} is odd; the rotary embedding needs an even head width",
                self.head_dim
            );
            return Err(field("head_dim", reason));
        }
        Ok(())
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.num_attention_heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.num_key_value_heads * self.head_dim
    }
}

/// Mistral's window (always on), or Qwen2's when `use_sliding_window` is true.
fn sliding_window(v: &Value, arch: Architecture) -> Result<Option<usize>, CheckpointProblem> {
    let on = arch == Architecture::Mistral || get_bool(v, "use_sliding_window")?;
    match v.get("sliding_window") {
        Some(w) if on && !w.is_null() => get_usize(v, "sliding_window", None).map(Some),
        _ => Ok(None),
    }
}

/// Refuses what the forward pass does not implement: another activation, MLP biases, rotary
/// scaling other than none.
fn check_supported(v: &Value) -> Result<(), CheckpointProblem> {
    match v.get("hidden_act") {
        None | Some(Value::Null) => {}
        Some(Value::String(act)) if act == "silu" => {}
        Some(Value::String(act)) => {
            let reason = format!("{act:?} (only \"silu\" is implemented)");
            return Err(field("hidden_act", reason));
        }
        Some(other) => {
            let reason = format!("{other} is not a string (only \"silu\" is implemented)");
            return Err(field("hidden_act", reason));
        }
    }
    if get_bool(v, "mlp_bias")? {
        return Err(field("mlp_bias", "true (MLP biases are not implemented)"));
    }
    match v.get("rope_scaling") {
        None | Some(Value::Null) => Ok(()),
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Value::as_str);
            match kind {
                Some("default") => Ok(()),
                other => Err(field(
                    "rope_scaling.rope_type",
                    format!("{other:?} (only unscaled rotary embeddings are implemented)"),
                )),
            }
        }
    }
}
