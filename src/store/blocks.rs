//! Reading and writing one block of a checkpoint (features + Q, and the Gram partial under the
//! run's weighting), and the bit-for-bit check of a stored block against a recomputed or
//! imported row.

use ndarray::{Array1, Array2, ArrayView1, ArrayView2};

use super::Run;
use super::format::{FileKind, PayloadWriter, corrupt, open_payload};
use super::fsio::{read_bytes_into, write_atomic};
use super::records::{
    BlockHeader, FeatureBuf, GRAM_PARTIAL, decode_feature_block, expect_header, first_nonfinite,
    pack_upper,
};
use crate::error::{Error, Result};
use crate::kernel::gram_weighted;

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

    /// Reads and checks the Gram partial of block `b` under the run's weighting into `out`
    /// (packed), through `bytes`.
    pub(super) fn read_gram_block_into(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        bytes: &mut Vec<u8>,
        out: &mut Vec<f64>,
    ) -> Result<()> {
        let weighting = self.trak.weighting();
        let path = self.gram_path(checkpoint, b, weighting);
        read_bytes_into(&path, bytes)?;
        let want = self.block_header(checkpoint, b, dim);
        GRAM_PARTIAL.read((&path, bytes), (want, weighting), out)
    }

    /// Writes block `b`'s Gram partial Φ_bᵀW_bΦ_b under the run's weighting (w from Q, or
    /// from the curvature `r` for Gauss-Newton), the weights checked first
    /// ([`Error::BadKernelWeight`] names the training example).
    pub(super) fn write_partial(
        &self,
        checkpoint: u64,
        b: usize,
        phi: ArrayView2<'_, f32>,
        (q, r): (ArrayView1<'_, f32>, Option<ArrayView1<'_, f32>>),
    ) -> Result<()> {
        let weighting = self.trak.weighting();
        let start = self.block_range(b).start;
        let w = weighting.weights(q, r, (checkpoint, start))?;
        let w = w.as_ref().map(|w| w.as_slice().expect("contiguous"));
        let g = pack_upper(&gram_weighted(phi, w));
        let header = self.block_header(checkpoint, b, phi.ncols());
        let file = GRAM_PARTIAL.file(&header, weighting, g);
        write_atomic(&self.gram_path(checkpoint, b, weighting), &file)
    }

    /// Writes block `b` of a checkpoint: the Gram partial first, then the features, each
    /// atomically. The block counts as done once both exist.
    pub(super) fn write_block(
        &self,
        checkpoint: u64,
        b: usize,
        phi: ArrayView2<'_, f32>,
        (q, r): (ArrayView1<'_, f32>, Option<ArrayView1<'_, f32>>),
    ) -> Result<()> {
        self.write_partial(checkpoint, b, phi, (q, r))?;
        let header = self.block_header(checkpoint, b, phi.ncols());
        let mut w = PayloadWriter::with_capacity((phi.len() + q.len()) * 4 + 64);
        w.meta(&header)
            .f32s(phi.iter().copied())
            .f32s(q.iter().copied());
        write_atomic(
            &self.feat_path(checkpoint, b),
            &w.finish(FileKind::FeatureBlock),
        )
    }

    /// Writes the missing Gram partial of a block whose features are stored (the run's
    /// weighting changed since), from the stored Φ and Q and, for Gauss-Newton, the curvature
    /// `r` of its rows.
    pub(super) fn complete_partial(
        &self,
        checkpoint: u64,
        b: usize,
        dim: usize,
        r: Option<ArrayView1<'_, f32>>,
    ) -> Result<()> {
        let (phi, q) = self.read_feature_block(checkpoint, b, dim)?;
        self.write_partial(checkpoint, b, phi.view(), (q.view(), r))
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
