//! The cluster recipe's program: one stored attribution run, in the subcommands that a SLURM
//! job array and its dependent job call on a work directory on shared storage
//! (`examples/cluster.rs`, `scripts/slurm/`, docs/SCALING.md).
//!
//! The problem: 784-32-10 MLPs (`checkpoints` of them, 2 epochs from different seeds) on
//! `train` shifted MNIST digits (the 4,000 training digits of a seeded split and their
//! one-pixel shifts up, down, left and right: 20,000 examples), 100 held-out targets, dense
//! Rademacher projection to k = 512, blocks of 500 rows.
//!
//! ```text
//! <work>/problem.bin   training set, targets and checkpoints (written by `prepare`)
//! <work>/run/          the trak::store::Run
//! ```
//!
//! - [`prepare`]: build and save the [`Problem`], create the run (once, before submitting);
//! - [`featurize`]: one shard of every checkpoint (an array task), resumable;
//! - [`merge`]: check that every block of every checkpoint is there and add the partials;
//! - [`score`]: score the targets into target set [`TARGET_SET`].
//!
//! [`main`] parses the subcommands and prints one grep-able line per step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::data::{Dataset, Sample};
use trak::models::{Mlp, Sgd};
use trak::output::Margin;
use trak::store::{
    FeaturizeOptions, FeaturizeReport, MergeOptions, Run, ScoreOptions, ScoreReport, Shard,
    write_atomic,
};
use trak::{Error, Result, Trak};

use crate::cli::Args;

/// Rows per block of the run.
pub const BLOCK_ROWS: usize = 500;
/// The name of the scored target set.
pub const TARGET_SET: &str = "test";
/// Held-out target digits.
const TARGETS: usize = 100;
/// Training digits before the shifts (each appears 5 times: as is and shifted 4 ways).
const DIGITS: usize = 4000;

/// The size of the problem: training examples (at most 20,000) and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    /// Training examples: the first `train` of the shifted digits.
    pub train: usize,
    /// Checkpoints (models trained from seeds 0, 1, …).
    pub checkpoints: usize,
}

impl Size {
    /// The recipe's test size: 20,000 examples, 2 checkpoints.
    pub const FULL: Size = Size {
        train: 5 * DIGITS,
        checkpoints: 2,
    };
}

/// Training set, targets and checkpoints, as every process of the run loads them.
#[derive(Serialize, Deserialize)]
pub struct Problem {
    /// What was built.
    pub size: Size,
    /// The training set, in the order every task passes it.
    pub train: Vec<Sample>,
    /// The targets.
    pub targets: Vec<Sample>,
    /// Checkpoint `i` is `models[i]`.
    pub models: Vec<Mlp<Margin>>,
}

impl Problem {
    /// (checkpoint id, model) pairs.
    pub fn checkpoints(&self) -> Vec<(u64, &Mlp<Margin>)> {
        (0u64..).zip(&self.models).collect()
    }
}

/// The run's configuration (every process builds the same one; `Run::create` checks it).
pub fn config() -> Result<Trak> {
    Trak::builder().proj_dim(512).seed(0).build()
}

/// The problem file of a work directory.
pub fn problem_path(work: &Path) -> PathBuf {
    work.join("problem.bin")
}

/// The run directory of a work directory.
pub fn run_dir(work: &Path) -> PathBuf {
    work.join("run")
}

/// A digit (28 × 28, row-major) moved by (dy, dx) pixels, zeros coming in.
fn shift(x: &[f32], (dy, dx): (isize, isize)) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    for r in 0..28isize {
        for c in 0..28isize {
            let (sr, sc) = (r - dy, c - dx);
            if (0..28).contains(&sr) && (0..28).contains(&sc) {
                out[(r * 28 + c) as usize] = x[(sr * 28 + sc) as usize];
            }
        }
    }
    out
}

