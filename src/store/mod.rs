//! Persistent attribution runs: resumable, shardable, checksummed, scored out of core.
//!
//! A [`Run`] is one directory holding everything an attribution run computes:
//!
//! ```text
//! <run>/run.trak                     format version, projector kind, k, seed, n, block rows
//! <run>/ckpt-<id>/checkpoint.trak    parameter count p, feature dimension, model fingerprint
//! <run>/ckpt-<id>/block-<b>.feat     Φ rows of block b (f32) and their Q (f32)
//! <run>/ckpt-<id>/block-<b>.gram     the block's Gram partial Φ_bᵀΦ_b (f64, upper triangle)
//! <run>/ckpt-<id>/merged.trak        K = Σ_b Φ_bᵀΦ_b, summed in block order (after merge)
//! <run>/targets-<name>/targets.trak  target set: size m, checkpoints, ridge, λ per checkpoint
//! <run>/targets-<name>/ckpt-<id>.feat target features Ψ (m × k, f32)
//! <run>/targets-<name>/scores-<b>.trak scores of training block b (rows × m, f32)
//! ```
//!
//! Every file has the same envelope (magic [`MAGIC`], format version [`FORMAT_VERSION`],
//! kind, payload length, and an xxh3-64 checksum over all its bytes) and is written atomically (temporary file,
//! fsync, rename, fsync of the directory). A killed process therefore leaves only complete
//! files (and temporary ones, removed when the work is resumed).
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
//! same operations whatever the memory budget. So a sharded, resumed or interrupted run gives
//! scores bit-identical to an uninterrupted single-process run.
//!
//! **Out of core.** [`Run::score`] reads Φ one group of blocks at a time and writes scores one
//! block at a time; [`ScoreOptions::memory_budget`] bounds the memory it uses (it fails with
//! [`Error::MemoryBudget`] if one block does not fit, rather than exceeding it).
//!
//! ```
//! use trak::data::Dataset;
//! use trak::models::Mlp;
//! use trak::output::Margin;
//! use trak::progress::silent;
//! use trak::store::{Run, ScoreOptions, Shard};
//!
//! # fn main() -> trak::Result<()> {
//! let (train, test) = Dataset::mnist_5k()?.split(300, 0)?;
//! let (train, targets) = (train.samples(), test.samples()[..4].to_vec());
//! let model = Mlp::new(&[784, 8, 10], Margin, 0)?; // a checkpoint (untrained, for brevity)
//! let trak = trak::Trak::builder().proj_dim(64).build()?;
//!
//! let dir = std::env::temp_dir().join(format!("trak-doc-{}", std::process::id()));
//! let run = Run::create(&dir, &trak, train.len(), 128)?; // 3 blocks of ≤ 128 rows
//! let done = run.featurize(0, &model, &train, Shard::ALL, &mut silent())?;
//! assert_eq!(done.computed, 3);
//! // Called again (e.g. after a crash), nothing is recomputed.
//! assert_eq!(run.featurize(0, &model, &train, Shard::ALL, &mut silent())?.skipped, 3);
//! run.merge(&mut silent())?;
//! run.score("demo", &[(0, &model)], &targets, ScoreOptions::default(), &mut silent())?;
//! let scores = Run::open(&dir)?.load_scores("demo")?;
//! assert_eq!((scores.n_train(), scores.n_targets()), (300, 4));
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok(())
//! # }
//! ```
//!
//! **Safety checks.** Opening a run with a different projector, k, seed, n or block size, or
//! featurising a checkpoint id with a different model (by [`crate::Model::fingerprint`], or a
//! gradient probe for models without one) is [`Error::RunMismatch`], naming what differs.
//! When a checkpoint resumes, one stored row is recomputed and compared bit for bit, which
//! catches a different training set. Any corrupted file is [`Error::Checksum`] naming it.

mod format;
pub mod npy;

use std::collections::BTreeSet;
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis, s};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

pub use format::{FORMAT_VERSION, MAGIC};
use format::{
    FileKind, PayloadReader, PayloadWriter, corrupt, create_exclusive, io_err, is_temp_name,
    open_payload, read_bytes, read_bytes_into, write_atomic,
};

use crate::attribute::{Scores, StoredCheckpoint, TrainFeatures, Trak};
use crate::error::{Error, Result, shape_err};
use crate::kernel::{Factor, Ridge, add_scores, gram};
use crate::model::Model;
use crate::progress::{Progress, Stage, Unit};
use crate::project::ProjectorKind;

/// Default rows per block.
pub const DEFAULT_BLOCK_ROWS: usize = 4096;

/// The run's identity: everything that determines the stored training features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct RunMeta {
    projector: ProjectorKind,
    proj_dim: usize,
    seed: u64,
    n: usize,
    block_rows: usize,
}

/// How a checkpoint's model was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fingerprint {
    /// [`crate::Model::fingerprint`] (a hash of the parameters).
    Params(u64),
    /// xxh3-64 of the output gradient and Q at the first training example (models without
    /// [`crate::Model::fingerprint`]).
    GradientProbe(u64),
    /// Given by the caller of [`Run::declare_checkpoint`] (imported features).
    Declared(u64),
}

/// What is recorded about one checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointInfo {
    /// Checkpoint id.
    pub checkpoint: u64,
    /// Parameter count p of the model.
    pub params: usize,
    /// Feature dimension (k, or the factored projector's total, or p for the identity).
    pub dim: usize,
    /// The model's fingerprint.
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct BlockHeader {
    checkpoint: u64,
    block: usize,
    start: usize,
    rows: usize,
    dim: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct MergedHeader {
    checkpoint: u64,
    n: usize,
    dim: usize,
    blocks: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TargetMeta {
    name: String,
    m: usize,
    checkpoints: Vec<u64>,
    dims: Vec<usize>,
    ridge: Ridge,
    lambdas: Vec<f64>,
    targets_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct TargetFeaturesHeader {
    checkpoint: u64,
    m: usize,
    dim: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ScoreHeader {
    block: usize,
    start: usize,
    rows: usize,
    m: usize,
}

/// A contiguous share of a run's blocks, for featurising one run from several processes.
///
/// Shard `index` of `count` gets blocks `index·B/count .. (index+1)·B/count` of the B blocks;
/// the shards of one `count` cover every block exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    index: usize,
    count: usize,
}

impl Shard {
    /// Every block (a single process).
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Shard `index` (0-based) of `count`.
    pub fn new(index: usize, count: usize) -> Result<Self> {
        if count == 0 || index >= count {
            return Err(Error::InvalidConfig(format!(
                "shard index must be in 0..{count}, got {index}"
            )));
        }
        Ok(Self { index, count })
    }

    /// The blocks of this shard out of `blocks`.
    pub fn blocks(&self, blocks: usize) -> Range<usize> {
        let at = |i: usize| (i as u128 * blocks as u128 / self.count as u128) as usize;
        at(self.index)..at(self.index + 1)
    }
}

/// What a call to [`Run::featurize`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeaturizeReport {
    /// Blocks computed by this call.
    pub computed: usize,
    /// Blocks of the shard already on disk (not recomputed).
    pub skipped: usize,
}

/// Options of [`Run::score`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Bytes the scoring may hold at once (the process's own code and allocator overhead
    /// aside): the solved targets of every checkpoint, plus as many row blocks of features and
    /// scores as fit. Default 1 GiB.
    pub memory_budget: usize,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            memory_budget: 1 << 30,
        }
    }
}

