//! Writing a checkpoint as a Hugging Face directory: `config.json` and `model.safetensors`
//! with Hugging Face's tensor names (f32; a tied head stored once, as the embedding), the
//! files `transformers`' `from_pretrained` and [`LlamaCheckpoint::from_hf_dir`] read.

use std::collections::HashMap;
use std::path::Path;

use candle::Tensor;
use trak::Error;

use super::{Architecture, LlamaCheckpoint, LlamaConfig};
use crate::error::CandleContext;

impl LlamaConfig {
    /// The Hugging Face `config.json` of this configuration ([`LlamaConfig::from_json`] reads
    /// it back to the same value).
    pub fn to_json(&self) -> String {
        let (class, model_type) = match self.architecture {
            Architecture::Llama => ("LlamaForCausalLM", "llama"),
            Architecture::Mistral => ("MistralForCausalLM", "mistral"),
            Architecture::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        };
        let mut v = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
        });
        let map = v.as_object_mut().expect("an object");
        match self.architecture {
            Architecture::Llama => {
                map.insert("attention_bias".into(), self.qkv_bias.into());
                map.insert("mlp_bias".into(), false.into());
            }
            Architecture::Mistral => {
                map.insert("sliding_window".into(), self.sliding_window.into());
            }
            Architecture::Qwen2 => {
                map.insert(
                    "use_sliding_window".into(),
                    self.sliding_window.is_some().into(),
                );
                map.insert("sliding_window".into(), self.sliding_window.into());
            }
        }
        serde_json::to_string_pretty(&v).expect("a JSON value")
    }
}

impl LlamaCheckpoint {
    /// Writes `config.json` and `model.safetensors` into `dir` (created if missing). Each
    /// file is written to a temporary name and renamed, so a killed process leaves either
    /// the whole file or none.
    pub fn save_hf_dir(&self, dir: &Path) -> trak::Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        trak::store::write_atomic(&dir.join("config.json"), self.config().to_json().as_bytes())?;
        let tensors: HashMap<String, Tensor> = self
            .vars()
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let file = dir.join("model.safetensors");
        let tmp = dir.join(".model.safetensors.partial");
        candle::safetensors::save(&tensors, &tmp).ctx("writing model.safetensors")?;
        std::fs::rename(&tmp, &file).map_err(|source| Error::Io { path: file, source })
    }

    /// A copy of the current weights as new variables (training changes variables in place;
    /// a snapshot keeps an epoch's weights).
    pub fn snapshot(&self) -> trak::Result<Self> {
        let tensors = self
            .vars()
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().detach().copy()?)))
            .collect::<candle::Result<HashMap<_, _>>>()
            .ctx("copying the weights")?;
        Self::from_tensors(self.config().clone(), tensors, Path::new("<snapshot>"))
    }
}
