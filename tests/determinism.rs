//! Same seed ⇒ bit-identical features and scores for 1, 2 and 4 threads and batch sizes 1, 7, 64,
//! for every projector kind; Q is the same bits whichever projector (the factored path takes
//! it from the layer-factor pass, the others from `Model::output_q`).

mod common;

use common::{bits, class_samples, randomize};
use trak::Trak;
use trak::models::Mlp;
use trak::output::Margin;
use trak::project::ProjectorKind;

#[test]
fn features_and_scores_do_not_depend_on_threads_or_batch_size() {
    // MLP 20-16-10 (p = 506, not a multiple of the 256-row tiles), k = 300 (not a multiple of
    // the 256-column blocks or of 128), n = 520 (more than one 512-row score block), two
    // checkpoints.
    let train = class_samples(520, 20, 10, 1);
    let targets = class_samples(9, 20, 10, 2);
    let models: Vec<Mlp<Margin>> = (0..2)
        .map(|i| {
            let mut m = Mlp::new(&[20, 16, 10], Margin, i).unwrap();
            randomize(&mut m, 0.3, 10 + i);
            m
        })
        .collect();
    let mut q_ref: Option<Vec<u32>> = None;
    for kind in [
        ProjectorKind::Rademacher,
        ProjectorKind::Gaussian,
        ProjectorKind::SPARSE,
        ProjectorKind::Sparse { s: 4 },
        ProjectorKind::Sparse { s: 3 },
        ProjectorKind::FACTORED,
        ProjectorKind::Factored { expansion: 3 },
        ProjectorKind::FactoredSmall,
    ] {
        let mut reference: Option<(Vec<Vec<u32>>, Vec<u32>)> = None;
        for threads in [1, 2, 4] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            for batch in [1, 7, 64] {
                let run = pool.install(|| {
                    let trak = Trak::builder()
                        .proj_dim(300)
                        .projector(kind)
                        .seed(5)
                        .batch_size(batch)
                        .build()
                        .unwrap();
                    let mut feats = trak.featurizer();
                    for (i, m) in models.iter().enumerate() {
                        feats.featurize(i as u64, m, &train).unwrap();
                    }
                    let mut f: Vec<Vec<u32>> =
                        (0..2).map(|i| bits(feats.features(i).unwrap())).collect();
                    let q = feats.q(1).unwrap().insert_axis(ndarray::Axis(0));
                    f.push(bits(q));
                    let index = feats.finalize().unwrap();
                    let s = index
                        .score(&[(0, &models[0]), (1, &models[1])], &targets)
                        .unwrap();
                    (f, bits(s.values()))
                });
                let q = run.0.last().unwrap().clone();
                assert_eq!(*q_ref.get_or_insert(q.clone()), q, "{kind:?}: Q differs");
                match &reference {
                    None => {
                        assert!(run.1.iter().any(|&b| f32::from_bits(b) != 0.0));
                        reference = Some(run);
                    }
                    Some(r) => {
                        assert!(
                            r.0 == run.0,
                            "{kind:?}: features differ with {threads} threads, batch {batch}"
                        );
                        assert!(
                            r.1 == run.1,
                            "{kind:?}: scores differ with {threads} threads, batch {batch}"
                        );
                    }
                }
            }
        }
    }
}

/// The sparse projector over several parallel chunks of coordinates: the same bits whatever
/// the thread count and however the rows are batched.
#[test]
fn sparse_projection_over_many_chunks_is_deterministic() {
    use ndarray::{Array2, s};
    use trak::project::sparse::SPARSE_CHUNK;
    use trak::project::{Projector, SparseProjector};
    let (p, k, b) = (3 * SPARSE_CHUNK + 5, 200, 6);
    let g = Array2::from_shape_fn((b, p), |(i, j)| {
        ((i * 7919 + j * 104_729) % 1001) as f32 / 500.0 - 1.0
    });
    let proj = SparseProjector::new(p, k, 4, 9).unwrap();
    let run = |threads: usize, split: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = Array2::zeros((b, k));
            proj.project(1, g.slice(s![..split, ..]), out.slice_mut(s![..split, ..]))
                .unwrap();
            proj.project(1, g.slice(s![split.., ..]), out.slice_mut(s![split.., ..]))
                .unwrap();
            bits(out.view())
        })
    };
    let reference = run(1, 0);
    for (threads, split) in [(2, 3), (4, 1), (3, 5)] {
        assert!(
            run(threads, split) == reference,
            "{threads} threads, split {split}"
        );
    }
}

/// The factored engine runs batches in groups sized by the spare memory
/// (`memory::in_flight`): a memory limit that leaves room for one batch at a time gives the
/// same bits as an unlimited run on 4 threads.
#[test]
fn factored_features_do_not_depend_on_the_memory_limit() {
    let train = class_samples(700, 20, 10, 3);
    let mut model = Mlp::new(&[20, 16, 10], Margin, 9).unwrap();
    randomize(&mut model, 0.3, 4);
    let run = |limit: Option<usize>| {
        let mut b = Trak::builder()
            .proj_dim(300)
            .projector(ProjectorKind::FACTORED)
            .batch_size(16);
        if let Some(l) = limit {
            b = b.memory_limit(l);
        }
        let trak = b.build().unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        let mut feats = trak.featurizer();
        pool.install(|| feats.featurize(0, &model, &train)).unwrap();
        bits(feats.features(0).unwrap())
    };
    // features 700 × 300 and Q in f32, plus 4 KiB: a quarter of the spare is under one batch
    // of layer factors (16 × (21 + 16 + 17 + 10) floats).
    let tight = 700 * 300 * 4 + 700 * 4 + 4096;
    assert_eq!(run(Some(tight)), run(None));
}
