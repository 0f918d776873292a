//! The LDS protocol of trak-demo (split, α-subsets, cached retrained margins, Spearman over
//! subsets) applied to the candle CNN: subset models and checkpoints are trained in candle,
//! and the checkpoints are attributed through the adapter with each projector.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use ndarray::ArrayView2;
use rayon::prelude::*;
use trak::data::Sample;
use trak::eval::lds;
use trak::output::Margin;
use trak::{Error, ProjectorKind, Result, Scores, Trak, Weighting};
use trak_candle::{CandleContext, CandleModel, SampleCollate};
use trak_demo::protocol::{BenchConfig, baseline_scores, featurize_all, weighting_method};
use trak_demo::truth::{GroundTruth, ground_truth_with};

use super::mnist_cnn::{CHANNELS, MnistCnn, Training};

/// An adapter over one trained CNN.
pub type CnnModel = CandleModel<Sample, MnistCnn, SampleCollate, Margin>;

/// Settings of a CNN run.
pub struct CnnConfig {
    /// Split, subsets, M, k, seed, cache (trak-demo's protocol settings).
    pub bench: BenchConfig,
    /// How every CNN (checkpoints and subset models) is trained.
    pub training: Training,
    /// Projectors to attribute with.
    pub projectors: Vec<ProjectorKind>,
}

impl CnnConfig {
    /// 4,000 train / 200 targets, J = 100 subsets of 2,000, M ∈ {1, 5}, k ∈ {512, 2048},
    /// 8 epochs; factored, sparse and dense projectors.
    pub fn full() -> Self {
        let bench = BenchConfig {
            subsets: 100,
            ensembles: vec![1, 5],
            proj_dims: vec![512, 2048],
            ..BenchConfig::full()
        };
        Self {
            bench,
            training: Training::default(),
            projectors: vec![
                ProjectorKind::FACTORED,
                ProjectorKind::SPARSE,
                ProjectorKind::Rademacher,
            ],
        }
    }

    /// 1,000 train / 40 targets, J = 32 subsets, M ∈ {1, 3}, k = 512, 4 epochs: under a
    /// minute on 2 cores.
    pub fn quick() -> Self {
        let mut c = Self::full();
        c.bench.n_train = 1000;
        c.bench.n_targets = 40;
        c.bench.subsets = 32;
        c.bench.ensembles = vec![1, 3];
        c.bench.proj_dims = vec![512];
        c.training.epochs = 4;
        c
    }
}

/// `factored`, `sparse` or `dense` (any other kind by its debug name).
pub fn projector_name(kind: ProjectorKind) -> String {
    match kind {
        k if k == ProjectorKind::FACTORED => "factored".into(),
        ProjectorKind::FactoredSmall => "factored-small".into(),
        ProjectorKind::Factored { expansion } => format!("factored-e{expansion}"),
        ProjectorKind::Rademacher => "dense".into(),
        k if k == ProjectorKind::SPARSE => "sparse".into(),
        k => format!("{k:?}"),
    }
}

/// One LDS measurement.
#[derive(Debug, Clone)]
pub struct CnnRow {
    /// `trak`, `trak-gn`, `trak-q` (weighted kernels), `grad-dot`, `grad-cos` or `random`.
    pub method: &'static str,
    /// Projector of the features.
    pub projector: ProjectorKind,
    /// Projection dimension.
    pub k: usize,
    /// Checkpoints.
    pub m: usize,
    /// Mean LDS over targets.
    pub value: f64,
}

impl CnnRow {
    /// `LDS family=cnn method=… projector=… k=… M=… value=…`.
    pub fn line(&self) -> String {
        format!(
            "LDS family=cnn method={} projector={} k={} M={} value={:.4}",
            self.method,
            projector_name(self.projector),
            self.k,
            self.m,
            self.value
        )
    }
}

/// TRAK scores kept for pictures: the first projector at the largest k and M, under the
/// library's default kernel weighting when the run measured it (else plain TRAK).
pub struct Kept {
    /// The method, as the rows name it.
    pub method: &'static str,
    /// The projector.
    pub projector: ProjectorKind,
    /// Projection dimension.
    pub k: usize,
    /// Ensemble size.
    pub m: usize,
    /// The scores' LDS.
    pub lds: f64,
    /// The scores.
    pub scores: Scores,
}

impl Kept {
    /// What the scores are, for a picture's title.
    pub fn describe(&self) -> String {
        let method = trak_demo::protocol::method_title(self.method);
        format!(
            "MNIST CNN, {method}, {} projector, k = {}, M = {} (LDS {:.3})",
            projector_name(self.projector),
            self.k,
            self.m,
            self.lds
        )
    }
}

