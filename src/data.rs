//! Datasets: the example type of the built-in models, an MNIST CSV reader and a synthetic
//! generator.
//!
//! [`Sample`] (an input vector and a [`Target`]) is the example type of the built-in models
//! ([`crate::models`]). [`Dataset`] holds a design matrix and labels, reads MNIST-format CSV
//! files, makes seeded Gaussian blobs for examples and tests, and splits reproducibly. (The
//! workspace's `trak-demo` crate embeds a 5,000-digit MNIST subset for the demos.)

use std::io::{BufRead, BufReader};
use std::path::Path;

use ndarray::{Array2, Axis};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What a model's output is compared against.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Target {
    /// A class index: `0..classes` for the multiclass margin, `0` or `1` for binary logistic.
    Class(usize),
    /// A real-valued regression target.
    Value(f32),
}

/// One example for the built-in models: an input vector and its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Input features (length = the model's input dimension).
    pub x: Vec<f32>,
    /// Label or regression target.
    pub target: Target,
}

/// An in-memory classification dataset: inputs n × d (one row per example), n labels, and the
/// class count when it is known.
///
/// What a dataset knows about its labels: a dataset made by [`Dataset::with_classes`], read
/// from MNIST (10 classes) or made by [`Dataset::blobs`] knows its class count and has checked
/// every label against it, naming the row. One made by [`Dataset::new`] does not know it
/// ([`Dataset::classes`] is `None`) and its labels are unchecked: the model checks each target
/// when it uses it, and every built-in path does, naming the example (the margin needs a
/// class below the model's output count, binary logistic 0 or 1, and [`crate::models::Sgd`]
/// checks the whole training set before its first step, [`Error::InvalidTarget`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    x: Array2<f32>,
    labels: Vec<usize>,
    classes: Option<usize>,
}

impl Dataset {
    /// Builds a dataset, checking that `x` has one row per label and only finite values.
    /// The labels are not checked against a class count (see [`Dataset`]); use
    /// [`Dataset::with_classes`] when you know it.
    pub fn new(x: Array2<f32>, labels: Vec<usize>) -> Result<Self> {
        if x.nrows() != labels.len() {
            return Err(crate::error::shape_err(
                "dataset rows vs labels",
                format!("{} rows", labels.len()),
                format!("{} rows", x.nrows()),
            ));
        }
        if let Some(index) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::NonFiniteInput {
                what: "dataset inputs",
                index,
            });
        }
        Ok(Self {
            x,
            labels,
            classes: None,
        })
    }

    /// [`Dataset::new`] for `classes` classes: also checks that `classes` ≥ 1 and that every
    /// label is below it ([`Error::InvalidTarget`] naming the first row that is not).
    pub fn with_classes(x: Array2<f32>, labels: Vec<usize>, classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(crate::error::invalid("class count", 0, "≥ 1"));
        }
        if let Some(row) = labels.iter().position(|&y| y >= classes) {
            return Err(Error::InvalidTarget {
                example: row,
                reason: format!(
                    "label {} is not a class of this dataset (classes 0..{classes})",
                    labels[row]
                ),
            });
        }
        Ok(Self {
            classes: Some(classes),
            ..Self::new(x, labels)?
        })
    }

    /// The class count, when the dataset knows it (see [`Dataset`]).
    pub fn classes(&self) -> Option<usize> {
        self.classes
    }

    /// Inputs, n × d, one row per example.
    pub fn x(&self) -> &Array2<f32> {
        &self.x
    }

    /// Class labels, one per example.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True if the dataset has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Input dimension d.
    pub fn dim(&self) -> usize {
        self.x.ncols()
    }

    /// Loads a gzip-compressed MNIST CSV file: no header, 784 pixel columns (0–255) then the
    /// label (0–9) on each line. Pixels are scaled to `[0, 1]`.
    pub fn from_mnist_csv_gz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::read_mnist_csv_gz(file, path)
    }

    /// [`Dataset::from_mnist_csv_gz`] from any reader (e.g. bytes embedded in a binary);
    /// `name` names the source in errors.
    pub fn read_mnist_csv_gz(reader: impl std::io::Read, name: &Path) -> Result<Self> {
        let reader = BufReader::new(gzip_stream(reader, name)?);
        let mut pixels: Vec<f32> = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|source| match source.kind() {
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof => {
                    Error::WrongFormat {
                        path: name.to_path_buf(),
                        format: MNIST_FORMAT,
                        reason: format!(
                            "the gzip stream is corrupt, truncated, or not UTF-8 text \
                             (near line {}: {source})",
                            i + 1
                        ),
                    }
                }
                _ => Error::Io {
                    path: name.to_path_buf(),
                    source,
                },
            })?;
            if line.trim().is_empty() {
                continue;
            }
            parse_mnist_line(&line, &mut pixels, &mut labels).map_err(|reason| Error::Parse {
                path: name.to_path_buf(),
                line: i + 1,
                reason,
            })?;
        }
        if labels.is_empty() {
            return Err(Error::Parse {
                path: name.to_path_buf(),
                line: 0,
                reason: "no examples".into(),
            });
        }
        let x = Array2::from_shape_vec((labels.len(), MNIST_PIXELS), pixels)
            .expect("row count checked while parsing");
        Ok(Self {
            x,
            labels,
            classes: Some(10),
        })
    }

    /// `n` points in `classes` Gaussian blobs in R^`dim`, seeded: class centres have i.i.d.
    /// N(0, 1) coordinates, points are their class centre plus N(0, 0.5²) noise, and labels
    /// cycle through the classes. For examples, tests and benchmarks that need data of a
    /// given shape; same seed, same data, on every machine.
    pub fn blobs(n: usize, dim: usize, classes: usize, seed: u64) -> Result<Self> {
        if n == 0 || dim == 0 || classes == 0 {
            let value = format!("n = {n}, dim = {dim}, classes = {classes}");
            return Err(crate::error::invalid("blob shape", value, "all ≥ 1"));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut normal = move || {
            // Box–Muller on two uniforms in (0, 1].
            let u1 = 1.0 - rng.random::<f64>();
            let u2: f64 = rng.random();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let centres: Vec<f32> = (0..classes * dim).map(|_| normal()).collect();
        let labels: Vec<usize> = (0..n).map(|i| i % classes).collect();
        let x = Array2::from_shape_fn((n, dim), |(i, j)| {
            centres[labels[i] * dim + j] + 0.5 * normal()
        });
        Ok(Self {
            x,
            labels,
            classes: Some(classes),
        })
    }

    /// Rows `idx` of this dataset, in that order.
    pub fn select(&self, idx: &[usize]) -> Result<Self> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::OutOfRange {
                what: "dataset row",
                index: bad,
                len: self.len(),
            });
        }
        Ok(Self {
            x: self.x.select(Axis(0), idx),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            classes: self.classes,
        })
    }

    /// Shuffles the examples with `seed` (ChaCha8) and splits them into the first `n_first`
    /// and the rest. Same seed, same split, on every machine.
    pub fn split(&self, n_first: usize, seed: u64) -> Result<(Self, Self)> {
        if n_first > self.len() {
            return Err(crate::error::invalid(
                "split size",
                n_first,
                format!("at most the dataset's {} examples", self.len()),
            ));
        }
        let mut perm: Vec<usize> = (0..self.len()).collect();
        perm.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        Ok((
            self.select(&perm[..n_first])?,
            self.select(&perm[n_first..])?,
        ))
    }

    /// The examples as [`Sample`]s with [`Target::Class`] targets (for the multiclass margin).
    pub fn samples(&self) -> Vec<Sample> {
        self.x
            .rows()
            .into_iter()
            .zip(&self.labels)
            .map(|(row, &y)| Sample {
                x: row.to_vec(),
                target: Target::Class(y),
            })
            .collect()
    }

    /// Binary samples: label `positive` becomes class 1, every other label class 0
    /// (for [`crate::output::Logistic`]).
    pub fn binary_samples(&self, positive: usize) -> Vec<Sample> {
        self.x
            .rows()
            .into_iter()
            .zip(&self.labels)
            .map(|(row, &y)| Sample {
                x: row.to_vec(),
                target: Target::Class(usize::from(y == positive)),
            })
            .collect()
    }
}

