//! Curvature-weighted kernels (`Weighting`): the Gauss-Newton estimator is the one-step
//! Newton estimate for logistic regression, weights are checked, refusals are typed, and
//! weighted scores are deterministic.

use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2};
use trak::data::{Dataset, Sample, Target};
use trak::models::Mlp;
use trak::output::{Logistic, Regression};
use trak::{Error, Model, ProjectorKind, Ridge, Run, Trak, Weighting};

fn logistic_setup() -> (Mlp<Logistic>, Vec<Sample>, Vec<Sample>) {
    let data = Dataset::blobs(36, 3, 2, 7).unwrap().samples();
    let mut m = Mlp::binary_logistic(3).unwrap();
    m.set_params_flat(&[0.8, -0.5, 0.3, 0.1]).unwrap();
    (m, data[..30].to_vec(), data[30..].to_vec())
}

/// (sign s, [x, 1]) of a logistic-regression example: f = s·θᵀ[x, 1].
fn features(s: &Sample) -> (f64, Vec<f64>) {
    let sign = if s.target == Target::Class(1) {
        1.0
    } else {
        -1.0
    };
    let mut a: Vec<f64> = s.x.iter().map(|&v| v as f64).collect();
    a.push(1.0);
    (sign, a)
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// ∇ of Σ_i log(1 + e^{−f_i}) + (λ/2)‖θ‖², in f64, written independently of the crate.
fn total_gradient(theta: &[f64], train: &[Sample], lambda: f64) -> Vec<f64> {
    let mut g: Vec<f64> = theta.iter().map(|t| lambda * t).collect();
    for s in train {
        let (sign, a) = features(s);
        let f = sign * a.iter().zip(theta).map(|(x, t)| x * t).sum::<f64>();
        for (gj, aj) in g.iter_mut().zip(&a) {
            *gj -= sigmoid(-f) * sign * aj;
        }
    }
    g
}

/// Solves H x = b by Gaussian elimination with partial pivoting.
fn solve(mut h: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&i, &j| h[i][c].abs().total_cmp(&h[j][c].abs()))
            .unwrap();
        h.swap(c, p);
        b.swap(c, p);
        let pivot = h[c].clone();
        for r in c + 1..n {
            let m = h[r][c] / pivot[c];
            for (x, p) in h[r].iter_mut().zip(&pivot).skip(c) {
                *x -= m * p;
            }
            b[r] -= m * b[c];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|k| h[r][k] * x[k]).sum();
        x[r] = (b[r] - s) / h[r][r];
    }
    x
}

#[test]
fn gauss_newton_is_the_one_step_newton_estimate_for_logistic_regression() {
    let (model, train, targets) = logistic_setup();
    let lambda = 0.7;
    let theta: Vec<f64> = model.params_flat().iter().map(|&v| v as f64).collect();
    // H by central differences of the independent gradient.
    let h = 1e-5;
    let hess: Vec<Vec<f64>> = (0..theta.len())
        .map(|j| {
            let (mut tp, mut tm) = (theta.clone(), theta.clone());
            tp[j] += h;
            tm[j] -= h;
            let (gp, gm) = (
                total_gradient(&tp, &train, lambda),
                total_gradient(&tm, &train, lambda),
            );
            gp.iter()
                .zip(&gm)
                .map(|(a, b)| (a - b) / (2.0 * h))
                .collect()
        })
        .collect();
    let trak = Trak::builder()
        .projector(ProjectorKind::Identity)
        .weighting(Weighting::GaussNewton)
        .ridge(Ridge::Absolute(lambda))
        .build()
        .unwrap();
    let mut f = trak.featurizer();
    f.featurize(0, &model, &train).unwrap();
    let scores = f
        .finalize()
        .unwrap()
        .score(&[(0, &model)], &targets)
        .unwrap();
    let mut want = Array2::<f64>::zeros((train.len(), targets.len()));
    for (j, t) in targets.iter().enumerate() {
        let (st, at) = features(t);
        let gz: Vec<f64> = at.iter().map(|v| st * v).collect();
        let u = solve(hess.clone(), gz); // H⁻¹ g_z (H is symmetric)
        for (i, s) in train.iter().enumerate() {
            let (si, ai) = features(s);
            let fi = si * ai.iter().zip(&theta).map(|(x, t)| x * t).sum::<f64>();
            // −∇ℓ_i = σ(−f_i) s_i [x_i, 1]
            want[(i, j)] = ai
                .iter()
                .zip(&u)
                .map(|(a, u)| sigmoid(-fi) * si * a * u)
                .sum();
        }
    }
    let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
    let err = scores
        .values()
        .iter()
        .zip(&want)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(err / scale < 1e-5, "relative error {}", err / scale);
    // The plain kernel differs (W = I is not the logistic Hessian).
    let plain = f
        .with_weighting(Weighting::None)
        .finalize()
        .unwrap()
        .score(&[(0, &model)], &targets)
        .unwrap();
    let diff = plain
        .values()
        .iter()
        .zip(&want)
        .fold(0f64, |m, (a, b)| m.max((*a as f64 - b).abs()));
    assert!(diff / scale > 1e-2);
}

