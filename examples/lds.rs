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
//! default is the default sparse and the factored projector), `--no-cache`. Subset-model margins are cached
//! in `target/lds-cache/`, so re-runs skip the retraining. See docs/VALIDATION.md.

use std::time::Instant;

use image::{Rgb, RgbImage};
use trak::data::Dataset;
use trak::eval::benchmark::{self, BenchConfig, BenchOutput, Family, LdsRow, Snapshot};
use trak::kernel::Ridge;
use trak::project::ProjectorKind;

fn ridge_name(r: &Option<Ridge>) -> String {
    match r {
        Some(Ridge::MeanSquaredNorm(c)) => format!("{c}·tr/n"),
        Some(Ridge::Relative(c)) => format!("{c:e}·tr/k"),
        Some(Ridge::Absolute(l)) => format!("{l:e}"),
        None => "-".into(),
    }
}

fn main() -> trak::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = if args.iter().any(|a| a == "--quick") {
        BenchConfig::quick()
    } else {
        BenchConfig::full()
    };
    if args.iter().any(|a| a == "--sweep") {
        cfg.ridges = std::iter::once(Ridge::Absolute(0.0))
            .chain(
                [1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0]
                    .into_iter()
                    .map(Ridge::Relative),
            )
            .chain(
                [0.5, 1.0, 2.0, 4.0, 8.0]
                    .into_iter()
                    .map(Ridge::MeanSquaredNorm),
            )
            .collect();
    }
    // --ridges n:2,k:0.1,abs:0  (n: × tr/n, k: × tr/k, abs: absolute λ)
    if let Some(w) = args.windows(2).find(|w| w[0] == "--ridges") {
        cfg.ridges = w[1]
            .split(',')
            .map(|item| {
                let (kind, v) = item.split_once(':').expect("ridge spec kind:value");
                let v: f64 = v.parse().expect("ridge value");
                match kind {
                    "n" => Ridge::MeanSquaredNorm(v),
                    "k" => Ridge::Relative(v),
                    "abs" => Ridge::Absolute(v),
                    other => panic!("unknown ridge kind {other:?} (n, k or abs)"),
                }
            })
            .collect();
    }
    // --projectors sparse:4,sparse:1,factored  (extra rows next to the dense TRAK; none: dense only)
    if let Some(w) = args.windows(2).find(|w| w[0] == "--projectors") {
        cfg.extra_projectors = w[1]
            .split(',')
            .filter(|item| *item != "none")
            .map(|item| match item.split_once(':') {
                Some(("sparse", s)) => ProjectorKind::Sparse {
                    s: s.parse().expect("sparse:<s>"),
                },
                None if item == "sparse" => ProjectorKind::SPARSE,
                None if item == "factored" => ProjectorKind::Factored,
                None if item == "gaussian" => ProjectorKind::Gaussian,
                _ => panic!("unknown projector {item:?} (sparse[:s], factored, gaussian, none)"),
            })
            .collect();
    }
    // --k 2048,4096  (projection dimensions)
    if let Some(w) = args.windows(2).find(|w| w[0] == "--k") {
        cfg.proj_dims = w[1]
            .split(',')
            .map(|v| v.parse().expect("--k takes integers"))
            .collect();
    }
    if args.iter().any(|a| a == "--no-cache") {
        cfg.cache_dir = None;
    }
    let fams = Family::from_args(&args)?;
    if !fams.is_empty() {
        cfg.families = fams;
    }
    let start = Instant::now();
    let out = benchmark::run(&cfg)?;
    let rows: &[LdsRow] = &out.rows;
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
        println!(
            "| {} | {} | {} | {} | {} | {v} |",
            r.family.name(),
            r.method,
            r.k,
            r.m,
            ridge_name(&r.ridge)
        );
    }
    println!();
    for r in rows {
        println!("{}", r.line());
    }
    if cfg.ridges.len() == 1 {
        pictures(&cfg, &out)?;
    }
    println!("total time {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Writes `docs/img/lds-scatter-<family>.png` and `docs/img/lds-top8-<family>.png`.
fn pictures(cfg: &BenchConfig, out: &BenchOutput) -> trak::Result<()> {
    let (_, _, train, targets) = benchmark::split(cfg)?;
    let dir = std::path::Path::new("docs/img");
    std::fs::create_dir_all(dir).map_err(|source| trak::Error::Io {
        path: dir.into(),
        source,
    })?;
    for snap in &out.snapshots {
        let name = snap.family.name();
        let save = |img: RgbImage, what: &str| {
            let path = dir.join(format!("lds-{what}-{name}.png"));
            img.save(&path).expect("writing a PNG");
            println!("wrote {}", path.display());
        };
        save(scatter(snap), "scatter");
        save(top8(snap, &train, &targets), "top8");
    }
    Ok(())
}

/// 2 × 2 panels, one per target (targets 0–3): x = predicted margin Σ_{i∈S_j} τ_i,
/// y = margin of the model trained on S_j, one dot per subset; axes span each panel's range.
fn scatter(snap: &Snapshot) -> RgbImage {
    const P: u32 = 300;
    const PAD: u32 = 20;
    let mut img = RgbImage::from_pixel(2 * P + 3 * PAD, 2 * P + 3 * PAD, Rgb([255, 255, 255]));
    let masks = &snap.truth.masks;
    for t in 0..4.min(snap.scores.n_targets()) {
        let (x0, y0) = (
            PAD + (t as u32 % 2) * (P + PAD),
            PAD + (t as u32 / 2) * (P + PAD),
        );
        let col = snap.scores.target(t).expect("target exists");
        let pts: Vec<(f64, f64)> = (0..masks.nrows())
            .map(|j| {
                let pred: f64 = masks
                    .row(j)
                    .iter()
                    .zip(col.iter())
                    .filter(|(b, _)| **b)
                    .map(|(_, &v)| v as f64)
                    .sum();
                (pred, snap.truth.margins[(j, t)] as f64)
            })
            .collect();
        let range = |f: fn(&(f64, f64)) -> f64| {
            let lo = pts.iter().map(f).fold(f64::INFINITY, f64::min);
            let hi = pts.iter().map(f).fold(f64::NEG_INFINITY, f64::max);
            (lo, (hi - lo).max(1e-12))
        };
        let ((xl, xr), (yl, yr)) = (range(|p| p.0), range(|p| p.1));
        for i in 0..P {
            for (x, y) in [
                (x0 + i, y0),
                (x0 + i, y0 + P - 1),
                (x0, y0 + i),
                (x0 + P - 1, y0 + i),
            ] {
                img.put_pixel(x, y, Rgb([150, 150, 150]));
            }
        }
        for (px, py) in &pts {
            let x = x0 + 5 + (((px - xl) / xr) * (P - 11) as f64) as u32;
            let y = y0 + P - 6 - (((py - yl) / yr) * (P - 11) as f64) as u32;
            for dx in 0..3 {
                for dy in 0..3 {
                    img.put_pixel(x + dx - 1, y + dy - 1, Rgb([30, 70, 160]));
                }
            }
        }
    }
    img
}

/// One row per target (targets 0–5): the target digit (blue frame), then its 8 highest-scoring
/// training digits, framed green when they share the target's label and red otherwise.
fn top8(snap: &Snapshot, train: &Dataset, targets: &Dataset) -> RgbImage {
    const S: u32 = 3; // pixel scale
    const CELL: u32 = 28 * S + 8;
    let rows = 6.min(snap.scores.n_targets()) as u32;
    let mut img = RgbImage::from_pixel(10 * CELL, rows * CELL, Rgb([255, 255, 255]));
    let draw = |img: &mut RgbImage,
                cx: u32,
                cy: u32,
                pixels: ndarray::ArrayView1<'_, f32>,
                frame: Rgb<u8>| {
        let (x0, y0) = (cx * CELL, cy * CELL);
        for x in 1..CELL - 1 {
            for y in [1, 2, CELL - 3, CELL - 2] {
                img.put_pixel(x0 + x, y0 + y, frame);
                img.put_pixel(x0 + y, y0 + x, frame);
            }
        }
        for (i, &v) in pixels.iter().enumerate() {
            let g = 255 - (v.clamp(0.0, 1.0) * 255.0) as u8;
            let (r, c) = (i as u32 / 28, i as u32 % 28);
            for dy in 0..S {
                for dx in 0..S {
                    img.put_pixel(x0 + 4 + c * S + dx, y0 + 4 + r * S + dy, Rgb([g, g, g]));
                }
            }
        }
    };
    for (t, top) in snap.scores.top_k(8).iter().take(rows as usize).enumerate() {
        draw(
            &mut img,
            0,
            t as u32,
            targets.x().row(t),
            Rgb([40, 90, 220]),
        );
        for (slot, &(i, _)) in top.iter().enumerate() {
            let same = train.labels()[i] == targets.labels()[t];
            let frame = if same {
                Rgb([40, 170, 60])
            } else {
                Rgb([210, 40, 40])
            };
            draw(&mut img, slot as u32 + 2, t as u32, train.x().row(i), frame);
        }
    }
    img
}
