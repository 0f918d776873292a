//! Counterfactual validation: does attribution predict what retraining does?
//!
//! - [`subset_masks`]: seeded random α-subsets of the training set.
//! - [`spearman`]: rank correlation, ties given their average rank.
//! - [`lds`]: the linear datamodeling score (Park et al. 2023, §2): for each target, the
//!   Spearman correlation over subsets S_j between the predicted output Σ_{i∈S_j} τ_i and the
//!   output of a model actually trained on S_j; averaged over targets.
//! - [`DropSets`]: the same-seed (leave-out) protocol: random sets D_j to drop, the weights
//!   that retrain without them ([`crate::models::Sgd::fit_weighted`]), and the LDS of the
//!   predicted change −Σ_{i∈D_j} τ_i against the retrained outputs.
//! - [`grad_dot`], [`random_scores`]: baseline attributions on the same features.
//!
//! # From scores to a predicted change
//! A score τ_i is the effect of **including** example i (positive: i raises f). Removing a
//! set D from the training set therefore changes f by **−Σ_{i∈D} τ_i** to first order, and a
//! model trained on a subset S has f ≈ const + Σ_{i∈S} τ_i. [`lds`] correlates the second
//! form, [`DropSets::lds`] the first; on the same split both give the same ranks.
//!
//! The MNIST protocol that drives these (model zoo, retraining, caches) lives in the
//! workspace's `trak-demo` crate, outside the library.

mod drop_sets;

pub use drop_sets::DropSets;

use ndarray::{Array2, ArrayView2, Axis};
use rand::seq::index::sample;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::attribute::Scores;
use crate::error::{Error, Result, shape_err};
use crate::kernel::add_scores;

/// `count` random subsets of `0..n`, each of exactly round(α·n) elements drawn without
/// replacement, as a `count × n` mask. Subset j depends only on (`seed`, j).
pub fn subset_masks(n: usize, alpha: f64, count: usize, seed: u64) -> Result<Array2<bool>> {
    if n == 0 || count == 0 {
        return Err(Error::Empty("subset sampling (n or count is 0)"));
    }
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(crate::error::invalid(
            "subset fraction α",
            alpha,
            "0 < α < 1",
        ));
    }
    let size = ((alpha * n as f64).round() as usize).clamp(1, n - 1);
    let mut masks = Array2::from_elem((count, n), false);
    for (j, mut row) in masks.axis_iter_mut(Axis(0)).enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(j as u64);
        for i in sample(&mut rng, n, size) {
            row[i] = true;
        }
    }
    Ok(masks)
}

/// Ranks 1..=n of `x` (average rank for ties). Fails on NaN.
pub fn ranks(x: &[f64]) -> Result<Vec<f64>> {
    if let Some(index) = x.iter().position(|v| v.is_nan()) {
        return Err(Error::NonFiniteInput {
            what: "values to rank",
            index,
        });
    }
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &t in &idx[i..=j] {
            r[t] = avg;
        }
        i = j + 1;
    }
    Ok(r)
}

/// Spearman rank correlation of `x` and `y` (Pearson correlation of their average ranks).
/// `None` when either is constant (the correlation is undefined).
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    if x.len() != y.len() {
        return Err(shape_err("spearman inputs", x.len(), y.len()));
    }
    if x.len() < 2 {
        return Err(Error::Empty("spearman inputs (need at least 2 points)"));
    }
    Ok(pearson(&ranks(x)?, &ranks(y)?))
}

fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    (saa > 0.0 && sbb > 0.0).then(|| sab / (saa * sbb).sqrt())
}

/// Result of [`lds`].
#[derive(Debug, Clone, PartialEq)]
pub struct Lds {
    /// Spearman correlation per target (`None` where predictions or outputs are constant).
    pub per_target: Vec<Option<f64>>,
    /// Mean over the targets where it is defined.
    pub mean: f64,
}

