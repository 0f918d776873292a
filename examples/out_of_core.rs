//! Out-of-core scoring: n synthetic training rows × k features stored on disk, scored
//! against m targets under a memory budget much smaller than the features or the scores.
//!
//! Imports synthetic features block by block (as a user with their own gradient pipeline
//! would, via `Run::import_block`), merges the Gram partials, then scores blockwise. Run it
//! under `/usr/bin/time -v` to see the peak resident set:
//!
//! `/usr/bin/time -v cargo run --release --example out_of_core -- --n 1000000 --k 1024 --m 1000 --budget-mb 512`
//!
//! Defaults: n = 1,000,000, k = 1024, m = 1000, budget 512 MiB, 4096-row blocks, run
//! directory under the system temp dir (removed at the end unless `--keep`; an interrupted
//! import resumes from the blocks on disk).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use ndarray::{Array1, Array2};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use trak::Trak;
use trak::progress::{Progress, Stage};
use trak::store::{MergeOptions, Run, ScoreOptions};
use trak_demo::cli::Args;
use trak_demo::yardstick::gemm_gflops;

fn bar() -> ProgressBar {
    ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} blocks {elapsed}")
            .expect("template")
            .progress_chars("=> "),
    )
}

/// Synthetic features of block `b`: i.i.d. U(−1, 1), seeded by the block (reproducible).
fn block(b: usize, rows: usize, k: usize) -> (Array2<f32>, Array1<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed_0000 + b as u64);
    let phi = Array2::from_shape_simple_fn((rows, k), || rng.random_range(-1.0f32..1.0));
    let q = Array1::from_shape_simple_fn(rows, || rng.random_range(0.0f32..1.0));
    (phi, q)
}

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let n = args.usize_or("--n", 1_000_000)?;
    let k = args.usize_or("--k", 1024)?;
    let m = args.usize_or("--m", 1000)?;
    let budget = args.usize_or("--budget-mb", 512)? << 20;
    let block_rows = args.usize_or("--block-rows", 4096)?;
    let keep = args.flag("--keep");
    let dir = std::env::temp_dir().join(format!("trak-ooc-{n}x{k}"));

    // The yardstick of the score phase: f64 GEMM on the score product's shape for one block.
    let limit = gemm_gflops::<f64>(block_rows.min(n), k, m, 3);
    let trak = Trak::builder().proj_dim(k).seed(0).build()?;
    let run = Run::create(&dir, &trak, n, block_rows)?;
    run.declare_checkpoint(0, k, k, 0x5eed)?;

    // Import (each block: generate, Gram partial, atomic write).
    let t = Instant::now();
    let done: std::collections::BTreeSet<usize> = run.blocks_done(0)?.into_iter().collect();
    let todo: Vec<usize> = (0..run.num_blocks())
        .filter(|b| !done.contains(b))
        .collect();
    let pb = bar();
    pb.set_message("import");
    pb.set_length(run.num_blocks() as u64);
    pb.set_position(done.len() as u64);
    // One block at a time (the Gram partial of each block runs on every thread).
    for &b in &todo {
        let (phi, q) = block(b, run.block_range(b).len(), k);
        run.import_block(0, b, phi.view(), q.view())?;
        pb.inc(1);
    }
    pb.finish_and_clear();
    let t_import = t.elapsed().as_secs_f64();

    let show = |pb: &ProgressBar, p: Progress| {
        pb.set_length(p.total as u64);
        pb.set_position(p.done as u64);
        pb.set_message(match p.stage {
            Stage::Merge { .. } => "merge",
            Stage::Score => "score",
            _ => "",
        });
    };
    let t = Instant::now();
    let pb = bar();
    run.merge(MergeOptions::default().progress(&mut |p| show(&pb, p)))?;
    pb.finish_and_clear();
    let t_merge = t.elapsed().as_secs_f64();

    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let psi = Array2::from_shape_simple_fn((m, k), || rng.random_range(-1.0f32..1.0));
    run.remove_targets("synthetic")?;
    let t = Instant::now();
    let pb = bar();
    let rep = run.score_features(
        "synthetic",
        &[(0, psi.view())],
        ScoreOptions::default()
            .memory_budget(budget)
            .progress(&mut |p| show(&pb, p)),
    )?;
    pb.finish_and_clear();
    let t_score = t.elapsed().as_secs_f64();

    // Read the scores back block by block: the largest score, and a checksum of all bits.
    let t = Instant::now();
    let (mut best, mut hash) = (f32::NEG_INFINITY, 0u64);
    run.for_each_score_block("synthetic", |_, s| {
        for v in s.iter() {
            best = best.max(*v);
            hash = hash.rotate_left(5) ^ v.to_bits() as u64;
        }
        Ok(())
    })?;
    let t_read = t.elapsed().as_secs_f64();

    let gb = |bytes: f64| bytes / 1e9;
    let feat_bytes = (n * k * 4) as f64;
    let score_bytes = (n * m * 4) as f64;
    println!(
        "n = {n}, k = {k}, m = {m}, {} blocks of {block_rows} rows; features {:.2} GB, scores {:.2} GB on disk",
        run.num_blocks(),
        gb(feat_bytes),
        gb(score_bytes)
    );
    println!(
        "budget {} MiB; scoring planned {} MiB ({} blocks per pass)",
        budget >> 20,
        rep.planned_bytes >> 20,
        rep.blocks_per_pass
    );
    println!(
        "import (generate + Gram partials + write): {t_import:.1} s ({:.1} GFLOP/s Gram)",
        (n as f64) * (k * k) as f64 / t_import / 1e9
    );
    println!(
        "merge (read and check every block): {t_merge:.1} s ({:.2} GB/s)",
        gb(feat_bytes) / t_merge
    );
    let rate = 2.0 * (n * k) as f64 * m as f64 / t_score / 1e9;
    println!(
        "score: {t_score:.1} s ({rate:.1} GFLOP/s including reading, checking and writing: \
         {:.2}× this machine's f64 GEMM rate of {limit:.1} GFLOP/s); read back {t_read:.1} s",
        rate / limit
    );
    println!("max score {best:.4e}, bits hash {hash:016x}");
    if !keep {
        std::fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}
