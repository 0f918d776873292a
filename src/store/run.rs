//! [`Run`]: creating and opening a run directory, and its configuration.

use std::fs;
use std::path::{Path, PathBuf};

use super::format::{FileKind, corrupt};
use super::fsio::{create_exclusive, io_err};
use super::records::{Diffs, RunMeta, meta_file, read_meta};
use crate::attribute::Trak;
use crate::error::{Error, Result, invalid};
use crate::kernel::{Ridge, Weighting};

/// Default rows per block.
pub const DEFAULT_BLOCK_ROWS: usize = 4096;

/// One attribution run stored in a directory. See the [module documentation](super).
#[derive(Debug, Clone)]
pub struct Run {
    pub(super) dir: PathBuf,
    pub(super) trak: Trak,
    pub(super) meta: RunMeta,
}

impl Run {
    /// Creates the run in `dir` (and the directory), or opens it if it exists with the same
    /// configuration: projector kind, k, seed, `n` and `block_rows` must all match
    /// ([`Error::RunMismatch`] names the ones that differ). Safe to call from every shard at
    /// once. The ridge and batch size of `trak` are not part of the stored identity (they do
    /// not change stored features); the ridge is used when scoring. Nor is the kernel
    /// weighting (see [`Run::with_weighting`]). A `dir` that exists as a file is
    /// [`Error::NotADirectory`].
    pub fn create(dir: impl AsRef<Path>, trak: &Trak, n: usize, block_rows: usize) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        if n == 0 {
            return Err(Error::Empty("training set"));
        }
        if block_rows == 0 {
            return Err(invalid("block rows", 0, "≥ 1"));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory { path: dir });
        }
        fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        let meta = RunMeta {
            projector: trak.projector(),
            proj_dim: trak.proj_dim(),
            seed: trak.seed(),
            n,
            block_rows,
        };
        let path = Self::meta_path(&dir);
        if !create_exclusive(&path, &meta_file(FileKind::RunMeta, &meta))? {
            let stored: RunMeta = read_meta(&path, FileKind::RunMeta)?;
            let mut diffs = Diffs::default();
            diffs.check("projector", &stored.projector, &meta.projector);
            diffs.check("projection dimension k", &stored.proj_dim, &meta.proj_dim);
            diffs.check("projection seed", &stored.seed, &meta.seed);
            diffs.check("training set size n", &stored.n, &meta.n);
            diffs.check("block rows", &stored.block_rows, &meta.block_rows);
            if !diffs.0.is_empty() {
                let what = diffs.0.join("; ");
                return Err(Error::RunMismatch { path, what });
            }
        }
        let trak = trak.clone();
        Ok(Run { dir, trak, meta })
    }

    /// Opens an existing run; its configuration is read from disk, with the default ridge,
    /// kernel weighting and batch size (change them with [`Run::with_ridge`] and
    /// [`Run::with_weighting`]).
    pub fn open(dir: impl AsRef<Path>) -> Result<Run> {
        let dir = dir.as_ref().to_path_buf();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory { path: dir });
        }
        let path = Self::meta_path(&dir);
        let meta: RunMeta = read_meta(&path, FileKind::RunMeta)?;
        let trak = Trak::builder()
            .projector(meta.projector)
            .proj_dim(meta.proj_dim)
            .seed(meta.seed)
            .build()
            .map_err(|e| corrupt(&path, format!("stored configuration: {e}")))?;
        if meta.n == 0 || meta.block_rows == 0 {
            return Err(corrupt(&path, "n and block rows must be positive"));
        }
        Ok(Run { dir, trak, meta })
    }

    /// The same run, scored with another ridge rule.
    pub fn with_ridge(mut self, ridge: Ridge) -> Result<Run> {
        self.trak = self.trak.with_ridge(ridge)?;
        Ok(self)
    }

    /// The same run under another kernel weighting. The weighting is not part of the stored
    /// identity: [`Run::featurize`] writes each block's Gram partial Φ_bᵀW_bΦ_b under it (only
    /// the partial, from the stored features, for blocks featurised under another weighting),
    /// [`Run::merge`] adds them in block order, and [`Run::score`] solves with the sum. A
    /// target set records the weighting it was scored with (a run written before weightings
    /// existed holds plain ones), so resuming it under another is [`Error::RunMismatch`],
    /// never silently different scores.
    pub fn with_weighting(mut self, weighting: Weighting) -> Run {
        self.trak = self.trak.with_weighting(weighting);
        self
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration (projector, k and seed as stored; ridge, weighting and batch size as
    /// given).
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
}
