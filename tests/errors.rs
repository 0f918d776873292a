//! Bad input returns a typed error, never a panic.

mod common;

use common::class_samples;
use ndarray::{ArrayViewMut1, ArrayViewMut2};
use trak::data::{Dataset, Sample, Target};
use trak::kernel::Ridge;
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::models::Mlp;
use trak::output::{Logistic, Margin};
use trak::project::{DenseProjector, Distribution, Projector, ProjectorKind};
use trak::{Error, ExampleSet, Model, Trak};

/// Wraps a model and poisons one example's gradient (`grad_at`) or Q (`q_at`) with `value`.
struct Faulty {
    inner: Mlp<Margin>,
    grad_at: Option<usize>,
    q_at: Option<usize>,
    value: f32,
}

impl Model for Faulty {
    type Example = (usize, Sample);
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn output_grads(
        &self,
        batch: &[Self::Example],
        mut grads: ArrayViewMut2<'_, f32>,
    ) -> trak::Result<()> {
        let samples: Vec<Sample> = batch.iter().map(|(_, s)| s.clone()).collect();
        self.inner.output_grads(&samples, grads.view_mut())?;
        for (b, (i, _)) in batch.iter().enumerate() {
            if Some(*i) == self.grad_at {
                grads[(b, 3)] = self.value;
            }
        }
        Ok(())
    }
    fn output_q(&self, batch: &[Self::Example], mut q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        let samples: Vec<Sample> = batch.iter().map(|(_, s)| s.clone()).collect();
        self.inner.output_q(&samples, q.view_mut())?;
        for (b, (i, _)) in batch.iter().enumerate() {
            if Some(*i) == self.q_at {
                q[b] = self.value;
            }
        }
        Ok(())
    }
    fn factored(&self) -> Option<&dyn FactoredModel<Self::Example>> {
        Some(self)
    }
}

/// Poisons entry 3 of layer 1's activations of example `grad_at`.
impl FactoredModel<(usize, Sample)> for Faulty {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.inner.linear_layers()
    }
    fn layer_factors(&self, batch: &[(usize, Sample)]) -> trak::Result<Vec<LayerFactors>> {
        let samples: Vec<Sample> = batch.iter().map(|(_, s)| s.clone()).collect();
        let mut f = self.inner.layer_factors(&samples)?;
        for (b, (i, _)) in batch.iter().enumerate() {
            if Some(*i) == self.grad_at {
                f[1].acts[(b, 3)] = self.value;
            }
        }
        Ok(f)
    }
}

/// A model without a factored view.
struct Flat(Mlp<Margin>);

impl Model for Flat {
    type Example = Sample;
    fn num_params(&self) -> usize {
        self.0.num_params()
    }
    fn output_grads(&self, batch: &[Sample], grads: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        self.0.output_grads(batch, grads)
    }
    fn output_q(&self, batch: &[Sample], q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        self.0.output_q(batch, q)
    }
}

#[test]
fn factored_projection_errors() {
    let train = indexed(class_samples(30, 4, 3, 1));
    let trak = Trak::builder()
        .proj_dim(16)
        .projector(ProjectorKind::FACTORED)
        .batch_size(8)
        .build()
        .unwrap();
    let m = Faulty {
        inner: model(),
        grad_at: Some(19),
        q_at: None,
        value: f32::NAN,
    };
    let err = trak.featurizer().featurize(7, &m, &train).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteFactor {
                set: ExampleSet::Training,
                example: 19,
                checkpoint: 7,
                layer: 1,
                what: "activation",
                index: 3
            }
        ),
        "{err:?}"
    );
    // a model without layer factors is refused with a message saying why
    let plain: Vec<Sample> = train.iter().map(|(_, s)| s.clone()).collect();
    let err = trak
        .featurizer()
        .featurize(0, &Flat(model()), &plain)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NoFactoredView) && err.to_string().contains("factored"),
        "{err:?}"
    );
    // the flat projector builder refuses the factored kind
    assert!(matches!(
        trak::project::build(ProjectorKind::FACTORED, 10, 4, 0),
        Err(Error::UnsupportedProjector { projector, .. }) if projector == "factored (expansion 32)"
    ));
    // ... and TrainFeatures::prefix is only for dense projections
    let mut feats = trak.featurizer();
    feats.featurize(0, &model(), &plain).unwrap();
    assert!(matches!(
        feats.prefix(8),
        Err(Error::UnsupportedProjector { .. })
    ));
}

