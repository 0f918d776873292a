//! Pictures of what the validation measured, each saying what it shows: LDS scatter plots
//! (axes with labels and units, the LDS, method, family, k and M in the title) and grids of
//! proponents and opponents (column headers, each tile's score and label). PNG files.
//!
//! Axes and text are drawn by `plotters` into the image's RGB buffer, with DejaVu Sans
//! embedded in the binary (`data/fonts`, Bitstream Vera licence), so the pictures look the
//! same on every machine and need no system font.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{Rgb, RgbImage};
use ndarray::ArrayView1;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use trak::data::Dataset;
use trak::{Error, Result, Scores};

use crate::protocol::{self, BenchConfig, BenchOutput, Snapshot};

/// The font family name the pictures' text uses (registered from the embedded file).
const FONT: &str = "DejaVu Sans";
static FONT_FILE: &[u8] = include_bytes!("../data/fonts/DejaVuSans.ttf");

/// Registers the embedded font with plotters once.
fn font() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_FILE)
            .map_err(|_| "the embedded DejaVu Sans is not a valid font".to_string())
    })
    .clone()
    .map_err(|e| drawing("registering the font")(e))
}

/// A plotters error as [`Error::Framework`] ("plotters", what was being drawn).
fn drawing<E: std::fmt::Display>(context: &str) -> impl Fn(E) -> Error + '_ {
    move |e| Error::Framework {
        framework: "plotters",
        context: context.to_string(),
        source: e.to_string().into(),
    }
}

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
        let title = format!("{}: {} top proponents", describe(snap), 8);
        for (img, what) in [
            (scatter(snap, &targets)?, "scatter"),
            (top8(&snap.scores, &train, &targets, &title)?, "top8"),
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

/// "MNIST MLP (784-128-10), TRAK with the Q-weighted kernel, k = 2048, M = 10": what a
/// snapshot's scores are.
pub fn describe(snap: &Snapshot) -> String {
    let family = match snap.family {
        crate::family::Family::LogReg => "MNIST logistic regression (784-10)",
        crate::family::Family::Mlp => "MNIST MLP (784-128-10)",
    };
    let method = protocol::method_title(snap.method);
    format!("{family}, {method}, k = {}, M = {}", snap.k, snap.m)
}

/// Side of one scatter panel, in pixels.
const PANEL: u32 = 420;

/// 2 × 2 panels, one per target (targets 0–3): every dot is one training subset S_j,
/// x = the predicted margin Σ_{i∈S_j} τ_i, y = the margin of the model trained on S_j. The
/// title names the family, method, k, M, ridge and the LDS; each panel its target's label and
/// Spearman correlation.
pub fn scatter(snap: &Snapshot, targets: &Dataset) -> Result<RgbImage> {
    font()?;
    let (w, h) = (2 * PANEL, 2 * PANEL + 120);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let (head, body) = root.split_vertically(56);
        let lds = format!(
            "LDS = {:.3} (Spearman ρ averaged over {} targets), ridge λ = {}",
            snap.lds,
            snap.scores.n_targets(),
            protocol::ridge_name(&snap.ridge)
        );
        let centre = |y| (w as i32 / 2, y);
        let style = |size| {
            TextStyle::from((FONT, size).into_font())
                .color(&BLACK)
                .pos(Pos::new(HPos::Center, VPos::Top))
        };
        let err = drawing("the scatter title");
        head.draw_text(&describe(snap), &style(18), centre(6))
            .map_err(&err)?;
        head.draw_text(&lds, &style(16), centre(31)).map_err(&err)?;
        let (body, foot) = body.split_vertically(2 * PANEL);
        for (t, panel) in body.split_evenly((2, 2)).iter().enumerate() {
            if t < snap.scores.n_targets() {
                scatter_panel(panel, snap, t, targets.labels()[t])?;
            }
        }
        let note = format!(
            "Each dot is one of the {} random half-size training subsets S_j. x: TRAK's prediction, \
             Σ τ_i over i ∈ S_j;  y: the target's margin (correct logit − logsumexp of the others) \
             under the model trained on S_j.",
            snap.truth.masks.nrows()
        );
        wrap_text(&foot, &note, 14, 8)?;
        root.present().map_err(drawing("the scatter plot"))?;
    }
    Ok(RgbImage::from_raw(w, h, buf).expect("buffer sized w × h × 3"))
}

