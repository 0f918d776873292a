//! The LDS protocol on the vendored MNIST-5k, for the built-in model families.
//!
//! Protocol (DESIGN §6):
//! 1. Split: the 5,000 digits are shuffled with the benchmark seed; the first `n_train` are the
//!    training set, the next `n_targets` of the rest are the targets (never trained on).
//! 2. Ground truth: `subsets` random α-subsets S_j of the training set; a model of the family is
//!    trained on each (seed 1,000,000 + j) and its margin on every target recorded (J × m).
//!    These margins are cached on disk (bincode) under a key naming every setting they depend on.
//! 3. Checkpoints: `checkpoints` models trained on the full training set (seeds 0, 1, …).
//! 4. Features: every checkpoint featurised once at the largest k; smaller k use
//!    [`TrainFeatures::prefix`] (the first k columns of the same projection, rescaled).
//! 5. Methods, for each k and each M: TRAK (ensemble of the first M checkpoints) under each
//!    ridge rule, gradient dot product and cosine (averaged over the same M checkpoints), and
//!    random scores. LDS = mean over targets of the Spearman correlation over subsets.

use std::path::PathBuf;

use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::attribute::{Scores, TrainFeatures, Trak};
use crate::data::{Dataset, Sample};
use crate::error::{Error, Result};
use crate::eval::{grad_dot, lds, random_scores, subset_masks};
use crate::kernel::Ridge;
use crate::models::{Mlp, Sgd};
use crate::output::Margin;
use crate::project::ProjectorKind;
use ndarray::{Array2, ArrayView2, s};

/// A built-in model family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Family {
    /// Multinomial logistic regression, 784 → 10 (p = 7,850).
    LogReg,
    /// One-hidden-layer ReLU MLP, 784 → 128 → 10 (p = 101,770).
    Mlp,
}

impl Family {
    /// `logreg` or `mlp`.
    pub fn name(self) -> &'static str {
        match self {
            Family::LogReg => "logreg",
            Family::Mlp => "mlp",
        }
    }

    /// The family named `logreg` or `mlp`.
    pub fn from_name(name: &str) -> Result<Self> {
        match name {
            "logreg" => Ok(Family::LogReg),
            "mlp" => Ok(Family::Mlp),
            other => Err(Error::InvalidConfig(format!(
                "unknown model family {other:?} (logreg or mlp)"
            ))),
        }
    }

    /// The families named by `--family NAME` options in command-line arguments (empty if none).
    pub fn from_args(args: &[String]) -> Result<Vec<Self>> {
        args.windows(2)
            .filter(|w| w[0] == "--family")
            .map(|w| Self::from_name(&w[1]))
            .collect()
    }

    /// Layer sizes.
    pub fn sizes(self) -> Vec<usize> {
        match self {
            Family::LogReg => vec![784, 10],
            Family::Mlp => vec![784, 128, 10],
        }
    }

    /// The SGD settings used for every model of the family (seed = `seed`).
    pub fn sgd(self, seed: u64) -> Sgd {
        match self {
            Family::LogReg => Sgd {
                lr: 0.1,
                momentum: 0.9,
                weight_decay: 1e-4,
                epochs: 12,
                batch_size: 64,
                seed,
            },
            Family::Mlp => Sgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                epochs: 12,
                batch_size: 64,
                seed,
            },
        }
    }

    /// Trains a model of the family on `data` (initialisation and order from `seed`).
    pub fn train(self, data: &[Sample], seed: u64) -> Result<Mlp<Margin>> {
        let mut m = Mlp::new(&self.sizes(), Margin, seed)?;
        self.sgd(seed).fit(&mut m, data)?;
        Ok(m)
    }
}

/// Settings of a benchmark run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Model families to evaluate.
    pub families: Vec<Family>,
    /// Training set size (from the 5,000 digits).
    pub n_train: usize,
    /// Number of targets (from the held-out digits).
    pub n_targets: usize,
    /// Number J of subset models per family.
    pub subsets: usize,
    /// Subset fraction α.
    pub alpha: f64,
    /// Ensemble sizes M to report (the largest is the number of checkpoints trained).
    pub ensembles: Vec<usize>,
    /// Projection dimensions k to report.
    pub proj_dims: Vec<usize>,
    /// Ridge rules for TRAK (one row per rule).
    pub ridges: Vec<Ridge>,
    /// Other projectors evaluated next to the dense one (rows `trak-sparse`,
    /// `trak-factored`; see [`method_name`]), at every k and M, under the first ridge rule.
    pub extra_projectors: Vec<ProjectorKind>,
    /// Where to cache subset-model margins (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Seed of the split, the subsets and the projections.
    pub seed: u64,
    /// Print progress to stderr.
    pub verbose: bool,
}

