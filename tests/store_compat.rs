//! Runs written by trak 0.1 (tests/data/run-0.1: a dense and a factored run of two checkpoints,
//! made by that release's store code before kernel weightings and the sketched factored
//! projector existed) still open: under `Weighting::None` they score bit for bit as they did,
//! under the new default (Q) scoring says what is missing, and featurising again adds only the
//! missing Gram partials.

use std::path::Path;

use trak::data::{Dataset, Sample};
use trak::models::Mlp;
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions};
use trak::{Error, ProjectorKind, Weighting};

/// The data and checkpoints the fixture was made with.
fn problem() -> (Vec<Sample>, Vec<Sample>, Vec<Mlp<Margin>>) {
    let data = Dataset::blobs(46, 6, 3, 0).unwrap();
    let (train, test) = data.split(40, 0).unwrap();
    let models = (1..=2)
        .map(|seed| Mlp::new(&[6, 5, 3], Margin, seed).unwrap())
        .collect();
    (train.samples(), test.samples(), models)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

fn bits(run: &Run, name: &str) -> Vec<u32> {
    let s = run.load_scores(name).unwrap();
    s.values().iter().map(|v| v.to_bits()).collect()
}

fn check(sub: &str, projector: ProjectorKind) {
    let (train, targets, models) = problem();
    let ck: Vec<(u64, &Mlp<Margin>)> = (0..2).map(|i| (i as u64, &models[i])).collect();
    let tmp = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/run-0.1");
    copy_dir(&fixture.join(sub), tmp.path());

    // Opens, under the default weighting, with the stored projector.
    let run = Run::open(tmp.path()).unwrap();
    assert_eq!(run.config().projector(), projector);
    assert_eq!(run.config().weighting(), Weighting::Q);
    assert_eq!(run.verify().unwrap(), run.files().unwrap().len());
    let stored = bits(&run, "t");

    // Plain TRAK: the same scores, bit for bit; the stored target set resumes as it is.
    let plain = Run::open(tmp.path())
        .unwrap()
        .with_weighting(Weighting::None);
    let rep = plain
        .score("t", &ck, &targets, ScoreOptions::default())
        .unwrap();
    assert_eq!(rep.computed, 0);
    plain
        .score("again", &ck, &targets, ScoreOptions::default())
        .unwrap();
    assert_eq!(bits(&plain, "again"), stored, "{sub}: rescored plain");

    // Under Q: typed, and says how; featurising computes only the Q partials.
    match run.score("q", &ck, &targets, ScoreOptions::default()) {
        Err(Error::Incomplete { what, .. }) => assert!(what.contains("Q weighting"), "{what}"),
        other => panic!("{sub}: {other:?}"),
    }
    for (id, m) in &ck {
        let rep = run
            .featurize(*id, *m, &train, FeaturizeOptions::default())
            .unwrap();
        assert_eq!((rep.computed, rep.skipped), (3, 0), "{sub}");
    }
    run.merge(MergeOptions::default()).unwrap();
    run.score("q", &ck, &targets, ScoreOptions::default())
        .unwrap();
    assert_ne!(bits(&run, "q"), stored);
    // The plain target set is not resumed under Q.
    match run.score("t", &ck, &targets, ScoreOptions::default()) {
        Err(Error::RunMismatch { what, .. }) => assert!(what.contains("weighting"), "{what}"),
        other => panic!("{sub}: {other:?}"),
    }
}

#[test]
fn a_dense_run_written_by_0_1_opens_and_scores_as_before() {
    check("dense", ProjectorKind::Rademacher);
}

#[test]
fn a_factored_run_written_by_0_1_opens_with_the_small_plan_and_scores_as_before() {
    check("factored", ProjectorKind::FactoredSmall);
}
