//! Identity projector: the pipeline's scores against an independent, naive f64 implementation
//! of τ = (1/M Σ_m Φ_m (Φ_mᵀW_mΦ_m + λI)⁻¹ Ψ_mᵀ) ⊙ (1/M Σ_m Q_m), with an explicit inverse, for
//! the plain kernel (W = I) and the default Q weighting (W = diag(Q)).

mod common;

use common::{class_samples, inverse, matmul, randomize, rel_err, transpose};
use ndarray::{Array1, Array2};
use trak::data::Sample;
use trak::kernel::Ridge;
use trak::models::Mlp;
use trak::output::{Logistic, Margin, OutputFn};
use trak::project::ProjectorKind;
use trak::{Model, Trak, Weighting};

/// Per-example gradients (f32 from the model, widened to f64) and Q.
fn grads_q<O: OutputFn>(model: &Mlp<O>, data: &[Sample]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let p = model.num_params();
    let mut g = Array2::<f32>::zeros((data.len(), p));
    model.output_grads(data, g.view_mut()).unwrap();
    let mut q = Array1::<f32>::zeros(data.len());
    model.output_q(data, q.view_mut()).unwrap();
    (
        g.rows()
            .into_iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect(),
        q.iter().map(|&v| v as f64).collect(),
    )
}

/// The naive reference: scores (n × m) for an ensemble.
fn naive<O: OutputFn>(
    models: &[Mlp<O>],
    train: &[Sample],
    targets: &[Sample],
    ridge: Ridge,
    weighting: Weighting,
) -> Vec<Vec<f64>> {
    let n = train.len();
    let mut sum = vec![vec![0.0; targets.len()]; n];
    let mut qsum = vec![0.0; n];
    for m in models {
        let (phi, q) = grads_q(m, train);
        let (psi, _) = grads_q(m, targets);
        let p = phi[0].len();
        let w_phi: Vec<Vec<f64>> = match weighting {
            Weighting::None => phi.clone(),
            Weighting::Q => phi
                .iter()
                .zip(&q)
                .map(|(row, qi)| row.iter().map(|v| v * qi).collect())
                .collect(),
            Weighting::GaussNewton => unreachable!("tests/weighting.rs covers Gauss-Newton"),
        };
        let mut k = matmul(&transpose(&phi), &w_phi);
        let trace: f64 = (0..p).map(|i| k[i][i]).sum();
        let lambda = match ridge {
            Ridge::MeanSquaredNorm(c) => c * trace / phi.len() as f64,
            Ridge::Relative(c) => c * trace / p as f64,
            Ridge::Absolute(l) => l,
        };
        for (i, row) in k.iter_mut().enumerate() {
            row[i] += lambda;
        }
        let s = matmul(&matmul(&phi, &inverse(&k)), &transpose(&psi));
        for i in 0..n {
            for j in 0..targets.len() {
                sum[i][j] += s[i][j];
            }
            qsum[i] += q[i];
        }
    }
    let mm = models.len() as f64;
    sum.iter()
        .zip(&qsum)
        .map(|(row, q)| row.iter().map(|v| (v / mm) * (q / mm)).collect())
        .collect()
}

fn models<O: OutputFn + Copy>(count: usize, sizes: &[usize], out: O) -> Vec<Mlp<O>> {
    (0..count)
        .map(|i| {
            let mut m = Mlp::new(sizes, out, i as u64).unwrap();
            randomize(&mut m, 0.6, 100 + i as u64);
            m
        })
        .collect()
}

fn pipeline<O: OutputFn>(
    models: &[Mlp<O>],
    train: &[Sample],
    targets: &[Sample],
    ridge: Ridge,
    weighting: Weighting,
) -> Vec<f64> {
    let trak = Trak::builder()
        .projector(ProjectorKind::Identity)
        .ridge(ridge)
        .weighting(weighting)
        .batch_size(16)
        .build()
        .unwrap();
    let mut feats = trak.featurizer();
    for (i, m) in models.iter().enumerate() {
        feats.featurize(i as u64, m, train).unwrap();
    }
    let index = feats.finalize().unwrap();
    let ckpts: Vec<(u64, &Mlp<O>)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m))
        .collect();
    let s = index.score(&ckpts, targets).unwrap();
    assert_eq!(
        s.values().dim(),
        (train.len(), targets.len()),
        "scores are n_train × n_targets"
    );
    s.values().iter().map(|&v| v as f64).collect()
}