#[test]
fn sparse_projection_configuration_is_checked() {
    for (s, k) in [(0, 16), (17, 16), (65, 128)] {
        let err = Trak::builder()
            .proj_dim(k)
            .projector(ProjectorKind::Sparse { s })
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    parameter: "sparse non-zeros per coordinate s",
                    ..
                }
            ),
            "s={s} k={k}: {err:?}"
        );
    }
    let proj = trak::project::SparseProjector::new(10, 8, 2, 0).unwrap();
    let g = ndarray::Array2::<f32>::zeros((3, 9));
    let mut out = ndarray::Array2::<f32>::zeros((3, 8));
    assert!(matches!(
        proj.project(0, g.view(), out.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));
}

fn indexed(samples: Vec<Sample>) -> Vec<(usize, Sample)> {
    samples.into_iter().enumerate().collect()
}

fn model() -> Mlp<Margin> {
    Mlp::new(&[4, 5, 3], Margin, 0).unwrap()
}

fn trak(k: usize) -> Trak {
    Trak::builder().proj_dim(k).batch_size(8).build().unwrap()
}

#[test]
fn non_finite_gradients_name_the_example() {
    let train = indexed(class_samples(30, 4, 3, 1));
    for value in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let m = Faulty {
            inner: model(),
            grad_at: Some(19),
            q_at: None,
            value,
        };
        let err = trak(16).featurizer().featurize(7, &m, &train).unwrap_err();
        assert!(
            matches!(
                err,
                Error::NonFiniteGradient {
                    set: ExampleSet::Training,
                    example: 19,
                    checkpoint: 7,
                    param: 3
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("example 19"), "{err}");
    }
    // target gradients too, at scoring time
    let good = Faulty {
        inner: model(),
        grad_at: None,
        q_at: None,
        value: 0.0,
    };
    let mut feats = trak(16).featurizer();
    feats.featurize(0, &good, &train).unwrap();
    let index = feats.finalize().unwrap();
    let bad = Faulty {
        inner: model(),
        grad_at: Some(2),
        q_at: None,
        value: f32::NAN,
    };
    let err = index.score(&[(0, &bad)], &train[..5]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteGradient {
                set: ExampleSet::Target,
                example: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn non_finite_q_names_the_example() {
    let train = indexed(class_samples(30, 4, 3, 1));
    let m = Faulty {
        inner: model(),
        grad_at: None,
        q_at: Some(11),
        value: f32::NAN,
    };
    let err = trak(16).featurizer().featurize(2, &m, &train).unwrap_err();
    assert!(
        matches!(
            err,
            Error::NonFiniteQ {
                example: 11,
                checkpoint: 2
            }
        ),
        "{err:?}"
    );
}

#[test]
fn non_finite_inputs_and_parameters() {
    let mut train = class_samples(10, 4, 3, 1);
    train[6].x[2] = f32::NAN;
    let err = trak(16)
        .featurizer()
        .featurize(0, &model(), &train)
        .unwrap_err();
    assert!(
        matches!(err, Error::NonFiniteInput { what: "example input", index } if index == 6 * 4 + 2),
        "{err:?}"
    );
    let mut m = model();
    let mut p = m.params_flat();
    p[5] = f32::INFINITY;
    assert!(matches!(
        m.set_params_flat(&p),
        Err(Error::NonFiniteInput { index: 5, .. })
    ));
}

#[test]
fn wrong_shapes() {
    // an example of the wrong length
    let mut train = class_samples(10, 4, 3, 1);
    train[3].x.push(0.0);
    let err = trak(16)
        .featurizer()
        .featurize(0, &model(), &train)
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");

    // a gradient buffer of the wrong shape
    let train = class_samples(10, 4, 3, 1);
    let mut buf = ndarray::Array2::<f32>::zeros((10, 7));
    assert!(matches!(
        model().output_grads(&train, buf.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));

    // a projector given the wrong shapes
    let proj = DenseProjector::new(20, 8, Distribution::Rademacher, 0).unwrap();
    let g = ndarray::Array2::<f32>::zeros((3, 19));
    let mut out = ndarray::Array2::<f32>::zeros((3, 8));
    assert!(matches!(
        proj.project(0, g.view(), out.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));
    let g = ndarray::Array2::<f32>::zeros((3, 20));
    let mut out = ndarray::Array2::<f32>::zeros((2, 8));
    assert!(matches!(
        proj.project(0, g.view(), out.view_mut()),
        Err(Error::ShapeMismatch { .. })
    ));

    // scoring with a model whose parameter count differs from the featurised one (identity
    // projector, so k = p differs)
    let t = Trak::builder()
        .projector(ProjectorKind::Identity)
        .build()
        .unwrap();
    let mut feats = t.featurizer();
    feats.featurize(0, &model(), &train).unwrap();
    let index = feats.finalize().unwrap();
    let other = Mlp::new(&[4, 6, 3], Margin, 0).unwrap();
    assert!(matches!(
        index.score(&[(0, &other)], &train),
        Err(Error::ShapeMismatch { .. })
    ));

    // dataset rows vs labels
    assert!(matches!(
        Dataset::new(ndarray::Array2::zeros((3, 2)), vec![0, 1]),
        Err(Error::ShapeMismatch { .. })
    ));
    // a training set of a different size for a second checkpoint
    let mut feats = trak(16).featurizer();
    feats.featurize(0, &model(), &train).unwrap();
    let err = feats.featurize(1, &model(), &train[..9]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TrainSizeMismatch {
                expected: 10,
                got: 9
            }
        ),
        "{err:?}"
    );
}

#[test]
fn empty_sets() {
    let train = class_samples(10, 4, 3, 1);
    let err = trak(16)
        .featurizer()
        .featurize(0, &model(), &[])
        .unwrap_err();
    assert!(matches!(err, Error::Empty(_)), "{err:?}");
    assert!(matches!(
        trak(16).featurizer().finalize(),
        Err(Error::Empty(_))
    ));
    let mut feats = trak(16).featurizer();
    feats.featurize(0, &model(), &train).unwrap();
    let index = feats.finalize().unwrap();
    let m = model();
    assert!(matches!(index.score(&[(0, &m)], &[]), Err(Error::Empty(_))));
    assert!(matches!(
        index.score::<Mlp<Margin>>(&[], &train),
        Err(Error::Empty(_))
    ));
    assert!(matches!(
        trak::models::Sgd::default().fit(&mut model(), &[]),
        Err(Error::Empty(_))
    ));
}

#[test]
fn invalid_configuration() {
    assert!(matches!(
        Trak::builder().proj_dim(0).build(),
        Err(Error::InvalidParameter {
            parameter: "projection dimension k",
            ..
        })
    ));
    assert!(matches!(
        Trak::builder().batch_size(0).build(),
        Err(Error::InvalidParameter {
            parameter: "batch size",
            ..
        })
    ));
    assert!(matches!(
        Trak::builder().ridge(Ridge::Relative(-1.0)).build(),
        Err(Error::InvalidParameter {
            parameter: "ridge",
            ..
        })
    ));
    assert!(matches!(
        Trak::builder().ridge(Ridge::Absolute(f64::NAN)).build(),
        Err(Error::InvalidParameter {
            parameter: "ridge",
            ..
        })
    ));
    assert!(matches!(
        DenseProjector::new(10, 0, Distribution::Gaussian, 0),
        Err(Error::InvalidParameter {
            parameter: "projection dimension k",
            ..
        })
    ));
    assert!(matches!(
        Mlp::new(&[4], Margin, 0),
        Err(Error::InvalidParameter {
            parameter: "MLP layer sizes",
            ..
        })
    ));
    assert!(matches!(
        Mlp::new(&[4, 0, 3], Margin, 0),
        Err(Error::InvalidParameter {
            parameter: "MLP layer sizes",
            ..
        })
    ));
    let sgd = trak::models::Sgd {
        lr: -1.0,
        ..Default::default()
    };
    assert!(matches!(
        sgd.fit(&mut model(), &class_samples(4, 4, 3, 0)),
        Err(Error::InvalidParameter {
            parameter: "SGD learning rate",
            ..
        })
    ));
}

#[test]
fn inconsistent_deserialised_model_and_divergence() {
    // a serialised model edited by hand: the second layer no longer fits the first
    let m = model();
    let mut json: serde_json::Value = serde_json::to_value(&m).unwrap();
    json["layers"][1]["w"]["dim"] = serde_json::json!([3, 4]);
    json["layers"][1]["w"]["data"] = serde_json::json!(vec![0.0; 12]);
    let bad: Mlp<Margin> = serde_json::from_value(json).unwrap();
    let train = class_samples(5, 4, 3, 1);
    let err = trak(16)
        .featurizer()
        .featurize(0, &bad, &train)
        .unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");

    // SGD with an absurd learning rate diverges: a typed error, not NaN parameters
    let sgd = trak::models::Sgd {
        lr: 1e30,
        momentum: 0.0,
        ..Default::default()
    };
    let err = sgd
        .fit(&mut model(), &class_samples(64, 4, 3, 2))
        .unwrap_err();
    assert!(matches!(err, Error::Diverged { .. }), "{err:?}");
}

#[test]
fn scoring_with_a_different_model_shape() {
    let train = class_samples(10, 4, 3, 1);
    let mut feats = trak(16).featurizer();
    feats.featurize(0, &model(), &train).unwrap();
    let index = feats.finalize().unwrap();
    let other = Mlp::new(&[4, 6, 3], Margin, 0).unwrap();
    let err = index.score(&[(0, &other)], &train).unwrap_err();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{err:?}");
    assert!(
        index
            .score(&[(0, &model())], &train)
            .unwrap()
            .target(1)
            .is_some()
    );
    assert!(
        index
            .score(&[(0, &model())], &train)
            .unwrap()
            .target(10)
            .is_none()
    );
}

#[test]
fn unknown_and_duplicate_checkpoints() {
    let train = class_samples(10, 4, 3, 1);
    let m = model();
    let mut feats = trak(16).featurizer();
    feats.featurize(0, &m, &train).unwrap();
    assert!(matches!(
        feats.featurize(0, &m, &train),
        Err(Error::DuplicateCheckpoint(0))
    ));
    let index = feats.finalize().unwrap();
    assert!(matches!(
        index.score(&[(5, &m)], &train),
        Err(Error::UnknownCheckpoint(5))
    ));
    assert!(matches!(
        index.score(&[(0, &m), (0, &m)], &train),
        Err(Error::DuplicateCheckpoint(0))
    ));
    assert!(matches!(index.lambda(9), Err(Error::UnknownCheckpoint(9))));
}

#[test]
fn factored_expansion_below_two_is_refused_at_build() {
    for expansion in [0, 1] {
        let err = Trak::builder()
            .projector(ProjectorKind::Factored { expansion })
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, Error::InvalidParameter { parameter: "factored expansion", value, .. }
                if *value == expansion.to_string())
                && err.to_string().contains("≥ 2"),
            "{err}"
        );
    }
    Trak::builder()
        .projector(ProjectorKind::Factored { expansion: 2 })
        .build()
        .unwrap();
}

#[test]
fn a_dataset_checks_labels_against_a_class_count_it_is_given() {
    let x = ndarray::Array2::zeros((3, 4));
    let err = Dataset::with_classes(x.clone(), vec![0, 1, 99], 2).unwrap_err();
    assert!(
        matches!(err, Error::InvalidTarget { example: 2, .. })
            && err.to_string().contains("label 99")
            && err.to_string().contains("classes 0..2"),
        "{err}"
    );
    assert!(matches!(
        Dataset::with_classes(x.clone(), vec![0, 1, 0], 0),
        Err(Error::InvalidParameter {
            parameter: "class count",
            ..
        })
    ));
    let known = Dataset::with_classes(x.clone(), vec![0, 1, 0], 2).unwrap();
    assert_eq!(known.classes(), Some(2));
    assert_eq!(known.select(&[1]).unwrap().classes(), Some(2));
    assert_eq!(Dataset::blobs(6, 2, 3, 0).unwrap().classes(), Some(3));
    // Without a class count the labels are the model's to check, on every built-in path.
    let unknown = Dataset::new(x, vec![0, 1, 99]).unwrap();
    assert_eq!(unknown.classes(), None);
    let samples = unknown.samples();
    let err = trak(16)
        .featurizer()
        .featurize(0, &model(), &samples)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidTarget { example: 2, .. })
            && err
                .to_string()
                .contains("class 99 out of range for 3 classes"),
        "{err}"
    );
}

#[test]
fn the_trainer_names_a_bad_label_by_its_index_in_the_training_set() {
    use trak::models::Sgd;
    let mut data = class_samples(100, 4, 3, 1);
    data[37].target = Target::Class(7);
    for batch_size in [1, 8, 100] {
        let sgd = Sgd {
            batch_size,
            epochs: 1,
            ..Sgd::default()
        };
        let err = sgd.fit(&mut model(), &data).unwrap_err();
        assert!(
            matches!(err, Error::InvalidTarget { example: 37, .. }),
            "batch {batch_size}: {err}"
        );
    }
    let mut bin = class_samples(20, 4, 2, 1);
    bin[5].target = Target::Class(2);
    let err = Sgd::default()
        .fit(&mut Mlp::binary_logistic(4).unwrap(), &bin)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidTarget { example: 5, .. })
            && err.to_string().contains("0 or 1"),
        "{err}"
    );
}