/// The linear datamodeling score. `masks` is J × n (subset membership), `scores` the n × m
/// attribution matrix, `outputs` J × m: the model output f on each target of a model trained on
/// each subset. Predicted outputs are Σ_{i∈S_j} τ_i(t), computed in f64.
pub fn lds(
    masks: ArrayView2<'_, bool>,
    scores: ArrayView2<'_, f32>,
    outputs: ArrayView2<'_, f32>,
) -> Result<Lds> {
    masked_lds(masks, scores, outputs, 1.0)
}

/// The LDS of `sign` · Σ_{i: masks[j, i]} τ_i against `outputs` (J × m).
fn masked_lds(
    masks: ArrayView2<'_, bool>,
    scores: ArrayView2<'_, f32>,
    outputs: ArrayView2<'_, f32>,
    sign: f64,
) -> Result<Lds> {
    let (j, m) = (masks.nrows(), scores.ncols());
    if outputs.dim() != (j, m) {
        return Err(shape_err(
            "subset outputs (subsets × targets)",
            format!("{j} × {m}"),
            format!("{:?}", outputs.dim()),
        ));
    }
    if j < 2 || m == 0 {
        return Err(Error::Empty("LDS needs ≥ 2 subsets and ≥ 1 target"));
    }
    lds_of_predictions(&masked_sums(masks, scores, sign)?, outputs)
}

/// `sign` · Σ_{i: masks[j, i]} τ_i(t) for every target t and set j (m × J, f64, through the
/// kernel's f64 product); the scores are checked to have n rows and finite entries.
fn masked_sums(
    masks: ArrayView2<'_, bool>,
    scores: ArrayView2<'_, f32>,
    sign: f64,
) -> Result<Array2<f64>> {
    let (j, n) = masks.dim();
    if scores.nrows() != n {
        return Err(shape_err("scores rows (n_train)", n, scores.nrows()));
    }
    if let Some(index) = scores.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFiniteInput {
            what: "attribution scores",
            index,
        });
    }
    let mask = faer::Mat::<f64>::from_fn(n, j, |i, s| if masks[(s, i)] { sign } else { 0.0 });
    let mut pred = Array2::<f64>::zeros((scores.ncols(), j));
    add_scores(scores.t(), &mask, pred.view_mut())?;
    Ok(pred)
}

/// The LDS of predictions `pred` (m × J, one row per target) against `outputs` (J × m).
fn lds_of_predictions(pred: &Array2<f64>, outputs: ArrayView2<'_, f32>) -> Result<Lds> {
    let per_target = (0..pred.nrows())
        .map(|t| {
            let y: Vec<f64> = outputs.column(t).iter().map(|&v| v as f64).collect();
            spearman(pred.row(t).as_slice().expect("standard layout"), &y)
        })
        .collect::<Result<Vec<_>>>()?;
    let defined: Vec<f64> = per_target.iter().flatten().copied().collect();
    if defined.is_empty() {
        return Err(Error::LdsUndefined);
    }
    let mean = defined.iter().sum::<f64>() / defined.len() as f64;
    Ok(Lds { per_target, mean })
}

