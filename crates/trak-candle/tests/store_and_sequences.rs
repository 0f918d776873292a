//! The adapter with the rest of trak: a sharded, merged store run gives the in-memory scores;
//! and linear layers over sequences (B × T × d, positions = T).

mod common;

use candle::{DType, Device, Tensor};
use candle_nn::{Linear, VarBuilder, VarMap};
use common::{Cnn, rel_err, samples, seed_vars};
use ndarray::Array2;
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, ScoreOptions};
use trak::{Model, ProjectorKind, Run, Shard, Trak};
use trak_candle::{CandleModel, Network, Recorder, SampleCollate};

#[test]
fn a_sharded_store_run_gives_the_in_memory_scores() {
    let map = VarMap::new();
    let net = Cnn::new(12, 3, &map);
    let (train, targets) = (samples(300, 144, 3, 8), samples(6, 144, 3, 9));
    let model = CandleModel::builder(&net, SampleCollate::new(&[1, 12, 12]), Margin)
        .chunk_rows(16)
        .build(&train[..4])
        .unwrap();
    let trak = Trak::builder()
        .proj_dim(40)
        .projector(ProjectorKind::FACTORED)
        .build()
        .unwrap();
    let mut f = trak.featurizer();
    f.featurize(0, &model, &train).unwrap();
    let memory = f
        .finalize()
        .unwrap()
        .score(&[(0, &model)], &targets)
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path().join("run"), &trak, train.len(), 128).unwrap();
    for i in 0..2 {
        let opts = FeaturizeOptions::default().shard(Shard::new(i, 2).unwrap());
        run.featurize(0, &model, &train, opts).unwrap();
    }
    run.merge(MergeOptions::default()).unwrap();
    run.score("t", &[(0, &model)], &targets, ScoreOptions::default())
        .unwrap();
    let stored = run.load_scores("t").unwrap().into_inner();
    assert!(rel_err(&memory.values().to_owned(), &stored) < 1e-5);
    // Resuming with other weights is refused through the adapter's fingerprint.
    let other = Cnn::seeded(12, 3, &VarMap::new(), 1);
    let other = CandleModel::builder(&other, SampleCollate::new(&[1, 12, 12]), Margin)
        .chunk_rows(16)
        .build(&train[..4])
        .unwrap();
    assert_ne!(model.fingerprint(), other.fingerprint());
    let r = run.featurize(0, &other, &train, FeaturizeOptions::default());
    assert!(matches!(r, Err(trak::Error::RunMismatch { .. })), "{r:?}");
}

/// Tokens as a sequence: x (B × 12) → (B × 4 × 3) → per-token linear → ReLU → mean over
/// tokens → head.
struct Tokens {
    embed: Linear,
    head: Linear,
}

impl Network for Tokens {
    fn forward(&self, x: &Tensor, rec: &mut Recorder) -> candle::Result<Tensor> {
        let seq = x.reshape(((), 4, 3))?;
        let h = rec.linear("token", &self.embed, &seq)?.relu()?.mean(1)?;
        rec.linear("head", &self.head, &h)
    }
}

#[test]
fn sequence_layers_have_one_position_per_token() {
    let map = VarMap::new();
    let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
    let net = Tokens {
        embed: candle_nn::linear(3, 5, vb.pp("token")).unwrap(),
        head: candle_nn::linear(5, 3, vb.pp("head")).unwrap(),
    };
    seed_vars(&map, 0).unwrap();
    let data = samples(25, 12, 3, 10);
    let collate = SampleCollate::new(&[12]);
    let factored = CandleModel::builder(&net, collate.clone(), Margin)
        .build(&data[..4])
        .unwrap();
    let positions: Vec<usize> = factored.layers().iter().map(|l| l.positions).collect();
    assert_eq!(positions, vec![4, 1]);
    let vars = {
        let d = map.data().lock().unwrap();
        ["token.weight", "token.bias", "head.weight", "head.bias"]
            .map(|n| (n.to_string(), d[n].clone()))
    };
    let fallback = CandleModel::builder(&net, collate, Margin)
        .all_parameters(vars.to_vec())
        .build(&data[..4])
        .unwrap();
    let grads = |m: &dyn Fn(&mut Array2<f32>)| {
        let mut g = Array2::zeros((data.len(), 5 * 4 + 3 * 6));
        m(&mut g);
        g
    };
    let g0 = grads(&|g| fallback.output_grads(&data, g.view_mut()).unwrap());
    let g1 = grads(&|g| factored.output_grads(&data, g.view_mut()).unwrap());
    assert!(rel_err(&g0, &g1) < 1e-5, "{}", rel_err(&g0, &g1));
}