/// What a call to [`Run::score`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreReport {
    /// Score blocks computed by this call.
    pub computed: usize,
    /// Score blocks already on disk.
    pub skipped: usize,
    /// Blocks processed together (what the memory budget allowed).
    pub blocks_per_pass: usize,
    /// The memory the scoring planned for, in bytes (≤ the budget).
    pub planned_bytes: usize,
}

/// Reusable buffers for a decoded feature block: Φ rows and Q.
#[derive(Default)]
struct FeatureBuf {
    phi: Vec<f32>,
    q: Vec<f32>,
}

impl FeatureBuf {
    fn phi(&self, dim: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.q.len(), dim), &self.phi).expect("checked shape")
    }
}

/// The memory plan of a scoring call: how many blocks fit in one pass.
///
/// Counted, in bytes: the solved targets Y_m = A_m⁻¹Ψ_mᵀ of every checkpoint (dim × m f64)
/// and the target features (m × dim f32); the largest factorisation (the Gram matrix read
/// packed, unpacked, and its Cholesky factor); one file's bytes in flight (a feature or score
/// block); the score product's per-thread f64 copy of up to 512 feature rows; and, per block
/// of a pass, its features and Q (f32) and its f64 score accumulator and Q sum. A reserve of
/// 16 MiB plus 1/16 of the budget is kept for the process itself (code, thread stacks,
/// allocator slack), so the budget bounds the whole process's peak resident set.
struct ScorePlan {
    blocks_per_pass: usize,
    planned_bytes: usize,
}

impl ScorePlan {
    fn new(dims: &[usize], m: usize, rows: usize, blocks: usize, budget: usize) -> Result<Self> {
        let threads = rayon::current_num_threads().max(1);
        let max_dim = dims.iter().copied().max().unwrap_or(0);
        let solved: usize = dims.iter().map(|d| d * m * (8 + 4)).sum();
        let factor = max_dim * max_dim * 16 + packed_len(max_dim) * 16;
        let io = rows * (max_dim + 1).max(m) * 4 + 4096;
        let widen = threads * crate::kernel::SCORE_ROWS.min(rows) * max_dim * 8;
        let reserve = (16 << 20) + budget / 16;
        let fixed = reserve + solved + factor + io + widen;
        let per_block = rows * (max_dim * 4 + 4 + m * 8 + 8);
        let needed = fixed + per_block;
        if needed > budget {
            return Err(Error::MemoryBudget {
                budget,
                needed,
                reason: format!(
                    "solved targets of {} checkpoints ({solved} bytes), one block of {rows} \
                     rows ({per_block} bytes) and a reserve of {reserve} bytes for the \
                     process; use smaller blocks or fewer targets per set",
                    dims.len()
                ),
            });
        }
        let blocks_per_pass = ((budget - fixed) / per_block).clamp(1, blocks.max(1));
        Ok(Self {
            blocks_per_pass,
            planned_bytes: fixed + blocks_per_pass * per_block,
        })
    }
}

/// One attribution run stored in a directory. See the [module documentation](self).
#[derive(Debug, Clone)]
pub struct Run {
    dir: PathBuf,
    trak: Trak,
    meta: RunMeta,
}

fn run_meta_path(dir: &Path) -> PathBuf {
    dir.join("run.trak")
}

fn packed_len(k: usize) -> usize {
    k * (k + 1) / 2
}

fn pack_upper(g: &Array2<f64>) -> Vec<f64> {
    let k = g.nrows();
    let mut out = Vec::with_capacity(packed_len(k));
    for i in 0..k {
        out.extend(g.slice(s![i, i..]).iter().copied());
    }
    out
}

fn unpack_upper(packed: &[f64], k: usize) -> Array2<f64> {
    let mut g = Array2::zeros((k, k));
    let mut at = 0;
    for i in 0..k {
        for j in i..k {
            g[(i, j)] = packed[at];
            g[(j, i)] = packed[at];
            at += 1;
        }
    }
    g
}

/// Reads and fully decodes one store file.
fn read_with<T>(
    path: &Path,
    kind: FileKind,
    f: impl FnOnce(&mut PayloadReader<'_>) -> Result<T>,
) -> Result<T> {
    let bytes = read_bytes(path)?;
    let mut r = open_payload(path, &bytes, kind)?;
    let v = f(&mut r)?;
    r.finish()?;
    Ok(v)
}

fn read_meta<T: serde::de::DeserializeOwned>(path: &Path, kind: FileKind) -> Result<T> {
    read_with(path, kind, |r| r.meta("metadata"))
}

fn meta_file<T: Serialize>(kind: FileKind, value: &T) -> Vec<u8> {
    let mut w = PayloadWriter::default();
    w.meta(value);
    w.finish(kind)
}

/// Decodes a header, then the row-major f32 matrix whose shape the header gives.
fn decode_rows<H: serde::de::DeserializeOwned>(
    path: &Path,
    r: &mut PayloadReader<'_>,
    what: &str,
    shape: impl Fn(&H) -> (usize, usize),
) -> Result<(H, Array2<f32>)> {
    let h: H = r.meta("header")?;
    let (rows, cols) = shape(&h);
    let count = rows
        .checked_mul(cols)
        .ok_or_else(|| corrupt(path, format!("{what}: shape overflows")))?;
    let v = r.f32s(count, what)?;
    let a = Array2::from_shape_vec((rows, cols), v).map_err(|e| corrupt(path, e.to_string()))?;
    Ok((h, a))
}

/// Decodes a header, then the packed upper triangle of a symmetric f64 matrix of the
/// dimension the header gives.
fn decode_packed<H: serde::de::DeserializeOwned>(
    path: &Path,
    r: &mut PayloadReader<'_>,
    what: &str,
    dim: impl Fn(&H) -> usize,
    out: &mut Vec<f64>,
) -> Result<H> {
    let h: H = r.meta("header")?;
    let k = dim(&h);
    let len = k
        .checked_add(1)
        .and_then(|d| d.checked_mul(k))
        .map(|v| v / 2)
        .ok_or_else(|| corrupt(path, format!("{what}: shape overflows")))?;
    r.f64s_into(len, what, out)?;
    Ok(h)
}

/// Decodes a feature block (header, Φ rows, Q) into `buf`.
fn decode_feature_block(
    path: &Path,
    r: &mut PayloadReader<'_>,
    buf: &mut FeatureBuf,
) -> Result<BlockHeader> {
    let h: BlockHeader = r.meta("block header")?;
    let count = h
        .rows
        .checked_mul(h.dim)
        .ok_or_else(|| corrupt(path, "features: shape overflows"))?;
    r.f32s_into(count, "features", &mut buf.phi)?;
    r.f32s_into(h.rows, "Q", &mut buf.q)?;
    Ok(h)
}

fn decode_gram_block(
    path: &Path,
    r: &mut PayloadReader<'_>,
    out: &mut Vec<f64>,
) -> Result<BlockHeader> {
    decode_packed(path, r, "Gram partial", |h: &BlockHeader| h.dim, out)
}

fn decode_merged(
    path: &Path,
    r: &mut PayloadReader<'_>,
    out: &mut Vec<f64>,
) -> Result<MergedHeader> {
    decode_packed(path, r, "Gram matrix", |h: &MergedHeader| h.dim, out)
}

fn decode_target_features(
    path: &Path,
    r: &mut PayloadReader<'_>,
) -> Result<(TargetFeaturesHeader, Array2<f32>)> {
    decode_rows(path, r, "target features", |h: &TargetFeaturesHeader| {
        (h.m, h.dim)
    })
}

fn decode_scores(path: &Path, r: &mut PayloadReader<'_>) -> Result<(ScoreHeader, Array2<f32>)> {
    decode_rows(path, r, "scores", |h: &ScoreHeader| (h.rows, h.m))
}

/// Summary of one store file, from [`inspect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    /// What the file holds ("feature block", "score block", …).
    pub kind: &'static str,
    /// Payload bytes.
    pub payload_bytes: usize,
}

