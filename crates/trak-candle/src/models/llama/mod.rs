//! Llama-family causal language models, as Hugging Face configures them: RMSNorm, rotary
//! embeddings (θ from the configuration), grouped-query attention, the SwiGLU MLP, optional
//! q/k/v biases (Qwen2), tied or untied output head.
//!
//! Every linear layer goes through the [`crate::Recorder`] under its Hugging Face state-dict
//! name without the `.weight` suffix (`model.layers.3.mlp.down_proj`,
//! `model.layers.0.self_attn.q_proj`, `lm_head`); the forward pass returns logits at every
//! position (`B × T × vocab`), which [`crate::SequenceObjective`] reads.
//!
//! **What is attributed by default**: the seven linear layers of every block (q, k, v, o,
//! gate, up, down), and the output head when it is untied. A tied head (SmolLM2 ties
//! `lm_head` to `model.embed_tokens`) is left out, and naming it in
//! [`crate::CandleModelBuilder::layers`] is refused with
//! [`trak::Unattributable::SharedWeights`]: its factors would carry only the head's part of
//! the shared weight's gradient. Embeddings and norm scales are attributed only by the
//! all-parameter fallback ([`crate::CandleModelBuilder::all_parameters`] with
//! [`LlamaCheckpoint::vars`]), which gives a tied weight's whole gradient (both uses summed).
//!
//! **Loading** ([`LlamaCheckpoint::from_hf_dir`]): `config.json` and `model.safetensors` (or
//! sharded safetensors with their index), every tensor checked against the configuration.
//! [`LlamaCheckpoint::from_gguf`] reads llama.cpp's GGUF files (architectures `llama` and
//! `qwen2`): the configuration from the metadata, llama.cpp's tensor names mapped to Hugging
//! Face's ([`gguf::gguf_name`]), every tensor dequantised to f32, and llama.cpp's row
//! permutation of the q/k projections undone ([`gguf::unpermute`]); [`gguf_tokenizer`] builds
//! the tokenizer from the metadata, rebuilt to give Hugging Face's ids ([`crate::lm::LmTokenizer`]).
//! A missing tensor, a shape that disagrees with the configuration, a non-float tensor, an
//! unknown architecture or an unsupported configuration (another activation, rotary
//! scaling, MLP biases) is [`trak::Error::Checkpoint`] naming the tensor or the field.
//!
//! ```
//! use candle::{Device, Tensor};
//! use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};
//! use trak_candle::{Network, Recorder};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = LlamaConfig::from_json(r#"{
//!     "architectures": ["LlamaForCausalLM"], "vocab_size": 50, "hidden_size": 16,
//!     "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "max_position_embeddings": 32, "rms_norm_eps": 1e-5,
//!     "rope_theta": 10000.0, "tie_word_embeddings": true }"#)?;
//! let ckpt = LlamaCheckpoint::random(config, 0, &Device::Cpu)?;
//! let lm = ckpt.model()?;
//! let tokens = Tensor::new(&[[1u32, 7, 3, 9]], &Device::Cpu)?;
//! let logits = lm.forward(&tokens, &mut Recorder::training())?;
//! assert_eq!(logits.dims(), &[1, 4, 50]);
//! # Ok(())
//! # }
//! ```

mod config;
pub mod gguf;
pub mod layout;
mod load;
pub mod native;
mod network;
mod safetensors;
mod save;

pub use config::{Architecture, LlamaConfig};
pub use gguf::gguf_tokenizer;
pub use load::LlamaCheckpoint;
pub use native::NativeLlama;
pub use network::Llama;
