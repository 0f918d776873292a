//! The LDS protocol on MNIST-5k, for the built-in model families.
//!
//! 1. Split: the 5,000 digits are shuffled with the benchmark seed; the first `n_train` are the
//!    training set, the next `n_targets` of the rest are the targets (never trained on).
//! 2. Ground truth ([`crate::truth`]): `subsets` random α-subsets S_j of the training set; a
//!    model of the family is trained on each (seed 1,000,000 + j) and its margin on every
//!    target recorded (J × m), cached on disk.
//! 3. Checkpoints: `checkpoints` models trained on the full training set (seeds 0, 1, …).
//! 4. Features: every checkpoint featurised once at the largest k; smaller k use
//!    [`TrainFeatures::prefix`] (the first k columns of the same projection, rescaled).
//! 5. Methods, for each k and each M: TRAK (ensemble of the first M checkpoints) under each
//!    ridge rule, gradient dot product and cosine (averaged over the same M checkpoints), and
//!    random scores. LDS = mean over targets of the Spearman correlation over subsets.

use std::path::PathBuf;

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::data::{Dataset, Sample};
use trak::eval::{grad_dot, lds, random_scores};
use trak::models::Mlp;
use trak::output::Margin;
use trak::project::dense::prefix_features;
use trak::{Error, ProjectorKind, Result, Ridge, Scores, TrainFeatures, Trak, Weighting};

use crate::family::Family;
use crate::truth::{GroundTruth, ground_truth};

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
    /// Kernel weightings evaluated next to plain TRAK on the dense features (rows
    /// `trak-gn`, `trak-q`; see [`weighting_method`]), at every k, M and ridge rule.
    pub weightings: Vec<Weighting>,
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
            extra_projectors: vec![ProjectorKind::SPARSE, ProjectorKind::FACTORED],
            weightings: vec![Weighting::GaussNewton, Weighting::Q],
            cache_dir: Some(PathBuf::from("target/lds-cache")),
            seed: 0,
            verbose: true,
        }
    }

    /// Prints `msg` to stderr when verbose.
    pub fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("[eval] {}", msg.as_ref());
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
/// `trak-sparse` (s = 1, the default) or `trak-sparse-s<s>`, `trak-factored` (the default
/// expansion) or `trak-factored-e<expansion>`, `trak-factored-small`, `trak-identity`.
pub fn method_name(kind: ProjectorKind) -> String {
    match kind {
        ProjectorKind::Rademacher => "trak".into(),
        ProjectorKind::Gaussian => "trak-gaussian".into(),
        ProjectorKind::Identity => "trak-identity".into(),
        ProjectorKind::FactoredSmall => "trak-factored-small".into(),
        k @ ProjectorKind::Factored { expansion } => {
            if k == ProjectorKind::FACTORED {
                "trak-factored".into()
            } else {
                format!("trak-factored-e{expansion}")
            }
        }
        k @ ProjectorKind::Sparse { s } => {
            if k == ProjectorKind::SPARSE {
                "trak-sparse".into()
            } else {
                format!("trak-sparse-s{s}")
            }
        }
    }
}

/// The method name of dense TRAK under a kernel weighting: `trak` (plain), `trak-gn`
/// (Gauss-Newton), `trak-q` (Q).
pub fn weighting_method(w: Weighting) -> &'static str {
    match w {
        Weighting::GaussNewton => "trak-gn",
        Weighting::Q => "trak-q",
        _ => "trak",
    }
}

/// A method as a picture's title writes it: "TRAK, Q-weighted kernel" for `trak-q`, …
pub fn method_title(method: &str) -> &str {
    match method {
        "trak" => "TRAK, plain kernel",
        "trak-q" => "TRAK, Q-weighted kernel",
        "trak-gn" => "TRAK, Gauss-Newton kernel",
        other => other,
    }
}

