//! The metagradient validation protocol on MNIST-5k: metagradients
//! ([`trak::metagrad`]) and TRAK against two counterfactual truths at several drop fractions.
//!
//! 1. Split: `n_train` training digits, 1,000 held-out digits (the test accuracy), the first
//!    `n_targets` of which are the targets.
//! 2. Runs: for seeds s = 0, 1, …, M_max − 1, a model of the family initialised from s and
//!    trained with the protocol's [`Training`] settings and order seed s. Each run's
//!    metagradients are computed by [`trak::metagrad::metagradients`], which also returns
//!    the trained model: the same model is TRAK's checkpoint s.
//! 3. Truths, for each drop fraction d, on J random subsets keeping 1 − d of the examples
//!    (the same masks for both truths):
//!    - `same-seed`: run 0 retrained with weight 0 on the dropped examples
//!      ([`trak::models::Sgd::fit_weighted`]: the same initialisation and order);
//!    - `other-seeds`: a model trained on the subset alone, initialisation and order from
//!      seed 1,000,000 + j (the LDS protocol's truth).
//! 4. Methods: `metagrad` (the mean of the first M runs' metagradients), `trak` (the
//!    library's default TRAK on the first M checkpoints), `grad-dot` (M = 1) and `random`.

use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;
use trak::data::Sample;
use trak::eval::{DropSets, lds, random_scores};
use trak::metagrad::{MetagradOptions, Metagradients, Precision, metagradients};
use trak::models::{Mlp, Sgd};
use trak::output::Margin;
use trak::{Error, Result, Scores, Trak};

use crate::family::Family;
use crate::protocol::{BenchConfig, baseline_scores, featurize_all};
use crate::truth::{GroundTruth, ground_truth_masked, ground_truth_with, subset_seed};

/// The trainer settings of a run, all but the seed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Training {
    /// Learning rate.
    pub lr: f32,
    /// Minibatch size.
    pub batch_size: usize,
    /// Passes over the data.
    pub epochs: usize,
    /// Momentum.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
}

impl Training {
    /// `Sgd::default()`'s settings: the crate's defaults.
    pub fn crate_default() -> Self {
        Self::of(&Sgd::default())
    }

    /// The settings of an [`Sgd`].
    pub fn of(sgd: &Sgd) -> Self {
        Self {
            lr: sgd.lr,
            batch_size: sgd.batch_size,
            epochs: sgd.epochs,
            momentum: sgd.momentum,
            weight_decay: sgd.weight_decay,
        }
    }

    /// The library's smooth settings ([`Sgd::smooth`]: the crate's defaults with lr 0.01),
    /// under which metagradients are near-exact; the evidence is in its docs and in
    /// `metagrad_lds --map` (docs/VALIDATION.md).
    pub fn smooth() -> Self {
        Self::of(&Sgd::smooth())
    }

    /// The trainer with these settings and `seed`.
    pub fn sgd(&self, seed: u64) -> Sgd {
        Sgd {
            lr: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            epochs: self.epochs,
            batch_size: self.batch_size,
            seed,
        }
    }

    /// `lr=… batch=… epochs=… momentum=… wd=…`, as the output lines and cache keys write it.
    pub fn name(&self) -> String {
        format!(
            "lr={} batch={} epochs={} momentum={} wd={}",
            self.lr, self.batch_size, self.epochs, self.momentum, self.weight_decay
        )
    }
}

/// Which retraining the LDS is measured against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    /// Run 0 with weight 0 on the dropped examples.
    SameSeed,
    /// Fresh models on the subsets, other seeds.
    OtherSeeds,
}

impl Truth {
    /// `same-seed` or `other-seeds`.
    pub fn name(self) -> &'static str {
        match self {
            Truth::SameSeed => "same-seed",
            Truth::OtherSeeds => "other-seeds",
        }
    }
}

