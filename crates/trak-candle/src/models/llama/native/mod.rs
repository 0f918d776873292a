//! The Llama family's attribution pass written for what the factored projector consumes:
//! a forward pass and a backward pass to the activations on faer's GEMM, with no autograd
//! graph and no weight gradient.
//!
//! [`NativeLlama`] is the candle route's `lm::Bucketed` for Llama-family models, the same
//! [`trak::Model`] and [`trak::model::FactoredModel`] (the same layers in the same order, the
//! same f and Q), computed differently:
//! - **each sequence at its own length**: no padding to a bucket or to its neighbours
//!   (the batch's factors are placed at its longest sequence; the zero rows after a shorter
//!   one have no output gradient, and the projector skips them);
//! - **no graph**: a block keeps what its backward pass needs (its input, q, k, v, the
//!   MLP's gate and up, the norms' scales: about 0.6 MB per position in SmolLM2-135M), and
//!   reuses one set of scratch buffers; attention runs one head at a time and its backward
//!   pass recomputes the probabilities, so no `T × T` tensor of every head is ever kept;
//! - **no weight gradients**: the backward pass computes `δ·W` only;
//! - **the head a few positions at a time**, only from the first counted position on.
//!
//! Fine-tuning can take its gradients from the same pass ([`train`], `FineTune::native`):
//! the weight gradients `Σ_t δ_t a_tᵀ` and the norm scales' from what the pass keeps.
//!
//! A sequence's work is split into fixed blocks (output columns of a linear, query
//! positions of the attention, heads, positions of the head), combined in a fixed order, so
//! its factors are the same bits whatever the batch or the thread count. They
//! agree with the candle route's to rounding (a test checks 1e-4 relative on random
//! configurations; `llama_speed --compare` on SmolLM2). faer picks its kernels by the CPU's
//! instruction set at run time, so bits may differ between machines (as candle's do).
//!
//! ```
//! use candle::Device;
//! use trak::{ProjectorKind, Trak};
//! use trak_candle::TokenSeq;
//! use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig, NativeLlama};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = LlamaConfig::from_json(r#"{
//!     "architectures": ["LlamaForCausalLM"], "vocab_size": 40, "hidden_size": 16,
//!     "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 4,
//!     "num_key_value_heads": 2, "max_position_embeddings": 32, "tie_word_embeddings": true }"#)?;
//! let lm = LlamaCheckpoint::random(config, 0, &Device::Cpu)?.model()?;
//! let docs = vec![TokenSeq::document(vec![0, 5, 6, 7]), TokenSeq::document(vec![0, 9, 5])];
//! let layers = ["model.layers.0.mlp.down_proj".to_string()];
//! let model = NativeLlama::new(&lm, &layers, &docs)?;
//! let trak = Trak::builder().proj_dim(8).projector(ProjectorKind::FACTORED).build()?;
//! let phi = trak.features(0, &model, &docs)?;
//! assert_eq!(phi.dim(), (2, 8));
//! # Ok(())
//! # }
//! ```

mod attention;
mod exp;
mod head;
mod model;
mod ops;
mod pass;
pub mod train;
mod weights;

pub use model::NativeLlama;
