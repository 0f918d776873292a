//! The on-disk envelope shared by every file of a run.
//!
//! ```text
//! offset  size  field
//! 0       8     magic  b"TRAKRUN\0"
//! 8       4     format version (u32 LE)
//! 12      4     file kind (u32 LE)
//! 16      8     payload length L (u64 LE)
//! 24      L     payload: a bincode-encoded header, then raw little-endian arrays
//! 24+L    8     xxh3-64 of bytes 0 .. 24+L (u64 LE)
//! ```
//!
//! The checksum covers every byte before it, and is checked before anything else is parsed:
//! any flipped byte anywhere in a file, including in the magic, the length or the checksum
//! itself, is reported as [`Error::Checksum`] naming the file. Only then are the magic, version,
//! kind and length validated, and the payload decoded with explicit bounds checks: readers
//! never allocate more than the file's own length and never panic on arbitrary bytes.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// First 8 bytes of every store file.
pub const MAGIC: [u8; 8] = *b"TRAKRUN\0";
/// The store format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 24;
const TRAILER: usize = 8;
/// Largest bincode-encoded header (metadata) accepted when decoding.
const META_LIMIT: usize = 1 << 20;

/// What a store file holds; recorded in its envelope and checked on reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum FileKind {
    RunMeta = 1,
    CheckpointMeta = 2,
    FeatureBlock = 3,
    GramBlock = 4,
    Merged = 5,
    TargetMeta = 6,
    TargetFeatures = 7,
    ScoreBlock = 8,
    WeightedGramBlock = 9,
    WeightedMerged = 10,
    WeightedTargetMeta = 11,
}

impl FileKind {
    /// Every kind, in code order.
    const ALL: [FileKind; 11] = [
        FileKind::RunMeta,
        FileKind::CheckpointMeta,
        FileKind::FeatureBlock,
        FileKind::GramBlock,
        FileKind::Merged,
        FileKind::TargetMeta,
        FileKind::TargetFeatures,
        FileKind::ScoreBlock,
        FileKind::WeightedGramBlock,
        FileKind::WeightedMerged,
        FileKind::WeightedTargetMeta,
    ];

    /// The kind a file's header names, if any (read without checking the file).
    pub(crate) fn of_bytes(bytes: &[u8]) -> Option<FileKind> {
        let code = u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?);
        Self::ALL.into_iter().find(|k| *k as u32 == code)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            FileKind::RunMeta => "run metadata",
            FileKind::CheckpointMeta => "checkpoint metadata",
            FileKind::FeatureBlock => "feature block",
            FileKind::GramBlock => "Gram block",
            FileKind::Merged => "merged checkpoint",
            FileKind::TargetMeta => "target-set metadata",
            FileKind::TargetFeatures => "target features",
            FileKind::ScoreBlock => "score block",
            FileKind::WeightedGramBlock => "weighted Gram block",
            FileKind::WeightedMerged => "weighted merged checkpoint",
            FileKind::WeightedTargetMeta => "weighted target-set metadata",
        }
    }
}

pub(crate) fn corrupt(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_fixed_int_encoding()
        .with_limit::<META_LIMIT>()
}

/// Builds a file: the envelope's header is reserved up front and filled in by
/// [`PayloadWriter::finish`], so the payload is never copied.
pub(crate) struct PayloadWriter {
    buf: Vec<u8>,
}

impl Default for PayloadWriter {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl PayloadWriter {
    /// A writer for about `bytes` payload bytes.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER + bytes + TRAILER);
        buf.resize(HEADER, 0);
        Self { buf }
    }

    pub(crate) fn meta<T: Serialize>(&mut self, value: &T) -> &mut Self {
        bincode::serde::encode_into_std_write(value, &mut self.buf, bincode_config())
            .expect("encoding plain metadata into a Vec cannot fail");
        self
    }