/// Settings of the protocol.
#[derive(Debug, Clone)]
pub struct MetagradConfig {
    /// Model families.
    pub families: Vec<Family>,
    /// Training set size.
    pub n_train: usize,
    /// Targets (from the held-out digits).
    pub n_targets: usize,
    /// Subsets J per drop fraction.
    pub subsets: usize,
    /// Drop fractions d (each subset keeps 1 − d of the examples).
    pub drops: Vec<f64>,
    /// Truths to measure against.
    pub truths: Vec<Truth>,
    /// Ensemble sizes M (the largest is the number of runs).
    pub ensembles: Vec<usize>,
    /// TRAK's projection dimension (0: no TRAK and no grad-dot rows, e.g. for the settings
    /// map).
    pub k: usize,
    /// Where to cache the truths' margins (`None`: no cache).
    pub cache_dir: Option<PathBuf>,
    /// Seed of the split, the subsets and the projection.
    pub seed: u64,
    /// Progress on stderr.
    pub verbose: bool,
}

impl MetagradConfig {
    /// Both families, 4,000 train, 100 targets, J = 100 subsets at drops 1 %, 5 %, 50 %,
    /// both truths, M ∈ {1, 5, 20}, k = 2048.
    pub fn full() -> Self {
        Self {
            families: vec![Family::LogReg, Family::Mlp],
            n_train: 4000,
            n_targets: 100,
            subsets: 100,
            drops: vec![0.01, 0.05, 0.5],
            truths: vec![Truth::SameSeed, Truth::OtherSeeds],
            ensembles: vec![1, 5, 20],
            k: 2048,
            cache_dir: Some(PathBuf::from("target/lds-cache")),
            seed: 0,
            verbose: true,
        }
    }

    /// Seconds: 1,000 train, 20 targets, J = 40 at drop 5 %, the same-seed truth, M = 1,
    /// k = 512, no cache.
    pub fn quick() -> Self {
        Self {
            n_train: 1000,
            n_targets: 20,
            subsets: 40,
            drops: vec![0.05],
            truths: vec![Truth::SameSeed],
            ensembles: vec![1],
            k: 512,
            cache_dir: None,
            verbose: false,
            ..Self::full()
        }
    }

    fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[metagrad] {}", msg.as_ref());
        }
    }

    /// The LDS protocol's configuration for one drop fraction (its truth cache and masks).
    fn bench(&self, drop: f64) -> BenchConfig {
        BenchConfig {
            n_train: self.n_train,
            n_targets: self.n_targets,
            subsets: self.subsets,
            alpha: 1.0 - drop,
            cache_dir: self.cache_dir.clone(),
            seed: self.seed,
            verbose: self.verbose,
            ..BenchConfig::quick()
        }
    }
}

/// One LDS measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct MetagradRow {
    /// Model family.
    pub family: Family,
    /// The trainer settings.
    pub training: Training,
    /// Drop fraction.
    pub drop: f64,
    /// The truth.
    pub truth: Truth,
    /// `metagrad`, `trak`, `grad-dot` or `random`.
    pub method: &'static str,
    /// Ensemble size.
    pub m: usize,
    /// Mean LDS over the targets.
    pub lds: f64,
}

impl MetagradRow {
    /// `METAGRAD family=… drop=… truth=… method=… M=… lds=… settings=…`.
    pub fn line(&self) -> String {
        format!(
            "METAGRAD family={} drop={} truth={} method={} M={} lds={:.4} settings=\"{}\"",
            self.family.name(),
            self.drop,
            self.truth.name(),
            self.method,
            self.m,
            self.lds,
            self.training.name()
        )
    }
}