impl BenchConfig {
    /// The default protocol: both families, 4,000 train / 200 targets, J = 300 subsets at
    /// α = 0.5, M ∈ {1, 5, 10}, k ∈ {512, 2048, 4096}, the default ridge, the dense
    /// projection and, as extra rows, the default sparse and the factored projections.
    pub fn full() -> Self {
        Self {
            families: vec![Family::LogReg, Family::Mlp],
            n_train: 4000,
            n_targets: 200,
            subsets: 300,
            alpha: 0.5,
            ensembles: vec![1, 5, 10],
            proj_dims: vec![512, 2048, 4096],
            ridges: vec![Ridge::default()],
            extra_projectors: vec![ProjectorKind::SPARSE, ProjectorKind::Factored],
            cache_dir: Some(PathBuf::from("target/lds-cache")),
            seed: 0,
            verbose: true,
        }
    }

    /// A fast version of the same code path: J = 48 subsets, 40 targets, M ∈ {1, 3},
    /// k ∈ {512}; a couple of minutes at most on 2 cores.
    pub fn quick() -> Self {
        Self {
            subsets: 48,
            n_targets: 40,
            ensembles: vec![1, 3],
            proj_dims: vec![512],
            ..Self::full()
        }
    }
}

/// The method name of TRAK under a projector kind: `trak` (dense Rademacher), `trak-gaussian`,
/// `trak-sparse` (s = 1, the default) or `trak-sparse-s<s>`, `trak-factored`, `trak-identity`.
pub fn method_name(kind: ProjectorKind) -> String {
    match kind {
        ProjectorKind::Rademacher => "trak".into(),
        ProjectorKind::Gaussian => "trak-gaussian".into(),
        ProjectorKind::Identity => "trak-identity".into(),
        ProjectorKind::Factored => "trak-factored".into(),
        k @ ProjectorKind::Sparse { s } => {
            if k == ProjectorKind::SPARSE {
                "trak-sparse".into()
            } else {
                format!("trak-sparse-s{s}")
            }
        }
    }
}

/// One LDS measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LdsRow {
    /// Model family.
    pub family: Family,
    /// `trak`, `trak-sparse`, `trak-factored` (see [`method_name`]), `grad-dot`, `grad-cos`
    /// or `random`.
    pub method: String,
    /// Projection dimension.
    pub k: usize,
    /// Ensemble size.
    pub m: usize,
    /// The ridge rule (TRAK rows only).
    pub ridge: Option<Ridge>,
    /// Mean LDS over targets; `None` when TRAK could not be computed (singular kernel with
    /// λ = 0).
    pub value: Option<f64>,
}

impl LdsRow {
    /// The machine-readable line `LDS family=… method=… k=… M=… value=…`.
    pub fn line(&self) -> String {
        let v = self.value.map_or("nan".to_string(), |v| format!("{v:.4}"));
        format!(
            "LDS family={} method={} k={} M={} value={v}",
            self.family.name(),
            self.method,
            self.k,
            self.m
        )
    }
}

#[derive(Serialize, Deserialize)]
struct MarginCache {
    key: String,
    rows: usize,
    cols: usize,
    margins: Vec<f32>,
}

/// Ground truth of one family: subset masks (J × n) and subset-model margins (J × m).
pub struct GroundTruth {
    /// Subset membership, J × n.
    pub masks: Array2<bool>,
    /// Margin of subset model j on target t, J × m.
    pub margins: Array2<f32>,
}

/// The benchmark's split: (training samples, target samples, training set, target set).
pub fn split(cfg: &BenchConfig) -> Result<(Vec<Sample>, Vec<Sample>, Dataset, Dataset)> {
    split_mnist(cfg.n_train, cfg.n_targets, cfg.seed)
}

fn split_mnist(
    n_train: usize,
    n_targets: usize,
    seed: u64,
) -> Result<(Vec<Sample>, Vec<Sample>, Dataset, Dataset)> {
    let data = Dataset::mnist_5k()?;
    if n_train + n_targets > data.len() {
        return Err(Error::InvalidConfig(format!(
            "{n_train} training + {n_targets} target examples exceed the {} available",
            data.len()
        )));
    }
    let (train, rest) = data.split(n_train, seed)?;
    let targets = rest.select(&(0..n_targets).collect::<Vec<_>>())?;
    Ok((train.samples(), targets.samples(), train, targets))
}

fn log(cfg: &BenchConfig, msg: impl AsRef<str>) {
    say(cfg.verbose, msg)
}

