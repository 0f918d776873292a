//! The records of a run (one type per kind of file), their decoders, and the checks shared by
//! every reader: [`inspect`], header-against-place, name and finiteness checks.

use std::path::Path;

use ndarray::{Array2, ArrayView2, s};
use serde::{Deserialize, Serialize};

use super::format::{self, FileKind, PayloadReader, PayloadWriter, corrupt, open_payload};
use super::fsio::read_bytes;
use crate::error::{Result, invalid};
use crate::kernel::{Ridge, Weighting};
use crate::project::ProjectorKind;

/// The run's identity: everything that determines the stored training features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct RunMeta {
    pub(super) projector: ProjectorKind,
    pub(super) proj_dim: usize,
    pub(super) seed: u64,
    pub(super) n: usize,
    pub(super) block_rows: usize,
}

/// How a checkpoint's model was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fingerprint {
    /// [`crate::Model::fingerprint`] (a hash of the parameters).
    Params(u64),
    /// xxh3-64 of the output gradient and Q at the first training example (models without
    /// [`crate::Model::fingerprint`]).
    GradientProbe(u64),
    /// Given by the caller of [`Run::declare_checkpoint`](super::Run::declare_checkpoint) (imported features).
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
pub(super) struct BlockHeader {
    pub(super) checkpoint: u64,
    pub(super) block: usize,
    pub(super) start: usize,
    pub(super) rows: usize,
    pub(super) dim: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct MergedHeader {
    pub(super) checkpoint: u64,
    pub(super) n: usize,
    pub(super) dim: usize,
    pub(super) blocks: usize,
}

/// Headers of packed symmetric matrices (Gram partials, merged Gram matrices): their
/// dimension.
pub(super) trait PackedHeader:
    Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug
{
    fn dim(&self) -> usize;
}

impl PackedHeader for BlockHeader {
    fn dim(&self) -> usize {
        self.dim
    }
}

impl PackedHeader for MergedHeader {
    fn dim(&self) -> usize {
        self.dim
    }
}

/// The two file kinds of a packed symmetric matrix that exists once per kernel weighting:
/// plain TRAK keeps the format that predates weightings (kind `plain`, the header alone), a
/// weighting has kind `weighted` and the header `(header, weighting)`.
#[derive(Debug, Clone, Copy)]
pub(super) struct PackedKinds {
    plain: FileKind,
    weighted: FileKind,
}

/// A block's Gram partial Φ_bᵀW_bΦ_b.
pub(super) const GRAM_PARTIAL: PackedKinds = PackedKinds {
    plain: FileKind::GramBlock,
    weighted: FileKind::WeightedGramBlock,
};

/// A checkpoint's merged Gram matrix ΦᵀWΦ.
pub(super) const MERGED_GRAM: PackedKinds = PackedKinds {
    plain: FileKind::Merged,
    weighted: FileKind::WeightedMerged,
};

impl PackedKinds {
    /// The file of `packed` (an upper triangle) with `header`, under `weighting`.
    pub(super) fn file<H: PackedHeader>(
        self,
        header: &H,
        weighting: Weighting,
        packed: Vec<f64>,
    ) -> Vec<u8> {
        let mut w = PayloadWriter::with_capacity(packed.len() * 8 + 64);
        let kind = match weighting {
            Weighting::None => {
                w.meta(header);
                self.plain
            }
            weighted => {
                w.meta(&(header, weighted));
                self.weighted
            }
        };
        w.f64s(packed);
        w.finish(kind)
    }

