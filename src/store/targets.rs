//! Stored target sets (reading scores back, listing, removing), `.npy` export, and checking
//! a whole run.

use std::fs;
use std::path::Path;

use ndarray::{Array2, ArrayView2, s};

use super::format::{FileKind, corrupt};
use super::fsio::{io_err, read_bytes};
use super::records::{
    FeatureBuf, ScoreHeader, TargetFeaturesHeader, TargetMeta, check_name, decode_scores,
    decode_target_features, expect_header, inspect, read_target_meta, read_with,
};
use super::{Run, npy};
use crate::attribute::Scores;
use crate::error::{Error, Result};

impl Run {
    pub(super) fn target_meta(&self, name: &str) -> Result<TargetMeta> {
        check_name(name)?;
        let path = self.target_meta_path(name);
        if !path.exists() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: format!("no target set named {name:?}"),
            });
        }
        let (meta, _) = read_target_meta(&path)?;
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
            let file_name = entry.file_name();
            let name = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("targets-"))
                .filter(|n| check_name(n).is_ok() && self.target_meta_path(n).exists());
            if let Some(n) = name {
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
