//! Shared helpers for the integration tests: small random problems and naive f64 references.
#![allow(dead_code)]

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::data::{Sample, Target};
use trak::models::Mlp;
use trak::output::OutputFn;

/// `n` samples with inputs ~ U(−1, 1)^d and targets from `target(i, rng)`.
pub fn random_samples(
    n: usize,
    d: usize,
    seed: u64,
    mut target: impl FnMut(usize, &mut ChaCha8Rng) -> Target,
) -> Vec<Sample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|i| Sample {
            x: (0..d).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            target: target(i, &mut rng),
        })
        .collect()
}

pub fn class_samples(n: usize, d: usize, classes: usize, seed: u64) -> Vec<Sample> {
    random_samples(n, d, seed, |_, rng| {
        Target::Class(rng.random_range(0..classes))
    })
}

/// The bit patterns of a matrix, for bit-for-bit comparisons.
pub fn bits(v: ndarray::ArrayView2<'_, f32>) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Sets every parameter (biases too) to U(−scale, scale).
pub fn randomize<O: OutputFn>(model: &mut Mlp<O>, scale: f32, seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = model.params_flat().len();
    let v: Vec<f32> = (0..p).map(|_| rng.random_range(-scale..scale)).collect();
    model.set_params_flat(&v).unwrap();
}

/// The store tests' problem: n = 1100 training examples (blocks of 512 or 256 rows leave a
/// partial last block), 7 targets, two checkpoints of an MLP 20-16-10 with random weights.
pub struct StoreProblem {
    pub train: Vec<Sample>,
    pub targets: Vec<Sample>,
    pub models: Vec<Mlp<trak::output::Margin>>,
}

pub fn store_problem() -> StoreProblem {
    let models = (0..2)
        .map(|i| {
            let mut m = Mlp::new(&[20, 16, 10], trak::output::Margin, i).unwrap();
            randomize(&mut m, 0.3, 40 + i);
            m
        })
        .collect();
    StoreProblem {
        train: class_samples(1100, 20, 10, 1),
        targets: class_samples(7, 20, 10, 2),
        models,
    }
}

/// Solves A X = B for symmetric positive definite A by Gauss–Jordan elimination with partial
/// pivoting, in f64 — the explicit-inverse reference, independent of the crate's Cholesky.
pub fn inverse(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .enumerate()
        .map(|(i, row)| {
            let mut r = row.clone();
            r.extend((0..n).map(|j| if i == j { 1.0 } else { 0.0 }));
            r
        })
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))
            .unwrap();
        m.swap(col, piv);
        let d = m[col][col];
        assert!(d.abs() > 1e-300, "singular matrix in the test reference");
        for v in m[col].iter_mut() {
            *v /= d;
        }
        let pivot_row = m[col].clone();
        for (r, row) in m.iter_mut().enumerate() {
            let f = row[col];
            if r != col && f != 0.0 {
                for (v, p) in row.iter_mut().zip(&pivot_row) {
                    *v -= f * p;
                }
            }
        }
    }
    m.into_iter().map(|r| r[n..].to_vec()).collect()
}

pub fn matmul(a: &[Vec<f64>], b: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let (n, k, m) = (a.len(), b.len(), b[0].len());
    assert_eq!(a[0].len(), k);
    (0..n)
        .map(|i| {
            (0..m)
                .map(|j| (0..k).map(|t| a[i][t] * b[t][j]).sum())
                .collect()
        })
        .collect()
}

pub fn transpose(a: &[Vec<f64>]) -> Vec<Vec<f64>> {
    (0..a[0].len())
        .map(|j| a.iter().map(|r| r[j]).collect())
        .collect()
}

/// Max over entries of |got − want| / max|want|, and the per-entry worst relative error with
/// a floor of 1e-6·max|want| (to ignore entries that are zero up to rounding).
pub fn rel_err(got: &[f64], want: &[f64]) -> (f64, f64) {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let norm = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0, f64::max)
        / scale;
    let entry = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / w.abs().max(1e-6 * scale))
        .fold(0.0, f64::max);
    (norm, entry)
}
