//! Features are bit-identical for any pipeline batch size and thread count (on one machine).

mod common;

use candle_nn::VarMap;
use common::{Cnn, samples};
use ndarray::Array2;
use trak::output::Margin;
use trak::{ProjectorKind, Trak};
use trak_candle::{CandleModel, SampleCollate};

fn features(
    kind: ProjectorKind,
    batch: usize,
    threads: usize,
    net: &Cnn,
) -> (Array2<f32>, Vec<u32>) {
    let data = samples(70, 144, 3, 5);
    let model = CandleModel::builder(net, SampleCollate::new(&[1, 12, 12]), Margin)
        .chunk_rows(16)
        .build(&data[..4])
        .unwrap();
    let trak = Trak::builder()
        .proj_dim(48)
        .projector(kind)
        .batch_size(batch)
        .build()
        .unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut f = trak.featurizer();
        f.featurize(0, &model, &data).unwrap();
        let scores = f
            .finalize()
            .unwrap()
            .score(&[(0, &model)], &data[..5])
            .unwrap();
        let bits = scores.values().iter().map(|v| v.to_bits()).collect();
        (f.features(0).unwrap().to_owned(), bits)
    })
}

#[test]
fn bit_identical_across_batch_sizes_and_threads() {
    let map = VarMap::new();
    let net = Cnn::new(12, 3, &map);
    for kind in [ProjectorKind::FACTORED, ProjectorKind::Rademacher] {
        let (f0, s0) = features(kind, 70, 1, &net);
        for (batch, threads) in [(7, 1), (16, 2), (33, 2), (1, 3)] {
            let (f, s) = features(kind, batch, threads, &net);
            let same = f0.iter().zip(&f).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{kind:?}: features differ at batch {batch}, {threads} threads"
            );
            assert_eq!(
                s0, s,
                "{kind:?}: scores differ at batch {batch}, {threads} threads"
            );
        }
    }
}