/// Checks and fully decodes the bytes of any store file (`path` only names it in errors):
/// checksum, magic, version, kind, and the payload of that kind. Never panics, whatever the
/// bytes; used by [`Run::verify`] and by the fuzz tests.
pub fn inspect(path: &Path, bytes: &[u8]) -> Result<FileSummary> {
    // The checksum is checked first, whatever the kind field says.
    let kind = FileKind::of_bytes(bytes).unwrap_or(FileKind::RunMeta);
    let mut r = open_payload(path, bytes, kind)?;
    let payload_bytes = bytes.len().saturating_sub(32);
    match kind {
        FileKind::RunMeta => {
            r.meta::<RunMeta>("metadata")?;
        }
        FileKind::CheckpointMeta => {
            r.meta::<CheckpointInfo>("metadata")?;
        }
        FileKind::FeatureBlock => {
            decode_feature_block(path, &mut r, &mut FeatureBuf::default())?;
        }
        FileKind::GramBlock => {
            decode_gram_block(path, &mut r, &mut Vec::new())?;
        }
        FileKind::Merged => {
            decode_merged(path, &mut r, &mut Vec::new())?;
        }
        FileKind::TargetMeta => {
            r.meta::<TargetMeta>("metadata")?;
        }
        FileKind::TargetFeatures => {
            decode_target_features(path, &mut r)?;
        }
        FileKind::ScoreBlock => {
            decode_scores(path, &mut r)?;
        }
    }
    r.finish()?;
    Ok(FileSummary {
        kind: kind.name(),
        payload_bytes,
    })
}

/// Wraps `payload` in a valid envelope of kind code `kind` (for fuzz tests of the payload
/// decoders behind the checksum).
#[doc(hidden)]
pub fn seal_for_tests(kind: u32, payload: &[u8]) -> Vec<u8> {
    format::seal_raw(kind, payload)
}

/// Differences between a stored record and a request, written "what: stored X, requested Y".
#[derive(Default)]
struct Diffs(Vec<String>);

impl Diffs {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, what: &str, stored: &T, now: &T) {
        if stored != now {
            self.0
                .push(format!("{what}: stored {stored:?}, requested {now:?}"));
        }
    }
}

/// A decoded header must say what the reader expects at this place in the run (a file
/// renamed or copied to the wrong place is caught here).
fn expect_header<H: PartialEq + std::fmt::Debug>(path: &Path, got: &H, want: &H) -> Result<()> {
    if got != want {
        return Err(corrupt(
            path,
            format!("header {got:?} does not match its place in the run ({want:?})"),
        ));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(Error::InvalidConfig(format!(
            "target-set name must be 1–64 characters of [A-Za-z0-9_-], got {name:?}"
        )));
    }
    Ok(())
}

fn first_nonfinite(v: impl IntoIterator<Item = f32>) -> Option<usize> {
    v.into_iter().position(|x| !x.is_finite())
}

impl Run {
    /// Creates the run in `dir` (and the directory), or opens it if it exists with the same
    /// configuration: projector kind, k, seed, `n` and `block_rows` must all match
    /// ([`Error::RunMismatch`] names the ones that differ). Safe to call from every shard at
    /// once. The ridge and batch size of `trak` are not part of the stored identity (they do
    /// not change stored features); the ridge is used when scoring.
    pub fn create(dir: impl AsRef<Path>, trak: &Trak, n: usize, block_rows: usize) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        if n == 0 {
            return Err(Error::Empty("training set"));
        }
        if block_rows == 0 {
            return Err(Error::InvalidConfig("block rows must be positive".into()));
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let meta = RunMeta {
            projector: trak.projector(),
            proj_dim: trak.proj_dim(),
            seed: trak.seed(),
            n,
            block_rows,
        };
        let path = run_meta_path(&dir);
        if !create_exclusive(&path, &meta_file(FileKind::RunMeta, &meta))? {
            let stored: RunMeta = read_meta(&path, FileKind::RunMeta)?;
            let mut diffs = Diffs::default();
            diffs.check("projector", &stored.projector, &meta.projector);
            diffs.check("projection dimension k", &stored.proj_dim, &meta.proj_dim);
            diffs.check("projection seed", &stored.seed, &meta.seed);
            diffs.check("training set size n", &stored.n, &meta.n);
            diffs.check("block rows", &stored.block_rows, &meta.block_rows);
            if !diffs.0.is_empty() {
                return Err(Error::RunMismatch {
                    path,
                    what: diffs.0.join("; "),
                });
            }
        }
        Ok(Run {
            dir,
            trak: trak.clone(),
            meta,
        })
    }