/// The format [`Dataset::read_mnist_csv_gz`] reads, as errors name it.
const MNIST_FORMAT: &str = "gzip-compressed MNIST CSV file";

/// A gzip decoder over `reader`, after checking that the stream starts with the gzip magic
/// bytes 1f 8b ([`Error::WrongFormat`] otherwise, showing the bytes found).
fn gzip_stream<R: std::io::Read>(mut reader: R, name: &Path) -> Result<impl std::io::Read> {
    let mut head = Vec::with_capacity(4);
    let mut start = std::io::Read::take(&mut reader, 4);
    std::io::Read::read_to_end(&mut start, &mut head).map_err(|source| {
        let path = name.to_path_buf();
        Error::Io { path, source }
    })?;
    if !head.starts_with(&[0x1f, 0x8b]) {
        let shown: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        let reason = match head.is_empty() {
            true => "the file is empty".to_string(),
            false => format!(
                "not a gzip stream: it starts with bytes {} (gzip starts with 1f 8b)",
                shown.join(" ")
            ),
        };
        return Err(Error::WrongFormat {
            path: name.to_path_buf(),
            format: MNIST_FORMAT,
            reason,
        });
    }
    let whole = std::io::Read::chain(std::io::Cursor::new(head), reader);
    Ok(flate2::read::GzDecoder::new(whole))
}

/// Pixels per MNIST image.
const MNIST_PIXELS: usize = 784;

/// Parses one MNIST CSV line (784 pixels, then the label) onto `pixels` and `labels`.
fn parse_mnist_line(
    line: &str,
    pixels: &mut Vec<f32>,
    labels: &mut Vec<usize>,
) -> std::result::Result<(), String> {
    let mut count = 0usize;
    for field in line.trim().split(',') {
        let v: u32 = field
            .trim()
            .parse()
            .map_err(|_| format!("field {} is not an integer: {field:?}", count + 1))?;
        if count < MNIST_PIXELS {
            if v > 255 {
                return Err(format!("pixel {count} = {v} exceeds 255"));
            }
            pixels.push(v as f32 / 255.0);
        } else if count == MNIST_PIXELS {
            if v > 9 {
                return Err(format!("label {v} is not a digit"));
            }
            labels.push(v as usize);
        }
        count += 1;
    }
    if count != MNIST_PIXELS + 1 {
        return Err(format!(
            "expected {} columns, found {count}",
            MNIST_PIXELS + 1
        ));
    }
    Ok(())
}