/// One family's runs: the split, the metagradients of every seed, TRAK's scores per M.
pub struct FamilyRuns {
    /// The family.
    pub family: Family,
    /// The settings.
    pub training: Training,
    /// Held-out accuracy of run 0.
    pub accuracy: f64,
    /// Metagradients of each run (seed = index).
    pub runs: Vec<Metagradients<Mlp<Margin>>>,
    /// Default TRAK scores on the first M checkpoints, per ensemble size M.
    pub trak: Vec<(usize, Scores)>,
    /// grad-dot on checkpoint 0 and random scores.
    pub baselines: Vec<(&'static str, Scores)>,
}

/// The split: training samples, targets, and the 1,000 held-out digits.
pub fn split(cfg: &MetagradConfig) -> Result<(Vec<Sample>, Vec<Sample>, Vec<Sample>)> {
    let (train, held_out) = crate::mnist_split(cfg.n_train, 1000, cfg.seed)?;
    let held_out = held_out.samples();
    if cfg.n_targets > held_out.len() {
        return Err(Error::InvalidParameter {
            parameter: "targets",
            value: cfg.n_targets.to_string(),
            expected: "at most the 1,000 held-out digits".into(),
        });
    }
    Ok((
        train.samples(),
        held_out[..cfg.n_targets].to_vec(),
        held_out,
    ))
}

/// Trains the runs of `family` under `training` and attributes the targets with every
/// method.
pub fn family_runs(
    cfg: &MetagradConfig,
    family: Family,
    training: Training,
    data: &(Vec<Sample>, Vec<Sample>, Vec<Sample>),
) -> Result<FamilyRuns> {
    let (train, targets, held_out) = data;
    let m_max = *cfg
        .ensembles
        .iter()
        .max()
        .ok_or(Error::Empty("ensembles"))?;
    let t0 = Instant::now();
    let runs = (0..m_max as u64)
        .map(|s| run_of(family, training, s, train, targets, Precision::F64))
        .collect::<Result<Vec<_>>>()?;
    let name = family.name();
    cfg.log(format!(
        "{name}: {m_max} metagradient runs in {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    let accuracy = runs[0].model.accuracy(held_out)?;
    if cfg.k == 0 {
        let random = (
            "random",
            random_scores(train.len(), targets.len(), cfg.seed),
        );
        let (trak, baselines) = (Vec::new(), vec![random]);
        return Ok(FamilyRuns {
            family,
            training,
            accuracy,
            runs,
            trak,
            baselines,
        });
    }
    let trak = Trak::builder().proj_dim(cfg.k).seed(cfg.seed).build()?;
    let models: Vec<_> = runs.iter().map(|r| r.model.clone()).collect();
    let (feats, psis) = featurize_all(&trak, &models, train, targets)?;
    let index = feats.finalize()?;
    let trak = cfg
        .ensembles
        .iter()
        .map(|&m| {
            let t: Vec<_> = (0..m).map(|i| (i as u64, psis[i].view())).collect();
            Ok((m, index.score_features(&t)?))
        })
        .collect::<Result<_>>()?;
    let mut baselines = baseline_scores(&feats, &psis, 1, cfg.seed)?;
    baselines.retain(|(name, _)| *name != "grad-cos");
    Ok(FamilyRuns {
        family,
        training,
        accuracy,
        runs,
        trak,
        baselines,
    })
}

/// Run `seed` of `family` (initialisation and order from `seed`) and its metagradients for
/// all of `targets` in one pass.
pub(crate) fn run_of(
    family: Family,
    training: Training,
    seed: u64,
    train: &[Sample],
    targets: &[Sample],
    precision: Precision,
) -> Result<Metagradients<Mlp<Margin>>> {
    let init = Mlp::new(&family.sizes(), Margin, seed)?;
    let opts = MetagradOptions {
        targets_per_pass: targets.len().max(1),
        precision,
        ..MetagradOptions::default()
    };
    metagradients(&training.sgd(seed), &init, train, targets, &opts)
}

/// The truth of `truth` at drop fraction `drop` for the runs' family and settings.
pub fn truth_of(
    cfg: &MetagradConfig,
    runs: &FamilyRuns,
    drop: f64,
    truth: Truth,
    data: &(Vec<Sample>, Vec<Sample>, Vec<Sample>),
) -> Result<GroundTruth> {
    let (train, targets, _) = data;
    let bench = cfg.bench(drop);
    let family = runs.family;
    let training = runs.training;
    let settings = format!(
        "sizes={:?} {} truth={}",
        family.sizes(),
        training.name(),
        truth.name()
    );
    let margins = |m: &Mlp<Margin>| -> Result<Vec<f32>> {
        Ok(m.outputs(targets)?.iter().map(|v| v.f).collect())
    };
    match truth {
        Truth::SameSeed => {
            // The library's drop sets: the complements of the protocol's subset masks.
            let drops = DropSets::new(train.len(), drop, cfg.subsets, subset_seed(&bench))?;
            let gt = ground_truth_masked(
                &bench,
                family.name(),
                &settings,
                train,
                targets,
                |j, _, _| {
                    let mut model = Mlp::new(&family.sizes(), Margin, 0)?;
                    training
                        .sgd(0)
                        .fit_weighted(&mut model, train, &drops.weights(j))?;
                    margins(&model)
                },
            )?;
            assert_eq!(
                drops.mask(),
                gt.masks.mapv(|kept| !kept),
                "drop sets = complements"
            );
            Ok(gt)
        }
        Truth::OtherSeeds => ground_truth_with(
            &bench,
            family.name(),
            &settings,
            train,
            targets,
            |subset, seed| {
                let mut model = Mlp::new(&family.sizes(), Margin, seed)?;
                training.sgd(seed).fit(&mut model, subset)?;
                margins(&model)
            },
        ),
    }
}

/// The mean of the first `m` runs' metagradients.
pub fn ensemble(runs: &[Metagradients<Mlp<Margin>>], m: usize) -> Scores {
    let mut sum: Array2<f32> = runs[0].scores.values().to_owned();
    for r in &runs[1..m] {
        sum += &r.scores.values();
    }
    Scores::new(sum / m as f32)
}

/// Every method's LDS against one truth.
pub fn rows(
    cfg: &MetagradConfig,
    runs: &FamilyRuns,
    drop: f64,
    truth: Truth,
    gt: &GroundTruth,
) -> Result<Vec<MetagradRow>> {
    // The same-seed truth is a leave-out: its LDS is the library's, of the predicted change
    // −Σ_{i∈D_j} τ_i (the same ranks as Σ over the kept examples).
    let drops = match truth {
        Truth::SameSeed => Some(DropSets::from_mask(gt.masks.mapv(|kept| !kept))?),
        Truth::OtherSeeds => None,
    };
    let lds_of = |s: &Scores| -> Result<f64> {
        Ok(match &drops {
            Some(d) => d.lds(s.values(), gt.margins.view())?,
            None => lds(gt.masks.view(), s.values(), gt.margins.view())?,
        }
        .mean)
    };
    let row = |method, m, lds| MetagradRow {
        family: runs.family,
        training: runs.training,
        drop,
        truth,
        method,
        m,
        lds,
    };
    let mut out = Vec::new();
    for &m in &cfg.ensembles {
        out.push(row("metagrad", m, lds_of(&ensemble(&runs.runs, m))?));
    }
    for (m, s) in &runs.trak {
        out.push(row("trak", *m, lds_of(s)?));
    }
    for (name, s) in &runs.baselines {
        out.push(row(name, 1, lds_of(s)?));
    }
    Ok(out)
}

/// What [`run`] measured.
pub struct MetagradOutput {
    /// Every LDS.
    pub rows: Vec<MetagradRow>,
    /// Held-out accuracy of each family's run 0.
    pub accuracy: Vec<(Family, Training, f64)>,
}

/// The whole protocol under `training(family)`: every family, drop and truth.
pub fn run(cfg: &MetagradConfig, training: impl Fn(Family) -> Training) -> Result<MetagradOutput> {
    let data = split(cfg)?;
    let mut out = MetagradOutput {
        rows: Vec::new(),
        accuracy: Vec::new(),
    };
    for &family in &cfg.families {
        let runs = family_runs(cfg, family, training(family), &data)?;
        cfg.log(format!(
            "{}: held-out accuracy {:.3}",
            family.name(),
            runs.accuracy
        ));
        out.accuracy.push((family, runs.training, runs.accuracy));
        for &drop in &cfg.drops {
            for &truth in &cfg.truths {
                let gt = truth_of(cfg, &runs, drop, truth, &data)?;
                out.rows.extend(rows(cfg, &runs, drop, truth, &gt)?);
            }
        }
    }
    Ok(out)
}

/// What one metagradient pass cost.
#[derive(Debug, Clone, PartialEq)]
pub struct CostRow {
    /// The family.
    pub family: Family,
    /// Targets in the pass.
    pub targets_per_pass: usize,
    /// Wall-clock seconds per target (the whole call, first pass included).
    pub s_per_target: f64,
    /// One plain training run ([`Sgd::fit`], single-threaded as the trainer is), best of 5.
    pub train_s: f64,
    /// The memory the replay plan held (trajectory + adjoint).
    pub planned_mb: f64,
    /// The process's peak resident set so far (VmHWM), MB.
    pub peak_rss_mb: f64,
}

impl CostRow {
    /// `METAGRAD_COST family=… targets_per_pass=… s_per_target=… train_runs_per_target=…
    /// peak_rss_mb=… planned_mb=… train_s=… threads=…`.
    pub fn line(&self) -> String {
        format!(
            "METAGRAD_COST family={} targets_per_pass={} s_per_target={:.4} train_runs_per_target={:.3} peak_rss_mb={:.0} planned_mb={:.0} train_s={:.3} threads={}",
            self.family.name(),
            self.targets_per_pass,
            self.s_per_target,
            self.s_per_target / self.train_s,
            self.peak_rss_mb,
            self.planned_mb,
            self.train_s,
            rayon::current_num_threads()
        )
    }
}

/// Peak resident set size of this process in MB (VmHWM of /proc/self/status; 0 where it
/// cannot be read).
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok());
    kb.unwrap_or(0.0) / 1024.0
}

/// The cost of one pass over the first `targets` targets, against a plain training run of
/// the same model and data measured in the same process.
pub fn cost(
    family: Family,
    training: Training,
    train: &[Sample],
    targets: &[Sample],
) -> Result<CostRow> {
    let init = Mlp::new(&family.sizes(), Margin, 0)?;
    let sgd = training.sgd(0);
    let mut train_s = f64::INFINITY;
    for _ in 0..5 {
        let mut m = init.clone();
        let t = Instant::now();
        sgd.fit(&mut m, train)?;
        train_s = train_s.min(t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let out = run_of(family, training, 0, train, targets, Precision::F64)?;
    let total = t.elapsed().as_secs_f64();
    Ok(CostRow {
        family,
        targets_per_pass: targets.len(),
        s_per_target: total / targets.len() as f64,
        train_s,
        planned_mb: out.plan.bytes as f64 / 1e6,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// f32 against f64 accumulation of the adjoint on one run: the relative L1 difference of the
/// metagradients, `METAGRAD_PRECISION family=… targets=… rel_l1_diff=… max_abs_diff=…`.
pub fn precision_line(
    family: Family,
    training: Training,
    train: &[Sample],
    targets: &[Sample],
) -> Result<String> {
    let at = |precision| run_of(family, training, 0, train, targets, precision);
    let a = at(Precision::F64)?.scores.into_inner();
    let b = at(Precision::F32)?.scores.into_inner();
    let diff = &a - &b;
    let rel = diff.mapv(|d| d.abs() as f64).sum() / a.mapv(|v| v.abs() as f64).sum();
    let max = diff.iter().fold(0.0f32, |m, d| m.max(d.abs()));
    Ok(format!(
        "METAGRAD_PRECISION family={} targets={} rel_l1_diff={rel:.3e} max_abs_diff={max:.3e} max_abs={:.3e}",
        family.name(),
        targets.len(),
        a.iter().fold(0.0f32, |m, v| m.max(v.abs()))
    ))
}
