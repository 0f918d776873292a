//! The removal test: remove each target's top-scoring training examples (or as many random
//! ones), retrain, and measure how the target's margin moves.

use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::data::Sample;
use trak::models::Mlp;
use trak::output::Margin;
use trak::{Error, Result, Scores, Trak};

use crate::family::Family;

/// Settings of the removal test.
#[derive(Debug, Clone)]
pub struct RemovalConfig {
    /// Model families.
    pub families: Vec<Family>,
    /// Training set size.
    pub n_train: usize,
    /// Number of targets.
    pub n_targets: usize,
    /// How many training examples to remove.
    pub removals: Vec<usize>,
    /// Retraining seeds per removal (the full-data models use the same seeds).
    pub seeds: usize,
    /// TRAK projection dimension.
    pub k: usize,
    /// TRAK ensemble size (at least `seeds`).
    pub m: usize,
    /// Seed of the split, projection and random removals.
    pub seed: u64,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl Default for RemovalConfig {
    /// Both families, 4,000 train, 50 targets, removals {10, 50, 200}, 3 seeds, k = 2048, M = 10.
    fn default() -> Self {
        Self {
            families: vec![Family::LogReg, Family::Mlp],
            n_train: 4000,
            n_targets: 50,
            removals: vec![10, 50, 200],
            seeds: 3,
            k: 2048,
            m: 10,
            seed: 0,
            verbose: true,
        }
    }
}

/// One removal measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemovalRow {
    /// Model family.
    pub family: Family,
    /// `trak` (each target's top-scoring training examples removed) or `random`.
    pub method: String,
    /// Number of training examples removed.
    pub removed: usize,
    /// Mean over targets and seeds of (margin of the full-data model − margin after removal).
    pub margin_drop: f64,
    /// Among (target, seed) pairs the full-data model classifies correctly (margin > 0), the
    /// fraction misclassified after removal.
    pub flip: f64,
}

impl RemovalRow {
    /// The machine-readable line `REMOVAL family=… method=… k=… margin_drop=… flip=…`.
    pub fn line(&self) -> String {
        format!(
            "REMOVAL family={} method={} k={} margin_drop={:.4} flip={:.4}",
            self.family.name(),
            self.method,
            self.removed,
            self.margin_drop,
            self.flip
        )
    }
}

/// The removal test: for each target, remove its top-scoring (TRAK) training examples, or as
/// many random ones, retrain with each seed, and compare the target's margin with the
/// full-data model of the same seed.
pub fn removal(cfg: &RemovalConfig) -> Result<Vec<RemovalRow>> {
    if cfg.seeds == 0 || cfg.m < cfg.seeds {
        return Err(Error::InvalidParameter {
            parameter: "removal seeds",
            value: format!("seeds = {}, m = {}", cfg.seeds, cfg.m),
            expected: "1 ≤ seeds ≤ m".into(),
        });
    }
    if let Some(&r) = cfg.removals.iter().find(|&&r| r == 0 || r >= cfg.n_train) {
        return Err(Error::InvalidParameter {
            parameter: "examples to remove",
            value: r.to_string(),
            expected: format!("1 ≤ removed < {}", cfg.n_train),
        });
    }
    let (train, targets) = crate::mnist_split(cfg.n_train, cfg.n_targets, cfg.seed)?;
    let (train, targets) = (train.samples(), targets.samples());
    let mut rows = Vec::new();
    for &family in &cfg.families {
        let t = Removal::new(cfg, family, &train, &targets)?;
        for &r in &cfg.removals {
            say(cfg.verbose, format!("{}: removing {r}", family.name()));
            rows.push(t.summarise("trak", r, &t.remove_top(r)?));
            rows.push(t.summarise("random", r, &t.remove_random(r)?));
        }
    }
    Ok(rows)
}

fn say(verbose: bool, msg: impl AsRef<str>) {
    if verbose {
        eprintln!("[eval] {}", msg.as_ref());
    }
}

/// One family's removal test: checkpoints, TRAK scores and full-data margins.
struct Removal<'a> {
    cfg: &'a RemovalConfig,
    family: Family,
    train: &'a [Sample],
    targets: &'a [Sample],
    scores: Scores,
    /// full[s][t]: margin of the full-data model with seed s on target t.
    full: Vec<Vec<f32>>,
}