#[test]
fn invalid_targets() {
    let mut train = class_samples(10, 4, 3, 1);
    train[4].target = Target::Class(3);
    let err = trak(16)
        .featurizer()
        .featurize(0, &model(), &train)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidTarget { example: 4, .. }),
        "{err:?}"
    );
    train[4].target = Target::Value(1.0);
    assert!(matches!(
        trak(16).featurizer().featurize(0, &model(), &train),
        Err(Error::InvalidTarget { example: 4, .. })
    ));
    let bin = Mlp::binary_logistic(4).unwrap();
    let mut data = class_samples(10, 4, 2, 1);
    data[0].target = Target::Class(2);
    assert!(matches!(
        trak(16).featurizer().featurize(0, &bin, &data),
        Err(Error::InvalidTarget { example: 0, .. })
    ));
    assert!(matches!(
        Mlp::new(&[4, 2], Logistic, 0).unwrap().outputs(&data[1..]),
        Err(Error::InvalidTarget { .. })
    ));
}

#[test]
fn singular_kernel_without_ridge() {
    // λ = 0 with k ≥ n: ΦᵀΦ has rank ≤ n < k.
    let train = class_samples(20, 4, 3, 1);
    let t = Trak::builder()
        .proj_dim(64)
        .ridge(Ridge::Absolute(0.0))
        .build()
        .unwrap();
    let mut feats = t.featurizer();
    feats.featurize(3, &model(), &train).unwrap();
    let err = feats.finalize().unwrap_err();
    assert!(
        matches!(err, Error::NotPositiveDefinite { checkpoint: 3, .. }),
        "{err:?}"
    );
    // the default ridge handles the same problem
    let mut feats = trak(64).featurizer();
    feats.featurize(3, &model(), &train).unwrap();
    let index = feats.finalize().unwrap();
    let m = model();
    let s = index.score(&[(3, &m)], &train[..2]).unwrap();
    assert!(s.values().iter().all(|v| v.is_finite()));
}

