//! Dense random projection: the matrix it applies, and the Johnson–Lindenstrauss properties
//! (unbiased inner products, variance from the entry distribution), over fixed seeds.

use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::project::{DenseProjector, Distribution, Projector};

fn random_matrix(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.random_range(-1.0f32..1.0))
}

#[test]
fn applies_the_documented_matrix() {
    // p and k not multiples of the tile sizes, B not a multiple of the register block.
    for dist in [Distribution::Rademacher, Distribution::Gaussian] {
        let (p, k, b) = (517, 300, 6);
        let proj = DenseProjector::new(p, k, dist, 42).unwrap();
        let g = random_matrix(b, p, 1);
        let mut out = Array2::zeros((b, k));
        proj.project(3, g.view(), out.view_mut()).unwrap();
        let pm = proj.matrix(3);
        let want = g.mapv(|v| v as f64).dot(&pm.mapv(|v| v as f64));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (o, w) in out.iter().zip(want.iter()) {
            assert!(
                (*o as f64 - w).abs() <= 1e-5 * scale,
                "{dist:?}: {o} vs {w}"
            );
        }
        if dist == Distribution::Rademacher {
            let s = (1.0 / (k as f64).sqrt()) as f32;
            assert!(pm.iter().all(|&v| v == s || v == -s));
        }
        // different checkpoints get different matrices; same checkpoint, same matrix
        assert_ne!(proj.matrix(4), pm);
        assert_eq!(proj.matrix(3), pm);
    }
}

#[test]
fn entries_have_the_right_moments() {
    // 300 × 1000 entries: mean 0 and variance 1/k within 5 standard errors.
    for dist in [Distribution::Rademacher, Distribution::Gaussian] {
        let k = 1000;
        let pm = DenseProjector::new(300, k, dist, 7)
            .unwrap()
            .matrix(0)
            .mapv(|v| v as f64 * (k as f64).sqrt());
        let n = pm.len() as f64;
        let mean = pm.sum() / n;
        let var = pm.mapv(|v| v * v).sum() / n - mean * mean;
        let fourth = pm.mapv(|v| v.powi(4)).sum() / n;
        assert!(mean.abs() < 5.0 / n.sqrt(), "{dist:?} mean {mean}");
        // sd of the sample second moment is sqrt((E x⁴ − 1)/n): 0 for Rademacher, √(2/n) for N(0,1)
        let sd = ((if dist == Distribution::Gaussian {
            3.0
        } else {
            1.0
        }) - 1.0f64)
            .max(1e-12)
            .sqrt()
            / n.sqrt();
        assert!(
            (var - 1.0).abs() < 5.0 * sd + 1e-5,
            "{dist:?} variance {var}"
        );
        if dist == Distribution::Gaussian {
            assert!(
                (fourth - 3.0).abs() < 0.1,
                "Gaussian fourth moment {fourth}"
            );
        }
    }
}

/// E[φ_aᵀφ_b] = aᵀb, and Var[φ_aᵀφ_b] = V/k where, for rows r of P·√k with i.i.d. entries,
/// V = Var[(rᵀa)(rᵀb)] = (aᵀb)² + |a|²|b|² + (E r⁴ − 3) Σ a_i² b_i²
/// (E r⁴ = 1 for Rademacher, 3 for Gaussian). Over S independent matrices (checkpoint ids),
/// the sample mean must lie within 5 standard errors of aᵀb and the sample variance within
/// 5 standard deviations of V/k (the inner product is an average of k i.i.d. terms, so its
/// sample variance is ≈ σ²χ²_{S−1}/(S−1), sd σ²√(2/(S−1))).
#[test]
fn inner_products_are_unbiased_with_the_predicted_variance() {
    let (p, k, reps) = (400, 128, 600);
    let ab = random_matrix(2, p, 99);
    // correlate b with a so aᵀb is far from zero
    let a = ab.row(0).to_owned();
    let b: Array1<f32> = &a * 0.6 + ab.row(1);
    let g = ndarray::stack![ndarray::Axis(0), a, b];
    let (a, b) = (g.row(0).mapv(|v| v as f64), g.row(1).mapv(|v| v as f64));
    let dot = a.dot(&b);
    let (na, nb) = (a.dot(&a), b.dot(&b));
    let cross: f64 = a.iter().zip(b.iter()).map(|(x, y)| x * x * y * y).sum();
    for (dist, m4) in [
        (Distribution::Rademacher, 1.0),
        (Distribution::Gaussian, 3.0),
    ] {
        let proj = DenseProjector::new(p, k, dist, 2024).unwrap();
        let samples: Vec<f64> = (0..reps as u64)
            .map(|c| {
                let mut out = Array2::zeros((2, k));
                proj.project(c, g.view(), out.view_mut()).unwrap();
                out.row(0)
                    .mapv(|v| v as f64)
                    .dot(&out.row(1).mapv(|v| v as f64))
            })
            .collect();
        let s = reps as f64;
        let mean = samples.iter().sum::<f64>() / s;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (s - 1.0);
        let sigma2 = (dot * dot + na * nb + (m4 - 3.0) * cross) / k as f64;
        let se = (sigma2 / s).sqrt();
        eprintln!(
            "{dist:?}: aᵀb = {dot:.3}, mean = {mean:.3} (se {se:.3}), var = {var:.3} vs predicted {sigma2:.3}"
        );
        assert!(
            (mean - dot).abs() < 5.0 * se,
            "{dist:?}: biased: mean {mean} vs {dot}"
        );
        assert!(
            (var / sigma2 - 1.0).abs() < 5.0 * (2.0 / (s - 1.0)).sqrt(),
            "{dist:?}: variance {var} vs {sigma2}"
        );
    }
}