    pub(crate) fn f32s(&mut self, values: impl IntoIterator<Item = f32>) -> &mut Self {
        for v in values {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    pub(crate) fn f64s(&mut self, values: impl IntoIterator<Item = f64>) -> &mut Self {
        for v in values {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        self
    }

    /// The complete file: envelope around the payload.
    pub(crate) fn finish(self, kind: FileKind) -> Vec<u8> {
        seal(self.buf, kind as u32)
    }
}

/// Fills the reserved header of `buf` (24 bytes, then the payload) for kind code `kind` and
/// appends the checksum: the one place where the envelope is written.
fn seal(mut buf: Vec<u8>, kind: u32) -> Vec<u8> {
    let payload = (buf.len() - HEADER) as u64;
    buf[..8].copy_from_slice(&MAGIC);
    buf[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf[12..16].copy_from_slice(&kind.to_le_bytes());
    buf[16..24].copy_from_slice(&payload.to_le_bytes());
    let sum = xxhash_rust::xxh3::xxh3_64(&buf);
    buf.extend_from_slice(&sum.to_le_bytes());
    buf
}

/// `payload` in a valid envelope of any kind code (valid or not), for tests of the decoders.
pub(crate) fn seal_raw(kind: u32, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    buf.resize(HEADER, 0);
    buf.extend_from_slice(payload);
    seal(buf, kind)
}

/// Reads a payload with bounds checks; every failure is [`Error::Corrupt`] naming the file.
pub(crate) struct PayloadReader<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> PayloadReader<'a> {
    pub(crate) fn meta<T: DeserializeOwned>(&mut self, what: &str) -> Result<T> {
        let rest = &self.bytes[self.pos..];
        let (v, used): (T, usize) = bincode::serde::decode_from_slice(rest, bincode_config())
            .map_err(|e| corrupt(self.path, format!("cannot decode the {what}: {e}")))?;
        self.pos += used;
        Ok(v)
    }

    fn take(&mut self, count: usize, width: usize, what: &str) -> Result<&'a [u8]> {
        let len = count
            .checked_mul(width)
            .filter(|&l| l <= self.bytes.len() - self.pos)
            .ok_or_else(|| {
                corrupt(
                    self.path,
                    format!(
                        "{what}: {count} values do not fit in the {} payload bytes left",
                        self.bytes.len() - self.pos
                    ),
                )
            })?;
        let out = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        Ok(out)
    }

    pub(crate) fn f32s(&mut self, count: usize, what: &str) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.f32s_into(count, what, &mut out)?;
        Ok(out)
    }

    /// Decodes `count` f32 values into `out` (cleared first; its allocation is reused).
    pub(crate) fn f32s_into(&mut self, count: usize, what: &str, out: &mut Vec<f32>) -> Result<()> {
        let bytes = self.take(count, 4, what)?;
        out.clear();
        out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        );
        Ok(())
    }

    /// Decodes `count` f64 values into `out` (cleared first; its allocation is reused).
    pub(crate) fn f64s_into(&mut self, count: usize, what: &str, out: &mut Vec<f64>) -> Result<()> {
        let bytes = self.take(count, 8, what)?;
        out.clear();
        out.extend(
            bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks of 8"))),
        );
        Ok(())
    }

    /// Fails unless the whole payload was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        let left = self.bytes.len() - self.pos;
        if left != 0 {
            return Err(corrupt(
                self.path,
                format!("{left} unexpected bytes after the payload"),
            ));
        }
        Ok(())
    }
}

/// Checks the envelope of `bytes` (read from `path`) and returns a reader over its payload.
pub(crate) fn open_payload<'a>(
    path: &'a Path,
    bytes: &'a [u8],
    kind: FileKind,
) -> Result<PayloadReader<'a>> {
    if bytes.len() < HEADER + TRAILER {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
        });
    }
    let body = bytes.len() - TRAILER;
    let stored = u64::from_le_bytes(bytes[body..].try_into().expect("8 bytes"));
    if xxhash_rust::xxh3::xxh3_64(&bytes[..body]) != stored {
        return Err(Error::Checksum {
            path: path.to_path_buf(),
        });
    }
    if bytes[..8] != MAGIC {
        return Err(corrupt(path, "not a trak store file (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(Error::FormatVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let found = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
    if found != kind as u32 {
        return Err(corrupt(
            path,
            format!("expected a {} file, found file kind {found}", kind.name()),
        ));
    }
    let len = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes"));
    if len != (body - HEADER) as u64 {
        return Err(corrupt(
            path,
            format!(
                "header says {len} payload bytes, the file holds {}",
                body - HEADER
            ),
        ));
    }
    Ok(PayloadReader {
        path,
        bytes: &bytes[HEADER..body],
        pos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trip_and_every_flip_detected() {
        let mut w = PayloadWriter::default();
        w.meta(&(7u64, "abc".to_string())).f32s([1.5, -2.0]);
        let bytes = w.finish(FileKind::FeatureBlock);
        let p = Path::new("x");
        let mut r = open_payload(p, &bytes, FileKind::FeatureBlock).unwrap();
        let m: (u64, String) = r.meta("header").unwrap();
        assert_eq!(m, (7, "abc".into()));
        assert_eq!(r.f32s(2, "values").unwrap(), vec![1.5, -2.0]);
        r.finish().unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(matches!(
                open_payload(p, &b, FileKind::FeatureBlock),
                Err(Error::Checksum { .. })
            ));
        }
        assert!(matches!(
            open_payload(p, &bytes, FileKind::GramBlock),
            Err(Error::Corrupt { .. })
        ));
    }
}