fn say(verbose: bool, msg: impl AsRef<str>) {
    if verbose {
        eprintln!("[eval] {}", msg.as_ref());
    }
}

/// Trains (or loads from the cache) the subset models of `family` and returns their margins.
pub fn ground_truth(
    cfg: &BenchConfig,
    family: Family,
    train: &[Sample],
    targets: &[Sample],
) -> Result<GroundTruth> {
    let masks = subset_masks(train.len(), cfg.alpha, cfg.subsets, cfg.seed ^ 0x5u64)?;
    let key = format!(
        "v1 family={} sizes={:?} sgd={:?} n_train={} n_targets={} J={} alpha={} seed={} data=mnist_5k",
        family.name(),
        family.sizes(),
        family.sgd(0),
        train.len(),
        targets.len(),
        cfg.subsets,
        cfg.alpha,
        cfg.seed
    );
    let path = cfg.cache_dir.as_ref().map(|d| {
        let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        d.join(format!("margins-{}-{h:016x}.bin", family.name()))
    });
    if let Some(p) = &path
        && let Ok(bytes) = std::fs::read(p)
    {
        match bincode::serde::decode_from_slice::<MarginCache, _>(
            &bytes,
            bincode::config::standard(),
        ) {
            Ok((c, _)) if c.key == key && c.margins.len() == c.rows * c.cols => {
                log(
                    cfg,
                    format!("{}: subset margins from {}", family.name(), p.display()),
                );
                let margins =
                    Array2::from_shape_vec((c.rows, c.cols), c.margins).expect("length checked");
                return Ok(GroundTruth { masks, margins });
            }
            _ => log(
                cfg,
                format!("{}: ignoring stale cache {}", family.name(), p.display()),
            ),
        }
    }
    log(
        cfg,
        format!("{}: training {} subset models", family.name(), cfg.subsets),
    );
    let rows: Vec<Vec<f32>> = (0..cfg.subsets)
        .into_par_iter()
        .map(|j| {
            let subset: Vec<Sample> = masks
                .row(j)
                .iter()
                .zip(train)
                .filter(|(b, _)| **b)
                .map(|(_, s)| s.clone())
                .collect();
            let model = family.train(&subset, 1_000_000 + j as u64)?;
            Ok(model.outputs(targets)?.iter().map(|v| v.f).collect())
        })
        .collect::<Result<_>>()?;
    let margins = Array2::from_shape_vec(
        (cfg.subsets, targets.len()),
        rows.into_iter().flatten().collect(),
    )
    .expect("J × m margins");
    if let Some(p) = &path {
        let cache = MarginCache {
            key,
            rows: margins.nrows(),
            cols: margins.ncols(),
            margins: margins.iter().copied().collect(),
        };
        let bytes = bincode::serde::encode_to_vec(&cache, bincode::config::standard())
            .map_err(|e| Error::InvalidConfig(format!("cannot encode cache: {e}")))?;
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(p.parent().expect("cache file has a directory"))?;
            let tmp = p.with_extension("tmp");
            std::fs::write(&tmp, &bytes)?;
            std::fs::rename(&tmp, p)
        };
        write().map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?;
    }
    Ok(GroundTruth { masks, margins })
}

fn scaled_prefix(psi: &Array2<f32>, k: usize) -> Array2<f32> {
    let scale = ((psi.ncols() as f64) / (k as f64)).sqrt() as f32;
    psi.slice(s![.., ..k]).mapv(|v| v * scale)
}

/// TRAK scores of one family kept for inspection (pictures): the configuration with the
/// largest M, k = 2048 (or the largest k below it) and the first ridge rule.
pub struct Snapshot {
    /// Model family.
    pub family: Family,
    /// Projection dimension.
    pub k: usize,
    /// Ensemble size.
    pub m: usize,
    /// n_train × n_targets scores.
    pub scores: Scores,
    /// The ground truth they were evaluated against.
    pub truth: GroundTruth,
}

/// What [`run`] measured.
pub struct BenchOutput {
    /// One row per (family, method, k, M, ridge).
    pub rows: Vec<LdsRow>,
    /// One snapshot per family (absent if its TRAK kernel was singular).
    pub snapshots: Vec<Snapshot>,
}