#[test]
fn unreadable_and_corrupted_files() {
    let dir = std::env::temp_dir().join(format!("trak-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = Dataset::from_mnist_csv_gz(dir.join("missing.csv.gz")).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");

    // not gzip at all: the file was read, and the error says it is not gzip, naming it
    let bad = dir.join("not-gzip.csv.gz");
    std::fs::write(&bad, b"this is not gzip").unwrap();
    let err = Dataset::from_mnist_csv_gz(&bad).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::WrongFormat { path, .. } if *path == bad)
            && text.contains("not-gzip.csv.gz")
            && text.contains("not a gzip stream: it starts with bytes 74 68 69 73")
            && !text.contains("cannot access"),
        "{text}"
    );
    std::fs::write(&bad, b"").unwrap();
    let err = Dataset::from_mnist_csv_gz(&bad).unwrap_err();
    assert!(err.to_string().contains("the file is empty"), "{err}");

    // gzip of malformed CSV: wrong column count, bad pixel, bad label
    use std::io::Write;
    let write_gz = |name: &str, text: &str| {
        let path = dir.join(name);
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::fast(),
        );
        enc.write_all(text.as_bytes()).unwrap();
        enc.finish().unwrap();
        path
    };
    let row = |pixel: &str, label: &str| format!("{}{pixel},{label}\n", "0,".repeat(783));
    let cases = [
        ("short.csv.gz", "1,2,3\n".to_string(), 1),
        (
            "pixel.csv.gz",
            format!("{}{}", row("0", "1"), row("300", "1")),
            2,
        ),
        ("label.csv.gz", row("0", "12"), 1),
        ("text.csv.gz", row("abc", "1"), 1),
    ];
    for (name, text, line) in cases {
        let err = Dataset::from_mnist_csv_gz(write_gz(name, &text)).unwrap_err();
        assert!(
            matches!(err, Error::Parse { line: l, .. } if l == line),
            "{name}: {err:?}"
        );
    }
    // a truncated gzip stream of the real file
    let real = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crates/trak-demo/data/mnist_5k.csv.gz"
    ))
    .unwrap();
    let cut = dir.join("truncated.csv.gz");
    std::fs::write(&cut, &real[..real.len() / 2]).unwrap();
    let err = Dataset::from_mnist_csv_gz(&cut).unwrap_err();
    assert!(
        matches!(&err, Error::WrongFormat { path, .. } if *path == cut)
            && err.to_string().contains("corrupt, truncated"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A model that only declares its size: any call that reaches its gradients is a failure of
/// the memory plan, which must refuse first.
struct Huge {
    params: usize,
}

impl Model for Huge {
    type Example = ();
    fn num_params(&self) -> usize {
        self.params
    }
    fn output_grads(&self, _: &[()], _: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        panic!("the memory plan should have refused before any gradient")
    }
    fn output_q(&self, _: &[()], _: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        panic!("the memory plan should have refused before any Q")
    }
}

/// `needed` must cover the features alone (rows × dim × 4 bytes).
fn assert_budget(err: Error, features: usize) {
    match err {
        Error::MemoryBudget {
            budget,
            needed,
            reason,
        } => {
            assert!(needed >= features && needed > budget, "{needed} {budget}");
            assert!(reason.contains("features"), "{reason}");
        }
        other => panic!("expected MemoryBudget, got {other:?}"),
    }
}

#[test]
fn a_huge_projection_dimension_is_a_planned_error_not_an_abort() {
    let train = vec![(); 300];
    let model = Huge { params: 1000 };
    let trak = Trak::builder().proj_dim(1_000_000_000).build().unwrap();
    let err = trak.featurizer().featurize(0, &model, &train).unwrap_err();
    assert_budget(err, 300 * 1_000_000_000 * 4);
    // the same plan answers target features
    let err = trak.features(0, &model, &train).unwrap_err();
    assert_budget(err, 300 * 1_000_000_000 * 4);
}

#[test]
fn the_identity_projector_on_a_large_model_is_a_planned_error() {
    let train = vec![(); 100_000];
    let model = Huge { params: 10_000_000 };
    let trak = Trak::builder()
        .projector(ProjectorKind::Identity)
        .build()
        .unwrap();
    let err = trak.featurizer().featurize(0, &model, &train).unwrap_err();
    assert_budget(err, 100_000 * 10_000_000 * 4);
}

#[test]
fn an_explicit_memory_limit_is_honoured_and_named() {
    let train = class_samples(200, 4, 3, 0);
    let m = model();
    let trak = Trak::builder()
        .proj_dim(4096)
        .memory_limit(1 << 20)
        .build()
        .unwrap();
    match trak.featurizer().featurize(0, &m, &train).unwrap_err() {
        Error::MemoryBudget { budget, needed, .. } => {
            assert_eq!(budget, 1 << 20);
            assert!(needed >= 200 * 4096 * 4);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Trak::builder().memory_limit(0).build(),
        Err(Error::InvalidParameter {
            parameter: "memory limit",
            ..
        })
    ));
}

#[test]
fn a_run_on_a_regular_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-run");
    std::fs::write(&file, b"x").unwrap();
    let trak = Trak::builder().proj_dim(8).build().unwrap();
    let err = trak::store::Run::create(&file, &trak, 10, 4).unwrap_err();
    assert!(
        matches!(&err, Error::NotADirectory { path } if path == &file),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a directory"));
    assert!(matches!(
        trak::store::Run::open(&file),
        Err(Error::NotADirectory { .. })
    ));
}

/// A run of 300 examples (k = 8, blocks of 128) created under `Weighting::None`, and
/// features and Q for it as `.npy` files in `dir`: (run, features path, Q path, Φ, Q).
fn plain_run_and_npy(
    dir: &std::path::Path,
) -> (
    trak::store::Run,
    std::path::PathBuf,
    std::path::PathBuf,
    ndarray::Array2<f32>,
    ndarray::Array1<f32>,
) {
    let plain = Trak::builder()
        .proj_dim(8)
        .weighting(trak::Weighting::None)
        .build()
        .unwrap();
    let run = trak::store::Run::create(dir.join("run"), &plain, 300, 128).unwrap();
    let phi = ndarray::Array2::from_shape_fn((300, 8), |(i, j)| ((i * 7 + j * 3) % 11) as f32);
    let q = ndarray::Array1::from_elem(300, 0.5f32);
    let (fp, qp) = (dir.join("phi.npy"), dir.join("q.npy"));
    ndarray_npy::write_npy(&fp, &phi).unwrap();
    ndarray_npy::write_npy(&qp, &q).unwrap();
    (run, fp, qp, phi, q)
}

#[test]
fn gauss_newton_on_imported_features_names_the_missing_curvature() {
    use trak::store::{MergeOptions, Run};
    let dir = tempfile::tempdir().unwrap();
    let (run, fp, qp, phi, q) = plain_run_and_npy(dir.path());
    run.declare_checkpoint(3, 100, 8, 42).unwrap();
    run.import_npy(3, &fp, &qp).unwrap();
    run.merge(MergeOptions::default()).unwrap();
    // Switched to Gauss-Newton, merging, importing and importing a block all say that the
    // imported checkpoint has no curvature, and name it.
    let gn = Run::open(dir.path().join("run"))
        .unwrap()
        .with_weighting(trak::Weighting::GaussNewton);
    let psi = ndarray::Array2::<f32>::zeros((2, 8));
    let errs = [
        gn.merge(MergeOptions::default()).unwrap_err(),
        gn.score_features("t", &[(3, psi.view())], Default::default())
            .unwrap_err(),
        gn.train_features().unwrap_err(),
        gn.import_npy(3, &fp, &qp).unwrap_err(),
        gn.import_block(
            3,
            0,
            phi.slice(ndarray::s![..128, ..]),
            q.slice(ndarray::s![..128]),
        )
        .unwrap_err(),
    ];
    for err in errs {
        let text = err.to_string();
        assert!(
            matches!(err, Error::ImportedWithoutCurvature { checkpoint: 3 })
                && text.contains("checkpoint 3 holds imported features")
                && text.contains("no curvature")
                && !text.contains("not featurised"),
            "{text}"
        );
    }
    // ... while Q, which imports carry, completes the partials from the stored features.
    let q_run = gn.with_weighting(trak::Weighting::Q);
    q_run.import_npy(3, &fp, &qp).unwrap();
    q_run.merge(MergeOptions::default()).unwrap();
}

#[test]
fn gauss_newton_after_importing_into_a_plain_run_names_the_missing_curvature() {
    // A run created under Weighting::None, checkpoint 0 imported and merged, then its
    // features in memory and the same run object (not reopened) under Gauss-Newton.
    use trak::store::MergeOptions;
    let dir = tempfile::tempdir().unwrap();
    let (run, fp, qp, _, _) = plain_run_and_npy(dir.path());
    run.declare_checkpoint(0, 100, 8, 7).unwrap();
    run.import_npy(0, &fp, &qp).unwrap();
    run.merge(MergeOptions::default()).unwrap();
    // In memory: the plain run's features, then Gauss-Newton.
    let in_memory = run
        .train_features()
        .unwrap()
        .with_weighting(trak::Weighting::GaussNewton)
        .finalize()
        .unwrap_err();
    let gn = run.with_weighting(trak::Weighting::GaussNewton);
    let psi = ndarray::Array2::<f32>::zeros((2, 8));
    let errs = [
        gn.merge(MergeOptions::default()).unwrap_err(),
        gn.gram(0).unwrap_err(),
        gn.weighted_gram(0, trak::Weighting::GaussNewton)
            .unwrap_err(),
        gn.score_features("t", &[(0, psi.view())], Default::default())
            .unwrap_err(),
        gn.train_features().unwrap_err(),
        in_memory,
    ];
    for err in errs {
        let text = err.to_string();
        assert!(
            matches!(err, Error::ImportedWithoutCurvature { checkpoint: 0 })
                && text.contains("no curvature")
                && !text.contains("not featurised"),
            "{text}"
        );
    }
}
