//! The counterfactual ground truth of the LDS protocol: models of a family trained on random
//! α-subsets of the training set, and their margins on the targets. Training them is the
//! expensive part of the protocol, so the margins are cached on disk under a key that names
//! every setting they depend on.

use std::path::{Path, PathBuf};

use ndarray::Array2;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use trak::Result;
use trak::data::Sample;
use trak::eval::subset_masks;

use crate::family::Family;
use crate::protocol::BenchConfig;

/// Ground truth of one family: subset masks (J × n) and subset-model margins (J × m).
pub struct GroundTruth {
    /// Subset membership, J × n.
    pub masks: Array2<bool>,
    /// Margin of subset model j on target t, J × m.
    pub margins: Array2<f32>,
}

#[derive(Serialize, Deserialize)]
struct MarginCache {
    key: String,
    rows: usize,
    cols: usize,
    margins: Vec<f32>,
}

/// Trains (or loads from the cache) the subset models of `family` and returns their margins.
pub fn ground_truth(
    cfg: &BenchConfig,
    family: Family,
    train: &[Sample],
    targets: &[Sample],
) -> Result<GroundTruth> {
    let settings = format!("sizes={:?} sgd={:?}", family.sizes(), family.sgd(0));
    ground_truth_with(
        cfg,
        family.name(),
        &settings,
        train,
        targets,
        |subset, seed| {
            let model = family.train(subset, seed)?;
            Ok(model.outputs(targets)?.iter().map(|v| v.f).collect())
        },
    )
}

/// The ground truth of any model family: `margins_of(subset, seed)` trains a model on
/// `subset` with seed 1,000,000 + j and returns its margins on the targets. `name` and
/// `settings` (architecture, optimiser, epochs: everything the margins depend on besides the
/// protocol's own settings) go into the cache key. Subset models are trained in parallel.
pub fn ground_truth_with<F>(
    cfg: &BenchConfig,
    name: &str,
    settings: &str,
    train: &[Sample],
    targets: &[Sample],
    margins_of: F,
) -> Result<GroundTruth>
where
    F: Fn(&[Sample], u64) -> Result<Vec<f32>> + Sync,
{
    ground_truth_masked(cfg, name, settings, train, targets, |_, mask, seed| {
        let subset: Vec<Sample> = mask
            .iter()
            .zip(train)
            .filter(|(b, _)| **b)
            .map(|(_, s)| s.clone())
            .collect();
        margins_of(&subset, seed)
    })
}

/// [`ground_truth_with`] for a model that is told the subset by its index j and membership
/// mask (length n_train) instead of a copy of it: e.g. training on the whole set with the
/// weights of [`trak::eval::DropSets::weights`]`(j)`. `margins_of(j, mask, seed)`, seed =
/// 1,000,000 + j. The masks are [`subset_masks`] with [`subset_seed`]`(cfg)`.
pub fn ground_truth_masked<F>(
    cfg: &BenchConfig,
    name: &str,
    settings: &str,
    train: &[Sample],
    targets: &[Sample],
    margins_of: F,
) -> Result<GroundTruth>
where
    F: Fn(usize, &[bool], u64) -> Result<Vec<f32>> + Sync,
{
    let masks = subset_masks(train.len(), cfg.alpha, cfg.subsets, subset_seed(cfg))?;
    let key = format!(
        "v1 family={name} {settings} n_train={} n_targets={} J={} alpha={} seed={} data=mnist_5k",
        train.len(),
        targets.len(),
        cfg.subsets,
        cfg.alpha,
        cfg.seed
    );
    let path = cfg.cache_dir.as_ref().map(|d| cache_path(d, name, &key));
    if let Some(margins) = path.as_deref().and_then(|p| load(cfg, name, p, &key)) {
        return Ok(GroundTruth { masks, margins });
    }
    cfg.log(format!("{name}: training {} subset models", cfg.subsets));
    let margins = subset_margins(&masks, targets.len(), margins_of)?;
    if let Some(p) = &path {
        save(p, &key, &margins)?;
    }
    Ok(GroundTruth { masks, margins })
}

/// The seed of the protocol's subset masks.
pub fn subset_seed(cfg: &BenchConfig) -> u64 {
    cfg.seed ^ 0x5u64
}

/// Margins (J × m) of models trained on each subset j (seed 1,000,000 + j).
fn subset_margins<F>(masks: &Array2<bool>, m: usize, margins_of: F) -> Result<Array2<f32>>
where
    F: Fn(usize, &[bool], u64) -> Result<Vec<f32>> + Sync,
{
    let rows: Vec<Vec<f32>> = (0..masks.nrows())
        .into_par_iter()
        .map(|j| {
            let mask = masks.row(j).to_vec();
            let margins = margins_of(j, &mask, 1_000_000 + j as u64)?;
            if margins.len() != m {
                let got = margins.len().to_string();
                return Err(trak::Error::ShapeMismatch {
                    what: "subset-model margins",
                    expected: m.to_string(),
                    got,
                });
            }
            Ok(margins)
        })
        .collect::<Result<_>>()?;
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Ok(Array2::from_shape_vec((masks.nrows(), m), flat).expect("J × m margins"))
}

/// `<dir>/margins-<name>-<FNV-1a of key>.bin`.
fn cache_path(dir: &Path, name: &str, key: &str) -> PathBuf {
    let h = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    dir.join(format!("margins-{name}-{h:016x}.bin"))
}

/// The cached margins at `path` if they exist and were made under `key`.
fn load(cfg: &BenchConfig, name: &str, path: &Path, key: &str) -> Option<Array2<f32>> {
    let bytes = std::fs::read(path).ok()?;
    let decoded =
        bincode::serde::decode_from_slice::<MarginCache, _>(&bytes, bincode::config::standard());
    match decoded {
        Ok((c, _)) if c.key == key && c.margins.len() == c.rows * c.cols => {
            let what = format!("{name}: subset margins from {}", path.display());
            cfg.log(what);
            Array2::from_shape_vec((c.rows, c.cols), c.margins).ok()
        }
        _ => {
            let what = format!("{name}: ignoring stale cache {}", path.display());
            cfg.log(what);
            None
        }
    }
}

/// Writes the cache atomically (the store's own atomic write).
fn save(path: &Path, key: &str, margins: &Array2<f32>) -> Result<()> {
    let cache = MarginCache {
        key: key.to_string(),
        rows: margins.nrows(),
        cols: margins.ncols(),
        margins: margins.iter().copied().collect(),
    };
    let bytes = bincode::serde::encode_to_vec(&cache, bincode::config::standard())
        .expect("encoding plain data into a Vec cannot fail");
    let dir = path.parent().expect("cache file has a directory");
    std::fs::create_dir_all(dir).map_err(|source| trak::Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    trak::store::write_atomic(path, &bytes)
}
