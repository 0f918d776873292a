//! Plugging in models and output functions defined outside the crate.

mod common;

use common::{inverse, matmul, rel_err, transpose};
use ndarray::{Array1, Array2, ArrayViewMut1, ArrayViewMut2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::data::Target;
use trak::kernel::Ridge;
use trak::models::{Mlp, Sgd};
use trak::output::{OutputFn, OutputValue};
use trak::project::ProjectorKind;
use trak::{Error, Model, Trak, Weighting};

/// A user's own model, as one would wrap a network from another library: a tanh network
/// f(x) = vᵀ tanh(W x) for regression, whose gradient comes from a batch-size-1 backward pass
/// written by hand. Examples are the user's own type.
struct TanhNet {
    w: Array2<f64>, // h × d
    v: Array1<f64>, // h
}

struct Point {
    x: Vec<f64>,
    y: f64,
}

impl TanhNet {
    fn forward(&self, x: &[f64]) -> (Vec<f64>, f64) {
        let a: Vec<f64> = self
            .w
            .rows()
            .into_iter()
            .map(|r| r.iter().zip(x).map(|(w, x)| w * x).sum::<f64>().tanh())
            .collect();
        let f = a.iter().zip(self.v.iter()).map(|(a, v)| a * v).sum();
        (a, f)
    }
    /// ∇f for one example, parameters ordered (W row-major, v).
    fn backward(&self, x: &[f64]) -> Vec<f64> {
        let (a, _) = self.forward(x);
        let mut g = Vec::with_capacity(self.w.len() + self.v.len());
        for (j, aj) in a.iter().enumerate() {
            let dz = self.v[j] * (1.0 - aj * aj);
            g.extend(x.iter().map(|xi| dz * xi));
        }
        g.extend(a);
        g
    }
}

impl Model for TanhNet {
    type Example = Point;
    fn num_params(&self) -> usize {
        self.w.len() + self.v.len()
    }
    fn output_grads(&self, batch: &[Point], mut grads: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        for (mut row, p) in grads.rows_mut().into_iter().zip(batch) {
            for (dst, g) in row.iter_mut().zip(self.backward(&p.x)) {
                *dst = g as f32;
            }
        }
        Ok(())
    }
    fn output_q(&self, batch: &[Point], mut q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        // squared loss: Q = −∂L/∂f = y − f
        for (q, p) in q.iter_mut().zip(batch) {
            *q = (p.y - self.forward(&p.x).1) as f32;
        }
        Ok(())
    }
}

fn points(n: usize, d: usize, seed: u64) -> Vec<Point> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let x: Vec<f64> = (0..d).map(|_| rng.random_range(-1.0..1.0)).collect();
            let y = x[0] - 0.5 * x[1] + 0.1 * rng.random_range(-1.0..1.0);
            Point { x, y }
        })
        .collect()
}

fn net(d: usize, h: usize, seed: u64) -> TanhNet {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    TanhNet {
        w: Array2::from_shape_simple_fn((h, d), || rng.random_range(-1.0..1.0)),
        v: Array1::from_shape_simple_fn(h, || rng.random_range(-1.0..1.0)),
    }
}

#[test]
fn user_model_matches_the_formula_with_the_identity_projector() {
    let (train, targets) = (points(50, 3, 1), points(4, 3, 2));
    let m = net(3, 4, 3); // p = 16 < n = 50
    let ridge = Ridge::Relative(0.01);
    let trak = Trak::builder()
        .projector(ProjectorKind::Identity)
        .ridge(ridge)
        .batch_size(8)
        .build()
        .unwrap();
    // Q is a signed residual here: the default Q weighting refuses it, naming an example.
    let mut feats = trak.featurizer();
    feats.featurize(0, &m, &train).unwrap();
    let r = feats.finalize();
    assert!(
        matches!(r, Err(Error::BadKernelWeight { checkpoint: 0, .. })),
        "{r:?}"
    );
    let trak = trak.with_weighting(Weighting::None);
    let mut feats = trak.featurizer();
    feats.featurize(0, &m, &train).unwrap();
    let got: Vec<f64> = feats
        .finalize()
        .unwrap()
        .score(&[(0, &m)], &targets)
        .unwrap()
        .values()
        .iter()
        .map(|&v| v as f64)
        .collect();

    // naive f64 reference from the model's own gradients (rounded to f32 as the pipeline sees them)
    let g = |p: &Point| {
        m.backward(&p.x)
            .iter()
            .map(|&v| v as f32 as f64)
            .collect::<Vec<f64>>()
    };
    let phi: Vec<Vec<f64>> = train.iter().map(g).collect();
    let psi: Vec<Vec<f64>> = targets.iter().map(g).collect();
    let mut k = matmul(&transpose(&phi), &phi);
    let lambda = 0.01 * (0..16).map(|i| k[i][i]).sum::<f64>() / 16.0;
    (0..16).for_each(|i| k[i][i] += lambda);
    let s = matmul(&matmul(&phi, &inverse(&k)), &transpose(&psi));
    let want: Vec<f64> = (0..train.len())
        .flat_map(|i| {
            let q = (train[i].y - m.forward(&train[i].x).1) as f32 as f64;
            s[i].iter().map(move |v| v * q).collect::<Vec<_>>()
        })
        .collect();
    let (_, entry) = rel_err(&got, &want);
    assert!(entry < 1e-5, "relative error {entry:e}");
}

