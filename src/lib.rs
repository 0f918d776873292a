//! # trak — training-data attribution with TRAK
//!
//! Given trained models, `trak` says which training examples caused a prediction, and by how
//! much. It implements TRAK (Park et al., ICML 2023, "TRAK: Attributing Model Behavior at
//! Scale"): for each checkpoint θ_m, every training example's output gradient ∇_θ f(z_i; θ_m)
//! is randomly projected to φ_i ∈ R^k, and a target z gets the scores
//!
//! τ(z) = (1/M Σ_m Φ_m (Φ_mᵀΦ_m + λ_m I)⁻¹ φ_m(z)) ⊙ (1/M Σ_m Q_m),
//!
//! an n_train-vector whose entry i is positive when including training example i raises the
//! model output f on z. Q_i = −∂L/∂f (1 − p_correct for the classification margin).
//!
//! What it does beyond the reference implementation (MadryLab's `traker`): a ridge λ by
//! default (λ = 0 collapses once k ≥ n); f64 Gram matrices and Cholesky solves; no per-checkpoint
//! rescaling of the inverse; a projection matrix that is the same whatever the machine, thread
//! count or batch size (Philox counter-based generator), computed tile by tile and never
//! stored; bit-identical results for any thread count and batch size; typed errors for bad
//! input (non-finite gradients name the example).
//!
//! ## Layout
//! Data flows one way: model → gradients → projector → kernel → scores → eval.
//! - [`Model`]: the pluggable model interface (per-example output gradients and Q), and
//!   [`FactoredModel`] for the factored projector (per-layer inputs and output gradients).
//! - [`output`]: model-output functions (multiclass margin, binary logistic, regression, yours).
//! - [`models`]: built-in ReLU MLPs / logistic regression with analytic per-example gradients
//!   and Hessian-vector products, and a seeded SGD trainer (with per-example loss weights) for
//!   any [`models::Trainable`] model.
//! - [`project`]: the projectors ([`ProjectorKind`]): dense Rademacher (default) and
//!   Gaussian, sparse JL ([`ProjectorKind::SPARSE`]), factored per-layer Kronecker
//!   ([`ProjectorKind::FACTORED`], never forms the gradient), and the identity.
//! - [`kernel`]: Gram matrix, [`Ridge`], Cholesky, solves, score products (f64, via `faer`),
//!   and the scoring core shared by the in-memory index and the store.
//! - [`attribute`]: the in-memory pipeline ([`Trak`] → [`TrainFeatures`] → [`TrakIndex`] →
//!   [`Scores`]), with a planned memory limit.
//! - [`store`]: persistent runs on disk ([`Run`]): resumable, shardable ([`Shard`]), checksummed,
//!   scored out of core under a memory budget, with `.npy` import/export.
//! - [`metagrad`]: the second estimator: exact metagradients of a run of the built-in trainer
//!   (MAGIC with REPLAY), near-exact where training is smooth, as the same [`Scores`].
//! - [`eval`]: counterfactual validation (subsets, Spearman, LDS) and baseline attributions.
//! - [`progress`]: progress reports from long calls.
//! - [`data`]: the built-in models' example type, an MNIST CSV reader, seeded Gaussian blobs.
//!
//! ## Example
//! ```
//! use trak::data::Dataset;
//! use trak::models::{Mlp, Sgd};
//! use trak::output::Margin;
//! use trak::Trak;
//!
//! # fn main() -> trak::Result<()> {
//! // 300 training points and 3 targets in 4 classes (your data in practice).
//! let (train, test) = Dataset::blobs(303, 20, 4, 0)?.split(300, 0)?;
//! let (train, targets) = (train.samples(), test.samples());
//!
//! // Two checkpoints: small MLPs trained from different seeds.
//! let models: Vec<Mlp<Margin>> = (0..2)
//!     .map(|seed| {
//!         let mut m = Mlp::new(&[20, 16, 4], Margin, seed)?;
//!         Sgd { epochs: 3, seed, ..Sgd::default() }.fit(&mut m, &train)?;
//!         Ok(m)
//!     })
//!     .collect::<trak::Result<_>>()?;
//!
//! let trak = Trak::builder().proj_dim(256).seed(0).build()?;
//! let mut feats = trak.featurizer();
//! for (id, m) in models.iter().enumerate() {
//!     feats.featurize(id as u64, m, &train)?;
//! }
//! let index = feats.finalize()?;
//! let scores = index.score(&[(0, &models[0]), (1, &models[1])], &targets)?;
//! assert_eq!((scores.n_train(), scores.n_targets()), (300, 3)); // n_train × n_targets
//! for (t, top) in scores.top_k(5).iter().enumerate() {
//!     println!("target {t}: {top:?}"); // (training index, score), best first
//! }
//! # Ok(())
//! # }
//! ```
#![warn(missing_docs)]

pub mod attribute;
pub mod data;
pub mod error;
pub mod eval;
pub mod kernel;
pub mod metagrad;
pub mod model;
pub mod models;
pub mod output;
pub mod progress;
pub mod project;
pub mod store;

pub use attribute::{Scores, TrainFeatures, Trak, TrakBuilder, TrakIndex};
pub use error::{CheckpointProblem, Error, ExampleSet, Result, Unattributable};
pub use kernel::{Ridge, Weighting};
pub use model::{FactoredModel, Model};
pub use progress::Progress;
pub use project::ProjectorKind;
pub use store::{Run, Shard};

/// The array crate of trak's public API (gradients, features, scores), at exactly the
/// version trak is built with: `use trak::ndarray::Array2;` needs no version to match in
/// your own `Cargo.toml`.
///
/// ```
/// use trak::ndarray::Array2;
/// let scores = trak::Scores::new(Array2::<f32>::zeros((3, 2)));
/// let view: trak::ndarray::ArrayView2<'_, f32> = scores.values();
/// assert_eq!(view.dim(), (3, 2));
/// ```
pub use ndarray;
