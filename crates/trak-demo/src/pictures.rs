//! Pictures of what the validation measured: LDS scatter plots and top-proponent grids (PNG).

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use ndarray::ArrayView1;
use trak::data::Dataset;
use trak::{Error, Result, Scores};

use crate::protocol::{self, BenchConfig, BenchOutput, Snapshot};

/// Writes `<dir>/lds-scatter-<family>.png` and `<dir>/lds-top8-<family>.png` for each
/// snapshot of `out`; returns the files written.
pub fn lds_pictures(dir: &Path, cfg: &BenchConfig, out: &BenchOutput) -> Result<Vec<PathBuf>> {
    let (_, _, train, targets) = protocol::split(cfg)?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    let mut written = Vec::new();
    for snap in &out.snapshots {
        let name = snap.family.name();
        for (img, what) in [
            (scatter(snap), "scatter"),
            (top8(snap, &train, &targets), "top8"),
        ] {
            let path = dir.join(format!("lds-{what}-{name}.png"));
            save(&img, &path)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// Saves a PNG; an encoder failure is an [`Error::Io`] naming the file.
pub fn save(img: &RgbImage, path: &Path) -> Result<()> {
    img.save(path).map_err(|e| Error::Io {
        path: path.into(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// 2 × 2 panels, one per target (targets 0–3): x = predicted margin Σ_{i∈S_j} τ_i,
/// y = margin of the model trained on S_j, one dot per subset; axes span each panel's range.
pub fn scatter(snap: &Snapshot) -> RgbImage {
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

/// Pixel scale of a drawn digit.
const SCALE: u32 = 3;
/// Side of one cell (a framed digit).
const CELL: u32 = 28 * SCALE + 8;
const BLUE: Rgb<u8> = Rgb([40, 90, 220]);
const GREEN: Rgb<u8> = Rgb([40, 170, 60]);
const RED: Rgb<u8> = Rgb([210, 40, 40]);

/// Draws a 28 × 28 digit with a coloured frame into cell (`cx`, `cy`).
fn draw_digit(img: &mut RgbImage, cx: u32, cy: u32, pixels: ArrayView1<'_, f32>, frame: Rgb<u8>) {
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
        for dy in 0..SCALE {
            for dx in 0..SCALE {
                let (x, y) = (x0 + 4 + c * SCALE + dx, y0 + 4 + r * SCALE + dy);
                img.put_pixel(x, y, Rgb([g, g, g]));
            }
        }
    }
}

/// Frame of a training digit: green when it shares the target's label, red otherwise.
fn label_frame(train: &Dataset, i: usize, targets: &Dataset, t: usize) -> Rgb<u8> {
    if train.labels()[i] == targets.labels()[t] {
        GREEN
    } else {
        RED
    }
}

/// One row per target (targets 0–5): the target digit (blue frame), then its 8 highest-scoring
/// training digits, framed green when they share the target's label and red otherwise.
pub fn top8(snap: &Snapshot, train: &Dataset, targets: &Dataset) -> RgbImage {
    let rows = 6.min(snap.scores.n_targets()) as u32;
    let mut img = RgbImage::from_pixel(10 * CELL, rows * CELL, Rgb([255, 255, 255]));
    for (t, top) in snap.scores.top_k(8).iter().take(rows as usize).enumerate() {
        draw_digit(&mut img, 0, t as u32, targets.x().row(t), BLUE);
        for (slot, &(i, _)) in top.iter().enumerate() {
            let frame = label_frame(train, i, targets, t);
            draw_digit(&mut img, slot as u32 + 2, t as u32, train.x().row(i), frame);
        }
    }
    img
}

/// One row per target (the first `rows`): the target digit (blue frame), its `per_side`
/// strongest proponents (highest scores), a gap, then its `per_side` strongest opponents
/// (lowest scores); frames as in [`top8`].
pub fn proponents_opponents(
    scores: &Scores,
    train: &Dataset,
    targets: &Dataset,
    rows: usize,
    per_side: usize,
) -> RgbImage {
    let rows = rows.min(scores.n_targets());
    let cols = 2 * per_side as u32 + 3;
    let mut img = RgbImage::from_pixel(cols * CELL, rows as u32 * CELL, Rgb([255, 255, 255]));
    let values = scores.values();
    for t in 0..rows {
        draw_digit(&mut img, 0, t as u32, targets.x().row(t), BLUE);
        let col = values.column(t);
        let mut order: Vec<usize> = (0..col.len()).collect();
        order.sort_by(|&a, &b| col[b].total_cmp(&col[a]).then(a.cmp(&b)));
        let pro = order[..per_side].iter();
        let con = order[order.len() - per_side..].iter().rev();
        let slots = (2..).zip(pro).chain((per_side as u32 + 3..).zip(con));
        for (slot, &i) in slots {
            let frame = label_frame(train, i, targets, t);
            draw_digit(&mut img, slot, t as u32, train.x().row(i), frame);
        }
    }
    img
}
