//! Persistent attribution runs: resumable, shardable, checksummed, scored out of core.
//!
//! A [`Run`] is one directory holding everything an attribution run computes. This is the one
//! description of its layout:
//!
//! ```text
//! <run>/run.trak                        RunMeta: projector kind, k, seed, n, block rows
//! <run>/ckpt-<id>/checkpoint.trak       CheckpointInfo: parameter count p, feature dimension,
//!                                       model fingerprint
//! <run>/ckpt-<id>/block-<b>.feat        BlockHeader, Φ rows of block b (rows × dim f32), Q (f32)
//! <run>/ckpt-<id>/block-<b>.gram        BlockHeader, the block's Gram partial Φ_bᵀΦ_b
//!                                       (f64, packed upper triangle; plain TRAK)
//! <run>/ckpt-<id>/block-<b>.<w>.gram    (BlockHeader, Weighting), the partial Φ_bᵀW_bΦ_b
//!                                       under weighting w = q or gn
//! <run>/ckpt-<id>/merged.trak           MergedHeader, K = Σ_b Φ_bᵀΦ_b added in block order
//!                                       (f64, packed; written by merge)
//! <run>/ckpt-<id>/merged-<w>.trak       (MergedHeader, Weighting), K_W = Σ_b Φ_bᵀW_bΦ_b
//!                                       added in block order
//! <run>/targets-<name>/targets.trak     TargetMeta: m, checkpoints, dims, ridge, λ per
//!                                       checkpoint, hash of Ψ; for a weighted target set,
//!                                       (TargetMeta, Weighting) under its own file kind
//! <run>/targets-<name>/ckpt-<id>.feat   target features Ψ (m × dim f32)
//! <run>/targets-<name>/scores-<b>.trak  ScoreHeader, scores of training block b (rows × m f32)
//! ```
//!
//! **Envelope.** Every file has a 24-byte header (magic [`MAGIC`], format version
//! [`FORMAT_VERSION`], file kind, payload length), the payload (a bincode header, then raw
//! little-endian arrays) and an xxh3-64 checksum over all bytes before it. Readers check the
//! checksum first (any damaged byte is [`Error::Checksum`](crate::Error::Checksum) naming the
//! file), then magic, version ([`Error::FormatVersion`](crate::Error::FormatVersion)), kind
//! and length, then decode with bounds checks ([`Error::Corrupt`](crate::Error::Corrupt)),
//! then compare the header with the file's place in the run. Every file is written atomically
//! ([`write_atomic`]: temporary file, fsync, rename, fsync of the directory), so a killed
//! process leaves only complete files, and temporary ones that are removed on resumption.
//!
//! **Blocks.** The training set is cut into blocks of `block_rows` consecutive examples.
//! [`Run::featurize`] computes the blocks that are not on disk yet, so calling it again after
//! a crash continues where the last complete block ended; complete blocks are never
//! recomputed. A [`Shard`] restricts the call to a contiguous range of blocks, so separate
//! processes (e.g. a SLURM job array on shared storage) can featurise one run together;
//! [`Run::merge`] then checks every block and adds the Gram partials in block order.
//!
//! **Reproducibility.** Each block's features are bit-identical however the work was split
//! (features do not depend on the batch a row is in), each Gram partial depends on its block
//! only, and partials are added in block order. Scores are computed block by block with the
//! same functions as the in-memory index ([`crate::kernel`]) whatever the memory budget. So a
//! sharded, resumed or interrupted run gives scores bit-identical to an uninterrupted
//! single-process run.
//!
//! **Kernel weighting.** The weighting ([`crate::Weighting`], default Q) is, like the ridge,
//! not part of the run's identity (the features do not depend on it; [`Run::with_weighting`]):
//! featurisation writes each block's Gram partial under the run's weighting (Gauss-Newton's
//! curvature is computed with the block and not stored), merging adds them in block order,
//! and scoring solves with that matrix. A block counts as done when its features and its
//! partial under the run's weighting exist, so switching the weighting of a featurised run
//! and featurising again computes only the missing partials, from the stored features. A
//! plain run writes exactly the files it wrote before weightings existed, and a target-set
//! record without a weighting is plain TRAK. A run written before weightings existed opens
//! under the default Q weighting and says so when scored
//! ([`Error::Incomplete`](crate::Error::Incomplete): featurise and merge under Q, or use
//! `with_weighting(Weighting::None)`); resuming a target set under another weighting is
//! [`Error::RunMismatch`](crate::Error::RunMismatch). Scores never silently change.
//!
//! **Out of core.** [`Run::score`] reads Φ one group of blocks at a time and writes scores one
//! block at a time; [`ScoreOptions::memory_budget`] bounds the memory it uses (it fails with
//! [`Error::MemoryBudget`](crate::Error::MemoryBudget) if one block does not fit, rather than
//! exceeding it).
//!
//! ```
//! use trak::data::Dataset;
//! use trak::models::Mlp;
//! use trak::output::Margin;
//! use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions};
//!
//! # fn main() -> trak::Result<()> {
//! let data = Dataset::blobs(304, 16, 4, 0)?; // 16-dimensional points in 4 classes
//! let (train, test) = data.split(300, 0)?;
//! let (train, targets) = (train.samples(), test.samples());
//! let model = Mlp::new(&[16, 8, 4], Margin, 0)?; // a checkpoint (untrained, for brevity)
//! let trak = trak::Trak::builder().proj_dim(64).build()?;
//!
//! let dir = std::env::temp_dir().join(format!("trak-doc-{}", std::process::id()));
//! let run = Run::create(&dir, &trak, train.len(), 128)?; // 3 blocks of ≤ 128 rows
//! let done = run.featurize(0, &model, &train, FeaturizeOptions::default())?;
//! assert_eq!(done.computed, 3);
//! // Called again (e.g. after a crash), nothing is recomputed.
//! assert_eq!(run.featurize(0, &model, &train, FeaturizeOptions::default())?.skipped, 3);
//! run.merge(MergeOptions::default())?;
//! run.score("demo", &[(0, &model)], &targets, ScoreOptions::default())?;
//! let scores = Run::open(&dir)?.load_scores("demo")?;
//! assert_eq!((scores.n_train(), scores.n_targets()), (300, 4));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! **Safety checks.** Opening a run with a different projector, k, seed, n or block size, or
//! featurising a checkpoint id with a different model (by [`crate::Model::fingerprint`], or a
//! gradient probe for models without one) is [`Error::RunMismatch`](crate::Error::RunMismatch),
//! naming what differs. When a checkpoint resumes, one stored row is recomputed and compared
//! bit for bit, which catches a different training set.
//!
//! Files of this module, one concern each: `run` (create, open, accessors), `layout` (paths,
//! blocks, listing), `records` (record types, decoders, [`inspect`]), `format` (the
//! envelope), `fsio` (atomic writes, exclusive creation, temporary files), `blocks` (reading
//! and writing one block), `featurize` (resumable, sharded featurisation), `import` (features
//! computed elsewhere), `merge` (Gram partials, reading a run back), `plan` (the memory plan
//! of scoring), `score` (out-of-core scoring), `targets` (target sets, export, verification),
//! `npy` (`.npy` files).

mod blocks;
mod featurize;
mod format;
mod fsio;
mod import;
mod layout;
mod merge;
pub mod npy;
mod plan;
mod records;
mod run;
mod score;
mod shard_env;
mod targets;

pub use featurize::{FeaturizeOptions, FeaturizeReport, Shard};
pub use format::{FORMAT_VERSION, MAGIC};
pub use fsio::write_atomic;
pub use merge::MergeOptions;
pub use records::{CheckpointInfo, FileSummary, Fingerprint, inspect, seal_for_tests};
pub use run::{DEFAULT_BLOCK_ROWS, Run};
pub use score::{ScoreOptions, ScoreReport};