#[test]
fn user_model_with_random_projection_and_top_k() {
    let (train, targets) = (points(200, 5, 4), points(3, 5, 5));
    let models: Vec<TanhNet> = (0..3).map(|s| net(5, 32, 10 + s)).collect(); // p = 192
    let trak = Trak::builder()
        .proj_dim(64)
        .weighting(Weighting::None) // Q is a signed residual
        .build()
        .unwrap();
    let mut feats = trak.featurizer();
    for (i, m) in models.iter().enumerate() {
        feats.featurize(i as u64, m, &train).unwrap();
    }
    let index = feats.finalize().unwrap();
    let ckpts: Vec<(u64, &TanhNet)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m))
        .collect();
    let scores = index.score(&ckpts, &targets).unwrap();
    assert_eq!((scores.n_train(), scores.n_targets()), (200, 3));
    let top = scores.top_k(5);
    for (t, list) in top.iter().enumerate() {
        assert_eq!(list.len(), 5);
        let col = scores.target(t).unwrap();
        let best = col.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        assert_eq!(list[0].1, best);
        assert!(list.windows(2).all(|w| w[0].1 >= w[1].1));
        assert!(list.iter().all(|&(i, s)| col[i] == s));
    }
}

/// A user-defined output function: f = log p_y (log-probability of the correct class),
/// trained with L = −f, so Q = −∂L/∂f = 1.
struct LogProb;

impl OutputFn for LogProb {
    fn validate(&self, n_outputs: usize, target: &Target) -> Result<(), String> {
        match *target {
            Target::Class(y) if y < n_outputs => Ok(()),
            _ => Err("need a class label in range".into()),
        }
    }
    fn eval(&self, z: &[f32], target: &Target, df_dz: &mut [f32]) -> OutputValue {
        let Target::Class(y) = *target else {
            unreachable!()
        };
        let m = z.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let s: f32 = z.iter().map(|v| (v - m).exp()).sum();
        for (j, g) in df_dz.iter_mut().enumerate() {
            *g = if j == y { 1.0 } else { 0.0 } - (z[j] - m).exp() / s;
        }
        OutputValue {
            f: z[y] - m - s.ln(),
            q: 1.0,
        }
    }
    fn loss(&self, z: &[f32], target: &Target, dl_dz: &mut [f32]) -> f32 {
        let v = self.eval(z, target, dl_dz);
        dl_dz.iter_mut().for_each(|g| *g = -*g);
        -v.f
    }
}

#[test]
fn user_output_function_with_a_built_in_model() {
    let data = common::class_samples(120, 6, 3, 7);
    let mut m = Mlp::new(&[6, 8, 3], LogProb, 1).unwrap();
    let report = Sgd {
        epochs: 5,
        ..Default::default()
    }
    .fit(&mut m, &data)
    .unwrap();
    assert!(report.epoch_losses.iter().all(|l| l.is_finite()));
    let mut q = Array1::zeros(4);
    m.output_q(&data[..4], q.view_mut()).unwrap();
    assert!(q.iter().all(|&v| v == 1.0));
    let trak = Trak::builder().proj_dim(32).build().unwrap();
    let mut feats = trak.featurizer();
    feats.featurize(0, &m, &data).unwrap();
    let scores = feats
        .finalize()
        .unwrap()
        .score(&[(0, &m)], &data[..2])
        .unwrap();
    assert!(scores.values().iter().all(|v| v.is_finite()));
}
