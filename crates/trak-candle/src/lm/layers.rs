//! Which linear layers of a Llama-family model are attributed, by name.

use std::str::FromStr;

use trak::Error;

use crate::models::llama::{LlamaConfig, layout};

/// A set of block linears: all seven of every block, the MLPs (gate, up, down) or the
/// attention projections (q, k, v, o). The tied output head is never among them (see
/// [`crate::models::llama`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayerSet {
    /// Every block linear (the default).
    #[default]
    All,
    /// The MLP blocks.
    Mlp,
    /// The attention projections.
    Attention,
}

impl LayerSet {
    /// The Hugging Face names (without `.weight`) of the set's layers under `cfg`, in the
    /// network's call order.
    pub fn names(&self, cfg: &LlamaConfig) -> Vec<String> {
        let part = match self {
            Self::All => "",
            Self::Mlp => "mlp.",
            Self::Attention => "self_attn.",
        };
        (0..cfg.num_hidden_layers)
            .flat_map(|i| {
                layout::block_linears(cfg)
                    .into_iter()
                    .filter(|(n, _)| n.starts_with(part))
                    .map(move |(n, _)| format!("{}.{n}", layout::block(i)))
            })
            .collect()
    }

    /// `all`, `mlp` or `attention`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::All => "all",
            Self::Mlp => "mlp",
            Self::Attention => "attention",
        }
    }
}

impl FromStr for LayerSet {
    type Err = Error;

    fn from_str(s: &str) -> trak::Result<Self> {
        match s {
            "all" => Ok(Self::All),
            "mlp" => Ok(Self::Mlp),
            "attention" => Ok(Self::Attention),
            other => Err(Error::InvalidParameter {
                parameter: "layer set",
                value: other.to_string(),
                expected: "all, mlp or attention".into(),
            }),
        }
    }
}
