//! The persistent store: bit-exact round trips, resumption, sharding, refusal of mismatched
//! runs, corruption detection, memory budgets and `.npy` files read by an independent parser.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{bits, store_problem};
use ndarray::{Array2, ArrayView2, ArrayViewMut1, ArrayViewMut2};
use trak::data::Sample;
use trak::models::Mlp;
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions, ScoreReport, Shard};
use trak::{Error, Model, Trak};

struct Setup {
    train: Vec<Sample>,
    targets: Vec<Sample>,
    models: Vec<Mlp<Margin>>,
    trak: Trak,
}

/// The common store problem (n = 1100: three blocks of 512, the last partial).
fn setup() -> Setup {
    let p = store_problem();
    Setup {
        train: p.train,
        targets: p.targets,
        models: p.models,
        trak: Trak::builder().proj_dim(96).seed(3).build().unwrap(),
    }
}

fn featurize_all(run: &Run, s: &Setup, shard: Shard) {
    for (i, m) in s.models.iter().enumerate() {
        run.featurize(
            i as u64,
            m,
            &s.train,
            FeaturizeOptions::default().shard(shard),
        )
        .unwrap();
    }
}

fn score(run: &Run, s: &Setup, name: &str, budget: usize) -> Array2<f32> {
    score_report(run, s, name, budget).0
}

fn score_report(run: &Run, s: &Setup, name: &str, budget: usize) -> (Array2<f32>, ScoreReport) {
    let ck: Vec<(u64, &Mlp<Margin>)> = s
        .models
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u64, m))
        .collect();
    let rep = run
        .score(
            name,
            &ck,
            &s.targets,
            ScoreOptions::default().memory_budget(budget),
        )
        .unwrap();
    (run.load_scores(name).unwrap().into_inner(), rep)
}

#[test]
fn store_round_trip_is_bit_exact() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &s.trak, s.train.len(), 512).unwrap();
    assert_eq!(run.num_blocks(), 3);
    featurize_all(&run, &s, Shard::ALL);
    assert_eq!(run.merge(MergeOptions::default()).unwrap(), vec![0, 1]);

    // Stored features and Q equal in-memory featurisation bit for bit.
    let mut mem = s.trak.featurizer();
    for (i, m) in s.models.iter().enumerate() {
        mem.featurize(i as u64, m, &s.train).unwrap();
    }
    let reopened = Run::open(dir.path()).unwrap();
    for id in 0..2u64 {
        let (phi, q) = reopened.load_features(id).unwrap();
        assert_eq!(bits(phi.view()), bits(mem.features(id).unwrap()));
        let qm: Vec<u32> = mem.q(id).unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(q.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), qm);
    }

    // Stored scores equal the in-memory pipeline run on the stored features and Gram
    // matrices, bit for bit (blocks of 512 rows = the score product's row blocks).
    let stored = score(&run, &s, "test", 64 << 20);
    let index = reopened.train_features().unwrap().finalize().unwrap();
    let psis: Vec<(u64, Array2<f32>)> = (0..2)
        .map(|id| (id, run.target_features("test", id).unwrap()))
        .collect();
    let views: Vec<(u64, ArrayView2<'_, f32>)> = psis.iter().map(|(i, p)| (*i, p.view())).collect();
    let from_memory = index.score_features(&views).unwrap();
    assert_eq!(bits(stored.view()), bits(from_memory.values()));

    // Stored target features are the ones the in-memory API computes.
    for id in 0..2u64 {
        let direct = index
            .target_features(id, &s.models[id as usize], &s.targets)
            .unwrap();
        assert_eq!(bits(psis[id as usize].1.view()), bits(direct.view()));
    }

    // Against the fully in-memory pipeline (its own Gram matrices, summed over all rows at
    // once) the scores agree to rounding.
    let mem_scores = mem
        .finalize()
        .unwrap()
        .score(&[(0, &s.models[0]), (1, &s.models[1])], &s.targets)
        .unwrap();
    let scale = mem_scores.values().iter().fold(0f32, |a, v| a.max(v.abs()));
    let diff = mem_scores
        .values()
        .iter()
        .zip(stored.iter())
        .fold(0f32, |a, (x, y)| a.max((x - y).abs()));
    assert!(diff <= 1e-4 * scale, "diff {diff} scale {scale}");

    // Every file checks out; listing is complete: run + 2 × (meta + 3 feat + 3 Gram partials
    // + merged, both under the default Q weighting) + target set (meta + 2 features + 3 score
    // blocks).
    assert_eq!(reopened.verify().unwrap(), 1 + 2 * 8 + 6);
    assert_eq!(reopened.target_sets().unwrap(), vec!["test".to_string()]);
}

