//! A real crash test, small enough for CI: this test binary re-runs itself as a child process
//! that featurises, merges and scores a stored run, SIGKILLs it at random moments, restarts
//! it each time, and checks the final scores bit for bit against an uninterrupted run.
//! (`cargo run --release --example fault_injection` is the full version on MNIST.)

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{class_samples, randomize};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::Trak;
use trak::models::Mlp;
use trak::output::Margin;
use trak::store::{FeaturizeOptions, MergeOptions, Run, ScoreOptions};

const CHILD_ENV: &str = "TRAK_KILL_TEST_CHILD_DIR";

/// n = 3000, MLP 64-64-10 (p = 4810), two checkpoints, dense k = 256, 60 blocks of 50 rows.
fn work(dir: &Path) -> trak::Result<()> {
    let train = class_samples(3000, 64, 10, 1);
    let targets = class_samples(5, 64, 10, 2);
    let models: Vec<Mlp<Margin>> = (0..2)
        .map(|i| {
            let mut m = Mlp::new(&[64, 64, 10], Margin, i).unwrap();
            randomize(&mut m, 0.2, 70 + i);
            m
        })
        .collect();
    let trak = Trak::builder().proj_dim(256).seed(1).build()?;
    let run = Run::create(dir, &trak, train.len(), 50)?;
    for (i, m) in models.iter().enumerate() {
        run.featurize(i as u64, m, &train, FeaturizeOptions::default())?;
    }
    run.merge(MergeOptions::default())?;
    let ck = [(0u64, &models[0]), (1, &models[1])];
    run.score("t", &ck, &targets, ScoreOptions::default())?;
    Ok(())
}

fn bits(dir: &Path) -> Vec<u32> {
    Run::open(dir)
        .unwrap()
        .load_scores("t")
        .unwrap()
        .values()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// The child's entry point: does nothing unless started by the parent test.
#[test]
fn child_process_entry() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        work(Path::new(&dir)).unwrap();
    }
}

#[test]
fn sigkilled_runs_resume_to_bit_identical_scores() {
    let base = tempfile::tempdir().unwrap();
    let reference = base.path().join("reference");
    let t = Instant::now();
    work(&reference).unwrap();
    let t_ref = t.elapsed().as_secs_f64();

    let faulty = base.path().join("faulty");
    let spawn = || {
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_process_entry", "--test-threads", "1"])
            .env(CHILD_ENV, &faulty)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (mut killed, mut starts) = (0, 0);
    loop {
        starts += 1;
        assert!(starts < 500, "no progress after {starts} starts");
        let mut child = spawn();
        let deadline = Instant::now()
            + Duration::from_secs_f64(0.01 + rng.random_range(0.0..(t_ref / 6.0).max(0.02)));
        let finished = loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "child failed: {status}");
                break true;
            }
            if Instant::now() >= deadline {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                break false;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if finished {
            break;
        }
        killed += 1;
    }
    eprintln!("{killed} kills, {starts} starts, uninterrupted run {t_ref:.2} s");
    assert!(
        killed >= 3,
        "only {killed} kills landed (uninterrupted run {t_ref:.2} s)"
    );
    assert_eq!(bits(&faulty), bits(&reference), "after {killed} kills");
    let run = Run::open(&faulty).unwrap();
    assert_eq!(run.verify().unwrap(), run.files().unwrap().len());
    // No temporary file of a killed writer is left behind.
    let mut stack = vec![faulty.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let name = p.file_name().unwrap().to_string_lossy().to_string();
                assert!(!name.contains(".tmp-"), "left behind: {}", p.display());
            }
        }
    }
}