fn compare(got: &[f64], want: &[Vec<f64>], label: &str) {
    let want: Vec<f64> = want.iter().flatten().copied().collect();
    let (norm, entry) = rel_err(got, &want);
    eprintln!(
        "{label}: max error / max|score| = {norm:.2e}, worst entry relative error = {entry:.2e}"
    );
    assert!(entry < 1e-5, "{label}: relative error {entry:e}");
}

// Multinomial logistic regression, d = 6, 4 classes: p = 28 < n = 60.
const LIN: &[usize] = &[6, 4];
// With the identity projector ΦᵀΦ is exactly singular for two families, whatever n:
// - under the margin, ∂f/∂z sums to zero over classes, so every gradient is orthogonal to
//   adding the same vector to all classes' weights;
// - in a ReLU network, f is invariant under (w_j, b_j, v_j) → (α w_j, α b_j, v_j / α) for each
//   hidden unit j, so every gradient is orthogonal to (w_j, b_j, −v_j).
// λ = 0 is therefore tested with linear binary logistic models (full rank when k = p < n).

#[test]
fn single_checkpoint_relative_ridge() {
    let (train, targets) = (class_samples(60, 6, 4, 1), class_samples(7, 6, 4, 2));
    let ms = models(1, LIN, Margin);
    let r = Ridge::Relative(0.05);
    for w in [Weighting::None, Weighting::Q] {
        compare(
            &pipeline(&ms, &train, &targets, r, w),
            &naive(&ms, &train, &targets, r, w),
            &format!("λ relative, {w:?}"),
        );
    }
}

#[test]
fn single_checkpoint_absolute_ridge() {
    let (train, targets) = (class_samples(60, 6, 4, 3), class_samples(7, 6, 4, 4));
    let ms = models(1, LIN, Margin);
    let r = Ridge::Absolute(0.3);
    for w in [Weighting::None, Weighting::Q] {
        compare(
            &pipeline(&ms, &train, &targets, r, w),
            &naive(&ms, &train, &targets, r, w),
            &format!("λ absolute, {w:?}"),
        );
    }
}

#[test]
fn single_checkpoint_no_ridge_k_below_n() {
    // binary logistic regression, d = 9: p = 10 < n = 60
    let (train, targets) = (class_samples(60, 9, 2, 5), class_samples(7, 9, 2, 6));
    let ms = models(1, &[9, 1], Logistic);
    let r = Ridge::Absolute(0.0);
    for w in [Weighting::None, Weighting::Q] {
        compare(
            &pipeline(&ms, &train, &targets, r, w),
            &naive(&ms, &train, &targets, r, w),
            &format!("λ = 0, {w:?}"),
        );
    }
}

#[test]
fn ensemble_of_checkpoints_combines_as_the_formula() {
    // MLP 5-4-3 (p = 39) at 3 checkpoints, n = 80.
    let (train, targets) = (class_samples(80, 5, 3, 7), class_samples(5, 5, 3, 8));
    let ms = models(3, &[5, 4, 3], Margin);
    let r = Ridge::Relative(0.1);
    for w in [Weighting::None, Weighting::Q] {
        compare(
            &pipeline(&ms, &train, &targets, r, w),
            &naive(&ms, &train, &targets, r, w),
            &format!("ensemble M=3, λ relative, {w:?}"),
        );
    }
    // λ = 0 ensemble of binary logistic regressions, d = 12 (p = 13 < n = 80)
    let (btrain, btargets) = (class_samples(80, 12, 2, 9), class_samples(5, 12, 2, 10));
    let bms = models(3, &[12, 1], Logistic);
    let r0 = Ridge::Absolute(0.0);
    for w in [Weighting::None, Weighting::Q] {
        compare(
            &pipeline(&bms, &btrain, &btargets, r0, w),
            &naive(&bms, &btrain, &btargets, r0, w),
            &format!("ensemble M=3, λ = 0, {w:?}"),
        );
    }
    // A subset of the featurised checkpoints averages S and Q over that subset only.
    let trak = Trak::builder()
        .projector(ProjectorKind::Identity)
        .build()
        .unwrap();
    let mut feats = trak.featurizer();
    for (i, m) in ms.iter().enumerate() {
        feats.featurize(i as u64, m, &train).unwrap();
    }
    let index = feats.finalize().unwrap();
    let got: Vec<f64> = index
        .score(&[(0, &ms[0]), (2, &ms[2])], &targets)
        .unwrap()
        .values()
        .iter()
        .map(|&v| v as f64)
        .collect();
    let sub = vec![ms[0].clone(), ms[2].clone()];
    compare(
        &got,
        &naive(
            &sub,
            &train,
            &targets,
            Ridge::default(),
            Weighting::default(),
        ),
        "ensemble subset {0, 2} (default Q weighting)",
    );
}

