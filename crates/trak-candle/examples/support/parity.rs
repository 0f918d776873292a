//! The same MNIST MLP weights attributed twice: as the built-in `trak::models::Mlp` and as a
//! candle network through the adapter. Same projection seed, same ground truth.

// Shared by several examples and tests; not each uses every item.
#![allow(dead_code)]

use ndarray::{Array2, ArrayView2};
use rayon::prelude::*;
use trak::data::Sample;
use trak::eval::lds;
use trak::models::Mlp;
use trak::output::Margin;
use trak::{Model, ProjectorKind, Result, Trak};
use trak_candle::{CandleModel, SampleCollate};
use trak_demo::family::Family;
use trak_demo::protocol::{BenchConfig, featurize_all, split};
use trak_demo::truth::{GroundTruth, ground_truth};

use super::mlp_net::MlpNet;

/// What the parity run measured.
pub struct Parity {
    /// max over checkpoints and projectors of max |Δφ| / max |φ|.
    pub features_rel_err: f32,
    /// LDS of the built-in model's TRAK scores (dense projector).
    pub lds_builtin: f64,
    /// LDS of the adapter's TRAK scores (dense projector).
    pub lds_candle: f64,
}

/// max |a − b| / max |a|.
fn rel_err(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> f32 {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// LDS of TRAK with every checkpoint of `models` at dimension `k`, and the features it used
/// (training then target features of each checkpoint).
fn trak_lds<M: Model<Example = Sample>>(
    cfg: &BenchConfig,
    models: &[M],
    k: usize,
    (train, targets): (&[Sample], &[Sample]),
    truth: &GroundTruth,
) -> Result<(f64, Vec<Array2<f32>>)> {
    let trak = Trak::builder().proj_dim(k).seed(cfg.seed).build()?;
    let (feats, psis) = featurize_all(&trak, models, train, targets)?;
    let views: Vec<(u64, ArrayView2<'_, f32>)> = psis
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64, p.view()))
        .collect();
    let scores = feats.finalize()?.score_features(&views)?;
    let v = lds(truth.masks.view(), scores.values(), truth.margins.view())?.mean;
    let mut all = Vec::with_capacity(2 * models.len());
    for (i, psi) in psis.into_iter().enumerate() {
        all.push(feats.features(i as u64).expect("featurised").to_owned());
        all.push(psi);
    }
    Ok((v, all))
}

/// Runs the comparison with `m` checkpoints at dimension `k`.
pub fn run(cfg: &BenchConfig, m: usize, k: usize) -> Result<Parity> {
    let (train, targets, _, _) = split(cfg)?;
    let truth = ground_truth(cfg, Family::Mlp, &train, &targets)?;
    cfg.log(format!("parity: training {m} checkpoints"));
    let builtin: Vec<Mlp<Margin>> = (0..m as u64)
        .into_par_iter()
        .map(|seed| Family::Mlp.train(&train, seed))
        .collect::<Result<_>>()?;
    let candle = builtin
        .iter()
        .map(|b| {
            CandleModel::builder(MlpNet::from_builtin(b), SampleCollate::new(&[784]), Margin)
                .build(&train[..8])
        })
        .collect::<Result<Vec<_>>>()?;
    let (lds_builtin, fb) = trak_lds(cfg, &builtin, k, (&train, &targets), &truth)?;
    let (lds_candle, fc) = trak_lds(cfg, &candle, k, (&train, &targets), &truth)?;
    let mut err = fb
        .iter()
        .zip(&fc)
        .fold(0f32, |e, (a, b)| e.max(rel_err(a.view(), b.view())));
    let factored = Trak::builder()
        .proj_dim(k)
        .projector(ProjectorKind::FACTORED)
        .seed(cfg.seed)
        .build()?;
    for (b, c) in builtin.iter().zip(&candle) {
        let (fb, fc) = (
            factored.features(0, b, &train)?,
            factored.features(0, c, &train)?,
        );
        err = err.max(rel_err(fb.view(), fc.view()));
    }
    Ok(Parity {
        features_rel_err: err,
        lds_builtin,
        lds_candle,
    })
}
