//! The adapter's gradients against independent computations of the same quantities.

mod common;

use candle_nn::VarMap;
use common::{Cnn, MlpNet, grads, rel_err, samples};
use ndarray::Array1;
use trak::models::Mlp;
use trak::output::Margin;
use trak::{Model, ProjectorKind, Trak};
use trak_candle::{CandleModel, SampleCollate};

fn qs<M: Model>(m: &M, batch: &[M::Example]) -> Array1<f32> {
    let mut q = Array1::zeros(batch.len());
    m.output_q(batch, q.view_mut()).unwrap();
    q
}

#[test]
fn matches_the_builtin_mlp() {
    let data = samples(150, 20, 4, 1);
    let builtin = Mlp::new(&[20, 16, 12, 4], Margin, 7).unwrap();
    let net = MlpNet::from_builtin(&builtin);
    let model = CandleModel::builder(net, SampleCollate::new(&[20]), Margin)
        .build(&data[..8])
        .unwrap();
    assert_eq!(model.num_params(), builtin.num_params());
    let (g0, g1) = (grads(&builtin, &data), grads(&model, &data));
    assert!(rel_err(&g0, &g1) < 1e-5, "gradients: {}", rel_err(&g0, &g1));
    let (q0, q1) = (qs(&builtin, &data), qs(&model, &data));
    let dq = q0
        .iter()
        .zip(&q1)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(dq < 1e-5, "Q: {dq}");
    // Q from the factor pass is output_q's, bit for bit.
    let mut q2 = Array1::zeros(data.len());
    let fm = model.factored().unwrap();
    assert!(fm.layer_factors_and_q(&data, q2.view_mut()).unwrap().1);
    let bits = |q: &Array1<f32>| q.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&q1), bits(&q2));
    for kind in [ProjectorKind::Rademacher, ProjectorKind::FACTORED] {
        let trak = Trak::builder()
            .proj_dim(64)
            .projector(kind)
            .build()
            .unwrap();
        let f0 = trak.features(0, &builtin, &data).unwrap();
        let f1 = trak.features(0, &model, &data).unwrap();
        assert!(rel_err(&f0, &f1) < 1e-5, "{kind:?}: {}", rel_err(&f0, &f1));
    }
}

#[test]
fn conv_factors_match_batch_size_one_backward() {
    let map = VarMap::new();
    let net = Cnn::new(12, 3, &map);
    let vars = Cnn::vars(&map);
    let data = samples(40, 144, 3, 2);
    let collate = SampleCollate::new(&[1, 12, 12]);
    let factored = CandleModel::builder(&net, collate.clone(), Margin)
        .chunk_rows(16)
        .build(&data[..4])
        .unwrap();
    let names: Vec<_> = factored.layers().iter().map(|l| l.positions).collect();
    assert_eq!(names, vec![144, 9, 1]);
    let fallback = CandleModel::builder(&net, collate, Margin)
        .all_parameters(vars)
        .build(&data[..4])
        .unwrap();
    assert!(fallback.factored().is_none());
    assert_eq!(factored.num_params(), fallback.num_params());
    let (g0, g1) = (grads(&fallback, &data), grads(&factored, &data));
    assert!(
        rel_err(&g0, &g1) < 1e-5,
        "conv gradients: {}",
        rel_err(&g0, &g1)
    );
}

#[test]
fn linear_factors_match_the_all_parameter_fallback() {
    let map = VarMap::new();
    let net = MlpNet::with_vars(&[10, 8, 3], &map);
    let vars = {
        let d = map.data().lock().unwrap();
        ["fc0.weight", "fc0.bias", "fc1.weight", "fc1.bias"].map(|n| (n.to_string(), d[n].clone()))
    };
    let data = samples(30, 10, 3, 3);
    let factored = CandleModel::builder(&net, SampleCollate::new(&[10]), Margin)
        .build(&data[..4])
        .unwrap();
    let fallback = CandleModel::builder(&net, SampleCollate::new(&[10]), Margin)
        .all_parameters(vars.to_vec())
        .build(&data[..4])
        .unwrap();
    let (g0, g1) = (grads(&fallback, &data), grads(&factored, &data));
    assert!(rel_err(&g0, &g1) < 1e-5, "{}", rel_err(&g0, &g1));
}

#[test]
fn a_layer_subset_is_the_matching_block_of_the_full_gradient() {
    let map = VarMap::new();
    let net = MlpNet::with_vars(&[10, 8, 6, 3], &map);
    let data = samples(20, 10, 3, 4);
    let collate = SampleCollate::new(&[10]);
    let all = CandleModel::builder(&net, collate.clone(), Margin)
        .build(&data[..4])
        .unwrap();
    let sub = CandleModel::builder(&net, collate, Margin)
        .layers(["fc1"])
        .build(&data[..4])
        .unwrap();
    assert_eq!(sub.num_params(), 6 * 9);
    let (g, gs) = (grads(&all, &data), grads(&sub, &data));
    let block = g.slice(ndarray::s![.., 8 * 11..8 * 11 + 6 * 9]).to_owned();
    assert_eq!(
        block, gs,
        "a subset's gradient is bit-identical to its block"
    );
}

/// The user's own example type: images as (pixels, label) pairs, with `WithTarget`.
struct Pairs;
impl trak_candle::Collate<(Vec<f32>, usize)> for Pairs {
    fn inputs(
        &self,
        batch: &[(Vec<f32>, usize)],
        device: &candle::Device,
    ) -> candle::Result<candle::Tensor> {
        let flat: Vec<f32> = batch.iter().flat_map(|(x, _)| x.iter().copied()).collect();
        candle::Tensor::from_vec(flat, (batch.len(), 20), device)
    }
}

#[test]
fn any_example_type_through_with_target() {
    let data = samples(30, 20, 4, 6);
    let builtin = Mlp::new(&[20, 9, 4], Margin, 2).unwrap();
    let pairs: Vec<(Vec<f32>, usize)> = data
        .iter()
        .map(|s| match s.target {
            trak::data::Target::Class(c) => (s.x.clone(), c),
            trak::data::Target::Value(_) => unreachable!(),
        })
        .collect();
    let objective = trak_candle::WithTarget::new(Margin, |e: &(Vec<f32>, usize)| {
        trak::data::Target::Class(e.1)
    });
    let model = CandleModel::builder(MlpNet::from_builtin(&builtin), Pairs, objective)
        .build(&pairs[..4])
        .unwrap();
    assert!(rel_err(&grads(&builtin, &data), &grads(&model, &pairs)) < 1e-5);
}