#[test]
fn prefix_ridge_and_precomputed_targets_agree_with_the_direct_route() {
    let (train, targets) = (class_samples(300, 12, 4, 11), class_samples(6, 12, 4, 12));
    let ms = models(2, &[12, 10, 4], Margin);
    let big = Trak::builder().proj_dim(256).seed(9).build().unwrap();
    let small = Trak::builder().proj_dim(100).seed(9).build().unwrap();
    let (mut fb, mut fs) = (big.featurizer(), small.featurizer());
    for (i, m) in ms.iter().enumerate() {
        fb.featurize(i as u64, m, &train).unwrap();
        fs.featurize(i as u64, m, &train).unwrap();
    }
    // prefix(100) of a k = 256 featurisation = featurising at k = 100, up to f32 rounding
    let pre = fb.prefix(100).unwrap();
    for i in 0..2 {
        let (a, b) = (pre.features(i).unwrap(), fs.features(i).unwrap());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(
            a.iter()
                .zip(b.iter())
                .all(|(x, y)| (x - y).abs() <= 1e-5 * scale)
        );
    }
    assert!(fb.prefix(257).is_err() && fb.prefix(0).is_err());
    // with_ridge(r).finalize() = building with r; score_features = score
    let r = Ridge::Absolute(2.5);
    let direct = Trak::builder()
        .proj_dim(100)
        .seed(9)
        .ridge(r)
        .build()
        .unwrap();
    let mut fd = direct.featurizer();
    for (i, m) in ms.iter().enumerate() {
        fd.featurize(i as u64, m, &train).unwrap();
    }
    let idx_direct = fd.finalize().unwrap();
    let idx_swept = fs.with_ridge(r).unwrap().finalize().unwrap();
    let ck: Vec<(u64, &Mlp<Margin>)> = vec![(0, &ms[0]), (1, &ms[1])];
    let a = idx_direct.score(&ck, &targets).unwrap();
    let b = idx_swept.score(&ck, &targets).unwrap();
    assert_eq!(a, b, "same features and ridge ⇒ same scores, bit for bit");
    assert_eq!(idx_swept.lambda(1).unwrap(), 2.5);
    let psi: Vec<ndarray::Array2<f32>> = (0..2)
        .map(|i| {
            idx_swept
                .target_features(i, &ms[i as usize], &targets)
                .unwrap()
        })
        .collect();
    let c = idx_swept
        .score_features(&[(0, psi[0].view()), (1, psi[1].view())])
        .unwrap();
    assert_eq!(a, c);
}

#[test]
fn solved_targets_give_the_checkpoint_scores_row_by_row() {
    let (train, targets) = (class_samples(60, 6, 4, 5), class_samples(7, 6, 4, 6));
    let m = &models(1, LIN, Margin)[0];
    let trak = Trak::builder().proj_dim(16).build().unwrap();
    let mut feats = trak.featurizer();
    feats.featurize(0, m, &train).unwrap();
    let phi = feats.features(0).unwrap().to_owned();
    let index = feats.finalize().unwrap();
    let psi = index.target_features(0, m, &targets).unwrap();
    let y = index.solve_targets(0, psi.view()).unwrap();
    assert_eq!(y.dim(), (16, targets.len()));
    let want = index.checkpoint_scores(0, m, &targets).unwrap();
    let got = phi.mapv(f64::from).dot(&y);
    let err = (&got - &want).iter().fold(0f64, |a, v| a.max(v.abs()));
    let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
    assert!(
        err <= 1e-9 * scale,
        "Φ Y vs checkpoint scores: {err} of {scale}"
    );
    assert!(matches!(
        index.solve_targets(9, psi.view()),
        Err(trak::Error::UnknownCheckpoint(9))
    ));
}
