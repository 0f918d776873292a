//! LDS of a small CNN trained in candle on MNIST-5k, attributed through `trak-candle` with the
//! factored, sparse and dense projectors, against gradient similarity and random scores; also
//! TRAK with the curvature-weighted kernels (`trak-gn`, `trak-q`: `trak::Weighting`).
//!
//! The protocol is trak-demo's (seeded split, J random half-size subsets, a CNN retrained in
//! candle on each, margins cached under `target/lds-cache/`). It also writes a PNG grid of the
//! strongest proponents and opponents of six test digits (`target/cnn-pictures/`, or
//! `docs/img/` with `--update-docs`).
//!
//! ```text
//! cargo run --release -p trak-candle --example cnn            # J = 100, 4,000 train, ~15 min
//! cargo run --release -p trak-candle --example cnn -- --quick # J = 32, 1,000 train, < 1 min
//! ```
//! Options: `--quick`, `--no-cache`, `--subsets J`, `--update-docs`.

#[path = "support/cnn_lds.rs"]
mod cnn_lds;
#[path = "support/mnist_cnn.rs"]
mod mnist_cnn;

use std::path::PathBuf;

use cnn_lds::CnnConfig;
use trak_demo::cli::Args;

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let mut cfg = if args.flag("--quick") {
        CnnConfig::quick()
    } else {
        CnnConfig::full()
    };
    cfg.bench.subsets = args.usize_or("--subsets", cfg.bench.subsets)?;
    if args.flag("--no-cache") {
        cfg.bench.cache_dir = None;
    }
    let t0 = std::time::Instant::now();
    let out = cnn_lds::run(&cfg)?;
    for r in &out.rows {
        println!("{}", r.line());
    }
    let acc: Vec<String> = out.accuracy.iter().map(|a| format!("{a:.3}")).collect();
    eprintln!(
        "[cnn] checkpoint accuracy on the targets: {}",
        acc.join(" ")
    );
    eprintln!("[cnn] total {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(kept) = &out.scores {
        let dir = if args.flag("--update-docs") {
            PathBuf::from("docs/img")
        } else {
            PathBuf::from("target/cnn-pictures")
        };
        let (_, _, train, targets) = trak_demo::protocol::split(&cfg.bench)?;
        let title = kept.describe();
        let img = trak_demo::pictures::proponents_opponents(
            &kept.scores,
            &train,
            &targets,
            (6, 6),
            &title,
        )?;
        std::fs::create_dir_all(&dir).map_err(|source| trak::Error::Io {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("cnn-proponents-opponents.png");
        trak_demo::pictures::save(&img, &path)?;
        eprintln!("[cnn] wrote {}", path.display());
    }
    Ok(())
}