/// The first `n` shifted training digits (all digits as they are, then shifted down, up,
/// right, left) and the 100 targets.
pub fn shifted_mnist(n: usize) -> Result<(Vec<Sample>, Vec<Sample>)> {
    if n == 0 || n > 5 * DIGITS {
        return Err(Error::InvalidParameter {
            parameter: "training examples",
            value: n.to_string(),
            expected: format!("1 ..= {}", 5 * DIGITS),
        });
    }
    let (digits, targets) = crate::mnist_split(DIGITS, TARGETS, 0)?;
    let moves = [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)];
    let rows: Vec<f32> = moves
        .iter()
        .flat_map(|&m| digits.x().rows().into_iter().map(move |r| (r, m)))
        .take(n)
        .flat_map(|(r, m)| shift(r.as_slice().expect("contiguous"), m))
        .collect();
    let labels = digits.labels().iter().copied().cycle().take(n).collect();
    let x = Array2::from_shape_vec((n, 784), rows).expect("n rows of 784");
    Ok((
        Dataset::with_classes(x, labels, 10)?.samples(),
        targets.samples(),
    ))
}

impl Problem {
    /// Builds the problem: the data and `size.checkpoints` trained models.
    pub fn build(size: Size) -> Result<Problem> {
        let (train, targets) = shifted_mnist(size.train)?;
        let models = (0..size.checkpoints as u64)
            .into_par_iter()
            .map(|seed| {
                let mut model = Mlp::new(&[784, 32, 10], Margin, seed)?;
                let sgd = Sgd {
                    epochs: 2,
                    seed,
                    ..Sgd::default()
                };
                sgd.fit(&mut model, &train)?;
                Ok(model)
            })
            .collect::<Result<_>>()?;
        Ok(Problem {
            size,
            train,
            targets,
            models,
        })
    }

