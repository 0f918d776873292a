//! Attributing your own language model: the workflow of a Llama-family model (a GGUF file
//! or a Hugging Face directory) and a JSONL corpus, each step with one home.
//!
//! - [`LmTokenizer`] ([`tokenizer`]): Hugging Face's ids, from `tokenizer.json` or rebuilt
//!   from a GGUF file's metadata, and the start token every sequence begins with;
//!   [`open`] reads a model and its tokenizer, [`open_checkpoint`] the model alone.
//! - [`Corpus`] ([`corpus`]): JSONL documents (`text`) or prompts with completions, field
//!   names configurable, bad lines named by file and line.
//! - [`logprob`]: log p of a sequence's counted tokens, the one objective of fine-tuning,
//!   evaluation and attribution.
//! - [`FineTune`] ([`finetune`]): AdamW ([`AdamW`]: candle's arithmetic, its moments
//!   readable) with frozen tensors, a seed, per-example weights
//!   (a leave-out run is a call), a callback after every epoch; checkpoints save as Hugging
//!   Face directories ([`crate::models::llama::LlamaCheckpoint::save_hf_dir`], with
//!   [`LmTokenizer::save`]) and snapshot ([`crate::models::llama::LlamaCheckpoint::snapshot`]).
//! - [`LayerSet`] ([`layers`]): which block linears are attributed; [`adapter`] makes a
//!   checkpoint attributable with them through candle at one context, [`Bucketed`]
//!   ([`buckets`]) at the power-of-two context each sequence needs (no padding to the
//!   longest). [`crate::models::llama::NativeLlama`] attributes the same layers through a
//!   pass written for attribution (5.7× faster on SmolLM2, each sequence at its own length);
//!   `trak-lm` uses it, and the candle route stays its reference.
//! - [`greedy`] ([`generate`]): greedy decoding, for sanity checks.
//!
//! ```
//! use std::path::Path;
//! use trak_candle::candle::Device;
//! use trak_candle::lm::{self, FineTune};
//! use trak_candle::models::llama::{LlamaCheckpoint, LlamaConfig};
//! use trak_candle::TokenSeq;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = LlamaConfig::from_json(r#"{
//!     "architectures": ["LlamaForCausalLM"], "vocab_size": 40, "hidden_size": 16,
//!     "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
//!     "max_position_embeddings": 16, "tie_word_embeddings": true }"#)?;
//! let base = LlamaCheckpoint::random(config, 0, &Device::Cpu)?;
//! let docs = vec![TokenSeq::document(vec![0, 5, 6, 7]), TokenSeq::document(vec![0, 9, 5])];
//! let before = lm::log_probs(&base.model()?, &docs, 8)?;
//! let tuned = FineTune { epochs: 20, lr: 1e-2, frozen: vec![], ..FineTune::default() }
//!     .run(&base, &docs, None, |_| Ok(()))?;
//! let after = lm::log_probs(&tuned.model()?, &docs, 8)?;
//! assert!(after[0] > before[0] && after[1] > before[1]);
//! # Ok(())
//! # }
//! ```

pub mod adamw;
pub mod buckets;
pub mod corpus;
pub mod finetune;
pub mod generate;
pub mod layers;
pub mod logprob;
pub mod tokenizer;

use std::path::Path;

use candle::Device;

pub use adamw::AdamW;
pub use buckets::Bucketed;
pub use corpus::{Content, Corpus, Fields, Record};
pub use finetune::{Epoch, FineTune};
pub use generate::greedy;
pub use layers::LayerSet;
pub use logprob::{log_probs, sequence_log_probs};
pub use tokenizer::LmTokenizer;

use crate::models::llama::{Llama, LlamaCheckpoint};
use crate::{CandleModel, SequenceObjective, TokenCollate, TokenSeq};

/// A model and its tokenizer: a GGUF file (weights dequantised to f32, the tokenizer from
/// its metadata), or a Hugging Face directory (`config.json`, safetensors, `tokenizer.json`).
/// A path that does not exist is [`trak::Error::Io`].
pub fn open(model: &Path, device: &Device) -> trak::Result<(LlamaCheckpoint, LmTokenizer)> {
    Ok((open_checkpoint(model, device)?, LmTokenizer::open(model)?))
}

/// The weights alone of [`open`].
pub fn open_checkpoint(model: &Path, device: &Device) -> trak::Result<LlamaCheckpoint> {
    if !model.exists() {
        let source = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory");
        return Err(trak::Error::Io {
            path: model.to_path_buf(),
            source,
        });
    }
    match model.is_dir() {
        true => LlamaCheckpoint::from_hf_dir(model, device),
        false => LlamaCheckpoint::from_gguf(model, device),
    }
}

/// An attributable LM: the network, token collation at a fixed context, log p as f.
pub type LmModel<'a> = CandleModel<TokenSeq, &'a Llama, TokenCollate, SequenceObjective>;

/// `lm` made attributable at `context` positions with `layers`, `chunk` sequences per
/// forward + backward pass; built on `probe` (its first `chunk` sequences), with the
/// finite-difference gradient check if `gradient_check`.
pub fn adapter<'a>(
    lm: &'a Llama,
    (context, chunk): (usize, usize),
    layers: LayerSet,
    probe: &[TokenSeq],
    gradient_check: bool,
) -> trak::Result<LmModel<'a>> {
    let vocab = lm.config().vocab_size;
    CandleModel::builder(
        lm,
        TokenCollate { context, pad: 0 },
        SequenceObjective::new(vocab),
    )
    .layers(layers.names(lm.config()))
    .chunk_rows(chunk)
    .gradient_check(gradient_check)
    .build(&probe[..probe.len().min(chunk)])
}
