//! Datasets: the example type of the built-in models and the vendored MNIST-5k loader.
//!
//! [`Sample`] (an input vector and a [`Target`]) is the example type of the built-in models
//! ([`crate::models`]). [`Dataset`] holds a design matrix and labels, loads the vendored
//! MNIST subset, and splits it reproducibly.

use std::io::{BufRead, BufReader};
use std::path::Path;

use ndarray::{Array2, Axis};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Path of the vendored MNIST-5k file inside this crate's source tree
/// (`data/mnist_5k.csv.gz`; see `data/README.md` for source and licence).
pub const MNIST_5K_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist_5k.csv.gz");

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

/// An in-memory classification dataset: inputs n × d (one row per example) and n labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    x: Array2<f32>,
    labels: Vec<usize>,
}

impl Dataset {
    /// Builds a dataset, checking that `x` has one row per label and only finite values.
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
        Ok(Self { x, labels })
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

    /// Loads the vendored 5,000-digit MNIST subset ([`MNIST_5K_PATH`]).
    pub fn mnist_5k() -> Result<Self> {
        Self::from_mnist_csv_gz(MNIST_5K_PATH)
    }

    /// Loads a gzip-compressed MNIST CSV: no header, 784 pixel columns (0–255) then the label
    /// (0–9) on each line. Pixels are scaled to `[0, 1]`.
    pub fn from_mnist_csv_gz(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io_err = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io_err)?;
        let reader = BufReader::new(flate2::read::GzDecoder::new(file));
        const PIXELS: usize = 784;
        let mut pixels: Vec<f32> = Vec::new();
        let mut labels = Vec::new();
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(io_err)?;
            let parse = |reason: String| Error::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            if line.trim().is_empty() {
                continue;
            }
            let mut count = 0usize;
            for field in line.trim().split(',') {
                let v: u32 = field.trim().parse().map_err(|_| {
                    parse(format!("field {} is not an integer: {field:?}", count + 1))
                })?;
                if count < PIXELS {
                    if v > 255 {
                        return Err(parse(format!("pixel {count} = {v} exceeds 255")));
                    }
                    pixels.push(v as f32 / 255.0);
                } else if count == PIXELS {
                    if v > 9 {
                        return Err(parse(format!("label {v} is not a digit")));
                    }
                    labels.push(v as usize);
                }
                count += 1;
            }
            if count != PIXELS + 1 {
                return Err(parse(format!(
                    "expected {} columns, found {count}",
                    PIXELS + 1
                )));
            }
        }
        if labels.is_empty() {
            return Err(Error::Parse {
                path: path.to_path_buf(),
                line: 0,
                reason: "no examples".into(),
            });
        }
        let x = Array2::from_shape_vec((labels.len(), PIXELS), pixels)
            .expect("row count checked while parsing");
        Ok(Self { x, labels })
    }

    /// Rows `idx` of this dataset, in that order.
    pub fn select(&self, idx: &[usize]) -> Result<Self> {
        if let Some(&bad) = idx.iter().find(|&&i| i >= self.len()) {
            return Err(Error::InvalidConfig(format!(
                "index {bad} out of range for a dataset of {} examples",
                self.len()
            )));
        }
        Ok(Self {
            x: self.x.select(Axis(0), idx),
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
        })
    }

    /// Shuffles the examples with `seed` (ChaCha8) and splits them into the first `n_first`
    /// and the rest. Same seed, same split, on every machine.
    pub fn split(&self, n_first: usize, seed: u64) -> Result<(Self, Self)> {
        if n_first > self.len() {
            return Err(Error::InvalidConfig(format!(
                "cannot take {n_first} examples from a dataset of {}",
                self.len()
            )));
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
