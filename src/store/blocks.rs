//! Reading and writing one block of a checkpoint (features + Q, and the Gram partial), and the
//! bit-for-bit check of a stored block against a recomputed or imported row.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::Run;
use super::format::{FileKind, PayloadWriter, corrupt, open_payload};
use super::fsio::{read_bytes_into, write_atomic};
use super::records::{
    BlockHeader, FeatureBuf, decode_curvature, decode_feature_block, decode_gram_block,
    expect_header, first_nonfinite, pack_upper,
};
use crate::error::{Error, Result};
use crate::kernel::gram;

impl Run {
    pub(super) fn block_header(&self, checkpoint: u64, b: usize, dim: usize) -> BlockHeader {
        let r = self.block_range(b);
        BlockHeader {
            checkpoint,
            block: b,
            start: r.start,
            rows: r.len(),
            dim,
        }
    }

    pub(super) fn read_feature_block(
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
    pub(super) fn read_feature_block_into(
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
    pub(super) fn read_gram_block_into(
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

    /// Writes the curvature r of block `b`'s rows (for the Gauss-Newton weighting).
    pub(super) fn write_curvature(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        r: ArrayView1<'_, f32>,
    ) -> Result<()> {
        let header = self.block_header(checkpoint, b, dim);
        let mut w = PayloadWriter::with_capacity(r.len() * 4 + 64);
        w.meta(&header).f32s(r.iter().copied());
        write_atomic(
            &self.curv_path(checkpoint, b),
            &w.finish(FileKind::CurvatureBlock),
        )
    }

    /// Reads and checks the curvature of block `b` into `out`, through `bytes`;
    /// [`Error::Incomplete`] if the block has none (featurised without
    /// [`crate::Weighting::GaussNewton`], or imported).
    pub(super) fn read_curvature_into(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        bytes: &mut Vec<u8>,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let path = self.curv_path(checkpoint, b);
        if !path.exists() {
            return Err(Error::Incomplete {
                path: self.dir.clone(),
                what: format!(
                    "checkpoint {checkpoint}, block {b} has no stored curvature (the \
                     Gauss-Newton weighting needs it: featurise the checkpoint with \
                     Weighting::GaussNewton; imported features have none)"
                ),
            });
        }
        read_bytes_into(&path, bytes)?;
        let mut r = open_payload(&path, bytes, FileKind::CurvatureBlock)?;
        let h = decode_curvature(&mut r, out)?;
        r.finish()?;
        expect_header(&path, &h, &self.block_header(checkpoint, b, dim))
    }

    /// Writes block `b` of a checkpoint: the Gram partial first, then the features, each
    /// atomically. The block counts as done once its feature file exists.
    pub(super) fn write_block(
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

    /// Checks that row `start` of the training set, as stored (the first row of block `b`),
    /// equals `row` and `q` bit for bit; otherwise [`Error::RunMismatch`] saying that the
    /// data (from `source`) is not what the run holds. Used when featurisation or an import
    /// resumes.
    pub(super) fn check_first_row(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        (row, q): (ArrayView1<'_, f32>, f32),
        source: &dyn Fn(usize) -> String,
    ) -> Result<()> {
        let (stored, stored_q) = self.read_feature_block(checkpoint, b, dim)?;
        let same = row.len() == dim
            && stored
                .row(0)
                .iter()
                .zip(row)
                .all(|(a, b)| a.to_bits() == b.to_bits())
            && stored_q[0].to_bits() == q.to_bits();
        if same {
            return Ok(());
        }
        Err(Error::RunMismatch {
            path: self.feat_path(checkpoint, b),
            what: source(self.block_range(b).start),
        })
    }
}