/// Fails (like a crash) once `fail_after` batches have been featurised.
struct Crashing<'a> {
    inner: &'a Mlp<Margin>,
    calls: AtomicUsize,
    fail_after: usize,
}

impl Model for Crashing<'_> {
    type Example = Sample;
    fn num_params(&self) -> usize {
        self.inner.num_params()
    }
    fn output_grads(&self, batch: &[Sample], grads: ArrayViewMut2<'_, f32>) -> trak::Result<()> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.fail_after {
            return Err(Error::Empty("simulated crash"));
        }
        self.inner.output_grads(batch, grads)
    }
    fn output_q(&self, batch: &[Sample], q: ArrayViewMut1<'_, f32>) -> trak::Result<()> {
        self.inner.output_q(batch, q)
    }
    fn fingerprint(&self) -> Option<u64> {
        self.inner.fingerprint()
    }
}

#[test]
fn resumed_sharded_and_budgeted_runs_give_bit_identical_scores() {
    let s = setup();
    let base = tempfile::tempdir().unwrap();
    // Uninterrupted, single process, generous budget.
    let single = Run::create(base.path().join("single"), &s.trak, 1100, 256).unwrap();
    featurize_all(&single, &s, Shard::ALL);
    single.merge(MergeOptions::default()).unwrap();
    let reference = score(&single, &s, "t", 64 << 20);

    // Three shards on different thread counts and batch sizes.
    let sharded_dir = base.path().join("sharded");
    for (i, threads) in [(0, 1), (1, 2), (2, 3)] {
        let trak = Trak::builder()
            .proj_dim(96)
            .seed(3)
            .batch_size(7 + i)
            .build()
            .unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let run = Run::create(&sharded_dir, &trak, 1100, 256).unwrap();
            featurize_all(&run, &s, Shard::new(i, 3).unwrap());
        });
    }
    let sharded = Run::open(&sharded_dir).unwrap();
    sharded.merge(MergeOptions::default()).unwrap();
    // A budget that allows only a few blocks per pass (on one thread, so that the per-thread
    // buffers the plan counts are known).
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // (16 MiB of the budget are the process reserve; this leaves room for 2 of 5 blocks.)
    let (small, rep) = pool.install(|| score_report(&sharded, &s, "t", 18_800_000));
    assert!(rep.blocks_per_pass < sharded.num_blocks(), "{rep:?}");
    assert!(rep.planned_bytes <= 18_800_000, "{rep:?}");
    assert_eq!(bits(small.view()), bits(reference.view()));

    // Interrupted twice, then resumed: completed blocks are not recomputed.
    let resumed = Run::create(base.path().join("resumed"), &s.trak, 1100, 256).unwrap();
    // Batch size 64 and 256-row blocks: 4 model calls per block (+1 for the fingerprint-free
    // probe, not used: Mlp has a fingerprint).
    let crash = Crashing {
        inner: &s.models[0],
        calls: AtomicUsize::new(0),
        fail_after: 9,
    };
    let err = resumed
        .featurize(0, &crash, &s.train, FeaturizeOptions::default())
        .unwrap_err();
    assert!(err.to_string().contains("simulated crash"));
    assert_eq!(resumed.blocks_done(0).unwrap(), vec![0, 1]);
    let crash = Crashing {
        inner: &s.models[0],
        calls: AtomicUsize::new(0),
        fail_after: 5, // 1 call for the spot check of block 0, 4 for block 2
    };
    resumed
        .featurize(0, &crash, &s.train, FeaturizeOptions::default())
        .unwrap_err();
    assert_eq!(resumed.blocks_done(0).unwrap(), vec![0, 1, 2]);
    let mut reports = Vec::new();
    let rep = resumed
        .featurize(
            0,
            &s.models[0],
            &s.train,
            FeaturizeOptions::default().progress(&mut |p| reports.push(p.done)),
        )
        .unwrap();
    assert_eq!((rep.computed, rep.skipped), (2, 3));
    assert_eq!(reports, vec![3, 4, 5]);
    let rep = resumed
        .featurize(1, &s.models[1], &s.train, FeaturizeOptions::default())
        .unwrap();
    assert_eq!((rep.computed, rep.skipped), (5, 0));
    resumed.merge(MergeOptions::default()).unwrap();
    let got = score(&resumed, &s, "t", 64 << 20);
    assert_eq!(bits(got.view()), bits(reference.view()));
    // Scoring again resumes (nothing left to do) and changes nothing.
    let ck = [(0u64, &s.models[0]), (1, &s.models[1])];
    let rep = resumed
        .score("t", &ck, &s.targets, ScoreOptions::default())
        .unwrap();
    assert_eq!((rep.computed, rep.skipped), (0, 5));
}

