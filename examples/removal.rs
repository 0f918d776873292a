//! Removal test: for each of 50 targets, remove its top-k TRAK proponents (k ∈ {10, 50, 200})
//! or k random training examples, retrain (3 seeds), and measure the target's margin drop and
//! how often its prediction flips from correct to wrong.
//!
//! `cargo run --release --example removal [-- --family logreg|mlp]`

use std::time::Instant;

use trak_demo::cli::Args;
use trak_demo::removal::{RemovalConfig, removal};

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let mut cfg = RemovalConfig::default();
    let fams = args.families()?;
    if !fams.is_empty() {
        cfg.families = fams;
    }
    let start = Instant::now();
    let rows = removal(&cfg)?;
    println!(
        "\nRemoval on MNIST-5k: {} train, {} targets, {} seeds, TRAK k = {}, M = {}",
        cfg.n_train, cfg.n_targets, cfg.seeds, cfg.k, cfg.m
    );
    println!("| family | removed | method | margin drop | flipped |\n|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {:.3} | {:.1} % |",
            r.family.name(),
            r.removed,
            r.method,
            r.margin_drop,
            100.0 * r.flip
        );
    }
    println!();
    for r in &rows {
        println!("{}", r.line());
    }
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