/// One target's panel of [`scatter`].
fn scatter_panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    snap: &Snapshot,
    t: usize,
    label: usize,
) -> Result<()> {
    let col = snap.scores.target(t).ok_or(Error::OutOfRange {
        what: "target",
        index: t,
        len: snap.scores.n_targets(),
    })?;
    let masks = &snap.truth.masks;
    let pts: Vec<(f64, f64)> = (0..masks.nrows())
        .map(|j| {
            let pred = (masks.row(j).iter().zip(col.iter()))
                .filter(|(b, _)| **b)
                .map(|(_, &v)| v as f64)
                .sum();
            (pred, snap.truth.margins[(j, t)] as f64)
        })
        .collect();
    let (xs, ys): (Vec<f64>, Vec<f64>) = pts.iter().copied().unzip();
    let rho = trak::eval::spearman(&xs, &ys)?;
    let rho = rho.map_or("undefined".into(), |r| format!("{r:.3}"));
    let caption = format!("target {t} (label {label}): Spearman ρ = {rho}");
    let err = drawing("a scatter panel");
    let mut chart = ChartBuilder::on(&area.margin(6, 6, 6, 12))
        .caption(caption, (FONT, 15))
        .x_label_area_size(40)
        .y_label_area_size(58)
        .build_cartesian_2d(padded(&xs), padded(&ys))
        .map_err(&err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE.mix(0.0))
        .x_desc("predicted margin Σ τ_i over S_j (logits)")
        .y_desc("margin after training on S_j (logits)")
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .x_labels(6)
        .y_labels(6)
        .draw()
        .map_err(&err)?;
    let dot = RGBColor(30, 70, 160).filled();
    let dots = pts.iter().map(|&p| Circle::new(p, 2, dot));
    chart.draw_series(dots).map_err(&err)?;
    Ok(())
}

/// The data range of `v` widened by 5 % on each side (and never empty).
fn padded(v: &[f64]) -> std::ops::Range<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pad = ((hi - lo) * 0.05).max(1e-9);
    lo - pad..hi + pad
}