/// A double submit: two processes featurise the same blocks of one run at the same time (each
/// cleans up the temporary files it finds when it starts, as after a crash). Both succeed, and
/// the run scores bit-identically to a single process.
#[test]
fn two_writers_of_the_same_blocks_at_once_both_succeed_with_the_same_bits() {
    let s = setup();
    let base = tempfile::tempdir().unwrap();
    let single = Run::create(base.path().join("single"), &s.trak, 1100, 64).unwrap();
    featurize_all(&single, &s, Shard::ALL);
    single.merge(MergeOptions::default()).unwrap();
    let reference = score(&single, &s, "t", 64 << 20);
    for round in 0..3 {
        let dir = base.path().join(format!("double-{round}"));
        let start = std::sync::Barrier::new(2);
        std::thread::scope(|scope| {
            for _ in 0..2 {
                scope.spawn(|| {
                    let run = Run::create(&dir, &s.trak, 1100, 64).unwrap();
                    start.wait();
                    featurize_all(&run, &s, Shard::ALL);
                });
            }
        });
        let run = Run::open(&dir).unwrap();
        run.merge(MergeOptions::default()).unwrap();
        let got = score(&run, &s, "t", 64 << 20);
        assert_eq!(bits(got.view()), bits(reference.view()), "round {round}");
        let temps = std::fs::read_dir(dir.join("ckpt-0"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        assert_eq!(temps, 0, "round {round}: temporary files left");
    }
}

fn mismatch_text(e: Error) -> String {
    match e {
        Error::RunMismatch { what, .. } => what,
        other => panic!("expected RunMismatch, got {other}"),
    }
}

#[test]
fn mismatched_configuration_is_refused_with_what_differs() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &s.trak, 1100, 512).unwrap();
    run.featurize(
        0,
        &s.models[0],
        &s.train,
        FeaturizeOptions::default().shard(Shard::new(0, 2).unwrap()),
    )
    .unwrap();

    let other_seed = Trak::builder().proj_dim(96).seed(4).build().unwrap();
    let what = mismatch_text(Run::create(dir.path(), &other_seed, 1100, 512).unwrap_err());
    assert!(
        what.contains("projection seed: stored 3, requested 4"),
        "{what}"
    );
    let other = Trak::builder()
        .proj_dim(64)
        .projector(trak::project::ProjectorKind::Gaussian)
        .seed(3)
        .build()
        .unwrap();
    let what = mismatch_text(Run::create(dir.path(), &other, 1000, 256).unwrap_err());
    for part in [
        "projector: stored Rademacher, requested Gaussian",
        "projection dimension k: stored 96, requested 64",
        "training set size n: stored 1100, requested 1000",
        "block rows: stored 512, requested 256",
    ] {
        assert!(what.contains(part), "{what}");
    }
    // The same configuration with another ridge or batch size opens fine.
    let same = Trak::builder()
        .proj_dim(96)
        .seed(3)
        .batch_size(5)
        .ridge(trak::kernel::Ridge::Absolute(1.0))
        .build()
        .unwrap();
    Run::create(dir.path(), &same, 1100, 512).unwrap();

    // Another model under the same checkpoint id.
    let what = mismatch_text(
        run.featurize(0, &s.models[1], &s.train, FeaturizeOptions::default())
            .unwrap_err(),
    );
    assert!(what.contains("checkpoint 0: model fingerprint"), "{what}");

    // Another training set of the same size: caught by the spot check when resuming.
    let mut reordered = s.train.clone();
    reordered.swap(0, 5);
    let what = mismatch_text(
        run.featurize(0, &s.models[0], &reordered, FeaturizeOptions::default())
            .unwrap_err(),
    );
    assert!(
        what.contains("training example 0: the stored features differ"),
        "{what}"
    );

    // Wrong size.
    assert!(matches!(
        run.featurize(
            0,
            &s.models[0],
            &s.train[..1000],
            FeaturizeOptions::default()
        ),
        Err(Error::TrainSizeMismatch {
            expected: 1100,
            got: 1000
        })
    ));

    // Merging with a shard missing names what is missing.
    match run.merge(MergeOptions::default()).unwrap_err() {
        Error::Incomplete { what, .. } => assert!(
            what.contains("misses 2 of 3 blocks under the Q weighting (blocks 1, 2;"),
            "{what}"
        ),
        e => panic!("{e}"),
    }
    // Told the shard count (a 2-task job array), it names the task to run again.
    assert_eq!(run.missing_blocks(0).unwrap(), vec![1, 2]);
    match run.merge(MergeOptions::default().shards(2)).unwrap_err() {
        Error::Incomplete { what, .. } => assert!(
            what.contains("blocks 1, 2; incomplete shards of 2: 1 (2 of blocks 1–2);"),
            "{what}"
        ),
        e => panic!("{e}"),
    }
    assert!(matches!(
        run.merge(MergeOptions::default().shards(0)),
        Err(Error::InvalidParameter {
            parameter: "shard",
            ..
        })
    ));
    run.featurize(
        0,
        &s.models[0],
        &s.train,
        FeaturizeOptions::default().shard(Shard::new(1, 2).unwrap()),
    )
    .unwrap();
    run.merge(MergeOptions::default()).unwrap();

    // A target set re-scored with other targets.
    let ck = [(0u64, &s.models[0])];
    run.score("t", &ck, &s.targets, ScoreOptions::default())
        .unwrap();
    let what = mismatch_text(
        run.score("t", &ck, &s.targets[1..], ScoreOptions::default())
            .unwrap_err(),
    );
    assert!(what.contains("targets: stored 7, requested 6"), "{what}");
    run.remove_targets("t").unwrap();
    run.score("t", &ck, &s.targets[1..], ScoreOptions::default())
        .unwrap();

    // Too small a memory budget is an error, not an overrun.
    assert!(matches!(
        run.score(
            "u",
            &ck,
            &s.targets,
            ScoreOptions::default().memory_budget(1000)
        ),
        Err(Error::MemoryBudget { .. })
    ));
    assert!(matches!(
        run.score("bad/name", &ck, &s.targets, ScoreOptions::default()),
        Err(Error::InvalidParameter {
            parameter: "target-set name",
            ..
        })
    ));
}

