//! Merging a run (every block checked, Gram partials added in block order) and reading merged
//! checkpoints back.

use std::collections::BTreeSet;

use ndarray::{Array1, Array2, ArrayView1, s};

use super::fsio::{read_bytes, remove_temps, write_atomic};
use super::records::{
    FeatureBuf, Fingerprint, MERGED_GRAM, MergedHeader, packed_len, unpack_upper,
};
use super::{Run, Shard};
use crate::attribute::{StoredCheckpoint, TrainFeatures};
use crate::error::{Error, Result};
use crate::kernel::Weighting;
use crate::progress::{Progress, ProgressSink, Stage, Unit};

/// Options of [`Run::merge`]: where to report progress (default: nowhere), and how many
/// shards featurised the run (default: not said).
#[derive(Debug, Default)]
pub struct MergeOptions<'a> {
    progress: ProgressSink<'a>,
    shards: Option<usize>,
}

impl<'a> MergeOptions<'a> {
    /// The run was featurised as `count` shards ([`Shard::new`]`(i, count)`, e.g. the tasks
    /// of a `count`-task job array): an incomplete run's [`Error::Incomplete`] then also names
    /// the shards that miss blocks, i.e. the tasks to run again. A count of 0 is
    /// [`Error::InvalidParameter`] when merging.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = Some(count);
        self
    }

    /// Report progress (blocks checked, per checkpoint) to `callback`.
    pub fn progress(mut self, callback: &'a mut dyn FnMut(Progress)) -> Self {
        self.progress = ProgressSink::new(callback);
        self
    }
}

