//! Curvature-weighted kernels through the store: the same scores in memory, through a run,
//! sharded and merged, and out of core; a run switched to another weighting computes only the
//! missing Gram partials; runs and target sets written without a weighting stay plain TRAK,
//! and every refusal is typed.

mod common;

use common::{StoreProblem, bits, store_problem};
use ndarray::{Array2, ArrayView2};
use trak::data::Sample;
use trak::models::Mlp;
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions, Shard, inspect};
use trak::{Error, Trak, Weighting};

/// n = 1100 (three blocks of 512), an MLP 20-16-10, two checkpoints.
type Setup = StoreProblem;

fn setup() -> Setup {
    store_problem()
}

fn trak(w: Weighting, batch: usize) -> Trak {
    Trak::builder()
        .proj_dim(96)
        .seed(3)
        .weighting(w)
        .batch_size(batch)
        .build()
        .unwrap()
}

fn checkpoints(s: &Setup) -> Vec<(u64, &Mlp<Margin>)> {
    s.models
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m))
        .collect()
}

fn featurize(run: &Run, s: &Setup, shard: Shard) -> usize {
    let mut computed = 0;
    for (id, m) in checkpoints(s) {
        let opts = FeaturizeOptions::default().shard(shard);
        computed += run.featurize(id, m, &s.train, opts).unwrap().computed;
    }
    computed
}

fn score(run: &Run, s: &Setup, name: &str, budget: usize) -> Array2<f32> {
    let opts = ScoreOptions::default().memory_budget(budget);
    run.score(name, &checkpoints(s), &s.targets, opts).unwrap();
    run.load_scores(name).unwrap().into_inner()
}

fn max_abs_diff(a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>) -> (f32, f32) {
    let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (diff, scale)
}

/// One weighting: in memory, single run, its in-memory copy, sharded + small budget.
fn check_paths(w: Weighting) {
    let s = setup();
    let base = tempfile::tempdir().unwrap();
    let mut mem = trak(w, 64).featurizer();
    for (id, m) in checkpoints(&s) {
        mem.featurize(id, m, &s.train).unwrap();
    }
    let mem_scores = mem
        .finalize()
        .unwrap()
        .score(&checkpoints(&s), &s.targets)
        .unwrap();

    let single = Run::create(base.path().join("single"), &trak(w, 64), 1100, 512).unwrap();
    featurize(&single, &s, Shard::ALL);
    single.merge(MergeOptions::default()).unwrap();
    let stored = score(&single, &s, "t", 64 << 20);
    let (diff, scale) = max_abs_diff(mem_scores.values(), stored.view());
    assert!(
        diff <= 1e-4 * scale,
        "{w:?}: memory vs store {diff} (scale {scale})"
    );

    // The run read back into memory (stored Φ, Q and weighted Gram matrix): bit for bit.
    let reopened = Run::open(base.path().join("single"))
        .unwrap()
        .with_weighting(w);
    let index = reopened.train_features().unwrap().finalize().unwrap();
    let psis: Vec<(u64, Array2<f32>)> = (0..2)
        .map(|id| (id, single.target_features("t", id).unwrap()))
        .collect();
    let views: Vec<_> = psis.iter().map(|(i, p)| (*i, p.view())).collect();
    let back = index.score_features(&views).unwrap();
    assert_eq!(
        bits(stored.view()),
        bits(back.values()),
        "{w:?}: train_features"
    );

    // Three shards on different thread counts and batch sizes, scored one block per pass.
    let dir = base.path().join("sharded");
    for (i, threads) in [(0, 1), (1, 2), (2, 3)] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let run = Run::create(&dir, &trak(w, 7 + i), 1100, 512).unwrap();
            featurize(&run, &s, Shard::new(i, 3).unwrap());
        });
    }
    let sharded = Run::open(&dir).unwrap().with_weighting(w);
    sharded.merge(MergeOptions::default()).unwrap();
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // (The plan keeps 16 MiB + budget/16 in reserve: this budget leaves room for one block.)
    let rep = pool.install(|| {
        let opts = ScoreOptions::default().memory_budget(19_100_000);
        sharded.score("t", &checkpoints(&s), &s.targets, opts)
    });
    assert_eq!(rep.unwrap().blocks_per_pass, 1);
    let small = sharded.load_scores("t").unwrap().into_inner();
    assert_eq!(
        bits(small.view()),
        bits(stored.view()),
        "{w:?}: sharded, budget"
    );

    // Not vacuous: the plain kernel gives other scores.
    let plain = mem.with_weighting(Weighting::None).finalize().unwrap();
    let plain = plain.score(&checkpoints(&s), &s.targets).unwrap();
    let (diff, scale) = max_abs_diff(plain.values(), stored.view());
    assert!(
        diff > 1e-2 * scale,
        "{w:?}: weighted equals plain ({diff}, {scale})"
    );
}

#[test]
fn gauss_newton_scores_agree_in_memory_through_the_store_sharded_and_out_of_core() {
    check_paths(Weighting::GaussNewton);
}

#[test]
fn q_weighted_scores_agree_in_memory_through_the_store_sharded_and_out_of_core() {
    check_paths(Weighting::Q);
}

