//! Makes [candle](https://github.com/huggingface/candle) networks attributable with
//! [`trak`].
//!
//! Write the network's forward pass with a [`Recorder`] argument and route every linear and
//! convolutional layer through it; [`CandleModel::builder`] then turns the network, a
//! [`Collate`] for your examples and an [`Objective`] (any [`trak::output::OutputFn`] for
//! [`trak::data::Sample`]s; [`SequenceObjective`] for language models, see [`sequence`]) into
//! a [`trak::Model`] and a [`trak::FactoredModel`]. Everything `trak` does (projectors, the store, sharding,
//! validation) then works on the network.
//!
//! **How.** No Rust framework has per-example gradients (vmap). One batched forward pass with
//! detached weights and a zero-valued tap variable on each layer output, and one backward
//! pass, give every example's layer inputs a and output gradients δ (see [`recorder`]);
//! per-example weight gradients are Σ_t δ_t a_tᵀ ([`factors`]). The factored projector uses
//! the factors directly. Layers can be restricted by name
//! ([`CandleModelBuilder::layers`]), or every parameter (norms, embeddings) attributed through
//! one backward pass per example ([`CandleModelBuilder::all_parameters`]). A model nobody
//! instrumented goes through the same per-example route unmodified: [`capture::VarCapture`]
//! hands its weights out as variables through a `VarBuilder`, [`network::from_fn`] wraps its
//! forward pass. By default only
//! linear and convolutional layers are attributed (in a transformer: the attention
//! projections and the MLP blocks, with one position per token); embeddings and norms are
//! left out unless the fallback is asked for.
//!
//! **Refusals** ([`trak::Error::Unattributable`], naming the layer): shared or tied weights
//! and repeated layer calls; layers whose output depends on the rest of the batch (BatchNorm
//! in training mode, detected by name through [`Recorder::batch_norm`] and generically by
//! comparing a probe example alone and inside a batch); non-f32 weights or activations (load
//! checkpoints with `DType::F32`); grouped or dilated convolutions; and any layer where
//! candle's backward pass disagrees with finite differences ([`gradcheck`], run by
//! [`CandleModelBuilder::build`]). That check found that candle 0.11's `Tensor::max_pool2d`
//! has a wrong backward (a unique maximum gets ¼ of its gradient): use [`ops::max_pool2d`].
//! candle's own errors are [`trak::Error::Framework`] with candle's error as the source.
//!
//! **Determinism.** Features are bit-identical for any pipeline batch size and thread count
//! on one machine (fixed-size padded chunks, see [`pass`]); candle's kernels depend on the
//! CPU, so not across machines.
//!
//! ```
//! use trak_candle::candle::{self, DType, Device, Tensor};
//! use trak_candle::candle_nn::{Linear, VarBuilder, VarMap, linear};
//! use trak_candle::trak::data::Dataset;
//! use trak_candle::trak::output::Margin;
//! use trak_candle::trak::{self, ProjectorKind, Trak};
//! use trak_candle::{CandleModel, Recorder, SampleCollate};
//!
//! struct Net { fc1: Linear, fc2: Linear }
//! impl trak_candle::Network for Net {
//!     fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
//!         let h = rec.linear("fc1", &self.fc1, x)?.relu()?;
//!         rec.linear("fc2", &self.fc2, &h)
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let data = Dataset::blobs(60, 8, 3, 0)?;
//! let varmap = VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let net = Net { fc1: linear(8, 16, vb.pp("fc1"))?, fc2: linear(16, 3, vb.pp("fc2"))? };
//! let samples = data.samples();
//! let model = CandleModel::builder(net, SampleCollate::new(&[8]), Margin).build(&samples[..4])?;
//! assert_eq!(trak::Model::num_params(&model), 16 * 9 + 3 * 17);
//!
//! let trak = Trak::builder().proj_dim(32).projector(ProjectorKind::FACTORED).build()?;
//! let mut features = trak.featurizer();
//! features.featurize(0, &model, &samples[..50])?;
//! let scores = features.finalize()?.score(&[(0, &model)], &samples[50..])?;
//! assert_eq!(scores.values().dim(), (50, 10));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod builder;
pub mod capture;
pub mod collate;
mod error;
pub mod factors;
pub mod fallback;
mod frozen;
pub mod gradcheck;
pub mod layers;
pub mod lm;
mod model;
pub mod models;
pub mod network;
pub mod objective;
pub mod ops;
pub mod pass;
pub mod recorder;
pub mod sequence;
mod working;

pub use builder::{CandleModelBuilder, DEFAULT_CHUNK_ROWS};
pub use collate::{Collate, SampleCollate};
pub use error::CandleContext;
pub use layers::{LayerInfo, LayerKind};
pub use model::CandleModel;
pub use network::Network;
pub use objective::{Objective, WithTarget};
pub use recorder::Recorder;
pub use sequence::{SequenceObjective, TokenCollate, TokenSeq};

// The crates of trak-candle's public API, at exactly the versions it is built with, so that
// a user's `Cargo.toml` needs only `trak-candle` (and no version to match by hand).
/// candle-core, the framework ([`candle::Tensor`], [`candle::Var`], [`candle::Device`]).
pub use candle;
/// candle-nn, the layers and optimisers (`Linear`, `VarBuilder`, `AdamW`).
pub use candle_nn;
/// Hugging Face's tokenizers, whose `Tokenizer` [`models::llama`] loads.
pub use tokenizers;
/// trak itself (its `ndarray` is [`trak::ndarray`]).
pub use trak;
