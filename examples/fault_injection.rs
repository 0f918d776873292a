//! Fault injection for the store: crashes and corrupted files.
//!
//! 1. Trains two MNIST checkpoints, then featurises, merges and scores a run in a child
//!    process without interruption (the reference).
//! 2. Does the same in a fresh run directory, but SIGKILLs the child at random moments,
//!    starting it again after each kill, until a child finishes after at least 10 kills, of
//!    which at least 3 landed after featurisation (in the resume check, merge or scoring; if
//!    too few did, the merged matrices and scores are deleted and the killing goes on while
//!    they are recomputed). The final scores are compared bit for bit with the reference.
//! 3. Flips one byte, at a random position, in each stored file in turn, and checks that
//!    opening and verifying the run reports a checksum error naming that file.
//!
//! Prints exactly one line on stdout (details go to stderr):
//! `FAULTS killed=<n> identical=<true|false> corruptions_detected=<d>/<files>`
//!
//! `cargo run --release --example fault_injection [-- --seed S]`

#[path = "support/runs.rs"]
mod runs;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::Error;
use trak::store::{Run, Shard};

const BLOCK_ROWS: usize = 50;
const TRAIN: usize = 2000;
const MIN_KILLS: usize = 10;
/// Kills that must land after featurisation (in the resume check, merge or scoring).
const MIN_TAIL_KILLS: usize = 3;

fn spawn(problem: &Path, dir: &Path, mode: &str) -> Child {
    Command::new(std::env::current_exe().expect("own path"))
        .arg(mode)
        .arg(problem)
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Runs a child to completion; its wall time.
fn run_child(problem: &Path, dir: &Path, mode: &str) -> f64 {
    let t = Instant::now();
    let status = spawn(problem, dir, mode).wait().expect("wait");
    assert!(status.success(), "child {mode} failed: {status}");
    t.elapsed().as_secs_f64()
}

/// Where an interrupted run stands: "featurise" while blocks are missing, else "merge/score".
fn phase(dir: &Path) -> &'static str {
    let Ok(run) = Run::open(dir) else {
        return "start";
    };
    let ids = run.checkpoints().unwrap_or_default();
    let all = ids.len() == 2
        && ids
            .iter()
            .all(|&id| run.blocks_done(id).map(|b| b.len()).unwrap_or(0) == run.num_blocks());
    if all { "merge/score" } else { "featurise" }
}

fn main() -> trak::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 4 && (args[1] == "child" || args[1] == "noop") {
        let (problem, dir) = (Path::new(&args[2]), Path::new(&args[3]));
        if args[1] == "noop" {
            runs::load(problem)?;
            return Ok(());
        }
        return runs::child(problem, dir, Shard::ALL, BLOCK_ROWS, true);
    }
    let seed = match args.iter().position(|a| a == "--seed") {
        Some(i) => args.get(i + 1).and_then(|s| s.parse().ok()).unwrap_or(1),
        None => 1,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (work, problem) = runs::work_dir("trak-faults", TRAIN, 2)?;

    let reference = work.join("reference");
    let t_ref = run_child(&problem, &reference, "child");
    let t_start = run_child(&problem, &reference, "noop");
    // The tail (resume check, merge, scoring) alone: drop the reference's merged Gram
    // matrices and scores and let a child redo them.
    for id in 0..2 {
        std::fs::remove_file(reference.join(format!("ckpt-{id}")).join("merged.trak")).ok();
    }
    std::fs::remove_dir_all(reference.join("targets-test")).ok();
    let t_tail = run_child(&problem, &reference, "child") - t_start;
    eprintln!(
        "uninterrupted child: {t_ref:.2} s (start-up and loading {t_start:.2} s, merge and \
         scoring {t_tail:.2} s); {} blocks of {BLOCK_ROWS} rows per checkpoint",
        TRAIN.div_ceil(BLOCK_ROWS)
    );

    // Kill at random moments: half the start-up time plus up to 1/8 of the work, so
    // each child gets some work done and at least MIN_KILLS kills are needed.
    let faulty = work.join("faulty");
    let slot = ((t_ref - t_start) / 8.0).max(0.05);
    let (mut killed, mut attempts) = (0usize, 0usize);
    let mut phases = std::collections::BTreeMap::<&str, usize>::new();
    loop {
        attempts += 1;
        assert!(attempts < 1000, "no progress after {attempts} attempts");
        let mut child = spawn(&problem, &faulty, "child");
        // During featurisation a slot of ~1/8 of the work; once every block is on disk, up to
        // 1.5× the merge-and-score time, so that kills also land in merging and scoring.
        let window = match phase(&faulty) {
            "merge/score" => 1.5 * t_tail.max(0.01),
            _ => slot,
        };
        let delay = t_start * 0.5 + rng.random_range(0.0..window);
        let deadline = Instant::now() + Duration::from_secs_f64(delay);
        let finished = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                assert!(status.success(), "child failed: {status}");
                break true;
            }
            if Instant::now() >= deadline {
                child.kill().expect("SIGKILL");
                child.wait().expect("wait");
                break false;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        if finished {
            let tail_kills = phases.get("merge/score").copied().unwrap_or(0);
            if killed >= MIN_KILLS && tail_kills >= MIN_TAIL_KILLS {
                break;
            }
            if killed >= MIN_KILLS {
                // Too few kills landed after featurisation: drop the merged matrices and the
                // scores and go on killing while they are recomputed.
                for id in 0..2 {
                    std::fs::remove_file(faulty.join(format!("ckpt-{id}")).join("merged.trak"))
                        .ok();
                }
                std::fs::remove_dir_all(faulty.join("targets-test")).ok();
                continue;
            }
            // Finished before enough kills: start again from scratch.
            eprintln!("a child finished after only {killed} kills; starting over");
            std::fs::remove_dir_all(&faulty).ok();
            killed = 0;
            phases.clear();
            continue;
        }
        killed += 1;
        *phases.entry(phase(&faulty)).or_default() += 1;
    }
    eprintln!("kills by phase reached: {phases:?}; {attempts} child starts");
    let identical = runs::score_bits(&reference)? == runs::score_bits(&faulty)?;

    // Corruption: one flipped byte per file.
    let run = Run::open(&faulty)?;
    run.verify()?;
    let files = run.files()?;
    let mut detected = 0;
    for f in &files {
        let orig = std::fs::read(f).expect("read");
        let mut bad = orig.clone();
        let at = rng.random_range(0..bad.len());
        bad[at] ^= rng.random_range(1..=255u8);
        std::fs::write(f, &bad).expect("write");
        match Run::open(&faulty).and_then(|r| r.verify()) {
            Err(Error::Checksum { path }) if &path == f => detected += 1,
            other => eprintln!("{}: byte {at} flipped, got {other:?}", f.display()),
        }
        std::fs::write(f, &orig).expect("restore");
    }
    run.verify()?;
    std::fs::remove_dir_all(&work).ok();
    println!(
        "FAULTS killed={killed} identical={identical} corruptions_detected={detected}/{}",
        files.len()
    );
    Ok(())
}
