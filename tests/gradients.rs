//! Built-in models: analytic per-example gradients against central finite differences of an
//! independent f64 implementation of the network and output functions.

mod common;

use common::{class_samples, random_samples, randomize};
use ndarray::Array2;
use trak::Model;
use trak::data::{Sample, Target};
use trak::models::Mlp;
use trak::output::{Logistic, Margin, OutputFn, Regression};

/// f(x; θ) in f64 from flat parameters, for layer sizes `sizes`, written independently of the crate.
fn f64_output(sizes: &[usize], theta: &[f64], s: &Sample, kind: &str) -> f64 {
    let mut a: Vec<f64> = s.x.iter().map(|&v| v as f64).collect();
    let mut off = 0;
    let n_layers = sizes.len() - 1;
    for l in 0..n_layers {
        let (i, o) = (sizes[l], sizes[l + 1]);
        let w = &theta[off..off + o * i];
        let b = &theta[off + o * i..off + o * i + o];
        off += o * i + o;
        let mut z: Vec<f64> = (0..o)
            .map(|r| b[r] + (0..i).map(|c| w[r * i + c] * a[c]).sum::<f64>())
            .collect();
        if l + 1 < n_layers {
            z.iter_mut().for_each(|v| *v = v.max(0.0));
        }
        a = z;
    }
    match (kind, s.target) {
        ("margin", Target::Class(y)) => {
            let others: Vec<f64> = a
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != y)
                .map(|(_, &v)| v)
                .collect();
            let m = others.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            a[y] - (m + others.iter().map(|v| (v - m).exp()).sum::<f64>().ln())
        }
        ("logistic", Target::Class(y)) => {
            if y == 1 {
                a[0]
            } else {
                -a[0]
            }
        }
        ("regression", Target::Value(_)) => a[0],
        _ => unreachable!(),
    }
}

fn check<O: OutputFn>(model: &Mlp<O>, samples: &[Sample], kind: &str) {
    let sizes = model.sizes();
    let theta: Vec<f64> = model.params_flat().iter().map(|&v| v as f64).collect();
    let p = theta.len();
    let mut grads = Array2::<f32>::zeros((samples.len(), p));
    model.output_grads(samples, grads.view_mut()).unwrap();
    let h = 1e-6;
    let mut worst = 0.0f64;
    for (b, s) in samples.iter().enumerate() {
        let fd: Vec<f64> = (0..p)
            .map(|j| {
                let mut tp = theta.clone();
                tp[j] += h;
                let mut tm = theta.clone();
                tm[j] -= h;
                (f64_output(&sizes, &tp, s, kind) - f64_output(&sizes, &tm, s, kind)) / (2.0 * h)
            })
            .collect();
        let scale = fd.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(scale > 0.0, "degenerate test: zero gradient");
        for j in 0..p {
            let g = grads[(b, j)] as f64;
            // relative to the entry, with a floor of 1e-3 of the largest entry for the
            // entries that are zero up to rounding
            let err = (g - fd[j]).abs() / fd[j].abs().max(1e-3 * scale);
            worst = worst.max(err);
            assert!(
                err < 1e-3,
                "{kind}: example {b} param {j}: analytic {g} vs finite difference {}",
                fd[j]
            );
        }
    }
    eprintln!("{kind} sizes {sizes:?}: worst relative error {worst:.2e}");
}

#[test]
fn mlp_margin_two_hidden_layers() {
    let mut m = Mlp::new(&[6, 5, 4, 3], Margin, 3).unwrap();
    randomize(&mut m, 0.8, 11);
    check(&m, &class_samples(8, 6, 3, 1), "margin");
}

#[test]
fn mlp_margin_one_hidden_layer_mnist_shape_subset() {
    let mut m = Mlp::new(&[20, 16, 10], Margin, 4).unwrap();
    randomize(&mut m, 0.5, 12);
    check(&m, &class_samples(4, 20, 10, 2), "margin");
}

#[test]
fn multinomial_logistic_regression() {
    let mut m = Mlp::multinomial_logistic(7, 4).unwrap();
    randomize(&mut m, 1.0, 13);
    check(&m, &class_samples(6, 7, 4, 3), "margin");
}

#[test]
fn binary_logistic_regression_and_mlp() {
    let mut m = Mlp::binary_logistic(5).unwrap();
    randomize(&mut m, 1.0, 14);
    let data = class_samples(6, 5, 2, 4);
    check(&m, &data, "logistic");
    let mut m = Mlp::new(&[5, 6, 1], Logistic, 5).unwrap();
    randomize(&mut m, 1.0, 15);
    check(&m, &data, "logistic");
}

#[test]
fn regression_linear_and_mlp() {
    use rand::RngExt;
    let data = random_samples(6, 4, 5, |_, rng| Target::Value(rng.random_range(-2.0..2.0)));
    let mut m = Mlp::linear_regression(4).unwrap();
    randomize(&mut m, 1.0, 16);
    check(&m, &data, "regression");
    let mut m = Mlp::new(&[4, 8, 1], Regression, 6).unwrap();
    randomize(&mut m, 1.0, 17);
    check(&m, &data, "regression");
}

#[test]
fn training_loss_gradient_matches_finite_differences() {
    // The trainer's batch-mean loss gradient, checked in f32 (central differences on the
    // crate's own loss, looser tolerance): guards the backward pass used for training.
    let mut m = Mlp::new(&[5, 4, 3], Margin, 7).unwrap();
    randomize(&mut m, 0.7, 18);
    let data = class_samples(10, 5, 3, 6);
    let p = m.params_flat().len();
    let mut g = vec![0.0; p];
    m.loss_and_grad(&data, &mut g).unwrap();
    let theta = m.params_flat();
    let h = 1e-2f32;
    let mut scratch = vec![0.0; p];
    for j in 0..p {
        let mut mp = m.clone();
        let mut t = theta.clone();
        t[j] += h;
        mp.set_params_flat(&t).unwrap();
        let lp = mp.loss_and_grad(&data, &mut scratch).unwrap() as f64;
        t[j] -= 2.0 * h;
        mp.set_params_flat(&t).unwrap();
        let lm = mp.loss_and_grad(&data, &mut scratch).unwrap() as f64;
        let fd = (lp - lm) / (2.0 * h as f64);
        assert!(
            (fd - g[j] as f64).abs() < 2e-3,
            "param {j}: {fd} vs {}",
            g[j]
        );
    }
}

#[test]
fn sgd_is_deterministic_and_learns() {
    let data = class_samples(200, 6, 3, 9);
    // a learnable rule: class = argmax of the first three inputs
    let data: Vec<Sample> = data
        .into_iter()
        .map(|mut s| {
            let y = (0..3).max_by(|&a, &b| s.x[a].total_cmp(&s.x[b])).unwrap();
            s.target = Target::Class(y);
            s
        })
        .collect();
    let sgd = trak::models::Sgd {
        epochs: 30,
        lr: 0.1,
        ..Default::default()
    };
    let mut a = Mlp::new(&[6, 16, 3], Margin, 1).unwrap();
    let mut b = a.clone();
    let ra = sgd.fit(&mut a, &data).unwrap();
    sgd.fit(&mut b, &data).unwrap();
    assert_eq!(a, b, "same seed, same parameters");
    assert!(ra.epoch_losses.last().unwrap() < &(ra.epoch_losses[0] * 0.5));
    assert!(a.accuracy(&data).unwrap() > 0.9);
    // parameters survive a serde round trip bit for bit
    let json = serde_json::to_string(&a).unwrap();
    let back: Mlp<Margin> = serde_json::from_str(&json).unwrap();
    assert_eq!(a, back);
}
