//! Shared by the `fault_injection` and `sharded` examples: the cluster recipe's attribution
//! problem (`trak_demo::cluster::Problem`) saved to a file (so that child processes load it
//! instead of retraining), and the child-process side of a stored run (featurise a shard, then
//! optionally merge and score).

use std::path::{Path, PathBuf};

use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions, Shard};
use trak::{Error, Result};
use trak_demo::cluster::Size;
pub use trak_demo::cluster::{Problem, config};

/// A fresh working directory `<temp>/<prefix>-<pid>` holding `problem.bin`: the first `n`
/// shifted MNIST digits, 100 targets and `m` checkpoints (784-32-10 MLPs, 2 epochs from
/// seeds 0..m; [`Problem::build`]). Returns the directory and the problem file.
pub fn work_dir(prefix: &str, n: usize, m: u64) -> Result<(PathBuf, PathBuf)> {
    let work = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(|e| Error::Io {
        path: work.clone(),
        source: e,
    })?;
    let problem = work.join("problem.bin");
    let size = Size {
        train: n,
        checkpoints: m as usize,
    };
    Problem::build(size)?.save(&problem)?;
    Ok((work, problem))
}

/// Reads the problem file.
pub fn load(path: &Path) -> Result<Problem> {
    Problem::load(path)
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