/// Gradient-similarity baseline on projected features: for each listed checkpoint m,
/// S_m = Φ_m Ψ_mᵀ (inner products; TracIn-style with one or several checkpoints), or with
/// every row of Φ_m and Ψ_m normalised to unit length when `cosine`; averaged over checkpoints.
pub fn grad_dot(
    train: &[ArrayView2<'_, f32>],
    targets: &[ArrayView2<'_, f32>],
    cosine: bool,
) -> Result<Scores> {
    if train.is_empty() || train.len() != targets.len() {
        return Err(shape_err(
            "checkpoint lists (train, targets)",
            train.len(),
            targets.len(),
        ));
    }
    let (n, m) = (train[0].nrows(), targets[0].nrows());
    let mut acc = Array2::<f64>::zeros((n, m));
    for (phi, psi) in train.iter().zip(targets) {
        if phi.nrows() != n || psi.nrows() != m || phi.ncols() != psi.ncols() {
            return Err(shape_err(
                "features",
                format!("{n} × k and {m} × k"),
                format!("{:?} and {:?}", phi.dim(), psi.dim()),
            ));
        }
        let norm = |v: ndarray::ArrayView1<'_, f32>| {
            let s = v
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum::<f64>()
                .sqrt();
            if cosine && s > 0.0 { 1.0 / s } else { 1.0 }
        };
        let y =
            faer::Mat::<f64>::from_fn(psi.ncols(), m, |i, t| psi[(t, i)] as f64 * norm(psi.row(t)));
        let mut s = Array2::<f64>::zeros((n, m));
        add_scores(phi.view(), &y, s.view_mut())?;
        for (i, row) in phi.rows().into_iter().enumerate() {
            let w = norm(row);
            acc.row_mut(i).zip_mut_with(&s.row(i), |a, &v| *a += v * w);
        }
    }
    let c = train.len() as f64;
    Ok(Scores::new(acc.mapv(|v| (v / c) as f32)))
}

/// Random baseline: i.i.d. uniform scores in [−1, 1) (n × m), from `seed`.
pub fn random_scores(n: usize, m: usize, seed: u64) -> Scores {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Scores::new(Array2::from_shape_simple_fn((n, m), || {
        rng.random_range(-1.0f32..1.0)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            ranks(&[3.0, 1.0, 3.0, 2.0]).unwrap(),
            vec![3.5, 1.0, 3.5, 2.0]
        );
    }

    #[test]
    fn spearman_known_values() {
        // monotone ⇒ 1, reversed ⇒ −1, constant ⇒ undefined
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(
            spearman(&x, &[2.0, 4.0, 8.0, 16.0, 32.0]).unwrap(),
            Some(1.0)
        );
        assert_eq!(
            spearman(&x, &[5.0, 4.0, 3.0, 2.0, 1.0]).unwrap(),
            Some(-1.0)
        );
        assert_eq!(spearman(&x, &[1.0; 5]).unwrap(), None);
        // textbook example with a tie: d² method does not apply, Pearson of average ranks:
        // x ranks [1,2,3,4,5], y = [1, 3, 2, 5, 4] ⇒ 1 − 6·4/(5·24) = 0.8
        assert!((spearman(&x, &[1.0, 3.0, 2.0, 5.0, 4.0]).unwrap().unwrap() - 0.8).abs() < 1e-12);
        assert!(spearman(&x, &[1.0, f64::NAN, 2.0, 3.0, 4.0]).is_err());
    }

    #[test]
    fn subsets_have_the_right_size_and_are_reproducible() {
        let a = subset_masks(101, 0.5, 20, 3).unwrap();
        assert!(
            a.rows()
                .into_iter()
                .all(|r| r.iter().filter(|&&b| b).count() == 51)
        );
        assert_eq!(a, subset_masks(101, 0.5, 20, 3).unwrap());
        assert_ne!(a, subset_masks(101, 0.5, 20, 4).unwrap());
        assert!(subset_masks(10, 1.0, 2, 0).is_err());
    }

    #[test]
    fn lds_of_an_exact_linear_model_is_one() {
        // outputs exactly linear in the subset ⇒ LDS = 1 with the true weights, ≈ 0 random
        let masks = subset_masks(50, 0.5, 40, 1).unwrap();
        let w = random_scores(50, 3, 7).into_inner();
        let outputs = masks.mapv(|b| f32::from(u8::from(b))).dot(&w);
        let exact = lds(masks.view(), w.view(), outputs.view()).unwrap();
        assert!((exact.mean - 1.0).abs() < 1e-9, "{exact:?}");
        let rand = lds(
            masks.view(),
            random_scores(50, 3, 99).values(),
            outputs.view(),
        )
        .unwrap();
        assert!(rand.mean.abs() < 0.5);
    }
}
