//! Quickstart: train a few MLP checkpoints on MNIST-5k (embedded in the binary), attribute a handful of
//! test digits, and print each one's top-5 training examples.
//!
//! `cargo run --release --example quickstart`

use std::time::Instant;

use rayon::prelude::*;
use trak::Trak;
use trak::models::{Mlp, Sgd};
use trak::output::Margin;

fn main() -> trak::Result<()> {
    let start = Instant::now();

    // 5,000 digits → 4,000 training examples, 1,000 held out (fixed shuffle).
    let (train, test) = trak_demo::mnist_5k()?.split(4000, 0)?;
    let (train_s, test_s) = (train.samples(), test.samples());

    // Three checkpoints: 784-128-10 ReLU MLPs trained from different seeds, in parallel.
    const M: u64 = 3;
    let models: Vec<Mlp<Margin>> = (0..M)
        .into_par_iter()
        .map(|seed| {
            let mut model = Mlp::new(&[784, 128, 10], Margin, seed)?;
            Sgd {
                lr: 0.05,
                momentum: 0.9,
                weight_decay: 5e-4,
                epochs: 8,
                batch_size: 64,
                seed,
            }
            .fit(&mut model, &train_s)?;
            Ok(model)
        })
        .collect::<trak::Result<_>>()?;
    let trained = start.elapsed().as_secs_f64();
    for (i, m) in models.iter().enumerate() {
        println!("checkpoint {i}: test accuracy {:.3}", m.accuracy(&test_s)?);
    }

    // Featurise the training set at every checkpoint, finalise, score eight test digits.
    let trak = Trak::builder().proj_dim(1024).seed(0).build()?;
    let mut feats = trak.featurizer();
    for (id, model) in models.iter().enumerate() {
        feats.featurize(id as u64, model, &train_s)?;
    }
    let featurised = start.elapsed().as_secs_f64();
    let index = feats.finalize()?;
    let targets = &test_s[..8];
    let ckpts: Vec<(u64, &Mlp<Margin>)> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m))
        .collect();
    let scores = index.score(&ckpts, targets)?; // n_train × n_targets

    let mut same_label = 0;
    for (t, top) in scores.top_k(5).iter().enumerate() {
        println!(
            "\ntest digit {t} (label {}): top-5 training examples",
            test.labels()[t]
        );
        for &(i, s) in top {
            println!(
                "  train #{i:<5} label {}  score {s:+.4e}",
                train.labels()[i]
            );
            same_label += usize::from(train.labels()[i] == test.labels()[t]);
        }
    }
    println!(
        "\n{same_label}/{} of the top-5 proponents share their target's label",
        5 * targets.len()
    );
    println!(
        "time: training {trained:.1} s, featurisation {:.1} s, finalise + score {:.1} s, total {:.1} s ({} threads)",
        featurised - trained,
        start.elapsed().as_secs_f64() - featurised,
        start.elapsed().as_secs_f64(),
        rayon::current_num_threads()
    );
    Ok(())
}