    /// Writes the problem to `path` (atomically: other processes read all of it or nothing).
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| io(path, e))?;
        write_atomic(path, &bytes)
    }

    /// Reads a problem written by [`Problem::save`].
    pub fn load(path: &Path) -> Result<Problem> {
        let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
        let (p, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|e| io(path, e))?;
        Ok(p)
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// Loads the problem of a work directory.
pub fn load(work: &Path) -> Result<Problem> {
    Problem::load(&problem_path(work))
}

/// Builds and saves the problem and creates the run, unless a problem of this size is there
/// already (idempotent; a different size is [`Error::InvalidParameter`]).
pub fn prepare(work: &Path, size: Size) -> Result<()> {
    std::fs::create_dir_all(work).map_err(|e| io(work, e))?;
    let path = problem_path(work);
    if path.exists() {
        let stored = load(work)?.size;
        if stored != size {
            return Err(Error::InvalidParameter {
                parameter: "problem size",
                value: format!("{size:?}"),
                expected: format!(
                    "the size already prepared in {}: {stored:?}",
                    work.display()
                ),
            });
        }
    } else {
        Problem::build(size)?.save(&path)?;
    }
    Run::create(run_dir(work), &config()?, size.train, BLOCK_ROWS)?;
    Ok(())
}

/// Featurises `shard` of every checkpoint (what is on disk already is skipped).
pub fn featurize(work: &Path, shard: Shard) -> Result<Vec<FeaturizeReport>> {
    let p = load(work)?;
    let run = Run::create(run_dir(work), &config()?, p.train.len(), BLOCK_ROWS)?;
    p.checkpoints()
        .into_iter()
        .map(|(id, m)| run.featurize(id, m, &p.train, FeaturizeOptions::default().shard(shard)))
        .collect()
}

/// Merges the run after checking that every checkpoint of the problem was featurised, and
/// every block of each (with `shards`, an incomplete run names the shards to run again).
pub fn merge(work: &Path, shards: Option<usize>) -> Result<Vec<u64>> {
    let p = load(work)?;
    let run = Run::open(run_dir(work))?;
    let stored = run.checkpoints()?;
    if let Some((id, _)) = p.checkpoints().iter().find(|(id, _)| !stored.contains(id)) {
        return Err(Error::Incomplete {
            path: run.dir().to_path_buf(),
            what: format!("checkpoint {id} has not been featurised by any task"),
        });
    }
    let opts = MergeOptions::default();
    run.merge(match shards {
        Some(c) => opts.shards(c),
        None => opts,
    })
}

/// Scores the targets against the merged run into target set [`TARGET_SET`] (resumable).
pub fn score(work: &Path) -> Result<ScoreReport> {
    let p = load(work)?;
    let run = Run::open(run_dir(work))?;
    run.score(
        TARGET_SET,
        &p.checkpoints(),
        &p.targets,
        ScoreOptions::default(),
    )
}

/// The shard of this process: `--shard i/n`, else the SLURM array task's
/// ([`Shard::from_env`]) when `SLURM_ARRAY_TASK_ID` is set, else every block.
pub fn shard_of(args: &Args) -> Result<Shard> {
    if let Some(v) = args.value("--shard") {
        let bad = || Error::InvalidParameter {
            parameter: "--shard",
            value: v.to_string(),
            expected: "i/n with i < n".into(),
        };
        let (i, n) = v.split_once('/').ok_or_else(bad)?;
        return Shard::new(i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    }
    match std::env::var_os("SLURM_ARRAY_TASK_ID") {
        Some(_) => Shard::from_env(),
        None => Ok(Shard::ALL),
    }
}

/// Runs `cluster <prepare|featurize|merge|score> WORK [options]`, printing one line per step
/// (`PREPARE`, `FEATURIZE` with the blocks computed and skipped over every checkpoint,
/// `MERGE`, `SCORE`).
///
/// Options: `prepare --train N --checkpoints M`; `featurize --shard i/n`;
/// `merge --shards N`.
pub fn main(args: &Args) -> Result<()> {
    let usage = || Error::InvalidParameter {
        parameter: "command",
        value: format!("{args:?}"),
        expected: "prepare|featurize|merge|score WORK_DIR [options]".into(),
    };
    let command: String = args.positional_or(0, "command", String::new())?;
    let work: PathBuf = args.positional_or(1, "work directory", PathBuf::new())?;
    if work.as_os_str().is_empty() {
        return Err(usage());
    }
    let t = Instant::now();
    let secs = || t.elapsed().as_secs_f64();
    match command.as_str() {
        "prepare" => {
            let size = Size {
                train: args.usize_or("--train", Size::FULL.train)?,
                checkpoints: args.usize_or("--checkpoints", Size::FULL.checkpoints)?,
            };
            prepare(&work, size)?;
            println!(
                "PREPARE train={} checkpoints={} seconds={:.2}",
                size.train,
                size.checkpoints,
                secs()
            );
        }
        "featurize" => {
            let shard = shard_of(args)?;
            let reports = featurize(&work, shard)?;
            println!(
                "FEATURIZE shard={}/{} checkpoints={} computed={} skipped={} restart={} seconds={:.2}",
                shard.index(),
                shard.count(),
                reports.len(),
                reports.iter().map(|r| r.computed).sum::<usize>(),
                reports.iter().map(|r| r.skipped).sum::<usize>(),
                std::env::var("SLURM_RESTART_COUNT").unwrap_or_else(|_| "0".into()),
                secs()
            );
        }
        "merge" => {
            let shards = args
                .value("--shards")
                .map(|_| args.usize_or("--shards", 0))
                .transpose()?;
            let ids = merge(&work, shards)?;
            println!("MERGE checkpoints={} seconds={:.2}", ids.len(), secs());
        }
        "score" => {
            let r = score(&work)?;
            println!(
                "SCORE computed={} skipped={} seconds={:.2}",
                r.computed,
                r.skipped,
                secs()
            );
        }
        _ => return Err(usage()),
    }
    Ok(())
}
