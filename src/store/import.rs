//! Features computed elsewhere: declaring a checkpoint and importing its blocks.

use std::path::Path;

use ndarray::{ArrayView1, ArrayView2, s};

use super::records::{CheckpointInfo, Fingerprint, first_nonfinite};
use super::{Run, npy};
use crate::error::{Error, Result, invalid, shape_err};
use crate::kernel::Weighting;

impl Run {
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
            let value = format!("p = {params}, dim = {dim}");
            return Err(invalid(
                "declared checkpoint shape",
                value,
                "p ≥ 1 and dim ≥ 1",
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
    /// × feature dimension) and Q (one per row), computing its Gram partial under the run's
    /// weighting (imports carry no curvature: Gauss-Newton is
    /// [`Error::ImportedWithoutCurvature`]). A block already
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
        self.check_importable(checkpoint)?;
        if b >= self.num_blocks() {
            return Err(Error::OutOfRange {
                what: "block",
                index: b,
                len: self.num_blocks(),
            });
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
        self.write_block(checkpoint, b, features, (q, None))
    }

    /// Imports a whole declared checkpoint from `.npy` files: features (n × dim, float32)
    /// and Q (n, float32), e.g. written by `numpy.save`. Resumes an interrupted import (blocks
    /// on disk are kept once one of them is checked against the file).
    pub fn import_npy(&self, checkpoint: u64, features: &Path, q: &Path) -> Result<()> {
        self.check_importable(checkpoint)?;
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
        let dim = self.checkpoint_info(checkpoint)?.dim;
        let done = self.blocks_done(checkpoint)?;
        if let Some(&b) = done.first() {
            let start = self.block_range(b).start;
            let source = |row| {
                format!(
                    "checkpoint {checkpoint}: the stored block {b} differs from {} at row {row}",
                    features.display()
                )
            };
            self.check_first_row(checkpoint, b, dim, (phi.row(start), q[start]), &source)?;
        }
        for b in (0..self.num_blocks()).filter(|b| !done.contains(b)) {
            if self.feat_path(checkpoint, b).exists() {
                // Imported under another weighting: only the partial is missing.
                self.complete_partial(checkpoint, b, dim, None)?;
                continue;
            }
            let r = self.block_range(b);
            self.import_block(checkpoint, b, phi.slice(s![r.clone(), ..]), q.slice(s![r]))?;
        }
        Ok(())
    }

    /// [`Error::ImportedWithoutCurvature`] under the Gauss-Newton weighting: an imported
    /// checkpoint has no curvature for its Gram partials.
    pub(super) fn check_importable(&self, checkpoint: u64) -> Result<()> {
        match self.trak.weighting() {
            Weighting::GaussNewton => Err(Error::ImportedWithoutCurvature { checkpoint }),
            _ => Ok(()),
        }
    }
}
