//! Sharded featurisation: N processes featurise disjoint block ranges of one run directory at
//! the same time, then one merge and scoring step; the scores must be bit-identical to a
//! single-process run of the same problem.
//!
//! This is the one-machine version of the cluster recipe in docs/SCALING.md (a SLURM job
//! array writing to shared storage).
//!
//! Prints one line on stdout: `SHARDS processes=<N> identical=<true|false>`.
//!
//! `cargo run --release --example sharded [-- N]` (default N = 4)

#[path = "support/runs.rs"]
mod runs;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use trak::progress::{Progress, Stage};
use trak::store::{MergeOptions, Run, ScoreOptions, Shard};

const BLOCK_ROWS: usize = 100;
const TRAIN: usize = 3000;

fn main() -> trak::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 6 && args[1] == "child" {
        // child <problem> <dir> <index> <count>
        let shard = Shard::new(args[4].parse().unwrap(), args[5].parse().unwrap())?;
        return runs::child(
            Path::new(&args[2]),
            Path::new(&args[3]),
            shard,
            BLOCK_ROWS,
            false,
        );
    }
    let n_shards: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4);
    let (work, problem) = runs::work_dir("trak-shards", TRAIN, 3)?;

    // Single process.
    let single = work.join("single");
    let t = Instant::now();
    runs::child(&problem, &single, Shard::ALL, BLOCK_ROWS, true)?;
    let t_single = t.elapsed().as_secs_f64();

    // N processes at once on one run directory, then merge and score here.
    let sharded = work.join("sharded");
    let t = Instant::now();
    let children: Vec<_> = (0..n_shards)
        .map(|i| {
            Command::new(std::env::current_exe().expect("own path"))
                .args(["child"])
                .arg(&problem)
                .arg(&sharded)
                .args([i.to_string(), n_shards.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .expect("spawn shard")
        })
        .collect();
    for mut c in children {
        let status = c.wait().expect("wait");
        assert!(status.success(), "shard failed: {status}");
    }
    let t_shards = t.elapsed().as_secs_f64();

    let p = runs::load(&problem)?;
    let run = Run::open(&sharded)?;
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos}/{len} blocks")
            .expect("template")
            .progress_chars("=> "),
    );
    let mut show = |p: Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(match p.stage {
            Stage::Merge { checkpoint } => format!("merge ckpt {checkpoint}"),
            Stage::Targets { checkpoint } => format!("targets ckpt {checkpoint}"),
            Stage::Score => "score".to_string(),
            Stage::Featurize { checkpoint } => format!("featurise {checkpoint}"),
        });
    };
    run.merge(MergeOptions::default().progress(&mut show))?;
    run.score(
        "test",
        &p.checkpoints(),
        &p.targets,
        ScoreOptions::default().progress(&mut show),
    )?;
    bar.finish_and_clear();
    let t_total = t.elapsed().as_secs_f64();

    let identical = runs::score_bits(&single)? == runs::score_bits(&sharded)?;
    eprintln!(
        "n = {TRAIN}, 3 checkpoints, {} blocks each; single process (featurise, merge, score) \
         {t_single:.2} s; {n_shards} shard processes {t_shards:.2} s, with merge and score \
         {t_total:.2} s ({} threads per process)",
        TRAIN.div_ceil(BLOCK_ROWS),
        rayon::current_num_threads()
    );
    std::fs::remove_dir_all(&work).ok();
    println!("SHARDS processes={n_shards} identical={identical}");
    Ok(())
}