/// Draws `text` in `area`, broken into lines of at most `per_line` characters' width
/// (estimated) at `size` px, `lead` px from the left.
fn wrap_text(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    text: &str,
    size: u32,
    lead: i32,
) -> Result<()> {
    let width = area.dim_in_pixel().0 as usize;
    let per_line = (width - 2 * lead as usize) * 2 / size as usize;
    let mut lines = vec![String::new()];
    for word in text.split(' ') {
        let line = lines.last_mut().expect("one line");
        if !line.is_empty() && line.chars().count() + word.chars().count() >= per_line {
            lines.push(word.to_string());
        } else {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    let style = TextStyle::from((FONT, size).into_font()).color(&BLACK);
    for (i, line) in lines.iter().enumerate() {
        let y = 4 + i as i32 * (size as i32 + 5);
        area.draw_text(line, &style, (lead, y))
            .map_err(drawing("a caption"))?;
    }
    Ok(())
}

/// Pixel scale of a drawn digit.
const SCALE: u32 = 3;
/// Side of one digit's cell (a framed digit).
const CELL: u32 = 28 * SCALE + 8;
/// Height of the text under each tile (score, then index and label).
const UNDER: u32 = 36;
/// Height of the title and column headers above the grid.
const HEAD: u32 = 62;
/// Height of the legend under the grid.
const FOOT: u32 = 46;
const BLUE: Rgb<u8> = Rgb([40, 90, 220]);
const GREEN: Rgb<u8> = Rgb([40, 170, 60]);
const RED: Rgb<u8> = Rgb([210, 40, 40]);

/// Top-left pixel of tile (`col`, `row`).
fn tile(col: u32, row: u32) -> (u32, u32) {
    (col * CELL, HEAD + row * (CELL + UNDER))
}

/// Draws a 28 × 28 digit with a coloured frame into tile (`col`, `row`).
fn draw_digit(
    img: &mut RgbImage,
    (col, row): (u32, u32),
    pixels: ArrayView1<'_, f32>,
    frame: Rgb<u8>,
) {
    let (x0, y0) = tile(col, row);
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

/// One grid column group: a header over columns `first..first + count`, and per row the
/// training examples to draw there with their scores.
struct Group {
    header: String,
    first: u32,
    count: u32,
    /// Per target row: (training index, score), in column order.
    rows: Vec<Vec<(usize, f32)>>,
}

/// A grid: column 0 holds the targets (blue frames), then the groups; every tile has its
/// score (τ) and label under it, the title and headers are above, the legend below.
fn grid(title: &str, groups: &[Group], train: &Dataset, targets: &Dataset) -> Result<RgbImage> {
    font()?;
    let rows = groups[0].rows.len() as u32;
    let cols = groups.iter().map(|g| g.first + g.count).max().unwrap_or(1);
    let (w, h) = (cols * CELL, HEAD + rows * (CELL + UNDER) + FOOT);
    let mut img = RgbImage::from_pixel(w, h, Rgb([255, 255, 255]));
    let mut texts: Vec<(String, (i32, i32), u32)> = Vec::new();
    for t in 0..rows {
        draw_digit(&mut img, (0, t), targets.x().row(t as usize), BLUE);
        let label = targets.labels()[t as usize];
        texts.push((format!("target {t}, label {label}"), under(0, t), 12));
        for g in groups {
            for (c, &(i, score)) in (g.first..).zip(&g.rows[t as usize]) {
                let frame = label_frame(train, i, targets, t as usize);
                draw_digit(&mut img, (c, t), train.x().row(i), frame);
                let (x, y) = under(c, t);
                texts.push((format!("τ = {}", score_text(score)), (x, y), 12));
                let text = format!("#{i}, label {}", train.labels()[i]);
                texts.push((text, (x, y + 15), 11));
            }
        }
    }
    texts.push((title.to_string(), ((w / 2) as i32, 6), 16));
    texts.push(("target".into(), ((CELL / 2) as i32, 38), 14));
    for g in groups {
        let x = (g.first * CELL + g.count * CELL / 2) as i32;
        texts.push((g.header.clone(), (x, 38), 14));
    }
    let legend = [
        "Frames: blue, the target; green, a training example with the target's label; red, another label.",
        "τ: the training example's attribution score for the target; #: its index in the training set.",
    ];
    for (i, line) in legend.iter().enumerate() {
        let y = (h - FOOT + 6 + 17 * i as u32) as i32;
        texts.push((line.to_string(), ((w / 2) as i32, y), 12));
    }
    draw_centred(&mut img, &texts)?;
    Ok(img)
}

/// A score with 3 significant digits: fixed-point from 0.001 up, scientific below.
fn score_text(v: f32) -> String {
    match v.abs() {
        a if a >= 1.0 => format!("{v:.2}"),
        a if a >= 1e-3 => format!("{v:.*}", (2.0 - a.log10().floor()) as usize),
        0.0 => "0".into(),
        _ => format!("{v:.2e}"),
    }
}

/// Centre-top of the text line under tile (`col`, `row`).
fn under(col: u32, row: u32) -> (i32, i32) {
    let (x, y) = tile(col, row);
    ((x + CELL / 2) as i32, (y + CELL + 3) as i32)
}

/// Draws each (text, centre-top point, size) onto `img`.
fn draw_centred(img: &mut RgbImage, texts: &[(String, (i32, i32), u32)]) -> Result<()> {
    let (w, h) = img.dimensions();
    let root = BitMapBackend::with_buffer(img.as_mut(), (w, h)).into_drawing_area();
    for (text, at, size) in texts {
        let style = TextStyle::from((FONT, *size).into_font())
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(text, &style, *at)
            .map_err(drawing("a grid's text"))?;
    }
    root.present().map_err(drawing("a grid"))
}

/// One row per target (targets 0–5): the target digit, then its 8 highest-scoring training
/// digits, framed green when they share the target's label and red otherwise; `title` says
/// what the scores are.
pub fn top8(scores: &Scores, train: &Dataset, targets: &Dataset, title: &str) -> Result<RgbImage> {
    let rows = 6.min(scores.n_targets());
    let top = scores.top_k(8);
    let group = Group {
        header: "proponents: the 8 highest scores, highest first".into(),
        first: 2,
        count: 8,
        rows: top.into_iter().take(rows).collect(),
    };
    grid(title, &[group], train, targets)
}

/// One row per target (the first `rows`): the target digit, its `per_side` strongest
/// proponents (highest scores), a gap, then its `per_side` strongest opponents (lowest
/// scores, lowest first); frames as in [`top8`]; `title` says what the scores are.
pub fn proponents_opponents(
    scores: &Scores,
    train: &Dataset,
    targets: &Dataset,
    (rows, per_side): (usize, usize),
    title: &str,
) -> Result<RgbImage> {
    let rows = rows.min(scores.n_targets());
    let values = scores.values();
    let (mut pro, mut con) = (Vec::new(), Vec::new());
    for t in 0..rows {
        let col = values.column(t);
        let mut order: Vec<usize> = (0..col.len()).collect();
        order.sort_by(|&a, &b| col[b].total_cmp(&col[a]).then(a.cmp(&b)));
        let pick = |i: &usize| (*i, col[*i]);
        pro.push(order[..per_side].iter().map(pick).collect());
        con.push(
            order[order.len() - per_side..]
                .iter()
                .rev()
                .map(pick)
                .collect(),
        );
    }
    let n = per_side as u32;
    let groups = [
        Group {
            header: format!("proponents: the {per_side} highest scores"),
            first: 2,
            count: n,
            rows: pro,
        },
        Group {
            header: format!("opponents: the {per_side} lowest scores"),
            first: n + 3,
            count: n,
            rows: con,
        },
    ];
    grid(title, &groups, train, targets)
}

#[cfg(test)]
mod tests {
    use super::score_text;

    #[test]
    fn scores_have_three_significant_digits() {
        let cases = [
            (0.0658, "0.0658"),
            (0.5, "0.500"),
            (-0.00123, "-0.00123"),
            (2.5, "2.50"),
            (4.2e-5, "4.20e-5"),
            (0.0, "0"),
        ];
        for (v, want) in cases {
            assert_eq!(score_text(v), want);
        }
    }
}
