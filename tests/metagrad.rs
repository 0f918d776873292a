//! Metagradients through the built-in trainer: weighted training, the MLP's Hessian-vector
//! products, metagradients against central finite differences of an independent f64
//! retraining, determinism, the memory plan and the refusals.

use ndarray::{Array1, Array2};
use trak::Error;
use trak::data::{Dataset, Sample, Target};
use trak::metagrad::{MetagradOptions, Metagradients, Precision, metagradients};
use trak::models::{BatchHvp, Mlp, Sgd, Trainable};
use trak::output::{Margin, OutputFn, OutputValue};

fn data(n: usize, dim: usize, classes: usize, seed: u64) -> Vec<Sample> {
    Dataset::blobs(n, dim, classes, seed).unwrap().samples()
}

/// A smooth run: small learning rate, a few epochs.
fn smooth_sgd() -> Sgd {
    Sgd {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 1e-3,
        epochs: 3,
        batch_size: 8,
        seed: 3,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn all_ones_weights_train_bit_for_bit_like_fit() {
    let train = data(50, 5, 3, 1);
    let sgd = Sgd::default();
    let mut a = Mlp::new(&[5, 7, 3], Margin, 2).unwrap();
    let mut b = a.clone();
    let ra = sgd.fit(&mut a, &train).unwrap();
    let rb = sgd.fit_weighted(&mut b, &train, &[1.0; 50]).unwrap();
    assert_eq!(bits(&a.params_flat()), bits(&b.params_flat()));
    assert_eq!(ra, rb);
}

#[test]
fn a_zero_weight_leaves_the_example_out_and_changes_nothing_else() {
    let train = data(40, 5, 3, 4);
    let sgd = smooth_sgd();
    let mut w = vec![1.0f32; 40];
    w[7] = 0.0;
    let mut other = train.clone();
    other[7] = Sample {
        x: vec![9.0; 5],
        target: Target::Class(2),
    };
    let init = Mlp::new(&[5, 6, 3], Margin, 0).unwrap();
    let (mut a, mut b) = (init.clone(), init.clone());
    sgd.fit_weighted(&mut a, &train, &w).unwrap();
    sgd.fit_weighted(&mut b, &other, &w).unwrap();
    assert_eq!(bits(&a.params_flat()), bits(&b.params_flat()));
    let mut c = init;
    sgd.fit(&mut c, &train).unwrap();
    assert_ne!(bits(&a.params_flat()), bits(&c.params_flat()));
}

#[test]
fn weights_are_checked() {
    let train = data(10, 3, 2, 0);
    let mut m = Mlp::new(&[3, 2], Margin, 0).unwrap();
    let e = Sgd::default()
        .fit_weighted(&mut m, &train, &[1.0; 9])
        .unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let mut w = vec![1.0; 10];
    w[4] = f32::NAN;
    let e = Sgd::default().fit_weighted(&mut m, &train, &w).unwrap_err();
    assert!(
        matches!(
            e,
            Error::NonFiniteInput {
                what: "training weights",
                index: 4
            }
        ),
        "{e}"
    );
}

/// H v against a central difference of the weighted gradient along v, and the per-example
/// dots against single-example gradients.
#[test]
fn the_mlp_hvp_matches_differences_of_its_gradient() {
    let batch_owned = data(12, 4, 3, 5);
    let batch: Vec<&Sample> = batch_owned.iter().collect();
    let weights: Vec<f32> = (0..12).map(|i| 0.5 + 0.1 * i as f32).collect();
    let model = Mlp::new(&[4, 6, 5, 3], Margin, 1).unwrap();
    let p = model.param_count();
    let dirs = Array2::from_shape_fn((3, p), |(j, k)| {
        (((j * 31 + k * 17) % 13) as f32 - 6.0) / 6.0
    });
    let mut hv = Array2::zeros((3, p));
    let mut dots = Array2::zeros((12, 3));
    let prepared = model.weighted_hvp(&batch, &weights).unwrap();
    for j in 0..3 {
        let mut col = vec![0.0; 12];
        let v = dirs.row(j).to_vec();
        prepared.apply(&v, hv.row_mut(j).as_slice_mut().unwrap(), &mut col);
        dots.column_mut(j).assign(&Array1::from(col));
    }
    let theta = model.params_flat();
    let grad_at = |t: &[f32]| {
        let mut m = model.clone();
        m.set_params_flat(t).unwrap();
        let mut g = vec![0.0; p];
        m.weighted_loss_grad(&batch, &weights, &mut g).unwrap();
        Array1::from(g).mapv(|x| x as f64)
    };
    let eps = 1e-3f32;
    for j in 0..3 {
        let step = |s: f32| -> Vec<f32> {
            theta
                .iter()
                .zip(dirs.row(j))
                .map(|(t, d)| t + s * d)
                .collect()
        };
        let fd = (grad_at(&step(eps)) - grad_at(&step(-eps))) / (2.0 * eps as f64);
        let got = hv.row(j).mapv(|x| x as f64);
        let err = (&got - &fd).mapv(f64::abs).sum() / fd.mapv(f64::abs).sum();
        assert!(err < 2e-2, "direction {j}: relative L1 error {err}");
        for b in 0..12 {
            let mut g = vec![0.0; p];
            model.loss_and_grad(&batch[b..b + 1], &mut g).unwrap();
            let want: f64 = g
                .iter()
                .zip(dirs.row(j))
                .map(|(g, d)| (g * d) as f64)
                .sum::<f64>()
                / 12.0;
            let d = dots[[b, j]] as f64;
            assert!(
                (d - want).abs() <= 1e-4 * want.abs().max(1e-2),
                "dot {b},{j}: {d} vs {want}"
            );
        }
    }
}

/// An f64 re-implementation of the MLP (ReLU, cross-entropy, margin output) and of the
/// trainer's update rule, in the trainer's own minibatch order: the reference the
/// metagradients are checked against.
struct Reference {
    sizes: Vec<usize>,
    sgd: Sgd,
    batches: Vec<Vec<usize>>,
}

impl Reference {
    /// Activations of every layer (the last one the logits).
    fn forward(&self, theta: &[f64], x: &[f32]) -> Vec<Vec<f64>> {
        let mut acts = vec![x.iter().map(|&v| v as f64).collect::<Vec<f64>>()];
        let mut off = 0;
        let layers = self.sizes.len() - 1;
        for l in 0..layers {
            let (i, o) = (self.sizes[l], self.sizes[l + 1]);
            let a = &acts[l];
            let z: Vec<f64> = (0..o)
                .map(|r| {
                    let w = &theta[off + r * i..off + (r + 1) * i];
                    w.iter().zip(a).map(|(w, a)| w * a).sum::<f64>() + theta[off + o * i + r]
                })
                .collect();
            off += o * i + o;
            acts.push(if l + 1 < layers {
                z.iter().map(|v| v.max(0.0)).collect()
            } else {
                z
            });
        }
        acts
    }

    /// Adds s · ∂/∂θ of (the loss if `seed` is None, else Σ_k seed_k z_k) at one example.
    fn backward(
        &self,
        theta: &[f64],
        acts: &[Vec<f64>],
        mut delta: Vec<f64>,
        s: f64,
        grad: &mut [f64],
    ) {
        let layers = self.sizes.len() - 1;
        let offs: Vec<usize> = (0..layers)
            .scan(0, |off, l| {
                let o = *off;
                *off += self.sizes[l] * self.sizes[l + 1] + self.sizes[l + 1];
                Some(o)
            })
            .collect();
        for l in (0..layers).rev() {
            let (i, o, off) = (self.sizes[l], self.sizes[l + 1], offs[l]);
            for r in 0..o {
                for c in 0..i {
                    grad[off + r * i + c] += s * delta[r] * acts[l][c];
                }
                grad[off + o * i + r] += s * delta[r];
            }
            if l > 0 {
                delta = (0..i)
                    .map(|c| {
                        let back: f64 = (0..o).map(|r| delta[r] * theta[off + r * i + c]).sum();
                        if acts[l][c] > 0.0 { back } else { 0.0 }
                    })
                    .collect();
            }
        }
    }

    fn train(&self, init: &[f64], data: &[Sample], w: &[f64]) -> Vec<f64> {
        let mut theta = init.to_vec();
        let mut v = vec![0.0; theta.len()];
        for batch in &self.batches {
            let mut g = vec![0.0; theta.len()];
            for &i in batch {
                let acts = self.forward(&theta, &data[i].x);
                let z = acts.last().unwrap();
                let Target::Class(y) = data[i].target else {
                    unreachable!()
                };
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = z.iter().map(|v| (v - m).exp()).collect();
                let sum: f64 = e.iter().sum();
                let dl: Vec<f64> = (0..z.len())
                    .map(|k| e[k] / sum - f64::from(k == y))
                    .collect();
                self.backward(&theta, &acts, dl, w[i] / batch.len() as f64, &mut g);
            }
            let (lr, mu, wd) = (
                self.sgd.lr as f64,
                self.sgd.momentum as f64,
                self.sgd.weight_decay as f64,
            );
            for k in 0..theta.len() {
                v[k] = mu * v[k] + g[k] + wd * theta[k];
                theta[k] -= lr * v[k];
            }
        }
        theta
    }

    fn margin(&self, theta: &[f64], s: &Sample) -> f64 {
        let acts = self.forward(theta, &s.x);
        let z = acts.last().unwrap();
        let Target::Class(y) = s.target else {
            unreachable!()
        };
        let others: Vec<f64> = (0..z.len()).filter(|&k| k != y).map(|k| z[k]).collect();
        let m = others.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        z[y] - (m + others.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
    }
}

#[test]
fn metagradients_match_central_differences_of_f64_retraining() {
    let all = data(46, 4, 3, 11);
    let (train, targets) = (&all[..40], &all[40..]);
    let sizes = vec![4, 6, 3];
    let sgd = smooth_sgd();
    let init = Mlp::new(&sizes, Margin, 5).unwrap();
    let out = metagradients(&sgd, &init, train, targets, &MetagradOptions::default()).unwrap();
    let reference = Reference {
        sizes,
        sgd: sgd.clone(),
        batches: sgd.batches(train.len()),
    };
    let theta0: Vec<f64> = init.params_flat().iter().map(|&v| v as f64).collect();
    // The reference is the trainer: the same parameters up to f32 rounding.
    let ones = vec![1.0; train.len()];
    let trained = reference.train(&theta0, train, &ones);
    let crate_theta = out.model.params_flat();
    for (a, b) in trained.iter().zip(&crate_theta) {
        assert!((a - *b as f64).abs() < 1e-5 * (1.0 + a.abs()), "{a} vs {b}");
    }
    let eps = 1e-4;
    let mut worst = 0.0f64;
    for &i in &[0usize, 7, 19, 33, 39] {
        let at = |d: f64| {
            let mut w = ones.clone();
            w[i] += d;
            let theta = reference.train(&theta0, train, &w);
            targets
                .iter()
                .map(|t| reference.margin(&theta, t))
                .collect::<Vec<f64>>()
        };
        let (plus, minus) = (at(eps), at(-eps));
        for j in 0..targets.len() {
            let fd = (plus[j] - minus[j]) / (2.0 * eps);
            let mg = out.scores.values()[[i, j]] as f64;
            let rel = (mg - fd).abs() / fd.abs().max(1e-3);
            worst = worst.max(rel);
            assert!(
                rel < 1e-4,
                "w_{i}, target {j}: metagradient {mg:e}, central difference {fd:e}"
            );
        }
    }
    eprintln!("worst relative error against f64 central differences: {worst:e}");
}

fn run(threads: usize, opts: &MetagradOptions) -> Metagradients<Mlp<Margin>> {
    let all = data(70, 5, 3, 2);
    let init = Mlp::new(&[5, 8, 3], Margin, 9).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| metagradients(&smooth_sgd(), &init, &all[..60], &all[60..], opts))
        .unwrap()
}

fn score_bits(m: &Metagradients<Mlp<Margin>>) -> Vec<u32> {
    m.scores.values().iter().map(|x| x.to_bits()).collect()
}

#[test]
fn the_bits_do_not_depend_on_threads_passes_or_the_replay_plan() {
    let base = run(1, &MetagradOptions::default());
    assert!(base.plan.keeps_every_state);
    for threads in [2, 3] {
        assert_eq!(
            score_bits(&base),
            score_bits(&run(threads, &MetagradOptions::default()))
        );
    }
    let passes = MetagradOptions {
        targets_per_pass: 3,
        ..Default::default()
    };
    let split = run(2, &passes);
    assert_eq!(split.passes, 4);
    assert_eq!(score_bits(&base), score_bits(&split));
    // A limit below "every state" makes the plan replay segments from checkpoints.
    let p = 5 * 8 + 8 + 8 * 3 + 3;
    // θ̄ (f64) and u (f32) for 10 targets, an f32 product per thread (2 threads), w̄.
    let adjoint = 10 * p * 12 + 2 * p * 4 + 60 * 10 * 8;
    let all_states = base.plan.steps * p * 4;
    let limit = MetagradOptions {
        memory_limit: Some(adjoint + all_states * 7 / 10),
        ..Default::default()
    };
    let replayed = run(2, &limit);
    assert!(!replayed.plan.keeps_every_state, "{:?}", replayed.plan);
    assert!(replayed.plan.bytes <= adjoint + all_states * 7 / 10);
    assert_eq!(score_bits(&base), score_bits(&replayed));
    assert_eq!(
        bits(&base.model.params_flat()),
        bits(&replayed.model.params_flat())
    );
}

#[test]
fn a_budget_too_small_is_a_typed_error_before_training() {
    let opts = MetagradOptions {
        memory_limit: Some(10_000),
        ..Default::default()
    };
    let all = data(70, 5, 3, 2);
    let init = Mlp::new(&[5, 8, 3], Margin, 9).unwrap();
    let e = metagradients(&smooth_sgd(), &init, &all[..60], &all[60..], &opts).unwrap_err();
    match e {
        Error::MemoryBudget {
            budget,
            needed,
            reason,
        } => {
            assert_eq!(budget, 10_000);
            assert!(needed > budget);
            assert!(
                reason.contains("adjoint") && reason.contains("checkpoints"),
                "{reason}"
            );
        }
        other => panic!("expected MemoryBudget, got {other}"),
    }
}

#[test]
fn f32_accumulation_stays_close_to_f64() {
    let f64_run = run(2, &MetagradOptions::default());
    let f32_run = run(
        2,
        &MetagradOptions {
            precision: Precision::F32,
            ..Default::default()
        },
    );
    let a = f64_run.scores.values();
    let b = f32_run.scores.values();
    let diff = (&a - &b).mapv(f32::abs).sum() / a.mapv(f32::abs).sum();
    assert!(diff < 1e-4, "relative L1 difference {diff}");
}

/// The margin without its loss Hessian.
#[derive(Debug, Clone)]
struct NoHessian;

impl OutputFn for NoHessian {
    fn validate(&self, n: usize, t: &Target) -> Result<(), String> {
        Margin.validate(n, t)
    }
    fn eval(&self, z: &[f32], t: &Target, g: &mut [f32]) -> OutputValue {
        Margin.eval(z, t, g)
    }
    fn loss(&self, z: &[f32], t: &Target, g: &mut [f32]) -> f32 {
        Margin.loss(z, t, g)
    }
}

#[test]
fn refusals_name_what_is_wrong() {
    let all = data(30, 3, 3, 0);
    let init = Mlp::new(&[3, 3], NoHessian, 0).unwrap();
    let opts = MetagradOptions::default();
    let e = metagradients(&smooth_sgd(), &init, &all[..20], &all[20..], &opts).unwrap_err();
    assert!(matches!(e, Error::NoLossHessian), "{e}");
    let init = Mlp::new(&[3, 3], Margin, 0).unwrap();
    let e = metagradients(&smooth_sgd(), &init, &all[..20], &[], &opts).unwrap_err();
    assert!(matches!(e, Error::Empty("metagradient targets")), "{e}");
    let bad = vec![Sample {
        x: vec![0.0; 3],
        target: Target::Class(5),
    }];
    let e = metagradients(&smooth_sgd(), &init, &all[..20], &bad, &opts).unwrap_err();
    assert!(matches!(e, Error::InvalidTarget { example: 0, .. }), "{e}");
    let zero = MetagradOptions {
        targets_per_pass: 0,
        ..Default::default()
    };
    let e = metagradients(&smooth_sgd(), &init, &all[..20], &all[20..], &zero).unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
}

/// A model written outside the crate: least squares ŷ = wᵀx + b, implemented through
/// `Trainable` alone. Its metagradients equal those of the built-in `Mlp` linear regression
/// (the same parameters in the same layout).
#[derive(Clone)]
struct LeastSquares {
    theta: Vec<f32>,
}

struct LeastSquaresHvp {
    xs: Vec<Vec<f32>>,
    residuals: Vec<f32>,
    scale: Vec<f32>,
}

fn with_one(x: &[f32]) -> Vec<f32> {
    x.iter().copied().chain([1.0]).collect()
}

impl BatchHvp for LeastSquaresHvp {
    fn apply(&self, v: &[f32], hv: &mut [f32], dots: &mut [f32]) {
        hv.iter_mut().for_each(|h| *h = 0.0);
        let inv_b = 1.0 / self.xs.len() as f32;
        for (b, x) in self.xs.iter().enumerate() {
            let xv: f32 = x.iter().zip(v).map(|(x, v)| x * v).sum();
            hv.iter_mut()
                .zip(x)
                .for_each(|(h, x)| *h += self.scale[b] * xv * x);
            dots[b] = inv_b * self.residuals[b] * xv;
        }
    }
}

impl Trainable for LeastSquares {
    type Example = Sample;
    type Hvp<'a> = LeastSquaresHvp;

    fn param_count(&self) -> usize {
        self.theta.len()
    }
    fn read_params(&self, out: &mut [f32]) {
        out.copy_from_slice(&self.theta);
    }
    fn write_params(&mut self, params: &[f32]) {
        self.theta.copy_from_slice(params);
    }
    fn check_example(&self, s: &Sample, index: usize) -> trak::Result<()> {
        match s.target {
            Target::Value(_) if s.x.len() + 1 == self.theta.len() => Ok(()),
            _ => Err(Error::InvalidTarget {
                example: index,
                reason: "needs a value".into(),
            }),
        }
    }
    fn weighted_loss_grad(
        &self,
        batch: &[&Sample],
        w: &[f32],
        grad: &mut [f32],
    ) -> trak::Result<f32> {
        grad.iter_mut().for_each(|g| *g = 0.0);
        let inv_b = 1.0 / batch.len() as f32;
        let mut loss = 0.0;
        for (s, &w) in batch.iter().zip(w) {
            let x = with_one(&s.x);
            let Target::Value(y) = s.target else {
                unreachable!()
            };
            let r: f32 = x.iter().zip(&self.theta).map(|(x, t)| x * t).sum::<f32>() - y;
            loss += w * 0.5 * r * r * inv_b;
            grad.iter_mut()
                .zip(&x)
                .for_each(|(g, x)| *g += w * inv_b * r * x);
        }
        Ok(loss)
    }
    fn weighted_hvp<'a>(
        &'a self,
        batch: &[&'a Sample],
        w: &[f32],
    ) -> trak::Result<LeastSquaresHvp> {
        let xs: Vec<Vec<f32>> = batch.iter().map(|s| with_one(&s.x)).collect();
        let residuals = batch
            .iter()
            .zip(&xs)
            .map(|(s, x)| {
                let Target::Value(y) = s.target else {
                    unreachable!()
                };
                x.iter().zip(&self.theta).map(|(x, t)| x * t).sum::<f32>() - y
            })
            .collect();
        let scale = w.iter().map(|w| w / batch.len() as f32).collect();
        Ok(LeastSquaresHvp {
            xs,
            residuals,
            scale,
        })
    }
    fn target_grads(
        &self,
        targets: &[Sample],
        mut out: ndarray::ArrayViewMut2<'_, f32>,
    ) -> trak::Result<()> {
        for (mut row, s) in out.rows_mut().into_iter().zip(targets) {
            row.assign(&Array1::from(with_one(&s.x)));
        }
        Ok(())
    }
}

#[test]
fn a_model_written_outside_the_crate_plugs_into_the_trainer_and_the_metagradients() {
    let all: Vec<Sample> = data(50, 4, 2, 3)
        .into_iter()
        .map(|s| {
            let y = s.x.iter().sum::<f32>()
                + if s.target == Target::Class(1) {
                    1.0
                } else {
                    0.0
                };
            Sample {
                x: s.x,
                target: Target::Value(y),
            }
        })
        .collect();
    let (train, targets) = (&all[..40], &all[40..]);
    let sgd = Sgd {
        lr: 0.02,
        ..smooth_sgd()
    };
    let opts = MetagradOptions::default();
    let ours = metagradients(
        &sgd,
        &LeastSquares {
            theta: vec![0.0; 5],
        },
        train,
        targets,
        &opts,
    )
    .unwrap();
    let builtin = metagradients(
        &sgd,
        &Mlp::linear_regression(4).unwrap(),
        train,
        targets,
        &opts,
    )
    .unwrap();
    let (a, b) = (ours.scores.values(), builtin.scores.values());
    let diff = (&a - &b).mapv(f32::abs).sum() / b.mapv(f32::abs).sum();
    assert!(diff < 1e-4, "relative L1 difference {diff}");
}