impl Run {
    /// Checks every block of every stored checkpoint (checksums, headers, finite values) and
    /// adds each checkpoint's Gram partials under the run's weighting (Φ_bᵀW_bΦ_b, written by
    /// featurisation) in block order into its `merged.trak` (`merged-<tag>.trak` for a
    /// weighting). Fails with
    /// [`Error::Incomplete`] listing missing blocks. Returns the merged checkpoint ids.
    pub fn merge(&self, mut opts: MergeOptions<'_>) -> Result<Vec<u64>> {
        let ids = self.checkpoints()?;
        if ids.is_empty() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: "no checkpoint has been featurised".into(),
            });
        }
        let shards = opts
            .shards
            .map(|c| Shard::new(0, c).map(|_| c))
            .transpose()?;
        for &id in &ids {
            self.check_complete(id, shards)?;
        }
        // Merging runs after every shard has finished: stale temporary files of merged
        // matrices and of the run record are leftovers of killed processes.
        remove_temps(&self.dir, |n| n.starts_with("run.trak"))?;
        for &id in &ids {
            remove_temps(&self.ckpt_dir(id), |n| {
                n.starts_with("merged") || n.starts_with("checkpoint.trak")
            })?;
        }
        for &id in &ids {
            self.merge_checkpoint(id, &mut opts.progress)?;
        }
        Ok(ids)
    }

    /// [`Error::Incomplete`] unless every block of the checkpoint is on disk (naming the
    /// incomplete ones of `shards` shards, when given);
    /// [`Error::ImportedWithoutCurvature`] for an imported checkpoint under Gauss-Newton,
    /// whose partials can never be computed.
    fn check_complete(&self, id: u64, shards: Option<usize>) -> Result<()> {
        if let Fingerprint::Declared(_) = self.checkpoint_info(id)?.fingerprint {
            self.check_importable(id)?;
        }
        let missing = self.missing_blocks(id)?;
        if missing.is_empty() {
            return Ok(());
        }
        let nb = self.num_blocks();
        let shown: Vec<String> = missing.iter().take(8).map(|b| b.to_string()).collect();
        let by_shard = shards.map_or(String::new(), |c| incomplete_shards(&missing, nb, c));
        Err(Error::Incomplete {
            path: self.dir.clone(),
            what: format!(
                "checkpoint {id} misses {} of {nb} blocks under the {:?} weighting (blocks {}{}\
                 {by_shard}; Run::featurize computes them, only the Gram partials where the \
                 features are stored)",
                missing.len(),
                self.trak.weighting(),
                shown.join(", "),
                if missing.len() > 8 { ", …" } else { "" }
            ),
        })
    }

    /// The blocks of checkpoint `checkpoint` that are not complete under the run's weighting
    /// (features or Gram partial missing), in order: what [`Run::merge`] would refuse.
    pub fn missing_blocks(&self, checkpoint: u64) -> Result<Vec<usize>> {
        let done: BTreeSet<usize> = self.blocks_done(checkpoint)?.into_iter().collect();
        Ok((0..self.num_blocks())
            .filter(|b| !done.contains(b))
            .collect())
    }

    /// Reads and checks every block of one checkpoint and writes its merged Gram matrix under
    /// the run's weighting.
    fn merge_checkpoint(&self, id: u64, progress: &mut ProgressSink<'_>) -> Result<()> {
        let nb = self.num_blocks();
        let info = self.checkpoint_info(id)?;
        let mut total = vec![0.0f64; packed_len(info.dim)];
        let (mut bytes, mut buf, mut g) = (Vec::new(), FeatureBuf::default(), Vec::new());
        for b in 0..nb {
            self.read_gram_block_into(id, b, info.dim, &mut bytes, &mut g)?;
            total.iter_mut().zip(&g).for_each(|(t, v)| *t += v);
            self.read_feature_block_into(id, b, info.dim, &mut bytes, &mut buf)?;
            progress.report(Progress {
                stage: Stage::Merge { checkpoint: id },
                done: b + 1,
                total: nb,
                unit: Unit::Blocks,
            });
        }
        let header = self.merged_header(id, info.dim);
        let weighting = self.trak.weighting();
        let file = MERGED_GRAM.file(&header, weighting, total);
        write_atomic(&self.merged_path(id, weighting), &file)
    }

    fn merged_header(&self, checkpoint: u64, dim: usize) -> MergedHeader {
        MergedHeader {
            checkpoint,
            n: self.meta.n,
            dim,
            blocks: self.num_blocks(),
        }
    }

    /// The merged Gram matrix ΦᵀWΦ of a checkpoint under the run's weighting (k × k, f64;
    /// ΦᵀΦ for plain TRAK).
    pub fn gram(&self, checkpoint: u64) -> Result<Array2<f64>> {
        self.weighted_gram(checkpoint, self.trak.weighting())
    }

    /// The merged Gram matrix ΦᵀWΦ of a checkpoint under `weighting` (k × k, f64): ΦᵀΦ for
    /// [`Weighting::None`]. It exists once [`Run::featurize`] and [`Run::merge`] ran on the
    /// run configured with that weighting ([`Run::with_weighting`]); otherwise
    /// [`Error::Incomplete`] says so.
    pub fn weighted_gram(&self, checkpoint: u64, weighting: Weighting) -> Result<Array2<f64>> {
        let info = self.checkpoint_info(checkpoint)?;
        let path = self.merged_path(checkpoint, weighting);
        let plain = weighting == Weighting::None;
        if !path.exists() {
            if let (Fingerprint::Declared(_), Weighting::GaussNewton) =
                (info.fingerprint, weighting)
            {
                return Err(Error::ImportedWithoutCurvature { checkpoint });
            }
            let what = if plain {
                format!("checkpoint {checkpoint} is not merged (call Run::merge)")
            } else {
                format!(
                    "checkpoint {checkpoint} has no merged Gram matrix under the {weighting:?} \
                     weighting: featurise (only the Gram partials are computed) and merge the \
                     run configured with it (Run::with_weighting), or score with the weighting \
                     it was merged under"
                )
            };
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what,
            });
        }
        let want = self.merged_header(checkpoint, info.dim);
        let mut g = Vec::new();
        MERGED_GRAM.read((&path, &read_bytes(&path)?), (want, weighting), &mut g)?;
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
    /// matrix of the run's weighting, bit for bit), for the in-memory API:
    /// [`TrainFeatures::finalize`] and so on.
    pub fn train_features(&self) -> Result<TrainFeatures> {
        let weighting = self.trak.weighting();
        let mut parts = Vec::new();
        for id in self.checkpoints()? {
            let gram = self.weighted_gram(id, weighting)?;
            let (phi, q) = self.load_features(id)?;
            let info = self.checkpoint_info(id)?;
            parts.push(StoredCheckpoint {
                id,
                phi,
                q,
                params: info.params,
                gram: (weighting, gram),
                imported: matches!(info.fingerprint, Fingerprint::Declared(_)),
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
}

/// "; incomplete shards of `count`: 2 (blocks 10–14), …" for the `missing` of `blocks`.
fn incomplete_shards(missing: &[usize], blocks: usize, count: usize) -> String {
    let mut parts = Vec::new();
    for index in 0..count {
        let shard = Shard::new(index, count).expect("index < count");
        let range = shard.blocks(blocks);
        let n = missing.iter().filter(|b| range.contains(b)).count();
        if n > 0 {
            let (a, z) = (range.start, range.end.saturating_sub(1));
            parts.push(format!("{index} ({n} of blocks {a}–{z})"));
        }
    }
    format!("; incomplete shards of {count}: {}", parts.join(", "))
}
