//! Dense random projection: the matrix it applies, and the Johnson–Lindenstrauss properties
//! (unbiased inner products, variance from the entry distribution), over fixed seeds.

use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::project::sparse::SPARSE_CHUNK;
use trak::project::{DenseProjector, Distribution, FactoredProjector, Projector, SparseProjector};

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

/// Two correlated gradients a, b (rows of `g`, b = 0.6 a + noise, so aᵀb is far from zero)
/// with aᵀb, |a|²|b|² and Σ a_i² b_i² in f64.
struct Pair {
    g: Array2<f32>,
    dot: f64,
    norms: f64,
    cross: f64,
}

fn correlated_pair(p: usize) -> Pair {
    let ab = random_matrix(2, p, 99);
    let a = ab.row(0).to_owned();
    let b: Array1<f32> = &a * 0.6 + ab.row(1);
    let g = ndarray::stack![ndarray::Axis(0), a, b];
    let (a, b) = (g.row(0).mapv(|v| v as f64), g.row(1).mapv(|v| v as f64));
    Pair {
        dot: a.dot(&b),
        norms: a.dot(&a) * b.dot(&b),
        cross: a.iter().zip(b.iter()).map(|(x, y)| x * x * y * y).sum(),
        g,
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
    let Pair {
        g,
        dot,
        norms,
        cross,
    } = correlated_pair(p);
    for (dist, m4) in [
        (Distribution::Rademacher, 1.0),
        (Distribution::Gaussian, 3.0),
    ] {
        let proj = DenseProjector::new(p, k, dist, 2024).unwrap();
        let (mean, var, _) = inner_product_stats(reps as u64, |c| {
            let mut out = Array2::zeros((2, k));
            proj.project(c, g.view(), out.view_mut()).unwrap();
            out
        });
        let s = reps as f64;
        let sigma2 = (dot * dot + norms + (m4 - 3.0) * cross) / k as f64;
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

/// Sample mean and standard error of the inner product of the two rows' features over
/// `reps` checkpoints.
fn inner_product_stats(reps: u64, mut features: impl FnMut(u64) -> Array2<f32>) -> (f64, f64, f64) {
    let samples: Vec<f64> = (0..reps)
        .map(|c| {
            let out = features(c);
            out.row(0)
                .mapv(|v| v as f64)
                .dot(&out.row(1).mapv(|v| v as f64))
        })
        .collect();
    let s = reps as f64;
    let mean = samples.iter().sum::<f64>() / s;
    let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (s - 1.0);
    (mean, var, (var / s).sqrt())
}

#[test]
fn sparse_applies_the_documented_matrix() {
    for s in [1, 2, 3, 4, 8] {
        // p spans two parallel chunks, k not a multiple of s
        let (p, k, b) = (SPARSE_CHUNK + 517, 300, 5);
        let proj = SparseProjector::new(p, k, s, 42).unwrap();
        let mut g = random_matrix(b, p, 1);
        g[(1, 7)] = 0.0; // zeros are skipped; must change nothing
        let mut out = Array2::zeros((b, k));
        proj.project(3, g.view(), out.view_mut()).unwrap();
        let pm = proj.matrix(3);
        let want = g.mapv(|v| v as f64).dot(&pm.mapv(|v| v as f64));
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        for (o, w) in out.iter().zip(want.iter()) {
            assert!((*o as f64 - w).abs() <= 1e-5 * scale, "s={s}: {o} vs {w}");
        }
        // s non-zeros ±1/√s per row, one in each block of columns r·k/s .. (r+1)·k/s
        let v = (1.0 / (s as f64).sqrt()) as f32;
        for i in [0, 1, 999, p - 1] {
            let e = proj.row_entries(3, i);
            assert_eq!(e.len(), s);
            for (r, &(c, x)) in e.iter().enumerate() {
                assert!(
                    c >= r * k / s && c < (r + 1) * k / s,
                    "s={s} row {i}: column {c}"
                );
                assert!(x == v || x == -v);
            }
            assert_eq!(pm.row(i).iter().filter(|&&x| x != 0.0).count(), s);
        }
        assert_ne!(proj.matrix(4), pm);
    }
}

/// Block sparse JL: E[φ_aᵀφ_b] = aᵀb and, when s divides k, the same variance as a dense
/// Rademacher projection: ((aᵀb)² + |a|²|b|² − 2 Σ a_i² b_i²)/k.
#[test]
fn sparse_inner_products_are_unbiased_with_the_predicted_variance() {
    let (p, k, reps) = (400, 128, 600);
    let Pair {
        g,
        dot,
        norms,
        cross,
    } = correlated_pair(p);
    let sigma2 = (dot * dot + norms - 2.0 * cross) / k as f64;
    for s in [1, 4, 8] {
        let proj = SparseProjector::new(p, k, s, 2024).unwrap();
        let (mean, var, se) = inner_product_stats(reps, |c| {
            let mut out = Array2::zeros((2, k));
            proj.project(c, g.view(), out.view_mut()).unwrap();
            out
        });
        eprintln!(
            "sparse s={s}: aᵀb = {dot:.3}, mean {mean:.3} (se {se:.3}), var {var:.3} vs {sigma2:.3}"
        );
        assert!(
            (mean - dot).abs() < 5.0 * se,
            "s={s}: biased: {mean} vs {dot}"
        );
        let tol = 5.0 * (2.0 / (reps as f64 - 1.0)).sqrt();
        assert!(
            (var / sigma2 - 1.0).abs() < tol,
            "s={s}: variance {var} vs {sigma2}"
        );
    }
}

/// The factored features of an MLP are (P_out ⊗ P_in)ᵀ applied to each layer's gradient, as
/// read from the flat gradient (W row-major, then b as the last input column).
#[test]
fn factored_applies_the_kronecker_product_of_its_factors() {
    use trak::Model;
    use trak::data::{Sample, Target};
    use trak::model::FactoredModel;
    use trak::models::Mlp;
    use trak::output::Margin;
    let sizes = [30, 20, 7];
    let mut model = Mlp::new(&sizes, Margin, 3).unwrap();
    let params = random_matrix(1, model.num_params(), 8);
    model.set_params_flat(params.as_slice().unwrap()).unwrap();
    let x = random_matrix(6, sizes[0], 9);
    let batch: Vec<Sample> = x
        .rows()
        .into_iter()
        .enumerate()
        .map(|(i, r)| Sample {
            x: r.to_vec(),
            target: Target::Class(i % 7),
        })
        .collect();
    let mut grads = Array2::zeros((batch.len(), model.num_params()));
    model.output_grads(&batch, grads.view_mut()).unwrap();
    for k in [64, 100, 2000] {
        let fp = FactoredProjector::new(&model.linear_layers(), k, 11).unwrap();
        let mats = fp.at_checkpoint(2);
        let mut out = Array2::zeros((batch.len(), fp.output_dim()));
        mats.project(&model.layer_factors(&batch).unwrap(), out.view_mut())
            .unwrap();
        let mut off = 0;
        for (l, plan) in fp.plan().iter().enumerate() {
            let (o, i) = (plan.layer.out_dim, plan.layer.in_dim);
            let (po, pi) = mats.factors(l);
            let eye = |d: usize| Array2::<f64>::eye(d);
            let po = po.map_or_else(|| eye(o), |m| m.mapv(|v| v as f64));
            let pi = pi.map_or_else(|| eye(i), |m| m.mapv(|v| v as f64));
            for (e, g) in grads.rows().into_iter().enumerate() {
                let gm = Array2::from_shape_fn((o, i), |(r, c)| {
                    if c + 1 < i {
                        g[off + r * (i - 1) + c] as f64
                    } else {
                        g[off + o * (i - 1) + r] as f64
                    }
                });
                let want = po.t().dot(&gm).dot(&pi);
                let got = out.slice(ndarray::s![e, plan.offset..plan.offset + plan.width]);
                let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
                for (w, g) in want.iter().zip(got.iter()) {
                    assert!(
                        (w - *g as f64).abs() < 1e-5 * scale,
                        "k={k} layer {l}: {g} vs {w}"
                    );
                }
            }
            off += o * i;
        }
    }
}

#[test]
fn factored_inner_products_are_unbiased() {
    use trak::model::{LayerFactors, LinearLayer};
    // one layer, out 16, in 50, applied at 3 positions; features 3 × 10
    let layer = LinearLayer {
        out_dim: 16,
        in_dim: 50,
    };
    let fp = FactoredProjector::new(&[layer], 30, 5).unwrap();
    assert_eq!((fp.plan()[0].k_out, fp.plan()[0].k_in), (3, 10));
    let acts = random_matrix(6, 50, 1);
    let mut deltas = random_matrix(6, 16, 2);
    // correlate the two examples' gradients
    for c in 0..16 {
        deltas[(3, c)] += deltas[(0, c)];
    }
    let f = LayerFactors {
        positions: 3,
        acts: acts.clone(),
        deltas: deltas.clone(),
    };
    let grad = |e: usize| {
        let mut g = Array2::<f64>::zeros((16, 50));
        for t in 0..3 {
            let (d, a) = (deltas.row(e * 3 + t), acts.row(e * 3 + t));
            for r in 0..16 {
                for c in 0..50 {
                    g[(r, c)] += d[r] as f64 * a[c] as f64;
                }
            }
        }
        g
    };
    let dot = (grad(0) * grad(1)).sum();
    let (mean, _, se) = inner_product_stats(2000, |c| {
        let mut out = Array2::zeros((2, 30));
        fp.at_checkpoint(c)
            .project(std::slice::from_ref(&f), out.view_mut())
            .unwrap();
        out
    });
    eprintln!("factored: gᵀg' = {dot:.3}, mean {mean:.3} (se {se:.3})");
    assert!((mean - dot).abs() < 5.0 * se, "biased: {mean} vs {dot}");
}

/// The sketched factored projector (`FactoredProjector::sketched`): E[φ_aᵀφ_b] = g_aᵀg_b
/// over checkpoints, for a layer with a random output factor and an identity input factor at
/// 3 positions (Σ_t taken before the sketch) and a small layer whose exact gradient is sketched
/// (both factors the identity, so only the sketch's signs and places are random).
#[test]
fn sketched_factored_inner_products_are_unbiased() {
    use trak::model::{LayerFactors, LinearLayer};
    let layers = [
        LinearLayer {
            out_dim: 16,
            in_dim: 50,
        },
        LinearLayer {
            out_dim: 4,
            in_dim: 6,
        },
    ];
    let fp = FactoredProjector::sketched(&layers, 60, 8, 5).unwrap();
    let dims: Vec<_> = fp
        .plan()
        .iter()
        .map(|p| (p.k_out, p.k_in, p.width))
        .collect();
    assert_eq!(dims, vec![(8, 50, 52), (4, 6, 8)]);
    assert!(fp.plan().iter().all(|p| p.sketched()));
    let positions = [3, 1];
    let factors: Vec<LayerFactors> = layers
        .iter()
        .zip(positions)
        .enumerate()
        .map(|(l, (layer, t))| {
            let mut acts = random_matrix(2 * t, layer.in_dim, 10 + l as u64);
            let mut deltas = random_matrix(2 * t, layer.out_dim, 20 + l as u64);
            // example 1 = example 0 + noise, so that g_aᵀg_b is large
            for r in 0..t {
                let (a0, d0) = (acts.row(r).to_owned(), deltas.row(r).to_owned());
                acts.row_mut(t + r).scaled_add(2.0, &a0);
                deltas.row_mut(t + r).scaled_add(2.0, &d0);
            }
            LayerFactors {
                positions: t,
                acts,
                deltas,
            }
        })
        .collect();
    // g_aᵀg_b from the explicit per-layer gradients Σ_t δ_t a_tᵀ.
    let grad = |f: &LayerFactors, e: usize| {
        let t = f.positions;
        let mut g = Array2::<f64>::zeros((f.deltas.ncols(), f.acts.ncols()));
        for tt in 0..t {
            let (d, a) = (f.deltas.row(e * t + tt), f.acts.row(e * t + tt));
            for (r, dv) in d.iter().enumerate() {
                for (c, av) in a.iter().enumerate() {
                    g[(r, c)] += *dv as f64 * *av as f64;
                }
            }
        }
        g
    };
    let dot: f64 = factors
        .iter()
        .map(|f| (grad(f, 0) * grad(f, 1)).sum())
        .sum();
    let (mean, _, se) = inner_product_stats(3000, |c| {
        let mut out = Array2::zeros((2, fp.output_dim()));
        fp.at_checkpoint(c)
            .project(&factors, out.view_mut())
            .unwrap();
        out
    });
    eprintln!("sketched factored: gᵀg' = {dot:.3}, mean {mean:.3} (se {se:.3})");
    assert!((mean - dot).abs() < 5.0 * se, "biased: {mean} vs {dot}");
    assert!(
        se < 0.1 * dot.abs(),
        "too noisy to test: se {se}, dot {dot}"
    );
}