    /// Decodes `bytes` (the file at `path`) into `out` and checks that its header is `want`
    /// under `weighting`.
    pub(super) fn read<H: PackedHeader>(
        self,
        (path, bytes): (&Path, &[u8]),
        (want, weighting): (H, Weighting),
        out: &mut Vec<f64>,
    ) -> Result<()> {
        let weighted = weighting != Weighting::None;
        let kind = if weighted { self.weighted } else { self.plain };
        let mut r = open_payload(path, bytes, kind)?;
        let got = decode_packed_under::<H>(path, &mut r, weighted, out)?;
        r.finish()?;
        expect_header(path, &got, &(want, weighting))
    }
}

/// Decodes a packed matrix's header (with its weighting when `weighted`, else plain) and its
/// upper triangle into `out`.
pub(super) fn decode_packed_under<H: PackedHeader>(
    path: &Path,
    r: &mut PayloadReader<'_>,
    weighted: bool,
    out: &mut Vec<f64>,
) -> Result<(H, Weighting)> {
    if weighted {
        decode_packed(path, r, "Gram matrix", |h: &(H, Weighting)| h.0.dim(), out)
    } else {
        let h = decode_packed(path, r, "Gram matrix", |h: &H| h.dim(), out)?;
        Ok((h, Weighting::None))
    }
}

/// A target set's record. Plain target sets are stored as this record alone (kind
/// `TargetMeta`, as before weightings existed); weighted ones as `(TargetMeta, Weighting)`
/// (kind `WeightedTargetMeta`), so a record without a weighting is plain TRAK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct TargetMeta {
    pub(super) name: String,
    pub(super) m: usize,
    pub(super) checkpoints: Vec<u64>,
    pub(super) dims: Vec<usize>,
    pub(super) ridge: Ridge,
    pub(super) lambdas: Vec<f64>,
    pub(super) targets_hash: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct TargetFeaturesHeader {
    pub(super) checkpoint: u64,
    pub(super) m: usize,
    pub(super) dim: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ScoreHeader {
    pub(super) block: usize,
    pub(super) start: usize,
    pub(super) rows: usize,
    pub(super) m: usize,
}

/// Reusable buffers for a decoded feature block: Φ rows and Q.
#[derive(Default)]
pub(super) struct FeatureBuf {
    pub(super) phi: Vec<f32>,
    pub(super) q: Vec<f32>,
}

impl FeatureBuf {
    pub(super) fn phi(&self, dim: usize) -> ArrayView2<'_, f32> {
        ArrayView2::from_shape((self.q.len(), dim), &self.phi).expect("checked shape")
    }
}

pub(super) fn packed_len(k: usize) -> usize {
    k * (k + 1) / 2
}

pub(super) fn pack_upper(g: &Array2<f64>) -> Vec<f64> {
    let k = g.nrows();
    let mut out = Vec::with_capacity(packed_len(k));
    for i in 0..k {
        out.extend(g.slice(s![i, i..]).iter().copied());
    }
    out
}

pub(super) fn unpack_upper(packed: &[f64], k: usize) -> Array2<f64> {
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
pub(super) fn read_with<T>(
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

pub(super) fn read_meta<T: serde::de::DeserializeOwned>(path: &Path, kind: FileKind) -> Result<T> {
    read_with(path, kind, |r| r.meta("metadata"))
}

pub(super) fn meta_file<T: Serialize>(kind: FileKind, value: &T) -> Vec<u8> {
    let mut w = PayloadWriter::default();
    w.meta(value);
    w.finish(kind)
}

/// A target set's record file: kind `TargetMeta` for plain TRAK (the format that predates
/// weightings), `WeightedTargetMeta` otherwise.
pub(super) fn target_meta_file(meta: &TargetMeta, weighting: Weighting) -> Vec<u8> {
    match weighting {
        Weighting::None => meta_file(FileKind::TargetMeta, meta),
        w => meta_file(FileKind::WeightedTargetMeta, &(meta, w)),
    }
}

/// Reads a target set's record of either kind: (record, weighting).
pub(super) fn read_target_meta(path: &Path) -> Result<(TargetMeta, Weighting)> {
    let bytes = read_bytes(path)?;
    let kind = match FileKind::of_bytes(&bytes) {
        Some(FileKind::WeightedTargetMeta) => FileKind::WeightedTargetMeta,
        _ => FileKind::TargetMeta,
    };
    let mut r = open_payload(path, &bytes, kind)?;
    let v = if kind == FileKind::TargetMeta {
        (r.meta("metadata")?, Weighting::None)
    } else {
        r.meta("metadata")?
    };
    r.finish()?;
    Ok(v)
}

/// Decodes a header, then the row-major f32 matrix whose shape the header gives.
pub(super) fn decode_rows<H: serde::de::DeserializeOwned>(
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
pub(super) fn decode_packed<H: serde::de::DeserializeOwned>(
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
pub(super) fn decode_feature_block(
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

pub(super) fn decode_target_features(
    path: &Path,
    r: &mut PayloadReader<'_>,
) -> Result<(TargetFeaturesHeader, Array2<f32>)> {
    decode_rows(path, r, "target features", |h: &TargetFeaturesHeader| {
        (h.m, h.dim)
    })
}

pub(super) fn decode_scores(
    path: &Path,
    r: &mut PayloadReader<'_>,
) -> Result<(ScoreHeader, Array2<f32>)> {
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
/// bytes; used by [`Run::verify`](super::Run::verify) and by the fuzz tests.
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
        FileKind::GramBlock | FileKind::WeightedGramBlock => {
            let weighted = kind == FileKind::WeightedGramBlock;
            decode_packed_under::<BlockHeader>(path, &mut r, weighted, &mut Vec::new())?;
        }
        FileKind::Merged | FileKind::WeightedMerged => {
            let weighted = kind == FileKind::WeightedMerged;
            decode_packed_under::<MergedHeader>(path, &mut r, weighted, &mut Vec::new())?;
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
        FileKind::WeightedTargetMeta => {
            r.meta::<(TargetMeta, Weighting)>("metadata")?;
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
pub(super) struct Diffs(pub(super) Vec<String>);

impl Diffs {
    pub(super) fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        stored: &T,
        now: &T,
    ) {
        if stored != now {
            self.0
                .push(format!("{what}: stored {stored:?}, requested {now:?}"));
        }
    }
}

/// A decoded header must say what the reader expects at this place in the run (a file
/// renamed or copied to the wrong place is caught here).
pub(super) fn expect_header<H: PartialEq + std::fmt::Debug>(
    path: &Path,
    got: &H,
    want: &H,
) -> Result<()> {
    if got != want {
        return Err(corrupt(
            path,
            format!("header {got:?} does not match its place in the run ({want:?})"),
        ));
    }
    Ok(())
}

pub(super) fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(invalid(
            "target-set name",
            format!("{name:?}"),
            "1–64 characters of [A-Za-z0-9_-]",
        ));
    }
    Ok(())
}

pub(super) fn first_nonfinite(v: impl IntoIterator<Item = f32>) -> Option<usize> {
    v.into_iter().position(|x| !x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs written by trak 0.1 stored `ProjectorKind::Factored` as variant 4 (then the small
    /// plan); it must still decode as the small plan, and the sketched plan must be another
    /// variant that carries its expansion.
    #[test]
    fn projector_kinds_keep_their_stored_codes() {
        let code = |projector| {
            let meta = RunMeta {
                projector,
                proj_dim: 8,
                seed: 1,
                n: 2,
                block_rows: 2,
            };
            let file = meta_file(FileKind::RunMeta, &meta);
            let payload = &file[24..file.len() - 8];
            let variant = u32::from_le_bytes(payload[..4].try_into().unwrap());
            let back: RunMeta = read_meta_bytes(&file);
            assert_eq!(back, meta);
            (variant, payload.len())
        };
        assert_eq!(code(ProjectorKind::Rademacher).0, 0);
        assert_eq!(code(ProjectorKind::FactoredSmall), (4, 4 + 32));
        assert_eq!(code(ProjectorKind::FACTORED), (5, 4 + 8 + 32));
    }

    fn read_meta_bytes(file: &[u8]) -> RunMeta {
        let mut r = open_payload(Path::new("mem"), file, FileKind::RunMeta).unwrap();
        r.meta("metadata").unwrap()
    }
}
