//! The opt-in batch-independence check: a model that breaks the `Model` contract (its results
//! depend on the batch) gives silently different scores for other batch sizes without it,
//! and a typed error naming the example with it; the built-in models pass it bit for bit.

mod common;

use common::class_samples;
use ndarray::{ArrayViewMut1, ArrayViewMut2};
use trak::data::Sample;
use trak::model::batch_check::{check_batch_independence, first_disagreement};
use trak::model::{FactoredModel, LayerFactors, LinearLayer};
use trak::models::Mlp;
use trak::output::Margin;
use trak::{Error, Model, ProjectorKind, Trak};

/// An MLP whose gradients and layer inputs are centred over the batch (a batch-norm-like
/// mistake): each example's results depend on the others.
struct Centred(Mlp<Margin>);

impl Model for Centred {
    type Example = Sample;
    fn num_params(&self) -> usize {
        self.0.num_params()
    }
    fn output_grads(&self, batch: &[Sample], mut g: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        self.0.output_grads(batch, g.view_mut())?;
        let mean = g.mean_axis(ndarray::Axis(0)).expect("non-empty batch");
        g.rows_mut()
            .into_iter()
            .for_each(|mut r| r -= &(&mean * 0.5));
        Ok(())
    }
    fn output_q(&self, batch: &[Sample], q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        self.0.output_q(batch, q)
    }
    fn factored(&self) -> Option<&dyn FactoredModel<Sample>> {
        Some(self)
    }
}

impl FactoredModel<Sample> for Centred {
    fn linear_layers(&self) -> Vec<LinearLayer> {
        self.0.linear_layers()
    }
    fn layer_factors(&self, batch: &[Sample]) -> trak::Result<Vec<LayerFactors>> {
        let mut f = self.0.layer_factors(batch)?;
        let acts = &mut f[1].acts;
        let mean = acts.mean_axis(ndarray::Axis(0)).expect("non-empty batch");
        acts.rows_mut()
            .into_iter()
            .for_each(|mut r| r -= &(&mean * 0.5));
        Ok(f)
    }
}

fn mlp() -> Mlp<Margin> {
    let mut m = Mlp::new(&[6, 8, 3], Margin, 0).unwrap();
    common::randomize(&mut m, 0.5, 9);
    m
}

fn builder(batch: usize) -> trak::TrakBuilder {
    Trak::builder().proj_dim(32).batch_size(batch)
}

fn scores(trak: &Trak, model: &Centred, train: &[Sample], targets: &[Sample]) -> Vec<u32> {
    let mut f = trak.featurizer();
    f.featurize(0, model, train).unwrap();
    let index = f.finalize().unwrap();
    let s = index.score(&[(0, model)], targets).unwrap();
    common::bits(s.values().view())
}

#[test]
fn a_batch_dependent_model_changes_scores_silently_without_the_check() {
    let (train, targets) = (class_samples(70, 6, 3, 1), class_samples(3, 6, 3, 2));
    let model = Centred(mlp());
    let a = scores(&builder(7).build().unwrap(), &model, &train, &targets);
    let b = scores(&builder(64).build().unwrap(), &model, &train, &targets);
    assert_ne!(a, b, "batch dependence must show in the scores");
}

#[test]
fn the_check_names_the_example_and_what_differs() {
    let train = class_samples(70, 6, 3, 1);
    let model = Centred(mlp());
    for (kind, what) in [
        (ProjectorKind::Rademacher, "output gradient"),
        (ProjectorKind::FACTORED, "layer 1 activations"),
    ] {
        let trak = builder(16)
            .projector(kind)
            .check_batch_independence(1e-5)
            .build()
            .unwrap();
        let err = trak.featurizer().featurize(0, &model, &train).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, Error::BatchDependent { example: 0, batch: 16, what: w, .. } if w == what)
                && text.contains("depends on its batch")
                && text.contains("inside a batch of 16"),
            "{kind}: {text}"
        );
    }
    // the store runs the same check on every block, naming the example's index in the set
    let dir = tempfile::tempdir().unwrap();
    let trak = builder(16).check_batch_independence(0.0).build().unwrap();
    let run = trak::Run::create(dir.path().join("run"), &trak, 70, 32).unwrap();
    let err = run
        .featurize(0, &model, &train, Default::default())
        .unwrap_err();
    assert!(
        matches!(err, Error::BatchDependent { example: 0, .. }),
        "{err}"
    );
    // the public function, for testing one's own model
    let err = check_batch_independence(&model, &train[..8], 0.0).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BatchDependent {
                example: 0,
                batch: 8,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_built_in_mlp_passes_bit_for_bit_and_the_check_changes_no_result() {
    let (train, targets) = (class_samples(70, 6, 3, 1), class_samples(3, 6, 3, 2));
    let m = mlp();
    check_batch_independence(&m, &train[..64], 0.0).unwrap();
    for kind in [ProjectorKind::Rademacher, ProjectorKind::FACTORED] {
        let run = |check: bool| {
            let mut b = builder(16).projector(kind);
            if check {
                b = b.check_batch_independence(0.0);
            }
            let mut f = b.build().unwrap().featurizer();
            f.featurize(0, &m, &train).unwrap();
            let index = f.finalize().unwrap();
            common::bits(index.score(&[(0, &m)], &targets).unwrap().values().view())
        };
        assert_eq!(run(true), run(false), "{kind}");
    }
}

#[test]
fn tolerance_and_comparison() {
    for bad in [f32::NAN, -1e-3, f32::INFINITY] {
        let err = builder(8)
            .check_batch_independence(bad)
            .build()
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidParameter {
                    parameter: "batch-independence tolerance",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(first_disagreement(&[1.0, 2.0], &[1.0, 2.0], 0.0), None);
    assert_eq!(first_disagreement(&[0.0], &[-0.0], 0.0), None);
    assert_eq!(
        first_disagreement(&[1.0, 2.0], &[1.0, 2.0001], 0.0),
        Some(1)
    );
    assert_eq!(first_disagreement(&[1.0, 2.0], &[1.0, 2.0001], 1e-4), None);
    assert_eq!(
        first_disagreement(&[1.0, f32::NAN], &[1.0, f32::NAN], 1.0),
        Some(1)
    );
    assert_eq!(first_disagreement(&[1.0, 2.0], &[1.0], 0.0), Some(1));
}
