//! Metagradients against retraining: the LDS of exact metagradients through the built-in
//! trainer (MAGIC/REPLAY, `trak::metagrad`) and of TRAK, on MNIST-5k, for logistic regression
//! and the MLP, at drop fractions 1 %, 5 % and 50 %, against the same-seed and the
//! other-seeds truth.
//!
//! ```text
//! cargo run --release --example metagrad_lds              # the protocol (smooth settings) and the cost
//! cargo run --release --example metagrad_lds -- --quick   # seconds: 1,000 train, 20 targets, J = 40
//! cargo run --release --example metagrad_lds -- --map     # same-seed LDS over (lr, batch, epochs)
//! cargo run --release --example metagrad_lds -- --settings default   # the crate's Sgd::default()
//! cargo run --release --example metagrad_lds -- --fd      # finite differences in w_i vs metagradients
//! ```
//! Options: `--family logreg|mlp` (repeatable), `--subsets J`, `--targets m`, `--ensembles
//! 1,5,20`, `--no-cache`, `--no-cost` (skip the cost lines), `--cost` (only them). Truth margins are cached in `target/lds-cache/`.
//! Output lines: `METAGRAD family=… drop=… truth=… method=… M=… lds=… settings="…"`,
//! `METAGRAD_ACCURACY …` and `METAGRAD_COST targets_per_pass=… s_per_target=…
//! train_runs_per_target=… peak_rss_mb=…`. See docs/VALIDATION.md.

use std::time::Instant;

use trak_demo::cli::Args;
use trak_demo::family::Family;
use trak_demo::finite_diff;
use trak_demo::metagrad::{self, MetagradConfig, MetagradOutput, Training, Truth};

fn config(args: &Args) -> trak::Result<MetagradConfig> {
    let mut cfg = if args.flag("--quick") {
        MetagradConfig::quick()
    } else {
        MetagradConfig::full()
    };
    cfg.subsets = args.usize_or("--subsets", cfg.subsets)?;
    cfg.n_targets = args.usize_or("--targets", cfg.n_targets)?;
    if let Some(m) = args.ensembles()? {
        cfg.ensembles = m;
    }
    if args.flag("--no-cache") {
        cfg.cache_dir = None;
    }
    let fams = args.families()?;
    if !fams.is_empty() {
        cfg.families = fams;
    }
    Ok(cfg)
}

/// `smooth` (default) or `default` (the crate's `Sgd::default()`).
fn settings(args: &Args) -> trak::Result<fn(Family) -> Training> {
    match args.value("--settings").unwrap_or("smooth") {
        "smooth" => Ok(|_| Training::smooth()),
        "default" => Ok(|_| Training::crate_default()),
        other => Err(trak::Error::InvalidParameter {
            parameter: "--settings",
            value: other.into(),
            expected: "smooth or default".into(),
        }),
    }
}

fn print(cfg: &MetagradConfig, out: &MetagradOutput) {
    println!(
        "\nLDS on MNIST-5k ({} train, {} targets, J = {} subsets per drop; M = runs or checkpoints):",
        cfg.n_train, cfg.n_targets, cfg.subsets
    );
    println!(
        "| family | settings | drop (fraction removed) | truth | method | M | LDS |\n|---|---|---|---|---|---|---|"
    );
    for r in &out.rows {
        let (f, s, t) = (r.family.name(), r.training.name(), r.truth.name());
        println!(
            "| {f} | {s} | {} | {t} | {} | {} | {:.3} |",
            r.drop, r.method, r.m, r.lds
        );
    }
    for r in &out.rows {
        println!("{}", r.line());
    }
    for (f, t, acc) in &out.accuracy {
        println!(
            "METAGRAD_ACCURACY family={} accuracy={acc:.4} settings=\"{}\"",
            f.name(),
            t.name()
        );
    }
}

/// The grid of `--map`: lr × batch × epochs around the crate's defaults (momentum and weight
/// decay the defaults'), same-seed truth.
fn map(cfg: &MetagradConfig) -> trak::Result<()> {
    let mut cfg = cfg.clone();
    cfg.truths = vec![Truth::SameSeed];
    cfg.ensembles = vec![1];
    cfg.drops = vec![0.01, 0.5];
    cfg.k = 0;
    for lr in [0.01f32, 0.05] {
        for batch_size in [64, 256] {
            for epochs in [3, 10] {
                let t = Training {
                    lr,
                    batch_size,
                    epochs,
                    ..Training::crate_default()
                };
                let t0 = Instant::now();
                let out = metagrad::run(&cfg, |_| t)?;
                print(&cfg, &out);
                eprintln!(
                    "[metagrad] {} in {:.1} s",
                    t.name(),
                    t0.elapsed().as_secs_f64()
                );
            }
        }
    }
    Ok(())
}

fn cost(cfg: &MetagradConfig, training: fn(Family) -> Training) -> trak::Result<()> {
    let (train, targets, _) = metagrad::split(&MetagradConfig {
        n_targets: 64,
        ..cfg.clone()
    })?;
    for &family in &cfg.families {
        for m in [1, 16, 64] {
            let row = metagrad::cost(family, training(family), &train, &targets[..m])?;
            println!("{}", row.line());
        }
        let t = &targets[..16];
        println!(
            "{}",
            metagrad::precision_line(family, training(family), &train, t)?
        );
    }
    Ok(())
}

/// `--fd`: finite differences in one example's weight against its metagradient, for the
/// first target, the 3 examples with the largest |τ_i| and ε from 1 to 1e-5.
fn finite_differences(cfg: &MetagradConfig, training: fn(Family) -> Training) -> trak::Result<()> {
    let (train, targets, _) = metagrad::split(cfg)?;
    let eps = [1.0, 0.1, 1e-2, 1e-3, 1e-4, 1e-5];
    for &family in &cfg.families {
        let rows = finite_diff::finite_differences(
            family,
            training(family),
            &train,
            &targets[0],
            3,
            &eps,
        )?;
        rows.iter().for_each(|r| println!("{}", r.line()));
    }
    Ok(())
}

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let cfg = config(&args)?;
    let start = Instant::now();
    if args.flag("--map") {
        map(&cfg)?;
    } else if args.flag("--fd") {
        finite_differences(&cfg, settings(&args)?)?;
    } else {
        let training = settings(&args)?;
        if !args.flag("--no-cost") && !args.flag("--quick") {
            cost(&cfg, training)?;
        }
        if !args.flag("--cost") {
            print(&cfg, &metagrad::run(&cfg, training)?);
        }
    }
    println!(
        "{} threads, total time {:.1} s",
        rayon::current_num_threads(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