#[test]
fn corrupted_or_truncated_files_are_named() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path(), &s.trak, 1100, 512).unwrap();
    featurize_all(&run, &s, Shard::ALL);
    run.merge(MergeOptions::default()).unwrap();
    score(&run, &s, "t", 64 << 20);
    let files = run.files().unwrap();
    for (i, f) in files.iter().enumerate() {
        let orig = std::fs::read(f).unwrap();
        let mut bad = orig.clone();
        let at = (i * 7919) % bad.len();
        bad[at] ^= 0x01;
        std::fs::write(f, &bad).unwrap();
        let err = Run::open(dir.path()).and_then(|r| r.verify()).unwrap_err();
        match err {
            Error::Checksum { path } => assert_eq!(&path, f),
            e => panic!("{}: {e}", f.display()),
        }
        std::fs::write(f, &orig[..orig.len() / 2]).unwrap();
        assert!(matches!(
            Run::open(dir.path()).and_then(|r| r.verify()),
            Err(Error::Checksum { path }) if &path == f
        ));
        std::fs::write(f, &orig).unwrap();
    }
    assert_eq!(run.verify().unwrap(), files.len());
    // A corrupted block is also caught where it is used.
    let block = dir.path().join("ckpt-1").join("block-000001.feat");
    let mut bad = std::fs::read(&block).unwrap();
    bad[100] ^= 0x80;
    std::fs::write(&block, &bad).unwrap();
    assert!(matches!(run.load_features(1), Err(Error::Checksum { path }) if path == block));
    assert!(
        matches!(run.merge(MergeOptions::default()), Err(Error::Checksum { path }) if path == block)
    );
}

/// A minimal, independent `.npy` parser (format 1.0/2.0, little-endian float32).
fn parse_npy(path: &Path) -> (Vec<usize>, Vec<f32>) {
    let b = std::fs::read(path).unwrap();
    assert_eq!(&b[..6], b"\x93NUMPY", "magic");
    let (hlen, start) = match b[6] {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        v => panic!("npy version {v}"),
    };
    let header = std::str::from_utf8(&b[start..start + hlen]).unwrap();
    assert!((start + hlen) % 16 == 0, "data must be 16-byte aligned");
    assert!(header.contains("'descr': '<f4'"), "{header}");
    assert!(header.contains("'fortran_order': False"), "{header}");
    let shape_txt = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| t.parse().unwrap())
        .collect();
    let data = &b[start + hlen..];
    assert_eq!(data.len(), shape.iter().product::<usize>() * 4);
    let vals = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    (shape, vals)
}

