//! Where each file of a run lives, the block arithmetic, and listing what is on disk. The
//! layout itself is described once, in the [module documentation](super).

use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Run;
use super::format::{FileKind, corrupt};
use super::fsio::{io_err, is_temp_name};
use super::records::{CheckpointInfo, read_meta};
use crate::error::{Error, Result};
use crate::kernel::Weighting;

impl Run {
    /// The run record of the run in `dir`.
    pub(super) fn meta_path(dir: &Path) -> PathBuf {
        dir.join("run.trak")
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

    pub(super) fn ckpt_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{id}"))
    }
    pub(super) fn ckpt_meta_path(&self, id: u64) -> PathBuf {
        self.ckpt_dir(id).join("checkpoint.trak")
    }
    pub(super) fn feat_path(&self, id: u64, b: usize) -> PathBuf {
        self.ckpt_dir(id).join(format!("block-{b:06}.feat"))
    }
    /// Block `b`'s Gram partial under `weighting` (`block-<b>.gram` for plain TRAK).
    pub(super) fn gram_path(&self, id: u64, b: usize, weighting: Weighting) -> PathBuf {
        match weighting {
            Weighting::None => self.ckpt_dir(id).join(format!("block-{b:06}.gram")),
            w => self
                .ckpt_dir(id)
                .join(format!("block-{b:06}.{}.gram", w.tag())),
        }
    }
    /// The merged Gram matrix under `weighting` (`merged.trak` for plain TRAK).
    pub(super) fn merged_path(&self, id: u64, weighting: Weighting) -> PathBuf {
        match weighting {
            Weighting::None => self.ckpt_dir(id).join("merged.trak"),
            w => self.ckpt_dir(id).join(format!("merged-{}.trak", w.tag())),
        }
    }
    pub(super) fn targets_dir(&self, name: &str) -> PathBuf {
        self.dir.join(format!("targets-{name}"))
    }
    pub(super) fn target_meta_path(&self, name: &str) -> PathBuf {
        self.targets_dir(name).join("targets.trak")
    }
    pub(super) fn target_feat_path(&self, name: &str, id: u64) -> PathBuf {
        self.targets_dir(name).join(format!("ckpt-{id}.feat"))
    }
    pub(super) fn score_path(&self, name: &str, b: usize) -> PathBuf {
        self.targets_dir(name).join(format!("scores-{b:06}.trak"))
    }

    /// Ids of the checkpoints with stored features (complete or not), ascending.
    pub fn checkpoints(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| io_err(&self.dir, e))? {
            let entry = entry.map_err(|e| io_err(&self.dir, e))?;
            let name = entry.file_name();
            let id = name
                .to_str()
                .and_then(|n| n.strip_prefix("ckpt-"))
                .and_then(|n| n.parse::<u64>().ok());
            // (no let chain: they need Rust 1.88, the crate's MSRV is 1.85)
            if let Some(id) = id.filter(|&id| self.ckpt_meta_path(id).exists()) {
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

    /// Blocks of a checkpoint whose features and Gram partial under the run's weighting
    /// ([`Run::with_weighting`]) are both on disk.
    pub fn blocks_done(&self, checkpoint: u64) -> Result<Vec<usize>> {
        let w = self.trak.weighting();
        Ok((0..self.num_blocks())
            .filter(|&b| {
                self.feat_path(checkpoint, b).exists() && self.gram_path(checkpoint, b, w).exists()
            })
            .collect())
    }

    /// Every store file of the run (metadata, blocks, merged Gram matrices, target sets),
    /// sorted; temporary files are not listed.
    pub fn files(&self) -> Result<Vec<PathBuf>> {
        let mut out = vec![Self::meta_path(&self.dir)];
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
}