impl<'a> Removal<'a> {
    fn new(
        cfg: &'a RemovalConfig,
        family: Family,
        train: &'a [Sample],
        targets: &'a [Sample],
    ) -> Result<Self> {
        say(
            cfg.verbose,
            format!("{}: training {} checkpoints", family.name(), cfg.m),
        );
        let models: Vec<Mlp<Margin>> = (0..cfg.m as u64)
            .into_par_iter()
            .map(|seed| family.train(train, seed))
            .collect::<Result<_>>()?;
        say(
            cfg.verbose,
            format!("{}: TRAK scores at k = {}", family.name(), cfg.k),
        );
        let trak = Trak::builder().proj_dim(cfg.k).seed(cfg.seed).build()?;
        let mut feats = trak.featurizer();
        for (id, m) in models.iter().enumerate() {
            feats.featurize(id as u64, m, train)?;
        }
        let ckpts: Vec<(u64, &Mlp<Margin>)> = models
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64, m))
            .collect();
        let scores = feats.finalize()?.score(&ckpts, targets)?;
        let full = models[..cfg.seeds]
            .iter()
            .map(|m| Ok(m.outputs(targets)?.iter().map(|v| v.f).collect()))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            family,
            train,
            targets,
            scores,
            full,
        })
    }

    /// A model of the family trained with `seed` on the training set less `removed`.
    fn retrain(&self, removed: &[usize], seed: usize) -> Result<Mlp<Margin>> {
        let mut drop = vec![false; self.train.len()];
        removed.iter().for_each(|&i| drop[i] = true);
        let kept: Vec<Sample> = self
            .train
            .iter()
            .zip(&drop)
            .filter(|(_, d)| !**d)
            .map(|(s, _)| s.clone())
            .collect();
        self.family.train(&kept, seed as u64)
    }

    /// (seed, target, margin after removal) with each target's top `r` removed.
    fn remove_top(&self, r: usize) -> Result<Vec<(usize, usize, f32)>> {
        let top = self.scores.top_k(r);
        let jobs: Vec<(usize, usize)> = (0..self.targets.len())
            .flat_map(|t| (0..self.cfg.seeds).map(move |s| (t, s)))
            .collect();
        jobs.par_iter()
            .map(|&(t, s)| {
                let removed: Vec<usize> = top[t].iter().map(|&(i, _)| i).collect();
                let m = self.retrain(&removed, s)?;
                Ok((s, t, m.outputs(&self.targets[t..t + 1])?[0].f))
            })
            .collect()
    }

    /// (seed, target, margin after removal) with `r` random examples removed (the same for
    /// every target: one retraining per seed).
    fn remove_random(&self, r: usize) -> Result<Vec<(usize, usize, f32)>> {
        let after: Vec<Vec<(usize, usize, f32)>> = (0..self.cfg.seeds)
            .into_par_iter()
            .map(|s| {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.cfg.seed ^ 0xA11CE);
                rng.set_stream((r * 1000 + s) as u64);
                let removed = rand::seq::index::sample(&mut rng, self.train.len(), r).into_vec();
                let m = self.retrain(&removed, s)?;
                Ok(m.outputs(self.targets)?
                    .iter()
                    .enumerate()
                    .map(|(t, v)| (s, t, v.f))
                    .collect())
            })
            .collect::<Result<_>>()?;
        Ok(after.concat())
    }

    fn summarise(&self, method: &str, removed: usize, after: &[(usize, usize, f32)]) -> RemovalRow {
        let full = &self.full;
        let drop = after
            .iter()
            .map(|&(s, t, f)| (full[s][t] - f) as f64)
            .sum::<f64>()
            / after.len() as f64;
        let correct: Vec<&(usize, usize, f32)> = after
            .iter()
            .filter(|&&(s, t, _)| full[s][t] > 0.0)
            .collect();
        let flipped = correct.iter().filter(|&&&(_, _, f)| f < 0.0).count();
        RemovalRow {
            family: self.family,
            method: method.into(),
            removed,
            margin_drop: drop,
            flip: flipped as f64 / correct.len().max(1) as f64,
        }
    }
}