/// What a run measured: the rows, and the TRAK scores kept for pictures.
pub struct CnnOutput {
    /// All rows.
    pub rows: Vec<CnnRow>,
    /// TRAK scores kept for pictures.
    pub scores: Option<Kept>,
    /// Test accuracy of each checkpoint on the targets.
    pub accuracy: Vec<f64>,
}

/// Runs the protocol.
pub fn run(cfg: &CnnConfig) -> Result<CnnOutput> {
    let b = &cfg.bench;
    let (train, targets, _, _) = trak_demo::protocol::split(b)?;
    let t = cfg.training;
    let settings =
        format!("cnn channels={CHANNELS:?} training={t:?} init=chacha8-uniform pool=ops");
    let truth = ground_truth_with(b, "cnn", &settings, &train, &targets, |subset, seed| {
        let (net, _) = MnistCnn::train(subset, seed, t).ctx("training the CNN")?;
        net.margins(&targets).ctx("training the CNN")
    })?;
    let m_max = *b.ensembles.iter().max().ok_or(Error::Empty("ensembles"))?;
    b.log(format!("cnn: training {m_max} checkpoints"));
    let nets: Vec<MnistCnn> = (0..m_max as u64)
        .into_par_iter()
        .map(|seed| {
            MnistCnn::train(&train, seed, t)
                .map(|(n, _)| n)
                .ctx("training the CNN")
        })
        .collect::<Result<_>>()?;
    let accuracy = nets
        .iter()
        .map(|n| n.accuracy(&targets).ctx("training the CNN"))
        .collect::<Result<_>>()?;
    let models: Vec<CnnModel> = nets
        .into_iter()
        .map(|n| {
            CandleModel::builder(n, SampleCollate::new(&[1, 28, 28]), Margin).build(&train[..8])
        })
        .collect::<Result<_>>()?;
    let mut out = CnnOutput {
        rows: Vec::new(),
        scores: None,
        accuracy,
    };
    for &kind in &cfg.projectors {
        for &k in &b.proj_dims {
            let keep = out.scores.is_none() && k == *b.proj_dims.iter().max().unwrap();
            let (rows, scores) = projector_rows(b, kind, k, &models, &train, &targets, &truth)?;
            out.rows.extend(rows);
            if keep {
                out.scores = scores;
            }
        }
    }
    Ok(out)
}

/// TRAK and the baselines for one projector and k, at every M.
fn projector_rows(
    b: &BenchConfig,
    kind: ProjectorKind,
    k: usize,
    models: &[CnnModel],
    train: &[Sample],
    targets: &[Sample],
    truth: &GroundTruth,
) -> Result<(Vec<CnnRow>, Option<Kept>)> {
    let t0 = std::time::Instant::now();
    // Gauss-Newton rows need the curvature, recorded while featurising.
    let gn = b.weightings.contains(&Weighting::GaussNewton);
    let trak = Trak::builder()
        .proj_dim(k)
        .projector(kind)
        .seed(b.seed)
        .weighting(if gn {
            Weighting::GaussNewton
        } else {
            Weighting::None
        })
        .build()?;
    let (feats, psis) = featurize_all(&trak, models, train, targets)?;
    let feats = feats.with_weighting(Weighting::None);
    b.log(format!(
        "cnn: {} k = {k} featurised in {:.1} s",
        projector_name(kind),
        t0.elapsed().as_secs_f64()
    ));
    let index = feats.finalize()?;
    let weighted = b
        .weightings
        .iter()
        .map(|&w| Ok((weighting_method(w), feats.with_weighting(w).finalize()?)))
        .collect::<Result<Vec<_>>>()?;
    let value = |s: &Scores| -> Result<f64> {
        Ok(lds(truth.masks.view(), s.values(), truth.margins.view())?.mean)
    };
    let mut rows = Vec::new();
    let mut kept = None;
    let row = |method, m, value| CnnRow {
        method,
        projector: kind,
        k,
        m,
        value,
    };
    for &m in &b.ensembles {
        let t: Vec<(u64, ArrayView2<'_, f32>)> =
            (0..m).map(|i| (i as u64, psis[i].view())).collect();
        let scores = index.score_features(&t)?;
        let lds = value(&scores)?;
        rows.push(row("trak", m, lds));
        let keep = |method, lds, scores| Kept {
            method,
            projector: kind,
            k,
            m,
            lds,
            scores,
        };
        kept = Some(keep("trak", lds, scores));
        for &(method, ref wi) in &weighted {
            let scores = wi.score_features(&t)?;
            let lds = value(&scores)?;
            rows.push(row(method, m, lds));
            if method == weighting_method(Weighting::default()) {
                kept = Some(keep(method, lds, scores));
            }
        }
        let seed = b.seed ^ ((k as u64) << 32) ^ m as u64;
        for (method, s) in baseline_scores(&feats, &psis, m, seed)? {
            rows.push(row(method, m, value(&s)?));
        }
    }
    Ok((rows, kept))
}
