//! Merging a run (every block checked, Gram partials added in block order) and reading merged
//! checkpoints back.

use std::collections::BTreeSet;

use ndarray::{Array1, Array2, ArrayView1, s};

use super::Run;
use super::format::{FileKind, PayloadWriter};
use super::fsio::{remove_temps, write_atomic};
use super::records::{
    FeatureBuf, MergedHeader, decode_merged, expect_header, packed_len, read_with, unpack_upper,
};
use crate::attribute::{StoredCheckpoint, TrainFeatures};
use crate::error::{Error, Result};
use crate::progress::{Progress, ProgressSink, Stage, Unit};

/// Options of [`Run::merge`]: where to report progress (default: nowhere).
#[derive(Debug, Default)]
pub struct MergeOptions<'a> {
    progress: ProgressSink<'a>,
}

impl<'a> MergeOptions<'a> {
    /// Report progress (blocks checked, per checkpoint) to `callback`.
    pub fn progress(mut self, callback: &'a mut dyn FnMut(Progress)) -> Self {
        self.progress = ProgressSink::new(callback);
        self
    }
}

impl Run {
    /// Checks every block of every stored checkpoint (checksums, headers, finite values) and
    /// adds each checkpoint's Gram partials in block order into its `merged.trak`. Fails with
    /// [`Error::Incomplete`] listing missing blocks. Returns the merged checkpoint ids.
    pub fn merge(&self, mut opts: MergeOptions<'_>) -> Result<Vec<u64>> {
        let ids = self.checkpoints()?;
        if ids.is_empty() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: "no checkpoint has been featurised".into(),
            });
        }
        for &id in &ids {
            self.check_complete(id)?;
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
            self.merge_checkpoint(id, &mut opts.progress)?;
        }
        Ok(ids)
    }

    /// [`Error::Incomplete`] unless every block of the checkpoint is on disk.
    fn check_complete(&self, id: u64) -> Result<()> {
        let nb = self.num_blocks();
        let done: BTreeSet<usize> = self.blocks_done(id)?.into_iter().collect();
        let missing: Vec<usize> = (0..nb).filter(|b| !done.contains(b)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> = missing.iter().take(8).map(|b| b.to_string()).collect();
        Err(Error::Incomplete {
            path: self.dir.clone(),
            what: format!(
                "checkpoint {id} misses {} of {nb} blocks (blocks {}{})",
                missing.len(),
                shown.join(", "),
                if missing.len() > 8 { ", …" } else { "" }
            ),
        })
    }

    /// Reads and checks every block of one checkpoint and writes its merged Gram matrix.
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
        let header = MergedHeader {
            checkpoint: id,
            n: self.meta.n,
            dim: info.dim,
            blocks: nb,
        };
        let mut w = PayloadWriter::with_capacity(total.len() * 8 + 64);
        w.meta(&header).f64s(total);
        write_atomic(&self.merged_path(id), &w.finish(FileKind::Merged))
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
}