/// Runs the protocol.
pub fn run(cfg: &BenchConfig) -> Result<BenchOutput> {
    let k_max = *cfg
        .proj_dims
        .iter()
        .max()
        .ok_or(Error::Empty("proj_dims"))?;
    let m_max = *cfg
        .ensembles
        .iter()
        .max()
        .ok_or(Error::Empty("ensembles"))?;
    if cfg.ridges.is_empty() {
        return Err(Error::Empty("ridges"));
    }
    let (train, targets, _, _) = split(cfg)?;
    let snap_k = cfg
        .proj_dims
        .iter()
        .copied()
        .filter(|&k| k <= 2048)
        .max()
        .unwrap_or(k_max);
    let mut rows = Vec::new();
    let mut snapshots = Vec::new();
    for &family in &cfg.families {
        let gt = ground_truth(cfg, family, &train, &targets)?;
        log(
            cfg,
            format!("{}: training {m_max} checkpoints", family.name()),
        );
        let models: Vec<Mlp<Margin>> = (0..m_max as u64)
            .into_par_iter()
            .map(|seed| family.train(&train, seed))
            .collect::<Result<_>>()?;
        log(
            cfg,
            format!("{}: featurising at k = {k_max}", family.name()),
        );
        let trak = Trak::builder().proj_dim(k_max).seed(cfg.seed).build()?;
        let mut feats = trak.featurizer();
        let mut psis = Vec::new();
        for (id, m) in models.iter().enumerate() {
            feats.featurize(id as u64, m, &train)?;
            psis.push(trak.features(id as u64, m, &targets)?);
        }
        let eval = |scores: &Scores| -> Result<f64> {
            Ok(lds(gt.masks.view(), scores.values(), gt.margins.view())?.mean)
        };
        let mut snapshot = None;
        for &k in &cfg.proj_dims {
            let fk: TrainFeatures = if k == k_max {
                feats.clone()
            } else {
                feats.prefix(k)?
            };
            let psi_k: Vec<Array2<f32>> = psis
                .iter()
                .map(|p| {
                    if k == k_max {
                        p.clone()
                    } else {
                        scaled_prefix(p, k)
                    }
                })
                .collect();
            for (ri, &ridge) in cfg.ridges.iter().enumerate() {
                log(cfg, format!("{}: k = {k}, {ridge:?}", family.name()));
                let index = match fk.with_ridge(ridge)?.finalize() {
                    Ok(i) => Some(i),
                    Err(Error::NotPositiveDefinite { .. }) => None,
                    Err(e) => return Err(e),
                };
                for &m in &cfg.ensembles {
                    let value = match &index {
                        Some(index) => {
                            let t: Vec<(u64, ArrayView2<'_, f32>)> =
                                (0..m).map(|i| (i as u64, psi_k[i].view())).collect();
                            let scores = index.score_features(&t)?;
                            let v = eval(&scores)?;
                            if k == snap_k && m == m_max && ri == 0 {
                                snapshot = Some((scores, k, m));
                            }
                            Some(v)
                        }
                        None => None,
                    };
                    rows.push(LdsRow {
                        family,
                        method: "trak".into(),
                        k,
                        m,
                        ridge: Some(ridge),
                        value,
                    });
                }
            }
            for &m in &cfg.ensembles {
                let phis: Vec<ArrayView2<'_, f32>> = (0..m)
                    .map(|i| fk.features(i as u64).expect("featurised"))
                    .collect();
                let ps: Vec<ArrayView2<'_, f32>> = psi_k[..m].iter().map(|p| p.view()).collect();
                for (method, cosine) in [("grad-dot", false), ("grad-cos", true)] {
                    rows.push(LdsRow {
                        family,
                        method: method.into(),
                        k,
                        m,
                        ridge: None,
                        value: Some(eval(&grad_dot(&phis, &ps, cosine)?)?),
                    });
                }
                let seed = cfg.seed ^ ((k as u64) << 32) ^ m as u64;
                rows.push(LdsRow {
                    family,
                    method: "random".into(),
                    k,
                    m,
                    ridge: None,
                    value: Some(eval(&random_scores(train.len(), targets.len(), seed))?),
                });
            }
        }
        for &kind in &cfg.extra_projectors {
            let method = method_name(kind);
            for &k in &cfg.proj_dims {
                let t0 = std::time::Instant::now();
                let trak = Trak::builder()
                    .proj_dim(k)
                    .projector(kind)
                    .seed(cfg.seed)
                    .ridge(cfg.ridges[0])
                    .build()?;
                let mut feats = trak.featurizer();
                let mut psis = Vec::new();
                for (id, m) in models.iter().enumerate() {
                    feats.featurize(id as u64, m, &train)?;
                    psis.push(trak.features(id as u64, m, &targets)?);
                }
                let dim = psis[0].ncols();
                log(
                    cfg,
                    format!(
                        "{}: {method} k = {k} (features: {dim}), featurised in {:.1} s",
                        family.name(),
                        t0.elapsed().as_secs_f64()
                    ),
                );
                let index = feats.finalize()?;
                for &m in &cfg.ensembles {
                    let t: Vec<(u64, ArrayView2<'_, f32>)> =
                        (0..m).map(|i| (i as u64, psis[i].view())).collect();
                    rows.push(LdsRow {
                        family,
                        method: method.clone(),
                        k,
                        m,
                        ridge: Some(cfg.ridges[0]),
                        value: Some(eval(&index.score_features(&t)?)?),
                    });
                }
            }
        }
        if let Some((scores, k, m)) = snapshot {
            snapshots.push(Snapshot {
                family,
                k,
                m,
                scores,
                truth: gt,
            });
        }
    }
    Ok(BenchOutput { rows, snapshots })
}

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
        return Err(Error::InvalidConfig(format!(
            "need 1 ≤ seeds ≤ m, got seeds = {}, m = {}",
            cfg.seeds, cfg.m
        )));
    }
    if let Some(&r) = cfg.removals.iter().find(|&&r| r == 0 || r >= cfg.n_train) {
        return Err(Error::InvalidConfig(format!(
            "cannot remove {r} of {} examples",
            cfg.n_train
        )));
    }
    let (train, targets, _, _) = split_mnist(cfg.n_train, cfg.n_targets, cfg.seed)?;
    let mut rows = Vec::new();
    for &family in &cfg.families {
        say(
            cfg.verbose,
            format!("{}: training {} checkpoints", family.name(), cfg.m),
        );
        let models: Vec<Mlp<Margin>> = (0..cfg.m as u64)
            .into_par_iter()
            .map(|seed| family.train(&train, seed))
            .collect::<Result<_>>()?;
        say(
            cfg.verbose,
            format!("{}: TRAK scores at k = {}", family.name(), cfg.k),
        );
        let trak = Trak::builder().proj_dim(cfg.k).seed(cfg.seed).build()?;
        let mut feats = trak.featurizer();
        for (id, m) in models.iter().enumerate() {
            feats.featurize(id as u64, m, &train)?;
        }
        let ckpts: Vec<(u64, &Mlp<Margin>)> = models
            .iter()
            .enumerate()
            .map(|(i, m)| (i as u64, m))
            .collect();
        let scores = feats.finalize()?.score(&ckpts, &targets)?;
        // full[s][t]: margin of the full-data model with seed s on target t
        let full: Vec<Vec<f32>> = models[..cfg.seeds]
            .iter()
            .map(|m| Ok(m.outputs(&targets)?.iter().map(|v| v.f).collect()))
            .collect::<Result<_>>()?;
        let summarise = |method: &str, removed: usize, after: &[(usize, usize, f32)]| {
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
                family,
                method: method.into(),
                removed,
                margin_drop: drop,
                flip: flipped as f64 / correct.len().max(1) as f64,
            }
        };
        let retrain = |removed: &[usize], seed: usize| -> Result<Mlp<Margin>> {
            let mut drop = vec![false; train.len()];
            removed.iter().for_each(|&i| drop[i] = true);
            let kept: Vec<Sample> = train
                .iter()
                .zip(&drop)
                .filter(|(_, d)| !**d)
                .map(|(s, _)| s.clone())
                .collect();
            family.train(&kept, seed as u64)
        };
        for &r in &cfg.removals {
            say(cfg.verbose, format!("{}: removing {r}", family.name()));
            let top = scores.top_k(r);
            let jobs: Vec<(usize, usize)> = (0..targets.len())
                .flat_map(|t| (0..cfg.seeds).map(move |s| (t, s)))
                .collect();
            let after: Vec<(usize, usize, f32)> = jobs
                .par_iter()
                .map(|&(t, s)| {
                    let removed: Vec<usize> = top[t].iter().map(|&(i, _)| i).collect();
                    let m = retrain(&removed, s)?;
                    Ok((s, t, m.outputs(&targets[t..t + 1])?[0].f))
                })
                .collect::<Result<_>>()?;
            rows.push(summarise("trak", r, &after));
            // random removals do not depend on the target: one retraining per seed
            let after: Vec<Vec<(usize, usize, f32)>> = (0..cfg.seeds)
                .into_par_iter()
                .map(|s| {
                    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xA11CE);
                    rng.set_stream((r * 1000 + s) as u64);
                    let removed = rand::seq::index::sample(&mut rng, train.len(), r).into_vec();
                    let m = retrain(&removed, s)?;
                    Ok(m.outputs(&targets)?
                        .iter()
                        .enumerate()
                        .map(|(t, v)| (s, t, v.f))
                        .collect())
                })
                .collect::<Result<_>>()?;
            rows.push(summarise("random", r, &after.concat()));
        }
    }
    Ok(rows)
}