#[test]
fn negative_q_weights_are_refused() {
    let data: Vec<Sample> = Dataset::blobs(20, 2, 2, 1)
        .unwrap()
        .samples()
        .into_iter()
        .enumerate()
        .map(|(i, s)| Sample {
            x: s.x,
            target: Target::Value(if i % 2 == 0 { 1.0 } else { -1.0 }),
        })
        .collect();
    let mut m = Mlp::new(&[2, 1], Regression, 0).unwrap();
    m.set_params_flat(&[0.5, 0.5, 0.2]).unwrap();
    let trak = Trak::builder()
        .proj_dim(3)
        .weighting(Weighting::Q)
        .build()
        .unwrap();
    let mut f = trak.featurizer();
    f.featurize(4, &m, &data).unwrap();
    match f.finalize() {
        Err(Error::BadKernelWeight {
            checkpoint: 4,
            value,
            ..
        }) => assert!(value < 0.0),
        other => panic!("expected BadKernelWeight, got {:?}", other.err()),
    }
    // Gauss-Newton is fine for squared loss (r = 1).
    let gn = Trak::builder()
        .proj_dim(3)
        .weighting(Weighting::GaussNewton)
        .build()
        .unwrap();
    let mut f = gn.featurizer();
    f.featurize(4, &m, &data).unwrap();
    f.finalize().unwrap();
}

/// A model that does not give its curvature.
struct NoCurvature;
impl Model for NoCurvature {
    type Example = Sample;
    fn num_params(&self) -> usize {
        2
    }
    fn output_grads(&self, batch: &[Sample], mut g: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        for (mut row, s) in g.rows_mut().into_iter().zip(batch) {
            row.assign(&ndarray::ArrayView1::from(&s.x[..]));
        }
        Ok(())
    }
    fn output_q(&self, _: &[Sample], mut q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        q.fill(1.0);
        Ok(())
    }
}

#[test]
fn gauss_newton_without_curvature_is_refused_in_memory_and_in_the_store() {
    let data = Dataset::blobs(10, 2, 2, 2).unwrap().samples();
    let trak = Trak::builder()
        .proj_dim(2)
        .weighting(Weighting::GaussNewton)
        .build()
        .unwrap();
    let r = trak.featurizer().featurize(0, &NoCurvature, &data);
    assert!(matches!(r, Err(Error::NoCurvature)), "{r:?}");
    // Plain featurisation, then asking for Gauss-Newton: no curvature was recorded.
    let mut f = trak.with_weighting(Weighting::None).featurizer();
    f.featurize(0, &NoCurvature, &data).unwrap();
    let r = f.with_weighting(Weighting::GaussNewton).finalize();
    assert!(
        matches!(r, Err(Error::CurvatureNotRecorded { checkpoint: 0 })),
        "{r:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &trak, 10, 4).unwrap();
    let r = run.featurize(0, &NoCurvature, &data, Default::default());
    assert!(matches!(r, Err(Error::NoCurvature)), "{r:?}");
}

#[test]
fn weighted_scores_are_bit_identical_across_threads_and_batches() {
    let (model, train, targets) = logistic_setup();
    let run = |threads: usize, batch: usize, w: Weighting| -> Array1<u32> {
        let trak = Trak::builder()
            .proj_dim(3)
            .weighting(w)
            .batch_size(batch)
            .build()
            .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut f = trak.featurizer();
            f.featurize(0, &model, &train).unwrap();
            let s = f
                .finalize()
                .unwrap()
                .score(&[(0, &model)], &targets)
                .unwrap();
            s.values().iter().map(|v| v.to_bits()).collect()
        })
    };
    for w in [Weighting::GaussNewton, Weighting::Q] {
        assert_eq!(run(1, 30, w), run(2, 7, w), "{w:?}");
        assert_ne!(
            run(1, 30, w),
            run(1, 30, Weighting::None),
            "{w:?} changes the scores"
        );
    }
}
