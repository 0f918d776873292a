//! The attribution pipeline: configure → featurise each checkpoint → finalise → score.
//!
//! ```text
//! Trak::builder()…build()          configuration (k, projector, seed, ridge, batch size)
//!   └ trak.featurizer()            TrainFeatures: empty
//!       └ .featurize(id, model, train)   per checkpoint: Φ_m = projected ∇f, Q_m
//!       └ .finalize()              TrakIndex: K_m = Φ_mᵀΦ_m, λ_m, Cholesky of K_m + λ_m I
//!           └ .score(&[(id, model)], targets)   τ = (1/M Σ_m Φ_m A_m⁻¹ Ψ_mᵀ) ⊙ mean_m Q_m
//! ```
//!
//! Scores are an **n_train × n_targets** matrix: entry (i, j) is the attribution of training
//! example i to target j; positive means including example i raises the target's model output.
//!
//! Files: `config` (the settings and their builder), `featurize` (model → projected features,
//! shared with the store), `memory` (the plan of what the in-memory pipeline allocates),
//! `features` ([`TrainFeatures`]), `index` ([`TrakIndex`]), `scores` ([`Scores`]).

mod config;
mod features;
mod featurize;
mod index;
pub(crate) mod memory;
mod scores;

pub use config::{Trak, TrakBuilder};
pub(crate) use features::StoredCheckpoint;
pub use features::TrainFeatures;
pub(crate) use featurize::ExampleSlice;
pub use index::TrakIndex;
pub use scores::Scores;