#[test]
fn a_plain_run_switched_to_gauss_newton_gives_the_same_scores() {
    let s = setup();
    let base = tempfile::tempdir().unwrap();
    let gn_trak = trak(Weighting::GaussNewton, 64);
    let gn = Run::create(base.path().join("gn"), &gn_trak, 1100, 512).unwrap();
    assert_eq!(featurize(&gn, &s, Shard::ALL), 6);
    gn.merge(MergeOptions::default()).unwrap();
    let reference = score(&gn, &s, "t", 64 << 20);

    // Featurised plain, then asked for Gauss-Newton: merging says what is missing.
    let dir = base.path().join("late");
    let plain = Run::create(&dir, &trak(Weighting::None, 64), 1100, 512).unwrap();
    featurize(&plain, &s, Shard::ALL);
    let late = Run::open(&dir)
        .unwrap()
        .with_weighting(Weighting::GaussNewton);
    match late.merge(MergeOptions::default()) {
        Err(Error::Incomplete { what, .. }) => {
            assert!(what.contains("GaussNewton weighting"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    // Featurising again computes only the Gram partials (6 blocks) from the stored features.
    let feat = dir.join("ckpt-0").join("block-000000.feat");
    let before = std::fs::metadata(&feat).unwrap().modified().unwrap();
    assert_eq!(featurize(&late, &s, Shard::ALL), 6);
    assert_eq!(
        std::fs::metadata(&feat).unwrap().modified().unwrap(),
        before
    );
    assert_eq!(featurize(&late, &s, Shard::ALL), 0);
    late.merge(MergeOptions::default()).unwrap();
    assert_eq!(
        bits(score(&late, &s, "t", 64 << 20).view()),
        bits(reference.view())
    );
}

#[test]
fn plain_runs_stay_plain_and_weighting_mismatches_are_refused() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &trak(Weighting::None, 64), 1100, 512).unwrap();
    featurize(&run, &s, Shard::ALL);
    run.merge(MergeOptions::default()).unwrap();
    score(&run, &s, "t", 64 << 20);
    // A plain run writes the files it wrote before weightings existed: no weighted Gram
    // partials or matrices, and the target-set record of the old kind.
    let files = run.files().unwrap();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.ends_with(".q.gram") && !n.starts_with("merged-"))
    );
    let meta = dir.path().join("targets-t").join("targets.trak");
    let kind = inspect(&meta, &std::fs::read(&meta).unwrap()).unwrap().kind;
    assert_eq!(kind, "target-set metadata");

    // Opened, it is under the default Q weighting: scoring before featurising and merging
    // under Q is typed, and says how.
    let q = Run::open(dir.path()).unwrap();
    assert_eq!(q.config().weighting(), Weighting::Q);
    let opts = ScoreOptions::default();
    match q.score("q", &checkpoints(&s), &s.targets, opts) {
        Err(Error::Incomplete { what, .. }) => assert!(what.contains("weighting"), "{what}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(featurize(&q, &s, Shard::ALL), 6);
    q.merge(MergeOptions::default()).unwrap();
    // Resuming the plain target set under Q is refused, naming the weighting.
    let opts = ScoreOptions::default();
    match q.score("t", &checkpoints(&s), &s.targets, opts) {
        Err(Error::RunMismatch { what, .. }) => {
            assert!(what.contains("kernel weighting"), "{what}")
        }
        other => panic!("{other:?}"),
    }
    let weighted = score(&q, &s, "q", 64 << 20);
    let meta = dir.path().join("targets-q").join("targets.trak");
    let kind = inspect(&meta, &std::fs::read(&meta).unwrap()).unwrap().kind;
    assert_eq!(kind, "weighted target-set metadata");
    // The plain scores are still there and still plain; every file checks out.
    let plain = Run::open(dir.path())
        .unwrap()
        .with_weighting(Weighting::None);
    let again = score(&plain, &s, "t", 64 << 20);
    assert_ne!(bits(again.view()), bits(weighted.view()));
    assert_eq!(plain.verify().unwrap(), plain.files().unwrap().len());
}

#[test]
fn a_negative_weight_in_a_stored_block_names_its_training_example() {
    // Q of a regression-like model can be negative; here a model whose Q is −1 at one row.
    struct SignedQ(Mlp<Margin>);
    impl trak::Model for SignedQ {
        type Example = Sample;
        fn num_params(&self) -> usize {
            self.0.num_params()
        }
        fn output_grads(
            &self,
            b: &[Sample],
            g: ndarray::ArrayViewMut2<'_, f32>,
        ) -> trak::Result<()> {
            self.0.output_grads(b, g)
        }
        fn output_q(
            &self,
            b: &[Sample],
            mut q: ndarray::ArrayViewMut1<'_, f32>,
        ) -> trak::Result<()> {
            self.0.output_q(b, q.view_mut())?;
            for (v, s) in q.iter_mut().zip(b) {
                if s.x[0] == 1234.0 {
                    *v = -1.0;
                }
            }
            Ok(())
        }
    }
    let s = setup();
    let mut train = s.train.clone();
    train[700].x[0] = 1234.0;
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &trak(Weighting::Q, 64), 1100, 512).unwrap();
    let model = SignedQ(s.models[0].clone());
    let r = run.featurize(5, &model, &train, FeaturizeOptions::default());
    assert!(
        matches!(
            r,
            Err(Error::BadKernelWeight {
                example: 700,
                checkpoint: 5,
                ..
            })
        ),
        "{r:?}"
    );
}