#[test]
fn npy_exports_are_readable_by_an_independent_parser_and_import_back() {
    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let run = Run::create(dir.path().join("run"), &s.trak, 1100, 512).unwrap();
    featurize_all(&run, &s, Shard::ALL);
    run.merge(MergeOptions::default()).unwrap();
    let scores = score(&run, &s, "t", 64 << 20);
    let (phi, q) = run.load_features(1).unwrap();

    let fp = dir.path().join("phi.npy");
    let qp = dir.path().join("q.npy");
    let sp = dir.path().join("scores.npy");
    run.export_features_npy(1, &fp).unwrap();
    run.export_q_npy(1, &qp).unwrap();
    run.export_scores_npy("t", &sp).unwrap();

    let (shape, vals) = parse_npy(&fp);
    assert_eq!(shape, vec![1100, 96]);
    assert_eq!(
        vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        bits(phi.view())
    );
    let (shape, vals) = parse_npy(&qp);
    assert_eq!(shape, vec![1100]);
    assert_eq!(
        vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        q.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let (shape, vals) = parse_npy(&sp);
    assert_eq!(shape, vec![1100, 7]);
    assert_eq!(
        vals.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        bits(scores.view())
    );

    // Import: a declared checkpoint from the exported files reproduces the features, and its
    // Gram partials are recomputed the same way.
    run.declare_checkpoint(9, s.models[1].num_params(), 96, 1234)
        .unwrap();
    run.import_npy(9, &fp, &qp).unwrap();
    run.merge(MergeOptions::default()).unwrap();
    // Importing again resumes (nothing to do); overwriting a block is refused; a different
    // file is refused.
    run.import_npy(9, &fp, &qp).unwrap();
    assert!(matches!(
        run.import_block(
            9,
            0,
            phi.slice(ndarray::s![..512, ..]),
            q.slice(ndarray::s![..512])
        ),
        Err(Error::RunMismatch { .. })
    ));
    let p0 = dir.path().join("phi0.npy");
    run.export_features_npy(0, &p0).unwrap();
    assert!(matches!(
        run.import_npy(9, &p0, &qp),
        Err(Error::RunMismatch { .. })
    ));
    let (phi9, _) = run.load_features(9).unwrap();
    assert_eq!(bits(phi9.view()), bits(phi.view()));
    let (g1, g9) = (run.gram(1).unwrap(), run.gram(9).unwrap());
    assert!(
        g1.iter()
            .zip(g9.iter())
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    // A non-npy file is a clear error.
    std::fs::write(dir.path().join("junk.npy"), b"not an array").unwrap();
    assert!(matches!(
        run.import_npy(9, &dir.path().join("junk.npy"), &qp),
        Err(Error::Corrupt { .. })
    ));
    // A header declaring far more data than the file holds is refused before allocating.
    let dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000000, 100000), }";
    let mut huge = b"\x93NUMPY\x01\x00".to_vec();
    let padded = format!("{dict:<117}\n");
    huge.extend_from_slice(&(padded.len() as u16).to_le_bytes());
    huge.extend_from_slice(padded.as_bytes());
    huge.extend_from_slice(&[0u8; 64]);
    let hp = dir.path().join("huge.npy");
    std::fs::write(&hp, &huge).unwrap();
    match run.import_npy(9, &hp, &qp).unwrap_err() {
        Error::Corrupt { reason, .. } => assert!(reason.contains("declares"), "{reason}"),
        e => panic!("{e}"),
    }
    // Imported features must be finite and of the declared shape.
    let mut nan = phi.slice(ndarray::s![..512, ..]).to_owned();
    nan[(3, 4)] = f32::NAN;
    assert!(matches!(
        run.import_block(9, 0, nan.view(), q.slice(ndarray::s![..512])),
        Err(Error::NonFiniteInput { index: 292, .. })
    ));
    assert!(matches!(
        run.import_block(
            9,
            0,
            phi.slice(ndarray::s![..511, ..]),
            q.slice(ndarray::s![..511])
        ),
        Err(Error::ShapeMismatch { .. })
    ));
}
