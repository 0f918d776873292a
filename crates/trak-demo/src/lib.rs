//! # trak-demo — the demos and validation protocols of the `trak` workspace
//!
//! Everything the examples, benchmarks and validation runs need that a user of the `trak`
//! library does not: the embedded MNIST-5k digits, the model zoo and its training settings,
//! the LDS and removal protocols with their cache of retrained-model margins, command-line
//! parsing, the GEMM yardstick, and pictures. Not published (`publish = false`).
//!
//! - [`mnist_5k`]: the 5,000 digits, embedded in the binary (they load wherever it runs).
//! - [`family`]: the built-in model families (logistic regression, MLP) and their SGD.
//! - [`protocol`]: the LDS protocol ([`protocol::BenchConfig`], [`protocol::run`]).
//! - [`truth`]: the counterfactual ground truth (subset models' margins, cached).
//! - [`removal`]: the removal test.
//! - [`metagrad`]: the metagradient protocol (two truths, drop fractions, TRAK beside).
//! - [`cli`]: the options the examples share.
//! - [`cluster`]: the cluster recipe's program (prepare, featurize, merge, score a stored run).
//! - [`yardstick`]: the machine's GEMM rate, measured in the same run as a benchmark.
//! - [`pictures`]: PNG scatter plots and top-proponent grids.
//!
//! ```
//! let digits = trak_demo::mnist_5k()?;
//! assert_eq!((digits.len(), digits.dim()), (5000, 784));
//! let (train, test) = digits.split(4000, 0)?; // seeded shuffle, then split
//! assert_eq!((train.len(), test.len()), (4000, 1000));
//! # Ok::<(), trak::Error>(())
//! ```
#![warn(missing_docs)]

pub mod cli;
pub mod cluster;
pub mod family;
pub mod finite_diff;
pub mod metagrad;
pub mod pictures;
pub mod protocol;
pub mod removal;
pub mod truth;
pub mod yardstick;

use trak::data::Dataset;

/// The MNIST-5k file (`data/mnist_5k.csv.gz`: source, licence and checksum in
/// `data/README.md`), compiled into the binary.
static MNIST_5K: &[u8] = include_bytes!("../data/mnist_5k.csv.gz");

/// The 5,000 MNIST digits (500 per class, sorted by label; pixels scaled to [0, 1]), decoded
/// from the copy embedded in the binary.
pub fn mnist_5k() -> trak::Result<Dataset> {
    Dataset::read_mnist_csv_gz(MNIST_5K, std::path::Path::new("<embedded mnist_5k.csv.gz>"))
}

/// A seeded split of MNIST-5k: the first `n_train` of a shuffle are the training set, the next
/// `n_targets` the targets (never trained on). Returns (training set, target set).
pub fn mnist_split(
    n_train: usize,
    n_targets: usize,
    seed: u64,
) -> trak::Result<(Dataset, Dataset)> {
    let data = mnist_5k()?;
    if n_train + n_targets > data.len() {
        return Err(trak::Error::InvalidParameter {
            parameter: "training + target examples",
            value: format!("{n_train} + {n_targets}"),
            expected: format!("at most the {} digits", data.len()),
        });
    }
    let (train, rest) = data.split(n_train, seed)?;
    let targets = rest.select(&(0..n_targets).collect::<Vec<_>>())?;
    Ok((train, targets))
}