/// A ridge rule as the tables write it: `2·tr/n`, `1e-2·tr/k`, or λ itself.
pub fn ridge_name(r: &Ridge) -> String {
    match r {
        Ridge::MeanSquaredNorm(c) => format!("{c}·tr/n"),
        Ridge::Relative(c) => format!("{c:e}·tr/k"),
        Ridge::Absolute(l) => format!("{l:e}"),
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

/// TRAK scores of one family kept for inspection (pictures): the configuration with the
/// largest M, k = 2048 (or the largest k below it) and the first ridge rule, under the
/// library's default kernel weighting when the run measured it, else plain TRAK.
pub struct Snapshot {
    /// Model family.
    pub family: Family,
    /// The method, as the LDS rows name it (`trak`, `trak-q`, …).
    pub method: &'static str,
    /// Projection dimension.
    pub k: usize,
    /// Ensemble size.
    pub m: usize,
    /// The ridge rule.
    pub ridge: Ridge,
    /// The LDS of these scores (mean over the targets).
    pub lds: f64,
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

/// The benchmark's split: (training samples, target samples, training set, target set).
pub fn split(cfg: &BenchConfig) -> Result<(Vec<Sample>, Vec<Sample>, Dataset, Dataset)> {
    let (train, targets) = crate::mnist_split(cfg.n_train, cfg.n_targets, cfg.seed)?;
    Ok((train.samples(), targets.samples(), train, targets))
}

/// Runs the protocol.
pub fn run(cfg: &BenchConfig) -> Result<BenchOutput> {
    if cfg.proj_dims.is_empty() {
        return Err(Error::Empty("proj_dims"));
    }
    if cfg.ensembles.is_empty() {
        return Err(Error::Empty("ensembles"));
    }
    if cfg.ridges.is_empty() {
        return Err(Error::Empty("ridges"));
    }
    let (train, targets, _, _) = split(cfg)?;
    let mut out = BenchOutput {
        rows: Vec::new(),
        snapshots: Vec::new(),
    };
    for &family in &cfg.families {
        let fam = Fam::new(cfg, family, &train, &targets)?;
        out.rows.extend(fam.dense_rows()?);
        for &kind in &cfg.extra_projectors {
            out.rows.extend(fam.projector_rows(kind)?);
        }
        out.snapshots.extend(fam.snapshot.into_inner());
    }
    Ok(out)
}

/// Training features of every checkpoint (ids 0, 1, … in order) and each one's target
/// features, under `trak`: what every protocol of the workspace attributes with.
pub fn featurize_all<M: trak::Model>(
    trak: &Trak,
    models: &[M],
    train: &[M::Example],
    targets: &[M::Example],
) -> Result<(TrainFeatures, Vec<Array2<f32>>)> {
    let mut feats = trak.featurizer();
    let mut psis = Vec::with_capacity(models.len());
    for (id, m) in models.iter().enumerate() {
        feats.featurize(id as u64, m, train)?;
        psis.push(trak.features(id as u64, m, targets)?);
    }
    Ok((feats, psis))
}

/// The baselines on the first `m` checkpoints' features, in row order: `grad-dot` and
/// `grad-cos` (averaged over the checkpoints), then `random` scores drawn with `seed`.
pub fn baseline_scores(
    feats: &TrainFeatures,
    psis: &[Array2<f32>],
    m: usize,
    seed: u64,
) -> Result<Vec<(&'static str, Scores)>> {
    let phis: Vec<ArrayView2<'_, f32>> = (0..m)
        .map(|i| {
            feats
                .features(i as u64)
                .ok_or(Error::UnknownCheckpoint(i as u64))
        })
        .collect::<Result<_>>()?;
    let ps: Vec<ArrayView2<'_, f32>> = psis[..m].iter().map(|p| p.view()).collect();
    let n_targets = psis.first().map_or(0, |p| p.nrows());
    Ok(vec![
        ("grad-dot", grad_dot(&phis, &ps, false)?),
        ("grad-cos", grad_dot(&phis, &ps, true)?),
        ("random", random_scores(phis[0].nrows(), n_targets, seed)),
    ])
}

/// The finalised index, or `None` when a kernel is singular (λ = 0 with k ≥ n, …).
fn finalize_or_singular(feats: &TrainFeatures) -> Result<Option<trak::TrakIndex>> {
    match feats.finalize() {
        Ok(i) => Ok(Some(i)),
        Err(Error::NotPositiveDefinite { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// One family's protocol: its ground truth, checkpoints and dense features.
struct Fam<'a> {
    cfg: &'a BenchConfig,
    family: Family,
    train: &'a [Sample],
    targets: &'a [Sample],
    truth: GroundTruth,
    models: Vec<Mlp<Margin>>,
    snapshot: std::cell::RefCell<Option<Snapshot>>,
}

impl<'a> Fam<'a> {
    fn new(
        cfg: &'a BenchConfig,
        family: Family,
        train: &'a [Sample],
        targets: &'a [Sample],
    ) -> Result<Self> {
        let truth = ground_truth(cfg, family, train, targets)?;
        let m_max = *cfg.ensembles.iter().max().expect("checked non-empty");
        cfg.log(format!("{}: training {m_max} checkpoints", family.name()));
        let models = (0..m_max as u64)
            .into_par_iter()
            .map(|seed| family.train(train, seed))
            .collect::<Result<_>>()?;
        let snapshot = Default::default();
        Ok(Self {
            cfg,
            family,
            train,
            targets,
            truth,
            models,
            snapshot,
        })
    }

    fn lds(&self, scores: &Scores) -> Result<f64> {
        let t = &self.truth;
        Ok(lds(t.masks.view(), scores.values(), t.margins.view())?.mean)
    }

    fn row(
        &self,
        method: &str,
        k: usize,
        m: usize,
        ridge: Option<Ridge>,
        value: Option<f64>,
    ) -> LdsRow {
        let (family, method) = (self.family, method.to_string());
        LdsRow {
            family,
            method,
            k,
            m,
            ridge,
            value,
        }
    }

    /// Training features of every checkpoint and target features, under `trak`.
    fn featurize(&self, trak: &Trak) -> Result<(TrainFeatures, Vec<Array2<f32>>)> {
        featurize_all(trak, &self.models, self.train, self.targets)
    }

    /// The dense TRAK rows (every k, ridge and M) and the baselines on the same features.
    fn dense_rows(&self) -> Result<Vec<LdsRow>> {
        let cfg = self.cfg;
        let k_max = *cfg.proj_dims.iter().max().expect("checked non-empty");
        cfg.log(format!(
            "{}: featurising at k = {k_max}",
            self.family.name()
        ));
        // Gauss-Newton rows need each example's curvature, recorded while featurising.
        let gn = cfg.weightings.contains(&Weighting::GaussNewton);
        let record = if gn {
            Weighting::GaussNewton
        } else {
            Weighting::None
        };
        let trak = Trak::builder()
            .proj_dim(k_max)
            .seed(cfg.seed)
            .weighting(record)
            .build()?;
        let (feats, psis) = self.featurize(&trak)?;
        let feats = feats.with_weighting(Weighting::None);
        let mut rows = Vec::new();
        for &k in &cfg.proj_dims {
            let fk = if k == k_max {
                feats.clone()
            } else {
                feats.prefix(k)?
            };
            let psi_k = psis
                .iter()
                .map(|p| {
                    if k == k_max {
                        Ok(p.clone())
                    } else {
                        prefix_features(p.view(), k)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            for (ri, &ridge) in cfg.ridges.iter().enumerate() {
                rows.extend(self.trak_rows(&fk, &psi_k, k, ridge, ri == 0)?);
                for &w in &cfg.weightings {
                    let fw = fk.with_weighting(w);
                    let method = weighting_method(w);
                    let what = (method, ri == 0);
                    rows.extend(self.weighted_rows(&fw, &psi_k, k, ridge, what)?);
                }
            }
            rows.extend(self.baseline_rows(&fk, &psi_k, k)?);
        }
        Ok(rows)
    }

    /// TRAK at dimension `k` under one ridge rule, for every M; keeps the snapshot.
    fn trak_rows(
        &self,
        fk: &TrainFeatures,
        psi_k: &[Array2<f32>],
        k: usize,
        ridge: Ridge,
        first_ridge: bool,
    ) -> Result<Vec<LdsRow>> {
        let cfg = self.cfg;
        cfg.log(format!("{}: k = {k}, {ridge:?}", self.family.name()));
        let index = finalize_or_singular(&fk.with_ridge(ridge)?)?;
        let mut rows = Vec::new();
        for &m in &cfg.ensembles {
            let Some(index) = &index else {
                rows.push(self.row("trak", k, m, Some(ridge), None));
                continue;
            };
            let t: Vec<(u64, ArrayView2<'_, f32>)> =
                (0..m).map(|i| (i as u64, psi_k[i].view())).collect();
            let scores = index.score_features(&t)?;
            let v = self.lds(&scores)?;
            if first_ridge {
                self.keep("trak", (k, m, ridge), scores, v);
            }
            rows.push(self.row("trak", k, m, Some(ridge), Some(v)));
        }
        Ok(rows)
    }

    /// Keeps the scores of `method` at (k, M, ridge) as the family's snapshot when k is 2048
    /// (or the largest k below it), M the largest M, and the method is plain TRAK or the library's default weighting
    /// (which replaces plain TRAK).
    fn keep(
        &self,
        method: &'static str,
        (k, m, ridge): (usize, usize, Ridge),
        scores: Scores,
        lds: f64,
    ) {
        let cfg = self.cfg;
        let k_snap = cfg.proj_dims.iter().copied().filter(|&k| k <= 2048).max();
        let k_snap = k_snap.unwrap_or(*cfg.proj_dims.iter().max().expect("non-empty"));
        let m_max = *cfg.ensembles.iter().max().expect("checked non-empty");
        let default = weighting_method(Weighting::default());
        if (k, m) != (k_snap, m_max) || (method != "trak" && method != default) {
            return;
        }
        let mut kept = self.snapshot.borrow_mut();
        if kept.as_ref().is_none_or(|old| old.method != default) {
            let truth = GroundTruth {
                masks: self.truth.masks.clone(),
                margins: self.truth.margins.clone(),
            };
            let family = self.family;
            *kept = Some(Snapshot {
                family,
                method,
                k,
                m,
                ridge,
                lds,
                scores,
                truth,
            });
        }
    }

    /// TRAK under a kernel weighting at dimension `k` and one ridge rule, for every M.
    fn weighted_rows(
        &self,
        fw: &TrainFeatures,
        psi_k: &[Array2<f32>],
        k: usize,
        ridge: Ridge,
        (method, first_ridge): (&'static str, bool),
    ) -> Result<Vec<LdsRow>> {
        let index = finalize_or_singular(&fw.with_ridge(ridge)?)?;
        let mut rows = Vec::new();
        for &m in &self.cfg.ensembles {
            let value = match self.scores_of(index.as_ref(), psi_k, m)? {
                None => None,
                Some(scores) => {
                    let v = self.lds(&scores)?;
                    if first_ridge {
                        self.keep(method, (k, m, ridge), scores, v);
                    }
                    Some(v)
                }
            };
            rows.push(self.row(method, k, m, Some(ridge), value));
        }
        Ok(rows)
    }

    /// LDS of the first `m` checkpoints' scores under `index` (`None` if singular).
    fn scores_of(
        &self,
        index: Option<&trak::TrakIndex>,
        psis: &[Array2<f32>],
        m: usize,
    ) -> Result<Option<Scores>> {
        let Some(index) = index else {
            return Ok(None);
        };
        let t: Vec<(u64, ArrayView2<'_, f32>)> =
            (0..m).map(|i| (i as u64, psis[i].view())).collect();
        Ok(Some(index.score_features(&t)?))
    }

    /// grad-dot, grad-cos and random at dimension `k`, for every M.
    fn baseline_rows(
        &self,
        fk: &TrainFeatures,
        psi_k: &[Array2<f32>],
        k: usize,
    ) -> Result<Vec<LdsRow>> {
        let mut rows = Vec::new();
        for &m in &self.cfg.ensembles {
            let seed = self.cfg.seed ^ ((k as u64) << 32) ^ m as u64;
            for (method, scores) in baseline_scores(fk, psi_k, m, seed)? {
                rows.push(self.row(method, k, m, None, Some(self.lds(&scores)?)));
            }
        }
        Ok(rows)
    }

    /// TRAK under another projector, at every k and M, with the first ridge rule.
    fn projector_rows(&self, kind: ProjectorKind) -> Result<Vec<LdsRow>> {
        let cfg = self.cfg;
        let method = method_name(kind);
        let mut rows = Vec::new();
        for &k in &cfg.proj_dims {
            let t0 = std::time::Instant::now();
            // Plain kernel, to compare with the dense `trak` row.
            let trak = Trak::builder()
                .proj_dim(k)
                .projector(kind)
                .seed(cfg.seed)
                .ridge(cfg.ridges[0])
                .weighting(Weighting::None)
                .build()?;
            let (feats, psis) = self.featurize(&trak)?;
            cfg.log(format!(
                "{}: {method} k = {k} (features: {}), featurised in {:.1} s",
                self.family.name(),
                psis[0].ncols(),
                t0.elapsed().as_secs_f64()
            ));
            let index = finalize_or_singular(&feats)?;
            for &m in &cfg.ensembles {
                let scores = self.scores_of(index.as_ref(), &psis, m)?;
                let v = scores.map(|s| self.lds(&s)).transpose()?;
                rows.push(self.row(&method, k, m, Some(cfg.ridges[0]), v));
            }
        }
        Ok(rows)
    }
}
