//! Counterfactual validation: the linear datamodeling score (LDS) of TRAK and baselines on
//! MNIST-5k, for multinomial logistic regression and a one-hidden-layer MLP.
//!
//! ```text
//! cargo run --release --example lds              # J = 300 subsets, 200 targets, k ∈ {512, 2048, 4096}, M ∈ {1, 5, 10}
//! cargo run --release --example lds -- --quick   # J = 48, 40 targets, k = 512, M ∈ {1, 3}
//! cargo run --release --example lds -- --sweep   # the default protocol under a sweep of ridges λ
//! cargo run --release --example lds -- --ridges n:2,k:0.1,abs:0   # chosen ridge rules
//! ```
//! Options: `--family logreg|mlp` (repeatable), `--k 512,2048` (projection dimensions),
//! `--projectors sparse:4,sparse:1,factored,gaussian|none` (rows next to the dense TRAK; the
//! default is the default sparse and the factored projector), `--weightings gn,q|none`
//! (curvature-weighted kernels on the dense features, rows `trak-gn` and `trak-q`; default
//! both), `--ensembles 1,5,20` (checkpoint counts M; the largest is trained), `--no-cache`. Subset-model margins are cached
//! in `target/lds-cache/`, so re-runs skip the retraining. Pictures (scatter plots and top-8
//! grids) go to `target/lds-pictures/`; `--update-docs` writes them to `docs/img/` instead (for
//! the documentation, after a full run). See docs/VALIDATION.md.

use std::path::Path;
use std::time::Instant;

use trak::{Ridge, Weighting};
use trak_demo::cli::Args;
use trak_demo::pictures::lds_pictures;
use trak_demo::protocol::{self, BenchConfig, LdsRow};

fn ridge_name(r: &Option<Ridge>) -> String {
    r.as_ref().map_or("-".into(), protocol::ridge_name)
}

/// The ridge rules of `--sweep`: λ = 0, eleven multiples of tr/k and five of tr/n.
fn sweep() -> Vec<Ridge> {
    let rel = [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0];
    std::iter::once(Ridge::Absolute(0.0))
        .chain(rel.into_iter().map(Ridge::Relative))
        .chain(
            [0.5, 1.0, 2.0, 4.0, 8.0]
                .into_iter()
                .map(Ridge::MeanSquaredNorm),
        )
        .collect()
}

/// `gn,q` or `none`: the weighted-kernel rows.
fn parse_weightings(list: &str) -> trak::Result<Vec<Weighting>> {
    list.split(',')
        .filter(|w| *w != "none")
        .map(|w| match w {
            "gn" => Ok(Weighting::GaussNewton),
            "q" => Ok(Weighting::Q),
            other => Err(trak::Error::InvalidParameter {
                parameter: "--weightings",
                value: other.into(),
                expected: "gn, q or none, comma-separated".into(),
            }),
        })
        .collect()
}

fn config(args: &Args) -> trak::Result<BenchConfig> {
    let mut cfg = if args.flag("--quick") {
        BenchConfig::quick()
    } else {
        BenchConfig::full()
    };
    if args.flag("--sweep") {
        cfg.ridges = sweep();
    }
    if let Some(r) = args.ridges()? {
        cfg.ridges = r;
    }
    if let Some(p) = args.projectors()? {
        cfg.extra_projectors = p;
    }
    if let Some(w) = args.value("--weightings") {
        cfg.weightings = parse_weightings(w)?;
    }
    if let Some(k) = args.proj_dims()? {
        cfg.proj_dims = k;
    }
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

fn print_table(cfg: &BenchConfig, rows: &[LdsRow]) {
    println!(
        "\nLDS on MNIST-5k: {} train, {} targets, J = {} subsets at α = {}, {} threads",
        cfg.n_train,
        cfg.n_targets,
        cfg.subsets,
        cfg.alpha,
        rayon::current_num_threads()
    );
    println!("| family | method | k | M | ridge λ | LDS |\n|---|---|---|---|---|---|");
    for r in rows {
        let v = r
            .value
            .map_or("singular".to_string(), |v| format!("{v:.3}"));
        let (f, ridge) = (r.family.name(), ridge_name(&r.ridge));
        println!("| {f} | {} | {} | {} | {ridge} | {v} |", r.method, r.k, r.m);
    }
    println!();
    for r in rows {
        println!("{}", r.line());
    }
}

fn main() -> trak::Result<()> {
    let args = Args::from_env();
    let cfg = config(&args)?;
    let start = Instant::now();
    let out = protocol::run(&cfg)?;
    print_table(&cfg, &out.rows);
    if cfg.ridges.len() == 1 {
        let dir = if args.flag("--update-docs") {
            "docs/img"
        } else {
            "target/lds-pictures"
        };
        for path in lds_pictures(Path::new(dir), &cfg, &out)? {
            println!("wrote {}", path.display());
        }
    }
    // The library's defaults, i.e. which of the rows above `Trak::builder()` gives.
    println!(
        "DEFAULT weighting={:?} method={} ridge={} (Trak::builder(); chosen in docs/VALIDATION.md)",
        Weighting::default(),
        protocol::weighting_method(Weighting::default()),
        ridge_name(&Some(Ridge::default()))
    );
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
