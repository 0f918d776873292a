//! Shared by the `fault_injection` and `sharded` examples: a small attribution problem saved
//! to a file (so that child processes load it instead of retraining), and the child-process
//! side of a stored run (featurise a shard, then optionally merge and score).

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::data::Sample;
use trak::models::{Mlp, Sgd};
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions, Shard};
use trak::{Error, Result, Trak};

/// Training set, targets and checkpoints of the problem.
#[derive(Serialize, Deserialize)]
pub struct Problem {
    pub train: Vec<Sample>,
    pub targets: Vec<Sample>,
    pub models: Vec<Mlp<Margin>>,
}

impl Problem {
    /// (checkpoint id, model) pairs: id i is `models[i]`.
    pub fn checkpoints(&self) -> Vec<(u64, &Mlp<Margin>)> {
        self.models
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64, m))
            .collect()
    }
}

/// The run configuration shared by every process (dense Rademacher, k = 512, seed 0).
pub fn config() -> Result<Trak> {
    Trak::builder().proj_dim(512).seed(0).build()
}

/// MNIST: the first `n` of a fixed shuffle as training set, 16 held-out targets, `m`
/// checkpoints (784-32-10 MLPs, 2 epochs from different seeds).
pub fn build_problem(n: usize, m: u64) -> Result<Problem> {
    let (train, test) = trak_demo::mnist_5k()?.split(n, 0)?;
    let train = train.samples();
    let targets = test.samples()[..16].to_vec();
    let models = (0..m)
        .into_par_iter()
        .map(|seed| {
            let mut model = Mlp::new(&[784, 32, 10], Margin, seed)?;
            Sgd {
                epochs: 2,
                seed,
                ..Sgd::default()
            }
            .fit(&mut model, &train)?;
            Ok(model)
        })
        .collect::<Result<_>>()?;
    Ok(Problem {
        train,
        targets,
        models,
    })
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    }
}

/// A fresh working directory `<temp>/<prefix>-<pid>` holding `problem.bin`, the problem of
/// [`build_problem`]`(n, m)`; returns the directory and the problem file.
pub fn work_dir(prefix: &str, n: usize, m: u64) -> Result<(PathBuf, PathBuf)> {
    let work = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| io(&work, e))?;
    let problem = work.join("problem.bin");
    save(&build_problem(n, m)?, &problem)?;
    Ok((work, problem))
}

pub fn save(problem: &Problem, path: &Path) -> Result<()> {
    let bytes = bincode::serde::encode_to_vec(problem, bincode::config::standard())
        .map_err(|e| io(path, e))?;
    std::fs::write(path, bytes).map_err(|e| io(path, e))
}

pub fn load(path: &Path) -> Result<Problem> {
    let bytes = std::fs::read(path).map_err(|e| io(path, e))?;
    let (p, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
        .map_err(|e| io(path, e))?;
    Ok(p)
}

/// The child's work: featurise every checkpoint on `shard`; with `finish`, also merge and
/// score the targets into target set "test" (block rows as given).
pub fn child(
    problem: &Path,
    dir: &Path,
    shard: Shard,
    block_rows: usize,
    finish: bool,
) -> Result<()> {
    let p = load(problem)?;
    let run = Run::create(dir, &config()?, p.train.len(), block_rows)?;
    for (id, m) in p.models.iter().enumerate() {
        run.featurize(
            id as u64,
            m,
            &p.train,
            FeaturizeOptions::default().shard(shard),
        )?;
    }
    if finish {
        run.merge(MergeOptions::default())?;
        run.score(
            "test",
            &p.checkpoints(),
            &p.targets,
            ScoreOptions::default(),
        )?;
    }
    Ok(())
}

/// Bit patterns of a run's stored scores for target set "test".
pub fn score_bits(dir: &Path) -> Result<Vec<u32>> {
    Ok(Run::open(dir)?
        .load_scores("test")?
        .values()
        .iter()
        .map(|v| v.to_bits())
        .collect())
}