    /// Opens an existing run; its configuration is read from disk, with the default ridge
    /// and batch size (change the ridge with [`Run::with_ridge`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        let meta: RunMeta = read_meta(&run_meta_path(&dir), FileKind::RunMeta)?;
        let trak = Trak::builder()
            .projector(meta.projector)
            .proj_dim(meta.proj_dim)
            .seed(meta.seed)
            .build()
            .map_err(|e| corrupt(&run_meta_path(&dir), format!("stored configuration: {e}")))?;
        if meta.n == 0 || meta.block_rows == 0 {
            return Err(corrupt(
                &run_meta_path(&dir),
                "n and block rows must be positive",
            ));
        }
        Ok(Run { dir, trak, meta })
    }

    /// The same run, scored with another ridge rule.
    pub fn with_ridge(mut self, ridge: Ridge) -> Result<Run> {
        self.trak = self.trak.with_ridge(ridge)?;
        Ok(self)
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration (projector, k and seed as stored; ridge and batch size as given).
    pub fn config(&self) -> &Trak {
        &self.trak
    }

    /// Number of training examples n.
    pub fn n_train(&self) -> usize {
        self.meta.n
    }

    /// Rows per block.
    pub fn block_rows(&self) -> usize {
        self.meta.block_rows
    }

    /// Number of blocks, ⌈n / block rows⌉.
    pub fn num_blocks(&self) -> usize {
        self.meta.n.div_ceil(self.meta.block_rows)
    }

    /// Training rows of block `b`.
    pub fn block_range(&self, b: usize) -> Range<usize> {
        let start = b * self.meta.block_rows;
        start..(start + self.meta.block_rows).min(self.meta.n)
    }

    fn ckpt_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{id}"))
    }
    fn ckpt_meta_path(&self, id: u64) -> PathBuf {
        self.ckpt_dir(id).join("checkpoint.trak")
    }
    fn feat_path(&self, id: u64, b: usize) -> PathBuf {
        self.ckpt_dir(id).join(format!("block-{b:06}.feat"))
    }
    fn gram_path(&self, id: u64, b: usize) -> PathBuf {
        self.ckpt_dir(id).join(format!("block-{b:06}.gram"))
    }
    fn merged_path(&self, id: u64) -> PathBuf {
        self.ckpt_dir(id).join("merged.trak")
    }
    fn targets_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("targets-{name}"))
    }
    fn target_meta_path(&self, name: &str) -> PathBuf {
        self.targets_dir(name).join("targets.trak")
    }
    fn target_feat_path(&self, name: &str, id: u64) -> PathBuf {
        self.targets_dir(name).join(format!("ckpt-{id}.feat"))
    }
    fn score_path(&self, name: &str, b: usize) -> PathBuf {
        self.targets_dir(name).join(format!("scores-{b:06}.trak"))
    }

    /// Ids of the checkpoints with stored features (complete or not), ascending.
    pub fn checkpoints(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name();
            if let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_prefix("ckpt-"))
                .and_then(|n| n.parse::<u64>().ok())
                && self.ckpt_meta_path(id).exists()
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// What is recorded about a checkpoint.
    pub fn checkpoint_info(&self, checkpoint: u64) -> Result<CheckpointInfo> {
        let path = self.ckpt_meta_path(checkpoint);
        if !path.exists() {
            return Err(Error::UnknownCheckpoint(checkpoint));
        }
        let info: CheckpointInfo = read_meta(&path, FileKind::CheckpointMeta)?;
        if info.checkpoint != checkpoint || info.dim == 0 {
            return Err(corrupt(
                &path,
                "checkpoint record does not match its directory",
            ));
        }
        Ok(info)
    }

    /// Blocks of a checkpoint whose features and Gram partial are both on disk.
    pub fn blocks_done(&self, checkpoint: u64) -> Result<Vec<usize>> {
        Ok((0..self.num_blocks())
            .filter(|&b| {
                self.feat_path(checkpoint, b).exists() && self.gram_path(checkpoint, b).exists()
            })
            .collect())
    }

    /// Records checkpoint `info` (first caller) or checks it against the stored record.
    fn ensure_checkpoint(&self, info: &CheckpointInfo) -> Result<()> {
        let dir = self.ckpt_dir(info.checkpoint);
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let path = self.ckpt_meta_path(info.checkpoint);
        if create_exclusive(&path, &meta_file(FileKind::CheckpointMeta, info))? {
            return Ok(());
        }
        let stored = self.checkpoint_info(info.checkpoint)?;
        let mut diffs = Diffs::default();
        diffs.check("parameter count", &stored.params, &info.params);
        diffs.check("feature dimension", &stored.dim, &info.dim);
        diffs.check("model fingerprint", &stored.fingerprint, &info.fingerprint);
        if stored.fingerprint != info.fingerprint {
            diffs.0.push(
                "a different model for the same checkpoint id (for models without \
                 Model::fingerprint, the gradient at the first training example differs)"
                    .into(),
            );
        }
        if diffs.0.is_empty() {
            Ok(())
        } else {
            Err(Error::RunMismatch {
                path,
                what: format!("checkpoint {}: {}", info.checkpoint, diffs.0.join("; ")),
            })
        }
    }

    /// Removes temporary files of blocks in `blocks` left by a killed process.
    fn clean_temps(&self, checkpoint: u64, blocks: &Range<usize>) -> Result<()> {
        remove_temps(&self.ckpt_dir(checkpoint), |name| {
            name.strip_prefix("block-")
                .and_then(|r| r.split('.').next())
                .and_then(|d| d.parse::<usize>().ok())
                .is_some_and(|b| blocks.contains(&b))
        })
    }

    fn block_header(&self, checkpoint: u64, b: usize, dim: usize) -> BlockHeader {
        let r = self.block_range(b);
        BlockHeader {
            checkpoint,
            block: b,
            start: r.start,
            rows: r.len(),
            dim,
        }
    }

    fn read_feature_block(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
    ) -> Result<(Array2<f32>, Array1<f32>)> {
        let mut buf = FeatureBuf::default();
        self.read_feature_block_into(checkpoint, b, dim, &mut Vec::new(), &mut buf)?;
        let rows = buf.q.len();
        let phi = Array2::from_shape_vec((rows, dim), buf.phi).expect("checked shape");
        Ok((phi, Array1::from(buf.q)))
    }

    /// Reads and checks block `b` of a checkpoint into `buf`, reusing its allocations; the
    /// file's bytes go through `bytes` (pass the same one for every buffer of a pass, so that
    /// only one file is in memory undecoded).
    fn read_feature_block_into(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        bytes: &mut Vec<u8>,
        buf: &mut FeatureBuf,
    ) -> Result<()> {
        let path = self.feat_path(checkpoint, b);
        read_bytes_into(&path, bytes)?;
        let mut r = open_payload(&path, bytes, FileKind::FeatureBlock)?;
        let h = decode_feature_block(&path, &mut r, buf)?;
        r.finish()?;
        expect_header(&path, &h, &self.block_header(checkpoint, b, dim))?;
        if let Some(i) = first_nonfinite(buf.phi.iter().chain(&buf.q).copied()) {
            return Err(corrupt(
                &path,
                format!("non-finite stored value at index {i}"),
            ));
        }
        Ok(())
    }

    /// Reads and checks the Gram partial of block `b` into `out` (packed), through `bytes`.
    fn read_gram_block_into(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        bytes: &mut Vec<u8>,
        out: &mut Vec<f64>,
    ) -> Result<()> {
        let path = self.gram_path(checkpoint, b);
        read_bytes_into(&path, bytes)?;
        let mut r = open_payload(&path, bytes, FileKind::GramBlock)?;
        let h = decode_gram_block(&path, &mut r, out)?;
        r.finish()?;
        expect_header(&path, &h, &self.block_header(checkpoint, b, dim))
    }

    /// Writes block `b` of a checkpoint: the Gram partial first, then the features, each
    /// atomically. The block counts as done once its feature file exists.
    fn write_block(
        &self,
        checkpoint: u64,
        b: usize,
        phi: ArrayView2<'_, f32>,
        q: ArrayView1<'_, f32>,
    ) -> Result<()> {
        let header = self.block_header(checkpoint, b, phi.ncols());
        let g = pack_upper(&gram(phi));
        let mut w = PayloadWriter::with_capacity(g.len() * 8 + 64);
        w.meta(&header).f64s(g);
        write_atomic(
            &self.gram_path(checkpoint, b),
            &w.finish(FileKind::GramBlock),
        )?;
        let mut w = PayloadWriter::with_capacity((phi.len() + q.len()) * 4 + 64);
        w.meta(&header)
            .f32s(phi.iter().copied())
            .f32s(q.iter().copied());
        write_atomic(
            &self.feat_path(checkpoint, b),
            &w.finish(FileKind::FeatureBlock),
        )
    }

    /// Featurises checkpoint `checkpoint` (the model `model`) on the blocks of `shard` that
    /// are not on disk yet. `train` is the whole training set (every shard passes all of it,
    /// in the same order). Calling it again after an interruption continues from the last
    /// complete block. Before resuming, the first row of a stored block is recomputed and
    /// compared bit for bit ([`Error::RunMismatch`] if the data or model changed).
    pub fn featurize<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        shard: Shard,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<FeaturizeReport> {
        if train.is_empty() {
            return Err(Error::Empty("training set"));
        }
        if train.len() != self.meta.n {
            return Err(Error::TrainSizeMismatch {
                expected: self.meta.n,
                got: train.len(),
            });
        }
        let params = model.num_params();
        let dim = self.trak.feature_dim(model)?;
        let fingerprint = match model.fingerprint() {
            Some(h) => Fingerprint::Params(h),
            None => Fingerprint::GradientProbe(gradient_probe(model, &train[0], params)?),
        };
        let info = CheckpointInfo {
            checkpoint,
            params,
            dim,
            fingerprint,
        };
        self.ensure_checkpoint(&info)?;
        let range = shard.blocks(self.num_blocks());
        self.clean_temps(checkpoint, &range)?;
        let done: BTreeSet<usize> = self
            .blocks_done(checkpoint)?
            .into_iter()
            .filter(|b| range.contains(b))
            .collect();
        if let Some(&b) = done.iter().next() {
            self.spot_check(checkpoint, model, train, b, dim)?;
        }
        let total = range.len();
        let mut finished = done.len();
        let report = |finished| Progress {
            stage: Stage::Featurize { checkpoint },
            done: finished,
            total,
            unit: Unit::Blocks,
        };
        progress(report(finished));
        for b in range.clone().filter(|b| !done.contains(b)) {
            let r = self.block_range(b);
            let (phi, q) = self.trak.project_set(
                checkpoint,
                model,
                &train[r.clone()],
                "training",
                true,
                r.start,
                &mut |_| {},
            )?;
            self.write_block(checkpoint, b, phi.view(), q.view())?;
            finished += 1;
            progress(report(finished));
        }
        Ok(FeaturizeReport {
            computed: total - done.len(),
            skipped: done.len(),
        })
    }

    fn spot_check<M: Model>(
        &self,
        checkpoint: u64,
        model: &M,
        train: &[M::Example],
        b: usize,
        dim: usize,
    ) -> Result<()> {
        let (phi, q) = self.read_feature_block(checkpoint, b, dim)?;
        let start = self.block_range(b).start;
        let (now, now_q) = self.trak.project_set(
            checkpoint,
            model,
            &train[start..start + 1],
            "training",
            true,
            start,
            &mut |_| {},
        )?;
        let same = now
            .row(0)
            .iter()
            .zip(phi.row(0))
            .all(|(a, b)| a.to_bits() == b.to_bits())
            && now_q[0].to_bits() == q[0].to_bits();
        if !same {
            return Err(Error::RunMismatch {
                path: self.feat_path(checkpoint, b),
                what: format!(
                    "checkpoint {checkpoint}, training example {start}: the stored features \
                     differ from the ones recomputed now, so the training set (or the model) \
                     is not the one this run was featurised with"
                ),
            });
        }
        Ok(())
    }

    /// Records a checkpoint whose features are imported rather than computed here
    /// ([`Run::import_block`], [`Run::import_npy`]): its parameter count, feature
    /// dimension and a fingerprint of your choosing (e.g. a hash of the checkpoint file).
    pub fn declare_checkpoint(
        &self,
        checkpoint: u64,
        params: usize,
        dim: usize,
        fingerprint: u64,
    ) -> Result<()> {
        if params == 0 || dim == 0 {
            return Err(Error::InvalidConfig(
                "parameter count and feature dimension must be positive".into(),
            ));
        }
        self.ensure_checkpoint(&CheckpointInfo {
            checkpoint,
            params,
            dim,
            fingerprint: Fingerprint::Declared(fingerprint),
        })
    }

    /// Stores block `b` of a declared checkpoint from precomputed features (rows of the block
    /// × feature dimension) and Q (one per row), computing its Gram partial. A block already
    /// on disk is never overwritten ([`Error::RunMismatch`]); skip it with
    /// [`Run::blocks_done`] to resume an import.
    pub fn import_block(
        &self,
        checkpoint: u64,
        b: usize,
        features: ArrayView2<'_, f32>,
        q: ArrayView1<'_, f32>,
    ) -> Result<()> {
        let info = self.checkpoint_info(checkpoint)?;
        if b >= self.num_blocks() {
            return Err(Error::InvalidConfig(format!(
                "block {b} out of range: the run has {} blocks",
                self.num_blocks()
            )));
        }
        let rows = self.block_range(b).len();
        if features.dim() != (rows, info.dim) {
            return Err(shape_err(
                "imported block features",
                format!("{rows} × {}", info.dim),
                format!("{:?}", features.dim()),
            ));
        }
        if q.len() != rows {
            return Err(shape_err("imported block Q", rows, q.len()));
        }
        if let Some(i) = first_nonfinite(features.iter().copied()) {
            return Err(Error::NonFiniteInput {
                what: "imported features",
                index: i,
            });
        }
        if let Some(i) = first_nonfinite(q.iter().copied()) {
            return Err(Error::NonFiniteInput {
                what: "imported Q",
                index: i,
            });
        }
        let path = self.feat_path(checkpoint, b);
        if path.exists() {
            return Err(Error::RunMismatch {
                path,
                what: format!(
                    "block {b} of checkpoint {checkpoint} is already stored; stored blocks are \
                     never overwritten (remove the checkpoint's directory to import it again)"
                ),
            });
        }
        self.write_block(checkpoint, b, features, q)
    }

    /// Imports a whole declared checkpoint from `.npy` files: features (n × dim, float32)
    /// and Q (n, float32), e.g. written by `numpy.save`. Resumes an interrupted import (blocks
    /// on disk are kept once one of them is checked against the file).
    pub fn import_npy(&self, checkpoint: u64, features: &Path, q: &Path) -> Result<()> {
        let phi = npy::read_f32_2d(features)?;
        let q = npy::read_f32_1d(q)?;
        if phi.nrows() != self.meta.n || q.len() != self.meta.n {
            return Err(shape_err(
                "imported features / Q rows (n)",
                self.meta.n,
                format!("{} / {}", phi.nrows(), q.len()),
            ));
        }
        // Like featurisation, an interrupted import resumes: blocks on disk are kept after
        // checking that the first of them holds the same first row as the file.
        let done = self.blocks_done(checkpoint)?;
        if let Some(&b) = done.first() {
            let info = self.checkpoint_info(checkpoint)?;
            let (stored, stored_q) = self.read_feature_block(checkpoint, b, info.dim)?;
            let r = self.block_range(b);
            let same = phi.ncols() == info.dim
                && stored
                    .row(0)
                    .iter()
                    .zip(phi.row(r.start))
                    .all(|(a, b)| a.to_bits() == b.to_bits())
                && stored_q[0].to_bits() == q[r.start].to_bits();
            if !same {
                return Err(Error::RunMismatch {
                    path: self.feat_path(checkpoint, b),
                    what: format!(
                        "checkpoint {checkpoint}: the stored block {b} differs from {} at row {}",
                        features.display(),
                        r.start
                    ),
                });
            }
        }
        for b in (0..self.num_blocks()).filter(|b| !done.contains(b)) {
            let r = self.block_range(b);
            self.import_block(checkpoint, b, phi.slice(s![r.clone(), ..]), q.slice(s![r]))?;
        }
        Ok(())
    }

    /// Checks every block of every stored checkpoint (checksums, headers, finite values) and
    /// adds each checkpoint's Gram partials in block order into its `merged.trak`. Fails with
    /// [`Error::Incomplete`] listing missing blocks. Returns the merged checkpoint ids.
    pub fn merge(&self, progress: &mut dyn FnMut(Progress)) -> Result<Vec<u64>> {
        let ids = self.checkpoints()?;
        if ids.is_empty() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: "no checkpoint has been featurised".into(),
            });
        }
        let nb = self.num_blocks();
        for &id in &ids {
            let done: BTreeSet<usize> = self.blocks_done(id)?.into_iter().collect();
            let missing: Vec<usize> = (0..nb).filter(|b| !done.contains(b)).collect();
            if !missing.is_empty() {
                let shown: Vec<String> = missing.iter().take(8).map(|b| b.to_string()).collect();
                return Err(Error::Incomplete {
                    path: self.dir.clone(),
                    what: format!(
                        "checkpoint {id} misses {} of {nb} blocks (blocks {}{})",
                        missing.len(),
                        shown.join(", "),
                        if missing.len() > 8 { ", …" } else { "" }
                    ),
                });
            }
        }
        // Merging runs after every shard has finished: stale temporary files of merged
        // matrices and of the run record are leftovers of killed processes.
        remove_temps(&self.dir, |n| n.starts_with("run.trak"))?;
        for &id in &ids {
            remove_temps(&self.ckpt_dir(id), |n| {
                n.starts_with("merged.trak") || n.starts_with("checkpoint.trak")
            })?;
        }
        for &id in &ids {
            let info = self.checkpoint_info(id)?;
            let mut total = vec![0.0f64; packed_len(info.dim)];
            let (mut bytes, mut buf, mut g) = (Vec::new(), FeatureBuf::default(), Vec::new());
            for b in 0..nb {
                self.read_gram_block_into(id, b, info.dim, &mut bytes, &mut g)?;
                total.iter_mut().zip(&g).for_each(|(t, v)| *t += v);
                self.read_feature_block_into(id, b, info.dim, &mut bytes, &mut buf)?;
                progress(Progress {
                    stage: Stage::Merge { checkpoint: id },
                    done: b + 1,
                    total: nb,
                    unit: Unit::Blocks,
                });
            }
            let header = MergedHeader {
                checkpoint: id,
                n: self.meta.n,
                dim: info.dim,
                blocks: nb,
            };
            let mut w = PayloadWriter::with_capacity(total.len() * 8 + 64);
            w.meta(&header).f64s(total);
            write_atomic(&self.merged_path(id), &w.finish(FileKind::Merged))?;
        }
        Ok(ids)
    }

    /// The merged Gram matrix ΦᵀΦ of a checkpoint (k × k, f64).
    pub fn gram(&self, checkpoint: u64) -> Result<Array2<f64>> {
        let info = self.checkpoint_info(checkpoint)?;
        let path = self.merged_path(checkpoint);
        if !path.exists() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: format!("checkpoint {checkpoint} is not merged (call Run::merge)"),
            });
        }
        let mut g = Vec::new();
        let h = read_with(&path, FileKind::Merged, |r| decode_merged(&path, r, &mut g))?;
        let want = MergedHeader {
            checkpoint,
            n: self.meta.n,
            dim: info.dim,
            blocks: self.num_blocks(),
        };
        expect_header(&path, &h, &want)?;
        Ok(unpack_upper(&g, info.dim))
    }

    /// All of a checkpoint's features Φ (n × dim) and Q (n), read into memory.
    pub fn load_features(&self, checkpoint: u64) -> Result<(Array2<f32>, Array1<f32>)> {
        let info = self.checkpoint_info(checkpoint)?;
        let mut phi = Array2::zeros((self.meta.n, info.dim));
        let mut q = Array1::zeros(self.meta.n);
        let (mut bytes, mut buf) = (Vec::new(), FeatureBuf::default());
        for b in 0..self.num_blocks() {
            let r = self.block_range(b);
            if !self.feat_path(checkpoint, b).exists() {
                return Err(Error::Incomplete {
                    path: self.dir.clone(),
                    what: format!("checkpoint {checkpoint} misses block {b}"),
                });
            }
            self.read_feature_block_into(checkpoint, b, info.dim, &mut bytes, &mut buf)?;
            phi.slice_mut(s![r.clone(), ..]).assign(&buf.phi(info.dim));
            q.slice_mut(s![r]).assign(&ArrayView1::from(&buf.q));
        }
        Ok((phi, q))
    }

    /// Every merged checkpoint as in-memory [`TrainFeatures`] (Φ, Q and the stored Gram
    /// matrices, bit for bit), for the in-memory API: [`TrainFeatures::finalize`] and so on.
    pub fn train_features(&self) -> Result<TrainFeatures> {
        let mut parts = Vec::new();
        for id in self.checkpoints()? {
            let g = self.gram(id)?;
            let (phi, q) = self.load_features(id)?;
            parts.push(StoredCheckpoint {
                id,
                phi,
                q,
                params: self.checkpoint_info(id)?.params,
                gram: g,
            });
        }
        if parts.is_empty() {
            return Err(Error::Empty("stored checkpoints"));
        }
        Ok(TrainFeatures::from_parts(
            self.trak.clone(),
            self.meta.n,
            parts,
        ))
    }

    /// Computes target features under each listed checkpoint's model, then scores them with
    /// [`Run::score_features`] into target set `name`.
    pub fn score<M: Model>(
        &self,
        name: &str,
        checkpoints: &[(u64, &M)],
        targets: &[M::Example],
        opts: ScoreOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ScoreReport> {
        check_name(name)?;
        if checkpoints.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        if targets.is_empty() {
            return Err(Error::Empty("target set"));
        }
        let mut psis = Vec::with_capacity(checkpoints.len());
        for (i, &(id, model)) in checkpoints.iter().enumerate() {
            let info = self.checkpoint_info(id)?;
            if model.num_params() != info.params {
                return Err(shape_err(
                    "model parameters (scoring a checkpoint with a different model from the featurised one)",
                    info.params,
                    model.num_params(),
                ));
            }
            let (psi, _) =
                self.trak
                    .project_set(id, model, targets, "target", false, 0, &mut |_| {})?;
            progress(Progress {
                stage: Stage::Targets { checkpoint: id },
                done: i + 1,
                total: checkpoints.len(),
                unit: Unit::Checkpoints,
            });
            psis.push((id, psi));
        }
        let views: Vec<(u64, ArrayView2<'_, f32>)> =
            psis.iter().map(|(id, p)| (*id, p.view())).collect();
        self.score_features(name, &views, opts, progress)
    }

    /// Scores target features Ψ_m (m × dim, one matrix per listed merged checkpoint) against
    /// the stored training features, out of core, into target set `name`:
    /// τ = (1/M Σ_m Φ_m (Φ_mᵀΦ_m + λ_m I)⁻¹ Ψ_mᵀ) ⊙ Q̄, as [`crate::TrakIndex::score`].
    ///
    /// Stores the target features and one score file per training block. If the target set
    /// exists with the same targets, checkpoints and ridge, blocks already scored are kept
    /// (the call resumes); if it exists with different ones, [`Error::RunMismatch`].
    pub fn score_features(
        &self,
        name: &str,
        targets: &[(u64, ArrayView2<'_, f32>)],
        opts: ScoreOptions,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<ScoreReport> {
        check_name(name)?;
        if targets.is_empty() {
            return Err(Error::Empty("checkpoint list"));
        }
        let m = targets[0].1.nrows();
        if m == 0 {
            return Err(Error::Empty("target set"));
        }
        let mut seen = BTreeSet::new();
        let mut infos = Vec::new();
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        for (id, psi) in targets {
            if !seen.insert(*id) {
                return Err(Error::DuplicateCheckpoint(*id));
            }
            let info = self.checkpoint_info(*id)?;
            if psi.nrows() != m {
                return Err(shape_err(
                    "target features rows (same targets for every checkpoint)",
                    m,
                    psi.nrows(),
                ));
            }
            if psi.ncols() != info.dim {
                return Err(shape_err("target feature columns", info.dim, psi.ncols()));
            }
            if let Some(i) = first_nonfinite(psi.iter().copied()) {
                return Err(Error::NonFiniteInput {
                    what: "target features",
                    index: i,
                });
            }
            hasher.update(&id.to_le_bytes());
            for v in psi.iter() {
                hasher.update(&v.to_bits().to_le_bytes());
            }
            infos.push(info);
        }
        let plan = ScorePlan::new(
            &infos.iter().map(|i| i.dim).collect::<Vec<_>>(),
            m,
            self.meta.block_rows.min(self.meta.n),
            self.num_blocks(),
            opts.memory_budget,
        )?;
        let per_pass = plan.blocks_per_pass;

        // λ per checkpoint from its merged Gram matrix; Y_m = A_m⁻¹ Ψ_mᵀ.
        let mut ys = Vec::with_capacity(targets.len());
        let mut lambdas = Vec::with_capacity(targets.len());
        for ((id, psi), info) in targets.iter().zip(&infos) {
            let g = self.gram(*id)?;
            let trace: f64 = g.diag().sum();
            let lambda = self.trak.ridge().lambda(trace, info.dim, self.meta.n);
            let factor = Factor::new(g.view(), lambda, *id)?;
            drop(g);
            ys.push(factor.solve_targets(psi.view())?);
            lambdas.push(lambda);
        }

        let tdir = self.targets_dir(name);
        fs::create_dir_all(&tdir).map_err(|e| io_err(&tdir, e))?;
        // Scoring a target set is one process's work: stale temporary files are leftovers.
        remove_temps(&tdir, |_| true)?;
        let meta = TargetMeta {
            name: name.to_string(),
            m,
            checkpoints: targets.iter().map(|t| t.0).collect(),
            dims: infos.iter().map(|i| i.dim).collect(),
            ridge: self.trak.ridge(),
            lambdas,
            targets_hash: hasher.digest(),
        };
        let mpath = self.target_meta_path(name);
        if !create_exclusive(&mpath, &meta_file(FileKind::TargetMeta, &meta))? {
            let stored: TargetMeta = read_meta(&mpath, FileKind::TargetMeta)?;
            if stored != meta {
                let mut diffs = Diffs::default();
                diffs.check("targets", &stored.m, &meta.m);
                diffs.check("checkpoints", &stored.checkpoints, &meta.checkpoints);
                diffs.check("ridge", &stored.ridge, &meta.ridge);
                diffs.check("λ per checkpoint", &stored.lambdas, &meta.lambdas);
                if stored.targets_hash != meta.targets_hash {
                    diffs.0.push("the target features differ".into());
                }
                return Err(Error::RunMismatch {
                    path: mpath,
                    what: format!(
                        "target set {name:?} was scored with other inputs ({}); use another \
                         name or Run::remove_targets",
                        diffs.0.join("; ")
                    ),
                });
            }
        }
        for ((id, psi), info) in targets.iter().zip(&infos) {
            let mut w = PayloadWriter::with_capacity(psi.len() * 4 + 64);
            w.meta(&TargetFeaturesHeader {
                checkpoint: *id,
                m,
                dim: info.dim,
            })
            .f32s(psi.iter().copied());
            write_atomic(
                &self.target_feat_path(name, *id),
                &w.finish(FileKind::TargetFeatures),
            )?;
        }

        let nb = self.num_blocks();
        let pending: Vec<usize> = (0..nb)
            .filter(|&b| !self.score_path(name, b).exists())
            .collect();
        let skipped = nb - pending.len();
        let mut done = skipped;
        progress(Progress {
            stage: Stage::Score,
            done,
            total: nb,
            unit: Unit::Blocks,
        });
        let count = targets.len() as f64;
        // Accumulators and read buffers are allocated once and reused by every pass and
        // checkpoint (no allocator churn, no fresh pages to fault in).
        let rows_max = self.meta.block_rows.min(self.meta.n);
        let mut acc_pool = vec![vec![0f64; rows_max * m]; per_pass.min(pending.len())];
        let mut qsum_pool = vec![vec![0f64; rows_max]; per_pass.min(pending.len())];
        let mut feat_pool: Vec<FeatureBuf> = (0..per_pass.min(pending.len()))
            .map(|_| FeatureBuf::default())
            .collect();
        let mut bytes = Vec::new();
        for pass in pending.chunks(per_pass) {
            let mut accs: Vec<ndarray::ArrayViewMut2<'_, f64>> = Vec::with_capacity(pass.len());
            let mut qsums: Vec<&mut [f64]> = Vec::with_capacity(pass.len());
            for ((&b, a), q) in pass.iter().zip(&mut acc_pool).zip(&mut qsum_pool) {
                let rows = self.block_range(b).len();
                let a = &mut a[..rows * m];
                a.fill(0.0);
                accs.push(ndarray::ArrayViewMut2::from_shape((rows, m), a).expect("sized buffer"));
                let q = &mut q[..rows];
                q.fill(0.0);
                qsums.push(q);
            }
            for (((id, _), info), y) in targets.iter().zip(&infos).zip(&ys) {
                for (&b, buf) in pass.iter().zip(&mut feat_pool) {
                    self.read_feature_block_into(*id, b, info.dim, &mut bytes, buf)?;
                }
                accs.par_iter_mut()
                    .zip(qsums.par_iter_mut())
                    .zip(feat_pool[..pass.len()].par_iter())
                    .try_for_each(|((acc, qs), buf)| {
                        qs.iter_mut().zip(&buf.q).for_each(|(s, &v)| *s += v as f64);
                        add_scores(buf.phi(info.dim), y, acc.view_mut())
                    })?;
            }
            for ((&b, acc), qs) in pass.iter().zip(&accs).zip(&qsums) {
                let r = self.block_range(b);
                let header = ScoreHeader {
                    block: b,
                    start: r.start,
                    rows: r.len(),
                    m,
                };
                let mut w = PayloadWriter::with_capacity(acc.len() * 4 + 64);
                w.meta(&header)
                    .f32s(
                        acc.axis_iter(Axis(0))
                            .zip(qs.iter())
                            .flat_map(|(row, &qi)| {
                                row.into_iter()
                                    .map(move |&v| ((v / count) * (qi / count)) as f32)
                            }),
                    );
                write_atomic(&self.score_path(name, b), &w.finish(FileKind::ScoreBlock))?;
                done += 1;
                progress(Progress {
                    stage: Stage::Score,
                    done,
                    total: nb,
                    unit: Unit::Blocks,
                });
            }
        }
        Ok(ScoreReport {
            computed: pending.len(),
            skipped,
            blocks_per_pass: per_pass,
            planned_bytes: plan.planned_bytes,
        })
    }

    fn target_meta(&self, name: &str) -> Result<TargetMeta> {
        check_name(name)?;
        let path = self.target_meta_path(name);
        if !path.exists() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: format!("no target set named {name:?}"),
            });
        }
        let meta: TargetMeta = read_meta(&path, FileKind::TargetMeta)?;
        if meta.name != name || meta.m == 0 || meta.checkpoints.len() != meta.dims.len() {
            return Err(corrupt(&path, "inconsistent target-set record"));
        }
        Ok(meta)
    }

    /// Names of the stored target sets, sorted.
    pub fn target_sets(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            if let Some(n) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("targets-"))
                && check_name(n).is_ok()
                && self.target_meta_path(n).exists()
            {
                names.push(n.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Deletes a target set (its features and scores).
    pub fn remove_targets(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let dir = self.targets_dir(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        }
        Ok(())
    }

    /// The stored target features of a target set under one checkpoint (m × dim).
    pub fn target_features(&self, name: &str, checkpoint: u64) -> Result<Array2<f32>> {
        let meta = self.target_meta(name)?;
        let Some(i) = meta.checkpoints.iter().position(|&c| c == checkpoint) else {
            return Err(Error::UnknownCheckpoint(checkpoint));
        };
        let path = self.target_feat_path(name, checkpoint);
        let (h, a) = read_with(&path, FileKind::TargetFeatures, |r| {
            decode_target_features(&path, r)
        })?;
        let want = TargetFeaturesHeader {
            checkpoint,
            m: meta.m,
            dim: meta.dims[i],
        };
        expect_header(&path, &h, &want)?;
        Ok(a)
    }

    /// Calls `f(first_row, scores)` for each block of a scored target set, in order: the
    /// scores of training rows `first_row ..` (rows × m). Holds one block in memory.
    pub fn for_each_score_block(
        &self,
        name: &str,
        mut f: impl FnMut(usize, ArrayView2<'_, f32>) -> Result<()>,
    ) -> Result<()> {
        let meta = self.target_meta(name)?;
        for b in 0..self.num_blocks() {
            let path = self.score_path(name, b);
            if !path.exists() {
                return Err(Error::Incomplete {
                    path: self.dir.clone(),
                    what: format!("target set {name:?} misses score block {b}"),
                });
            }
            let (h, a) = read_with(&path, FileKind::ScoreBlock, |r| decode_scores(&path, r))?;
            let r = self.block_range(b);
            let want = ScoreHeader {
                block: b,
                start: r.start,
                rows: r.len(),
                m: meta.m,
            };
            expect_header(&path, &h, &want)?;
            f(r.start, a.view())?;
        }
        Ok(())
    }

    /// The scores of a target set, read into memory (n × m).
    pub fn load_scores(&self, name: &str) -> Result<Scores> {
        let meta = self.target_meta(name)?;
        let mut out = Array2::zeros((self.meta.n, meta.m));
        self.for_each_score_block(name, |start, a| {
            out.slice_mut(s![start..start + a.nrows(), ..]).assign(&a);
            Ok(())
        })?;
        Ok(Scores::new(out))
    }

    /// Writes a checkpoint's features Φ (n × dim, float32) to a `.npy` file, block by block.
    pub fn export_features_npy(&self, checkpoint: u64, path: &Path) -> Result<()> {
        let info = self.checkpoint_info(checkpoint)?;
        npy::write_f32_streaming(path, &[self.meta.n, info.dim], |sink| {
            let (mut bytes, mut buf) = (Vec::new(), FeatureBuf::default());
            for b in 0..self.num_blocks() {
                self.read_feature_block_into(checkpoint, b, info.dim, &mut bytes, &mut buf)?;
                sink(&buf.phi)?;
            }
            Ok(())
        })
    }

    /// Writes a checkpoint's Q (n, float32) to a `.npy` file.
    pub fn export_q_npy(&self, checkpoint: u64, path: &Path) -> Result<()> {
        let info = self.checkpoint_info(checkpoint)?;
        npy::write_f32_streaming(path, &[self.meta.n], |sink| {
            let (mut bytes, mut buf) = (Vec::new(), FeatureBuf::default());
            for b in 0..self.num_blocks() {
                self.read_feature_block_into(checkpoint, b, info.dim, &mut bytes, &mut buf)?;
                sink(&buf.q)?;
            }
            Ok(())
        })
    }

    /// Writes the scores of a target set (n × m, float32) to a `.npy` file, block by block.
    pub fn export_scores_npy(&self, name: &str, path: &Path) -> Result<()> {
        let meta = self.target_meta(name)?;
        npy::write_f32_streaming(path, &[self.meta.n, meta.m], |sink| {
            self.for_each_score_block(name, |_, a| sink(a.as_slice().expect("standard layout")))
        })
    }

    /// Every store file of the run (metadata, blocks, merged Gram matrices, target sets),
    /// sorted; temporary files are not listed.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut out = vec![run_meta_path(&self.dir)];
        let mut dirs = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name();
            let name = name.to_str().unwrap_or("");
            if (name.starts_with("ckpt-") || name.starts_with("targets-")) && entry.path().is_dir()
            {
                dirs.push(entry.path());
            }
        }
        for d in dirs {
            for entry in fs::read_dir(&d).map_err(|e| io_err(&d, e))? {
                let entry = entry.map_err(|e| io_err(&d, e))?;
                let name = entry.file_name();
                let name = name.to_str().unwrap_or("");
                if !is_temp_name(name)
                    && (name.ends_with(".trak")
                        || name.ends_with(".feat")
                        || name.ends_with(".gram"))
                {
                    out.push(entry.path());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Reads and checks every file of the run ([`inspect`]); the first failure is returned,
    /// naming its file ([`Error::Checksum`] for any corrupted byte). Returns the file count.
    pub fn verify(&self) -> Result<usize> {
        let files = self.files()?;
        for f in &files {
            inspect(f, &read_bytes(f)?)?;
        }
        Ok(files.len())
    }
}

/// Removes the temporary files in `dir` (left by killed writers) whose names satisfy `which`.
fn remove_temps(dir: &Path, which: impl Fn(&str) -> bool) -> Result<()> {
    for entry in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_name(name) && which(name) && entry.path().is_file() {
            let p = entry.path();
            fs::remove_file(&p).map_err(|e| io_err(&p, e))?;
        }
    }
    Ok(())
}

/// xxh3-64 of the output gradient and Q at one example (a fingerprint for models without
/// [`crate::Model::fingerprint`]).
fn gradient_probe<M: Model>(model: &M, example: &M::Example, params: usize) -> Result<u64> {
    let mut g = Array2::<f32>::zeros((1, params));
    model.output_grads(std::slice::from_ref(example), g.view_mut())?;
    let mut q = Array1::<f32>::zeros(1);
    model.output_q(std::slice::from_ref(example), q.view_mut())?;
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for v in g.iter().chain(q.iter()) {
        h.update(&v.to_bits().to_le_bytes());
    }
    Ok(h.digest())
}
